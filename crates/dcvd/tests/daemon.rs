//! The real `dcvd` binary against the CertCentral simulator: the memory provider's own name
//! servers (inside dcvd) or BIND (RFC 2136) serve the records, the simulator checks them over DNS.

use std::time::Duration;

use certcentral_sim::{DcvMethod, NewDomain, NewOrder};
use test_support::bind::{Bind, ZoneSpec};
use test_support::harness::{Harness, LocalSim, eventually_sync, signal, text, wait_output};

/// The binaries under test.
const HARNESS: Harness = Harness::new(env!("CARGO_BIN_EXE_dcvd"));

fn order_calls(h: &LocalSim, id: u64) -> u64 {
    h.sim().stats().order_calls.get(&id).map(|m| m.values().sum()).unwrap_or(0)
}

/// One DV order with three names (two share a record through the parent rule) ends valid with
/// two CertCentral calls, no premature check, and the records gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_validates_a_dv_order_with_three_names() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(101, &["example.test", "www.example.test", "*.api.example.test"]));
    let cfg = h.config(
        h.dns_port,
        &format!(
            "{}\n[[order]]\nid = 101\nmethod = \"dns-txt-token\"\ndomains = [\"example.test\", \"www.example.test\", \"*.api.example.test\"]\n",
            h.memory_provider(&["example.test"], 300)
        ),
    );
    let out = h.once_output(&h.write_config(&cfg));
    let log = text(&out);
    assert!(out.status.success(), "dcvd once failed:\n{log}");
    let order = h.sim().order(101).expect("order");
    assert_eq!(order.dcv_status, "valid", "{log}");
    assert_eq!(order_calls(&h, 101), 2, "token + one check: {:?}", h.sim().stats().order_calls);
    assert_eq!(h.sim().stats().premature_checks, 0);
    for state in ["token_issued", "published", "propagated", "valid", "cleaned_up"] {
        assert!(
            log.contains(&format!("state=\"{state}\"")) || log.contains(&format!("state={state}")),
            "no {state} transition in:\n{log}"
        );
    }
    // one log identity: every line about the unit carries its span's fields
    assert!(log.contains("unit_kind=\"order\"") && log.contains("unit_id=101"), "{log}");
    // the start-up banner says what this run uses
    let banner = log.lines().find(|l| l.contains("dcvd starting")).unwrap_or_else(|| panic!("no banner:\n{log}"));
    for field in ["version=", "config=", "state_dir=", "units=1", "providers=", "validation_scope=\"base\""] {
        assert!(banner.contains(field), "{field} missing from the banner: {banner}");
    }
    for line in log.lines().filter(|l| l.contains("state changed") || l.contains("record published")) {
        assert!(line.contains("unit_id=101"), "a line about the unit without its identity: {line}");
    }
    assert!(!log.contains(&h.api_key), "the API key leaked into the log");
}

/// An OV/EV domain submitted for validation uses the token the submission returns (no extra
/// token request, which would invalidate it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_validates_an_ovev_domain_with_submit() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_domain(NewDomain::new(201, "corp.example.test"));
    let cfg = h.config(
        h.dns_port,
        &format!(
            "{}\n[[domain]]\nid = 201\nname = \"corp.example.test\"\nmethod = \"dns-txt-token\"\nsubmit = [\"ov\", \"ev\"]\n",
            h.memory_provider(&["example.test"], 200)
        ),
    );
    let out = h.once_output(&h.write_config(&cfg));
    assert!(out.status.success(), "dcvd once failed:\n{}", text(&out));
    let d = h.sim().domain(201).expect("domain");
    assert!(d.dcv_valid, "{d:?}");
    assert_eq!(d.validations.len(), 2, "{d:?}");
    let calls = h.sim().stats().domain_calls.get(&201).cloned().unwrap_or_default();
    assert_eq!(calls.values().sum::<u64>(), 2, "submit + one check: {calls:?}");
    assert_eq!(calls.get("domain_dcv_token"), None, "a token request would invalidate the submitted one: {calls:?}");
}

/// A DV order validated by CNAME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_validates_a_cname_order() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(301, &["shop.example.test"]).with_method(DcvMethod::DnsCnameToken));
    let cfg = h.config(
        h.dns_port,
        &format!(
            "{}\n[[order]]\nid = 301\nmethod = \"dns-cname-token\"\ndomains = [\"shop.example.test\"]\n",
            h.memory_provider(&["example.test"], 0)
        ),
    );
    let out = h.once_output(&h.write_config(&cfg));
    assert!(out.status.success(), "dcvd once failed:\n{}", text(&out));
    assert_eq!(h.sim().order(301).expect("order").dcv_status, "valid");
    assert_eq!(h.sim().stats().premature_checks, 0);
}

/// The order is a dns-txt-token order at DigiCert but configured as dns-cname-token: DigiCert
/// keeps answering `invalid_dns_txt`, and after the third such answer dcvd says that the methods
/// may differ and what to set (once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_mismatch_is_pointed_out() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(302, &["mismatch.example.test"]));
    let cfg = h.config(
        h.dns_port,
        &format!(
            "{}\n[[order]]\nid = 302\nmethod = \"dns-cname-token\"\ndomains = [\"mismatch.example.test\"]\n",
            h.memory_provider(&["example.test"], 0)
        ),
    );
    let mut child = h.spawn_run(&h.write_config(&cfg));
    let hint = "the order's DCV method at DigiCert may be dns-txt-token; set method = \"dns-txt-token\"";
    eventually_sync(Duration::from_secs(60), "the method mismatch hint", || h.log().contains(hint)).await;
    signal(&child, "TERM");
    let _ = child.wait();
    let log = h.log();
    assert_eq!(log.matches(hint).count(), 1, "said once:\n{log}");
    assert!(log.lines().any(|l| l.contains(hint) && l.contains("unit_id=302")), "{log}");
}

/// A wrong API key is one account-level condition, not a failure of every unit: one ERROR that
/// says what to fix, the units paused (not failed), `/healthz` failing and the
/// `dcvd_account_condition` gauge at 1; after the key is fixed, SIGHUP resumes them at once and
/// they validate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_api_key_pauses_every_unit_until_fixed() {
    let h = HARNESS.start_local(None).await;
    for id in [311, 312, 313] {
        h.sim().add_order(NewOrder::new(id, &[&format!("k{id}.example.test")]));
    }
    let key_file = h.key_path();
    std::fs::write(&key_file, "a-revoked-key").unwrap();
    let metrics_port = test_support::ports::free_port();
    let orders: String = [311, 312, 313]
        .iter()
        .map(|id| format!("[[order]]\nid = {id}\nmethod = \"dns-txt-token\"\ndomains = [\"k{id}.example.test\"]\n"))
        .collect();
    let cfg = h.config(h.dns_port, &format!("{}\n{orders}", h.memory_provider(&["example.test"], 0))).replace(
        "log_format = \"text\"",
        &format!("log_format = \"text\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    let mut child = h.spawn_run(&h.write_config(&cfg));
    let refused = "CertCentral refused the API key";
    eventually_sync(Duration::from_secs(30), "the account ERROR", || h.log().contains(refused)).await;
    // a moment for every unit to reach the gate
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let base = format!("http://127.0.0.1:{metrics_port}");
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503, "/healthz must fail while the key is refused");
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dcvd_account_condition{condition=\"api_key_refused\"} 1"), "{metrics}");
    let log = h.log();
    assert_eq!(log.lines().filter(|l| l.contains(" ERROR ")).count(), 1, "one ERROR for the account:\n{log}");
    assert!(!log.contains("unit failed") && !log.contains("state=\"failed\""), "no unit may fail:\n{log}");
    assert!(!log.contains("a-revoked-key"), "the key must not be logged");

    // The operator fixes the key and reloads: the units resume at once and validate.
    std::fs::write(&key_file, &h.api_key).unwrap();
    signal(&child, "HUP");
    let start = std::time::Instant::now();
    while ![311, 312, 313].iter().all(|id| h.sim().order(*id).is_some_and(|o| o.dcv_status == "valid")) {
        assert!(start.elapsed() < Duration::from_secs(60), "the orders never validated after the fix:\n{}", h.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(h.log().contains("CertCentral accepts the API key again; units resume"), "{}", h.log());
    signal(&child, "TERM");
    let _ = child.wait();
}

/// `[notify]` is wired to the engine: a unit that ends sends one event to the webhook (with the
/// unit's identity and final state), delivered before `dcvd once` exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_states_are_notified() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(321, &["notify321.example.test"]));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = h.config(
        h.dns_port,
        &format!(
            "{}\n[notify]\nwebhook_url = \"{url}\"\n\n[[order]]\nid = 321\nmethod = \"dns-txt-token\"\ndomains = [\"notify321.example.test\"]\n",
            h.memory_provider(&["example.test"], 0)
        ),
    );
    let out = h.once_output(&h.write_config(&cfg));
    assert!(out.status.success(), "dcvd once failed:\n{}", text(&out));
    let body = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event").unwrap();
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "unit", "{event}");
    assert_eq!(event["unit_kind"], "order", "{event}");
    assert_eq!(event["unit_id"], 321, "{event}");
    assert_eq!(event["state"], "cleaned_up", "{event}");
    assert!(rx.try_recv().is_err(), "one event per unit that ends");
}

/// SIGHUP with an invalid file keeps the old configuration running (error with line:col);
/// SIGHUP with a valid one picks up a new order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_bad_then_good() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(401, &["a.example.test"]));
    h.sim().add_order(NewOrder::new(402, &["b.example.test"]));
    let provider = h.memory_provider(&["example.test"], 0);
    let first =
        format!("{provider}\n[[order]]\nid = 401\nmethod = \"dns-txt-token\"\ndomains = [\"a.example.test\"]\n");
    let path = h.write_config(&h.config(h.dns_port, &first));
    let mut child = h.spawn_run(&path);
    eventually_sync(Duration::from_secs(30), "order 401 valid", || {
        h.sim().order(401).is_some_and(|o| o.dcv_status == "valid")
    })
    .await;

    std::fs::write(&path, "[certcentral]\nbase_url = 42\n").unwrap();
    signal(&child, "HUP");
    eventually_sync(Duration::from_secs(10), "reload error in the log", || h.log().contains("keeping the running one"))
        .await;
    assert!(h.log().contains("dcvd.toml:2:12"), "the reload error must carry line:col:\n{}", h.log());
    assert!(child.try_wait().unwrap().is_none(), "dcvd must keep running after a bad reload");

    let second = format!("{first}\n[[order]]\nid = 402\nmethod = \"dns-txt-token\"\ndomains = [\"b.example.test\"]\n");
    std::fs::write(&path, h.config(h.dns_port, &second)).unwrap();
    signal(&child, "HUP");
    eventually_sync(Duration::from_secs(30), "order 402 valid", || {
        h.sim().order(402).is_some_and(|o| o.dcv_status == "valid")
    })
    .await;

    signal(&child, "TERM");
    let status =
        wait_output(std::mem::replace(&mut child, h.command(&["--version"]).spawn().unwrap()), Duration::from_secs(15))
            .status;
    assert!(status.success(), "dcvd run must exit 0 on SIGTERM:\n{}", h.log());
    assert!(!h.log().contains(&h.api_key));
}

/// SIGTERM while dcvd waits for a lagging name server, then a restart: the unit resumes, the
/// token is not fetched again, the value is published once, and nothing is left in BIND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_flight_then_restart_resumes() {
    let bind = Bind::builder().zone(ZoneSpec::new("resume.test")).with_lagging_secondary().start();
    let h = HARNESS.start_local(Some(vec![bind.primary_addr(), bind.secondary_addr().unwrap()])).await;
    h.sim().add_order(NewOrder::new(501, &["resume.test"]));
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    let rest = format!(
        "[providers.bind]\ntype = \"rfc2136\"\nserver = \"{}\"\nzones = [\"resume.test\"]\ntsig_key_name = \"{}\"\ntsig_algorithm = \"hmac-sha256\"\ntsig_secret_file = \"{}\"\n\n[[order]]\nid = 501\nmethod = \"dns-txt-token\"\ndomains = [\"resume.test\"]\n",
        bind.primary_addr(),
        bind.tsig().name,
        bind.tsig_secret_file().display()
    );
    let path = h.write_config(&h.config(bind.port(), &rest));
    let mut child = h.spawn_run(&path);
    // Published on the primary; the secondary lags, so dcvd is waiting for propagation.
    eventually_sync(Duration::from_secs(30), "record on the primary", || {
        !bind.query(bind.primary_addr(), "_dnsauth.resume.test", "TXT").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM");
    let status =
        wait_output(std::mem::replace(&mut child, h.command(&["--version"]).spawn().unwrap()), Duration::from_secs(15))
            .status;
    assert!(status.success(), "SIGTERM must stop dcvd cleanly:\n{}", h.log());
    assert_eq!(h.sim().order(501).unwrap().dcv_status, "pending", "no check may happen before the secondary serves");
    assert_eq!(h.sim().stats().premature_checks, 0);

    bind.refresh_secondary("resume.test");
    let out = h.once_output(&path);
    let log = format!("{}{}", h.log(), text(&out));
    assert!(out.status.success(), "restart did not finish the order:\n{log}");
    assert_eq!(h.sim().order(501).unwrap().dcv_status, "valid");
    let calls = h.sim().stats().order_calls.get(&501).cloned().unwrap_or_default();
    assert_eq!(calls.get("dcv_random_value"), Some(&1), "the stored token must be reused: {calls:?}");
    assert_eq!(calls.get("check_dcv"), Some(&1), "one check after propagation: {calls:?}");
    assert!(bind.query(bind.primary_addr(), "_dnsauth.resume.test", "TXT").is_empty(), "record left behind");
    assert!(!log.contains(&h.api_key), "API key leaked");
    assert!(!log.contains(tsig.trim()), "TSIG secret leaked");
}

/// `check-config` exits 78 on a broken file and names its position.
#[tokio::test]
async fn check_config_exit_codes() {
    let h = HARNESS.start_local(None).await;
    let bad = h.write_config("[daemon]\nmax_concurrent = \"many\"\n");
    let out = h.command(&["check-config", "--config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("dcvd.toml:2:"), "{}", text(&out));
    let good = h.write_config(&h.config(h.dns_port, &h.memory_provider(&["example.test"], 0)));
    let out = h.command(&["check-config", "--config", good.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A provider that refuses its settings when built is a configuration error too.
    let cf = "[providers.cf]\ntype = \"cloudflare\"\nzones = [\"cf.test\"]\napi_token_env = \"CF_TOKEN\"\nbase_url = \"http://192.0.2.1/client/v4\"\n";
    let refused = h.write_config(&h.config(h.dns_port, cf));
    let out =
        h.command(&["once", "--config", refused.to_str().unwrap()]).env("CF_TOKEN", "t0k3n-value").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(!text(&out).contains("t0k3n-value"));
    let out = h.command(&["no-such-command"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Under systemd: READY after the store is open, STATUS with counts per state, WATCHDOG pings when
/// `WATCHDOG_USEC` is set, STOPPING on SIGTERM; and the Prometheus endpoint serves its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications_and_metrics() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(601, &["notify.example.test"]));
    let metrics_port = test_support::ports::free_port();
    let rest = format!(
        "{}\n[[order]]\nid = 601\nmethod = \"dns-txt-token\"\ndomains = [\"notify.example.test\"]\n",
        h.memory_provider(&["example.test"], 0)
    );
    let cfg = h.config(h.dns_port, &rest).replace(
        "log_format = \"text\"",
        &format!("log_format = \"json\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    let path = h.write_config(&cfg);
    let socket_path = h.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let log = std::fs::File::create(h.log_path()).unwrap();
    let mut child = h
        .command(&["run", "--config", path.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        let n = socket.recv(&mut buf).expect("a notification from dcvd");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    eventually_sync(Duration::from_secs(30), "order 601 valid", || {
        h.sim().order(601).is_some_and(|o| o.dcv_status == "valid")
    })
    .await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{metrics_port}");
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in
        ["dcvd_units", "dcvd_certcentral_requests_total", "endpoint=\"check_dcv\"", "dcvd_propagation_seconds"]
    {
        assert!(metrics.contains(needle), "{needle} missing from /metrics:\n{metrics}");
    }
    while !seen.contains("STATUS=") {
        let n = socket.recv(&mut buf).expect("a STATUS notification");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    signal(&child, "TERM");
    while !seen.contains("STOPPING=1") {
        let n = socket.recv(&mut buf).expect("STOPPING from dcvd");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let status =
        wait_output(std::mem::replace(&mut child, h.command(&["--version"]).spawn().unwrap()), Duration::from_secs(15))
            .status;
    assert!(status.success());
    // JSON logs: one object per line with the structured transition fields.
    let log = h.log();
    let transition = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["state"] == "valid")
        .unwrap_or_else(|| panic!("no JSON transition line in:\n{log}"));
    assert!(
        !log.contains("Uninited") && !log.contains("Job creator created"),
        "the cron library's housekeeping lines must be silenced:\n{log}"
    );
    assert_eq!(transition["span"]["unit_kind"], "order", "{transition}");
    assert_eq!(transition["span"]["unit_id"], 601, "{transition}");
    assert!(transition["elapsed_ms"].is_u64(), "{transition}");
    assert!(!log.contains(&h.api_key));
}

/// `dcvd status --json` shows a unit stopped mid-flight, and `dcvd cleanup` removes every record
/// the store still lists, from the real backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_cleanup_after_a_stop() {
    let bind = Bind::builder().zone(ZoneSpec::new("cleanup.test")).with_lagging_secondary().start();
    let h = HARNESS.start_local(Some(vec![bind.primary_addr(), bind.secondary_addr().unwrap()])).await;
    h.sim().add_order(NewOrder::new(701, &["cleanup.test", "www.cleanup.test"]));
    let rest = format!(
        "[providers.bind]\ntype = \"rfc2136\"\nserver = \"{}\"\nzones = [\"cleanup.test\"]\ntsig_key_name = \"dcvd\"\ntsig_secret_file = \"{}\"\n\n[[order]]\nid = 701\nmethod = \"dns-txt-token\"\ndomains = [\"cleanup.test\", \"www.cleanup.test\"]\n",
        bind.primary_addr(),
        bind.tsig_secret_file().display()
    );
    let path = h.write_config(&h.config(bind.port(), &rest));
    let empty = h.command(&["status", "--json", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(empty.status.success(), "status before any run: {}", text(&empty));
    let mut child = h.spawn_run(&path);
    eventually_sync(Duration::from_secs(30), "record on the primary", || {
        !bind.query(bind.primary_addr(), "_dnsauth.cleanup.test", "TXT").is_empty()
    })
    .await;
    signal(&child, "TERM");
    let _ =
        wait_output(std::mem::replace(&mut child, h.command(&["--version"]).spawn().unwrap()), Duration::from_secs(15));

    let out = h.command(&["status", "--json", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let units: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(units[0]["id"], 701);
    assert_eq!(units[0]["state"], "published", "{units}");
    assert!(units[0]["token_expires_at"].is_string(), "{units}");
    let table = h.command(&["status", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("order 701"), "{}", text(&table));
    // Without the configuration (and its secrets): straight from the state directory.
    let state = h.dir.path().join("state");
    let direct = h.command(&["status", "--state-dir", state.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&direct.stdout).contains("published"), "{}", text(&direct));

    // Neither status nor cleanup needs the CertCentral key (the service's credentials may be
    // gone once it is stopped): only cleanup reads the DNS provider's secret.
    std::fs::remove_file(h.key_path()).unwrap();
    let table = h.command(&["status", "--config", path.to_str().unwrap()]).output().unwrap();
    let shown = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.status.success(), "{}", text(&table));
    assert!(shown.contains("RECORDS STILL PUBLISHED") && shown.contains("_dnsauth.cleanup.test"), "{shown}");
    assert!(shown.contains("in use"), "the record of a running unit is not a left-over: {shown}");
    // One unit's history: its state changes with times, from the store.
    let one = h.command(&["status", "order:701", "--config", path.to_str().unwrap()]).output().unwrap();
    let shown = String::from_utf8_lossy(&one.stdout).to_string();
    assert!(one.status.success(), "{}", text(&one));
    let history = shown.split("HISTORY").nth(1).unwrap_or_else(|| panic!("no history: {shown}"));
    let events: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(events, ["token_issued", "published"], "{shown}");
    let one = h.command(&["status", "701", "--json", "--state-dir", state.to_str().unwrap()]).output().unwrap();
    let unit: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(unit["history"][1]["event"], "published", "{unit}");
    assert_eq!(unit["records"][0]["status"], "published", "{unit}");
    // A state directory that does not exist is a mistake, not "nothing ran yet".
    let missing = h.dir.path().join("no-such-state");
    let out = h.command(&["status", "--state-dir", missing.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no-such-state: no such directory"), "{}", text(&out));

    // A record of a provider that left the configuration cannot be removed; cleanup still
    // removes the others, then reports the failure and exits 1.
    {
        use dcvd::store::{NewRecord, Store, UnitId};
        let store = Store::open(&state).unwrap();
        let stray = UnitId::order(700);
        store.sync_unit(stray, "dns-txt-token", &["old.example".to_string()], None).unwrap();
        let rec = NewRecord {
            provider: "retired".into(),
            zone: "old.example".into(),
            name: "_dnsauth.old.example".into(),
            rtype: dns_provider::RecordType::Txt,
            value: "stale".into(),
            ttl: 60,
        };
        let rows = store.record_publish_intent(stray, &[rec]).unwrap();
        store.mark_published(rows[0].id, None, None).unwrap();
        store.mark_missing_from_config(&[UnitId::order(701)]).unwrap();
    }
    let out = h.command(&["cleanup", "--config", path.to_str().unwrap()]).output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("removed 1 records") && said.contains("removal failed for 1 group"), "{said}");
    assert!(said.contains("order 700: _dnsauth.old.example TXT in zone old.example (provider retired)"), "{said}");
    assert!(bind.query(bind.primary_addr(), "_dnsauth.cleanup.test", "TXT").is_empty(), "cleanup left the record");
    let table = h.command(&["status", "--state-dir", state.to_str().unwrap()]).output().unwrap();
    let shown = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(shown.contains("_dnsauth.old.example") && shown.contains("left over"), "{shown}");
    assert!(!shown.contains("_dnsauth.cleanup.test"), "{shown}");
}

/// `check-config --online` runs each provider's preflight and one authenticated CertCentral call:
/// 0 with the right key, 1 with a wrong one (DigiCert's 401 in the output, the key nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_online() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(801, &["online.example.test"]));
    let rest = format!(
        "{}\n[[order]]\nid = 801\nmethod = \"dns-txt-token\"\ndomains = [\"online.example.test\"]\n",
        h.memory_provider(&["example.test"], 0)
    );
    let path = h.write_config(&h.config(h.dns_port, &rest));
    let out = h.command(&["check-config", "--online", "--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("provider mem (memory): ok"), "{}", text(&out));
    std::fs::write(h.key_path(), "wrong-key-0123456789").unwrap();
    let out = h.command(&["check-config", "--online", "--config", path.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));
    assert!(!text(&out).contains("wrong-key-0123456789"), "the key leaked: {}", text(&out));
}

/// The `rescan` cron job picks up a new order file without a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_picks_up_new_order_files() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(901, &["rescan.example.test"]));
    let orders = h.dir.path().join("orders.d");
    std::fs::create_dir_all(&orders).unwrap();
    let cfg = h.config(h.dns_port, &h.memory_provider(&["example.test"], 0)).replace(
        "log_format = \"text\"",
        &format!("log_format = \"text\"\nrescan = \"* * * * * *\"\norder_files = [\"{}/*.toml\"]", orders.display()),
    );
    let path = h.write_config(&cfg);
    let mut child = h.spawn_run(&path);
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        orders.join("new.toml"),
        "[[order]]\nid = 901\nmethod = \"dns-txt-token\"\ndomains = [\"rescan.example.test\"]\n",
    )
    .unwrap();
    eventually_sync(Duration::from_secs(30), "order 901 valid", || {
        h.sim().order(901).is_some_and(|o| o.dcv_status == "valid")
    })
    .await;
    signal(&child, "TERM");
    let status =
        wait_output(std::mem::replace(&mut child, h.command(&["--version"]).spawn().unwrap()), Duration::from_secs(15))
            .status;
    assert!(status.success(), "{}", h.log());
    // the cron reloads say what triggered them
    let reloaded = h.log().lines().find(|l| l.contains("configuration reloaded")).map(str::to_owned);
    assert!(reloaded.as_deref().is_some_and(|l| l.contains("trigger=\"rescan\"")), "{reloaded:?}");
}

/// Forwards every connection on `listener` to `to` (CertCentral coming back on its address).
async fn forward(listener: tokio::net::TcpListener, to: std::net::SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// CertCentral not answering at all is an account-wide condition like a refused key: one ERROR
/// that says what to check, no unit failed, `/healthz` failing and
/// `dcvd_account_condition{condition="certcentral_unreachable"}` at 1; once it answers again
/// (here: after SIGHUP, which probes at once) the units resume and validate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_certcentral_pauses_every_unit_until_it_answers() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(321, &["u321.example.test"]));
    let dead_port = test_support::ports::free_port();
    let metrics_port = test_support::ports::free_port();
    let sim_url = h.sim.base_url.clone();
    let dead_url = sim_url.replace(&h.sim.addr.to_string(), &format!("127.0.0.1:{dead_port}"));
    assert_ne!(sim_url, dead_url);
    let cfg = h
        .config(
            h.dns_port,
            &format!(
                "{}\n[[order]]\nid = 321\nmethod = \"dns-txt-token\"\ndomains = [\"u321.example.test\"]\n",
                h.memory_provider(&["example.test"], 0)
            ),
        )
        .replace(&sim_url, &dead_url)
        .replace(
            "log_format = \"text\"",
            &format!("log_format = \"text\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\""),
        );
    let mut child = h.spawn_run(&h.write_config(&cfg));
    let unreachable = "CertCentral is unreachable";
    eventually_sync(Duration::from_secs(60), "the account ERROR", || h.log().contains(unreachable)).await;
    let base = format!("http://127.0.0.1:{metrics_port}");
    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503, "/healthz must fail while CertCentral is unreachable");
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("dcvd_account_condition{condition=\"certcentral_unreachable\"} 1"), "{metrics}");
    let log = h.log();
    assert_eq!(log.lines().filter(|l| l.contains(" ERROR ")).count(), 1, "one ERROR for the account:\n{log}");
    let line = log.lines().find(|l| l.contains(unreachable)).unwrap();
    assert!(line.contains(&format!("127.0.0.1:{dead_port}")) && line.contains("after 5 attempts"), "{line}");
    assert!(!log.contains("state=\"failed\""), "no unit may fail:\n{log}");

    // CertCentral answers again on its address; the reload makes dcvd ask at once.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", dead_port)).await.unwrap();
    tokio::spawn(forward(listener, h.sim.addr));
    signal(&child, "HUP");
    eventually_sync(Duration::from_secs(60), "order 321 valid", || {
        h.sim().order(321).is_some_and(|o| o.dcv_status == "valid")
    })
    .await;
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(h.log().contains("CertCentral answers again; units resume"), "{}", h.log());
    signal(&child, "TERM");
    let _ = child.wait();
}

/// `dcvd once --deadline` gives up when the deadline passes first: it says so, removes the
/// records it published and exits 75; the unit keeps its state for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_at_the_deadline_and_cleans_up() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(331, &["slow.example.test"]));
    // The second name server serves the record only after an hour: propagation never ends.
    let cfg = h.config(
        h.dns_port,
        &format!(
            "{}\n[[order]]\nid = 331\nmethod = \"dns-txt-token\"\ndomains = [\"slow.example.test\"]\n",
            h.memory_provider(&["example.test"], 3_600_000)
        ),
    );
    let path = h.write_config(&cfg);
    let child = h
        .command(&["once", "--deadline", "3s", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(75), "{log}");
    assert!(log.contains("gave up after the deadline of 3s: 1 unit(s) unfinished: order 331 (published)"), "{log}");
    assert_eq!(log.lines().filter(|l| l.contains(" ERROR ")).count(), 1, "one ERROR:\n{log}");
    assert!(log.contains("record removed"), "the record must be removed:\n{log}");
    let state = h.dir.path().join("state");
    let status = h.command(&["status", "--json", "--state-dir", state.to_str().unwrap()]).output().unwrap();
    let units: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(units[0]["state"], "published", "{units}");
    assert_eq!(units[0]["records"], serde_json::json!([]), "no record left: {units}");
}

/// An order whose names come from DigiCert (no `domains` in the configuration) with a name no
/// provider serves fails with the documented message, which says what to add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_digicert_that_no_provider_serves_fail_clearly() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(341, &["shop.elsewhere.example"]));
    let cfg = h.config(
        h.dns_port,
        &format!("{}\n[[order]]\nid = 341\nmethod = \"dns-txt-token\"\n", h.memory_provider(&["example.test"], 0)),
    );
    let out = h.once_output(&h.write_config(&cfg));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let failed = log.lines().find(|l| l.contains("state=\"failed\"")).unwrap_or_else(|| panic!("no failure:\n{log}"));
    assert!(
        failed.contains("no provider serves")
            && failed.contains("add its zone to the `zones` of a [providers.NAME] section"),
        "{failed}"
    );
    assert!(failed.contains("unit_id=341"), "{failed}");
    // text values with spaces are quoted, so the line splits into key=value pairs
    assert!(failed.contains(" error=\"no provider serves"), "{failed}");
    assert_eq!(log.lines().filter(|l| l.contains(" ERROR ")).count(), 1, "one ERROR per failure:\n{log}");
}

/// A start-up error is printed once (the log line), not once by the logger and again by main.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_error_is_printed_once() {
    let h = HARNESS.start_local(None).await;
    let cfg = h.config(h.dns_port, &h.memory_provider(&["example.test"], 0));
    let path = h.write_config(&cfg);
    let mut first = h.spawn_run(&path);
    eventually_sync(Duration::from_secs(30), "the first daemon's banner", || h.log().contains("dcvd starting")).await;
    eventually_sync(Duration::from_secs(30), "the first daemon's lock", || {
        h.dir.path().join("state/dcvd.lock").exists()
    })
    .await;
    let second = h
        .command(&["run", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(second, Duration::from_secs(30));
    signal(&first, "TERM");
    let _ = first.wait();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert_eq!(said.matches("another dcvd is running").count(), 1, "printed once:\n{said}");
}

/// A name whose zone the resolvers cannot find (they answer REFUSED) fails once the propagation
/// timeout has passed, naming the cause, instead of being retried until its token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_in_no_zone_fails_after_the_propagation_timeout() {
    // The resolver knows only other.test: it REFUSES example.test.
    let bind = Bind::builder().zone(ZoneSpec::new("other.test")).start();
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(351, &["lost.example.test"]));
    let cfg = h
        .config(
            bind.port(),
            &format!(
                "{}\n[[order]]\nid = 351\nmethod = \"dns-txt-token\"\ndomains = [\"lost.example.test\"]\n",
                h.memory_provider(&["example.test"], 0)
            ),
        )
        .replace("timeout = \"120s\"", "timeout = \"3s\"");
    let out = h.once_output(&h.write_config(&cfg));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let failed = log.lines().find(|l| l.contains("state=\"failed\"")).unwrap_or_else(|| panic!("no failure:\n{log}"));
    assert!(failed.contains("not served by every name server after"), "{failed}");
    assert!(failed.contains("no zone found for _dnsauth.example.test") && failed.contains("REFUSED"), "{failed}");
    assert_eq!(h.sim().stats().order_calls.get(&351).map(|m| m.values().sum::<u64>()), Some(1), "one token, no check");
}

/// A reload says what triggered it, warns about keys that need a restart, and a unit that
/// failed in this very run starts over without being called one of an earlier run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_names_its_trigger_and_the_keys_that_need_a_restart() {
    let h = HARNESS.start_local(None).await;
    // Its name is not served by any provider: it fails.
    h.sim().add_order(NewOrder::new(421, &["x.elsewhere.example"]));
    let rest =
        format!("{}\n[[order]]\nid = 421\nmethod = \"dns-txt-token\"\n", h.memory_provider(&["example.test"], 0));
    let path = h.write_config(&h.config(h.dns_port, &rest));
    let mut child = h.spawn_run(&path);
    eventually_sync(Duration::from_secs(30), "order 421 failed", || h.log().contains("state=\"failed\"")).await;

    let changed = h.config(h.dns_port, &rest).replace(
        "log_format = \"text\"",
        &format!("log_format = \"json\"\nmetrics_listen = \"127.0.0.1:{}\"", test_support::ports::free_port()),
    );
    std::fs::write(&path, changed).unwrap();
    signal(&child, "HUP");
    eventually_sync(Duration::from_secs(30), "the reload", || h.log().contains("configuration reloaded")).await;
    let start = std::time::Instant::now();
    while h.log().matches("state=\"failed\"").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "the unit did not fail again:\n{}", h.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&child, "TERM");
    let _ = child.wait();
    let log = h.log();
    let reloaded = log.lines().find(|l| l.contains("configuration reloaded")).unwrap();
    assert!(reloaded.contains("trigger=\"sighup\""), "{reloaded}");
    for key in ["log_format", "metrics_listen"] {
        assert!(
            log.lines().any(|l| l.contains(" WARN ")
                && l.contains(&format!("`{key}` changed, but it takes effect only after a restart"))),
            "no restart warning for {key}:\n{log}"
        );
    }
    assert!(!log.contains("state_dir` changed"), "{log}");
    assert!(log.contains("starting over a unit that ended, after the reload"), "{log}");
    assert!(!log.contains("ended in an earlier run"), "the unit failed in this run:\n{log}");
}

/// `dcvd doctor` against the simulator and BIND: every check passes with the right settings
/// (exit 0); a refused API key and a zone nobody serves are reported with what to do (exit 1),
/// and the key never appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_dependency() {
    let bind = Bind::builder()
        .zone(ZoneSpec::new("doctor.test").with_line("bad 60 IN CAA 0 issue \"letsencrypt.org\""))
        .with_lagging_secondary()
        .start();
    let h = HARNESS.start_local(Some(vec![bind.primary_addr()])).await;
    let provider = |zones: &str| {
        format!(
            "[providers.bind]\ntype = \"rfc2136\"\nserver = \"{}\"\nzones = [{zones}]\ntsig_key_name = \"dcvd\"\ntsig_secret_file = \"{}\"\n",
            bind.primary_addr(),
            bind.tsig_secret_file().display()
        )
    };
    let path = h.write_config(&h.config(bind.port(), &provider("\"doctor.test\"")));
    let out = h.command(&["doctor", "--online", "--config", path.to_str().unwrap()]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for row in [
        "configuration",
        "state directory",
        "certcentral http://",
        "provider bind (rfc2136)",
        "zone doctor.test",
        "caa",
    ] {
        let line = report.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row} row:\n{report}"));
        assert!(line.contains(" ok "), "{line}");
    }
    let zone = report.lines().find(|l| l.starts_with("zone doctor.test")).unwrap();
    assert!(zone.contains("127.0.0.1") && zone.contains("127.0.0.2"), "both name servers: {zone}");

    std::fs::write(h.key_path(), "a-wrong-key").unwrap();
    let order = "[[order]]\nid = 1\nmethod = \"dns-txt-token\"\ndomains = [\"bad.doctor.test\"]\n";
    let rest = format!("{}\n{order}", provider("\"doctor.test\", \"gone.test\""));
    let path = h.write_config(&h.config(bind.port(), &rest));
    let out = h.command(&["doctor", "--online", "--config", path.to_str().unwrap()]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let cc = report.lines().find(|l| l.starts_with("certcentral")).unwrap();
    assert!(cc.contains("FAILED") && cc.contains("the API key is refused"), "{cc}");
    let gone = report.lines().find(|l| l.starts_with("zone gone.test")).unwrap_or_else(|| panic!("{report}"));
    assert!(gone.contains("FAILED") && gone.contains("check that it is delegated"), "{gone}");
    let caa = report.lines().find(|l| l.starts_with("caa")).unwrap_or_else(|| panic!("{report}"));
    assert!(caa.contains("FAILED") && caa.contains("bad.doctor.test CAA 0 issue \"letsencrypt.org\""), "{caa}");
    let good = report.lines().find(|l| l.starts_with("zone doctor.test")).unwrap();
    assert!(good.contains(" ok "), "{good}");
    assert!(!text(&out).contains("a-wrong-key"), "the key must not be printed");
    // Offline (the default), neither CertCentral nor a provider is called.
    let out = h.command(&["doctor", "--config", path.to_str().unwrap()]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!report.lines().any(|l| l.starts_with("certcentral") || l.starts_with("provider ")), "{report}");
}

/// `dcvd doctor DOMAIN...`: per name, the owner dcvd would publish at (base scope: the zone's
/// apex), the zone and its SOA minimum, what each authoritative server serves there now, the
/// provider, DNSSEC and CAA; a name no provider serves and a name CAA forbids make it exit 1 with
/// the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_looks_at_each_name() {
    let bind = Bind::builder()
        .zone(
            ZoneSpec::new("names.test")
                .with_line("_dnsauth 60 IN TXT \"value-already-there\"")
                .with_line("bad 60 IN CAA 0 issue \"letsencrypt.org\""),
        )
        .zone(ZoneSpec::new("other.test"))
        .with_lagging_secondary()
        .start();
    let h = HARNESS.start_local(Some(vec![bind.primary_addr()])).await;
    let rest = format!(
        "[providers.bind]\ntype = \"rfc2136\"\nserver = \"{}\"\nzones = [\"names.test\"]\ntsig_key_name = \"dcvd\"\ntsig_secret_file = \"{}\"\n",
        bind.primary_addr(),
        bind.tsig_secret_file().display()
    );
    let path = h.write_config(&h.config(bind.port(), &rest));
    let out = h.command(&["doctor", "--config", path.to_str().unwrap(), "www.names.test"]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let row = |report: &str, prefix: &str| -> String {
        report
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} row:\n{report}"))
            .to_string()
    };
    let owner = row(&report, "www.names.test owner");
    assert!(owner.contains("TXT _dnsauth.names.test") && owner.contains("validation_scope = \"base\""), "{owner}");
    assert!(row(&report, "www.names.test zone").contains("names.test (SOA minimum"), "{report}");
    let servers: Vec<&str> = report.lines().filter(|l| l.starts_with("www.names.test ns ")).collect();
    assert_eq!(servers.len(), 2, "both name servers: {report}");
    assert!(
        servers.iter().all(|l| l.contains(" ok ") && l.contains("serves TXT \"value-already-there\"")),
        "{servers:?}"
    );
    assert!(row(&report, "www.names.test provider").contains("provider bind (rfc2136) publishes _dnsauth.names.test"));
    assert!(row(&report, "www.names.test dnssec").contains("not signed"), "{report}");
    assert!(row(&report, "www.names.test caa").contains(" ok "), "{report}");

    let out = h
        .command(&["doctor", "--config", path.to_str().unwrap(), "bad.names.test", "shop.other.test"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let caa = row(&report, "bad.names.test caa");
    assert!(caa.contains("FAILED") && caa.contains("letsencrypt.org"), "{caa}");
    let provider = row(&report, "shop.other.test provider");
    assert!(provider.contains("FAILED") && provider.contains("no provider serves _dnsauth.other.test"), "{provider}");
    assert!(provider.contains("validation_scope = \"base\""), "the fix names the scope: {provider}");
}

/// CAA pre-flight: a unit whose name's CAA set (here at the zone apex, found by climbing from
/// the name) allows only another CA fails before any token is requested, with the record in the
/// one ERROR; a name whose CAA allows DigiCert validates; `caa_check = false` skips the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caa_forbidding_digicert_fails_the_unit_before_any_token() {
    let bind = Bind::builder()
        .zone(
            ZoneSpec::new("caa.test")
                .with_line("@ 60 IN CAA 0 issue \"letsencrypt.org\"")
                .with_line("ok 60 IN CAA 0 issue \"digicert.com\""),
        )
        .start();
    let h = HARNESS.start_local(Some(vec![bind.primary_addr()])).await;
    h.sim().add_order(NewOrder::new(501, &["shop.caa.test"]));
    h.sim().add_order(NewOrder::new(502, &["ok.caa.test"]));
    let rest = format!(
        "[providers.bind]\ntype = \"rfc2136\"\nserver = \"{}\"\nzones = [\"caa.test\"]\ntsig_key_name = \"dcvd\"\ntsig_secret_file = \"{}\"\n\n\
         [[order]]\nid = 501\nmethod = \"dns-txt-token\"\ndomains = [\"shop.caa.test\"]\n\n\
         [[order]]\nid = 502\nmethod = \"dns-txt-token\"\ndomains = [\"ok.caa.test\"]\n",
        bind.primary_addr(),
        bind.tsig_secret_file().display()
    );
    let cfg = h.config(bind.port(), &rest);
    let out = h.once_output(&h.write_config(&cfg));
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "one ERROR:\n{log}");
    assert!(
        errors[0].contains("unit_id=501")
            && errors[0].contains("state=\"failed\"")
            && errors[0].contains("caa.test CAA 0 issue \\\"letsencrypt.org\\\""),
        "{}",
        errors[0]
    );
    assert_eq!(h.sim().stats().order_calls.get(&501), None, "no token requested for the forbidden unit");
    assert_eq!(h.sim().order(502).expect("order").dcv_status, "valid", "{log}");

    // Turned off: the unit is not failed by dcvd (the simulator does not check CAA).
    let off = cfg.replace("[certcentral]\n", "[certcentral]\ncaa_check = false\n");
    std::fs::remove_dir_all(h.dir.path().join("state")).unwrap();
    let out = h.once_output(&h.write_config(&off));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.sim().order(501).expect("order").dcv_status, "valid");
}

/// `dcvd demo --config` prints a configuration that runs as printed against the CertCentral
/// simulator started as its header says (fixed port, the fixture file, key "sim-devkey"): every
/// unit ends valid and `dcvd once` exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_config_runs_as_printed_against_the_simulator() {
    let h = HARNESS.start_local(None).await;
    let out = h.command(&["demo", "--config"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("sim-devkey") && printed.contains("--orders crates/certcentral-sim/fixtures/demo.toml"),
        "{printed}"
    );
    // Started as the header says: `--listen 127.0.0.1:18443 --dns 127.0.0.1:15353 --dns
    // 127.0.0.2:15353 --orders crates/certcentral-sim/fixtures/demo.toml`, the default key.
    let fixtures =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../certcentral-sim/fixtures/demo.toml")).unwrap();
    let fixtures = certcentral_sim::Fixtures::parse(&fixtures).unwrap();
    let dns: Vec<std::net::SocketAddr> = vec!["127.0.0.1:15353".parse().unwrap(), "127.0.0.2:15353".parse().unwrap()];
    let sim = certcentral_sim::Sim::new(certcentral_sim::SimConfig {
        api_key: "sim-devkey".into(),
        dns_servers: dns,
        ..certcentral_sim::SimConfig::default()
    });
    let ids: Vec<u64> = fixtures.orders.iter().map(|o| o.id).collect();
    for o in fixtures.orders {
        sim.add_order(o);
    }
    for d in fixtures.domains {
        sim.add_domain(d);
    }
    let running =
        sim.clone().spawn("127.0.0.1:18443".parse().unwrap()).await.expect("port 18443 free for the simulator");
    let path = h.dir.path().join("demo.toml");
    // Its own state directory, so the test leaves nothing in /tmp/dcvd-demo.
    std::fs::write(
        &path,
        printed.replace("/tmp/dcvd-demo/state", &h.dir.path().join("demo-state").display().to_string()),
    )
    .unwrap();
    let child = h
        .command(&["once", "--config", path.to_str().unwrap()])
        .env("CERTCENTRAL_SIM_API_KEY", "sim-devkey")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(90));
    assert!(out.status.success(), "the printed configuration did not run:\n{}", text(&out));
    for id in ids {
        assert_eq!(sim.order(id).expect("order").dcv_status, "valid");
    }
    assert!(sim.domain(2001).expect("domain").dcv_valid);
    running.shutdown().await;
}
