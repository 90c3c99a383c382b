//! The store-scale scenario: a state store holding many finished units (seeded through dcvd's
//! store API) plus a few active orders, run by the real `dcvd` binary (`dcvd run`) against the
//! in-process simulator. Measures what an account of that size costs while it waits: dcvd's peak
//! RSS, its CPU use while idle, and how long `dcvd status` takes.
//!
//! It must not change what it measures: dcvd runs unchanged, with its defaults except the
//! memory provider and a short check interval, and the seeded units take the path real ones
//! take through the store (the same transitions, so the audit log has their size).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use certcentral_sim::{NewOrder, Sim, SimConfig};
use dcvd::store::{Store, StoreThread, UnitId, UnitSource, UnitSpec, UnitState};
use serde::Serialize;

use crate::procfs;
use crate::scenario::digicert_windows;

/// Ids of the seeded (finished) units start here; the active orders follow them.
const FIRST_SEEDED: u64 = 1;
/// The zone of every name.
const ZONE: &str = "scale.test";
/// The seeded units' path through the store, as a DV order that validated takes it.
const PATH: [UnitState; 6] = [
    UnitState::TokenIssued,
    UnitState::Published,
    UnitState::Propagated,
    UnitState::Checking,
    UnitState::Valid,
    UnitState::CleanedUp,
];

/// What the scenario runs.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Finished units in the store.
    pub seeded: u64,
    /// Active orders in the configuration.
    pub active: u64,
    /// How long CPU is sampled once the active orders are done.
    pub idle: Duration,
    /// The dcvd binary.
    pub dcvd_bin: PathBuf,
    /// Work directory (state store, configuration, dcvd's log).
    pub work_dir: PathBuf,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleFigures {
    /// Finished units seeded.
    pub seeded: u64,
    /// Active orders.
    pub active: u64,
    /// Seconds to seed the store (not dcvd's work).
    pub seed_s: f64,
    /// Size of the state database after seeding, MiB.
    pub store_mib: f64,
    /// Seconds from `dcvd run` until the simulator had validated every active order.
    pub active_valid_s: f64,
    /// dcvd's peak RSS (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// dcvd's CPU time (user + system) over the idle period, seconds.
    pub idle_cpu_s: f64,
    /// The idle period, seconds.
    pub idle_s: f64,
    /// `idle_cpu_s / idle_s` in percent of one core.
    pub idle_cpu_pct: f64,
    /// Wall time of each `dcvd status` run (text table), seconds.
    pub status_s: Vec<f64>,
    /// Wall time of `dcvd status --json`, seconds.
    pub status_json_s: f64,
    /// Units `dcvd status --json` listed.
    pub status_units: usize,
}

/// Runs the scenario.
pub async fn run(opts: &ScaleOptions) -> anyhow::Result<ScaleFigures> {
    anyhow::ensure!(
        opts.dcvd_bin.is_file(),
        "the dcvd binary {} is missing: build it (`cargo build --release -p dcvd --bin dcvd`) or pass --dcvd-bin",
        opts.dcvd_bin.display()
    );
    let work = &opts.work_dir;
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let state_dir = work.join("state");

    eprintln!("dcvd-bench: seeding {} finished units", opts.seeded);
    let started = Instant::now();
    seed(&state_dir, opts.seeded).await?;
    let seed_s = started.elapsed().as_secs_f64();
    let store_mib = dir_size(&state_dir) as f64 / 1024.0 / 1024.0;

    let first_active = FIRST_SEEDED + opts.seeded;
    let dns_port = free_port()?;
    let api_key = format!("bench-{:016x}", rand::random::<u64>());
    let sim = Sim::new(SimConfig {
        api_key: api_key.clone(),
        dns_servers: ["127.0.0.1", "127.0.0.2"]
            .iter()
            .map(|ip| std::net::SocketAddr::new(ip.parse().expect("ip literal"), dns_port))
            .collect(),
        rate_limits: digicert_windows().iter().map(|w| (w.requests, w.per())).collect(),
        validation_scope: certcentral_sim::ValidationScope::Exact,
        seed: 1,
        ..SimConfig::default()
    });
    for id in first_active..first_active + opts.active {
        sim.add_order(NewOrder::new(id, &[format!("a{id}.{ZONE}").as_str()]));
    }
    let running = sim.clone().spawn("127.0.0.1:0".parse()?).await.context("cannot start the simulator")?;

    let key_file = work.join("certcentral-api-key");
    std::fs::write(&key_file, &api_key)?;
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let config = work.join("dcvd.toml");
    std::fs::write(
        &config,
        render_config(&running.base_url, &key_file, &state_dir, dns_port, first_active, opts.active),
    )?;

    let log = std::fs::File::create(work.join("dcvd.log"))?;
    let started = Instant::now();
    let mut child = Command::new(&opts.dcvd_bin)
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", opts.dcvd_bin.display()))?;
    let pid = child.id();
    let outcome = measure(opts, &sim, pid, first_active, started, &config).await;
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let stopped = tokio::task::spawn_blocking(move || child.wait()).await?;
    running.shutdown().await;
    let mut figures = outcome.with_context(|| format!("dcvd's log: {}", work.join("dcvd.log").display()))?;
    anyhow::ensure!(stopped?.success(), "dcvd run did not stop cleanly on SIGTERM (log: {})", work.display());
    figures.seed_s = seed_s;
    figures.store_mib = store_mib;
    Ok(figures)
}

async fn measure(
    opts: &ScaleOptions,
    sim: &Sim,
    pid: u32,
    first_active: u64,
    started: Instant,
    config: &Path,
) -> anyhow::Result<ScaleFigures> {
    let limit = Duration::from_secs(600);
    loop {
        let valid = (first_active..first_active + opts.active)
            .filter(|id| sim.order(*id).is_some_and(|o| o.dcv_status == "valid"))
            .count() as u64;
        if valid == opts.active {
            break;
        }
        anyhow::ensure!(procfs::cpu_seconds_of(pid).is_some(), "dcvd exited before the active orders were valid");
        anyhow::ensure!(started.elapsed() < limit, "only {valid}/{} active orders valid after {limit:?}", opts.active);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let active_valid_s = started.elapsed().as_secs_f64();
    // Let dcvd remove the records and settle before sampling the idle period.
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!("dcvd-bench: active orders valid after {active_valid_s:.1} s; sampling idle CPU for {:?}", opts.idle);
    let before = procfs::cpu_seconds_of(pid).context("dcvd exited")?;
    let idle_started = Instant::now();
    tokio::time::sleep(opts.idle).await;
    let after = procfs::cpu_seconds_of(pid).context("dcvd exited while idle")?;
    let idle_s = idle_started.elapsed().as_secs_f64();
    let idle_cpu_s = after - before;

    let status = |json: bool| -> anyhow::Result<(f64, String)> {
        let mut cmd = Command::new(&opts.dcvd_bin);
        cmd.args(["status", "--config"]).arg(config);
        if json {
            cmd.arg("--json");
        }
        let t = Instant::now();
        let out = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).output().context("dcvd status")?;
        let took = t.elapsed().as_secs_f64();
        anyhow::ensure!(out.status.success(), "dcvd status failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    let mut status_s = Vec::new();
    for _ in 0..3 {
        status_s.push(status(false)?.0);
    }
    let (status_json_s, json) = status(true)?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).context("dcvd status --json")?;
    let peak = procfs::peak_rss_kib_of(pid).context("dcvd exited")?;
    Ok(ScaleFigures {
        seeded: opts.seeded,
        active: opts.active,
        seed_s: 0.0,
        store_mib: 0.0,
        active_valid_s,
        peak_rss_mib: peak as f64 / 1024.0,
        idle_cpu_s,
        idle_s,
        idle_cpu_pct: 100.0 * idle_cpu_s / idle_s,
        status_s,
        status_json_s,
        status_units: rows.len(),
    })
}

/// Seeds `n` DV orders that went the whole way to `CleanedUp`, through the store's thread (the
/// writes of many units share a commit, as in the daemon).
async fn seed(state_dir: &Path, n: u64) -> anyhow::Result<()> {
    let store = Arc::new(Store::open(state_dir).context("state store")?);
    let domains: Vec<Vec<String>> = (FIRST_SEEDED..FIRST_SEEDED + n).map(|id| vec![format!("s{id}.{ZONE}")]).collect();
    let specs: Vec<UnitSpec<'_>> = (FIRST_SEEDED..FIRST_SEEDED + n)
        .zip(&domains)
        .map(|(id, domains)| UnitSpec {
            unit: UnitId::order(id),
            method: "dns-txt-token",
            domains,
            provider: None,
            source: UnitSource::Config,
        })
        .collect();
    store.sync_units(&specs).context("seeding the units")?;
    let thread = StoreThread::start(store).context("store thread")?;
    let mut writes = tokio::task::JoinSet::new();
    let ids: Vec<u64> = (FIRST_SEEDED..FIRST_SEEDED + n).collect();
    for chunk in ids.chunks(500) {
        let (chunk, thread) = (chunk.to_vec(), thread.clone());
        writes.spawn(async move {
            thread
                .write(move |store| {
                    for id in chunk {
                        for state in PATH {
                            store.transition(UnitId::order(id), state, |_| {})?;
                        }
                    }
                    Ok(())
                })
                .await
        });
    }
    while let Some(done) = writes.join_next().await {
        done?.context("seeding the units' states")?;
    }
    Ok(())
}

fn render_config(base_url: &str, key: &Path, state_dir: &Path, dns_port: u16, first: u64, n: u64) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "[certcentral]\nbase_url = {base_url:?}\napi_key_file = {:?}", key.display().to_string());
    let _ = writeln!(t, "validation_scope = \"exact\"");
    let _ = writeln!(
        t,
        "\n[daemon]\nstate_dir = {:?}\nrescan = \"off\"\nlog_format = \"text\"",
        state_dir.display().to_string()
    );
    let _ = writeln!(t, "\n[propagation]\nresolvers = [\"127.0.0.1:{dns_port}\"]\nnameserver_port = {dns_port}");
    let _ = writeln!(t, "\n[check]\nmin_interval = \"1s\"");
    let _ = writeln!(
        t,
        "\n[providers.mem]\ntype = \"memory\"\nzones = [{ZONE:?}]\nlisten = [\"127.0.0.1:{dns_port}\", \"127.0.0.2:{dns_port}\"]\nlag = \"500ms\""
    );
    for id in first..first + n {
        let _ = writeln!(t, "\n[[order]]\nid = {id}\nmethod = \"dns-txt-token\"\ndomains = [\"a{id}.{ZONE}\"]");
    }
    t
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    let ips: [std::net::IpAddr; 2] = ["127.0.0.1".parse()?, "127.0.0.2".parse()?];
    for _ in 0..500 {
        let port = 20_000 + rand::random::<u16>() % 40_000;
        let free = ips.iter().all(|ip| {
            let a = std::net::SocketAddr::new(*ip, port);
            std::net::UdpSocket::bind(a).is_ok() && std::net::TcpListener::bind(a).is_ok()
        });
        if free {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free on both 127.0.0.1 and 127.0.0.2 after 500 tries")
}

/// The figures as a table.
pub fn table(f: &ScaleFigures) -> String {
    let status: Vec<String> = f.status_s.iter().map(|s| format!("{s:.2}")).collect();
    format!(
        "Store scale: {} finished units in the store + {} active orders, DigiCert's limits, real dcvd binary (`dcvd run`)\n\
         seeding the store (s, not dcvd)        {:.1}\n\
         state database (MiB)                   {:.1}\n\
         active orders valid after (s)          {:.1}\n\
         peak RSS (MiB)                         {:.1}\n\
         idle CPU over {:.0} s (s, % of a core)  {:.2} s, {:.2} %\n\
         `dcvd status` wall (s)                 {}\n\
         `dcvd status --json` wall (s)          {:.2} ({} units)\n",
        f.seeded,
        f.active,
        f.seed_s,
        f.store_mib,
        f.active_valid_s,
        f.peak_rss_mib,
        f.idle_s,
        f.idle_cpu_s,
        f.idle_cpu_pct,
        status.join(" / "),
        f.status_json_s,
        f.status_units,
    )
}
