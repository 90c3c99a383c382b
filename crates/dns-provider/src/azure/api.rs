//! A small typed client for the Azure DNS record-set API of Azure Resource Manager
//! (`api-version=2018-05-01`): get, list by type, PUT with `If-Match`/`If-None-Match`, DELETE
//! with `If-Match`, Bearer tokens from [`TokenSource`], and retries of 429 (honouring
//! `Retry-After`), 5xx and network failures with bounded, jittered backoff. It knows nothing of
//! DCV: merging values is the adapter's job.
//!
//! Errors come in two shapes: ARM's envelope `{"error": {"code", "message"}}` (authentication,
//! authorization, throttling, missing resource groups or zones) and the DNS resource provider's
//! bare `{"code", "message"}` (`Conflict`, `PreconditionFailed`, `NotFound` of a record set);
//! both are read.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode};
use retry::Verdict;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::auth::TokenSource;
use crate::rest::{retry_after, throttled};

/// The API version of every record-set call.
pub(crate) const API_VERSION: &str = "2018-05-01";

/// What went wrong at the HTTP/API level; the adapter adds the DCV context.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A non-success answer from ARM or the DNS resource provider.
    Api { status: StatusCode, code: String, message: String },
    /// Still 429 after the retries (or `Retry-After` too long to wait).
    Throttled { retry_after: Option<Duration> },
    /// Network error, timeout or 5xx after the retries; or an unreadable answer.
    Transient(String),
    /// No token could be had (the identity provider refused, or the credential is unusable).
    Credential { message: String },
}

impl ApiError {
    /// `HTTP 409 Conflict: The CNAME record could not be created ...`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Api { status, code, message } if code.is_empty() && message.is_empty() => format!("HTTP {status}"),
            Self::Api { status, code, message } => format!("HTTP {} {code}: {message}", status.as_u16()),
            Self::Throttled { retry_after } => format!("rate limited (Retry-After {retry_after:?})"),
            Self::Transient(m) | Self::Credential { message: m, .. } => m.clone(),
        }
    }

    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code,
            _ => "",
        }
    }
}

/// The HTTP client with the retry loop, shared by ARM calls and token requests.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    /// Without any proxy: for IMDS, a link-local endpoint that proxies cannot reach.
    direct: reqwest::Client,
    /// Awaited before every attempt (token requests included: they are rare, tokens are cached).
    gate: Option<crate::SharedGate>,
}

impl Http {
    /// `loopback`: every endpoint is a local test server, reached without any configured proxy.
    pub(crate) fn new(loopback: bool) -> Result<Self, String> {
        Ok(Self { client: crate::http_client(loopback)?, direct: crate::http_client(true)?, gate: None })
    }

    /// Awaits `gate` before every request attempt (the account's client-side rate limit).
    pub(crate) fn with_gate(mut self, gate: Option<crate::SharedGate>) -> Self {
        self.gate = gate;
        self
    }

    pub(crate) fn post_form(&self, url: &str, body: String) -> RequestBuilder {
        self.client.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body)
    }

    /// A GET to IMDS, which refuses requests without `Metadata: true` (an SSRF guard).
    pub(crate) fn get_metadata(&self, url: reqwest::Url) -> RequestBuilder {
        self.direct.get(url).header("Metadata", "true")
    }

    /// Sends `build()`, retrying 429/5xx/network failures; returns any other answer as is.
    pub(crate) async fn send(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        let (build, gate) = (&build, &self.gate);
        crate::CLOUD_API_RETRY
            .run(
                move |_| async move {
                    let _pass = crate::admit(gate.as_ref()).await;
                    // reqwest errors carry the URL (never a secret); drop it to keep messages short
                    let resp = build().send().await.map_err(|e| {
                        ApiError::Transient(format!("{what}: {}", crate::error_chain(&e.without_url())))
                    })?;
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let after = retry_after(&headers);
                    let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        Err(ApiError::Throttled { retry_after: after })
                    } else if status.is_server_error() {
                        let (code, message) = error_body(&bytes);
                        Err(ApiError::Transient(format!("{what}: HTTP {status} {code} {message}")))
                    } else {
                        Ok((status, headers, bytes))
                    }
                },
                |failure| match failure {
                    ApiError::Throttled { retry_after } => throttled(*retry_after),
                    ApiError::Transient(_) => Verdict::Retry,
                    _ => Verdict::Stop,
                },
                |retry| {
                    let error = retry.error.describe();
                    warn!(
                        what,
                        attempt = retry.attempt,
                        delay_ms = retry.delay_ms(),
                        error,
                        "azure request failed, retrying"
                    );
                },
            )
            .await
    }
}

/// `(code, message)` of either error shape; empty strings when the body has neither.
fn error_body(bytes: &[u8]) -> (String, String) {
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct Outer {
        error: Option<Inner>,
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Outer>(bytes) {
        Ok(Outer { error: Some(i), .. }) => (i.code, i.message),
        Ok(o) => (o.code, o.message),
        Err(_) => (String::new(), String::new()),
    }
}

/// One string list of a TXT record set: the character strings of one TXT record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TxtRecord {
    #[serde(default)]
    pub(crate) value: Vec<String>,
}

/// The target of a CNAME record set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CnameRecord {
    #[serde(default)]
    pub(crate) cname: String,
}

/// `properties` of a record set. A PUT replaces the whole record set, so everything the adapter
/// does not change (metadata, other fields) is kept in `other` and sent back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RecordSetProperties {
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<u32>,
    #[serde(rename = "TXTRecords", default, skip_serializing_if = "Option::is_none")]
    pub(crate) txt_records: Option<Vec<TxtRecord>>,
    #[serde(rename = "CNAMERecord", default, skip_serializing_if = "Option::is_none")]
    pub(crate) cname_record: Option<CnameRecord>,
    #[serde(flatten)]
    pub(crate) other: serde_json::Map<String, serde_json::Value>,
}

impl RecordSetProperties {
    /// The properties to send back in a PUT: without the read-only ones.
    pub(crate) fn for_write(mut self) -> Self {
        for read_only in ["fqdn", "provisioningState"] {
            self.other.remove(read_only);
        }
        self
    }
}

/// A record set as ARM returns it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RecordSet {
    /// Name relative to the zone (`@` at the apex).
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) etag: Option<String>,
    #[serde(default)]
    pub(crate) properties: RecordSetProperties,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<RecordSet>,
    #[serde(rename = "nextLink", default)]
    next_link: Option<String>,
}

/// The optimistic-concurrency condition of a write.
#[derive(Debug, Clone)]
pub(crate) enum Precondition {
    /// Only if the record set still has this etag (`If-Match`).
    Matches(String),
    /// Only if no record set exists yet (`If-None-Match: *`).
    Absent,
}

/// The ARM client for one subscription and resource group. Its `Debug` shows no token.
pub(crate) struct Arm {
    http: Http,
    base_url: String,
    subscription_id: String,
    resource_group: String,
    tokens: Arc<TokenSource>,
}

impl std::fmt::Debug for Arm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arm")
            .field("base_url", &self.base_url)
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("tokens", &self.tokens)
            .finish()
    }
}

fn encode(segment: &str) -> String {
    // Record and zone names are letters, digits, `-`, `_`, `.`, `*` and `@`: all path-safe except
    // `*`, which ARM takes literally too. Anything else is percent-encoded.
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Arm {
    pub(crate) fn new(
        http: Http,
        base_url: &str,
        subscription_id: &str,
        resource_group: &str,
        tokens: Arc<TokenSource>,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            subscription_id: subscription_id.to_string(),
            resource_group: resource_group.to_string(),
            tokens,
        }
    }

    pub(crate) fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    fn zone_url(&self, zone: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnsZones/{}",
            self.base_url,
            encode(&self.subscription_id),
            encode(&self.resource_group),
            encode(zone)
        )
    }

    fn set_url(&self, zone: &str, rtype: &str, relative: &str) -> String {
        format!("{}/{rtype}/{}?api-version={API_VERSION}", self.zone_url(zone), encode(relative))
    }

    /// One authenticated call; a 401 drops the cached token and tries once more with a new one.
    async fn call(
        &self,
        what: &str,
        build: impl Fn(&str) -> RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ApiError> {
        for fresh in [false, true] {
            let token = self.tokens.token().await?;
            let (status, headers, bytes) = self.http.send(what, || build(token.expose_secret())).await?;
            if status == StatusCode::UNAUTHORIZED && !fresh {
                // The token may have been revoked or rotated early: one retry with a new one.
                self.tokens.invalidate().await;
                continue;
            }
            if status.is_success() {
                return Ok((status, headers, bytes));
            }
            let (code, message) = error_body(&bytes);
            return Err(ApiError::Api { status, code, message });
        }
        unreachable!("the loop returns on its second pass")
    }

    /// The zone itself (`GET .../dnsZones/{zone}`): proves the zone exists and is readable.
    pub(crate) async fn get_zone(&self, zone: &str) -> Result<(), ApiError> {
        let url = format!("{}?api-version={API_VERSION}", self.zone_url(zone));
        self.call("reading the zone", |t| self.http.client.get(&url).bearer_auth(t)).await.map(|_| ())
    }

    /// One record set, `None` when it does not exist.
    pub(crate) async fn get(&self, zone: &str, rtype: &str, relative: &str) -> Result<Option<RecordSet>, ApiError> {
        let url = self.set_url(zone, rtype, relative);
        match self.call("reading a record set", |t| self.http.client.get(&url).bearer_auth(t)).await {
            Ok((_, _, bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ApiError::Transient(format!("reading a record set: unreadable answer: {e}"))),
            Err(e) if is_missing_record(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every record set of `rtype` in `zone`, across pages (one call per 100 record sets).
    pub(crate) async fn list(&self, zone: &str, rtype: &str) -> Result<Vec<RecordSet>, ApiError> {
        // No `$top`: the documentation gives no maximum, only the default page of 100.
        let mut url = format!("{}/{rtype}?api-version={API_VERSION}", self.zone_url(zone));
        let mut out = Vec::new();
        loop {
            let (_, _, bytes) = self.call("listing record sets", |t| self.http.client.get(&url).bearer_auth(t)).await?;
            let page: Page = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Transient(format!("listing record sets: unreadable answer: {e}")))?;
            out.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                // The token goes only to the configured endpoint.
                Some(next) if next.starts_with(&format!("{}/", self.base_url)) => url = next,
                Some(next) => {
                    return Err(ApiError::Transient(format!(
                        "listing record sets: nextLink {next:?} leaves the management endpoint {}",
                        self.base_url
                    )));
                }
                None => return Ok(out),
            }
        }
    }

    /// Creates or replaces a record set under `condition`; a lost race is HTTP 412.
    pub(crate) async fn put(
        &self,
        zone: &str,
        rtype: &str,
        relative: &str,
        properties: &RecordSetProperties,
        condition: &Precondition,
    ) -> Result<RecordSet, ApiError> {
        let url = self.set_url(zone, rtype, relative);
        let body = serde_json::json!({ "properties": properties });
        let (_, _, bytes) = self
            .call("writing a record set", |t| {
                let req = self.http.client.put(&url).bearer_auth(t).json(&body);
                match condition {
                    Precondition::Matches(etag) => req.header(
                        reqwest::header::IF_MATCH,
                        HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"invalid\"")),
                    ),
                    Precondition::Absent => req.header(reqwest::header::IF_NONE_MATCH, "*"),
                }
            })
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Transient(format!("writing a record set: unreadable answer: {e}")))
    }

    /// Deletes a record set if it still has `etag`; deleting an absent one succeeds (204).
    pub(crate) async fn delete(&self, zone: &str, rtype: &str, relative: &str, etag: &str) -> Result<(), ApiError> {
        let url = self.set_url(zone, rtype, relative);
        let if_match = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"invalid\""));
        self.call("deleting a record set", |t| {
            self.http.client.delete(&url).bearer_auth(t).header(reqwest::header::IF_MATCH, if_match.clone())
        })
        .await
        .map(|_| ())
    }
}

/// A 404 about the record set itself (not its zone or resource group).
pub(crate) fn is_missing_record(e: &ApiError) -> bool {
    e.status() == Some(StatusCode::NOT_FOUND)
        && !matches!(e.code(), "ResourceNotFound" | "ResourceGroupNotFound" | "ParentResourceNotFound")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_are_read() {
        assert_eq!(
            error_body(br#"{"error":{"code":"AuthorizationFailed","message":"no"}}"#),
            ("AuthorizationFailed".into(), "no".into())
        );
        assert_eq!(
            error_body(br#"{"code":"PreconditionFailed","message":"etag"}"#),
            ("PreconditionFailed".into(), "etag".into())
        );
        assert_eq!(error_body(b"<html>"), (String::new(), String::new()));
    }

    #[test]
    fn properties_serialize_with_azure_names() {
        let p = RecordSetProperties {
            ttl: Some(60),
            txt_records: Some(vec![TxtRecord { value: vec!["v".into()] }]),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!({"TTL": 60, "TXTRecords": [{"value": ["v"]}]}));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("_dnsauth.www"), "_dnsauth.www");
        assert_eq!(encode("@"), "@");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
