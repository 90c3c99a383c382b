//! The CertCentral client.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use retry::RetryPolicy;
use retry::{Verdict, parse_retry_after};

use crate::Error;
use crate::limiter::{Lane, RateLimiter, SharedWindows};
use crate::types::{
    ApiErrorBody, CheckDcvResponse, DcvMethod, DcvRandomValue, DcvToken, DomainInfo, OrderInfo, OrderValidation,
    SubmitValidationRequest, SubmitValidationResponse, ValidateTokenResponse,
};

/// How much of an unexpected body an error keeps.
const EXCERPT_CHARS: usize = 200;

/// One client-side rate-limit window: at most `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateWindow {
    /// Requests allowed in any window of length `per`.
    pub requests: u32,
    /// The window length.
    pub per: Duration,
}

impl RateWindow {
    /// `requests` per `per`.
    pub const fn new(requests: u32, per: Duration) -> Self {
        Self { requests, per }
    }

    /// DigiCert's documented limits per API key: 100 per 5 s and 1000 per 5 minutes (a newer
    /// page says per 3 minutes; 1000 per 5 minutes is the stricter, so it holds under both).
    pub fn defaults() -> Vec<Self> {
        vec![Self::new(100, Duration::from_secs(5)), Self::new(1000, Duration::from_secs(300))]
    }
}

/// Settings of a [`Client`].
#[derive(Clone)]
pub struct ClientConfig {
    /// API root, without trailing slash; default [`ClientConfig::US_BASE_URL`].
    pub base_url: String,
    /// The CertCentral API key (sent as `X-DC-DEVKEY`).
    pub api_key: SecretString,
    /// Timeout of one HTTP request, body included (default 30 s).
    pub timeout: Duration,
    /// Client-side rate-limit windows, all enforced at once (default [`RateWindow::defaults`]).
    pub rate_limits: Vec<RateWindow>,
    /// A ledger sharing the windows with every other process using the API key (default none:
    /// this process alone uses the key). See [`SharedWindows`].
    pub shared_windows: Option<Arc<dyn SharedWindows>>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Allow a plain `http://` base URL; only accepted for loopback hosts (127.0.0.0/8, ::1,
    /// localhost), for simulators in tests.
    pub allow_insecure_http: bool,
}

impl ClientConfig {
    /// The US instance (default).
    pub const US_BASE_URL: &'static str = "https://www.digicert.com/services/v2";
    /// The EU instance.
    pub const EU_BASE_URL: &'static str = "https://certcentral.digicert.eu/services/v2";

    /// A configuration with the defaults for everything but the URL and the key.
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            timeout: Duration::from_secs(30),
            rate_limits: RateWindow::defaults(),
            shared_windows: None,
            retry: RetryPolicy::default(),
            allow_insecure_http: false,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("rate_limits", &self.rate_limits)
            .field("shared_windows", &self.shared_windows)
            .field("retry", &self.retry)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

/// Which endpoint a call went to (label for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `PUT /order/certificate/{id}/dcv-random-value`.
    DcvRandomValue,
    /// `PUT /order/certificate/{id}/check-dcv`.
    CheckDcv,
    /// `GET /order/certificate/{id}`.
    OrderInfo,
    /// `GET /order/certificate/{id}/validation`.
    OrderValidation,
    /// `PUT /order/certificate/{id}/dcv-method`.
    ChangeDcvMethod,
    /// `POST /domain/{id}/validation`.
    SubmitValidation,
    /// `POST /domain/{id}/dcv/token`.
    GenerateDomainToken,
    /// `PUT /domain/{id}/dcv/validate-token`.
    ValidateDomainToken,
    /// `GET /domain/{id}?include_dcv=true&include_validation=true`.
    DomainInfo,
    /// `GET /order/certificate` (List orders, one page).
    ListOrders,
    /// `GET /domain` (List domains, one page).
    ListDomains,
}

impl Endpoint {
    /// The limiter lane: DCV checks (the unit's records already propagated) go first.
    pub fn lane(self) -> Lane {
        match self {
            Self::CheckDcv | Self::ValidateDomainToken => Lane::Check,
            _ => Lane::Token,
        }
    }

    /// Every endpoint (to pre-register metric labels).
    pub const ALL: [Self; 11] = [
        Self::DcvRandomValue,
        Self::CheckDcv,
        Self::OrderInfo,
        Self::OrderValidation,
        Self::ChangeDcvMethod,
        Self::SubmitValidation,
        Self::GenerateDomainToken,
        Self::ValidateDomainToken,
        Self::DomainInfo,
        Self::ListOrders,
        Self::ListDomains,
    ];

    /// A stable snake_case label (`check_dcv`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DcvRandomValue => "dcv_random_value",
            Self::CheckDcv => "check_dcv",
            Self::OrderInfo => "order_info",
            Self::OrderValidation => "order_validation",
            Self::ChangeDcvMethod => "change_dcv_method",
            Self::SubmitValidation => "submit_validation",
            Self::GenerateDomainToken => "generate_domain_token",
            Self::ValidateDomainToken => "validate_domain_token",
            Self::DomainInfo => "domain_info",
            Self::ListOrders => "list_orders",
            Self::ListDomains => "list_domains",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HTTP attempt, as reported to the observer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// HTTP status, `None` when no answer came (timeout, connection error).
    pub status: Option<u16>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Time from sending the request to reading the whole answer.
    pub elapsed: Duration,
    /// Time this attempt waited for the client-side rate limiter.
    pub rate_limit_wait: Duration,
}

/// Callback receiving a [`CallRecord`] after every HTTP attempt.
pub type Observer = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// Asked right before each request is sent (after the rate limiter admitted it): `Err(reason)`
/// withholds the request ([`Error::Withheld`]).
pub type SendGuard = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

struct Inner {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    timeout: Duration,
    retry: RetryPolicy,
    limiter: RateLimiter,
}

/// A CertCentral Services API v2 client for the DCV endpoints.
///
/// Cheap to clone: clones share the HTTP connection pool and the rate limiter (so every task of
/// the process stays under the configured windows together).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    observer: Option<Observer>,
    send_guard: Option<SendGuard>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &"[redacted]")
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .field("rate_limits", &self.inner.limiter.windows())
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Checks the base URL; returns it without trailing slash.
fn validate_base_url(raw: &str, allow_insecure_http: bool) -> Result<String, Error> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| Error::Config {
        message: format!("base_url {trimmed:?} is not a valid URL ({e}); expected e.g. {}", ClientConfig::US_BASE_URL),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::Config {
            message: "base_url must not carry credentials; the API key goes in api_key".to_string(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::Config { message: format!("base_url {trimmed:?} must not have a query or fragment") });
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                host.parse::<IpAddr>().map_or_else(|_| host.eq_ignore_ascii_case("localhost"), |ip| ip.is_loopback());
            if !allow_insecure_http {
                return Err(Error::Config {
                    message: format!(
                        "base_url {trimmed:?} uses plain http, which would send the API key in clear; use \
                         https (plain http is only for local simulators: set allow_insecure_http and use a \
                         loopback host)"
                    ),
                });
            }
            if !loopback {
                return Err(Error::Config {
                    message: format!(
                        "base_url {trimmed:?}: plain http is allowed only to loopback hosts (127.0.0.0/8, \
                         ::1, localhost); use https"
                    ),
                });
            }
        }
        other => {
            return Err(Error::Config { message: format!("base_url {trimmed:?} has scheme {other:?}; use https") });
        }
    }
    Ok(trimmed.to_string())
}

/// The start of a body, whitespace collapsed.
fn excerpt(body: &str) -> String {
    let collapsed = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > EXCERPT_CHARS {
        let mut cut: String = collapsed.chars().take(EXCERPT_CHARS).collect();
        cut.push('…');
        cut
    } else {
        collapsed
    }
}

/// A failed attempt: the error and the server's `Retry-After`, if any.
struct Failure {
    error: Error,
    retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, retry_after: None }
    }
}

impl Client {
    /// Builds a client: validates the configuration and prepares the HTTP pool and limiter.
    ///
    /// Fails with [`Error::Config`] for a bad base URL (not https, or plain http without
    /// `allow_insecure_http` or to a non-loopback host), an empty or malformed API key, a zero
    /// timeout, zero attempts or an invalid rate window.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let base_url = validate_base_url(&config.base_url, config.allow_insecure_http)?;
        let key = config.api_key.expose_secret().trim();
        if key.is_empty() {
            return Err(Error::Config {
                message: "api_key is empty; create an API key in CertCentral (Automation > API keys)".to_string(),
            });
        }
        let mut key_header = HeaderValue::from_str(key).map_err(|_| Error::Config {
            message: "api_key holds characters not allowed in an HTTP header (control characters?); check \
                      the key file"
                .to_string(),
        })?;
        key_header.set_sensitive(true);
        if config.timeout.is_zero() {
            return Err(Error::Config { message: "timeout must be greater than zero".to_string() });
        }
        if config.retry.max_attempts == 0 {
            return Err(Error::Config {
                message: "retry.max_attempts must be at least 1 (1 = no retries)".to_string(),
            });
        }
        let limiter = match config.shared_windows {
            Some(ledger) => RateLimiter::with_shared_windows(&config.rate_limits, ledger)?,
            None => RateLimiter::new(&config.rate_limits)?,
        };

        let mut headers = HeaderMap::new();
        headers.insert("X-DC-DEVKEY", key_header);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("dcvd/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Config { message: format!("cannot build the HTTP client: {e}") })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                api_key: SecretString::from(key.to_string()),
                timeout: config.timeout,
                retry: config.retry,
                limiter,
            }),
            observer: None,
            send_guard: None,
        })
    }

    /// The API root this client talks to.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The rate limiter shared by this client and its clones.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// Installs a callback run after every HTTP attempt (for metrics: calls per endpoint and
    /// status, rate-limit waits). Applies to this client and clones made from it afterwards.
    pub fn set_observer(&mut self, f: Arc<dyn Fn(&CallRecord) + Send + Sync>) {
        self.observer = Some(f);
    }

    /// Installs a guard asked right before every request goes out, after the rate limiter's
    /// wait: a process that may have lost the right to act (a lease that lapsed while it was
    /// paused) must not send what it queued before. Applies to this client and clones made from
    /// it afterwards.
    pub fn set_send_guard(&mut self, guard: SendGuard) {
        self.send_guard = Some(guard);
    }

    // ---- DV (order level) ----

    /// `PUT /order/certificate/{id}/dcv-random-value`: the order's random value (the current one
    /// while valid, a new one once expired).
    pub async fn dcv_random_value(&self, order_id: u64) -> Result<DcvRandomValue, Error> {
        let path = format!("/order/certificate/{order_id}/dcv-random-value");
        self.json(Endpoint::DcvRandomValue, Method::PUT, order_id, &path, None).await
    }

    /// `PUT /order/certificate/{id}/check-dcv`: asks DigiCert to check the order's DCV now.
    /// "Not seen yet" comes back as an error with [`Error::is_not_found_yet`].
    pub async fn check_dcv(&self, order_id: u64) -> Result<CheckDcvResponse, Error> {
        let path = format!("/order/certificate/{order_id}/check-dcv");
        self.json(Endpoint::CheckDcv, Method::PUT, order_id, &path, None).await
    }

    /// `GET /order/certificate/{id}`: order status, DCV method and names.
    pub async fn order_info(&self, order_id: u64) -> Result<OrderInfo, Error> {
        let path = format!("/order/certificate/{order_id}");
        self.json(Endpoint::OrderInfo, Method::GET, order_id, &path, None).await
    }

    /// `GET /order/certificate/{id}/validation`: per-name DCV status.
    pub async fn order_validation(&self, order_id: u64) -> Result<OrderValidation, Error> {
        let path = format!("/order/certificate/{order_id}/validation");
        self.json(Endpoint::OrderValidation, Method::GET, order_id, &path, None).await
    }

    /// `PUT /order/certificate/{id}/dcv-method` with `{"dcv_method": ...}`.
    pub async fn change_order_dcv_method(&self, order_id: u64, method: &DcvMethod) -> Result<(), Error> {
        let path = format!("/order/certificate/{order_id}/dcv-method");
        let body = serde_json::json!({ "dcv_method": method.as_str() });
        self.execute(Endpoint::ChangeDcvMethod, Method::PUT, order_id, &path, Some(body)).await?;
        Ok(())
    }

    // ---- OV/EV (domain level) ----

    /// `POST /domain/{id}/validation`: submits the domain for validation types; an empty answer
    /// (204) gives the default (empty) response.
    pub async fn submit_domain_validation(
        &self,
        domain_id: u64,
        req: &SubmitValidationRequest,
    ) -> Result<SubmitValidationResponse, Error> {
        let endpoint = Endpoint::SubmitValidation;
        let path = format!("/domain/{domain_id}/validation");
        let body = serde_json::to_value(req).map_err(|e| Error::Decode {
            endpoint: endpoint.as_str(),
            message: format!("cannot encode the request: {e}"),
        })?;
        let text = self.execute(endpoint, Method::POST, domain_id, &path, Some(body)).await?;
        if text.trim().is_empty() {
            return Ok(SubmitValidationResponse::default());
        }
        self.decode(endpoint, &text)
    }

    /// `POST /domain/{id}/dcv/token`: a new domain token (invalidates the previous one).
    ///
    /// Like every call it is retried after 429/5xx/timeouts; should an earlier attempt have
    /// generated a token after all, the one returned is still the newest, hence the valid one.
    pub async fn generate_domain_token(&self, domain_id: u64) -> Result<DcvToken, Error> {
        let path = format!("/domain/{domain_id}/dcv/token");
        self.json(Endpoint::GenerateDomainToken, Method::POST, domain_id, &path, None).await
    }

    /// `PUT /domain/{id}/dcv/validate-token`: asks DigiCert to check the domain's DCV now.
    pub async fn validate_domain_token(&self, domain_id: u64) -> Result<ValidateTokenResponse, Error> {
        let path = format!("/domain/{domain_id}/dcv/validate-token");
        self.json(Endpoint::ValidateDomainToken, Method::PUT, domain_id, &path, None).await
    }

    /// `GET /domain/{id}?include_dcv=true&include_validation=true`.
    pub async fn domain_info(&self, domain_id: u64) -> Result<DomainInfo, Error> {
        let path = format!("/domain/{domain_id}?include_dcv=true&include_validation=true");
        self.json(Endpoint::DomainInfo, Method::GET, domain_id, &path, None).await
    }

    // ---- plumbing ----

    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        id: u64,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, Error> {
        let text = self.execute(endpoint, method, id, path, body).await?;
        self.decode(endpoint, &text)
    }

    fn decode<T: DeserializeOwned>(&self, endpoint: Endpoint, text: &str) -> Result<T, Error> {
        if text.trim().is_empty() {
            return Err(Error::Decode {
                endpoint: endpoint.as_str(),
                message: "empty body where JSON was expected".to_string(),
            });
        }
        serde_json::from_str(text)
            .map_err(|e| Error::Decode { endpoint: endpoint.as_str(), message: self.redact(&e.to_string()) })
    }

    /// Replaces the API key, should a server echo it, so it cannot reach an error or a log.
    fn redact(&self, text: &str) -> String {
        let key = self.inner.api_key.expose_secret();
        if key.is_empty() { text.to_string() } else { text.replace(key, "[redacted]") }
    }

    /// Sends the request with rate limiting and retries; returns the body of a 2xx answer.
    async fn execute(
        &self,
        endpoint: Endpoint,
        method: Method,
        id: u64,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String, Error> {
        let url = format!("{}{path}", self.inner.base_url);
        let body = body.map(|b| b.to_string());
        let policy = self.inner.retry;
        let (this, url, body, method) = (self, url.as_str(), body.as_deref(), &method);
        let result = policy
            .run(
                move |attempt| async move {
                    // Held until the answer is read: the request counts in the windows until then.
                    let permit = this.inner.limiter.admit(endpoint.lane()).await;
                    let rate_limit_wait = permit.waited();
                    if let Some(guard) = &this.send_guard
                        && let Err(reason) = guard()
                    {
                        return Err(Failure {
                            error: Error::Withheld { endpoint: endpoint.as_str(), reason },
                            retry_after: None,
                        });
                    }
                    let started = Instant::now();
                    // Boxed: the exchange's state exists once the limiter admitted the call, not
                    // in every caller waiting for its turn (thousands of units at once).
                    let result = Box::pin(this.attempt(endpoint, method.clone(), url, body)).await;
                    drop(permit);
                    let elapsed = started.elapsed();
                    let status = match &result {
                        Ok((status, _)) => Some(*status),
                        Err(failure) => failure.error.status(),
                    };
                    debug!(
                        endpoint = endpoint.as_str(),
                        id,
                        status,
                        attempt,
                        elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                        rate_limit_wait_ms = u64::try_from(rate_limit_wait.as_millis()).unwrap_or(u64::MAX),
                        "certcentral call"
                    );
                    if let Some(observer) = &this.observer {
                        observer(&CallRecord { endpoint, status, attempt, elapsed, rate_limit_wait });
                    }
                    result.map(|(_, text)| text)
                },
                |failure| {
                    if failure.error.is_retryable() { Verdict::retry_after(failure.retry_after) } else { Verdict::Stop }
                },
                |retry| {
                    warn!(
                        endpoint = endpoint.as_str(),
                        id,
                        status = retry.error.error.status(),
                        code = retry.error.error.code(),
                        attempt = retry.attempt,
                        max_attempts = retry.max_attempts,
                        delay_ms = retry.delay_ms(),
                        error = %retry.error.error,
                        "certcentral call failed, retrying"
                    );
                },
            )
            .await;
        result.map_err(|failure| failure.error)
    }

    /// One HTTP exchange, classified.
    async fn attempt(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), Failure> {
        let mut request = self.inner.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.body(body.to_string());
        } else if method != Method::GET {
            // hyper sends no length for an empty body; proxies may answer 411 to a PUT/POST
            // without one (DigiCert's examples send none, so this is only for the path there).
            request = request.header(CONTENT_LENGTH, "0").body("");
        }
        let response = request.send().await.map_err(|e| self.transport_error(endpoint, e))?;
        let status = response.status().as_u16();
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let text = response.text().await.map_err(|e| self.transport_error(endpoint, e))?;

        if (200..300).contains(&status) {
            // A success answer that is not JSON at all comes from something in between
            // (captive proxy, maintenance page): treat it like an HTTP failure, it may pass.
            if !text.trim().is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_err() {
                return Err(Failure {
                    error: Error::Http { status, body_excerpt: self.redact(&excerpt(&text)) },
                    retry_after,
                });
            }
            return Ok((status, text));
        }
        let error = match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) if !body.errors.is_empty() => {
                let entries = body
                    .errors
                    .into_iter()
                    .map(|mut e| {
                        e.message = self.redact(&e.message);
                        e
                    })
                    .collect();
                Error::api(status, entries)
            }
            _ => Error::Http { status, body_excerpt: self.redact(&excerpt(&text)) },
        };
        Err(Failure { error, retry_after })
    }

    fn transport_error(&self, endpoint: Endpoint, e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            return Error::Timeout { endpoint: endpoint.as_str() }.into();
        }
        let e = e.without_url();
        let mut message = e.to_string();
        // reqwest's own message is generic ("error sending request"); the causes say what
        // happened (connection refused, reset, certificate).
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Error::Connect { message: self.redact(&message) }.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_short_and_flat() {
        let body = format!("<html>\n  <body>{}</body>\n</html>", "x".repeat(500));
        let cut = excerpt(&body);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(!cut.contains('\n') && cut.ends_with('…'));
        assert_eq!(excerpt("  a \r\n b "), "a b");
    }
}
