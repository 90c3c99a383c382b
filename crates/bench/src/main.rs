//! `dcvd-bench`: runs the benchmark scenarios and prints one table per scenario.
//! See docs/benchmarks.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dcvd_bench::child::DcvdKnobs;
use dcvd_bench::report::RunOutcome;
use dcvd_bench::runner::{self, Options};
use dcvd_bench::scenario::{Scenario, Strategy, Window};

/// Benchmarks dcvd against fixed-interval check-dcv polling, on the CertCentral simulator and an
/// in-process authoritative DNS server with per-record propagation lag.
#[derive(Debug, Parser)]
#[command(name = "dcvd-bench", version)]
struct Cli {
    /// Comma-separated order counts (presets per count: see docs/benchmarks.md).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    scenarios: Vec<usize>,
    /// Also run the 10,000-order scenario.
    #[arg(long)]
    large: bool,
    /// A few orders with lag 0-1 s, for CI (checks that the runner works, not timings).
    #[arg(long, conflicts_with_all = ["scenarios", "large"])]
    quick: bool,
    /// Strategies, in column order: `dcvd` and `poll-Ns`.
    #[arg(long, value_delimiter = ',', default_value = "dcvd,poll-2s,poll-10s", value_parser = Strategy::parse)]
    strategies: Vec<Strategy>,
    /// Per-record lag range, `MIN..MAX` (humantime), overriding the presets.
    #[arg(long)]
    lag: Option<String>,
    /// Extra lag of the last name server, overriding the presets.
    #[arg(long, value_parser = humantime::parse_duration)]
    server_lag: Option<Duration>,
    /// Negative TTL (SOA minimum, seconds), overriding the presets.
    #[arg(long)]
    negative_ttl: Option<u32>,
    /// Rate windows of simulator and clients (`100/5s,1000/5m`), overriding the presets.
    #[arg(long)]
    rate_limits: Option<String>,
    /// Seed of the lag draws and the simulator.
    #[arg(long)]
    seed: Option<u64>,
    /// Time limit of one strategy run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20m")]
    deadline: Duration,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for child logs and state (default: the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// `tracing` filter of the strategy processes (their stderr goes to a log file per run).
    #[arg(long, default_value = "warn")]
    log: String,
    /// dcvd `daemon.max_concurrent` override.
    #[arg(long)]
    dcvd_max_concurrent: Option<usize>,
    /// dcvd `propagation.poll_min` override.
    #[arg(long, value_parser = humantime::parse_duration)]
    dcvd_poll_min: Option<Duration>,
    /// dcvd `propagation.poll_max` override.
    #[arg(long, value_parser = humantime::parse_duration)]
    dcvd_poll_max: Option<Duration>,
    /// dcvd `propagation.max_queries_per_second` override.
    #[arg(long)]
    dcvd_max_qps: Option<u32>,
    /// dcvd `check.min_interval` override.
    #[arg(long, value_parser = humantime::parse_duration)]
    dcvd_check_min: Option<Duration>,
    /// dcvd `check.max_interval` override.
    #[arg(long, value_parser = humantime::parse_duration)]
    dcvd_check_max: Option<Duration>,
    /// Instead of the scenarios: the store-scale scenario with this many finished units in the
    /// state store (plus `--store-active` orders), run by the real dcvd binary.
    #[arg(long, conflicts_with_all = ["quick", "large"])]
    store_scale: Option<u64>,
    /// Active orders of the store-scale scenario.
    #[arg(long, default_value_t = 100)]
    store_active: u64,
    /// How long the store-scale scenario samples dcvd's idle CPU.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    idle: Duration,
    /// The dcvd binary of the store-scale scenario (default: `dcvd` next to this program).
    #[arg(long)]
    dcvd_bin: Option<PathBuf>,
    /// Internal: run one strategy as a child process (spec as JSON on stdin).
    #[arg(long, hide = true)]
    child: bool,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcvd-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.child {
        return match runtime.block_on(dcvd_bench::child::main()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dcvd-bench child: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dcvd-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn scenarios(cli: &Cli) -> anyhow::Result<Vec<Scenario>> {
    let mut list: Vec<Scenario> = if cli.quick {
        vec![Scenario::quick()]
    } else {
        let mut counts = cli.scenarios.clone();
        if cli.large && !counts.contains(&10_000) {
            counts.push(10_000);
        }
        counts.into_iter().map(Scenario::preset).collect()
    };
    let lag = cli
        .lag
        .as_deref()
        .map(|s| {
            let (a, b) =
                s.split_once("..").ok_or_else(|| anyhow::anyhow!("--lag {s:?}: expected MIN..MAX such as 0s..30s"))?;
            let a = humantime::parse_duration(a.trim()).map_err(|e| anyhow::anyhow!("--lag {s:?}: {e}"))?;
            let b = humantime::parse_duration(b.trim()).map_err(|e| anyhow::anyhow!("--lag {s:?}: {e}"))?;
            anyhow::ensure!(a <= b, "--lag {s:?}: MIN must not exceed MAX");
            Ok((a, b))
        })
        .transpose()?;
    let windows = cli
        .rate_limits
        .as_deref()
        .map(Window::parse_list)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--rate-limits: {e}"))?;
    for s in &mut list {
        anyhow::ensure!(s.orders > 0, "--scenarios: an order count must be at least 1");
        if let Some((a, b)) = lag {
            s.lag_min_ms = ms(Some(a)).unwrap_or(0);
            s.lag_max_ms = ms(Some(b)).unwrap_or(0);
        }
        if let Some(l) = cli.server_lag {
            s.server_lag_ms = ms(Some(l)).unwrap_or(0);
        }
        if let Some(n) = cli.negative_ttl {
            s.negative_ttl_s = n;
        }
        if let Some(w) = &windows {
            anyhow::ensure!(!w.is_empty(), "--rate-limits: give at least one window");
            s.windows.clone_from(w);
        }
        if let Some(seed) = cli.seed {
            s.seed = seed;
        }
    }
    Ok(list)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(seeded) = cli.store_scale {
        return run_scale(&cli, seeded).await;
    }
    let list = scenarios(&cli)?;
    let opts = Options {
        strategies: cli.strategies.clone(),
        deadline: cli.deadline,
        work_dir: cli.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("dcvd-bench")),
        dcvd: DcvdKnobs {
            max_concurrent: cli.dcvd_max_concurrent,
            poll_min_ms: ms(cli.dcvd_poll_min),
            poll_max_ms: ms(cli.dcvd_poll_max),
            max_qps: cli.dcvd_max_qps,
            check_min_ms: ms(cli.dcvd_check_min),
            check_max_ms: ms(cli.dcvd_check_max),
        },
        log: cli.log.clone(),
    };
    let mut all_ok = true;
    let mut json = Vec::new();
    for scenario in &list {
        let runs: Vec<(Strategy, RunOutcome)> = runner::run_scenario(scenario, &opts).await;
        println!("{}", dcvd_bench::report::table(scenario, &runs));
        for (strategy, run) in &runs {
            all_ok &= run.as_ref().is_ok_and(|f| f.valid_orders == f.orders && f.records_left == 0);
            json.push(serde_json::json!({
                "scenario": scenario,
                "strategy": strategy.to_string(),
                "figures": run.as_ref().ok(),
                "error": run.as_ref().err(),
            }));
        }
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn run_scale(cli: &Cli, seeded: u64) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(cli.store_active > 0, "--store-active: at least one active order");
    let dcvd_bin = match &cli.dcvd_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("dcvd"),
    };
    let opts = dcvd_bench::scale::ScaleOptions {
        seeded,
        active: cli.store_active,
        idle: cli.idle,
        dcvd_bin,
        work_dir: cli.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("dcvd-bench")).join("store-scale"),
    };
    let figures = dcvd_bench::scale::run(&opts).await?;
    println!("{}", dcvd_bench::scale::table(&figures));
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
