//! The [`DnsProvider`] trait and its adapters: Route53, Cloudflare, Azure DNS, Google Cloud DNS,
//! PowerDNS, acme-dns, RFC 2136, exec and memory.
//!
//! This crate publishes and removes DCV records (TXT values, CNAME targets) at absolute owner
//! names, through whichever DNS provider owns the zone. It knows nothing about DigiCert, tokens,
//! propagation checks or the daemon's state: it must not decide *what* to publish, only do it
//! exactly, idempotently, and without touching anyone else's values.
//!
//! # Layout
//! - [`DnsProvider`]: the contract every adapter meets (tested by one conformance battery).
//! - [`Router`]: picks the provider and zone for a record name by longest zone suffix.
//! - [`ProviderError`]: one error type whose messages start with the provider name.
//! - [`DnsName`], [`normalize_name`], [`in_zone`]: the one name type, normaliser and
//!   zone-membership check of the workspace.
//! - `rrset` (private): merging values into a record set, shared by Route53 and Cloud DNS.
//! - `locks` (private): per-name in-process locks of the read-merge-write adapters.
//! - `txt` (private): TXT quoting in zone-file form, shared by every adapter whose API wants it.
//! - [`RequestGate`]: what an adapter awaits before each API request (the daemon's per-account
//!   client-side rate limit, shared by every provider section of one account).
//! - adapters: [`memory`], [`exec`], [`rfc2136`], [`route53`], [`cloudflare`], [`azure`], [`gcloud`],
//!   [`powerdns`], [`acmedns`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod acmedns;
pub mod azure;
pub mod cloudflare;
pub mod exec;
pub mod gcloud;
mod locks;
pub mod memory;
mod name;
pub mod powerdns;
mod rest;
pub mod rfc2136;
pub mod route53;
mod router;
mod rrset;
mod txt;

pub use name::{DnsName, below_zone, in_zone, normalize_name, relative_name};
pub use retry::RetryPolicy;
pub use router::{RouteError, Router};

/// An error with every cause, `error: cause: cause`, each text once (some errors repeat their
/// source in their own message). reqwest says only "error sending request"; its sources say
/// why (connection refused, certificate, DNS), which is what an operator needs to read.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Retries of throttled and transient calls of the Route53, PowerDNS and acme-dns adapters
/// unless configured otherwise: 6 attempts, 400 ms doubling up to 10 s.
pub const PROVIDER_RETRY: RetryPolicy = RetryPolicy::new(6, Duration::from_millis(400), Duration::from_secs(10));

/// Retries of the Cloudflare, Azure and Cloud DNS HTTP clients: 5 attempts, 500 ms doubling up
/// to 60 s.
pub(crate) const CLOUD_API_RETRY: RetryPolicy =
    RetryPolicy::new(5, Duration::from_millis(500), Duration::from_secs(60));

/// Awaited by an adapter before each request to its provider's API (every attempt, retries
/// included): the daemon's client-side rate limit of the provider account, shared by every
/// adapter instance acting as that account. The adapter does not know the limit.
#[async_trait]
pub trait RequestGate: Send + Sync + fmt::Debug {
    /// Returns when one more request may be sent, with a pass the adapter holds until the
    /// request's answer is read: the provider counts the request when it arrives, somewhere
    /// before that, so the gate counts it until the pass is dropped.
    async fn admit(&self) -> GatePass;
}

/// Held while an admitted request is on its way (see [`RequestGate::admit`]); whatever the gate
/// needs to know when it ends.
pub type GatePass = Box<dyn std::any::Any + Send>;

/// A gate shared by adapters.
pub type SharedGate = Arc<dyn RequestGate>;

/// Awaits `gate` when there is one; hold the pass until the answer is read.
pub(crate) async fn admit(gate: Option<&SharedGate>) -> Option<GatePass> {
    match gate {
        Some(gate) => Some(gate.admit().await),
        None => None,
    }
}

/// The type of a DCV record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// A TXT record whose value is the DCV random value.
    Txt,
    /// A CNAME record whose value is the target name.
    Cname,
}

impl RecordType {
    /// The record type as DNS writes it: `TXT` or `CNAME`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Txt => "TXT",
            Self::Cname => "CNAME",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TXT" => Ok(Self::Txt),
            "CNAME" => Ok(Self::Cname),
            other => Err(format!("unsupported record type {other:?} (expected TXT or CNAME)")),
        }
    }
}

/// One record to publish or remove.
///
/// `name` is absolute, lower-case, without a trailing dot (`_dnsauth.example.com`). For TXT,
/// `value` is the bare string (no quotes); for CNAME it is the target name without a trailing dot
/// (`abc123.dcv.digicert.com`). Adapters add dots and quotes as their backend needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    /// Absolute owner name, lower-case, no trailing dot.
    pub name: String,
    /// TXT or CNAME.
    pub rtype: RecordType,
    /// TXT string or CNAME target (no trailing dot).
    pub value: String,
    /// Time to live in seconds.
    pub ttl: u32,
}

impl Record {
    /// A TXT record with the default TTL of 60 s.
    pub fn txt(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self { name: normalize_name(&name.into()), rtype: RecordType::Txt, value: value.into(), ttl: 60 }
    }

    /// A CNAME record with the default TTL of 60 s.
    pub fn cname(name: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            name: normalize_name(&name.into()),
            rtype: RecordType::Cname,
            value: normalize_name(&target.into()),
            ttl: 60,
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", self.name, self.rtype, self.value)
    }
}

/// The HTTP client of the HTTP API adapters: dcvd's user agent, 10 s to connect, 30 s per
/// request. `loopback`: the endpoint is a local test server, reached without any configured proxy.
pub(crate) fn http_client(loopback: bool) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    if loopback {
        builder = builder.no_proxy();
    }
    builder
        .user_agent(concat!("dcvd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Checks that `zone` is one of `zones` and that `name` lies inside it; returns both normalized.
/// Shared by the adapters so every one refuses a misrouted record with the same words.
pub fn check_owner(
    provider: &'static str,
    zones: &[String],
    zone: &str,
    name: &str,
) -> Result<(String, String), ProviderError> {
    let zone = normalize_name(zone);
    if !zones.contains(&zone) {
        return Err(ProviderError::ZoneNotFound {
            provider,
            zone,
            message: format!("this provider serves {zones:?}; add the zone to its `zones`"),
        });
    }
    let name = normalize_name(name);
    if !in_zone(&name, &zone) {
        return Err(ProviderError::Rejected {
            provider,
            code: None,
            message: format!("{name} is not inside zone {zone}"),
        });
    }
    Ok((zone, name))
}

/// What a provider returns for a published record, stored by the daemon so it can remove or
/// wait for exactly that record later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The backend's id for the record, where it has one (Cloudflare record id).
    pub provider_id: Option<String>,
    /// A change to wait for with [`DnsProvider::wait_until_applied`] (Route53 change id).
    pub change_id: Option<String>,
}

/// A DNS provider adapter.
///
/// # Contract
/// - [`publish`](Self::publish) is idempotent: publishing a value that is already there succeeds
///   and leaves exactly one copy of it.
/// - [`remove`](Self::remove) removes exactly the given value at the given name and type, never
///   another value of the same RRset; removing an absent value succeeds.
/// - A CNAME is refused with [`ProviderError::Conflict`] when another record type (or another
///   CNAME target) owns the name.
/// - Errors start with the provider's kind and say what to do; throttling is retried inside the
///   adapter with backoff, and what is still retryable afterwards says so through
///   [`ProviderError::is_retryable`].
/// - Names are absolute: the adapter never appends the zone to a name that already ends with it.
#[async_trait]
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// The adapter kind, as written in the config's `type` (`cloudflare`, `route53`, ...).
    fn kind(&self) -> &'static str;

    /// The zones this instance serves (absolute, lower-case, no trailing dot).
    fn zones(&self) -> &[String];

    /// Publishes one record in `zone`. Idempotent.
    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError>;

    /// Removes exactly `record`'s value from `zone`; succeeds when it is already absent.
    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError>;

    /// Publishes many records of one zone. The default loops; adapters with batch APIs (Route53)
    /// override it. Returns one [`Published`] per record, in order.
    async fn publish_batch(&self, zone: &str, records: &[Record]) -> Result<Vec<Published>, ProviderError> {
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(self.publish(zone, record).await?);
        }
        Ok(out)
    }

    /// Removes many records of one zone. The default loops.
    async fn remove_batch(&self, zone: &str, records: &[Record]) -> Result<(), ProviderError> {
        for record in records {
            self.remove(zone, record).await?;
        }
        Ok(())
    }

    /// Waits until the provider says the given changes are applied on its name servers (Route53
    /// GetChange INSYNC). The default returns at once: DNS checks are the final word anyway.
    async fn wait_until_applied(&self, _published: &[Published], _timeout: Duration) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Checks credentials and permissions for every configured zone without changing anything.
    async fn preflight(&self) -> Result<(), ProviderError>;

    /// Reads back the values currently held by the backend at `name` and `rtype` (TXT strings
    /// unquoted, CNAME targets without trailing dot). Used by `dcvd status`, tests and cleanup.
    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError>;
}

/// A shared provider.
pub type SharedProvider = Arc<dyn DnsProvider>;

/// What went wrong in a provider call. Every message starts with the provider kind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// Credentials missing, wrong, or lacking a permission; not retryable.
    #[error("{provider}: {message}")]
    Auth {
        /// Provider kind.
        provider: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// The zone is not hosted by this provider account.
    #[error("{provider}: zone {zone} not found: {message}")]
    ZoneNotFound {
        /// Provider kind.
        provider: &'static str,
        /// The zone looked up.
        zone: String,
        /// Details.
        message: String,
    },
    /// The record conflicts with existing data (a CNAME where other records exist).
    #[error("{provider}: {message}")]
    Conflict {
        /// Provider kind.
        provider: &'static str,
        /// What conflicts.
        message: String,
    },
    /// Rate limited and still throttled after the adapter's own retries.
    #[error("{provider}: throttled: {message}")]
    Throttled {
        /// Provider kind.
        provider: &'static str,
        /// Details.
        message: String,
        /// The backend's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A network failure, timeout or 5xx: retryable.
    #[error("{provider}: {message}")]
    Transient {
        /// Provider kind.
        provider: &'static str,
        /// Details.
        message: String,
    },
    /// The backend rejected the request; not retryable.
    #[error("{provider}: {message}")]
    Rejected {
        /// Provider kind.
        provider: &'static str,
        /// The backend's error code, when it has one.
        code: Option<String>,
        /// Details.
        message: String,
    },
    /// The provider's configuration is unusable (bad secret, bad command, ...).
    #[error("{provider}: {message}")]
    Config {
        /// Provider kind.
        provider: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ProviderError {
    /// Whether trying again later can succeed (throttling, network, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Transient { .. })
    }

    /// The provider kind this error came from.
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Auth { provider, .. }
            | Self::ZoneNotFound { provider, .. }
            | Self::Conflict { provider, .. }
            | Self::Throttled { provider, .. }
            | Self::Transient { provider, .. }
            | Self::Rejected { provider, .. }
            | Self::Config { provider, .. } => provider,
        }
    }
}
