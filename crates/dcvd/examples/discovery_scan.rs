//! What dcvd's discovery scan (`dcvd::discovery::Scanner`, the code `dcvd run` uses) costs on an
//! account of 10,000 DV orders (500 pending) and 5,000 OV domains in the simulator, through the
//! daemon's own CertCentral client under DigiCert's default limits (100 per 5 s and 1000 per
//! 5 min, enforced by the client and by the simulator).
//!
//! Run: `cargo run --release -p dcvd --example discovery_scan [ORDERS PENDING DOMAINS]`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use certcentral_sim::{Sim, SimConfig, SyntheticAccount};
use dcvd::config::{Config, Environment};
use dcvd::discovery::Scanner;
use dcvd::metrics::Metrics;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).map_or(default, |a| a.parse().unwrap_or_else(|_| panic!("argument {n} must be a number")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let account =
        SyntheticAccount { orders: arg(1, 10_000), pending: arg(2, 500), domains: arg(3, 5_000), ..Default::default() };
    let sim = Sim::new(SimConfig { api_key: "discovery-scan".into(), ..SimConfig::default() });
    sim.add_synthetic(&account);
    let running = sim.clone().spawn("127.0.0.1:0".parse()?).await?;
    let text = format!(
        "[certcentral]\nbase_url = \"{}\"\napi_key_env = \"KEY\"\n\n\
         [providers.dns]\ntype = \"memory\"\nzones = [\"example.com\"]\n\n\
         [discovery]\norders = true\ndomains = true\n",
        running.base_url
    );
    let config = Config::from_toml_with(
        &text,
        Path::new("bench.toml"),
        &Environment::isolated().with_var("KEY", "discovery-scan"),
    )?;
    let client = dcvd::engine::build_client(&config.certcentral, &Arc::new(Metrics::new()), None)?;
    println!("account: {} orders ({} pending), {} domains", account.orders, account.pending, account.domains);
    println!("| scan | list calls | info calls | total calls | order units | domain units | wall time |");
    println!("|---|---|---|---|---|---|---|");
    let mut scanner = Scanner::new();
    for label in ["cold (nothing known)", "warm (every candidate known)"] {
        let before = sim.stats().calls.values().sum::<u64>();
        let started = Instant::now();
        let effective = scanner.apply(config.clone(), &client).await;
        let elapsed = started.elapsed();
        let r = scanner.last_report.clone();
        let served = sim.stats().calls.values().sum::<u64>() - before;
        assert_eq!(served, u64::from(r.list_calls + r.info_calls), "the simulator and the scan disagree");
        assert!(!r.failed, "a list call failed");
        assert_eq!(effective.units.len(), r.order_units + r.domain_units);
        println!(
            "| {label} | {} | {} | {served} | {} | {} | {:.1} s |",
            r.list_calls,
            r.info_calls,
            r.order_units,
            r.domain_units,
            elapsed.as_secs_f64()
        );
    }
    let stats = sim.stats();
    println!("simulator: calls {:?}, 429s {}", stats.calls, stats.too_many_requests());
    running.shutdown().await;
    Ok(())
}
