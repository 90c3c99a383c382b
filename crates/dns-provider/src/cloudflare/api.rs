//! A small typed client for the parts of Cloudflare's v4 API that DCV needs: the
//! `{success, errors, messages, result, result_info}` envelope, Bearer auth, and retries of 429
//! (honouring `Retry-After`) and 5xx with bounded, jittered backoff. It knows nothing of DCV.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use retry::Verdict;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::rest::{retry_after, throttled};

/// One entry of `errors` / `messages`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ApiMessage {
    /// Cloudflare's numeric code.
    #[serde(default)]
    pub(crate) code: i64,
    /// Its text.
    #[serde(default)]
    pub(crate) message: String,
}

/// Pagination info of list answers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ResultInfo {
    #[serde(default)]
    pub(crate) page: u32,
    #[serde(default)]
    pub(crate) total_pages: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<T>,
    result_info: Option<ResultInfo>,
}

/// A zone as `GET /zones` returns it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ZoneInfo {
    pub(crate) id: String,
    pub(crate) name: String,
}

/// A DNS record as Cloudflare returns it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DnsRecord {
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) rtype: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) content: String,
}

/// Result of token verification.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TokenStatus {
    #[serde(default)]
    pub(crate) status: String,
}

/// What went wrong at the HTTP/API level; the adapter adds the DCV context.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A non-success answer with Cloudflare's errors.
    Api { status: StatusCode, errors: Vec<ApiMessage> },
    /// Still 429 after the retries (or `Retry-After` too long to wait).
    Throttled { retry_after: Option<Duration> },
    /// Network error, timeout or 5xx after the retries; or an unreadable answer.
    Transient(String),
}

impl ApiError {
    /// Prefixes a transient error's message with the request (`GET /zones: ...`).
    fn context(self, method: &Method, path: &str) -> Self {
        match self {
            Self::Transient(m) => Self::Transient(format!("{method} {path}: {m}")),
            other => other,
        }
    }

    /// Whether any error carries one of `codes`.
    pub(crate) fn has_code(&self, codes: &[i64]) -> bool {
        matches!(self, Self::Api { errors, .. } if errors.iter().any(|e| codes.contains(&e.code)))
    }

    /// `code message; code message` for error texts.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Api { status, errors } if errors.is_empty() => format!("HTTP {status}"),
            Self::Api { errors, .. } => {
                errors.iter().map(|e| format!("{} {}", e.code, e.message)).collect::<Vec<_>>().join("; ")
            }
            Self::Throttled { retry_after } => {
                format!("rate limited (Retry-After {retry_after:?})")
            }
            Self::Transient(m) => m.clone(),
        }
    }
}

/// The client. Its `Debug` never shows the token.
pub(crate) struct Api {
    http: reqwest::Client,
    base_url: String,
    token: SecretString,
    gate: Option<crate::SharedGate>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl Api {
    /// `loopback`: the API is a local test server, reached without any configured HTTP proxy.
    pub(crate) fn new(base_url: &str, token: SecretString, loopback: bool) -> Result<Self, String> {
        let http = crate::http_client(loopback)?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_string(), token, gate: None })
    }

    /// Awaits `gate` before every request attempt (the account's client-side rate limit).
    pub(crate) fn with_gate(mut self, gate: Option<crate::SharedGate>) -> Self {
        self.gate = gate;
        self
    }

    /// Sends one request, retrying 429/5xx/network failures; returns `result` and `result_info`.
    pub(crate) async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<(T, Option<ResultInfo>), ApiError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base_url), query)
            .map_err(|e| ApiError::Transient(format!("{method} {path}: bad URL: {e}")))?;
        let (this, url, method) = (self, &url, &method);
        crate::CLOUD_API_RETRY
            .run(
                move |_| async move {
                    let _pass = crate::admit(this.gate.as_ref()).await;
                    let mut req = this.http.request(method.clone(), url.clone()).bearer_auth(this.token.expose_secret());
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    // reqwest errors carry the URL (never the token); drop it to keep messages short
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| ApiError::Transient(format!("{method} {path}: {}", crate::error_chain(&e.without_url()))))?;
                    let status = resp.status();
                    let after = retry_after(resp.headers());
                    let bytes = resp.bytes().await.unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        return Err(ApiError::Throttled { retry_after: after });
                    }
                    if status.is_server_error() {
                        return Err(ApiError::Transient(format!("{method} {path}: HTTP {status}")));
                    }
                    // what is left is final (an unreadable success is not sent again: a create
                    // may have happened)
                    Ok(read_envelope(status, &bytes).map_err(|e| e.context(method, path)))
                },
                // only 429, 5xx and network failures come out as errors
                |failure| match failure {
                    ApiError::Throttled { retry_after } => throttled(*retry_after),
                    _ => Verdict::Retry,
                },
                |retry| {
                    let error = retry.error.describe();
                    warn!(%method, path, attempt = retry.attempt, delay_ms = retry.delay_ms(), error, "cloudflare request failed, retrying");
                },
            )
            .await?
    }
}

/// The `result` and `result_info` of an answer that is neither 429 nor 5xx, or its errors.
fn read_envelope<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<(T, Option<ResultInfo>), ApiError> {
    let env: Envelope<T> = match serde_json::from_slice(bytes) {
        Ok(env) => env,
        Err(e) if status.is_success() => return Err(ApiError::Transient(format!("unreadable answer: {e}"))),
        Err(_) => return Err(ApiError::Api { status, errors: Vec::new() }),
    };
    if !status.is_success() || !env.success {
        return Err(ApiError::Api { status, errors: env.errors });
    }
    let Some(result) = env.result else {
        return Err(ApiError::Transient("answer without result".to_string()));
    };
    Ok((result, env.result_info))
}
