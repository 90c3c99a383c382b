//! The cost of one admission through the PostgreSQL rate-limit ledger (`dcvd::shared_limit`) on
//! loopback: how many admissions per second one process gets through it, which bounds what the
//! shared windows can admit (DigiCert allows 20 per second per key, 100 per 5 s).
//!
//! ```text
//! cargo run --release -p dcvd --example ledger_cost [-- ADMISSIONS]
//! ```
//!
//! Starts a private PostgreSQL cluster (`test_support::postgres`, fsync off) and measures, for
//! `ADMISSIONS` (default 5000) admissions each:
//! 1. `try_admit` called in a loop (what one limiter does: one request in flight), with
//!    DigiCert's N (100 and 1000) on spans short enough never to block, so each admission scans
//!    as many rows as under DigiCert's real windows at full load;
//! 2. a `RateLimiter` with the ledger, 16 tasks acquiring at once;
//! 3. two limiters (two instances) on one key, 16 tasks each, contending for the key's lock.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certcentral::{Admission, RateLimiter, RateWindow, SecretString, SharedWindows, WindowSpan};
use dcvd::shared_limit::PgSharedWindows;
use test_support::postgres::PgCluster;

const DATABASE: &str = "ledger_cost";

fn ledger(cluster: &PgCluster) -> Result<PgSharedWindows<tokio_postgres::NoTls>, Box<dyn Error + Send + Sync>> {
    let config = cluster.url_with_password(DATABASE).parse()?;
    Ok(PgSharedWindows::new(config, tokio_postgres::NoTls, &SecretString::from("ledger-cost-key")))
}

fn report(what: &str, admissions: usize, elapsed: Duration) {
    let per_second = admissions as f64 / elapsed.as_secs_f64();
    let micros = elapsed.as_secs_f64() * 1e6 / admissions as f64;
    println!("{what:<58} {admissions:>6} admissions in {elapsed:>9.3?}: {per_second:>7.0}/s, {micros:>6.0} us each");
}

/// `limiters` limiters with 16 tasks each acquiring until `admissions` in all.
async fn through_limiters(limiters: &[RateLimiter], admissions: usize) -> Duration {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(admissions));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for limiter in limiters {
        for _ in 0..16 {
            let (limiter, left) = (limiter.clone(), left.clone());
            tasks.push(tokio::spawn(async move {
                use std::sync::atomic::Ordering::SeqCst;
                while left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
                    limiter.acquire().await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task ran");
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let admissions: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("ADMISSIONS must be a number: {e}"))?,
        None => 5000,
    };
    let cluster = PgCluster::start_new();
    cluster.create_database(DATABASE);
    println!("PostgreSQL on 127.0.0.1:{} ({})", cluster.port(), cluster.psql("postgres", "SHOW server_version"));

    let direct = ledger(&cluster)?;
    direct.check().await?;
    let windows = [
        WindowSpan { requests: 100, span: Duration::from_millis(20) },
        WindowSpan { requests: 1000, span: Duration::from_millis(500) },
    ];
    let started = Instant::now();
    let mut blocked = 0;
    let mut admitted = 0;
    while admitted < admissions {
        match direct.try_admit(&windows).await? {
            Admission::Admitted => admitted += 1,
            Admission::RetryIn(after) => {
                blocked += 1;
                tokio::time::sleep(after).await;
            }
        }
    }
    report("try_admit in a loop (N = 100 and 1000)", admitted, started.elapsed());
    println!("  windows full {blocked} times (0 = the figure is the ledger's, not the windows')");

    // 10,000 per 1 s (+ the 250 ms margin): never full at these rates; each admission scans the
    // key's rows of the last 1.25 s.
    let window = [RateWindow::new(10_000, Duration::from_secs(1))];
    let one = RateLimiter::with_shared_windows(&window, Arc::new(ledger(&cluster)?))?;
    let elapsed = through_limiters(std::slice::from_ref(&one), admissions).await;
    report("one RateLimiter with the ledger, 16 tasks", admissions, elapsed);

    let two = [
        RateLimiter::with_shared_windows(&window, Arc::new(ledger(&cluster)?))?,
        RateLimiter::with_shared_windows(&window, Arc::new(ledger(&cluster)?))?,
    ];
    let elapsed = through_limiters(&two, admissions).await;
    report("two RateLimiters (instances) on one key, 16 tasks each", admissions, elapsed);

    let local = RateLimiter::new(&window)?;
    let elapsed = through_limiters(std::slice::from_ref(&local), admissions.min(10_000)).await;
    report("for comparison: one RateLimiter without a ledger", admissions.min(10_000), elapsed);
    Ok(())
}
