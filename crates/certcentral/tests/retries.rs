//! Retries: what is retried (429, 5xx, HTML pages, timeouts, refused connections), how often,
//! `Retry-After`, and what is not retried.

mod common;

use std::time::{Duration, Instant};

use certcentral::{Client, Error, RetryPolicy};
use common::{api, client, config, json, observed_client};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The simulator's 429 body (shared fixture).
const RATE_LIMITED: &str = include_str!("../../test-support/fixtures/digicert/error.429-request-limit-exceeded.json");
/// DigiCert's documented DV check-dcv success.
const CHECK_OK: &str = include_str!("../../test-support/fixtures/digicert/dv-check-dcv.200.json");
const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad \
                        Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

async fn first_then(server: &MockServer, first: ResponseTemplate, then: ResponseTemplate) {
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/1/check-dcv")))
        .respond_with(first)
        .up_to_n_times(1)
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/1/check-dcv")))
        .respond_with(then)
        .expect(1)
        .mount(server)
        .await;
}

async fn received(server: &MockServer) -> usize {
    server.received_requests().await.expect("recording is on").len()
}

/// A 429 `request_limit_exceeded` is retried and the second attempt succeeds; the observer sees
/// both attempts with their statuses.
#[tokio::test]
async fn rate_limited_then_success() {
    let server = MockServer::start().await;
    first_then(&server, json(429, RATE_LIMITED), json(200, CHECK_OK)).await;
    let (client, records) = observed_client(config(&server));
    assert!(client.check_dcv(1).await.unwrap().is_valid());
    let records = records.lock().unwrap();
    let seen: Vec<_> = records.iter().map(|r| (r.endpoint.as_str(), r.status, r.attempt)).collect();
    assert_eq!(seen, vec![("check_dcv", Some(429), 1), ("check_dcv", Some(200), 2)]);
}

/// A 503 with DigiCert's error body is retried.
#[tokio::test]
async fn server_error_then_success() {
    let server = MockServer::start().await;
    let body = r#"{"errors":[{"code":"server_error","message":"Service unavailable."}]}"#;
    first_then(&server, json(503, body), json(200, CHECK_OK)).await;
    assert!(client(&server).check_dcv(1).await.unwrap().is_valid());
    assert_eq!(received(&server).await, 2);
}

/// An HTML 502 page from a proxy is retried, and the call succeeds afterwards.
#[tokio::test]
async fn html_bad_gateway_then_success() {
    let server = MockServer::start().await;
    first_then(&server, ResponseTemplate::new(502).set_body_raw(HTML_502, "text/html"), json(200, CHECK_OK)).await;
    assert!(client(&server).check_dcv(1).await.unwrap().is_valid());
}

/// When every attempt fails, exactly `max_attempts` requests are made and the last error is
/// returned (an HTML page becomes `Error::Http` with a short excerpt).
#[tokio::test]
async fn retries_exhausted_html_page() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(502).set_body_raw(HTML_502, "text/html"))
        .expect(3)
        .mount(&server)
        .await;
    let err = client(&server).check_dcv(1).await.unwrap_err();
    assert_eq!(received(&server).await, 3);
    let Error::Http { status, body_excerpt } = &err else { panic!("expected Error::Http, got {err:?}") };
    assert_eq!(*status, 502);
    assert!(body_excerpt.contains("502 Bad Gateway"), "{body_excerpt}");
    assert!(!body_excerpt.contains('\n'));
    assert!(err.is_retryable());
    assert!(err.to_string().starts_with("certcentral: unexpected HTTP 502"));
}

/// Retries stop at `max_attempts` for DigiCert 500s too (5 attempts configured, 5 requests).
#[tokio::test]
async fn retries_exhausted_counts_attempts() {
    let server = MockServer::start().await;
    let body = r#"{"errors":[{"code":"internal_error","message":"Internal error."}]}"#;
    Mock::given(method("GET")).respond_with(json(500, body)).expect(5).mount(&server).await;
    let mut config = config(&server);
    config.retry.max_attempts = 5;
    let (client, records) = observed_client(config);
    let err = client.order_info(2).await.unwrap_err();
    assert_eq!(err.code(), Some("internal_error"));
    assert_eq!(err.status(), Some(500));
    assert_eq!(received(&server).await, 5);
    let attempts: Vec<u32> = records.lock().unwrap().iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3, 4, 5]);
}

/// `max_attempts = 1` means no retry at all.
#[tokio::test]
async fn single_attempt_policy_does_not_retry() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(json(429, RATE_LIMITED)).expect(1).mount(&server).await;
    let mut config = config(&server);
    config.retry.max_attempts = 1;
    let err = Client::new(config).unwrap().check_dcv(1).await.unwrap_err();
    assert!(err.is_rate_limited() && err.is_retryable());
}

/// Permanent errors (400 "not found yet") are returned at once: one request only.
#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    let body = r#"{"errors":[{"code":"invalid_dns_txt","message":"Could not find a valid TXT record for one or more domains."}]}"#;
    Mock::given(method("PUT")).respond_with(json(400, body)).expect(1).mount(&server).await;
    let err = client(&server).check_dcv(1).await.unwrap_err();
    assert!(err.is_not_found_yet());
    assert_eq!(received(&server).await, 1);
}

/// A server slower than the timeout gives `Error::Timeout` (retryable), after every attempt.
#[tokio::test]
async fn slow_server_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(json(200, CHECK_OK).set_delay(Duration::from_secs(3)))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.timeout = Duration::from_millis(200);
    config.retry.max_attempts = 2;
    let (client, records) = observed_client(config);
    let err = client.check_dcv(1).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { endpoint: "check_dcv" }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.status(), None);
    assert_eq!(received(&server).await, 2);
    assert!(records.lock().unwrap().iter().all(|r| r.status.is_none()));
}

/// `Retry-After: 1` is honoured: the retry comes at least one second later, although the
/// backoff alone would retry after a few milliseconds.
#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let server = MockServer::start().await;
    first_then(&server, json(429, RATE_LIMITED).insert_header("Retry-After", "1"), json(200, CHECK_OK)).await;
    let started = Instant::now();
    assert!(client(&server).check_dcv(1).await.unwrap().is_valid());
    assert!(started.elapsed() >= Duration::from_secs(1), "retried after {:?}", started.elapsed());
}

/// A refused connection is a retryable `Error::Connect`, retried `max_attempts` times.
#[tokio::test]
async fn refused_connection_is_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().unwrap().port()
    };
    let mut config = certcentral::ClientConfig::new(
        format!("http://127.0.0.1:{port}/services/v2"),
        certcentral::SecretString::from(common::KEY),
    );
    config.allow_insecure_http = true;
    config.retry =
        RetryPolicy { max_attempts: 2, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
    let (client, records) = observed_client(config);
    let err = client.order_validation(1).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(records.lock().unwrap().len(), 2);
    assert!(err.to_string().starts_with("certcentral: cannot reach the API"), "{err}");
}

/// A 200 that is not JSON (a proxy's page) is retried like an HTTP failure.
#[tokio::test]
async fn success_status_with_html_body_is_retried() {
    let server = MockServer::start().await;
    first_then(
        &server,
        ResponseTemplate::new(200).set_body_raw("<html>maintenance</html>", "text/html"),
        json(200, CHECK_OK),
    )
    .await;
    assert!(client(&server).check_dcv(1).await.unwrap().is_valid());
}

/// Backoff stays within `[d/2, d]` with `d` doubling up to `max_delay`.
#[test]
fn backoff_bounds() {
    let policy =
        RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
    for _ in 0..200 {
        let first = policy.backoff(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
        let third = policy.backoff(3);
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400), "{third:?}");
        let capped = policy.backoff(30);
        assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_secs(1), "{capped:?}");
    }
}

/// A send guard that refuses withholds the request (nothing reaches the server, no retry); once
/// it allows, requests go out again.
#[tokio::test]
async fn a_refusing_send_guard_withholds_the_request() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/1/check-dcv")))
        .respond_with(json(200, CHECK_OK))
        .mount(&server)
        .await;
    let allowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut guarded = client(&server);
    let flag = allowed.clone();
    guarded.set_send_guard(std::sync::Arc::new(move || {
        if flag.load(std::sync::atomic::Ordering::SeqCst) { Ok(()) } else { Err("the lease lapsed".into()) }
    }));
    match guarded.check_dcv(1).await {
        Err(e @ Error::Withheld { .. }) => {
            assert!(!e.is_retryable());
            assert_eq!(e.to_string(), "certcentral: check_dcv not sent: the lease lapsed");
        }
        other => panic!("expected Withheld, got {other:?}"),
    }
    assert_eq!(received(&server).await, 0, "a withheld request reached the server");
    allowed.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(guarded.check_dcv(1).await.unwrap().is_valid());
    assert_eq!(received(&server).await, 1);
}
