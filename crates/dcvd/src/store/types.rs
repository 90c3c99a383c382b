//! The values the store keeps: units of work, their states, and the DNS records published for them.

use dns_provider::RecordType;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Whether a unit is a DV order (one order-level token) or an OV/EV domain (domain-level token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitKind {
    /// A DV order: `PUT /order/certificate/{id}/dcv-random-value`, one check for all its domains.
    Order,
    /// An OV/EV domain: `POST /domain/{id}/dcv/token`, checked on its own.
    Domain,
}

impl UnitKind {
    /// The lowercase name used in the database, logs and `dcvd status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Domain => "domain",
        }
    }
}

impl fmt::Display for UnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UnitKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "order" => Ok(Self::Order),
            "domain" => Ok(Self::Domain),
            _ => Err(ParseError::new("unit kind", s, "order, domain")),
        }
    }
}

/// One unit of work: a DigiCert order id or domain id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitId {
    /// Order or domain.
    pub kind: UnitKind,
    /// The CertCentral id (order id or domain id).
    pub id: u64,
}

impl UnitId {
    /// A DV order.
    pub fn order(id: u64) -> Self {
        Self { kind: UnitKind::Order, id }
    }

    /// An OV/EV domain.
    pub fn domain(id: u64) -> Self {
        Self { kind: UnitKind::Domain, id }
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// Where a unit is in the validation flow (see DESIGN.md "Flow and state machine").
///
/// The order of the variants is the order of the flow; `Ord` lets them key a `BTreeMap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitState {
    /// Nothing done yet.
    Pending,
    /// Token and expiry stored; records not yet (all) published.
    TokenIssued,
    /// Every record published; waiting for the authoritative name servers.
    Published,
    /// Every authoritative name server serves every record.
    Propagated,
    /// Asking DigiCert to check, with backoff.
    Checking,
    /// DigiCert reports the unit valid; records still to be removed.
    Valid,
    /// Valid and records removed (or cleanup disabled). Terminal.
    CleanedUp,
    /// The token expired before validation and no renewal is left. Terminal.
    Expired,
    /// A permanent error (see `last_error`). Terminal.
    Failed,
    /// Vanished from the configuration (or terminal at DigiCert) and its records were cleaned up.
    /// Terminal.
    Removed,
}

impl UnitState {
    /// Every state, in flow order.
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::TokenIssued,
        Self::Published,
        Self::Propagated,
        Self::Checking,
        Self::Valid,
        Self::CleanedUp,
        Self::Expired,
        Self::Failed,
        Self::Removed,
    ];

    /// The lowercase snake-case name used in the database, logs, metrics and `dcvd status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::TokenIssued => "token_issued",
            Self::Published => "published",
            Self::Propagated => "propagated",
            Self::Checking => "checking",
            Self::Valid => "valid",
            Self::CleanedUp => "cleaned_up",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::Removed => "removed",
        }
    }

    /// True when nothing more will happen to the unit (it keeps no published record).
    ///
    /// `Valid` is not terminal: its records still have to be removed.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::CleanedUp | Self::Expired | Self::Failed | Self::Removed)
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UnitState {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            ParseError::new(
                "unit state",
                s,
                "pending, token_issued, published, propagated, checking, valid, cleaned_up, \
                     expired, failed, removed",
            )
        })
    }
}

/// Where a published DNS record is in its life. The `*ing` states are intents written before the
/// provider call: after a crash they say the call may or may not have happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordStatus {
    /// Intent written; the provider call may or may not have happened: republish (idempotent) or
    /// clean up.
    Publishing,
    /// The provider accepted the record.
    Published,
    /// Intent to remove written; the provider call may or may not have happened: remove again.
    Removing,
    /// The provider removed the record (kept for the audit trail).
    Removed,
}

impl RecordStatus {
    /// The lowercase name used in the database and `dcvd status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publishing => "publishing",
            Self::Published => "published",
            Self::Removing => "removing",
            Self::Removed => "removed",
        }
    }
}

impl fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordStatus {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publishing" => Ok(Self::Publishing),
            "published" => Ok(Self::Published),
            "removing" => Ok(Self::Removing),
            "removed" => Ok(Self::Removed),
            _ => Err(ParseError::new("record status", s, "publishing, published, removing, removed")),
        }
    }
}

/// Where a unit comes from: the TOML configuration (`[[order]]`, `[[domain]]`, order files) or
/// a discovery scan of the CertCentral account (`[discovery]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum UnitSource {
    /// Listed in the configuration or an order file.
    #[default]
    Config,
    /// Found pending in the account by a discovery scan.
    Discovered,
}

impl UnitSource {
    /// The lowercase name used in the database and `dcvd status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Discovered => "discovered",
        }
    }
}

impl fmt::Display for UnitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UnitSource {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "config" => Ok(Self::Config),
            "discovered" => Ok(Self::Discovered),
            _ => Err(ParseError::new("unit source", s, "config, discovered")),
        }
    }
}

/// A string that is not the name of a [`UnitKind`], [`UnitState`], [`RecordStatus`] or
/// [`UnitSource`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct ParseError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl ParseError {
    fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        Self { what, value: value.to_owned(), expected }
    }
}

// The enums are stored as their `as_str()` names so the database is readable with `sqlite3`.
macro_rules! sql_text_enum {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value.as_str()?.parse().map_err(|e: ParseError| FromSqlError::Other(Box::new(e)))
            }
        }
    )*};
}

sql_text_enum!(UnitKind, UnitState, RecordStatus, UnitSource);

/// A unit as stored. Timestamps are unix milliseconds unless noted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitRow {
    /// Which order or domain.
    pub unit: UnitId,
    /// Current state.
    pub state: UnitState,
    /// DCV method from the config (`dns-txt-token`, `dns-cname-token`).
    pub method: String,
    /// The domains this unit validates (stored as a JSON array).
    pub domains: Vec<String>,
    /// Provider name from the config, when set explicitly.
    pub provider: Option<String>,
    /// The DCV random value / token (published in DNS, so not a secret).
    pub token: Option<String>,
    /// When the token expires, unix **seconds**.
    pub token_expires_at: Option<i64>,
    /// CNAME target suffix DigiCert returned (`dcv.digicert.com`).
    pub verification_value: Option<String>,
    /// How many times the token was renewed after expiring.
    pub renewals: u32,
    /// DigiCert checks since the token was issued.
    pub attempts: u32,
    /// When the orchestrator should next act on this unit.
    pub next_action_at: Option<i64>,
    /// The last error, for `dcvd status`.
    pub last_error: Option<String>,
    /// False once the unit vanished from the configuration.
    pub in_config: bool,
    /// When `state` last changed. Maintained by the store: [`Store::save_unit`] and
    /// [`Store::transition`] ignore the value passed in.
    ///
    /// [`Store::save_unit`]: super::Store::save_unit
    /// [`Store::transition`]: super::Store::transition
    pub state_since: i64,
    /// When the unit was first seen.
    pub created_at: i64,
    /// Last write.
    pub updated_at: i64,
    /// The zones' largest negative TTL (SOA minimum) seen during propagation, in milliseconds:
    /// the first check after "not found" waits at least this long, also after a restart.
    pub negative_ttl_ms: Option<u64>,
    /// Whether dcvd already switched the order's DCV method at DigiCert (done once per unit).
    pub method_switched: bool,
    /// Consecutive retryable failures of the current step, for its backoff.
    pub transient_failures: u32,
    /// Where the unit comes from (the configuration or a discovery scan).
    pub source: UnitSource,
    /// The instance holding the unit's lease, if any. Maintained by the store
    /// ([`Store::claim_units`](super::Store::claim_units) and friends); writes ignore it.
    pub owner: Option<String>,
    /// How many times the unit was claimed: each claim adds one, so a write carrying an older
    /// epoch is refused (fencing). Maintained by the store.
    pub epoch: i64,
    /// When the lease ends (unix millis, the database's clock on PostgreSQL) unless renewed.
    /// Maintained by the store.
    pub lease_expires_at: Option<i64>,
}

impl UnitRow {
    /// A unit as the store first records it: `Pending`, nothing done, all times `now`.
    pub fn new_pending(unit: UnitId, method: &str, domains: &[String], provider: Option<&str>, now: i64) -> Self {
        Self {
            unit,
            state: UnitState::Pending,
            method: method.to_owned(),
            domains: domains.to_vec(),
            provider: provider.map(str::to_owned),
            token: None,
            token_expires_at: None,
            verification_value: None,
            renewals: 0,
            attempts: 0,
            next_action_at: None,
            last_error: None,
            in_config: true,
            state_since: now,
            created_at: now,
            updated_at: now,
            negative_ttl_ms: None,
            method_switched: false,
            transient_failures: 0,
            source: UnitSource::Config,
            owner: None,
            epoch: 0,
            lease_expires_at: None,
        }
    }
}

/// A DNS record dcvd published (or intends to publish, or removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRow {
    /// Store-assigned id, stable for the record's life.
    pub id: i64,
    /// The unit the record validates.
    pub unit: UnitId,
    /// Name of the provider (config key) that owns the zone.
    pub provider: String,
    /// Zone the record lives in.
    pub zone: String,
    /// Absolute owner name.
    pub name: String,
    /// `TXT` or `CNAME`.
    pub rtype: RecordType,
    /// Record data exactly as published (TXT text or CNAME target).
    pub value: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// The provider's id for the record (Cloudflare record id), when it has one.
    pub provider_id: Option<String>,
    /// The provider's change id (Route53 `ChangeInfo.Id`), when it has one.
    pub change_id: Option<String>,
    /// Where the record is in its life.
    pub status: RecordStatus,
    /// When the first publish intent was written (unix millis).
    pub created_at: i64,
    /// Last write (unix millis).
    pub updated_at: i64,
}

/// A record to publish, as given to [`Store::record_publish_intent`](super::Store::record_publish_intent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    /// Name of the provider (config key) that owns the zone.
    pub provider: String,
    /// Zone the record lives in.
    pub zone: String,
    /// Absolute owner name.
    pub name: String,
    /// `TXT` or `CNAME`.
    pub rtype: RecordType,
    /// Record data (TXT text or CNAME target).
    pub value: String,
    /// TTL in seconds.
    pub ttl: u32,
}

/// One unit as the configuration describes it, for [`Store::sync_units`](super::Store::sync_units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitSpec<'a> {
    /// Which order or domain.
    pub unit: UnitId,
    /// DCV method from the config.
    pub method: &'a str,
    /// The domains to validate.
    pub domains: &'a [String],
    /// Provider name when the config sets one.
    pub provider: Option<&'a str>,
    /// Where the unit comes from.
    pub source: UnitSource,
}

/// How the store's connection is configured, for `dcvd status` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// Path of the SQLite database.
    pub path: PathBuf,
    /// `PRAGMA user_version`: the schema version.
    pub schema_version: u32,
    /// `PRAGMA journal_mode` (`wal`).
    pub journal_mode: String,
    /// `PRAGMA synchronous`: 0 off, 1 normal, 2 full, 3 extra.
    pub synchronous: i64,
    /// `PRAGMA foreign_keys`.
    pub foreign_keys: bool,
    /// True for a store opened with [`Store::open_read_only`](super::Store::open_read_only).
    pub read_only: bool,
}
