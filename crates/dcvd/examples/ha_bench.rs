//! High-availability benchmark: 1, 2 and 3 `dcvd run` instances on one API key and one
//! PostgreSQL store validate the same orders (the API key's windows are the bound, so the total
//! time should not change); then the failover time after `kill -9` of the instance holding the
//! units. Prints figures; asserts nothing about time.
//!
//! ```text
//! cargo build --release -p dcvd -p certcentral-sim --bins --example ha_bench
//! target/release/examples/ha_bench [ORDERS] [LEASE_TTL]      # defaults: 1000, 5s
//! ```
//!
//! Each run has its own database, simulator and zone in BIND (no lag, so DigiCert's windows are
//! the bound): the simulator and the clients enforce 200 requests per 5 s and 2,000 per 5 min
//! (DigiCert's shape, scaled so a run takes about a minute: 2 calls per order).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use certcentral_sim::NewOrder;
use test_support::bind::{Bind, ZoneSpec};
use test_support::fleet::{Instance, ZoneMonitor};
use test_support::harness::{Harness, SimOpts, dcv_records, order_toml, rfc2136_provider};
use test_support::postgres::PgCluster;

const ZONE: &str = "bench.test";
const WINDOWS: &str = "rate_limits = [{ requests = 200, per = \"5s\" }, { requests = 2000, per = \"5m\" }]\n";

struct Run {
    instances: usize,
    wall: Duration,
    valid: usize,
    rate_limited: u64,
    calls: u64,
    work: Vec<usize>,
    violations: usize,
}

fn orders(n: u64) -> (Vec<NewOrder>, String) {
    let mut fixtures = Vec::new();
    let mut toml = String::new();
    for i in 0..n {
        let name = format!("o{i}.{ZONE}");
        fixtures.push(NewOrder::new(10_000 + i, &[name.as_str()]));
        toml.push_str(&order_toml(10_000 + i, "dns-txt-token", &[name.as_str()]));
        toml.push_str("validation_scope = \"exact\"\n\n");
    }
    (fixtures, toml)
}

/// Writes the instance's configuration with the benchmark's client windows.
fn configure(instance: &Instance, dns_port: u16, body: &str) {
    instance.write_config(dns_port, body);
    let path = instance.dcvd.config_path();
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replacen("[certcentral]\n", &format!("[certcentral]\n{WINDOWS}"), 1)).expect("config");
}

async fn wait_done(sim: &test_support::harness::SimProc, bind: &Bind, n: usize, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let stats = sim.stats().await;
        if stats.successful_validations as usize >= n && dcv_records(bind.primary_addr(), ZONE, &[]).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

async fn throughput(harness: &Harness, pg: &PgCluster, n: u64, instances: usize, lease_ttl: &str) -> Run {
    let db = format!("bench_{instances}");
    pg.create_database(&db);
    let bind = Bind::builder().zone(ZoneSpec::new(ZONE)).start();
    let (fixtures, units) = orders(n);
    let sim = harness.start_sim(SimOpts {
        dns: vec![bind.primary_addr()],
        orders: fixtures,
        extra: ["--validation-scope", "exact", "--rate-limit", "200/5s", "--rate-limit", "2000/5m"]
            .map(String::from)
            .to_vec(),
        ..SimOpts::default()
    });
    let body = format!("{}\n{units}", rfc2136_provider("bind", &bind, &[ZONE]));
    let mut fleet: Vec<Instance> = (0..instances)
        .map(|i| {
            let instance = Instance::new(harness, &sim, &format!("i{i}"), pg, &db, lease_ttl);
            configure(&instance, bind.port(), &body);
            instance
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = ZoneMonitor::spawn(bind.primary_addr(), ZONE, stop.clone());
    let started = Instant::now();
    for instance in &mut fleet {
        instance.start();
    }
    let done = wait_done(&sim, &bind, n as usize, Duration::from_secs(900)).await;
    let wall = started.elapsed();
    for instance in &mut fleet {
        instance.stop().await;
    }
    stop.store(true, Ordering::SeqCst);
    let monitor = monitor.join().expect("monitor");
    let stats = sim.stats().await;
    if !done {
        eprintln!("{instances} instance(s): not finished after 900 s");
    }
    Run {
        instances,
        wall,
        valid: stats.successful_validations as usize,
        rate_limited: stats.too_many_requests(),
        calls: stats.calls.values().sum(),
        work: fleet.iter().map(|i| i.dcvd.log().matches("state changed").count()).collect(),
        violations: monitor.violations.len(),
    }
}

/// Seconds from `kill -9` of the instance holding the units to the survivor's claim of them,
/// read from the survivor's log (its own clock, the same host's).
async fn failover(harness: &Harness, pg: &PgCluster, lease_ttl: &str) -> Option<f64> {
    pg.create_database("bench_failover");
    let bind = Bind::builder().zone(ZoneSpec::new(ZONE)).with_lagging_secondary().start();
    let (fixtures, units) = orders(50);
    let mut dns = vec![bind.primary_addr()];
    dns.extend(bind.secondary_addr());
    let sim = harness.start_sim(SimOpts {
        dns,
        orders: fixtures,
        extra: ["--validation-scope", "exact"].map(String::from).to_vec(),
        ..SimOpts::default()
    });
    let body = format!("{}\n{units}", rfc2136_provider("bind", &bind, &[ZONE]));
    let mut a = Instance::new(harness, &sim, "a", pg, "bench_failover", lease_ttl);
    let mut b = Instance::new(harness, &sim, "b", pg, "bench_failover", lease_ttl);
    configure(&a, bind.port(), &body);
    configure(&b, bind.port(), &body);
    a.start();
    // a holds every unit once it published (the lagging secondary keeps them waiting)
    let started = Instant::now();
    while dcv_records(bind.primary_addr(), ZONE, &[]).len() < 50 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = chrono::Utc::now();
    a.kill();
    let claim = loop {
        let log = b.dcvd.log();
        let line = log.lines().find(|l| l.contains("claimed units nobody held") && !l.contains("resumed=0"));
        if let Some(line) = line {
            break line.to_owned();
        }
        if (chrono::Utc::now() - killed_at).num_seconds() > 120 {
            eprintln!("b did not take over within 120 s");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let at = chrono::DateTime::parse_from_rfc3339(claim.split_whitespace().next()?).ok()?;
    bind.refresh_secondary(ZONE);
    b.stop().await;
    Some((at.with_timezone(&chrono::Utc) - killed_at).num_milliseconds() as f64 / 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let lease_ttl = args.next().unwrap_or_else(|| "5s".to_owned());
    let exe = std::env::current_exe().expect("own path");
    let dcvd = exe.parent().and_then(|examples| examples.parent()).expect("target dir").join("dcvd");
    assert!(dcvd.exists(), "{} is missing: cargo build --release -p dcvd -p certcentral-sim --bins", dcvd.display());
    let harness = Harness::new(Box::leak(dcvd.display().to_string().into_boxed_str()));
    let pg = PgCluster::start_new();
    println!("{n} orders, windows 200/5s + 2000/5min (simulator and clients), lease_ttl {lease_ttl}");
    println!("| instances | wall | valid | CertCentral calls | 429 | state changes per instance | zone violations |");
    println!("|---|---|---|---|---|---|---|");
    for instances in 1..=3 {
        let run = throughput(&harness, &pg, n, instances, &lease_ttl).await;
        println!(
            "| {} | {:.1} s | {} | {} | {} | {:?} | {} |",
            run.instances,
            run.wall.as_secs_f64(),
            run.valid,
            run.calls,
            run.rate_limited,
            run.work,
            run.violations
        );
    }
    match failover(&harness, &pg, &lease_ttl).await {
        Some(secs) => println!("failover after kill -9 (50 units held): {secs:.2} s (lease_ttl {lease_ttl})"),
        None => println!("failover: not measured"),
    }
}
