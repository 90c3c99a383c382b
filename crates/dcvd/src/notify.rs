//! Notifications (`[notify]`): reports units that reached a terminal state (and account-wide
//! conditions) to an exec hook and/or a webhook, retried with exponential backoff.
//!
//! [`Notifier::send`] never blocks and never fails: events go into a bounded queue drained by one
//! task; when the queue is full the event is dropped, counted (`dcvd_notifications_dropped_total`)
//! and logged. A slow or dead receiver can therefore delay other notifications but never the
//! engine. This module must not decide anything about units: it only delivers what it is given.
//!
//! - Hook: `command` runs once per event with the event as JSON on stdin and `DCVD_EVENT`,
//!   `DCVD_UNIT_KIND`, `DCVD_UNIT_ID`, `DCVD_STATE`, `DCVD_DOMAINS` (comma-separated),
//!   `DCVD_MESSAGE`, `DCVD_CONDITION` in its environment, which otherwise holds only `PATH`,
//!   `LANG`, `TZ`, `CREDENTIALS_DIRECTORY` and `env_pass` (as for exec providers). Exit 0 is
//!   delivered; anything else, or outliving `timeout`, is retried.
//! - Webhook: `POST webhook_url` with the JSON body, `Content-Type: application/json` and, with a
//!   secret, `X-Dcvd-Signature-256: sha256=HEX(HMAC-SHA256(secret, body))`. A 2xx answer is
//!   delivered; 4xx other than 408/429 is given up at once (the receiver refuses it); the rest is
//!   retried.

use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Notify;
use crate::metrics::Metrics;

/// What happened, as the hook and the webhook receive it (JSON, `event` names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A unit reached a terminal state (`valid`, `cleaned_up`, `failed`, `expired`, `removed`).
    Unit {
        /// `order` or `domain`.
        unit_kind: String,
        /// The CertCentral order or domain id.
        unit_id: u64,
        /// The state reached.
        state: String,
        /// The unit's domains.
        domains: Vec<String>,
        /// Why (the last error of a failed unit), when there is something to say.
        message: Option<String>,
        /// When, RFC 3339.
        time: String,
    },
    /// An account-wide condition began or ended (a refused API key, CertCentral unreachable).
    Account {
        /// A stable name, e.g. `api_key_refused`.
        condition: String,
        /// What to do about it.
        message: String,
        /// When, RFC 3339.
        time: String,
    },
}

impl Event {
    /// A unit event stamped now.
    pub fn unit(unit_kind: &str, unit_id: u64, state: &str, domains: Vec<String>, message: Option<String>) -> Self {
        Self::Unit {
            unit_kind: unit_kind.to_owned(),
            unit_id,
            state: state.to_owned(),
            domains,
            message,
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// An account event stamped now.
    pub fn account(condition: &str, message: &str) -> Self {
        Self::Account {
            condition: condition.to_owned(),
            message: message.to_owned(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Unit { .. } => "unit",
            Self::Account { .. } => "account",
        }
    }

    /// The `DCVD_*` variables of the hook.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("DCVD_EVENT", self.name().to_owned())];
        match self {
            Self::Unit { unit_kind, unit_id, state, domains, message, .. } => {
                vars.push(("DCVD_UNIT_KIND", unit_kind.clone()));
                vars.push(("DCVD_UNIT_ID", unit_id.to_string()));
                vars.push(("DCVD_STATE", state.clone()));
                vars.push(("DCVD_DOMAINS", domains.join(",")));
                vars.push(("DCVD_MESSAGE", message.clone().unwrap_or_default()));
            }
            Self::Account { condition, message, .. } => {
                vars.push(("DCVD_CONDITION", condition.clone()));
                vars.push(("DCVD_MESSAGE", message.clone()));
            }
        }
        vars
    }
}

/// The sending half: cheap to clone, never blocks. A disabled notifier (no `[notify]`) drops
/// everything silently.
#[derive(Clone, Debug)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Event>>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// A notifier that sends nothing (no `[notify]` section).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// Starts the delivery task for `config` (runs until `stop` fires, then drops what is queued).
    pub fn start(
        config: Notify,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let delivery = Delivery::new(config, metrics.clone());
        let task = tokio::spawn(delivery.run(rx, stop));
        (Self { tx: Some(tx), metrics }, task)
    }

    /// Queues `event` for delivery; when the queue is full (or delivery stopped) the event is
    /// dropped, counted and logged instead of waiting.
    pub fn send(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(event) {
            let (reason, event) = match e {
                mpsc::error::TrySendError::Full(event) => ("the queue is full", event),
                mpsc::error::TrySendError::Closed(event) => ("delivery has stopped", event),
            };
            self.metrics.observe_notification_dropped();
            warn!(event = ?event, reason, "notification dropped");
        }
    }
}

/// The delivery task's settings and clients.
struct Delivery {
    config: Notify,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

/// How one attempt ended.
/// A delivery attempt that failed, for the retry policy.
struct Failed {
    attempt: u32,
    message: String,
    retryable: bool,
}

enum Attempt {
    Delivered,
    /// Try again later.
    Retry(String),
    /// The receiver refused the event: retrying cannot help.
    GiveUp(String),
}

impl Delivery {
    fn new(config: Notify, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().unwrap_or_else(|error| {
            warn!(%error, "cannot configure the webhook client; using the defaults");
            reqwest::Client::new()
        });
        Self { config, http, metrics }
    }

    async fn run(self, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
            };
            let body = match serde_json::to_vec(&event) {
                Ok(body) => body,
                Err(error) => {
                    warn!(%error, "cannot encode a notification");
                    continue;
                }
            };
            if self.config.command.is_some() {
                self.deliver("hook", &event, &body, &stop).await;
            }
            if self.config.webhook_url.is_some() {
                self.deliver("webhook", &event, &body, &stop).await;
            }
        }
    }

    /// Delivers to one sink with the workspace's retry policy (jittered exponential backoff
    /// between `backoff_min` and `backoff_max`); stops waiting on `stop`.
    async fn deliver(&self, sink: &'static str, event: &Event, body: &[u8], stop: &CancellationToken) {
        let policy =
            retry::RetryPolicy::new(self.config.max_attempts, self.config.backoff_min, self.config.backoff_max);
        let attempts = policy.run(
            |attempt| async move {
                let result = match sink {
                    "hook" => self.run_hook(event, body).await,
                    _ => self.post(body).await,
                };
                match result {
                    Attempt::Delivered => Ok(attempt),
                    Attempt::Retry(message) => Err(Failed { attempt, message, retryable: true }),
                    Attempt::GiveUp(message) => Err(Failed { attempt, message, retryable: false }),
                }
            },
            |failed: &Failed| if failed.retryable { retry::Verdict::Retry } else { retry::Verdict::Stop },
            |r| {
                debug!(sink, attempt = r.attempt, error = %r.error.message, retry_in_ms = r.delay_ms(),
                    "notification not delivered; retrying");
            },
        );
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = attempts => result,
        };
        match result {
            Ok(attempt) => {
                debug!(sink, attempt, "notification delivered");
                self.metrics.observe_notification(sink, "delivered");
            }
            Err(Failed { attempt, message, retryable: false }) => {
                warn!(sink, attempt, error = %message, event = ?event, "notification refused; not retried");
                self.metrics.observe_notification(sink, "failed");
            }
            Err(Failed { attempt, message, retryable: true }) => {
                warn!(sink, attempts = attempt, error = %message, event = ?event, "notification not delivered; giving up");
                self.metrics.observe_notification(sink, "failed");
            }
        }
    }

    async fn run_hook(&self, event: &Event, body: &[u8]) -> Attempt {
        let Some((program, args)) = self.config.command.as_deref().and_then(<[String]>::split_first) else {
            return Attempt::GiveUp("no command".into());
        };
        let mut cmd = tokio::process::Command::new(program);
        // The same minimal environment as exec providers: dcvd's secrets stay out.
        cmd.env_clear();
        for name in dns_provider::exec::BASE_ENV.iter().copied().chain(self.config.env_pass.iter().map(String::as_str))
        {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.args(args)
            .envs(event.env())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => return Attempt::Retry(format!("cannot run {program:?}: {e}")),
        };
        let stdin = child.stdin.take();
        let run = async move {
            if let Some(mut stdin) = stdin {
                // A hook that does not read stdin is fine: ignore a broken pipe.
                let _ = stdin.write_all(body).await;
            }
            child.wait_with_output().await
        };
        match tokio::time::timeout(self.config.timeout, run).await {
            Ok(Ok(out)) if out.status.success() => Attempt::Delivered,
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: String = stderr.trim().lines().last().unwrap_or_default().chars().take(500).collect();
                Attempt::Retry(format!("{program} exited with {}: {tail}", out.status))
            }
            Ok(Err(e)) => Attempt::Retry(format!("{program}: {e}")),
            Err(_) => {
                Attempt::Retry(format!("{program} did not finish within {:?} and was killed", self.config.timeout))
            }
        }
    }

    async fn post(&self, body: &[u8]) -> Attempt {
        let Some(url) = &self.config.webhook_url else { return Attempt::GiveUp("no webhook_url".into()) };
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, concat!("dcvd/", env!("CARGO_PKG_VERSION")))
            .body(body.to_vec());
        if let Some(secret) = &self.config.webhook_secret {
            request = request.header("X-Dcvd-Signature-256", signature(secret, body));
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                let message = format!("{url} answered {status}");
                if status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                {
                    Attempt::GiveUp(message)
                } else {
                    Attempt::Retry(message)
                }
            }
            // Without the URL: it may carry a token in its query.
            Err(e) => {
                Attempt::Retry(format!("POST to the webhook failed: {}", dns_provider::error_chain(&e.without_url())))
            }
        }
    }
}

/// `sha256=HEX` of HMAC-SHA256 over `body` with `secret`.
pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256_hex() {
        let secret = SecretString::from("Jefe");
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The JSON shape the receivers see.
    #[test]
    fn events_serialize_with_their_kind() {
        let event = Event::Unit {
            unit_kind: "order".into(),
            unit_id: 7,
            state: "failed".into(),
            domains: vec!["example.com".into()],
            message: Some("boom".into()),
            time: "2026-11-25T17:00:00Z".into(),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"unit","unit_kind":"order","unit_id":7,"state":"failed","domains":["example.com"],"message":"boom","time":"2026-11-25T17:00:00Z"}"#
        );
        let account = Event::Account { condition: "api_key_refused".into(), message: "m".into(), time: "t".into() };
        assert_eq!(
            serde_json::to_string(&account).unwrap(),
            r#"{"event":"account","condition":"api_key_refused","message":"m","time":"t"}"#
        );
    }
}
