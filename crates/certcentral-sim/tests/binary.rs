//! The `certcentral-sim` binary: `--listen 127.0.0.1:0` prints the base URL on stdout's first
//! line, orders load from a file, the API and admin API answer, and `--help` documents every
//! option.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_certcentral-sim");

/// Kills the child we started when the test ends, even on panic.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on a free port with a TOML orders file and calls it over HTTP.
#[tokio::test]
async fn binary_prints_its_address_and_serves_loaded_orders() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir under CARGO_TARGET_TMPDIR");
    let orders = dir.join("orders.toml");
    std::fs::write(
        &orders,
        r#"
[[order]]
id = 4242
dns_names = ["example.com", "www.example.com"]
dcv_method = "dns-cname-token"

[[domain]]
id = 77
name = "example.org"
validations = ["ov"]
"#,
    )
    .expect("write the orders file");

    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--api-key", "bin-key", "--seed", "3"])
        .args(["--rate-limit", "100/5s", "--rate-limit", "1000/5m"])
        .args(["--fault", "check_dcv.latency=0"])
        .arg("--orders")
        .arg(&orders)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the certcentral-sim binary");
    let stdout = child.stdout.take().expect("stdout piped");
    let _guard = Guard(child);

    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("the binary printed no first line within 60 s")
        .expect("reader task")
        .expect("read stdout");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:") && base.ends_with("/services/v2"), "{base}");

    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .get(format!("{base}/order/certificate/4242"))
        .header("X-DC-DEVKEY", "bin-key")
        .send()
        .await
        .expect("call the binary")
        .json()
        .await
        .expect("json");
    assert_eq!(info["dcv_method"], "dns-cname-token");
    assert_eq!(info["certificate"]["dns_names"], serde_json::json!(["example.com", "www.example.com"]));

    let denied = http.get(format!("{base}/domain/77")).send().await.expect("call");
    assert_eq!(denied.status().as_u16(), 401);

    let admin = base.replace("/services/v2", "/_sim");
    let domain: serde_json::Value =
        http.get(format!("{admin}/domains/77")).send().await.expect("admin call").json().await.expect("json");
    assert_eq!(domain["validations"]["ov"], "pending");
}

/// `--help` names every option and the output contract.
#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--listen",
        "--dns",
        "--api-key",
        "--token-validity",
        "--negative-ttl",
        "--negative-ttl-cap",
        "--rate-limit",
        "--no-rate-limit",
        "--fault",
        "--faults-file",
        "--seed",
        "--keep-pending",
        "--dns-timeout",
        "--orders",
        "listening on http://ADDR/services/v2",
        "/_sim/clock/advance",
        "GET  /order/certificate?filters[status]=pending",
        "GET  /domain?filters[status]=active|inactive",
        "PATCH /_sim/orders/{id}",
        "PATCH /_sim/domains/{id}",
        "POST /_sim/bulk",
        "GUESS: limit > 1000 answers 400 invalid_param",
        "GUESS: Order validation status answers dns_name_validations[].status",
    ] {
        assert!(help.contains(opt), "--help does not mention {opt}:\n{help}");
    }
    for endpoint in certcentral_sim::ENDPOINTS {
        assert!(help.contains(endpoint), "--help does not name the endpoint {endpoint}");
    }
}

/// Bad options exit with status 2 (usage) or a clear error, never start.
#[test]
fn bad_options_are_rejected() {
    let out = Command::new(BIN).args(["--rate-limit", "lots"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REQUESTS/DURATION"));
    let out = Command::new(BIN).args(["--listen", "127.0.0.1:0", "--fault", "drop=3"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probability"), "{}", String::from_utf8_lossy(&out.stderr));
}
