//! DNS side of the DCV checks: real queries through hickory-resolver, one configured name server
//! per lookup (round-robin, as a recursive resolver picks one of a zone's NS), with hickory's own
//! cache made irrelevant and a negative cache of our own that behaves like a CA's resolver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::SimConfig;

/// The CNAME target suffix DigiCert's preferred CNAME form points into.
pub(crate) const DCV_CNAME_TARGET: &str = "dcv.digicert.com";

/// What one lookup found.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Record data of the asked type (CNAME chains already followed by hickory).
    Records(Vec<RData>),
    /// NXDOMAIN or NODATA (fresh or from the negative cache).
    Negative,
    /// Timeout, SERVFAIL, REFUSED, bad name: not cached.
    Error,
}

/// Counters of one check, merged into the simulator's stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LookupCounters {
    pub(crate) queries: u64,
    pub(crate) negative_cache_hits: u64,
    pub(crate) errors: u64,
}

pub(crate) struct DnsChecker {
    resolvers: Vec<(SocketAddr, TokioResolver)>,
    next: AtomicUsize,
    negative: Mutex<HashMap<(String, RecordType), Instant>>,
    negative_ttl: Option<Duration>,
    negative_ttl_cap: Duration,
}

impl DnsChecker {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let resolvers =
            config.dns_servers.iter().map(|addr| (*addr, build_resolver(*addr, config.dns_timeout))).collect();
        Self {
            resolvers,
            next: AtomicUsize::new(0),
            negative: Mutex::new(HashMap::new()),
            negative_ttl: config.negative_ttl,
            negative_ttl_cap: config.negative_ttl_cap,
        }
    }

    pub(crate) fn clear_negative_cache(&self) {
        lock(&self.negative).clear();
    }

    /// Looks `name` (absolute or not; a trailing dot is added) up for `rtype` at one name server.
    /// `now` is the simulator's monotonic clock (real time plus the admin offset).
    pub(crate) async fn lookup(
        &self,
        name: &str,
        rtype: RecordType,
        now: Instant,
        counters: &mut LookupCounters,
    ) -> Answer {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), rtype);
        {
            let mut neg = lock(&self.negative);
            match neg.get(&key) {
                Some(until) if *until > now => {
                    counters.negative_cache_hits += 1;
                    tracing::debug!(name = %key.0, ?rtype, "negative cache hit");
                    return Answer::Negative;
                }
                Some(_) => {
                    neg.remove(&key);
                }
                None => {}
            }
        }
        if self.resolvers.is_empty() {
            counters.errors += 1;
            tracing::warn!(name = %key.0, "no dns servers configured: every dcv check fails");
            return Answer::Error;
        }
        let Ok(fqdn) = Name::from_ascii(format!("{}.", key.0)) else {
            counters.errors += 1;
            return Answer::Error;
        };
        let idx = self.next.fetch_add(1, Ordering::Relaxed) % self.resolvers.len();
        let (server, resolver) = &self.resolvers[idx];
        counters.queries += 1;
        match resolver.lookup(fqdn, rtype).await {
            Ok(lookup) => {
                let records: Vec<RData> =
                    lookup.answers().iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect();
                tracing::debug!(name = %key.0, ?rtype, %server, found = records.len(), "dns answer");
                if records.is_empty() {
                    // a CNAME chain that ends nowhere: not cacheable without an SOA
                    Answer::Negative
                } else {
                    Answer::Records(records)
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no))) => {
                let ttl = match self.negative_ttl {
                    Some(fixed) => fixed,
                    None => no.negative_ttl.map(|s| Duration::from_secs(u64::from(s))).unwrap_or_default(),
                }
                .min(self.negative_ttl_cap);
                tracing::debug!(name = %key.0, ?rtype, %server, code = ?no.response_code,
                    negative_ttl_s = ttl.as_secs_f64(), "negative dns answer");
                if !ttl.is_zero() {
                    lock(&self.negative).insert(key, now + ttl);
                }
                Answer::Negative
            }
            Err(err) => {
                counters.errors += 1;
                tracing::warn!(name = %key.0, ?rtype, %server, error = %err, "dns lookup failed");
                Answer::Error
            }
        }
    }

    /// TXT rule: `_dnsauth.<name>` then `<name>`; a TXT record whose text *contains* the value
    /// counts. Returns the owner name that matched.
    pub(crate) async fn find_txt(
        &self,
        name: &str,
        value: &str,
        now: Instant,
        counters: &mut LookupCounters,
    ) -> Option<String> {
        for owner in [format!("_dnsauth.{name}"), name.to_string()] {
            if let Answer::Records(records) = self.lookup(&owner, RecordType::TXT, now, counters).await {
                let hit = records.iter().any(|r| match r {
                    RData::TXT(txt) => {
                        let text: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                        String::from_utf8_lossy(&text).contains(value)
                    }
                    _ => false,
                });
                if hit {
                    return Some(owner);
                }
            }
        }
        None
    }

    /// CNAME rule: `_dnsauth.<name>` CNAME `<value>.dcv.digicert.com`, or the older
    /// `<value>.<name>` CNAME `dcv.digicert.com`. Returns the owner name that matched.
    pub(crate) async fn find_cname(
        &self,
        name: &str,
        value: &str,
        now: Instant,
        counters: &mut LookupCounters,
    ) -> Option<String> {
        let value = value.to_ascii_lowercase();
        let forms = [
            (format!("_dnsauth.{name}"), format!("{value}.{DCV_CNAME_TARGET}")),
            (format!("{value}.{name}"), DCV_CNAME_TARGET.to_string()),
        ];
        for (owner, target) in forms {
            if let Answer::Records(records) = self.lookup(&owner, RecordType::CNAME, now, counters).await {
                let hit = records.iter().any(|r| match r {
                    RData::CNAME(c) => c.0.to_ascii().trim_end_matches('.').eq_ignore_ascii_case(&target),
                    _ => false,
                });
                if hit {
                    return Some(owner);
                }
            }
        }
        None
    }
}

fn build_resolver(addr: SocketAddr, timeout: Duration) -> TokioResolver {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for conn in &mut ns.connections {
        conn.port = addr.port();
    }
    let mut builder =
        Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    // hickory's cache would hide what the name server serves now: make every entry expire at
    // once; our own negative cache decides what a CA's resolver would remember
    opts.cache_size = 0;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.try_tcp_on_error = true;
    // benchmarks check thousands of units at once: never fail a lookup for a busy connection
    opts.max_active_requests = 4096;
    builder.build().expect("a resolver with one explicit name server and no system config always builds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
