//! Log output: text for terminals, JSON for collectors, journald under systemd (`auto` picks
//! journald when `JOURNAL_STREAM` is set). `RUST_LOG` overrides the default `info` filter.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::LogFormat;

/// `info`, without the per-query chatter of the DNS libraries (the demo serves DNS in-process).
// The cron library logs its own housekeeping ("Uninited", "Job creator created") at INFO.
const DEFAULT_FILTER: &str =
    "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn,hickory_resolver=warn,tokio_cron_scheduler=warn";

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Installs the global subscriber; a second call is a no-op (tests, demo).
pub fn init(format: LogFormat) {
    let journald = matches!(format, LogFormat::Auto) && std::env::var_os("JOURNAL_STREAM").is_some();
    if journald && let Ok(layer) = tracing_journald::layer() {
        let _ = tracing_subscriber::registry().with(layer.with_filter(filter())).try_init();
        return;
    }
    let json = matches!(format, LogFormat::Json);
    let ansi = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    if json {
        let _ = tracing_subscriber::registry()
            .with(base.json().flatten_event(true).with_current_span(true).with_span_list(false).with_filter(filter()))
            .try_init();
    } else {
        let _ = tracing_subscriber::registry().with(base.compact().with_filter(filter())).try_init();
    }
}
