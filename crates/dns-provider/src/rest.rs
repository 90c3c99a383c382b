//! A small HTTP client for the JSON APIs of the PowerDNS and acme-dns adapters: it sends one
//! request, retries throttling (429, honouring `Retry-After`), 5xx and network failures with the
//! workspace's retry policy ([`RetryPolicy`], the `retry` crate), and hands every other answer back to
//! the adapter, which knows what a 401 or a 422 means for its API. It never logs headers (they
//! carry API keys) and knows nothing about DNS records.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tracing::warn;

use retry::Verdict;

use crate::RetryPolicy;

/// The longest `Retry-After` slept inside an adapter; a longer one is returned to the caller
/// (the engine reschedules the unit rather than parking a task).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// An answer that was not retried away: any status but 429 and 5xx.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as text, shortened for error messages.
    pub(crate) fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.len() > 300 {
            let mut end = 300;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &text[..end])
        } else {
            text.to_string()
        }
    }
}

/// What is left after the retries.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Still 429 after the retries, or a `Retry-After` too long to sleep.
    Throttled { retry_after: Option<Duration>, message: String },
    /// Network error, timeout or 5xx after the retries.
    Transient(String),
}

/// The client. Holds no secret: callers add their auth headers per request.
#[derive(Debug)]
pub(crate) struct Rest {
    http: reqwest::Client,
    provider: &'static str,
    retry: RetryPolicy,
    /// Awaited before every attempt (the account's client-side rate limit).
    gate: Option<crate::SharedGate>,
}

/// Whether `url` may be used: https anywhere, plain http only to a loopback host. Returns
/// whether the host is loopback (then no HTTP proxy is used).
pub(crate) fn check_url(key: &str, url: &str) -> Result<bool, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{key} {url:?} is not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(loopback),
        "http" if loopback => Ok(true),
        "http" => Err(format!(
            "{key} {url:?} uses plain http to {host}, which would send the credentials unencrypted: use https:// (a TLS reverse proxy in front of the API), or http:// only to a loopback address"
        )),
        other => Err(format!("{key} {url:?} has scheme {other:?}: use https://")),
    }
}

impl Rest {
    /// `loopback`: the API is on this host, reached without any configured HTTP proxy.
    pub(crate) fn new(
        provider: &'static str,
        loopback: bool,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder();
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder
            .user_agent(concat!("dcvd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { http, provider, retry, gate: None })
    }

    /// Awaits `gate` before every request attempt.
    pub(crate) fn with_gate(mut self, gate: Option<crate::SharedGate>) -> Self {
        self.gate = gate;
        self
    }

    /// Sends the request `build` makes (called again for each attempt) until it gets an answer
    /// that is neither 429 nor 5xx, or the retries run out. `what` names the call in logs.
    pub(crate) async fn send<F>(&self, method: Method, url: &str, what: &str, build: F) -> Result<Answer, Failure>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let (http, build, method, gate) = (&self.http, &build, &method, &self.gate);
        self.retry
            .run(
                move |_| async move {
                    let _pass = crate::admit(gate.as_ref()).await;
                    let request = build(http.request(method.clone(), url));
                    let resp = match request.send().await {
                        // reqwest errors name the URL (never headers); keep messages short
                        Err(e) => {
                            return Err(Failure::Transient(format!(
                                "{what}: {}",
                                crate::error_chain(&e.without_url())
                            )));
                        }
                        Ok(resp) => resp,
                    };
                    let status = resp.status();
                    let after = retry_after(resp.headers());
                    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        let message = format!("{what}: HTTP 429 (Retry-After {after:?})");
                        Err(Failure::Throttled { retry_after: after, message })
                    } else if status.is_server_error() {
                        let answer = Answer { status, body };
                        Err(Failure::Transient(format!("{what}: HTTP {status}: {}", answer.text())))
                    } else {
                        Ok(Answer { status, body })
                    }
                },
                |failure| match failure {
                    Failure::Throttled { retry_after, .. } => throttled(*retry_after),
                    Failure::Transient(_) => Verdict::Retry,
                },
                |retry| {
                    let error = match retry.error {
                        Failure::Throttled { message, .. } | Failure::Transient(message) => message.as_str(),
                    };
                    warn!(
                        provider = self.provider,
                        attempt = retry.attempt,
                        delay_ms = retry.delay_ms(),
                        error,
                        "provider request failed, retrying"
                    );
                },
            )
            .await
    }
}

/// What a 429 answer asks for: wait for its `Retry-After` (or the backoff), or give up when the
/// server wants longer than [`MAX_RETRY_AFTER`].
pub(crate) fn throttled(retry_after: Option<Duration>) -> Verdict {
    match retry_after {
        Some(after) if after > MAX_RETRY_AFTER => Verdict::Stop,
        after => Verdict::retry_after(after),
    }
}

/// The server's `Retry-After`, when it sent a readable one.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry::parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback() {
        assert_eq!(check_url("api_url", "https://pdns.example.net"), Ok(false));
        assert_eq!(check_url("api_url", "http://127.0.0.1:8081"), Ok(true));
        assert_eq!(check_url("api_url", "http://[::1]:8081"), Ok(true));
        assert_eq!(check_url("api_url", "http://localhost:8081"), Ok(true));
        let err = check_url("api_url", "http://pdns.example.net:8081").expect_err("plain http to a remote host");
        assert!(err.contains("unencrypted"), "{err}");
        assert!(check_url("api_url", "ftp://127.0.0.1").is_err());
        assert!(check_url("api_url", "not a url").is_err());
    }
}
