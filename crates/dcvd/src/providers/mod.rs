//! One home per DNS provider type, and the one table that registers them.
//!
//! Each `providers::<type>` module owns its provider's settings schema (a serde struct with
//! spans), their validation into a settings value (with `file:line:col` errors), its credential
//! loading and the construction of its `dns_provider` adapter. [`TYPES`] maps each `type` to its
//! `parse` function and its default client-side rate limit; nothing else in dcvd names a
//! provider's keys. The configuration loader (`config::provider`) keeps the envelope
//! (`[providers.NAME]`, `type`, `zones`, `rate_limit`) and hands the rest of the table to the
//! provider's `parse`.
//!
//! The settings live here rather than in `dns_provider`: their errors need the configuration's
//! spans and secret resolution (`$CREDENTIALS_DIRECTORY`, `*_env`, file modes), which the
//! adapter library must not learn; adapters keep plain settings structs.
//!
//! Providers whose API limits requests per account share one client-side limiter per account
//! ([`ProviderSettings::account`]) across every section and reload of the process.
//!
//! Must not: talk to a provider while parsing (only `build` creates clients), or log secrets.

pub mod acmedns;
pub mod azure;
pub mod cloudflare;
pub mod exec;
pub mod gcloud;
pub mod memory;
pub mod powerdns;
pub mod rfc2136;
pub mod route53;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use dns_provider::{RequestGate, SharedGate, SharedProvider};

use crate::config::section::{ConfigError, Section};
use crate::config::{Provider, RateLimit};
use crate::metrics::Metrics;

pub use memory::memory_store;

/// Declares a provider section's serde schema: `deny_unknown_fields`, with the envelope's `type`
/// and `zones` declared first (the loader reads them) so that unknown-key errors list every key
/// the section takes.
macro_rules! section_schema {
    ($(#[$meta:meta])* struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            #[serde(rename = "type")]
            _type: serde::de::IgnoredAny,
            #[serde(rename = "zones")]
            _zones: serde::de::IgnoredAny,
            $($fields)*
        }
    };
}
pub(crate) use section_schema;

/// One provider type: how its section is parsed, and its API's documented request limit.
pub struct ProviderType {
    /// The `type` value.
    pub name: &'static str,
    /// Validates a section of this type into its settings.
    pub(crate) parse: fn(&mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError>,
    /// The client-side request limit per account.
    pub rate_limit: RateLimitRule,
}

/// Whether a provider type takes `rate_limit`, and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitRule {
    /// No HTTP API with request limits (DNS UPDATE, a local hook, memory): `rate_limit` is refused.
    NotApplicable,
    /// `rate_limit` is accepted; the default when it is absent (`None`: unlimited).
    Default(Option<RateLimit>),
}

/// The table: every provider type dcvd knows, in the order the docs list them.
pub const TYPES: &[ProviderType] = &[
    ProviderType {
        name: "route53",
        parse: route53::parse,
        // Route 53: five requests per second per AWS account (all APIs together).
        rate_limit: RateLimitRule::Default(Some(RateLimit { requests: 5, per: Duration::from_secs(1) })),
    },
    ProviderType {
        name: "cloudflare",
        parse: cloudflare::parse,
        // Cloudflare: 1,200 requests per five minutes per user (token).
        rate_limit: RateLimitRule::Default(Some(RateLimit { requests: 1200, per: Duration::from_secs(300) })),
    },
    ProviderType {
        name: "azure",
        parse: azure::parse,
        // Azure Resource Manager refills writes and deletes at 10 per second per subscription
        // and principal (reads 25); one window for all calls stays under both.
        rate_limit: RateLimitRule::Default(Some(RateLimit { requests: 10, per: Duration::from_secs(1) })),
    },
    ProviderType {
        name: "gcloud",
        parse: gcloud::parse,
        // Cloud DNS meters API requests per minute per project and user; 600 per minute stays
        // well inside the default quota and is plenty for DCV (one change per zone and batch).
        rate_limit: RateLimitRule::Default(Some(RateLimit { requests: 600, per: Duration::from_secs(60) })),
    },
    ProviderType {
        name: "powerdns",
        parse: powerdns::parse,
        // PowerDNS itself does not throttle; a proxy in front of it may (set `rate_limit`).
        rate_limit: RateLimitRule::Default(None),
    },
    ProviderType { name: "acmedns", parse: acmedns::parse, rate_limit: RateLimitRule::Default(None) },
    ProviderType { name: "rfc2136", parse: rfc2136::parse, rate_limit: RateLimitRule::NotApplicable },
    ProviderType { name: "exec", parse: exec::parse, rate_limit: RateLimitRule::NotApplicable },
    ProviderType { name: "memory", parse: memory::parse, rate_limit: RateLimitRule::NotApplicable },
];

/// The table entry of `type = name`.
pub fn provider_type(name: &str) -> Option<&'static ProviderType> {
    TYPES.iter().find(|t| t.name == name)
}

/// Compares settings values of any provider type (equal only when both type and value match).
pub trait DynEq {
    /// `self` as `Any`, for downcasts.
    fn as_any(&self) -> &dyn Any;
    /// Whether `other` is a value of the same type equal to `self`.
    fn dyn_eq(&self, other: &dyn Any) -> bool;
}

impl<T: PartialEq + 'static> DynEq for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn dyn_eq(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }
}

/// A provider's validated settings: compare by value (secrets included, through
/// [`crate::config::Secret`]), print without secrets, build the adapter.
#[async_trait]
pub trait ProviderSettings: DynEq + fmt::Debug + Send + Sync + 'static {
    /// The API account these settings act as, when requests to it are rate limited per account:
    /// sections with the same account share one limiter. Never contains a secret in clear
    /// (hash it).
    fn account(&self) -> Option<String> {
        None
    }

    /// Builds the adapter.
    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider>;
}

/// What `build` gets besides the settings.
pub struct BuildContext<'a> {
    /// The section's name.
    pub name: &'a str,
    /// The zones of the section.
    pub zones: &'a [String],
    /// The account's shared limiter, when the provider is rate limited.
    pub gate: Option<SharedGate>,
    /// The process's metrics (`None` in `check-config --online` and tests).
    pub metrics: Option<Arc<Metrics>>,
}

/// A short, stable fingerprint of a secret for [`ProviderSettings::account`] (never the secret).
pub fn fingerprint(secret: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Builds the adapter for one provider section.
pub async fn build(name: &str, provider: &Provider) -> anyhow::Result<SharedProvider> {
    build_with(name, provider, None).await
}

/// [`build`] reporting to `metrics`.
pub async fn build_with(
    name: &str,
    provider: &Provider,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<SharedProvider> {
    let gate = match (provider.rate_limit, provider.settings.account()) {
        (Some(limit), Some(account)) => Some(account_limiter(&account, limit)? as SharedGate),
        _ => None,
    };
    let cx = BuildContext { name, zones: &provider.zones, gate, metrics };
    provider.settings.build(&cx).await
}

/// The client-side limiter of one provider account: at most `requests` per `per` in any
/// interval, shared by every provider section acting as that account in this process (and kept
/// across reloads). The rolling-window limiter is CertCentral's (`certcentral::RateLimiter`): a
/// request counts from its admission until its answer is read, and for the window after that.
#[derive(Clone)]
pub struct AccountLimiter {
    account: String,
    limiter: certcentral::RateLimiter,
    admitted: Arc<std::sync::atomic::AtomicU64>,
}

impl AccountLimiter {
    /// Requests admitted so far, by every provider section of the account.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl fmt::Debug for AccountLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountLimiter").field("account", &self.account).field("limiter", &self.limiter).finish()
    }
}

#[async_trait]
impl RequestGate for AccountLimiter {
    async fn admit(&self) -> dns_provider::GatePass {
        let permit = self.limiter.admit(certcentral::Lane::Token).await;
        self.admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::new(permit)
    }
}

/// The one limiter of `account` with `limit` (created on first use).
pub fn account_limiter(account: &str, limit: RateLimit) -> anyhow::Result<Arc<AccountLimiter>> {
    /// Limiters by account and limit.
    type Registry = HashMap<(String, RateLimit), Arc<AccountLimiter>>;
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    let mut registry = REGISTRY.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = (account.to_owned(), limit);
    if let Some(existing) = registry.get(&key) {
        return Ok(existing.clone());
    }
    let limiter = certcentral::RateLimiter::new(&[certcentral::RateWindow::new(limit.requests, limit.per)])
        .map_err(|e| anyhow::anyhow!("rate limit of {account}: {e}"))?;
    let limiter = Arc::new(AccountLimiter { account: account.to_owned(), limiter, admitted: Arc::default() });
    registry.insert(key, limiter.clone());
    Ok(limiter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_account_shares_one_limiter() {
        let limit = RateLimit { requests: 3, per: Duration::from_secs(1) };
        let a = account_limiter("test:shared", limit).unwrap();
        let b = account_limiter("test:shared", limit).unwrap();
        let other = account_limiter("test:other", limit).unwrap();
        let start = tokio::time::Instant::now();
        // Six admissions from two handles of one account: three at once, three a window later.
        let mut at = Vec::new();
        for gate in [&a, &b, &a, &b, &a, &b] {
            gate.admit().await;
            at.push(start.elapsed());
        }
        let first_window = at.iter().filter(|d| **d < Duration::from_secs(1)).count();
        assert_eq!(first_window, 3, "admissions in the first second across both handles: {at:?}");
        // Another account is not held back by this one.
        let before = tokio::time::Instant::now();
        for _ in 0..3 {
            other.admit().await;
        }
        assert_eq!(before.elapsed(), Duration::ZERO);
        assert_eq!((a.admitted(), other.admitted()), (6, 3));
        assert!(Arc::ptr_eq(&a, &b));
    }
}
