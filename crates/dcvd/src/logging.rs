//! Log output: text for terminals, JSON for collectors, journald under systemd (`auto` picks
//! journald when `JOURNAL_STREAM` is set). `RUST_LOG` overrides the default `info` filter.
//!
//! Text lines are `key=value` pairs that a program can split: [`TextFields`] quotes every value
//! that holds whitespace, a quote or an `=` (and every string, as tracing's own formatter does),
//! and writes errors with their causes. It must not decide what is logged: only how.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
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

static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process's instance (`[store] instance`) for every unit's log lines; the first call
/// wins (one process, one instance).
pub fn set_instance(id: &str) {
    let _ = INSTANCE.set(id.to_owned());
}

/// This process's instance id, `""` before [`set_instance`].
pub fn instance() -> &'static str {
    INSTANCE.get().map_or("", String::as_str)
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
        let _ =
            tracing_subscriber::registry().with(base.compact().fmt_fields(TextFields).with_filter(filter())).try_init();
    }
}

/// The text format's fields: `message key=value ...`, values quoted when they would not read
/// back as one token.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor { writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl TextVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str, always_quote: bool) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{value}")
        } else if always_quote || needs_quotes(value) {
            write!(self.writer, "{separator}{}={value:?}", field.name())
        } else {
            write!(self.writer, "{separator}{}={value}", field.name())
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, &dns_provider::error_chain(value), false);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.write(field, &text, false);
    }
}

/// Whether `value` would not read back as one `key=value` token.
fn needs_quotes(value: &str) -> bool {
    value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_target(false)
                .with_ansi(false)
                .without_time()
                .compact()
                .fmt_fields(TextFields),
        );
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    /// Values with spaces, quotes or `=` are quoted (so `key=value` splits), bare tokens and
    /// numbers are not, strings always are, span fields follow the same rule, and an error
    /// recorded as such keeps its causes.
    #[test]
    fn values_that_would_not_split_are_quoted() {
        let log = capture(|| {
            let span = tracing::info_span!("unit", unit_kind = "order", unit_id = 7);
            let _entered = span.enter();
            let msg = "certcentral: invalid_dns_txt: Could not find it (HTTP 400)".to_string();
            let err = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
            tracing::warn!(error = %msg, attempt = 2, record = %"_dnsauth.example.com", state = "checking", "step failed");
            tracing::error!(error = &err as &(dyn std::error::Error + 'static), "cannot reach");
            tracing::info!(empty = %"", said = %"a \"b\" c=d", "odd values");
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(
            lines[0].ends_with(
                "unit: step failed error=\"certcentral: invalid_dns_txt: Could not find it (HTTP 400)\" attempt=2 \
                 record=_dnsauth.example.com state=\"checking\" unit_kind=\"order\" unit_id=7"
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(
                "cannot reach error=\"error sending request: connection refused\" unit_kind=\"order\" unit_id=7"
            ),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains(r#"empty="" said="a \"b\" c=d""#), "{}", lines[2]);
    }
}
