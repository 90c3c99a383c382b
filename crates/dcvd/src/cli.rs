//! The command line (clap): `run`, `once`, `check-config`, `status`, `cleanup`, `demo`.
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
use crate::store::{Store, UnitRow};

/// Exit code of a configuration error (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

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
    Once(ConfigArg),
    /// Validate the configuration, order files and secrets; exit 0 or 78.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        /// Also run each provider's preflight and one authenticated CertCentral call.
        #[arg(long)]
        online: bool,
    },
    /// Show every unit: id, domains, method, state, token expiry, attempts, last error.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this state directory instead of loading the configuration (which needs the
        /// secrets).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Remove every record dcvd still has published.
    Cleanup(ConfigArg),
    /// A self-contained run on an embedded default: CertCentral simulator, DNS server and the
    /// in-memory provider, all in this process.
    Demo {
        /// Print the configuration the demo uses, then exit.
        #[arg(long)]
        config: bool,
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
        Command::Run(c) => run(&c.config, Mode::Daemon).await,
        Command::Once(c) => run(&c.config, Mode::Once).await,
        Command::CheckConfig { config, online } => check_config(&config.config, online).await,
        Command::Status { config, json, state_dir } => status(&config.config, json, state_dir),
        Command::Cleanup(c) => cleanup(&c.config).await,
        Command::Demo { config } => crate::demo::main(config).await,
    }
}

/// Whether a command writes the state directory (and so checks it as the running user).
#[derive(Clone, Copy, PartialEq, Eq)]
enum StateAccess {
    Write,
    Read,
}

/// Loads and validates the configuration, printing its warnings; configuration errors (the
/// state directory included, for commands that write it) exit 78.
fn load(path: &Path, access: StateAccess) -> Result<Config, ExitCode> {
    let loaded = Config::load(path).and_then(|mut cfg| {
        if access == StateAccess::Write {
            cfg.check_state_dir()?;
        }
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
    let cfg = match load(path, StateAccess::Write) {
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

async fn run(path: &Path, mode: Mode) -> ExitCode {
    let cfg = match load(path, StateAccess::Write) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(cfg.daemon.log_format);
    log_banner(path, &cfg);
    let store = match Store::open(&cfg.daemon.state_dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            error!(error = %e, "cannot open the state store");
            eprintln!("dcvd: {e}");
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
    let result = engine::run(cfg, store, metrics, mode, rx, Arc::new(Systemd), std::future::pending()).await;
    stop_metrics.cancel();
    match result {
        Ok(summary) => {
            info!(units = summary.units.len(), all_valid = summary.all_valid(), "stopped");
            if mode == Mode::Once && !summary.all_valid() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Err(e) if e.downcast_ref::<engine::SetupError>().is_some() => {
            error!(error = %format!("{e:#}"), "configuration cannot be used");
            eprintln!("dcvd: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "dcvd stopped on an error");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration again for a reload, on a blocking thread (file reads and host-name
/// resolution must not stall a tokio worker); an invalid one is logged with its position.
pub async fn reload_config(path: &Path) -> Option<Config> {
    let owned = path.to_owned();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| load_for_reload(&owned))).await {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "reading the new configuration failed; keeping the running one");
            None
        }
    }
}

fn load_for_reload(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                warn!("{w}");
            }
            Some(cfg)
        }
        Err(e) => {
            error!(error = %e, "new configuration is invalid; keeping the running one");
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
                    info!(config = %path.display(), "SIGHUP: reloading configuration");
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                    if let Some(cfg) = reload_config(&path).await {
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

fn status(path: &Path, json: bool, state_dir: Option<PathBuf>) -> ExitCode {
    let state_dir = match state_dir {
        Some(dir) => dir,
        None => match load(path, StateAccess::Read) {
            Ok(c) => c.daemon.state_dir,
            Err(code) => return code,
        },
    };
    let store = match Store::open_read_only(&state_dir) {
        Ok(s) => s,
        Err(crate::store::StoreError::Missing { .. }) => {
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
    let units = match store.units() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("dcvd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        let rows: Vec<serde_json::Value> = units.iter().map(unit_json).collect();
        format!("{}\n", serde_json::to_string_pretty(&rows).unwrap_or_default())
    } else {
        status_table(&units)
    };
    // A closed pipe (`dcvd status | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    ExitCode::SUCCESS
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
    })
}

/// A plain-text table of units (used by `status` and the demo's summary).
pub fn status_table(units: &[UnitRow]) -> String {
    let mut rows = vec![[
        "UNIT".to_string(),
        "SOURCE".into(),
        "DOMAINS".into(),
        "METHOD".into(),
        "STATE".into(),
        "TOKEN EXPIRES".into(),
        "CHECKS".into(),
        "LAST ERROR".into(),
    ]];
    for u in units {
        rows.push([
            u.unit.to_string(),
            u.source.as_str().to_string(),
            u.domains.join(","),
            u.method.clone(),
            u.state.as_str().to_string(),
            u.token_expires_at
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into()),
            u.attempts.to_string(),
            u.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn cleanup(path: &Path) -> ExitCode {
    let cfg = match load(path, StateAccess::Write) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(cfg.daemon.log_format);
    let store = match Store::open(&cfg.daemon.state_dir) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("dcvd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match engine::cleanup_all(cfg, store, Arc::new(Metrics::new())).await {
        Ok(n) => {
            println!("removed {n} records");
            ExitCode::SUCCESS
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
