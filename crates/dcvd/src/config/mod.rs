//! The configuration: the TOML schema of `dcvd.toml` and its order files, validated once into
//! types that cannot be invalid.
//!
//! Every error is a [`ConfigError`] naming the file, line and column and what is expected:
//! unknown keys, wrong types, bad durations or addresses, missing or unreadable secrets, methods
//! dcvd cannot publish, duplicate ids, domains no provider serves. Secrets are read from
//! `*_file` (relative paths under `$CREDENTIALS_DIRECTORY`) or `*_env` and kept in
//! [`SecretString`], so `Debug` never shows them; problems that are not errors (a secret file
//! readable by others) end up in [`Config::warnings`].
//!
//! This module reads files and environment variables only; it never talks to CertCentral or a
//! DNS provider (an RFC 2136 `server` given as a host name is resolved once, at load).
//!
//! # Layout
//! - `error`: [`ConfigError`], [`Location`] and byte-span to line/column conversion.
//! - `env`: [`Environment`] (where `*_env`, `$CREDENTIALS_DIRECTORY`, `$STATE_DIRECTORY` come
//!   from) and secret resolution.
//! - `raw`: the serde schema as written; values checkable on their own are parsed there.
//! - `provider`: the `[providers.NAME]` envelope (`type`, `zones`, `rate_limit`); the rest of
//!   each section goes to its type's home in `crate::providers` through `section`.
//! - `section`: what a provider's home gets: [`section::Section`], [`Secret`], value types.
//! - `notify`: the `[notify]` section (delivery is `crate::notify`).
//! - `discovery`: the `[discovery]` section (the scan is `crate::discovery`).
//! - `store`: the `[store]` section (SQLite or PostgreSQL, instance id, lease ttl).
//! - `load`: cross-field validation, order files, units.
//! - `names`: domain/zone normalization and zone matching.
//! - `host`: [`Config::check_state_dir`], the checks of the state directory as the running user
//!   (the only part that looks at the host beyond reading files).

mod discovery;
mod env;
mod error;
mod host;
mod load;
mod names;
mod notify;
mod provider;
mod raw;
pub(crate) mod section;
mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use certcentral::ValidationScope;
use secrecy::SecretString;
use serde::Deserialize;

pub use discovery::{DEFAULT_REVALIDATE_BEFORE, Discovery};
pub use env::Environment;
pub use error::{ConfigError, Location};
pub use notify::Notify;
pub use section::Secret;
pub use store::{DEFAULT_LEASE_TTL, MIN_LEASE_TTL, StoreSettings};

pub use crate::store::UnitSource;

/// The default configuration file.
pub const DEFAULT_PATH: &str = "/etc/dcvd/dcvd.toml";
/// CertCentral Services API v2 (US). The EU instance is `https://certcentral.digicert.eu/services/v2`.
pub const DEFAULT_BASE_URL: &str = "https://www.digicert.com/services/v2";
/// The state directory when neither `state_dir` nor `$STATE_DIRECTORY` is set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dcvd";
/// Default `daemon.rescan`: every five minutes.
pub const DEFAULT_RESCAN: &str = "0 */5 * * * *";

/// A validated configuration: the main file plus every order file its `order_files` matched.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[certcentral]`: API endpoint, key and client-side rate limits.
    pub certcentral: CertCentral,
    /// `[daemon]`: state, scheduling and logging.
    pub daemon: Daemon,
    /// `[propagation]`: how dcvd waits for name servers.
    pub propagation: Propagation,
    /// `[check]`: backoff of DigiCert's DCV checks.
    pub check: Check,
    /// `[providers.NAME]` by name.
    pub providers: BTreeMap<String, Provider>,
    /// `[notify]`: where terminal unit states are reported (none when absent).
    pub notify: Option<Notify>,
    /// `[discovery]`: pending work taken from the account (none when absent).
    pub discovery: Option<Discovery>,
    /// `[store]`: SQLite in `daemon.state_dir` (the default) or PostgreSQL; instance and leases.
    pub store: StoreSettings,
    /// `[[order]]` and `[[domain]]` units, in file order (main file first), then the units a
    /// discovery scan added ([`Config::with_discovered`]).
    pub units: Vec<Unit>,
    /// Problems that are not errors, formatted `FILE:LINE:COL: message`; log them at WARN.
    pub warnings: Vec<String>,
    /// The files read: the main file first, then the order files.
    pub files: Vec<PathBuf>,
    /// Position of each unit in `units`, for O(1) lookups by key (every step looks its unit up).
    pub(crate) unit_index: std::collections::HashMap<UnitKey, usize>,
    /// Where `daemon.state_dir` is written (`None`: `$STATE_DIRECTORY` or the default), for
    /// [`Config::check_state_dir`]'s messages.
    pub state_dir_origin: Option<Location>,
    /// Discovered units that a scan found due again after they had left the discovered set (a
    /// domain whose validation nears its end once more): one that ended is started over.
    pub rediscovered: std::collections::HashSet<UnitKey>,
}

impl Config {
    /// Parses a configuration given as a string (errors name the file `<string>`; relative
    /// `order_files` globs and secret files resolve against the current directory).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_named(text, Path::new("<string>"))
    }

    /// Parses `text` as if read from `file` (used in errors; relative paths resolve against
    /// its directory), with the process environment.
    pub fn from_toml_named(text: &str, file: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_with(text, file, &Environment::process())
    }

    /// Parses `text` as if read from `file`, reading `*_env` secrets, `$CREDENTIALS_DIRECTORY`
    /// and `$STATE_DIRECTORY` from `env`.
    pub fn from_toml_with(text: &str, file: &Path, env: &Environment) -> Result<Self, ConfigError> {
        load::build(text, file, env)
    }

    /// Reads and validates `path` and every order file matched by `daemon.order_files`
    /// (relative globs are relative to the directory of `path`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &Environment::process())
    }

    /// [`load`](Self::load) with an explicit environment.
    pub fn load_with(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read configuration: {e}")))?;
        Self::from_toml_with(&text, path, env)
    }

    /// Only the `[daemon]` section of `path` (the file's schema is still checked), without
    /// reading any secret or order file: for commands that only look at the state directory
    /// (`dcvd status`), so they work without the service's credentials.
    pub fn load_daemon(path: &Path, env: &Environment) -> Result<Daemon, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read configuration: {e}")))?;
        load::build_daemon(&text, path, env)
    }

    /// [`load_daemon`](Self::load_daemon) plus `[store]`: the store's password is the only
    /// secret read (a PostgreSQL store needs it to be read at all).
    pub fn load_daemon_and_store(path: &Path, env: &Environment) -> Result<(Daemon, StoreSettings), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read configuration: {e}")))?;
        load::build_daemon_and_store(&text, path, env)
    }

    /// The settings a running process cannot change (they take effect at the next start) that
    /// differ in `new`: `(key, old, new)` for `daemon.state_dir`, `daemon.metrics_listen` and
    /// `daemon.log_format`.
    pub fn restart_only_changes(&self, new: &Self) -> Vec<(&'static str, String, String)> {
        let (a, b) = (&self.daemon, &new.daemon);
        let listen = |l: Option<SocketAddr>| l.map_or_else(|| "(none)".to_owned(), |l| l.to_string());
        let mut changes = Vec::new();
        if a.state_dir != b.state_dir {
            changes.push(("state_dir", a.state_dir.display().to_string(), b.state_dir.display().to_string()));
        }
        if a.metrics_listen != b.metrics_listen {
            changes.push(("metrics_listen", listen(a.metrics_listen), listen(b.metrics_listen)));
        }
        if a.log_format != b.log_format {
            changes.push(("log_format", format!("{:?}", a.log_format), format!("{:?}", b.log_format)));
        }
        changes
    }

    /// This configuration plus the units a discovery scan found: a discovered unit whose key a
    /// configured unit has is dropped (the TOML wins). `rediscovered` lists discovered units to
    /// start over if they ended (see [`Config::rediscovered`]).
    #[must_use]
    pub fn with_discovered(mut self, discovered: Vec<Unit>, rediscovered: std::collections::HashSet<UnitKey>) -> Self {
        self.units.retain(|u| u.source == UnitSource::Config);
        let configured: std::collections::HashSet<UnitKey> = self.units.iter().map(|u| u.key).collect();
        self.units.extend(discovered.into_iter().filter(|u| !configured.contains(&u.key)));
        self.rediscovered = rediscovered.into_iter().filter(|k| !configured.contains(k)).collect();
        self.unit_index = self.units.iter().enumerate().map(|(i, u)| (u.key, i)).collect();
        self
    }

    /// The unit with this key.
    pub fn unit(&self, key: UnitKey) -> Option<&Unit> {
        // The index is built at load; `units` is public, so fall back to a scan if it was edited.
        match self.unit_index.get(&key).and_then(|&i| self.units.get(i)) {
            Some(unit) if unit.key == key => Some(unit),
            _ => self.units.iter().find(|u| u.key == key),
        }
    }

    /// The provider that publishes records for `domain` (`*.` stripped, case and trailing dot
    /// ignored): the named `provider` when given (if it serves the domain), else the provider
    /// with the longest zone suffix. For domains learnt at run time (an order's `dns_names`).
    pub fn provider_for(&self, domain: &str, provider: Option<&str>) -> Option<ProviderMatch<'_>> {
        let domain = domain.to_ascii_lowercase();
        let domain = domain.strip_suffix('.').unwrap_or(&domain);
        load::find_provider(&self.providers, names::base(domain), provider).ok()
    }
}

/// The provider and zone that serve a domain.
#[derive(Debug, Clone, Copy)]
pub struct ProviderMatch<'a> {
    /// The provider's name (`[providers.NAME]`).
    pub name: &'a str,
    /// The provider.
    pub provider: &'a Provider,
    /// The zone of the provider that contains the domain (longest suffix).
    pub zone: &'a str,
}

/// `[certcentral]`.
#[derive(Debug, Clone)]
pub struct CertCentral {
    /// Services API v2 base URL, without trailing slash.
    pub base_url: String,
    /// The API key (`api_key_file` or `api_key_env`).
    pub api_key: SecretString,
    /// Client-side request windows shared by every task (default 100/5s and 1000/3m).
    pub rate_limits: Vec<RateLimit>,
    /// Per-request timeout (default 30s).
    pub timeout: Duration,
    /// `base_url` is plain http to a loopback host (simulators); http elsewhere is refused.
    pub allow_insecure_http: bool,
    /// The account's domain validation scope (CertCentral's default: base domains); orders may
    /// override it.
    pub validation_scope: ValidationScope,
    /// Look up CAA before requesting a token and fail a unit whose names CAA forbids to DigiCert
    /// (`caa_check`, default true).
    pub caa_check: bool,
}

/// At most `requests` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests allowed in one window (>= 1).
    pub requests: u32,
    /// The window.
    pub per: Duration,
}

/// The default client-side limits: DigiCert documents 100 per 5 seconds and 1000 per 5 (newer
/// page: 3) minutes per API key; the stricter one (5 minutes) holds under both.
pub fn default_rate_limits() -> Vec<RateLimit> {
    vec![
        RateLimit { requests: 100, per: Duration::from_secs(5) },
        RateLimit { requests: 1000, per: Duration::from_secs(300) },
    ]
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// The state store directory: `state_dir`, else `$STATE_DIRECTORY`, else `/var/lib/dcvd`.
    pub state_dir: PathBuf,
    /// Globs of extra files holding `[[order]]`/`[[domain]]`, as written.
    pub order_files: Vec<String>,
    /// Cron expression (6 fields, tokio-cron-scheduler syntax) for re-reading order files and
    /// refreshing statuses; `None` when `rescan = "off"`.
    pub rescan: Option<String>,
    /// DNS provider calls in flight at once (>= 1).
    pub max_concurrent: usize,
    /// Remove published records once a unit is valid.
    pub cleanup: bool,
    /// What to do when a token expires before validation.
    pub on_expiry: OnExpiry,
    /// Token renewals per unit with `on_expiry = "renew"`.
    pub max_renewals: u32,
    /// Log output format.
    pub log_format: LogFormat,
    /// Address of the Prometheus `/metrics` and `/healthz` listener.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            order_files: Vec::new(),
            rescan: Some(DEFAULT_RESCAN.to_owned()),
            max_concurrent: 64,
            cleanup: true,
            on_expiry: OnExpiry::Renew,
            max_renewals: 3,
            log_format: LogFormat::Auto,
            metrics_listen: None,
        }
    }
}

/// `daemon.on_expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExpiry {
    /// Fetch a new token and start over, at most `max_renewals` times.
    #[default]
    Renew,
    /// Stop: the unit fails.
    Fail,
}

/// `daemon.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald when `JOURNAL_STREAM` is set, else text.
    #[default]
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[propagation]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagation {
    /// Recursive resolvers used to find zones and their name servers.
    pub resolvers: Vec<Resolver>,
    /// Which servers must serve a record before DigiCert is asked to check.
    pub check: PropagationMode,
    /// Port of authoritative queries (53; tests run servers on high ports).
    pub nameserver_port: u16,
    /// Shortest poll interval.
    pub poll_min: Duration,
    /// Longest poll interval.
    pub poll_max: Duration,
    /// Give up on a record after this long.
    pub timeout: Duration,
    /// Global cap on DNS queries per second.
    pub max_queries_per_second: u32,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            resolvers: vec![Resolver::System],
            check: PropagationMode::Authoritative,
            nameserver_port: 53,
            poll_min: Duration::from_millis(250),
            poll_max: Duration::from_secs(2),
            timeout: Duration::from_secs(3600),
            max_queries_per_second: 3000,
        }
    }
}

/// A recursive resolver of `propagation.resolvers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolver {
    /// `"system"`: the system configuration (resolv.conf).
    System,
    /// `"ip"` (port 53) or `"ip:port"`.
    Addr(SocketAddr),
}

/// `propagation.check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropagationMode {
    /// Every authoritative name server of the zone.
    #[default]
    Authoritative,
    /// The configured recursive resolvers.
    Resolvers,
    /// Both.
    Both,
}

/// `[check]`: backoff between DigiCert checks that answer "not found yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// First interval.
    pub min_interval: Duration,
    /// Cap.
    pub max_interval: Duration,
}

impl Default for Check {
    fn default() -> Self {
        Self { min_interval: Duration::from_secs(5), max_interval: Duration::from_secs(600) }
    }
}

/// A DNS provider section (`[providers.NAME]`): the envelope the configuration knows (`type`,
/// `zones`, `rate_limit`) and the settings its type's home (`crate::providers::<type>`) parsed.
/// Compares by value, secrets included (a reload keeps an adapter only when nothing changed);
/// `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The `type`.
    pub kind: &'static str,
    /// The zones it serves (normalized).
    pub zones: Vec<String>,
    /// The client-side request limit of its account (`rate_limit`, else the type's default;
    /// `None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// The type's own settings.
    pub settings: std::sync::Arc<dyn crate::providers::ProviderSettings>,
}

impl PartialEq for Provider {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.zones == other.zones
            && self.rate_limit == other.rate_limit
            && self.settings.dyn_eq(other.settings.as_any())
    }
}

impl Provider {
    /// The `type` of the provider.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The zones it serves.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The settings as their concrete type (`crate::providers::cloudflare::Cloudflare`, ...),
    /// `None` for another type.
    pub fn settings<T: 'static>(&self) -> Option<&T> {
        self.settings.as_any().downcast_ref::<T>()
    }
}

/// Identifies a unit of work: a DV order or an OV/EV domain (separate id spaces).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum UnitKey {
    /// `[[order]]`: a DV order id.
    Order(u64),
    /// `[[domain]]`: a CertCentral domain id.
    Domain(u64),
}

impl UnitKey {
    /// The id.
    pub fn id(self) -> u64 {
        match self {
            Self::Order(id) | Self::Domain(id) => id,
        }
    }
}

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Order(id) => write!(f, "order {id}"),
            Self::Domain(id) => write!(f, "domain {id}"),
        }
    }
}

/// A DCV method dcvd can publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// TXT record holding the random value.
    DnsTxtToken,
    /// CNAME record built from the random value.
    DnsCnameToken,
}

impl Method {
    /// CertCentral's name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsTxtToken => "dns-txt-token",
            Self::DnsCnameToken => "dns-cname-token",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the TXT record goes (`txt_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxtName {
    /// `_dnsauth.<domain>` (default).
    #[default]
    Dnsauth,
    /// `<domain>` itself.
    Apex,
}

/// Which CNAME form to publish (`cname_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CnameName {
    /// `_dnsauth.<domain>` CNAME `<value>.dcv.digicert.com` (default, DigiCert's preferred form).
    #[default]
    Dnsauth,
    /// `<value>.<domain>` CNAME `dcv.digicert.com` (the older form).
    Token,
}

/// One `[[order]]` (DV) or `[[domain]]` (OV/EV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Order or domain id.
    pub key: UnitKey,
    /// DCV method.
    pub method: Method,
    /// Normalized domains. Orders: as listed, empty = use the order's `dns_names`; domains:
    /// exactly `[name]`.
    pub domains: Vec<String>,
    /// The provider named by `provider`, when given (else chosen by zone).
    pub provider: Option<String>,
    /// Validation types to submit the domain for first (`[[domain]]` only; lower case).
    pub submit: Vec<String>,
    /// TXT owner name form.
    pub txt_name: TxtName,
    /// CNAME form.
    pub cname_name: CnameName,
    /// Where DigiCert validates the names: orders take their own `validation_scope` or the
    /// account's; OV/EV domains are always `Exact` (prevalidation validates the name as given).
    pub scope: ValidationScope,
    /// Where the `[[order]]`/`[[domain]]` table starts (discovered units: the `[discovery]`
    /// table).
    pub origin: Location,
    /// Listed in the configuration, or found by a discovery scan.
    pub source: UnitSource,
}
