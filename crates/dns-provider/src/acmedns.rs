//! acme-dns adapter (joohoi/acme-dns `POST /update`), for `_dnsauth` CNAME delegation into a
//! zone an acme-dns server answers for.
//!
//! Set-up: per validated domain, an acme-dns account (`POST /register` returns `username`,
//! `password`, `subdomain`, `fulldomain`), and once, in the domain's own zone,
//! `_dnsauth.<domain> CNAME <fulldomain>`. dcvd follows that CNAME and publishes the TXT value at
//! the fulldomain, which it routes to this provider by zone (the acme-dns server's domain); the
//! adapter picks the account whose `fulldomain` is the record's name.
//!
//! What acme-dns can and cannot do, and what the adapter does about it:
//! - Each account holds exactly two TXT values; an update overwrites the older one. So at most
//!   two values per name coexist, and publishing a third evicts the oldest.
//! - There is no read API. The adapter remembers the two values it last wrote per account and
//!   skips an update whose value is already there (publishing is idempotent within a process;
//!   after a restart a re-publish rewrites the value into the older slot, which is harmless
//!   unless two validations for one account overlap). [`DnsProvider::list`] returns that memory.
//! - There is no delete API (lego's provider treats cleanup as a no-op too): [`DnsProvider::remove`]
//!   succeeds without a call, logged at debug; the value stays until later updates overwrite it.
//! - Stock acme-dns accepts only values of exactly 43 characters of `[A-Za-z0-9_-]` (ACME's
//!   key-authorisation digest) and answers anything else with `400 {"error": "bad_txt"}`;
//!   DigiCert's random values are 32 characters, so they need an acme-dns build that accepts
//!   them. The error says so; the adapter does not second-guess the server.
//! - CNAME records cannot be published (acme-dns serves TXT only).
//! - 429 and 5xx (and network failures) are retried with jittered backoff, honouring
//!   `Retry-After`; acme-dns itself does not throttle, a reverse proxy in front of it may.
//!
//! It must not send an account's password for any other account's name, nor anywhere but the
//! configured API (plain http only to loopback).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info};

use crate::RetryPolicy;
use crate::locks::NameLocks;
use crate::rest::{self, Answer, Failure, Rest};
use crate::{DnsProvider, ProviderError, Published, Record, RecordType, check_owner, normalize_name};

const KIND: &str = "acmedns";
/// Default timeout of one API request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// TXT values an acme-dns account holds.
const SLOTS: usize = 2;

/// One acme-dns account, as `/register` returned it.
#[derive(Clone)]
pub struct AcmeDnsAccount {
    /// What the account validates (the domain whose `_dnsauth` name is a CNAME to `fulldomain`);
    /// used in messages only.
    pub domain: String,
    /// `username` (`X-Api-User`).
    pub username: String,
    /// `password` (`X-Api-Key`).
    pub password: SecretString,
    /// `subdomain`, sent with each update.
    pub subdomain: String,
    /// `fulldomain`: the name the TXT values are served at.
    pub fulldomain: String,
}

impl fmt::Debug for AcmeDnsAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeDnsAccount")
            .field("domain", &self.domain)
            .field("username", &self.username)
            .field("subdomain", &self.subdomain)
            .field("fulldomain", &self.fulldomain)
            .finish_non_exhaustive()
    }
}

/// Settings of one acme-dns provider instance.
#[derive(Debug, Clone)]
pub struct AcmeDnsSettings {
    /// The acme-dns API (`https://auth.example.org`, or `http://` to loopback).
    pub api_url: String,
    /// Zones served: the acme-dns server's domain(s), holding every account's `fulldomain`.
    pub zones: Vec<String>,
    /// The accounts.
    pub accounts: Vec<AcmeDnsAccount>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries of throttled and transient calls.
    pub retry: RetryPolicy,
    /// Awaited before every API request: the account's client-side rate limit (shared).
    pub gate: Option<crate::SharedGate>,
}

impl AcmeDnsSettings {
    /// Settings with the default timeout and retries.
    pub fn new(api_url: impl Into<String>, zones: Vec<String>, accounts: Vec<AcmeDnsAccount>) -> Self {
        Self {
            api_url: api_url.into(),
            zones,
            accounts,
            timeout: DEFAULT_TIMEOUT,
            retry: crate::PROVIDER_RETRY,
            gate: None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The acme-dns adapter. Its `Debug` never shows a password.
pub struct AcmeDnsProvider {
    rest: Rest,
    api_url: String,
    zones: Vec<String>,
    /// fulldomain (normalized) -> account.
    accounts: HashMap<String, AcmeDnsAccount>,
    /// fulldomain -> the values this process last wrote, oldest first (at most two).
    written: Mutex<HashMap<String, Vec<String>>>,
    /// Serializes updates per account, so the remembered slots match the server's order.
    locks: NameLocks,
}

impl fmt::Debug for AcmeDnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.accounts.keys().collect();
        names.sort();
        f.debug_struct("AcmeDnsProvider")
            .field("api_url", &self.api_url)
            .field("zones", &self.zones)
            .field("fulldomains", &names)
            .finish_non_exhaustive()
    }
}

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

fn from_failure(failure: Failure, what: &str) -> ProviderError {
    match failure {
        Failure::Throttled { retry_after, message } => ProviderError::Throttled {
            provider: KIND,
            message: format!("{what}: still rate limited after retries ({message})"),
            retry_after,
        },
        Failure::Transient(message) => {
            ProviderError::Transient { provider: KIND, message: format!("{what}: {message}") }
        }
    }
}

/// Maps a non-success answer of an update for `account`.
fn update_error(answer: &Answer, account: &AcmeDnsAccount, value_len: usize) -> ProviderError {
    let code = serde_json::from_slice::<ErrorBody>(&answer.body).map(|b| b.error).unwrap_or_else(|_| answer.text());
    let who = format!("account for {} ({})", account.domain, account.fulldomain);
    match (answer.status, code.as_str()) {
        (StatusCode::UNAUTHORIZED, _) | (StatusCode::FORBIDDEN, _) => ProviderError::Auth {
            provider: KIND,
            message: format!(
                "the update was refused for the {who} (HTTP {} {code:?}): check its username, password_file and subdomain against what /register returned, and that dcvd's address is in the account's allowfrom",
                answer.status.as_u16()
            ),
        },
        (StatusCode::BAD_REQUEST, "bad_txt") => ProviderError::Rejected {
            provider: KIND,
            code: Some(code.clone()),
            message: format!(
                "the server refused the {value_len}-character value for the {who} (bad_txt): stock acme-dns accepts only 43-character values (ACME's key authorisation digest), and DigiCert's random values are 32 characters; use an acme-dns build that accepts them, or another provider for this zone"
            ),
        },
        (StatusCode::BAD_REQUEST, "bad_subdomain") => ProviderError::Rejected {
            provider: KIND,
            code: Some(code.clone()),
            message: format!(
                "the server refused subdomain {:?} of the {who} (bad_subdomain): copy `subdomain` exactly as /register returned it",
                account.subdomain
            ),
        },
        (status, _) => ProviderError::Rejected {
            provider: KIND,
            code: Some(code.clone()),
            message: format!("updating the {who} was rejected: HTTP {status}: {code}"),
        },
    }
}

impl AcmeDnsProvider {
    /// Validates the settings; no network call.
    pub fn new(settings: AcmeDnsSettings) -> Result<Self, ProviderError> {
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(err_config("no zones configured: list the acme-dns server's domain in `zones`"));
        }
        let loopback = rest::check_url("api_url", &settings.api_url).map_err(err_config)?;
        let mut accounts = HashMap::new();
        for mut account in settings.accounts {
            account.fulldomain = normalize_name(&account.fulldomain);
            let full = account.fulldomain.clone();
            if !zones.iter().any(|z| crate::below_zone(&full, z)) {
                return Err(err_config(format!(
                    "the fulldomain {full} of the account for {} is not inside this provider's zones ({}): add the acme-dns server's domain to `zones`",
                    account.domain,
                    zones.join(", ")
                )));
            }
            let password = account.password.expose_secret();
            if password.is_empty() || password.trim() != password {
                return Err(err_config(format!(
                    "the password of the account for {} is empty or has surrounding whitespace: store only the password in its file",
                    account.domain
                )));
            }
            if account.username.trim().is_empty() || account.subdomain.trim().is_empty() {
                return Err(err_config(format!("the account for {} needs username and subdomain", account.domain)));
            }
            if let Some(other) = accounts.insert(full.clone(), account) {
                return Err(err_config(format!(
                    "two accounts ({} and another) share the fulldomain {full}",
                    other.domain
                )));
            }
        }
        if accounts.is_empty() {
            return Err(err_config(
                "no accounts configured: add one [providers.NAME.accounts.\"<domain>\"] per domain",
            ));
        }
        let rest = Rest::new(KIND, loopback, settings.timeout, settings.retry)
            .map_err(err_config)?
            .with_gate(settings.gate.clone());
        Ok(Self {
            rest,
            api_url: settings.api_url.trim_end_matches('/').to_string(),
            zones,
            accounts,
            written: Mutex::new(HashMap::new()),
            locks: NameLocks::new(),
        })
    }

    fn account(&self, zone: &str, record: &Record) -> Result<&AcmeDnsAccount, ProviderError> {
        let (_, name) = check_owner(KIND, &self.zones, zone, &record.name)?;
        self.accounts.get(&name).ok_or_else(|| ProviderError::Rejected {
            provider: KIND,
            code: None,
            message: format!(
                "no acme-dns account has fulldomain {name}: add an account with fulldomain = \"{name}\" (the CNAME target of the domain's _dnsauth name)"
            ),
        })
    }
}

#[async_trait]
impl DnsProvider for AcmeDnsProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        if record.rtype != RecordType::Txt {
            return Err(ProviderError::Rejected {
                provider: KIND,
                code: None,
                message: format!(
                    "cannot publish {record}: acme-dns serves TXT records only; use method \"dns-txt-token\" with a _dnsauth CNAME delegation"
                ),
            });
        }
        let account = self.account(zone, record)?;
        let _guard = self.locks.lock(&account.fulldomain).await;
        if self
            .written
            .lock()
            .expect("written lock")
            .get(&account.fulldomain)
            .is_some_and(|v| v.contains(&record.value))
        {
            debug!(fulldomain = %account.fulldomain, "acmedns value already in one of the account's two slots");
            return Ok(Published::default());
        }
        let what = format!("updating the account for {}", account.domain);
        let url = format!("{}/update", self.api_url);
        let body = json!({ "subdomain": account.subdomain, "txt": record.value });
        let answer = self
            .rest
            .send(Method::POST, &url, &what, |r| {
                r.header("X-Api-User", &account.username)
                    .header("X-Api-Key", account.password.expose_secret())
                    .json(&body)
            })
            .await
            .map_err(|f| from_failure(f, &what))?;
        if !answer.status.is_success() {
            return Err(update_error(&answer, account, record.value.chars().count()));
        }
        let mut written = self.written.lock().expect("written lock");
        let slots = written.entry(account.fulldomain.clone()).or_default();
        slots.push(record.value.clone());
        if slots.len() > SLOTS {
            slots.remove(0);
        }
        info!(fulldomain = %account.fulldomain, domain = %account.domain, "acmedns TXT value updated");
        Ok(Published::default())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        // acme-dns has no delete: the value stays until two later updates overwrite it
        let (_, name) = check_owner(KIND, &self.zones, zone, &record.name)?;
        debug!(name = %name, "acmedns has no delete API: leaving the value for later updates to overwrite");
        Ok(())
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        // acme-dns cannot check credentials without writing; only reachability is checked
        let what = "checking the acme-dns API";
        let url = format!("{}/health", self.api_url);
        let answer = self.rest.send(Method::GET, &url, what, |r| r).await.map_err(|f| from_failure(f, what))?;
        if !answer.status.is_success() {
            return Err(ProviderError::Rejected {
                provider: KIND,
                code: Some(answer.status.as_u16().to_string()),
                message: format!("{what}: GET /health answered HTTP {}: is api_url the acme-dns API?", answer.status),
            });
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let (_, name) = check_owner(KIND, &self.zones, zone, name)?;
        if rtype != RecordType::Txt {
            return Ok(Vec::new());
        }
        // acme-dns has no read API: what this process last wrote
        Ok(self.written.lock().expect("written lock").get(&name).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(domain: &str, full: &str) -> AcmeDnsAccount {
        AcmeDnsAccount {
            domain: domain.into(),
            username: "c36f50e8-4632-44f0-83fe-e070fef28a10".into(),
            password: "acme-password-4711-aaaaaaaaaaaaaaaaaaaaaaa".to_string().into(),
            subdomain: full.split('.').next().unwrap_or_default().into(),
            fulldomain: full.into(),
        }
    }

    #[test]
    fn settings_are_checked_and_debug_hides_passwords() {
        let s = AcmeDnsSettings::new(
            "http://127.0.0.1:8053",
            vec!["auth.example.org".into()],
            vec![account("example.com", "8e5700ea.auth.example.org.")],
        );
        assert!(!format!("{s:?}").contains("acme-password-4711"));
        let p = AcmeDnsProvider::new(s.clone()).expect("provider");
        assert!(!format!("{p:?}").contains("acme-password-4711"));
        assert!(format!("{p:?}").contains("8e5700ea.auth.example.org"));

        let outside = AcmeDnsSettings { accounts: vec![account("example.com", "x.auth.example.net")], ..s.clone() };
        let err = AcmeDnsProvider::new(outside).expect_err("fulldomain outside the zones");
        assert!(err.to_string().starts_with("acmedns: the fulldomain x.auth.example.net"), "{err}");
        let twice = AcmeDnsSettings {
            accounts: vec![account("a.example", "x.auth.example.org"), account("b.example", "x.auth.example.org")],
            ..s.clone()
        };
        assert!(AcmeDnsProvider::new(twice).is_err());
        assert!(
            AcmeDnsProvider::new(AcmeDnsSettings { api_url: "http://auth.example.org".into(), ..s.clone() }).is_err()
        );
        assert!(AcmeDnsProvider::new(AcmeDnsSettings { accounts: vec![], ..s }).is_err());
    }
}
