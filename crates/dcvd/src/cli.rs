//! The command line (clap): `run`, `once`, `check-config`, `status`, `cleanup`, `doctor`, `demo`.
//!
//! Exit codes: 0 success, 1 failure, 2 usage, 78 configuration error (EX_CONFIG).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{Config, LogFormat};
use crate::engine::{self, Control, Mode, Observer};
use crate::metrics::Metrics;
use crate::store::{RecordRow, RecordStatus, Store, UnitId, UnitRow};

/// Exit code of a configuration error (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code of `dcvd once --deadline` when the deadline passed first (sysexits EX_TEMPFAIL:
/// run it again later; the unfinished units resume).
pub const EXIT_DEADLINE: u8 = 75;

/// Unattended DigiCert domain control validation by DNS.
#[derive(Debug, Parser)]
#[command(name = "dcvd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(long, short = 'c', value_name = "PATH", default_value = "/etc/dcvd/dcvd.toml")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd Type=notify; SIGHUP reloads, SIGTERM stops).
    Run(ConfigArg),
    /// Process every configured unit until each is terminal, then exit (0 when all are valid).
    Once {
        #[command(flatten)]
        config: ConfigArg,
        /// Give up after this long (e.g. `30m`): remove the records published so far and exit 75;
        /// unfinished units resume at the next run.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        deadline: Option<Duration>,
    },
    /// Validate the configuration, order files and secrets; exit 0 or 78.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Also run each provider's preflight and one authenticated CertCentral call.
        #[arg(long)]
        online: bool,
    },
    /// Show every unit (id, domains, method, state, token expiry, attempts, last error) and the
    /// records still published; with UNIT, that unit's records and history.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// One unit: `order:ID` or `domain:ID` (or just the id when it is unique).
        #[arg(value_name = "UNIT")]
        unit: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this state directory instead of the configuration's `state_dir` (no secret is
        /// read either way).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Remove every record dcvd still has published (reads the DNS providers' credentials only).
    Cleanup(ConfigArg),
    /// Check the configuration and the state directory, then each DOMAIN (owner, zone, what each
    /// name server serves, provider, CAA, DNSSEC) or, without DOMAINs, each zone's name servers
    /// and CAA; print what is ok and what to fix (exit 1 when something would stop validation).
    Doctor {
        #[command(flatten)]
        config: ConfigArg,
        /// Also call CertCentral and each provider with the configured credentials.
        #[arg(long)]
        online: bool,
        /// Names to look at in detail.
        #[arg(value_name = "DOMAIN")]
        domains: Vec<String>,
    },
    /// The state store itself (see `dcvd store migrate --help`).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// A self-contained run on an embedded default: CertCentral simulator, DNS server and the
    /// in-memory provider, all in this process.
    Demo {
        /// Print the demo's configuration, runnable as printed against a standalone
        /// certcentral-sim (key "sim-devkey", read from CERTCENTRAL_SIM_API_KEY), then exit.
        #[arg(long)]
        config: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy every unit, record and event of the SQLite store in state_dir into an empty
    /// PostgreSQL database, in one transaction, and print the counts. Stop the daemon first (this
    /// takes its lock); then set `[store] url` and start the instances.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
        /// The PostgreSQL database: `postgres://USER@HOST:PORT/DATABASE`, without a password.
        #[arg(long, value_name = "URL")]
        to_url: String,
        /// A file holding the database user's password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// PEM file of the CA that signed the server's certificate (default: the system's roots).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// The SQLite state directory to copy (default: the configuration's state_dir; no secret
        /// of the configuration is read).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcvd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run(c) => run(&c.config, Mode::Daemon, None).await,
        Command::Once { config, deadline } => run(&config.config, Mode::Once, deadline).await,
        Command::CheckConfig { config, online } => check_config(&config.config, online).await,
        Command::Status { config, unit, json, state_dir } => status(&config.config, unit.as_deref(), json, state_dir),
        Command::Cleanup(c) => cleanup(&c.config).await,
        Command::Doctor { config, online, domains } => {
            crate::doctor::main(&config.config, &crate::doctor::Scope { domains, online }).await
        }
        Command::Store { command: StoreCommand::Migrate { config, to_url, password_file, ca_file, state_dir } } => {
            store_migrate(&config.config, &to_url, password_file.as_deref(), ca_file, state_dir)
        }
        Command::Demo { config } => crate::demo::main(config).await,
    }
}

/// Loads and validates the configuration (with `env`'s secrets), printing its warnings;
/// configuration errors, the state directory included (checked as the running user, since
/// every command that loads the whole configuration writes it), exit 78.
fn load(path: &Path, env: &crate::config::Environment) -> Result<Config, ExitCode> {
    let loaded = Config::load_with(path, env).and_then(|mut cfg| {
        cfg.check_state_dir()?;
        Ok(cfg)
    });
    match loaded {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("dcvd: warning: {w}");
            }
            Ok(cfg)
        }
        Err(e) => {
            eprintln!("dcvd: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

async fn check_config(path: &Path, online: bool) -> ExitCode {
    let cfg = match load(path, &crate::config::Environment::process()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let orders = cfg.units.iter().filter(|u| matches!(u.key, crate::config::UnitKey::Order(_))).count();
    println!(
        "{}: ok ({} orders, {} domains, {} providers, {} files)",
        path.display(),
        orders,
        cfg.units.len() - orders,
        cfg.providers.len(),
        cfg.files.len()
    );
    println!("store: {}", cfg.store.describe(&cfg.daemon.state_dir));
    if let Some(d) = &cfg.discovery {
        let zones = d.zones.as_ref().map_or_else(|| "every provider zone".to_string(), |z| z.join(", "));
        println!(
            "discovery: orders {}, domains {}, set_method {}, revalidate_before {}, zones: {zones}",
            if d.orders { "on" } else { "off" },
            if d.domains { "on" } else { "off" },
            d.set_method.map_or("off", |m| m.as_str()),
            humantime::format_duration(d.revalidate_before),
        );
    }
    if !online {
        return ExitCode::SUCCESS;
    }
    crate::logging::init(LogFormat::Text);
    let metrics = Arc::new(Metrics::new());
    let client = match engine::build_client(&cfg.certcentral, &metrics, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dcvd: certcentral: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut ok = true;
    for (name, p) in &cfg.providers {
        let result = match crate::providers::build(name, p).await {
            Ok(provider) => provider.preflight().await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:#}")),
        };
        match result {
            Ok(()) => println!("provider {name} ({}): ok", p.kind()),
            Err(e) => {
                ok = false;
                println!("provider {name} ({}): FAILED: {e}", p.kind());
            }
        }
    }
    let probe = match cfg.units.first().map(|u| u.key) {
        Some(crate::config::UnitKey::Order(id)) => client.order_info(id).await.map(|_| true),
        Some(crate::config::UnitKey::Domain(id)) => client.domain_info(id).await.map(|_| true),
        // Discovery alone: the call every scan starts with (one entry).
        None if cfg.discovery.is_some() => {
            client.list_orders(&certcentral::OrderFilter::pending(), 0, 1).await.map(|_| true)
        }
        None => Ok(false),
    };
    match probe {
        Ok(true) => println!("certcentral {}: ok", cfg.certcentral.base_url),
        Ok(false) => println!("certcentral {}: not checked (no unit to ask about)", cfg.certcentral.base_url),
        Err(e) => {
            ok = false;
            println!("certcentral {}: FAILED: {e}", cfg.certcentral.base_url);
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The start-up line: what this process runs with, so an operator reading the journal knows
/// which configuration, state and account settings the lines that follow belong to.
fn log_banner(path: &Path, cfg: &crate::config::Config) {
    let providers: Vec<String> =
        cfg.providers.iter().map(|(name, p)| format!("{name}({}: {})", p.kind(), p.zones().join(" "))).collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        state_dir = %cfg.daemon.state_dir.display(),
        store = %cfg.store.describe(&cfg.daemon.state_dir),
        instance = %cfg.store.instance,
        units = cfg.units.len(),
        providers = %providers.join(", "),
        validation_scope = cfg.certcentral.validation_scope.as_str(),
        discovery = cfg.discovery.as_ref().map_or("off", |d| match (d.orders, d.domains) {
            (true, true) => "orders, domains",
            (true, false) => "orders",
            (false, true) => "domains",
            (false, false) => "off",
        }),
        certcentral = %cfg.certcentral.base_url,
        "dcvd starting"
    );
}

/// systemd notifications (no-ops when not started by systemd).
struct Systemd;

impl Observer for Systemd {
    fn ready(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    fn status(&self, line: &str) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(line)]);
    }
    fn stopping(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

async fn run(path: &Path, mode: Mode, deadline: Option<Duration>) -> ExitCode {
    let cfg = match load(path, &crate::config::Environment::process()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(cfg.daemon.log_format);
    log_banner(path, &cfg);
    let store = match open_store(&cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            // Logging is set up: one line, on stderr or in the journal (not both).
            error!(error = %e, "cannot open the state store");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::new());
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    if let Some(listen) = cfg.daemon.metrics_listen {
        match crate::metrics::serve(listen, metrics.clone(), stop_metrics.clone()).await {
            Ok(addr) => {
                info!(%addr, "metrics listening");
                // Token expiry and live records come from the store, not from engine events.
                crate::metrics::spawn_store_view(
                    store.clone(),
                    metrics.clone(),
                    STORE_VIEW_INTERVAL,
                    stop_metrics.clone(),
                );
            }
            Err(e) => warn!(%listen, error = %e, "cannot serve metrics"),
        }
    }
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
    let (tx, rx) = mpsc::channel(4);
    spawn_signal_handlers(path.to_path_buf(), tx.clone());
    let _rescan = crate::scheduler::start_rescan(cfg.daemon.rescan.as_deref(), path.to_path_buf(), tx.clone()).await;
    let gave_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(limit) = deadline {
        let (tx, gave_up) = (tx.clone(), gave_up.clone());
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            gave_up.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = tx.send(Control::GiveUp).await;
        });
    }
    let result = engine::run(cfg, store, metrics, mode, rx, Arc::new(Systemd), std::future::pending()).await;
    stop_metrics.cancel();
    match result {
        Ok(summary) if gave_up.load(std::sync::atomic::Ordering::SeqCst) && !summary.all_valid() => {
            let open: Vec<String> = summary
                .units
                .iter()
                .filter(|u| u.in_config && !u.state.is_terminal())
                .map(|u| format!("{} ({})", u.unit, u.state.as_str()))
                .collect();
            let message = format!(
                "gave up after the deadline of {}: {} unit(s) unfinished: {}; their records were removed, and the \
                 next run resumes them",
                humantime::format_duration(deadline.unwrap_or_default()),
                open.len(),
                open.join(", ")
            );
            error!(units = open.len(), "{message}");
            ExitCode::from(EXIT_DEADLINE)
        }
        Ok(summary) => {
            info!(units = summary.units.len(), all_valid = summary.all_valid(), "stopped");
            if mode == Mode::Once && !summary.all_valid() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) if e.downcast_ref::<engine::SetupError>().is_some() => {
            error!(error = %format!("{e:#}"), "configuration cannot be used");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "dcvd stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration again for a reload, on a blocking thread (file reads and host-name
/// resolution must not stall a tokio worker); an invalid one is logged with its position
/// (`trigger`: `sighup` or `rescan`, for the log).
pub async fn reload_config(path: &Path, trigger: &'static str) -> Option<Config> {
    let owned = path.to_owned();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| load_for_reload(&owned, trigger))).await {
        Ok(config) => config,
        Err(e) => {
            error!(trigger, error = %e, "reading the new configuration failed; keeping the running one");
            None
        }
    }
}

fn load_for_reload(path: &Path, trigger: &str) -> Option<Config> {
    match Config::load(path) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                warn!("{w}");
            }
            Some(cfg)
        }
        Err(e) => {
            error!(trigger, error = %e, "new configuration is invalid; keeping the running one");
            None
        }
    }
}

fn spawn_signal_handlers(path: PathBuf, tx: mpsc::Sender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!(trigger = "sighup", config = %path.display(), "reloading configuration");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    if let Some(cfg) = reload_config(&path, "sighup").await {
                        let _ = tx.send(Control::Reload { config: Box::new(cfg), retry_failed: true }).await;
                    }
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                }
                _ = term.recv() => {
                    info!("SIGTERM: stopping");
                    let _ = tx.send(Control::Stop).await;
                }
                _ = int.recv() => {
                    info!("SIGINT: stopping");
                    let _ = tx.send(Control::Stop).await;
                }
            }
        }
    });
}

/// Opens the store `[store]` configures: PostgreSQL when `url` is set, else SQLite in
/// `daemon.state_dir`, writing as `[store] instance`.
fn open_store(cfg: &Config) -> Result<Store, crate::store::StoreError> {
    match &cfg.store.postgres {
        Some(pg) => Store::open_postgres(pg, &cfg.store.instance),
        None => Store::open_sqlite(&cfg.daemon.state_dir, &cfg.store.instance),
    }
}

/// `dcvd store migrate`: SQLite state_dir -> empty PostgreSQL database.
fn store_migrate(
    path: &Path,
    url: &str,
    password_file: Option<&Path>,
    ca_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
) -> ExitCode {
    let state_dir = match state_dir {
        Some(dir) => dir,
        None => match Config::load_daemon(path, &crate::config::Environment::process()) {
            Ok(daemon) => daemon.state_dir,
            Err(e) => {
                eprintln!("dcvd: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    if !state_dir.join(crate::store::DB_FILE).exists() {
        eprintln!("dcvd: no SQLite state database in {}: nothing to migrate", state_dir.display());
        return ExitCode::FAILURE;
    }
    let password = match password_file.map(std::fs::read_to_string).transpose() {
        Ok(password) => password.map(|p| secrecy::SecretString::from(p.trim_end_matches(['\r', '\n']).to_owned())),
        Err(e) => {
            eprintln!("dcvd: --password-file {}: {e}", password_file.map(Path::display).expect("read above"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let settings = match crate::store::PgSettings::new(url, password, ca_file) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("dcvd: --to-url: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match crate::store::migrate_sqlite_to_postgres(&state_dir, &settings) {
        Ok(counts) => {
            println!(
                "copied {} units, {} records, {} events from {} to {}",
                counts.units,
                counts.records,
                counts.events,
                state_dir.display(),
                settings.url()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dcvd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(path: &Path, unit: Option<&str>, json: bool, state_dir: Option<PathBuf>) -> ExitCode {
    let (state_dir, postgres) = match state_dir {
        Some(dir) => {
            // A typo in --state-dir must not read as "nothing has run yet".
            if !dir.is_dir() {
                eprintln!(
                    "dcvd: --state-dir {}: no such directory (the daemon's state_dir, /var/lib/dcvd by default)",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            (dir, None)
        }
        // `[daemon]` and `[store]` only: status reads no other secret, so it works without the
        // service's CertCentral and provider credentials.
        None => match Config::load_daemon_and_store(path, &crate::config::Environment::process()) {
            Ok((daemon, store)) => (daemon.state_dir, store.postgres.map(|pg| (pg, store.instance))),
            Err(e) => {
                eprintln!("dcvd: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let opened = match &postgres {
        Some((pg, instance)) => Store::open_postgres(pg, instance),
        None => Store::open_read_only(&state_dir),
    };
    let store = match opened {
        Ok(s) => s,
        Err(crate::store::StoreError::Missing { .. }) if unit.is_none() => {
            // Nothing has run yet: an empty state is not an error.
            if json {
                println!("[]");
            } else {
                println!("no units yet: dcvd has not run with state_dir {}", state_dir.display());
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("dcvd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = match unit {
        None => status_all(&store, json),
        Some(spec) => status_unit(&store, spec, json),
    };
    match text {
        Ok(text) => {
            // A closed pipe (`dcvd status | head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dcvd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every unit, then the records still published (those of finished units are left-overs).
fn status_all(store: &Store, json: bool) -> anyhow::Result<String> {
    let units = store.units()?;
    let live = store.live_records()?;
    // A record is a left-over once its unit is over or no longer configured.
    let terminal: std::collections::HashMap<UnitId, bool> =
        units.iter().map(|u| (u.unit, u.state.is_terminal() || !u.in_config)).collect();
    let left_over = |r: &RecordRow| terminal.get(&r.unit).copied().unwrap_or(true);
    if json {
        let rows: Vec<serde_json::Value> = units
            .iter()
            .map(|u| {
                let mut v = unit_json(u);
                let recs: Vec<serde_json::Value> =
                    live.iter().filter(|r| r.unit == u.unit).map(|r| record_json(r, left_over(r))).collect();
                v["records"] = serde_json::Value::Array(recs);
                v
            })
            .collect();
        return Ok(format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    let mut out = status_table(&units);
    if !live.is_empty() {
        out.push_str("\nRECORDS STILL PUBLISHED\n");
        let rows: Vec<Vec<String>> = live
            .iter()
            .map(|r| {
                let note = if left_over(r) { "left over: run `dcvd cleanup`" } else { "in use" };
                record_cells(r, note)
            })
            .collect();
        out.push_str(&table(&["UNIT", "NAME", "TYPE", "VALUE", "PROVIDER", "STATUS", "NOTE"], rows));
    }
    Ok(out)
}

/// One unit: its row, every record it ever had and its history (state changes with times).
fn status_unit(store: &Store, spec: &str, json: bool) -> anyhow::Result<String> {
    let units = store.units()?;
    let unit = parse_unit(spec, &units)?;
    let row =
        units.iter().find(|u| u.unit == unit).ok_or_else(|| anyhow::anyhow!("{unit} is not in the state store"))?;
    let records = store.records(unit)?;
    let events = store.events(unit)?;
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| ms.to_string())
    };
    let finished = row.state.is_terminal() || !row.in_config;
    if json {
        let mut v = unit_json(row);
        v["records"] = serde_json::Value::Array(
            records.iter().map(|r| record_json(r, finished && r.status != RecordStatus::Removed)).collect(),
        );
        v["history"] = serde_json::Value::Array(
            events
                .iter()
                .map(|(at, event, detail)| serde_json::json!({"at": when(*at), "event": event, "detail": detail}))
                .collect(),
        );
        return Ok(format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    let mut out = status_table(std::slice::from_ref(row));
    out.push_str(&format!("in configuration: {}\n", if row.in_config { "yes" } else { "no" }));
    out.push_str("\nRECORDS\n");
    if records.is_empty() {
        out.push_str("none\n");
    } else {
        let rows = records
            .iter()
            .map(|r| {
                let note = match (r.status, finished) {
                    (RecordStatus::Removed, _) => "-",
                    (_, true) => "left over: run `dcvd cleanup`",
                    (_, false) => "in use",
                };
                record_cells(r, note)
            })
            .collect();
        out.push_str(&table(&["UNIT", "NAME", "TYPE", "VALUE", "PROVIDER", "STATUS", "NOTE"], rows));
    }
    out.push_str("\nHISTORY\n");
    let rows = events
        .iter()
        .map(|(at, event, detail)| {
            vec![when(*at), event.clone(), if detail.is_empty() { "-".into() } else { detail.clone() }]
        })
        .collect();
    out.push_str(&table(&["TIME", "EVENT", "DETAIL"], rows));
    Ok(out)
}

/// `order:ID`, `domain:ID` (also `order/ID`, `order ID`), or an id that names one unit.
fn parse_unit(spec: &str, units: &[UnitRow]) -> anyhow::Result<UnitId> {
    let spec = spec.trim();
    let (kind, id) = match spec.split_once([':', '/', ' ']) {
        Some((kind, id)) => (Some(kind.trim()), id.trim()),
        None => (None, spec),
    };
    let id: u64 = id.parse().map_err(|_| anyhow::anyhow!("UNIT {spec:?}: expected order:ID or domain:ID"))?;
    match kind {
        Some(kind) => {
            let kind: crate::store::UnitKind =
                kind.parse().map_err(|_| anyhow::anyhow!("UNIT {spec:?}: the kind is `order` or `domain`"))?;
            Ok(UnitId { kind, id })
        }
        None => {
            let matches: Vec<UnitId> = units.iter().map(|u| u.unit).filter(|u| u.id == id).collect();
            match matches.as_slice() {
                [one] => Ok(*one),
                [] => anyhow::bail!("no unit with id {id} in the state store"),
                _ => anyhow::bail!("both an order and a domain have id {id}: say order:{id} or domain:{id}"),
            }
        }
    }
}

fn record_cells(r: &RecordRow, note: &str) -> Vec<String> {
    vec![
        r.unit.to_string(),
        r.name.clone(),
        r.rtype.as_str().to_string(),
        r.value.clone(),
        r.provider.clone(),
        r.status.as_str().to_string(),
        note.to_string(),
    ]
}

fn record_json(r: &RecordRow, left_over: bool) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "type": r.rtype.as_str(),
        "value": r.value,
        "provider": r.provider,
        "zone": r.zone,
        "status": r.status.as_str(),
        "left_over": left_over,
    })
}

/// Left-aligned columns separated by two spaces.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![header.iter().map(|h| (*h).to_string()).collect::<Vec<_>>()];
    all.extend(rows);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| all.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in all {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn unit_json(u: &UnitRow) -> serde_json::Value {
    serde_json::json!({
        "kind": match u.unit.kind { crate::store::UnitKind::Order => "order", crate::store::UnitKind::Domain => "domain" },
        "id": u.unit.id,
        "domains": u.domains,
        "method": u.method,
        "state": u.state.as_str(),
        "token_expires_at": u.token_expires_at.and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339()),
        "attempts": u.attempts,
        "renewals": u.renewals,
        "in_config": u.in_config,
        "source": u.source.as_str(),
        "last_error": u.last_error,
        "held_by": u.owner,
        "lease_expires_at": u.lease_expires_at.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339()),
    })
}

/// Who holds `u`: its lease's owner, marked when the lease has expired (the instance is gone or
/// cut off; another takes the unit over within a second of claiming), `-` when nobody does.
fn held_by(u: &UnitRow, now_ms: i64) -> String {
    match (&u.owner, u.lease_expires_at) {
        (Some(owner), Some(until)) if until > now_ms => owner.clone(),
        (Some(owner), _) => format!("{owner} (expired)"),
        (None, _) => "-".into(),
    }
}

/// A plain-text table of units (used by `status` and the demo's summary).
pub fn status_table(units: &[UnitRow]) -> String {
    let mut rows = vec![[
        "UNIT".to_string(),
        "SOURCE".into(),
        "DOMAINS".into(),
        "METHOD".into(),
        "STATE".into(),
        "HELD BY".into(),
        "TOKEN EXPIRES".into(),
        "CHECKS".into(),
        "LAST ERROR".into(),
    ]];
    let now_ms = crate::store::now_millis();
    for u in units {
        rows.push([
            u.unit.to_string(),
            u.source.as_str().to_string(),
            u.domains.join(","),
            u.method.clone(),
            u.state.as_str().to_string(),
            held_by(u, now_ms),
            u.token_expires_at
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into()),
            u.attempts.to_string(),
            u.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..9).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn cleanup(path: &Path) -> ExitCode {
    // The DNS providers' credentials only: cleanup never calls CertCentral or a notification sink.
    let env = crate::config::Environment::process().provider_secrets_only();
    let cfg = match load(path, &env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(cfg.daemon.log_format);
    let store = match open_store(&cfg) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("dcvd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match engine::cleanup_all(cfg, store, Arc::new(Metrics::new())).await {
        Ok(report) if report.failures.is_empty() => {
            println!("removed {} records", report.removed);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            println!(
                "removed {} records; removal failed for {} group(s) of records (still listed; run `dcvd cleanup` \
                 again once fixed):",
                report.removed,
                report.failures.len()
            );
            for f in &report.failures {
                println!("  {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("dcvd: cleanup: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How often the metrics read token expiries and live records from the state store.
const STORE_VIEW_INTERVAL: Duration = Duration::from_secs(15);

/// How long `dcvd run` waits for in-flight steps on SIGTERM (documented bound).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
