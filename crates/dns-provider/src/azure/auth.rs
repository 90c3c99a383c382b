//! Microsoft Entra ID (Azure AD) access tokens for Azure Resource Manager, from one of three
//! credentials: a client secret (OAuth 2.0 client credentials grant), the managed identity of the
//! VM or container (the Instance Metadata Service), or workload identity federation (a Kubernetes
//! service-account token exchanged as a `client_assertion`).
//!
//! Tokens are cached until shortly before they expire; one lock serialises refreshes, so many
//! concurrent operations cost one token request. This module must not log or return a secret or
//! a token: errors carry the identity provider's `error`/`error_description` only (which never
//! echo the secret).
//!
//! A small client over the workspace's reqwest rather than `azure_identity`: the three flows are
//! each one form POST or GET, and the SDK crates would add their own HTTP pipeline (see
//! docs/providers.md for the measured cost).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::time::Instant;
use tracing::debug;

use super::api::{ApiError, Http};

/// Entra ID's public-cloud authority host.
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// The managed-identity token endpoint of the Instance Metadata Service.
pub const DEFAULT_IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// IMDS's API version for identity tokens.
const IMDS_API_VERSION: &str = "2018-02-01";
/// The assertion type of workload identity federation (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Refresh this long before expiry (or at half the lifetime of shorter-lived tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Assumed lifetime when the answer gives none (Entra ID tokens last 60-90 minutes).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// How dcvd authenticates to Azure Resource Manager.
#[derive(Clone)]
pub enum AzureCredential {
    /// An app registration's client secret (OAuth 2.0 client credentials).
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret's value.
        client_secret: SecretString,
    },
    /// The managed identity of the machine (IMDS); `client_id` picks a user-assigned identity.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` = the system-assigned one.
        client_id: Option<String>,
    },
    /// Workload identity federation: the token in `token_file` (re-read on every exchange, since
    /// Kubernetes rotates it) is sent as the `client_assertion`.
    WorkloadIdentity {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id of the federated identity.
        client_id: String,
        /// The projected service-account token (`AZURE_FEDERATED_TOKEN_FILE`).
        token_file: PathBuf,
    },
}

/// Equal when every field is, the client secret included (compared in memory only): a reload
/// keeps an adapter only when its credential is unchanged.
impl PartialEq for AzureCredential {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::ClientSecret { tenant_id: a, client_id: b, client_secret: c },
                Self::ClientSecret { tenant_id: d, client_id: e, client_secret: f },
            ) => a == d && b == e && c.expose_secret() == f.expose_secret(),
            (Self::ManagedIdentity { client_id: a }, Self::ManagedIdentity { client_id: b }) => a == b,
            (
                Self::WorkloadIdentity { tenant_id: a, client_id: b, token_file: c },
                Self::WorkloadIdentity { tenant_id: d, client_id: e, token_file: f },
            ) => a == d && b == e && c == f,
            _ => false,
        }
    }
}

impl AzureCredential {
    /// `client_secret`, `managed_identity` or `workload_identity`, as the configuration names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client_secret",
            Self::ManagedIdentity { .. } => "managed_identity",
            Self::WorkloadIdentity { .. } => "workload_identity",
        }
    }
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientSecret { tenant_id, client_id, .. } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
            Self::ManagedIdentity { client_id } => {
                f.debug_struct("ManagedIdentity").field("client_id", client_id).finish()
            }
            Self::WorkloadIdentity { tenant_id, client_id, token_file } => f
                .debug_struct("WorkloadIdentity")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

/// Gets and caches ARM access tokens. `Debug` shows the credential kind and endpoints only.
pub(crate) struct TokenSource {
    http: Http,
    credential: AzureCredential,
    authority_url: String,
    imds_url: String,
    /// The ARM audience: `{management_url}/.default` (v2 scope) / `{management_url}/` (IMDS).
    audience: String,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.credential)
            .field("authority_url", &self.authority_url)
            .field("imds_url", &self.imds_url)
            .finish_non_exhaustive()
    }
}

/// When to fetch a new token for one that lasts `lifetime` from `now`.
fn refresh_at(now: Instant, lifetime: Duration) -> Instant {
    now + lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
}

/// A JSON number or a string holding one (IMDS sends `"expires_in": "86399"`).
fn seconds(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` body of `pairs` (reqwest's `form` feature is off; its URL
/// type encodes a query the same way).
fn form_body(pairs: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://form.invalid/", pairs)
        .ok()
        .and_then(|u| u.query().map(str::to_owned))
        .unwrap_or_default()
}

impl TokenSource {
    pub(crate) fn new(
        http: Http,
        credential: AzureCredential,
        authority_url: &str,
        imds_url: &str,
        management_url: &str,
    ) -> Self {
        Self {
            http,
            credential,
            authority_url: authority_url.trim_end_matches('/').to_string(),
            imds_url: imds_url.to_string(),
            audience: management_url.trim_end_matches('/').to_string(),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn credential(&self) -> &AzureCredential {
        &self.credential
    }

    /// A valid access token: the cached one, or a new one.
    pub(crate) async fn token(&self) -> Result<SecretString, ApiError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        debug!(credential = self.credential.kind(), lifetime_s = lifetime.as_secs(), "azure access token obtained");
        *cache = Some(Cached { token: token.clone(), refresh_at: refresh_at(Instant::now(), lifetime) });
        Ok(token)
    }

    /// Forgets the cached token (after ARM refused it), so the next call fetches a new one.
    pub(crate) async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(SecretString, Duration), ApiError> {
        let scope = format!("{}/.default", self.audience);
        let (what, resp) = match &self.credential {
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret } => {
                let url = format!("{}/{tenant_id}/oauth2/v2.0/token", self.authority_url);
                let body = form_body(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose_secret()),
                    ("scope", &scope),
                ]);
                let what = "client secret token request";
                (what, self.http.send(what, || self.http.post_form(&url, body.clone())).await?)
            }
            AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file } => {
                // Read fresh every time: the kubelet rotates the projected token.
                let assertion = std::fs::read_to_string(token_file).map_err(|e| ApiError::Credential {
                    message: format!(
                        "cannot read the federated token file {}: {e}; check `federated_token_file` \
                         (or AZURE_FEDERATED_TOKEN_FILE) and the pod's azure.workload.identity/use label",
                        token_file.display()
                    ),
                })?;
                let url = format!("{}/{tenant_id}/oauth2/v2.0/token", self.authority_url);
                let body = form_body(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion.trim()),
                    ("scope", &scope),
                ]);
                let what = "workload identity token exchange";
                (what, self.http.send(what, || self.http.post_form(&url, body.clone())).await?)
            }
            AzureCredential::ManagedIdentity { client_id } => {
                let resource = format!("{}/", self.audience);
                let mut query = vec![("api-version", IMDS_API_VERSION), ("resource", resource.as_str())];
                if let Some(id) = client_id {
                    query.push(("client_id", id.as_str()));
                }
                let url = reqwest::Url::parse_with_params(&self.imds_url, &query).map_err(|e| {
                    ApiError::Credential { message: format!("imds_url {:?} is not a URL: {e}", self.imds_url) }
                })?;
                let what = "managed identity token request (IMDS)";
                (what, self.http.send(what, || self.http.get_metadata(url.clone())).await?)
            }
        };
        let (status, _headers, bytes) = resp;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(self.refusal(what, status, &body));
        }
        let Some(token) = body.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
            return Err(ApiError::Transient(format!("{what}: answer without access_token")));
        };
        let lifetime = seconds(body.get("expires_in"))
            .map(Duration::from_secs)
            .or_else(|| {
                let on = seconds(body.get("expires_on"))?;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some(Duration::from_secs(on.saturating_sub(now)))
            })
            .unwrap_or(DEFAULT_LIFETIME);
        Ok((SecretString::from(token), lifetime))
    }

    /// The identity provider's refusal, with what to check for this credential.
    fn refusal(&self, what: &str, status: StatusCode, body: &Value) -> ApiError {
        let code = body.get("error").and_then(Value::as_str).unwrap_or("");
        let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
        // Descriptions run on with trace ids and timestamps after the first line.
        let description = description.lines().next().unwrap_or("").trim();
        let said = if code.is_empty() && description.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("{code}: {description}")
        };
        let hint = match &self.credential {
            AzureCredential::ClientSecret { tenant_id, client_id, .. } => format!(
                "check tenant_id {tenant_id:?}, client_id {client_id:?} and the secret in \
                 client_secret_file/client_secret_env (secrets expire: create a new one in the app \
                 registration's Certificates & secrets)"
            ),
            AzureCredential::WorkloadIdentity { tenant_id, client_id, .. } => format!(
                "check tenant_id {tenant_id:?}, client_id {client_id:?} and that the identity has a \
                 federated credential for this service account's issuer and subject"
            ),
            AzureCredential::ManagedIdentity { client_id } => match client_id {
                Some(id) => format!("check that the user-assigned identity {id:?} is attached to this machine"),
                None => "check that a system-assigned managed identity is enabled on this machine".to_string(),
            },
        };
        ApiError::Credential { message: format!("{what} refused ({said}): {hint}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        let now = Instant::now();
        assert_eq!(refresh_at(now, Duration::from_secs(3600)), now + Duration::from_secs(3300));
        // short-lived tokens are refreshed at half their lifetime
        assert_eq!(refresh_at(now, Duration::from_secs(120)), now + Duration::from_secs(60));
        assert_eq!(refresh_at(now, Duration::ZERO), now);
    }

    #[test]
    fn lifetimes_are_numbers_or_strings() {
        assert_eq!(seconds(Some(&serde_json::json!(3599))), Some(3599));
        assert_eq!(seconds(Some(&serde_json::json!("86399"))), Some(86399));
        assert_eq!(seconds(Some(&serde_json::json!(null))), None);
    }

    #[test]
    fn form_bodies_are_url_encoded() {
        assert_eq!(form_body(&[("a", "x y"), ("b", "p&q=r/")]), "a=x+y&b=p%26q%3Dr%2F");
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = AzureCredential::ClientSecret {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: SecretString::from("az-secret-value-42"),
        };
        assert!(!format!("{c:?}").contains("az-secret-value-42"));
    }
}
