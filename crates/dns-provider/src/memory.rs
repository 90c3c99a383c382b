//! An in-process record store (the `memory` provider), and an authoritative DNS server that
//! serves it over UDP and TCP with an optional propagation lag per name server.
//! Used by `dcvd demo`, the benchmarks and tests.
//!
//! - [`MemoryStore`]: the records, with the instant each value was published and counters that
//!   crash tests use ("no value was published twice", "cleanup removed everything").
//! - [`MemoryProvider`]: the [`DnsProvider`] adapter writing into a store (kind `memory`).
//! - [`serve`]: an authoritative server for a store ([`MemoryDnsServer`]), one listener pair
//!   (UDP + TCP) per name server, each with its own lag ([`LagModel`]).
//!
//! Instants are [`tokio::time::Instant`]s, so tests running under `tokio::time::pause()` see the
//! store and the server's lag move with the paused clock.

mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{DnsProvider, ProviderError, Published, Record, RecordType, normalize_name};

pub use server::{LagModel, MemoryDnsServer, ServerConfig, serve};

const KIND: &str = "memory";

/// One value held at a name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// TXT string or CNAME target (no trailing dot).
    pub value: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// When the value was added (the start of its propagation lag).
    pub published_at: Instant,
}

/// One record of a [`MemoryStore::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record (name, type, value, TTL).
    pub record: Record,
    /// When the value was added.
    pub published_at: Instant,
}

/// Calls made through [`MemoryProvider`]s on a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `publish` calls (each record of a batch counts once).
    pub publish_calls: u64,
    /// `remove` calls (each record of a batch counts once).
    pub remove_calls: u64,
}

/// A shared in-memory record store: cheap to clone, every clone sees the same records.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    rrsets: BTreeMap<(String, RecordType), Vec<StoredValue>>,
    /// For every proper ancestor of a stored name: how many values sit below it. Lets the
    /// server answer NODATA (not NXDOMAIN) for empty non-terminals without a scan.
    below: HashMap<String, u64>,
    /// (name, value) -> times it was added while absent.
    additions: HashMap<(String, String), u64>,
    counters: Counters,
    serial: u32,
    fail_next: u32,
}

impl Inner {
    fn insert(&mut self, name: &str, rtype: RecordType, value: &str, ttl: u32) -> bool {
        let values = self.rrsets.entry((name.to_string(), rtype)).or_default();
        if values.iter().any(|v| v.value == value) {
            return false;
        }
        values.push(StoredValue { value: value.to_string(), ttl, published_at: Instant::now() });
        *self.additions.entry((name.to_string(), value.to_string())).or_default() += 1;
        for ancestor in ancestors(name) {
            *self.below.entry(ancestor.to_string()).or_default() += 1;
        }
        self.serial = self.serial.wrapping_add(1);
        true
    }

    fn delete(&mut self, name: &str, rtype: RecordType, value: &str) -> bool {
        let key = (name.to_string(), rtype);
        let Some(values) = self.rrsets.get_mut(&key) else {
            return false;
        };
        let before = values.len();
        values.retain(|v| v.value != value);
        if values.len() == before {
            return false;
        }
        if values.is_empty() {
            self.rrsets.remove(&key);
        }
        for ancestor in ancestors(name) {
            if let Some(n) = self.below.get_mut(ancestor) {
                *n -= 1;
                if *n == 0 {
                    self.below.remove(ancestor);
                }
            }
        }
        self.serial = self.serial.wrapping_add(1);
        true
    }

    fn values(&self, name: &str, rtype: RecordType) -> &[StoredValue] {
        self.rrsets.get(&(name.to_string(), rtype)).map_or(&[], Vec::as_slice)
    }

    fn has_descendants(&self, name: &str) -> bool {
        self.below.contains_key(name)
    }

    fn take_failure(&mut self) -> bool {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            true
        } else {
            false
        }
    }
}

/// Proper ancestors of a name: `a.b.c` -> `b.c`, `c`.
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[i + 1..])
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (every mutation is one call).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `record`'s value behind any provider's back (no conflict checks, no call counted),
    /// as another tool would. Returns whether it was absent.
    pub fn insert(&self, record: &Record) -> bool {
        let name = normalize_name(&record.name);
        self.lock().insert(&name, record.rtype, &stored_value(record), record.ttl)
    }

    /// Deletes `record`'s value behind any provider's back. Returns whether it was present.
    pub fn delete(&self, record: &Record) -> bool {
        let name = normalize_name(&record.name);
        self.lock().delete(&name, record.rtype, &stored_value(record))
    }

    /// The values at `name` and `rtype`, in insertion order.
    pub fn values(&self, name: &str, rtype: RecordType) -> Vec<String> {
        self.lock().values(&normalize_name(name), rtype).iter().map(|v| v.value.clone()).collect()
    }

    /// The values at `name` and `rtype` with their publication instants.
    pub fn get(&self, name: &str, rtype: RecordType) -> Vec<StoredValue> {
        self.lock().values(&normalize_name(name), rtype).to_vec()
    }

    /// Every record held, sorted by name, type and insertion order.
    pub fn snapshot(&self) -> Vec<StoredRecord> {
        self.snapshot_of(|_| true)
    }

    /// [`snapshot`](Self::snapshot) of the names `wanted` keeps: the others are not copied (a
    /// caller that samples a large store often needs only the few records it has not seen).
    pub fn snapshot_of(&self, wanted: impl Fn(&str) -> bool) -> Vec<StoredRecord> {
        let inner = self.lock();
        inner
            .rrsets
            .iter()
            .filter(|((name, _), _)| wanted(name))
            .flat_map(|((name, rtype), values)| {
                values.iter().map(move |v| StoredRecord {
                    record: Record { name: name.clone(), rtype: *rtype, value: v.value.clone(), ttl: v.ttl },
                    published_at: v.published_at,
                })
            })
            .collect()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.lock().rrsets.is_empty()
    }

    /// Provider calls made on this store so far.
    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    /// How many times `value` was added at `name` while absent (any type, any writer).
    pub fn additions(&self, name: &str, value: &str) -> u64 {
        self.lock().additions.get(&(normalize_name(name), value.to_string())).copied().unwrap_or(0)
    }

    /// Every name `value` was ever added at (any type, any writer), sorted: what a test
    /// asserts to be exactly the owner names it expects.
    pub fn names_added(&self, value: &str) -> Vec<String> {
        let mut names: Vec<String> =
            self.lock().additions.keys().filter(|(_, v)| v == value).map(|(name, _)| name.clone()).collect();
        names.sort();
        names
    }

    /// Every `(name, value, times)` that was added more than once while absent: what a crash
    /// test asserts to be empty ("no value was published twice").
    pub fn added_more_than_once(&self) -> Vec<(String, String, u64)> {
        let mut out: Vec<_> = self
            .lock()
            .additions
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((name, value), n)| (name.clone(), value.clone(), *n))
            .collect();
        out.sort();
        out
    }

    /// A counter that changes with every addition or deletion (served as the SOA serial).
    pub fn serial(&self) -> u32 {
        self.lock().serial
    }

    /// Makes the next `n` provider calls (publish, remove, list) fail with a retryable
    /// [`ProviderError::Transient`], to test the caller's retry paths.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }
}

/// The stored form of a record's value: CNAME targets normalized like names.
fn stored_value(record: &Record) -> String {
    match record.rtype {
        RecordType::Txt => record.value.clone(),
        RecordType::Cname => normalize_name(&record.value),
    }
}

/// The `memory` provider: writes into a [`MemoryStore`], meeting the full [`DnsProvider`]
/// contract (idempotent publish, remove only the given value, CNAME conflicts refused).
#[derive(Debug, Clone)]
pub struct MemoryProvider {
    zones: Vec<String>,
    store: MemoryStore,
}

impl MemoryProvider {
    /// A provider serving `zones` (normalized) from `store`.
    pub fn new(zones: Vec<String>, store: MemoryStore) -> Self {
        Self { zones: zones.iter().map(|z| normalize_name(z)).collect(), store }
    }

    /// The store this provider writes into.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    fn check_zone(&self, zone: &str, name: &str) -> Result<String, ProviderError> {
        crate::check_owner(KIND, &self.zones, zone, name).map(|(_, name)| name)
    }
}

fn injected_failure(op: &str) -> ProviderError {
    ProviderError::Transient {
        provider: KIND,
        message: format!("{op} failed: injected failure (MemoryStore::fail_next)"),
    }
}

#[async_trait]
impl DnsProvider for MemoryProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        let name = self.check_zone(zone, &record.name)?;
        let value = stored_value(record);
        let mut inner = self.store.lock();
        inner.counters.publish_calls += 1;
        if inner.take_failure() {
            return Err(injected_failure("publish"));
        }
        let cnames = inner.values(&name, RecordType::Cname);
        match record.rtype {
            RecordType::Cname => {
                let txts = inner.values(&name, RecordType::Txt);
                if !txts.is_empty() {
                    return Err(ProviderError::Conflict {
                        provider: KIND,
                        message: format!(
                            "cannot publish CNAME at {name}: the name already holds {} TXT record(s) and a CNAME \
                             cannot share its name; remove them or use the dns-txt-token method",
                            txts.len()
                        ),
                    });
                }
                if let Some(other) = cnames.iter().find(|v| v.value != value) {
                    return Err(ProviderError::Conflict {
                        provider: KIND,
                        message: format!(
                            "cannot publish CNAME at {name} -> {value}: the name is already a CNAME to {}",
                            other.value
                        ),
                    });
                }
            }
            RecordType::Txt => {
                if let Some(cname) = cnames.first() {
                    return Err(ProviderError::Conflict {
                        provider: KIND,
                        message: format!(
                            "cannot publish TXT at {name}: the name is a CNAME to {}; publish at the CNAME's target",
                            cname.value
                        ),
                    });
                }
            }
        }
        inner.insert(&name, record.rtype, &value, record.ttl);
        Ok(Published::default())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        let name = self.check_zone(zone, &record.name)?;
        let mut inner = self.store.lock();
        inner.counters.remove_calls += 1;
        if inner.take_failure() {
            return Err(injected_failure("remove"));
        }
        inner.delete(&name, record.rtype, &stored_value(record));
        Ok(())
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        if self.zones.is_empty() {
            return Err(ProviderError::Config { provider: KIND, message: "no zones configured: set `zones`".into() });
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let name = self.check_zone(zone, name)?;
        let mut inner = self.store.lock();
        if inner.take_failure() {
            return Err(injected_failure("list"));
        }
        Ok(inner.values(&name, rtype).iter().map(|v| v.value.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> MemoryProvider {
        MemoryProvider::new(vec!["Example.COM.".into()], MemoryStore::new())
    }

    /// Additions are counted only while absent; the ancestor index follows inserts and deletes.
    #[test]
    fn additions_and_ancestor_index() {
        let store = MemoryStore::new();
        let rec = Record::txt("_dnsauth.a.example.com", "v");
        assert!(store.insert(&rec));
        assert!(!store.insert(&rec));
        assert_eq!(store.additions("_dnsauth.a.example.com", "v"), 1);
        {
            let inner = store.lock();
            assert!(inner.has_descendants("a.example.com"));
            assert!(inner.has_descendants("com"));
            assert!(!inner.has_descendants("_dnsauth.a.example.com"));
        }
        assert!(store.delete(&rec));
        assert!(!store.delete(&rec));
        assert!(!store.lock().has_descendants("a.example.com"));
        assert!(store.insert(&rec));
        assert_eq!(store.added_more_than_once(), vec![("_dnsauth.a.example.com".into(), "v".into(), 2)]);
    }

    /// Zones are normalized, a wrong zone is ZoneNotFound and a name outside the zone is refused.
    #[tokio::test]
    async fn zone_checks() {
        let p = provider();
        assert_eq!(p.zones(), ["example.com"]);
        let err = p.publish("example.org", &Record::txt("_dnsauth.example.org", "v")).await.unwrap_err();
        assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
        let err = p.publish("example.com", &Record::txt("_dnsauth.example.org", "v")).await.unwrap_err();
        assert!(err.to_string().starts_with("memory: _dnsauth.example.org is not inside zone example.com"), "{err}");
        assert!(p.store().is_empty());
    }

    /// A TXT at a CNAME name and a second CNAME target are conflicts; the same CNAME is idempotent.
    #[tokio::test]
    async fn cname_rules() {
        let p = provider();
        let cname = Record::cname("_dnsauth.example.com", "abc.dcv.digicert.com.");
        p.publish("example.com", &cname).await.unwrap();
        p.publish("example.com", &cname).await.unwrap();
        assert_eq!(p.store().values("_dnsauth.example.com", RecordType::Cname), ["abc.dcv.digicert.com"]);
        let err = p.publish("example.com", &Record::txt("_dnsauth.example.com", "v")).await.unwrap_err();
        assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
        let other = Record::cname("_dnsauth.example.com", "xyz.dcv.digicert.com");
        let err = p.publish("example.com", &other).await.unwrap_err();
        assert!(err.to_string().contains("already a CNAME to abc.dcv.digicert.com"), "{err}");
        assert_eq!(p.store().counters(), Counters { publish_calls: 4, remove_calls: 0 });
    }

    /// Injected failures are retryable and consumed one per call.
    #[tokio::test]
    async fn injected_failures() {
        let p = provider();
        p.store().fail_next(1);
        let rec = Record::txt("_dnsauth.example.com", "v");
        let err = p.publish("example.com", &rec).await.unwrap_err();
        assert!(err.is_retryable());
        p.publish("example.com", &rec).await.unwrap();
        assert_eq!(p.list("example.com", "_dnsauth.example.com", RecordType::Txt).await.unwrap(), ["v"]);
    }
}
