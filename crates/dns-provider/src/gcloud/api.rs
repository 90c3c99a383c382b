//! A small typed client for the parts of Cloud DNS API v1 that DCV needs: managed zones by DNS
//! name, resource record sets (listed with `pageToken`), `changes.create` and `changes.get`.
//! Bearer tokens come from [`Authenticator`]; 429 (honouring `Retry-After`), 5xx and network
//! failures are retried with bounded, jittered backoff; one 401 renews the token once. Google's
//! error body `{"error": {"code", "message", "errors": [{"reason"}], "status"}}` is kept typed so
//! the adapter can tell a lost race (412 `conditionNotMet`, 409 `alreadyExists`, 404 `notFound`
//! of a deletion) from a real refusal. It knows nothing of DCV.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use retry::Verdict;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::auth::Authenticator;
use crate::ProviderError;
use crate::rest::{retry_after, throttled};

/// Google's default API root for Cloud DNS v1.
pub const DEFAULT_API_URL: &str = "https://dns.googleapis.com/dns/v1";

/// A resource record set as Cloud DNS writes it (`name` absolute with a trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceRecordSet {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) rtype: String,
    #[serde(default)]
    pub(crate) ttl: i64,
    #[serde(default)]
    pub(crate) rrdatas: Vec<String>,
    /// DNSSEC signatures of the set, when the zone is signed: sent back unchanged in deletions.
    #[serde(default, rename = "signatureRrdatas", skip_serializing_if = "Vec::is_empty")]
    pub(crate) signature_rrdatas: Vec<String>,
}

/// `changes.create` body and answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Change {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) additions: Vec<ResourceRecordSet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) deletions: Vec<ResourceRecordSet>,
    #[serde(default, skip_serializing)]
    pub(crate) id: String,
    /// `pending` or `done`.
    #[serde(default, skip_serializing)]
    pub(crate) status: String,
}

/// A managed zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManagedZone {
    pub(crate) name: String,
    pub(crate) dns_name: String,
    /// `public` or `private`.
    #[serde(default)]
    pub(crate) visibility: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManagedZonesList {
    #[serde(default)]
    pub(crate) managed_zones: Vec<ManagedZone>,
    pub(crate) next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RrsetsList {
    #[serde(default)]
    pub(crate) rrsets: Vec<ResourceRecordSet>,
    pub(crate) next_page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error: Option<GoogleError>,
}

#[derive(Debug, Default, Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// What went wrong at the HTTP/API level; the adapter adds the DCV context.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A non-success answer with Google's error.
    Api {
        status: StatusCode,
        /// `errors[0].reason` (`conditionNotMet`, `alreadyExists`, `forbidden`, ...).
        reason: String,
        /// `error.status` (`PERMISSION_DENIED`, ...).
        google_status: String,
        message: String,
    },
    /// Still 429 after the retries (or `Retry-After` too long to wait).
    Throttled { retry_after: Option<Duration>, message: String },
    /// Network error, timeout or 5xx after the retries; or an unreadable answer.
    Transient(String),
    /// No access token (the error already says why).
    Token(ProviderError),
}

impl ApiError {
    /// The `reason` of an API error, or "".
    pub(crate) fn reason(&self) -> &str {
        match self {
            Self::Api { reason, .. } => reason,
            _ => "",
        }
    }

    /// The HTTP status of an API error.
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `HTTP 412 conditionNotMet: message` for error texts.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Api { status, reason, google_status, message } => {
                let code = if reason.is_empty() { google_status } else { reason };
                format!("HTTP {} {code}: {message}", status.as_u16())
            }
            Self::Throttled { retry_after, message } => {
                format!("rate limited (Retry-After {retry_after:?}): {message}")
            }
            Self::Transient(m) => m.clone(),
            Self::Token(e) => e.to_string(),
        }
    }
}

/// The client. Its `Debug` never shows a token.
#[derive(Debug)]
pub(crate) struct Api {
    http: reqwest::Client,
    base_url: String,
    project: String,
    auth: Arc<Authenticator>,
    gate: Option<crate::SharedGate>,
}

impl Api {
    /// `loopback`: the API is a local test server, reached without any configured HTTP proxy.
    pub(crate) fn new(base_url: &str, project: &str, auth: Arc<Authenticator>, loopback: bool) -> Result<Self, String> {
        let http = crate::http_client(loopback)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            project: project.to_string(),
            auth,
            gate: None,
        })
    }

    /// Awaits `gate` before every request attempt (the account's client-side rate limit).
    pub(crate) fn with_gate(mut self, gate: Option<crate::SharedGate>) -> Self {
        self.gate = gate;
        self
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// `GET managedZones?dnsName=`, every page.
    pub(crate) async fn managed_zones_by_dns_name(&self, dns_name: &str) -> Result<Vec<ManagedZone>, ApiError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("dnsName", dns_name.to_string())];
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let page: ManagedZonesList = self.request(Method::GET, "/managedZones", &query, None).await?;
            out.extend(page.managed_zones);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// `GET managedZones/{zone}/rrsets`, filtered by `name` (and `type`) or the whole zone, every page.
    pub(crate) async fn rrsets(
        &self,
        managed_zone: &str,
        name: Option<&str>,
        rtype: Option<&str>,
    ) -> Result<Vec<ResourceRecordSet>, ApiError> {
        let path = format!("/managedZones/{managed_zone}/rrsets");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(n) = name {
                query.push(("name", n.to_string()));
            }
            if let Some(t) = rtype {
                query.push(("type", t.to_string()));
            }
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let page: RrsetsList = self.request(Method::GET, &path, &query, None).await?;
            out.extend(page.rrsets);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// `POST managedZones/{zone}/changes`.
    pub(crate) async fn create_change(&self, managed_zone: &str, change: &Change) -> Result<Change, ApiError> {
        let body = serde_json::to_value(change).map_err(|e| ApiError::Transient(format!("encoding a change: {e}")))?;
        self.request(Method::POST, &format!("/managedZones/{managed_zone}/changes"), &[], Some(&body)).await
    }

    /// `GET managedZones/{zone}/changes/{id}`.
    pub(crate) async fn get_change(&self, managed_zone: &str, id: &str) -> Result<Change, ApiError> {
        self.request(Method::GET, &format!("/managedZones/{managed_zone}/changes/{id}"), &[], None).await
    }

    /// Sends one request under `projects/{project}`, retrying 429/5xx/network failures.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let full = format!("/projects/{}{path}", self.project);
        let url = reqwest::Url::parse_with_params(&format!("{}{full}", self.base_url), query)
            .map_err(|e| ApiError::Transient(format!("{method} {full}: bad URL: {e}")))?;
        let renewed = std::sync::atomic::AtomicBool::new(false);
        let (this, url, method, full, renewed) = (self, &url, &method, &full, &renewed);
        crate::CLOUD_API_RETRY
            .run(
                move |_| async move {
                  loop {
                    // what is not 429, 5xx or a network failure is final: Ok(Err(..))
                    let token = match this.auth.token().await {
                        Ok(token) => token,
                        Err(e) => return Ok(Err(ApiError::Token(e))),
                    };
                    let _pass = crate::admit(this.gate.as_ref()).await;
                    let mut req = this.http.request(method.clone(), url.clone()).bearer_auth(token.expose_secret());
                    if let Some(b) = body {
                        req = req.json(b);
                    }
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| ApiError::Transient(format!("{method} {full}: {}", crate::error_chain(&e.without_url()))))?;
                    let status = resp.status();
                    let after = retry_after(resp.headers());
                    let bytes = resp.bytes().await.unwrap_or_default();
                    if status.is_success() {
                        // an unreadable success is not sent again: the change may have happened
                        return Ok(serde_json::from_slice(&bytes)
                            .map_err(|e| ApiError::Transient(format!("{method} {full}: unreadable answer: {e}"))));
                    }
                    let error =
                        serde_json::from_slice::<ErrorBody>(&bytes).ok().and_then(|b| b.error).unwrap_or_default();
                    let reason = error.errors.first().map(|e| e.reason.clone()).unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        return Err(ApiError::Throttled { retry_after: after, message: error.message });
                    }
                    if status.is_server_error() {
                        let message =
                            if error.message.is_empty() { String::new() } else { format!(": {}", error.message) };
                        return Err(ApiError::Transient(format!("{method} {full}: HTTP {status}{message}")));
                    }
                    if status == StatusCode::UNAUTHORIZED && !renewed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        // the token may have been revoked or expired early: renew it once (not
                        // counted as an attempt)
                        this.auth.invalidate().await;
                        continue;
                    }
                    return Ok(Err(ApiError::Api { status, reason, google_status: error.status, message: error.message }));
                  }
                },
                |failure| match failure {
                    ApiError::Throttled { retry_after, .. } => throttled(*retry_after),
                    _ => Verdict::Retry,
                },
                |retry| {
                    let error = retry.error.describe();
                    warn!(%method, path = %full, attempt = retry.attempt, delay_ms = retry.delay_ms(), error, "gcloud request failed, retrying");
                },
            )
            .await?
    }
}
