//! Benchmark: how soon after the last name server serves a record does the checker notice, and
//! how many DNS queries does that cost, at the default poll settings?
//!
//! For each release delay D: BIND with a lagging secondary; K records published; K waits start
//! spread evenly over [0, D) (records of different ages, so different backoff phases); at D the
//! secondary is released (`rndc refresh`) and `dig` polls it in a tight loop to record the
//! moment it serves the records. Latency = wait's end - that moment.
//!
//! `cargo run --release -p propagation --example detection [K]` (needs BIND 9, as the tests).

use std::time::{Duration, Instant};

use propagation::{Checker, CheckerConfig, Expected, ResolverSpec};
use test_support::bind::{Bind, ZoneSpec, dig};
use tokio_util::sync::CancellationToken;

struct Row {
    delay: Duration,
    records: usize,
    p50: Duration,
    p95: Duration,
    max: Duration,
    queries_per_record: f64,
}

async fn scenario(records: usize, delay: Duration) -> Row {
    let bind = Bind::builder().zone(ZoneSpec::new("bench.test")).with_lagging_secondary().start();
    let mut cmds = String::from("zone bench.test\n");
    for i in 0..records {
        cmds.push_str(&format!("update add _dnsauth.r{i}.bench.test 60 TXT \"value-{i}\"\n"));
    }
    bind.nsupdate(cmds.trim_end());
    let checker = Checker::new(CheckerConfig {
        resolvers: vec![ResolverSpec::Addr(bind.primary_addr())],
        nameserver_port: bind.port(),
        ..CheckerConfig::default()
    })
    .expect("checker");

    let start = Instant::now();
    let cancel = CancellationToken::new();
    let mut waits = Vec::new();
    for i in 0..records {
        let (c, cancel) = (checker.clone(), cancel.clone());
        let begin = tokio::time::Instant::now() + delay.mul_f64(i as f64 / records as f64);
        waits.push(tokio::spawn(async move {
            tokio::time::sleep_until(begin).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            let name = format!("_dnsauth.r{i}.bench.test");
            c.wait_visible(&name, &Expected::Txt(format!("value-{i}")), deadline, &cancel, &mut |_| {})
                .await
                .expect("visible");
            Instant::now()
        }));
    }

    let secondary = bind.secondary_addr().expect("secondary");
    let release_at = start + delay;
    tokio::time::sleep(release_at.saturating_duration_since(Instant::now())).await;
    let last = format!("_dnsauth.r{}.bench.test", records - 1);
    let served = tokio::task::spawn_blocking(move || {
        bind.refresh_secondary("bench.test");
        while dig(secondary, &last, "TXT").is_empty() {}
        (Instant::now(), bind)
    })
    .await
    .expect("dig loop");
    let (served_at, _bind) = served;

    let mut latencies = Vec::new();
    for w in waits {
        let done = w.await.expect("wait task");
        // A wait may see the record a little before dig does: count that as zero.
        latencies.push(done.saturating_duration_since(served_at));
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Row {
        delay,
        records,
        p50: pick(0.5),
        p95: pick(0.95),
        max: *latencies.last().expect("some"),
        queries_per_record: checker.queries_sent() as f64 / records as f64,
    }
}

#[tokio::main]
async fn main() {
    let records: usize = std::env::args().nth(1).map_or(100, |a| a.parse().expect("K: a number of records"));
    let defaults = CheckerConfig::default();
    println!(
        "detection latency after the last name server serves the record; {records} records per row; poll_min {:?}, poll_max {:?}, cap {}/s",
        defaults.poll_min, defaults.poll_max, defaults.max_queries_per_second
    );
    println!("| release after | records | p50 | p95 | max | DNS queries per record |");
    println!("|---|---|---|---|---|---|");
    for delay in [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(20)] {
        let r = scenario(records, delay).await;
        println!(
            "| {:?} | {} | {} ms | {} ms | {} ms | {:.1} |",
            r.delay,
            r.records,
            r.p50.as_millis(),
            r.p95.as_millis(),
            r.max.as_millis(),
            r.queries_per_record
        );
    }
}
