//! The parent side: per scenario and strategy, a fresh simulator in this process and a child
//! process (`--child`) running the strategy with its own name servers; then the figures.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use certcentral_sim::{NewOrder, Sim, SimConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::child::{ChildResult, ChildSpec, DcvdKnobs, RESULT_PREFIX, order_domain};
use crate::report::{self, RunOutcome};
use crate::scenario::{Scenario, Strategy};

/// The zone every benchmark name lives in.
pub const ZONE: &str = "bench.test";
/// Id of the first order.
pub const FIRST_ID: u64 = 100_001;

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Strategies, in column order.
    pub strategies: Vec<Strategy>,
    /// Per-strategy time limit.
    pub deadline: Duration,
    /// Where child logs and state go (one subdirectory per run).
    pub work_dir: PathBuf,
    /// dcvd overrides.
    pub dcvd: DcvdKnobs,
    /// `tracing` filter of the children.
    pub log: String,
}

/// Runs every strategy on `scenario`.
pub async fn run_scenario(scenario: &Scenario, opts: &Options) -> Vec<(Strategy, RunOutcome)> {
    let mut runs = Vec::new();
    for strategy in &opts.strategies {
        eprintln!("dcvd-bench: {} orders, {strategy}: running", scenario.orders);
        let outcome = run_one(scenario, *strategy, opts).await.map_err(|e| format!("{e:#}"));
        match &outcome {
            Ok(f) => eprintln!(
                "dcvd-bench: {} orders, {strategy}: {}/{} valid in {:.1} s",
                scenario.orders, f.valid_orders, f.orders, f.wall_s
            ),
            Err(e) => eprintln!("dcvd-bench: {} orders, {strategy}: failed: {e}", scenario.orders),
        }
        runs.push((*strategy, outcome));
    }
    runs
}

async fn run_one(scenario: &Scenario, strategy: Strategy, opts: &Options) -> anyhow::Result<report::Figures> {
    let port = free_dns_port()?;
    let dns_addrs: Vec<SocketAddr> =
        ["127.0.0.1", "127.0.0.2"].iter().map(|ip| SocketAddr::new(ip.parse().expect("ip literal"), port)).collect();
    let servers = dns_addrs.len();
    let api_key = format!("bench-{:016x}", rand::random::<u64>());
    let sim = Sim::new(SimConfig {
        api_key: api_key.clone(),
        dns_servers: dns_addrs.clone(),
        rate_limits: scenario.windows.iter().map(|w| (w.requests, w.per())).collect(),
        seed: scenario.seed,
        // One record per order (`_dnsauth.o<ID>.bench.test`), as in every earlier measurement;
        // under the base scope all orders would share `_dnsauth.bench.test`.
        validation_scope: certcentral_sim::ValidationScope::Exact,
        ..SimConfig::default()
    });
    for id in FIRST_ID..FIRST_ID + scenario.orders as u64 {
        sim.add_order(NewOrder::new(id, &[order_domain(id, ZONE).as_str()]));
    }
    let running = sim.clone().spawn("127.0.0.1:0".parse()?).await.context("cannot start the simulator")?;

    let run_dir = opts.work_dir.join(format!("{}-{strategy}-{}", scenario.orders, std::process::id()));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log_path = run_dir.join("child.log");
    let spec = ChildSpec {
        strategy,
        scenario: scenario.clone(),
        sim_base_url: running.base_url.clone(),
        api_key,
        dns_addrs,
        zone: ZONE.to_string(),
        first_id: FIRST_ID,
        deadline_s: opts.deadline.as_secs(),
        work_dir: run_dir.join("work"),
        dcvd: opts.dcvd.clone(),
        log: opts.log.clone(),
    };
    let result = spawn_child(&spec, &log_path, opts.deadline + Duration::from_secs(120)).await;
    let stats = sim.stats();
    running.shutdown().await;
    if let Some(dir) = std::env::var_os("DCVD_BENCH_DUMP_CHECKS") {
        // Debugging aid: every check the simulator saw, per run.
        let path = PathBuf::from(dir).join(format!("checks-{}-{strategy}.json", scenario.orders));
        let _ = std::fs::write(&path, serde_json::to_string(&stats.checks)?);
    }
    let child = result.with_context(|| format!("child log: {}", log_path.display()))?;
    // Keep the log of a run that left orders invalid; the state store and key are not needed.
    let _ = std::fs::remove_dir_all(run_dir.join("work"));
    let lags = propagation_times(scenario, &sim, servers);
    if let Some(dir) = std::env::var_os("DCVD_BENCH_DUMP_CHECKS") {
        // With the checks: per order, its propagation time and when every name server served it.
        let path = PathBuf::from(dir).join(format!("orders-{}-{strategy}.json", scenario.orders));
        let lag_ms: Vec<u128> = lags.iter().map(Duration::as_millis).collect();
        let orders = serde_json::json!({
            "started_unix_ms": child.started_unix_ms,
            "first_id": FIRST_ID,
            "lag_ms": lag_ms,
            "visible_unix_ms": child.visible,
        });
        let _ = std::fs::write(&path, orders.to_string());
    }
    let figures = report::figures(scenario, strategy, &child, &stats, &lags);
    if figures.valid_orders == figures.orders && figures.errors.is_empty() {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(figures)
}

/// Each order's propagation time in this run: from publication until the last name server
/// serves its (last) random value, by the child's lag model (the value decides the draw, so it is
/// known only once the simulator issued it).
fn propagation_times(scenario: &Scenario, sim: &Sim, servers: usize) -> Vec<Duration> {
    let lag = crate::child::lag_model(scenario, servers);
    let last_server = (0..servers).map(|i| lag.server_lag(i)).max().unwrap_or_default();
    (FIRST_ID..FIRST_ID + scenario.orders as u64)
        .map(|id| {
            let value = sim.order(id).map(|o| o.dcv_random_value).unwrap_or_default();
            lag.record_lag(&format!("_dnsauth.{}", order_domain(id, ZONE)), &value) + last_server
        })
        .collect()
}

async fn spawn_child(spec: &ChildSpec, log_path: &std::path::Path, limit: Duration) -> anyhow::Result<ChildResult> {
    let exe = std::env::current_exe().context("cannot find this program to re-run it as a child")?;
    let log = std::fs::File::create(log_path)?;
    // DCVD_BENCH_CHILD_PREFIX runs the child under a profiler (`heaptrack`, `perf record --`).
    let prefix: Vec<String> = std::env::var("DCVD_BENCH_CHILD_PREFIX")
        .map(|p| p.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    let mut child = command
        .arg("--child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the child process")?;
    let mut stdin = child.stdin.take().context("child stdin")?;
    stdin.write_all(serde_json::to_string(spec)?.as_bytes()).await?;
    drop(stdin);
    let mut stdout = child.stdout.take().context("child stdout")?;
    let mut text = String::new();
    let waited = tokio::time::timeout(limit, async {
        stdout.read_to_string(&mut text).await?;
        child.wait().await
    })
    .await;
    let status = match waited {
        Ok(status) => status?,
        Err(_) => anyhow::bail!("the child did not finish within {}", humantime::format_duration(limit)),
    };
    if !status.success() {
        anyhow::bail!("the child exited with {status}");
    }
    let line = text.lines().find_map(|l| l.strip_prefix(RESULT_PREFIX)).context("the child printed no result line")?;
    serde_json::from_str(line).context("the child's result line")
}

/// A port free for UDP and TCP on both 127.0.0.1 and 127.0.0.2 (the two name servers). The child
/// binds it a moment later; another process taking it in between makes the run fail with a clear
/// message rather than measure something else.
fn free_dns_port() -> anyhow::Result<u16> {
    let ips: [IpAddr; 2] = ["127.0.0.1".parse()?, "127.0.0.2".parse()?];
    for _ in 0..500 {
        let port = 20_000 + rand::random::<u16>() % 40_000;
        let free = ips.iter().all(|ip| {
            let a = SocketAddr::new(*ip, port);
            std::net::UdpSocket::bind(a).is_ok() && std::net::TcpListener::bind(a).is_ok()
        });
        if free {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free on both 127.0.0.1 and 127.0.0.2 after 500 tries")
}
