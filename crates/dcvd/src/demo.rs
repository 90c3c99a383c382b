//! `dcvd demo`: a self-contained run on an embedded default. It starts the CertCentral
//! simulator and dcvd in this process; dcvd's memory provider serves its zone from two name
//! servers on loopback (the second one lags), the simulator checks DNS there. The log shows each
//! unit moving token -> published -> propagated -> valid -> cleaned up, then a summary. Besides
//! the units its TOML lists, `[discovery]` finds a pending order and an OV domain due for
//! revalidation in the simulator's account (`SOURCE discovered` in the summary).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certcentral_sim::{Fixtures, NewDomain, NewOrder, Sim, SimConfig};
use tokio::sync::mpsc;

use crate::config::{Config, LogFormat};
use crate::engine::{self, Mode, NoObserver};
use crate::metrics::Metrics;
use crate::store::Store;

/// The demo's configuration template (`config/demo.toml`).
pub const TEMPLATE: &str = include_str!("../../../config/demo.toml");

/// Fills the template with the real simulator address, DNS port and paths.
pub fn render(sim_port: u16, dns_port: u16, key_file: &str, state_dir: &str) -> String {
    TEMPLATE
        .replace("127.0.0.1:18443", &format!("127.0.0.1:{sim_port}"))
        .replace("15353", &dns_port.to_string())
        .replace("/tmp/dcvd-demo/certcentral-api-key", key_file)
        .replace("/tmp/dcvd-demo/state", state_dir)
}

fn free_dns_port() -> u16 {
    let ips: [IpAddr; 2] = ["127.0.0.1".parse().expect("ip"), "127.0.0.2".parse().expect("ip")];
    for _ in 0..500 {
        let port = 20_000 + rand::random::<u16>() % 40_000;
        let free = ips.iter().all(|ip| {
            let a = SocketAddr::new(*ip, port);
            std::net::UdpSocket::bind(a).is_ok() && std::net::TcpListener::bind(a).is_ok()
        });
        if free {
            return port;
        }
    }
    20_053
}

/// The simulator's orders and domains (`crates/certcentral-sim/fixtures/demo.toml`), the same the standalone
/// `certcentral-sim --orders` loads for the printed configuration.
pub const ORDERS: &str = include_str!("../../certcentral-sim/fixtures/demo.toml");

/// The key `certcentral-sim` accepts unless told otherwise (its `--api-key` default); the printed
/// configuration reads it from the variable both programs read.
pub const SIM_KEY: &str = "sim-devkey";

fn seed_simulator(sim: &Sim) -> anyhow::Result<()> {
    let fixtures = Fixtures::parse(ORDERS).map_err(|e| anyhow::anyhow!("certcentral-sim/fixtures/demo.toml: {e}"))?;
    for order in fixtures.orders {
        sim.add_order(order);
    }
    for domain in fixtures.domains {
        sim.add_domain(domain);
    }
    // Not in the demo's TOML: `[discovery]` finds them in the account. A DV order placed in
    // CertCentral's UI, and an OV domain whose validation ends in 10 days (revalidated).
    sim.add_order(NewOrder::new(1004, &["blog.example.test"]));
    sim.add_domain(NewDomain::new(2002, "mail.example.test").validated("ov", sim.now() + chrono::Duration::days(10)));
    // Seen by the scan and left alone: validated for another 200 days.
    sim.add_domain(
        NewDomain::new(2003, "intranet.example.test").validated("ov", sim.now() + chrono::Duration::days(200)),
    );
    Ok(())
}

/// What `dcvd demo --config` prints: the demo's configuration with the simulator's fixed port
/// and key, runnable as printed against a standalone `certcentral-sim`.
pub fn printed() -> String {
    let body = TEMPLATE
        .replace(
            "api_key_file = \"/tmp/dcvd-demo/certcentral-api-key\"",
            "api_key_env = \"CERTCENTRAL_SIM_API_KEY\"      # certcentral-sim reads its key from the same variable",
        )
        .replace("# the in-process CertCentral simulator", "# certcentral-sim --listen 127.0.0.1:18443");
    format!(
        "# `dcvd demo --config`: the demo's configuration. It runs as printed against the CertCentral\n\
         # simulator (a test double; never DigiCert), whose key is \"{SIM_KEY}\". From a checkout:\n\
         #\n\
         #   export CERTCENTRAL_SIM_API_KEY={SIM_KEY}\n\
         #   cargo run -p certcentral-sim -- --listen 127.0.0.1:18443 --dns 127.0.0.1:15353 \\\n\
         #       --dns 127.0.0.2:15353 --orders crates/certcentral-sim/fixtures/demo.toml &\n\
         #   dcvd demo --config > demo.toml && dcvd once --config demo.toml\n\
         #\n\
         # dcvd's memory provider serves example.test on 127.0.0.1:15353 and 127.0.0.2:15353 (the\n\
         # simulator checks DNS there); the state goes to /tmp/dcvd-demo/state.\n\
         #\n{body}"
    )
}

/// Runs the demo; with `print_config`, prints the configuration it would use and exits.
pub async fn main(print_config: bool) -> ExitCode {
    match run(print_config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dcvd demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(print_config: bool) -> anyhow::Result<ExitCode> {
    if print_config {
        print!("{}", printed());
        return Ok(ExitCode::SUCCESS);
    }
    let dir = std::env::temp_dir().join(format!("dcvd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let key_file = dir.join("certcentral-api-key");
    let api_key = format!("demo-{:016x}", rand::random::<u64>());
    write_secret(&key_file, &api_key)?;
    let dns_port = free_dns_port();
    let dns_servers: Vec<SocketAddr> =
        ["127.0.0.1", "127.0.0.2"].iter().map(|ip| SocketAddr::new(ip.parse().expect("ip"), dns_port)).collect();

    let sim = Sim::new(SimConfig { api_key, dns_servers, seed: 7, ..SimConfig::default() });
    seed_simulator(&sim)?;
    let running = sim.clone().spawn("127.0.0.1:0".parse()?).await?;
    let text = render(
        running.addr.port(),
        dns_port,
        &key_file.display().to_string(),
        &dir.join("state").display().to_string(),
    );

    let config = Config::from_toml_named(&text, &PathBuf::from("demo.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::logging::init(LogFormat::Text);
    tracing::info!(simulator = %running.base_url, dns = dns_port, "demo: CertCentral simulator and name servers started");

    let store = Arc::new(Store::open(&config.daemon.state_dir)?);
    let (_tx, rx) = mpsc::channel(1);
    let started = Instant::now();
    let run =
        engine::run(config, store.clone(), Arc::new(Metrics::new()), Mode::Once, rx, Arc::new(NoObserver), async {
            tokio::time::sleep(Duration::from_secs(120)).await;
        });
    let summary = run.await?;
    let elapsed = started.elapsed();

    let stats = sim.stats();
    let leftovers = crate::providers::memory_store("demo").map(|(s, _)| s.snapshot().len()).unwrap_or(0);
    println!();
    println!("dcvd demo finished in {:.1} s", elapsed.as_secs_f64());
    print!("{}", crate::cli::status_table(&summary.units));
    println!();
    let calls: u64 = stats.calls.values().sum();
    println!(
        "CertCentral calls: {calls} for {} units ({:.2} per unit); premature checks: {}; HTTP 429: {}; records left in DNS: {leftovers}",
        summary.units.len(),
        calls as f64 / summary.units.len().max(1) as f64,
        stats.premature_checks,
        stats.too_many_requests(),
    );
    let scan = |e: &str| stats.calls.get(e).copied().unwrap_or(0);
    println!(
        "of which the discovery scan: {} list calls, {} info calls (units: {} discovered next to {} from the TOML)",
        scan("list_orders") + scan("list_domains"),
        scan("order_validation") + scan("domain_info"),
        summary.units.iter().filter(|u| u.source == crate::store::UnitSource::Discovered).count(),
        summary.units.iter().filter(|u| u.source == crate::store::UnitSource::Config).count(),
    );
    running.shutdown().await;
    Ok(if summary.all_valid() && leftovers == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
