//! `[notify]` delivery against a local HTTP receiver (axum) and a real hook script: the JSON
//! body, the HMAC signature, retries with backoff, giving up on a refusal, and a full queue that
//! drops (and counts) events instead of blocking the sender.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use dcvd::config::{Config, Environment, Notify};
use dcvd::metrics::Metrics;
use dcvd::notify::{Event, Notifier};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A request the receiver got: the signature header and the body.
type Received = (Option<String>, Vec<u8>);

/// An HTTP receiver on 127.0.0.1 answering the statuses of `script` in turn (then 200), reporting
/// each request on the returned channel. A status of 0 makes it hang (never answer).
async fn receiver(script: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (tx, script) = (tx.clone(), script.clone());
            async move {
                let signature = headers.get("x-dcvd-signature-256").map(|v| v.to_str().unwrap().to_owned());
                let _ = tx.send((signature, body.to_vec()));
                let status = script.lock().unwrap().next().unwrap_or(200);
                if status == 0 {
                    std::future::pending::<()>().await;
                }
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (format!("http://{addr}/hook"), rx)
}

fn settings(webhook_url: Option<String>, command: Option<Vec<String>>) -> Notify {
    Notify {
        command,
        env_pass: Vec::new(),
        webhook_url,
        webhook_secret: Some(SecretString::from("notify-s3cret")),
        timeout: Duration::from_secs(20),
        max_attempts: 4,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        queue: 8,
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the receiver got no request within 30 s")
        .expect("receiver stopped")
}

fn metric(metrics: &Metrics, line_prefix: &str) -> Option<String> {
    metrics.encode().lines().find(|l| l.starts_with(line_prefix)).map(str::to_owned)
}

/// Waits (bounded) until the metrics show `line`.
async fn wait_for_metric(metrics: &Metrics, line: &str) {
    for _ in 0..600 {
        if metrics.encode().lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metric line {line:?} never appeared:\n{}", metrics.encode());
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A webhook answering 503 twice gets the event a third time; every attempt carries the same
/// JSON body and a valid HMAC-SHA256 signature; delivery is counted.
#[tokio::test]
async fn webhook_is_retried_and_signed() {
    let (url, mut rx) = receiver(vec![503, 503]).await;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let (notifier, _task) = Notifier::start(settings(Some(url), None), metrics.clone(), stop.clone());
    notifier.send(Event::unit("order", 42, "failed", vec!["example.com".into()], Some("token expired".into())));

    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (signature, body) = next(&mut rx).await;
        let want = format!("sha256={}", hmac_hex(b"notify-s3cret", &body));
        assert_eq!(signature.as_deref(), Some(want.as_str()), "signature of {}", String::from_utf8_lossy(&body));
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every attempt sends the same body");
    let json: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(json["event"], "unit");
    assert_eq!(json["unit_kind"], "order");
    assert_eq!(json["unit_id"], 42);
    assert_eq!(json["state"], "failed");
    assert_eq!(json["domains"], serde_json::json!(["example.com"]));
    assert_eq!(json["message"], "token expired");
    assert!(json["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{json}");
    wait_for_metric(&metrics, "dcvd_notifications_total{sink=\"webhook\",result=\"delivered\"} 1").await;
    stop.cancel();
}

/// A receiver that refuses the event (400) is not asked again; the failure is counted, and the
/// next event is still delivered.
#[tokio::test]
async fn a_refused_webhook_is_not_retried() {
    let (url, mut rx) = receiver(vec![400]).await;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let (notifier, _task) = Notifier::start(settings(Some(url), None), metrics.clone(), stop.clone());
    notifier.send(Event::unit("domain", 7, "expired", vec![], None));
    notifier.send(Event::account("api_key_refused", "replace the API key"));
    let (_, first) = next(&mut rx).await;
    let (_, second) = next(&mut rx).await;
    assert!(String::from_utf8_lossy(&first).contains("\"unit_id\":7"));
    let second: serde_json::Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(second["event"], "account", "the refused event was not sent again: {second}");
    assert_eq!(second["condition"], "api_key_refused");
    wait_for_metric(&metrics, "dcvd_notifications_total{sink=\"webhook\",result=\"failed\"} 1").await;
    wait_for_metric(&metrics, "dcvd_notifications_total{sink=\"webhook\",result=\"delivered\"} 1").await;
    stop.cancel();
}

/// While the receiver hangs on the first event, `send` keeps returning at once: the queue fills
/// and every further event is dropped and counted.
#[tokio::test]
async fn a_full_queue_drops_instead_of_blocking() {
    let (url, mut rx) = receiver(vec![0]).await;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let mut config = settings(Some(url), None);
    config.queue = 2;
    let (notifier, _task) = Notifier::start(config, metrics.clone(), stop.clone());
    notifier.send(Event::unit("order", 1, "valid", vec![], None));
    next(&mut rx).await; // delivery is now stuck on event 1
    for id in 2..=6 {
        notifier.send(Event::unit("order", id, "valid", vec![], None));
    }
    // Two fit in the queue; three are dropped.
    assert_eq!(
        metric(&metrics, "dcvd_notifications_dropped_total").as_deref(),
        Some("dcvd_notifications_dropped_total 3")
    );
    stop.cancel();
}

/// The hook gets the event as JSON on stdin and `DCVD_*` variables, in the minimal environment;
/// a failing run is retried.
#[tokio::test]
async fn hook_gets_the_event_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hook = dir.path().join("notify.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nout='{out}'\nif [ ! -e \"$out.tried\" ]; then touch \"$out.tried\"; echo 'not yet' >&2; exit 1; fi\n\
             cat > \"$out.json\"\nenv | grep -E '^(DCVD_|HOME=)' | sort > \"$out.env\"\n",
            out = out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let (notifier, _task) =
        Notifier::start(settings(None, Some(vec![hook.display().to_string()])), metrics.clone(), stop.clone());
    notifier.send(Event::unit("order", 9, "failed", vec!["a.example".into(), "b.example".into()], Some("why".into())));
    wait_for_metric(&metrics, "dcvd_notifications_total{sink=\"hook\",result=\"delivered\"} 1").await;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    assert_eq!(json["unit_id"], 9);
    assert_eq!(json["domains"], serde_json::json!(["a.example", "b.example"]));
    let env = std::fs::read_to_string(out.with_extension("env")).unwrap();
    assert_eq!(
        env.lines().collect::<Vec<_>>(),
        [
            "DCVD_DOMAINS=a.example,b.example",
            "DCVD_EVENT=unit",
            "DCVD_MESSAGE=why",
            "DCVD_STATE=failed",
            "DCVD_UNIT_ID=9",
            "DCVD_UNIT_KIND=order",
        ],
        "no HOME or other variable of the test's environment reaches the hook"
    );
    stop.cancel();
}

/// `[notify]` parses with its defaults; it needs a sink, and a secret needs the webhook.
#[test]
fn notify_section_parses() {
    let env = Environment::isolated().with_var("KEY", "k").with_var("HMAC", "h-s3cret");
    let base = "[certcentral]\napi_key_env = \"KEY\"\n";
    let config = Config::from_toml_with(
        &format!("{base}[notify]\nwebhook_url = \"https://hooks.example.com/dcvd\"\nwebhook_secret_env = \"HMAC\"\n"),
        std::path::Path::new("dcvd.toml"),
        &env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let notify = config.notify.expect("[notify] parsed");
    assert_eq!(notify.webhook_url.as_deref(), Some("https://hooks.example.com/dcvd"));
    assert!(notify.webhook_secret.is_some() && notify.command.is_none());
    assert_eq!((notify.timeout, notify.max_attempts, notify.queue), (Duration::from_secs(10), 5, 256));
    assert!(!format!("{notify:?}").contains("h-s3cret"), "Debug shows the secret");

    let err = |text: &str| {
        Config::from_toml_with(&format!("{base}{text}"), std::path::Path::new("dcvd.toml"), &env)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("[notify]\ntimeout = \"5s\"\n"),
        "dcvd.toml:3:1: [notify] needs `command` (a hook) or `webhook_url` (or both)"
    );
    assert_eq!(
        err("[notify]\ncommand = [\"/bin/true\"]\nwebhook_secret_env = \"HMAC\"\n"),
        "dcvd.toml:5:22: [notify] a webhook secret without `webhook_url`: set the URL or drop the secret"
    );
    assert!(
        err("[notify]\ncommand = [\"/bin/true\"]\nenv_pass = [\"KEY\"]\n")
            .starts_with("dcvd.toml:5:13: [notify] `env_pass` lists KEY, which holds one of dcvd's secrets"),
    );
    assert_eq!(
        err("[notify]\ncommand = []\n"),
        "dcvd.toml:4:11: [notify] `command` must list the program and its arguments, such as [\"/usr/local/libexec/dcvd-notify\"]"
    );
}
