//! Knows, with hickory, when every authoritative name server serves a DCV record.
//!
//! DigiCert's resolvers cache negative answers, so asking DigiCert to check before every
//! authoritative server serves the record makes validation slower. This crate finds the zone of a
//! record name (SOA walk through the configured recursive resolvers), its name servers and their
//! addresses, and polls each address directly (RD=0, UDP with TCP fallback) until every one
//! serves the expected value. It must not publish records or talk to DigiCert.
//!
//! # Assumptions
//! - A server that served the value keeps serving it until the record is removed, so a wait
//!   stops querying it once it has (saves queries on large batches).
//! - Every address of every NS must serve the value: DigiCert may ask any of them.
//! - IPv6 addresses are required only when this host can reach IPv6 at all.
//! - The query cap belongs to a [`Checker`] and its clones: build one per process.
//!
//! # Layout
//! - [`Checker`]: the shared, cloneable entry point (zone cache + global query-rate cap).
//!   Discovery lives in `discovery`, one round of questions in `poll`, the shared poller that
//!   runs every wait (timer queue, backoff) in `poller`, the query cap in `pacer`, answer parsing
//!   in `dns`.
//! - [`Watch`]: one record being waited for ([`Checker::watch`]); a small entry in the poller,
//!   not a task.
//! - [`transport`]: the one step that sends a query to an address, behind the [`Transport`]
//!   trait so tests can script it.
//! - [`CheckerConfig`], [`Mode`], [`ResolverSpec`]: how to find and query servers.
//! - [`Expected`]: what must be served; [`Target`]: where it must be served (after CNAMEs).
//! - [`Progress`], [`ServerStatus`]: per-name-server view of a wait.
//! - [`Checker::caa`], [`CaaSet`]: the CAA records that apply to a name (RFC 8659).
//! - [`Error`]: what went wrong, naming the servers that lag.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod discovery;
mod dns;
mod inspect;
mod pacer;
mod poll;
mod poller;
pub mod transport;

pub use inspect::{Dnssec, Inspection, ServerAnswer};
pub use poller::Watch;
pub use transport::{NetTransport, Protocol, Transport};

/// Where to find zones and name servers (and, in `resolvers` mode, what to query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverSpec {
    /// The system's resolvers from `/etc/resolv.conf`.
    System,
    /// A recursive resolver (or, in tests, an authoritative server) at this address.
    Addr(SocketAddr),
}

/// Which servers must serve the record before it counts as visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every address of every authoritative name server of the zone (default).
    #[default]
    Authoritative,
    /// Only the configured recursive resolvers (split-horizon setups).
    Resolvers,
    /// Both of the above.
    Both,
}

/// Settings of a [`Checker`].
#[derive(Debug, Clone)]
pub struct CheckerConfig {
    /// Recursive resolvers used for zone discovery (and for [`Mode::Resolvers`]).
    pub resolvers: Vec<ResolverSpec>,
    /// Which servers must serve the record.
    pub mode: Mode,
    /// Port for authoritative queries (53 in production; tests use high ports).
    pub nameserver_port: u16,
    /// Shortest interval between two polls of one record.
    pub poll_min: Duration,
    /// Longest interval between two polls of one record.
    pub poll_max: Duration,
    /// Timeout of one DNS query.
    pub query_timeout: Duration,
    /// Process-wide cap on DNS queries per second (discovery included), shared by every wait
    /// and every clone of the [`Checker`]; a fifth of a second's worth may go at once.
    pub max_queries_per_second: u32,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        Self {
            resolvers: vec![ResolverSpec::System],
            mode: Mode::Authoritative,
            nameserver_port: 53,
            poll_min: Duration::from_millis(250),
            poll_max: Duration::from_secs(2),
            query_timeout: Duration::from_secs(2),
            max_queries_per_second: 3000,
        }
    }
}

/// The value that must be served.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expected {
    /// A TXT RRset holding a string equal to this value. CNAMEs at the name are followed
    /// (delegated validation).
    Txt(String),
    /// A CNAME at the name pointing to this target (no trailing dot). Not followed.
    Cname(String),
}

/// Where a record name really lives, after following CNAMEs (TXT only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name asked about.
    pub name: String,
    /// The final owner name after CNAMEs; equal to `name` when there is none.
    pub owner: String,
    /// The CNAME chain followed, in order (empty without delegation).
    pub cname_chain: Vec<String>,
    /// The zone holding `owner`.
    pub zone: String,
    /// The zone's name servers and their addresses.
    pub nameservers: Vec<NameServer>,
    /// The zone's negative-caching TTL (SOA minimum, capped by the SOA record's TTL).
    pub negative_ttl: Duration,
}

impl Target {
    /// Whether the name was a CNAME into another name (delegated validation).
    pub fn is_delegated(&self) -> bool {
        !self.cname_chain.is_empty()
    }
}

/// One name server of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServer {
    /// Its name (`ns1.example.com`), or the address for resolvers.
    pub name: String,
    /// Its IPv4 and IPv6 addresses, with the query port.
    pub addrs: Vec<SocketAddr>,
}

/// What one server said at the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    /// Not asked yet.
    Unknown,
    /// It serves the expected value.
    Serving,
    /// NXDOMAIN, NODATA, or a different value: not yet.
    NotYet,
    /// SERVFAIL, REFUSED, timeout or network error (the text says which).
    Failing(String),
}

/// Per-server progress of a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The record name and where it lives.
    pub target: Target,
    /// `(server name, address, status)` for every address checked.
    pub servers: Vec<(String, SocketAddr, ServerStatus)>,
    /// DNS queries sent to the checked servers for this wait so far (UDP and TCP each count;
    /// discovery is shared between waits and counted by [`Checker::queries_sent`]).
    pub queries: u64,
}

impl Progress {
    /// Whether every checked address serves the value.
    pub fn all_serving(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|(_, _, s)| *s == ServerStatus::Serving)
    }

    /// `name (addr)` of every address that does not serve the value yet.
    pub fn lagging(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter(|(_, _, s)| *s != ServerStatus::Serving)
            .map(|(n, a, s)| match s {
                ServerStatus::Failing(e) => format!("{n} ({a}): {e}"),
                _ => format!("{n} ({a})"),
            })
            .collect()
    }
}

/// One CAA record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caa {
    /// The issuer-critical flag.
    pub critical: bool,
    /// The property tag, lower case (`issue`, `issuewild`, `iodef`, ...).
    pub tag: String,
    /// The property value as text (`digicert.com; cansignhttpexchanges=yes`, `;`).
    pub value: String,
}

/// The CAA records that apply to a name, and the name that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaSet {
    /// Where the records were found (the name itself or a parent).
    pub owner: String,
    /// The records there.
    pub records: Vec<Caa>,
}

/// What went wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No zone could be found for the name (no SOA up to the root).
    #[error("no zone found for {name}: {message}")]
    NoZone {
        /// The name.
        name: String,
        /// Details.
        message: String,
    },
    /// The zone has no usable name server address.
    #[error("zone {zone} has no reachable name server address: {message}")]
    NoNameServers {
        /// The zone.
        zone: String,
        /// Details.
        message: String,
    },
    /// A CNAME chain loops or is too long.
    #[error("CNAME loop at {name}: {chain:?}")]
    CnameLoop {
        /// The name asked about.
        name: String,
        /// The chain followed.
        chain: Vec<String>,
    },
    /// The deadline passed before every server served the value.
    #[error("{name}: not served by every name server after {waited:?}; lagging: {}", lagging.join(", "))]
    Timeout {
        /// The record name.
        name: String,
        /// How long it waited.
        waited: Duration,
        /// The servers that did not serve it, with their last error.
        lagging: Vec<String>,
    },
    /// The wait was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// A resolver failure during discovery.
    #[error("resolving {name}: {message}")]
    Resolve {
        /// The name.
        name: String,
        /// Details.
        message: String,
    },
    /// The settings cannot work.
    #[error("invalid propagation settings: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (resolver or network trouble), as opposed to a
    /// problem with the name or the settings.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Resolve { .. } | Self::NoNameServers { .. } | Self::Timeout { .. })
    }

    /// No zone holds the name as the resolvers see it (every resolver REFUSED, or no SOA up to
    /// the root): following CNAMEs from it is impossible, and waiting for it is bounded by the
    /// caller's deadline ([`Checker::wait_visible`] turns it into [`Error::Timeout`] there).
    pub fn is_no_zone(&self) -> bool {
        matches!(self, Self::NoZone { .. })
    }
}

/// The shared propagation checker. Cheap to clone; clones share the zone cache and the
/// query-rate cap.
#[derive(Debug, Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

/// A cached [`Target`] and until when it holds. Shared: the poller's rounds hold the cached
/// target instead of a copy each.
type CachedTarget = (Arc<Target>, tokio::time::Instant);

#[derive(Debug)]
struct Inner {
    config: CheckerConfig,
    /// The configured resolvers, `System` expanded from resolv.conf.
    resolvers: Vec<SocketAddr>,
    transport: Arc<dyn Transport>,
    pacer: pacer::Pacer,
    /// Every DNS query sent, discovery included.
    queries: AtomicU64,
    /// `(name, follow_cnames)` -> where it lives, until the instant. This and the two caches below
    /// drop expired entries as they grow (`discovery::Swept`): a daemon that runs for
    /// months meets many names.
    targets: Mutex<discovery::Swept<(String, bool), CachedTarget>>,
    /// Zone -> its name servers; one async lock per zone so 10,000 names of one zone trigger one
    /// NS lookup.
    zones: discovery::Slots<discovery::ZoneInfo>,
    /// Parent name -> the CAA records there (empty: none, climb on), until the instant; one async
    /// lock per name so that 10,000 names under one zone ask about the zone's apex once.
    caa_parents: discovery::Slots<discovery::CachedCaa>,
    /// The shared poller's inbox, once the first wait started it.
    poller: Mutex<Option<tokio::sync::mpsc::UnboundedSender<poller::Request>>>,
}

impl Checker {
    /// A checker with these settings, on the host's network.
    pub fn new(config: CheckerConfig) -> Result<Self, Error> {
        Self::with_transport(config, Arc::new(NetTransport::new()))
    }

    /// A checker sending its queries through `transport` (tests script one).
    pub fn with_transport(config: CheckerConfig, transport: Arc<dyn Transport>) -> Result<Self, Error> {
        let bad = |message: &str| Err(Error::Config { message: message.to_string() });
        if config.resolvers.is_empty() {
            return bad("no resolvers: give at least one (\"system\" or \"ip:port\")");
        }
        if config.poll_min.is_zero() || config.poll_min > config.poll_max {
            return bad("poll_min must be above zero and at most poll_max");
        }
        if config.query_timeout.is_zero() {
            return bad("the query timeout must be above zero");
        }
        if config.max_queries_per_second == 0 {
            return bad("max_queries_per_second must be at least 1");
        }
        if config.nameserver_port == 0 {
            return bad("nameserver_port must not be 0");
        }
        let mut resolvers = Vec::new();
        for spec in &config.resolvers {
            match spec {
                ResolverSpec::Addr(a) => resolvers.push(*a),
                ResolverSpec::System => resolvers.extend(system_resolvers()?),
            }
        }
        resolvers.dedup();
        Ok(Self {
            inner: Arc::new(Inner {
                pacer: pacer::Pacer::new(config.max_queries_per_second),
                config,
                resolvers,
                transport,
                queries: AtomicU64::new(0),
                targets: Mutex::default(),
                zones: Mutex::default(),
                caa_parents: Mutex::default(),
                poller: Mutex::new(None),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &CheckerConfig {
        &self.inner.config
    }

    /// DNS queries this checker (and its clones) sent so far, discovery included.
    pub fn queries_sent(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Finds where `name` lives: follows CNAMEs when `follow_cnames`, finds the zone and its name
    /// servers (cached for their TTLs).
    pub async fn target(&self, name: &str, follow_cnames: bool) -> Result<Target, Error> {
        discovery::target(&self.inner, name, follow_cnames).await
    }

    /// The relevant CAA record set of `name` (RFC 8659 section 3): the CAA records at `name`, or,
    /// when it has none, at its parent, and so on below the root, through the configured
    /// resolvers (which follow CNAMEs). `None` when no name up the tree has any: every CA may
    /// issue. A name the resolvers REFUSE counts as having none (they do not serve that part of
    /// the tree); no answer at all is an error.
    pub async fn caa(&self, name: &str) -> Result<Option<CaaSet>, Error> {
        discovery::caa(&self.inner, name).await
    }

    /// A one-time look at `name` for diagnostics: after CNAMEs, what every authoritative server
    /// serves there now and whether the zone is signed and validates.
    pub async fn inspect(&self, name: &str) -> Result<Inspection, Error> {
        inspect::inspect(&self.inner, name).await
    }

    /// Asks every required server once.
    pub async fn check_once(&self, name: &str, expected: &Expected) -> Result<Progress, Error> {
        poll::check_once(&self.inner, name, expected).await
    }

    /// Waits until every required server serves `expected` at `name`, or the `deadline` passes
    /// ([`Error::Timeout`] naming the lagging servers). Dropping the [`Watch`] cancels the wait.
    ///
    /// Every wait of a checker (and its clones) is polled by one shared task, so a wait costs a
    /// small entry, not a task. Polls start `poll_min` apart; each poll that changes nothing
    /// stretches the interval by half, up to `poll_max`; any change (a server starts serving or
    /// failing) resets it to `poll_min`, since the others usually follow soon, and once a server
    /// serves, the lagging ones are polled every `poll_min` for 30 s after the last change, then
    /// at most `4 x poll_min` apart. Servers that served the value are not asked again. Queries
    /// go out as the process-wide `max_queries_per_second` allows, the earliest due first.
    /// Discovery failures that may pass (resolver trouble) are retried until the deadline. The
    /// poller logs about the wait in the caller's span: DEBUG when the number of lagging
    /// servers changes, INFO `still waiting for propagation` at most once a minute (or every
    /// `4 x poll_max` when shorter) while one lags.
    ///
    /// Must be called within a tokio runtime (the poller starts on first use).
    pub fn watch(&self, name: &str, expected: &Expected, deadline: tokio::time::Instant) -> Watch {
        poller::watch(&self.inner, name, expected, deadline, None)
    }

    /// [`watch`](Self::watch), until `cancel` fires ([`Error::Cancelled`]); `on_progress` sees
    /// every poll's result.
    pub async fn wait_visible(
        &self,
        name: &str,
        expected: &Expected,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<Progress, Error> {
        let (tx, mut rounds) = tokio::sync::mpsc::unbounded_channel();
        let mut watch = poller::watch(&self.inner, name, expected, deadline, Some(tx));
        loop {
            // Biased: a round's progress is sent before the outcome, so every one is seen first.
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::Cancelled),
                Some(p) = rounds.recv() => on_progress(&p),
                result = &mut watch => {
                    while let Ok(p) = rounds.try_recv() {
                        on_progress(&p);
                    }
                    return result;
                }
            }
        }
    }
}

/// The name servers of `/etc/resolv.conf`, through hickory-resolver's parser.
fn system_resolvers() -> Result<Vec<SocketAddr>, Error> {
    let (conf, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| Error::Config {
        message: format!("cannot read the system resolver configuration (/etc/resolv.conf): {e}; list resolvers as \"ip:port\" instead"),
    })?;
    let mut out = Vec::new();
    for ns in conf.name_servers() {
        let port = ns.connections.first().map_or(53, |c| c.port);
        let addr = SocketAddr::new(ns.ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(Error::Config {
            message: "/etc/resolv.conf lists no name server; list resolvers as \"ip:port\"".into(),
        });
    }
    Ok(out)
}
