//! The API key never reaches logs, errors or Debug output: every tracing event (TRACE level,
//! all targets, hyper and reqwest included) of failing and retried calls is captured and
//! searched for the key. Also checks the structured fields of the retry WARN and call DEBUG.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use certcentral::{Client, Error};
use common::{KEY, api, config, json};
use tracing_subscriber::fmt::MakeWriter;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A `MakeWriter` appending everything to one shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// Failing, retried and successful calls (including a server that echoes the key back in its
/// error body) produce no log line, error message or Debug output containing the key.
#[tokio::test]
async fn api_key_never_logged_or_shown() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    // 503 then 429 then a 400 that echoes the key (a misbehaving proxy could do that).
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/5/check-dcv")))
        .respond_with(json(503, r#"{"errors":[{"code":"server_error","message":"Try later."}]}"#))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/5/check-dcv")))
        .respond_with(json(429, r#"{"errors":[{"code":"request_limit_exceeded","message":"Slow down."}]}"#))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let echo = format!(r#"{{"errors":[{{"code":"invalid_api_key","message":"key {KEY} is not valid"}}]}}"#);
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/5/check-dcv")))
        .respond_with(json(403, &echo))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate/6")))
        .respond_with(ResponseTemplate::new(502).set_body_string(format!("<html>bad gateway {KEY}</html>")))
        .mount(&server)
        .await;

    let mut config = config(&server);
    config.retry.max_attempts = 4;
    let client = Client::new(config.clone()).unwrap();

    let auth = client.check_dcv(5).await.unwrap_err();
    assert!(auth.is_auth(), "{auth:?}");
    let gateway = client.order_info(6).await.unwrap_err();
    assert!(matches!(gateway, Error::Http { status: 502, .. }), "{gateway:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 3 + 4);

    let mut shown = capture.text();
    for err in [&auth, &gateway] {
        shown.push_str(&format!("\n{err}\n{err:?}\n{err:#?}"));
    }
    shown.push_str(&format!("\n{client:?}\n{config:?}"));
    assert!(!shown.contains(KEY), "the API key leaked:\n{shown}");
    assert!(auth.to_string().contains("[redacted]"), "{auth}");

    let logs = capture.text();
    // The retry warnings carry the structured fields an operator needs.
    let warns: Vec<&str> = logs.lines().filter(|l| l.contains("WARN") && l.contains("retrying")).collect();
    assert_eq!(warns.len(), 2 + 3, "{logs}");
    assert!(warns[0].contains("endpoint=\"check_dcv\"") || warns[0].contains("endpoint=check_dcv"), "{}", warns[0]);
    assert!(warns[0].contains("status=503") && warns[0].contains("code=\"server_error\""), "{}", warns[0]);
    assert!(warns[0].contains("attempt=1") && warns[0].contains("delay_ms="), "{}", warns[0]);
    assert!(warns[1].contains("status=429") && warns[1].contains("attempt=2"), "{}", warns[1]);
    // One DEBUG line per attempt, with status and elapsed time.
    let calls = logs.lines().filter(|l| l.contains("DEBUG") && l.contains("certcentral call")).count();
    assert_eq!(calls, 7, "{logs}");
    assert!(logs.contains("elapsed_ms="));
}

/// `Retry-After` shows up as the retry's `delay_ms` (1 s here, although the backoff would be a
/// few milliseconds).
#[tokio::test]
async fn retry_after_appears_in_warning() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            json(429, r#"{"errors":[{"code":"request_limit_exceeded","message":"x"}]}"#)
                .insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(json(200, r#"{"token":"abc","expiration_date":"2030-01-01T00:00:00Z"}"#))
        .mount(&server)
        .await;
    let client = Client::new(config(&server)).unwrap();
    assert_eq!(client.generate_domain_token(3).await.unwrap().token, "abc");
    let logs = capture.text();
    assert!(logs.contains("delay_ms=1000"), "{logs}");
    assert!(logs.contains("endpoint=\"generate_domain_token\"") || logs.contains("endpoint=generate_domain_token"));
}
