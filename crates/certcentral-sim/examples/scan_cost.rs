//! What a discovery scan costs in API calls: an account of 10,000 DV orders (500 pending) and
//! 5,000 OV domains on the simulator, walked with the real CertCentral client under DigiCert's
//! rate limits (100 per 5 s, 1000 per 5 min, enforced by both the client and the simulator).
//!
//! A cold scan lists pending orders and domains, then asks Order info for every new pending
//! order (List orders carries no DCV method). A warm scan (every candidate already known) costs
//! the list calls only. Domains need no info call to be judged: List domains carries their
//! validations and DCV expiry dates.
//!
//! Run: `cargo run -p certcentral-sim --example scan_cost [ORDERS PENDING DOMAINS]`

use std::collections::HashSet;
use std::time::Instant;

use certcentral::{Client, ClientConfig, DomainFilter, OrderFilter, SecretString};
use certcentral_sim::{Sim, SimConfig, SyntheticAccount};

/// Revalidate a domain whose OV/EV validation or DCV reuse ends within this many days.
const REVALIDATE_BEFORE_DAYS: i64 = 30;

struct Scan {
    list_orders: u32,
    list_domains: u32,
    order_info: u32,
    pending: usize,
    domains: usize,
    domains_due: usize,
}

async fn scan(client: &Client, known_orders: &mut HashSet<u64>) -> Result<Scan, certcentral::Error> {
    let orders = client.list_all_orders(&OrderFilter::pending()).await?;
    let mut order_info = 0;
    for order in &orders.items {
        if known_orders.insert(order.id) {
            // List orders has no dcv_method: one Order info per new candidate
            client.order_info(order.id).await?;
            order_info += 1;
        }
    }
    let domains = client.list_all_domains(&DomainFilter::active()).await?;
    let horizon = chrono::Utc::now() + chrono::Duration::days(REVALIDATE_BEFORE_DAYS);
    let domains_due = domains
        .items
        .iter()
        .filter(|d| {
            ["ov", "ev"].iter().any(|kind| {
                let until = d.validation(kind).and_then(|v| v.validated_until);
                let reuse = d.dcv_expiration.as_ref().and_then(|e| e.of(kind));
                let listed = d.validation(kind).is_some() || reuse.is_some();
                listed && until.into_iter().chain(reuse).any(|t| t <= horizon)
            }) || d.validations.is_empty()
        })
        .count();
    Ok(Scan {
        list_orders: orders.calls,
        list_domains: domains.calls,
        order_info,
        pending: orders.items.len(),
        domains: domains.items.len(),
        domains_due,
    })
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).map_or(default, |a| a.parse().unwrap_or_else(|_| panic!("argument {n} must be a number")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let account =
        SyntheticAccount { orders: arg(1, 10_000), pending: arg(2, 500), domains: arg(3, 5_000), ..Default::default() };
    let sim = Sim::new(SimConfig { api_key: "scan-cost".into(), ..SimConfig::default() });
    let started = Instant::now();
    sim.add_synthetic(&account);
    println!(
        "account: {} orders ({} pending), {} domains; built in {:.2} s",
        account.orders,
        account.pending,
        account.domains,
        started.elapsed().as_secs_f64()
    );
    let running = sim.clone().spawn("127.0.0.1:0".parse()?).await?;
    let mut config = ClientConfig::new(running.base_url.clone(), SecretString::from("scan-cost"));
    config.allow_insecure_http = true;
    let client = Client::new(config)?;

    let mut known = HashSet::new();
    println!("| scan | List orders | List domains | Order info | total calls | pending | domains (due) | wall time |");
    println!("|---|---|---|---|---|---|---|---|");
    for label in ["cold (nothing known)", "warm (all known)"] {
        let before = sim.stats().calls.values().sum::<u64>();
        let started = Instant::now();
        let s = scan(&client, &mut known).await?;
        let served = sim.stats().calls.values().sum::<u64>() - before;
        let ours = u64::from(s.list_orders + s.list_domains + s.order_info);
        assert_eq!(served, ours, "the simulator counted {served} calls, the scan made {ours}");
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} ({}) | {:.1} s |",
            s.list_orders,
            s.list_domains,
            s.order_info,
            ours,
            s.pending,
            s.domains,
            s.domains_due,
            started.elapsed().as_secs_f64()
        );
    }
    let stats = sim.stats();
    println!("simulator: calls {:?}, 429s {}", stats.calls, stats.too_many_requests());
    running.shutdown().await;
    Ok(())
}
