//! OAuth 2.0 access tokens for Cloud DNS, from one of three sources:
//!
//! - a **service-account key** (`"type": "service_account"` JSON): an RS256-signed JWT assertion
//!   exchanged at the key's `token_uri` (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`);
//! - the **metadata server** of a GCE VM / GKE node / Cloud Run service
//!   (`GET .../instance/service-accounts/default/token` with `Metadata-Flavor: Google`);
//! - **workload identity federation** (`"type": "external_account"` JSON): a subject token read
//!   from `credential_source.file`, exchanged at the Security Token Service, then optionally for a
//!   service account's token (`service_account_impersonation_url`).
//!
//! Tokens are cached until shortly before they expire and shared by every request of one
//! provider. RS256 is signed with aws-lc-rs, already the workspace's crypto provider (no extra
//! crate). This module must never log, print or put into an error any key, assertion or token:
//! they live in [`SecretString`]s and `Debug` shows identities only (client email, key id).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use retry::{RetryPolicy, Verdict};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::KIND;
use crate::ProviderError;

/// The OAuth scope Cloud DNS needs (read and write record sets, nothing else).
pub const DNS_SCOPE: &str = "https://www.googleapis.com/auth/ndev.clouddns.readwrite";
/// The scope STS tokens are requested with (what Google's client libraries ask for).
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's default OAuth token endpoint.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// Google's Security Token Service.
pub const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// The metadata server of GCE, GKE and Cloud Run (plain http to a link-local host, by design).
pub const DEFAULT_METADATA_URL: &str = "http://metadata.google.internal";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Lifetime asked for in JWT assertions (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;
/// A token is renewed this long before it expires (or at 90% of a shorter lifetime).
const RENEW_MARGIN: Duration = Duration::from_secs(300);
/// Retries of one token request (5xx, 429 and network failures): 4 attempts, 500 ms doubling.
const TOKEN_RETRY: RetryPolicy = RetryPolicy::new(4, Duration::from_millis(500), Duration::from_secs(60));

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

fn err_auth(message: impl Into<String>) -> ProviderError {
    ProviderError::Auth { provider: KIND, message: message.into() }
}

/// Where the subject token of workload identity federation comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTokenFile {
    /// The file (a Kubernetes projected service-account token, a CI OIDC token, ...), re-read at
    /// every exchange because it is rotated.
    pub path: PathBuf,
    /// `Some(field)` when the file is JSON and the token is that field; `None` for plain text.
    pub json_field: Option<String>,
}

/// The credentials of one provider. `Debug` shows identities, never key material.
#[derive(Clone)]
pub enum Credentials {
    /// A service-account key file.
    ServiceAccount {
        /// The service account (`client_email`).
        client_email: String,
        /// The key id (`private_key_id`), sent as the JWT `kid`.
        private_key_id: Option<String>,
        /// The PEM private key.
        private_key: SecretString,
        /// Where the assertion is exchanged (`token_uri`).
        token_uri: String,
    },
    /// Workload identity federation (an `external_account` file).
    ExternalAccount {
        /// The workload identity pool provider (`audience`).
        audience: String,
        /// `subject_token_type` (an OIDC id token or a JWT, usually).
        subject_token_type: String,
        /// The STS endpoint (`token_url`).
        token_url: String,
        /// The subject token's file.
        subject_token: SubjectTokenFile,
        /// `service_account_impersonation_url`, when the pool's identity impersonates a service
        /// account rather than being granted DNS roles directly.
        impersonation_url: Option<String>,
    },
    /// The metadata server's default service account.
    Metadata,
}

/// Equal when every field is, the private key included (compared in memory only): a reload keeps
/// an adapter only when its credentials are unchanged.
impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::ServiceAccount { client_email: a, private_key_id: b, private_key: c, token_uri: d },
                Self::ServiceAccount { client_email: e, private_key_id: f, private_key: g, token_uri: h },
            ) => a == e && b == f && c.expose_secret() == g.expose_secret() && d == h,
            (
                Self::ExternalAccount {
                    audience: a,
                    subject_token_type: b,
                    token_url: c,
                    subject_token: d,
                    impersonation_url: e,
                },
                Self::ExternalAccount {
                    audience: f,
                    subject_token_type: g,
                    token_url: h,
                    subject_token: i,
                    impersonation_url: j,
                },
            ) => a == f && b == g && c == h && d == i && e == j,
            (Self::Metadata, Self::Metadata) => true,
            _ => false,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceAccount { client_email, private_key_id, token_uri, .. } => f
                .debug_struct("ServiceAccount")
                .field("client_email", client_email)
                .field("private_key_id", private_key_id)
                .field("token_uri", token_uri)
                .finish_non_exhaustive(),
            Self::ExternalAccount { audience, subject_token_type, token_url, subject_token, impersonation_url } => f
                .debug_struct("ExternalAccount")
                .field("audience", audience)
                .field("subject_token_type", subject_token_type)
                .field("token_url", token_url)
                .field("subject_token", subject_token)
                .field("impersonation_url", impersonation_url)
                .finish(),
            Self::Metadata => f.write_str("Metadata"),
        }
    }
}

fn field<'a>(v: &'a Value, name: &str, what: &str) -> Result<&'a str, ProviderError> {
    match v.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) | None => Err(err_config(format!("the {what} has no `{name}`"))),
        Some(_) => Err(err_config(format!("`{name}` of the {what} must be a string"))),
    }
}

fn opt_field<'a>(v: &'a Value, name: &str, what: &str) -> Result<Option<&'a str>, ProviderError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(_) => field(v, name, what).map(Some),
    }
}

/// Parses a PEM private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`). Errors never
/// quote the key.
fn parse_private_key(pem: &str) -> Result<RsaKeyPair, String> {
    let (label, body) = pem_body(pem).ok_or("`private_key` is not a PEM block")?;
    let der = STANDARD.decode(body).map_err(|_| "`private_key` is not valid base64 inside its PEM armour")?;
    let parsed = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        _ => return Err(format!("`private_key` is a PEM {label:?}, expected \"PRIVATE KEY\"")),
    };
    parsed.map_err(|e| format!("`private_key` is not a usable RSA key ({e})"))
}

fn pem_body(pem: &str) -> Option<(String, String)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let body: String = rest.get(body_start..end)?.chars().filter(|c| !c.is_whitespace()).collect();
    Some((label, body))
}

/// Checks that a credential URL is https (or http to a loopback test server).
pub(crate) fn check_url(what: &str, url: &str) -> Result<reqwest::Url, ProviderError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| err_config(format!("{what} {url:?} is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(err_config(format!("{what} {url:?} must use https (plain http only to loopback test servers)"))),
    }
}

pub(crate) fn is_loopback(url: &str) -> bool {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).is_some_and(|h| {
        let h = h.trim_matches(['[', ']']);
        h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

impl Credentials {
    /// Parses a credentials file (`service_account` or `external_account` JSON) and checks it
    /// without any network call: the private key must parse, URLs must be https. Errors name the
    /// field at fault and never quote the file's content.
    pub fn from_json(text: &str) -> Result<Self, ProviderError> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's syntax errors give a position, never the content
            err_config(format!(
                "the credentials file is not JSON (line {}, column {}): give a service-account key or an external_account configuration",
                e.line(),
                e.column()
            ))
        })?;
        let kind = field(&v, "type", "credentials file")?;
        match kind {
            "service_account" => {
                let what = "service-account key";
                let client_email = field(&v, "client_email", what)?.to_string();
                let pem = field(&v, "private_key", what)?;
                parse_private_key(pem).map_err(|e| err_config(format!("the {what} of {client_email}: {e}")))?;
                let token_uri = opt_field(&v, "token_uri", what)?.unwrap_or(DEFAULT_TOKEN_URI).to_string();
                check_url("`token_uri` of the service-account key", &token_uri)?;
                Ok(Self::ServiceAccount {
                    client_email,
                    private_key_id: opt_field(&v, "private_key_id", what)?.map(str::to_string),
                    private_key: SecretString::from(pem.to_string()),
                    token_uri,
                })
            }
            "external_account" => {
                let what = "external_account configuration";
                let audience = field(&v, "audience", what)?.to_string();
                let subject_token_type = field(&v, "subject_token_type", what)?.to_string();
                let token_url = opt_field(&v, "token_url", what)?.unwrap_or(DEFAULT_STS_URL).to_string();
                check_url("`token_url` of the external_account configuration", &token_url)?;
                let source = v
                    .get("credential_source")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| err_config(format!("the {what} has no `credential_source`")))?;
                let Some(file) = opt_field(source, "file", "credential_source")? else {
                    return Err(err_config(
                        "only file-sourced workload identity is supported: `credential_source` needs a `file` (url, executable and AWS sources are not)",
                    ));
                };
                let json_field = match source.get("format") {
                    None | Some(Value::Null) => None,
                    Some(format) => match opt_field(format, "type", "credential_source.format")? {
                        None | Some("text") => None,
                        Some("json") => {
                            Some(field(format, "subject_token_field_name", "credential_source.format")?.to_string())
                        }
                        Some(other) => {
                            return Err(err_config(format!(
                                "credential_source.format.type {other:?} is not supported: use \"text\" or \"json\""
                            )));
                        }
                    },
                };
                let impersonation_url = opt_field(&v, "service_account_impersonation_url", what)?.map(str::to_string);
                if let Some(url) = &impersonation_url {
                    check_url("`service_account_impersonation_url`", url)?;
                }
                Ok(Self::ExternalAccount {
                    audience,
                    subject_token_type,
                    token_url,
                    subject_token: SubjectTokenFile { path: PathBuf::from(file), json_field },
                    impersonation_url,
                })
            }
            other => Err(err_config(format!(
                "credentials of type {other:?} are not supported: give a service-account key (\"service_account\") or a workload identity configuration (\"external_account\"), or use auth = \"metadata\""
            ))),
        }
    }

    /// A short, secret-free description for logs: `service account dcvd@p.iam...`.
    pub fn describe(&self) -> String {
        match self {
            Self::ServiceAccount { client_email, .. } => format!("service account {client_email}"),
            Self::ExternalAccount { audience, impersonation_url, .. } => match impersonation_url {
                Some(url) => format!("workload identity {audience} impersonating {}", impersonated_account(url)),
                None => format!("workload identity {audience}"),
            },
            Self::Metadata => "the metadata server's default service account".to_string(),
        }
    }
}

/// `dcvd@p.iam.gserviceaccount.com` out of `.../serviceAccounts/dcvd@p.iam...:generateAccessToken`.
fn impersonated_account(url: &str) -> &str {
    url.rsplit('/').next().and_then(|s| s.split(':').next()).unwrap_or(url)
}

/// An access token and when to stop using it.
struct Cached {
    token: SecretString,
    renew_at: Instant,
}

/// How long a token of `expires_in` may be used before it is renewed.
pub(crate) fn usable_for(expires_in: Duration) -> Duration {
    expires_in.saturating_sub(RENEW_MARGIN.min(expires_in / 10))
}

/// Fetches and caches access tokens for one provider.
pub(crate) struct Authenticator {
    http: reqwest::Client,
    credentials: Credentials,
    /// Overrides the credentials' token endpoint (service-account `token_uri` or STS `token_url`).
    token_url: Option<String>,
    metadata_url: String,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("credentials", &self.credentials)
            .field("token_url", &self.token_url)
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImpersonationAnswer {
    access_token: Option<String>,
    expire_time: Option<String>,
}

/// What a token endpoint said when it refused.
fn describe_refusal(status: reqwest::StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // OAuth: {"error": "invalid_grant", "error_description": "..."}; Google APIs: {"error": {...}}
    let text = match &v["error"] {
        Value::String(code) => match v["error_description"].as_str() {
            Some(d) => format!("{code}: {d}"),
            None => code.clone(),
        },
        Value::Object(e) => {
            let status = e.get("status").and_then(Value::as_str).unwrap_or_default();
            let message = e.get("message").and_then(Value::as_str).unwrap_or_default();
            format!("{status} {message}").trim().to_string()
        }
        _ => String::new(),
    };
    if text.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {text}") }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// A form body (`application/x-www-form-urlencoded`).
fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").expect("static URL");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

/// Signs the RS256 JWT assertion of a service account.
pub(crate) fn sign_assertion(
    client_email: &str,
    private_key_id: Option<&str>,
    pem: &SecretString,
    audience: &str,
    scope: &str,
    issued_at: u64,
) -> Result<SecretString, ProviderError> {
    let key = parse_private_key(pem.expose_secret())
        .map_err(|e| err_config(format!("service account {client_email}: {e}")))?;
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = private_key_id {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": client_email,
        "scope": scope,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFETIME,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| err_config(format!("service account {client_email}: signing the token request failed")))?;
    Ok(SecretString::from(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))))
}

impl Authenticator {
    pub(crate) fn new(
        credentials: Credentials,
        token_url: Option<String>,
        metadata_url: Option<String>,
    ) -> Result<Self, ProviderError> {
        if let Some(url) = &token_url {
            check_url("token_url", url)?;
        }
        let metadata_url = metadata_url.unwrap_or_else(|| DEFAULT_METADATA_URL.to_string());
        if metadata_url.trim_end_matches('/') != DEFAULT_METADATA_URL {
            // the real metadata server is plain http; an override is a test server on loopback
            check_url("metadata_url", &metadata_url)?;
        }
        let loopback = match &credentials {
            Credentials::Metadata => true, // link-local or loopback: never through a proxy
            Credentials::ServiceAccount { token_uri, .. } => is_loopback(token_url.as_deref().unwrap_or(token_uri)),
            Credentials::ExternalAccount { token_url: sts, impersonation_url, .. } => {
                is_loopback(token_url.as_deref().unwrap_or(sts)) && impersonation_url.as_deref().is_none_or(is_loopback)
            }
        };
        let http = crate::http_client(loopback).map_err(err_config)?;
        Ok(Self {
            http,
            credentials,
            token_url,
            metadata_url: metadata_url.trim_end_matches('/').to_string(),
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The credentials in use (for messages).
    pub(crate) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A valid access token: the cached one, or a new one.
    pub(crate) async fn token(&self) -> Result<SecretString, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let (token, expires_in) = self.fetch().await?;
        debug!(credentials = %self.credentials.describe(), expires_in_s = expires_in.as_secs(), "gcloud access token obtained");
        *cache = Some(Cached { token: token.clone(), renew_at: Instant::now() + usable_for(expires_in) });
        Ok(token)
    }

    /// Forgets the cached token (after the API answered 401 with it).
    pub(crate) async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), ProviderError> {
        match &self.credentials {
            Credentials::ServiceAccount { client_email, private_key_id, private_key, token_uri } => {
                let url = self.token_url.as_deref().unwrap_or(token_uri);
                let assertion =
                    sign_assertion(client_email, private_key_id.as_deref(), private_key, url, DNS_SCOPE, now_unix())?;
                let body = form(&[("grant_type", JWT_BEARER), ("assertion", assertion.expose_secret())]);
                let answer = self.post_token(url, "the service-account token endpoint", body).await?;
                token_of(answer, &format!("service account {client_email}"))
            }
            Credentials::Metadata => {
                let url = reqwest::Url::parse_with_params(
                    &format!("{}{METADATA_TOKEN_PATH}", self.metadata_url),
                    [("scopes", DNS_SCOPE)],
                )
                .map_err(|e| err_config(format!("metadata_url {:?}: {e}", self.metadata_url)))?;
                let bytes = self
                    .send("the metadata server", || {
                        self.http.get(url.clone()).header("Metadata-Flavor", "Google")
                    })
                    .await
                    .map_err(|e| match e {
                        ProviderError::Transient { message, .. } => ProviderError::Transient {
                            provider: KIND,
                            message: format!(
                                "{message}: auth = \"metadata\" works only on Google Cloud (GCE, GKE, Cloud Run) with a service account attached"
                            ),
                        },
                        other => other,
                    })?;
                token_of(parse_json(&bytes, "the metadata server")?, "the metadata server's service account")
            }
            Credentials::ExternalAccount {
                audience,
                subject_token_type,
                token_url,
                subject_token,
                impersonation_url,
            } => {
                let subject = read_subject_token(subject_token).await?;
                let sts = self.token_url.as_deref().unwrap_or(token_url);
                let scope = if impersonation_url.is_some() { CLOUD_PLATFORM_SCOPE } else { DNS_SCOPE };
                let body = form(&[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("audience", audience),
                    ("scope", scope),
                    ("requested_token_type", ACCESS_TOKEN_TYPE),
                    ("subject_token", subject.expose_secret()),
                    ("subject_token_type", subject_token_type),
                ]);
                let answer = self.post_token(sts, "the Security Token Service", body).await?;
                let (federated, expires_in) = token_of(answer, &format!("workload identity {audience}"))?;
                let Some(url) = impersonation_url else {
                    return Ok((federated, expires_in));
                };
                let account = impersonated_account(url);
                let body = json!({"scope": [DNS_SCOPE], "lifetime": "3600s"}).to_string();
                let bytes = self
                    .send("the IAM credentials service", || {
                        self.http
                            .post(url)
                            .bearer_auth(federated.expose_secret())
                            .header(reqwest::header::CONTENT_TYPE, "application/json")
                            .body(body.clone())
                    })
                    .await
                    .map_err(|e| match e {
                        ProviderError::Auth { message, .. } => err_auth(format!(
                            "{message}: grant the workload identity pool's principal roles/iam.workloadIdentityUser (or Service Account Token Creator) on {account}"
                        )),
                        other => other,
                    })?;
                let answer: ImpersonationAnswer =
                    serde_json::from_slice(&bytes).map_err(|_| ProviderError::Transient {
                        provider: KIND,
                        message: "the IAM credentials service answered something that is not a token".into(),
                    })?;
                let token = answer.access_token.filter(|t| !t.is_empty()).ok_or_else(|| ProviderError::Transient {
                    provider: KIND,
                    message: format!("the IAM credentials service returned no access token for {account}"),
                })?;
                let expires_in = answer
                    .expire_time
                    .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or(Duration::from_secs(ASSERTION_LIFETIME));
                Ok((SecretString::from(token), expires_in))
            }
        }
    }

    async fn post_token(&self, url: &str, what: &str, body: String) -> Result<TokenAnswer, ProviderError> {
        let bytes = self
            .send(what, || {
                self.http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body.clone())
            })
            .await?;
        parse_json(&bytes, what)
    }

    /// Sends a token request, retrying network failures and 5xx; 4xx is an [`ProviderError::Auth`].
    async fn send(&self, what: &str, build: impl Fn() -> reqwest::RequestBuilder) -> Result<Vec<u8>, ProviderError> {
        /// A failed token request: refused for good, or worth another try.
        enum TokenFailure {
            Refused(ProviderError),
            Retryable(String),
        }
        let (this, build) = (self, &build);
        let result = TOKEN_RETRY
            .run(
                move |_| async move {
                    let resp = build()
                        .send()
                        .await
                        .map_err(|e| TokenFailure::Retryable(crate::error_chain(&e.without_url())))?;
                    let status = resp.status();
                    let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    if status.is_success() {
                        return Ok(bytes);
                    }
                    let refusal = describe_refusal(status, &bytes);
                    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                        return Err(TokenFailure::Refused(err_auth(format!(
                            "{what} refused a token for {} ({refusal})",
                            this.credentials.describe()
                        ))));
                    }
                    Err(TokenFailure::Retryable(refusal))
                },
                |failure| match failure {
                    TokenFailure::Refused(_) => Verdict::Stop,
                    TokenFailure::Retryable(_) => Verdict::Retry,
                },
                |retry| {
                    if let TokenFailure::Retryable(error) = retry.error {
                        warn!(
                            endpoint = what,
                            attempt = retry.attempt,
                            delay_ms = retry.delay_ms(),
                            error,
                            "gcloud token request failed, retrying"
                        );
                    }
                },
            )
            .await;
        result.map_err(|failure| match failure {
            TokenFailure::Refused(error) => error,
            TokenFailure::Retryable(failure) => ProviderError::Transient {
                provider: KIND,
                message: format!(
                    "cannot get an access token from {what} after {} attempts: {failure}",
                    TOKEN_RETRY.max_attempts
                ),
            },
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(bytes).map_err(|_| ProviderError::Transient {
        provider: KIND,
        message: format!("{what} answered something that is not a token response"),
    })
}

fn token_of(answer: TokenAnswer, whose: &str) -> Result<(SecretString, Duration), ProviderError> {
    let token = answer.access_token.filter(|t| !t.is_empty()).ok_or_else(|| ProviderError::Transient {
        provider: KIND,
        message: format!("the token endpoint returned no access token for {whose}"),
    })?;
    Ok((SecretString::from(token), Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_LIFETIME))))
}

async fn read_subject_token(source: &SubjectTokenFile) -> Result<SecretString, ProviderError> {
    let path = source.path.display().to_string();
    let text = tokio::fs::read_to_string(&source.path).await.map_err(|e| {
        err_auth(format!(
            "cannot read the workload identity subject token file {path:?}: {e} (is the projected token mounted?)"
        ))
    })?;
    let token = match &source.json_field {
        None => text.trim().to_string(),
        Some(name) => {
            let v: Value = serde_json::from_str(&text)
                .map_err(|_| err_auth(format!("the subject token file {path:?} is not JSON")))?;
            v.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| err_auth(format!("the subject token file {path:?} has no string field {name:?}")))?
        }
    };
    if token.is_empty() {
        return Err(err_auth(format!("the subject token file {path:?} is empty")));
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    fn test_key() -> (SecretString, Vec<u8>) {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("key");
        let der = pair.as_der().expect("pkcs8");
        let b64 = STANDARD.encode(der.as_ref());
        let body: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("ascii")).collect();
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", body.join("\n"));
        (SecretString::from(pem), pair.public_key().as_ref().to_vec())
    }

    /// The assertion is a JWT whose RS256 signature verifies with the key's public half and
    /// whose claims are what Google's token endpoint checks.
    #[test]
    fn assertion_is_a_verifiable_rs256_jwt() {
        let (pem, public) = test_key();
        let jwt =
            sign_assertion("sa@p.iam.gserviceaccount.com", Some("kid-1"), &pem, DEFAULT_TOKEN_URI, DNS_SCOPE, 1_000)
                .expect("sign");
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"}));
        assert_eq!(
            claims,
            json!({"iss": "sa@p.iam.gserviceaccount.com", "scope": DNS_SCOPE, "aud": DEFAULT_TOKEN_URI, "iat": 1000, "exp": 4600})
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        let signed = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
            .verify(signed.as_bytes(), &signature)
            .expect("the signature verifies");
    }

    /// Tokens are renewed 5 minutes before expiry, or at 90% of a short lifetime.
    #[test]
    fn renewal_margin() {
        assert_eq!(usable_for(Duration::from_secs(3600)), Duration::from_secs(3300));
        assert_eq!(usable_for(Duration::from_secs(100)), Duration::from_secs(90));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    /// A service-account file parses; Debug shows the identity, never the key.
    #[test]
    fn service_account_file_parses_and_debug_hides_the_key() {
        let (pem, _) = test_key();
        let file = json!({
            "type": "service_account",
            "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key_id": "abc123",
            "private_key": pem.expose_secret(),
        })
        .to_string();
        let creds = Credentials::from_json(&file).expect("parses");
        let debug = format!("{creds:?}");
        assert!(debug.contains("sa@p.iam.gserviceaccount.com") && debug.contains("abc123"), "{debug}");
        assert!(debug.contains(DEFAULT_TOKEN_URI), "the default token_uri applies: {debug}");
        let key_line = pem.expose_secret().lines().nth(1).expect("line").to_string();
        assert!(!debug.contains(&key_line) && !debug.contains("PRIVATE"), "{debug}");
        assert_eq!(creds.describe(), "service account sa@p.iam.gserviceaccount.com");
        let http = file.replace("\"abc123\"", "\"abc123\", \"token_uri\": \"http://oauth.example.net/token\"");
        assert!(Credentials::from_json(&http).is_err(), "plain http token_uri to a remote host is refused");
    }

    /// JSON-format subject token files are read by field.
    #[tokio::test]
    async fn subject_token_from_a_json_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let path = dir.join("token.json");
        std::fs::write(&path, r#"{"id_token": "subject-123"}"#).expect("write");
        let source = SubjectTokenFile { path: path.clone(), json_field: Some("id_token".into()) };
        assert_eq!(read_subject_token(&source).await.expect("token").expose_secret(), "subject-123");
        let missing = SubjectTokenFile { path: dir.join("absent"), json_field: None };
        let err = read_subject_token(&missing).await.expect_err("absent");
        assert!(
            matches!(err, ProviderError::Auth { .. }) && err.to_string().starts_with("gcloud: cannot read"),
            "{err}"
        );
    }
}
