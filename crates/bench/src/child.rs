//! The child process (`dcvd-bench --child`): reads a [`ChildSpec`] as JSON on stdin, starts the
//! name servers serving a memory store, runs one strategy and prints one [`ChildResult`] line
//! (prefixed by [`RESULT_PREFIX`]) on stdout. Everything measured in it (peak RSS, CPU time)
//! therefore covers the strategy, the record store and the two name servers, not the simulator.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dns_provider::memory::{LagModel, MemoryDnsServer, MemoryStore, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::scenario::{Scenario, Strategy};

/// Marks the result line on the child's stdout.
pub const RESULT_PREFIX: &str = "DCVD-BENCH-RESULT ";

/// dcvd settings the runner may override (`None`: dcvd's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcvdKnobs {
    /// `daemon.max_concurrent`.
    pub max_concurrent: Option<usize>,
    /// `propagation.poll_min` in ms.
    pub poll_min_ms: Option<u64>,
    /// `propagation.poll_max` in ms.
    pub poll_max_ms: Option<u64>,
    /// `propagation.max_queries_per_second`.
    pub max_qps: Option<u32>,
    /// `check.min_interval` in ms.
    pub check_min_ms: Option<u64>,
    /// `check.max_interval` in ms.
    pub check_max_ms: Option<u64>,
}

/// What the parent tells a child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    /// The strategy to run.
    pub strategy: Strategy,
    /// The scenario (orders, lag, windows).
    pub scenario: Scenario,
    /// The simulator's CertCentral base URL.
    pub sim_base_url: String,
    /// The simulator's API key (given on stdin, never on the command line).
    pub api_key: String,
    /// Where the name servers listen (same port on 127.0.0.1 and 127.0.0.2).
    pub dns_addrs: Vec<SocketAddr>,
    /// The zone holding every order's name.
    pub zone: String,
    /// Id of the first order; the others follow.
    pub first_id: u64,
    /// Give up after this many seconds.
    pub deadline_s: u64,
    /// A fresh directory for state and secrets.
    pub work_dir: PathBuf,
    /// dcvd overrides.
    pub dcvd: DcvdKnobs,
    /// `tracing` filter for the child's stderr.
    pub log: String,
}

impl ChildSpec {
    /// The order ids.
    pub fn order_ids(&self) -> impl Iterator<Item = u64> + use<> {
        let first = self.first_id;
        first..first + self.scenario.orders as u64
    }
}

/// The certificate name of order `id`.
pub fn order_domain(id: u64, zone: &str) -> String {
    format!("o{id}.{zone}")
}

/// The order a record name (`_dnsauth.o<id>.<zone>`) belongs to.
pub fn order_of_record(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("_dnsauth.").unwrap_or(name);
    rest.strip_prefix('o')?.split('.').next()?.parse().ok()
}

/// What a strategy reports to the child's main.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Unix ms when the strategy started (before dcvd parses its configuration).
    pub started_unix_ms: i64,
    /// Unix ms when it returned (records removed).
    pub finished_unix_ms: i64,
    /// Per order: when the last name server started serving its record (unix ms).
    pub visible: HashMap<u64, i64>,
    /// Orders the strategy itself considers valid.
    pub valid: usize,
    /// Why orders did not end valid (first few).
    pub errors: Vec<String>,
    /// The store the strategy wrote into.
    pub store: MemoryStore,
    /// Queries answered per name server.
    pub server_queries: Vec<u64>,
}

/// What a child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildResult {
    /// See [`Outcome::started_unix_ms`].
    pub started_unix_ms: i64,
    /// See [`Outcome::finished_unix_ms`].
    pub finished_unix_ms: i64,
    /// `(order id, unix ms visible on every name server)`.
    pub visible: Vec<(u64, i64)>,
    /// Orders the strategy considers valid.
    pub valid: usize,
    /// Why orders did not end valid (first few).
    pub errors: Vec<String>,
    /// Queries answered per name server (the simulator's included).
    pub server_queries: Vec<u64>,
    /// Provider publish calls (per record).
    pub provider_publish: u64,
    /// Provider remove calls (per record).
    pub provider_remove: u64,
    /// Records still in the store at the end.
    pub records_left: usize,
    /// VmRSS once the name servers run, before the strategy's work (KiB).
    pub rss_start_kib: u64,
    /// VmHWM at the end (KiB).
    pub peak_rss_kib: u64,
    /// utime + stime of the child at the end (s).
    pub cpu_s: f64,
}

/// Milliseconds since the Unix epoch now.
pub fn unix_ms_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Converts a (tokio) instant to unix ms through the current offset between both clocks.
pub fn unix_ms_of(at: tokio::time::Instant) -> i64 {
    let now = tokio::time::Instant::now();
    let now_ms = unix_ms_now();
    if at <= now {
        now_ms - i64::try_from((now - at).as_millis()).unwrap_or(0)
    } else {
        now_ms + i64::try_from((at - now).as_millis()).unwrap_or(0)
    }
}

/// The scenario's propagation: a per-record lag drawn from the scenario's range, plus its server
/// lag on the last of `servers` name servers.
pub fn lag_model(s: &Scenario, servers: usize) -> LagModel {
    LagModel {
        per_server: (0..servers)
            .map(|i| if i + 1 == servers { Duration::from_millis(s.server_lag_ms) } else { Duration::ZERO })
            .collect(),
        uniform: (Duration::from_millis(s.lag_min_ms), Duration::from_millis(s.lag_max_ms)),
        seed: s.seed,
    }
}

/// Starts the two name servers of the scenario for `store`.
pub async fn start_dns(store: MemoryStore, spec: &ChildSpec) -> anyhow::Result<MemoryDnsServer> {
    let s = &spec.scenario;
    let cfg = ServerConfig {
        zones: vec![spec.zone.clone()],
        addrs: spec.dns_addrs.clone(),
        lag: lag_model(s, spec.dns_addrs.len()),
        soa_minimum: s.negative_ttl_s,
    };
    dns_provider::memory::serve(store, cfg)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the benchmark's name servers on {:?}: {e}", spec.dns_addrs))
}

/// Watches a store and notes, for every record that appears, when the last name server serves
/// it (the server knows; the record may be gone by the time the run ends). It reads the
/// publication instant the store recorded, so the sampling period only has to be shorter than
/// the life of a record (at least the last server's lag), not precise.
pub struct Sampler {
    seen: Arc<Mutex<HashMap<String, i64>>>,
    task: tokio::task::JoinHandle<()>,
    store: MemoryStore,
    server: Arc<MemoryDnsServer>,
}

impl Sampler {
    /// Samples `store` every `every`.
    pub fn spawn(store: MemoryStore, server: Arc<MemoryDnsServer>, every: Duration) -> Self {
        let seen: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let task = {
            let (seen, store, server) = (seen.clone(), store.clone(), server.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    sample(&store, &server, &seen);
                }
            })
        };
        Self { seen, task, store, server }
    }

    /// Stops sampling; returns `record name -> unix ms visible everywhere`.
    pub fn finish(self) -> HashMap<String, i64> {
        self.task.abort();
        sample(&self.store, &self.server, &self.seen);
        std::mem::take(&mut *self.seen.lock().expect("sampler map"))
    }
}

fn sample(store: &MemoryStore, server: &MemoryDnsServer, seen: &Mutex<HashMap<String, i64>>) {
    let mut seen = seen.lock().expect("sampler map");
    // Only the records not seen yet are copied: the sampler is the benchmark's, not the
    // strategy's, and a copy of the whole store every 50 ms would count in the child's peak RSS.
    let unseen = store.snapshot_of(|name| !seen.contains_key(name));
    for rec in unseen {
        if let Some(at) = server.visible_everywhere_at(&rec.record.name, &rec.record.value) {
            seen.insert(rec.record.name, unix_ms_of(at));
        }
    }
}

/// Reads the spec from stdin, runs it, prints the result line.
pub async fn main() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let spec: ChildSpec = serde_json::from_str(&input).map_err(|e| anyhow::anyhow!("child spec on stdin: {e}"))?;
    let filter = tracing_subscriber::EnvFilter::try_new(&spec.log)
        .map_err(|e| anyhow::anyhow!("log filter {:?}: {e}", spec.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).init();
    std::fs::create_dir_all(&spec.work_dir)?;
    let rss_start_kib = crate::procfs::rss_kib().unwrap_or(0);
    let outcome = match spec.strategy {
        Strategy::Dcvd => crate::daemon::run(&spec).await?,
        Strategy::Poll { interval_s } => crate::baseline::run(&spec, Duration::from_secs(interval_s)).await?,
    };
    let counters = outcome.store.counters();
    let mut visible: Vec<(u64, i64)> = outcome.visible.iter().map(|(k, v)| (*k, *v)).collect();
    visible.sort_unstable();
    let result = ChildResult {
        started_unix_ms: outcome.started_unix_ms,
        finished_unix_ms: outcome.finished_unix_ms,
        visible,
        valid: outcome.valid,
        errors: outcome.errors,
        server_queries: outcome.server_queries,
        provider_publish: counters.publish_calls,
        provider_remove: counters.remove_calls,
        records_left: outcome.store.snapshot().len(),
        rss_start_kib,
        peak_rss_kib: crate::procfs::peak_rss_kib().unwrap_or(0),
        cpu_s: crate::procfs::cpu_seconds().unwrap_or(0.0),
    };
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_map_to_orders() {
        let d = order_domain(100_042, "bench.test");
        assert_eq!(d, "o100042.bench.test");
        assert_eq!(order_of_record(&format!("_dnsauth.{d}")), Some(100_042));
        assert_eq!(order_of_record("_dnsauth.bench.test"), None);
    }
}
