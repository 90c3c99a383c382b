//! Zone discovery: CNAME chain, zone (SOA walk), name servers and their addresses, with caches.
//!
//! Every query goes through the configured resolvers with RD=1; an authoritative-only server
//! works too, since the zone is read from the SOA of the answer (apex) or of the authority
//! section (NXDOMAIN/NODATA), usually in one query.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::time::Instant;

use crate::dns::{self, Probe};
use crate::transport::Protocol;
use crate::{Error, Inner, Mode, NameServer, Target};

/// Longest CNAME chain followed (resolvers stop around 8-16 too).
const MAX_CNAMES: usize = 8;

/// A zone's authoritative servers, cached until `expires`.
#[derive(Debug, Clone)]
pub(crate) struct ZoneInfo {
    nameservers: Vec<NameServer>,
    negative_ttl: Duration,
    expires: Instant,
}

/// One query and its outcome: the response or why there is none, and how many messages went out
/// (a truncated UDP answer costs a second, TCP, query).
pub(crate) struct Sent {
    pub(crate) result: Result<Message, String>,
    pub(crate) count: u64,
}

impl Inner {
    /// Sends one message through the global cap, bounded by the query timeout; `slot_taken`:
    /// the caller already took this message's slot of the cap.
    pub(crate) async fn send(
        &self,
        server: SocketAddr,
        query: &Message,
        protocol: Protocol,
        slot_taken: bool,
    ) -> Result<Message, String> {
        if !slot_taken {
            self.pacer.acquire().await;
        }
        self.queries.fetch_add(1, Ordering::Relaxed);
        let proto = match protocol {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        };
        match tokio::time::timeout(self.config.query_timeout, self.transport.exchange(server, query, protocol)).await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(e)) => Err(format!("{proto}: {e}")),
            Err(_) => Err(format!("{proto}: no answer within {:?}", self.config.query_timeout)),
        }
    }

    /// Asks `server` for `name`/`rtype`: UDP with EDNS, again over TCP when truncated, again
    /// without EDNS when the server does not understand it.
    pub(crate) async fn query(&self, server: SocketAddr, name: &Name, rtype: RecordType, recursion: bool) -> Sent {
        self.query_in_slot(server, name, rtype, recursion, false).await
    }

    /// [`query`](Self::query); `slot_taken`: the caller already took the first message's slot of
    /// the cap ([`crate::pacer::Pacer::try_acquire`]), the retries take their own.
    pub(crate) async fn query_in_slot(
        &self,
        server: SocketAddr,
        name: &Name,
        rtype: RecordType,
        recursion: bool,
        slot_taken: bool,
    ) -> Sent {
        let mut count = 1;
        let q = dns::build_query(name, rtype, recursion, true);
        let mut result = self.send(server, &q, Protocol::Udp, slot_taken).await;
        let mut q_used = q;
        if matches!(&result, Ok(m) if m.metadata.response_code == ResponseCode::FormErr) {
            let plain = dns::build_query(name, rtype, recursion, false);
            count += 1;
            result = self.send(server, &plain, Protocol::Udp, false).await;
            q_used = plain;
        }
        if matches!(&result, Ok(m) if m.metadata.truncation) {
            count += 1;
            result = self.send(server, &q_used, Protocol::Tcp, false).await;
        }
        Sent { result, count }
    }

    /// Asks the resolvers in turn until one gives a usable answer (NOERROR or NXDOMAIN). `Ok(Err)`
    /// is an answer nobody could use (e.g. every one REFUSED); `Err` means no resolver answered.
    async fn resolve(&self, name: &Name, rtype: RecordType) -> Result<Result<Message, String>, String> {
        let mut refused = None;
        let mut errors = Vec::new();
        for &r in &self.resolvers {
            match self.query(r, name, rtype, true).await.result {
                Ok(m) => match m.metadata.response_code {
                    ResponseCode::NoError | ResponseCode::NXDomain => return Ok(Ok(m)),
                    ResponseCode::Refused | ResponseCode::NotAuth => {
                        refused = Some(format!("{r} answered {}", dns::rcode_name(m.metadata.response_code)));
                    }
                    code => errors.push(format!("{r} answered {}", dns::rcode_name(code))),
                },
                Err(e) => errors.push(format!("{r}: {e}")),
            }
        }
        match refused {
            Some(why) => Ok(Err(why)),
            None => Err(errors.join("; ")),
        }
    }

    async fn probe(&self, name: &Name) -> Result<Probe, Error> {
        match self.resolve(name, RecordType::SOA).await {
            Ok(Ok(m)) => Ok(dns::read_probe(name, &m)),
            Ok(Err(why)) => Ok(Probe::Nothing(why)),
            Err(message) => {
                // Servers that chase CNAMEs answer SERVFAIL for a loop or a broken chain; the
                // CNAME itself still tells where to go (and lets us see the loop).
                if let Ok(Ok(m)) = self.resolve(name, RecordType::CNAME).await
                    && let probe @ Probe::Alias { .. } = dns::read_probe(name, &m)
                {
                    return Ok(probe);
                }
                Err(Error::Resolve { name: dns::show(name), message: format!("SOA query failed: {message}") })
            }
        }
    }
}

/// Where `name` lives, when the cache knows it (no query): what [`target`] would answer at once.
pub(crate) fn cached_target(inner: &Inner, name: &str, follow: bool) -> Option<Arc<Target>> {
    cached(inner, &dns::parse_name(name).ok()?, follow)
}

fn cached(inner: &Inner, start: &Name, follow: bool) -> Option<Arc<Target>> {
    let targets = inner.targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (t, until) = targets.map.get(&(dns::show(start), follow))?;
    (*until > Instant::now()).then(|| t.clone())
}

/// See [`crate::Checker::target`].
pub(crate) async fn target(inner: &Arc<Inner>, name: &str, follow: bool) -> Result<Target, Error> {
    let start = dns::parse_name(name).map_err(|message| Error::Resolve { name: name.to_string(), message })?;
    if let Some(t) = cached(inner, &start, follow) {
        return Ok(Target::clone(&t));
    }

    let mut chain: Vec<String> = Vec::new();
    let mut seen = HashSet::from([dns::show(&start)]);
    let mut ttl = u32::MAX;
    let mut owner = start.clone();
    let mut probe = inner.probe(&owner).await?;
    while let (true, Probe::Alias { target, ttl: t }) = (follow, &probe) {
        let target = target.clone();
        chain.push(dns::show(&target));
        if !seen.insert(dns::show(&target)) || chain.len() > MAX_CNAMES {
            return Err(Error::CnameLoop { name: dns::show(&start), chain });
        }
        ttl = ttl.min(*t);
        owner = target;
        probe = inner.probe(&owner).await?;
    }

    // Walk up from the owner until an answer names the zone.
    let mut candidate = owner.clone();
    let (zone, soa) = loop {
        let note = match probe {
            Probe::Apex { negative_ttl } => break (candidate, Some(negative_ttl)),
            Probe::Negative { zone } | Probe::Referral { zone } => break (zone, None),
            Probe::Alias { target, .. } => format!("{} is a CNAME to {}", dns::show(&candidate), dns::show(&target)),
            Probe::Nothing(why) => format!("{}: {why}", dns::show(&candidate)),
        };
        if candidate.is_root() {
            return Err(Error::NoZone {
                name: dns::show(&owner),
                message: format!("no SOA found up to the root; last: {note}"),
            });
        }
        candidate = candidate.base_name();
        probe = inner.probe(&candidate).await?;
    };

    let info = zone_info(inner, &zone, soa).await?;
    let nameservers = if inner.config.mode == Mode::Resolvers {
        inner.resolvers.iter().map(|a| NameServer { name: "resolver".into(), addrs: vec![*a] }).collect()
    } else {
        info.nameservers
    };
    let target = Target {
        name: dns::show(&start),
        owner: dns::show(&owner),
        cname_chain: chain,
        zone: dns::show(&zone),
        nameservers,
        negative_ttl: info.negative_ttl,
    };
    // The name stays in its zone as long as the zone's data and the CNAMEs on the way hold.
    let until = info.expires.min(Instant::now() + dns::cache_for(ttl));
    let key = (dns::show(&start), follow);
    let mut targets = inner.targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    targets.make_room_for(&key, |(_, until)| *until <= now);
    targets.map.insert(key, (Arc::new(target.clone()), until));
    drop(targets);
    tracing::debug!(name = %target.name, owner = %target.owner, zone = %target.zone, servers = target.nameservers.len(), "zone found");
    Ok(target)
}

/// The zone's name servers (cached; one lookup at a time per zone).
async fn zone_info(inner: &Arc<Inner>, zone: &Name, soa: Option<u32>) -> Result<ZoneInfo, Error> {
    let cell = slot_of(&inner.zones, dns::show(zone), |info| info.expires);
    let mut slot = cell.lock().await;
    if let Some(info) = slot.as_ref()
        && info.expires > Instant::now()
    {
        return Ok(info.clone());
    }
    let info = load_zone(inner, zone, soa).await?;
    *slot = Some(info.clone());
    Ok(info)
}

async fn load_zone(inner: &Arc<Inner>, zone: &Name, soa: Option<u32>) -> Result<ZoneInfo, Error> {
    let mut soa = soa.map(|neg| (neg, u32::MAX));
    if soa.is_none()
        && let Ok(Ok(m)) = inner.resolve(zone, RecordType::SOA).await
    {
        soa = dns::read_soa(zone, &m);
    }
    if inner.config.mode == Mode::Resolvers {
        let (negative_ttl, ttl) = soa.ok_or_else(|| Error::Resolve {
            name: dns::show(zone),
            message: "the resolvers gave no SOA for the zone".into(),
        })?;
        return Ok(ZoneInfo {
            nameservers: Vec::new(),
            negative_ttl: Duration::from_secs(u64::from(negative_ttl)),
            expires: Instant::now() + dns::cache_for(ttl),
        });
    }
    let no_ns = |message: String| Error::NoNameServers { zone: dns::show(zone), message };
    let resp = match inner.resolve(zone, RecordType::NS).await {
        Ok(Ok(m)) => m,
        Ok(Err(why)) | Err(why) => return Err(no_ns(format!("NS query failed: {why}"))),
    };
    let (names, ns_ttl) = dns::read_ns(zone, &resp);
    if names.is_empty() {
        return Err(no_ns("the NS query returned no NS records".into()));
    }
    let mut ttl = ns_ttl;

    // Every NS name's A and AAAA, concurrently.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ns) in names.iter().enumerate() {
        for rtype in [RecordType::A, RecordType::AAAA] {
            let (inner, ns) = (Arc::clone(inner), ns.clone());
            tasks.spawn(async move { (i, rtype, inner.resolve(&ns, rtype).await) });
        }
    }
    let mut found: Vec<(Vec<std::net::IpAddr>, Vec<String>)> = vec![(Vec::new(), Vec::new()); names.len()];
    while let Some(joined) = tasks.join_next().await {
        let (i, rtype, res) = joined.map_err(|e| no_ns(format!("address lookup task failed: {e}")))?;
        match res {
            Ok(Ok(m)) => {
                let (ips, t) = dns::read_addrs(&m);
                if !ips.is_empty() {
                    ttl = ttl.min(t);
                }
                found[i].0.extend(ips);
            }
            Ok(Err(why)) | Err(why) => found[i].1.push(format!("{rtype}: {why}")),
        }
    }
    let port = inner.config.nameserver_port;
    let v6 = inner.transport.ipv6_usable();
    let mut nameservers = Vec::new();
    for (ns, (mut ips, errors)) in names.iter().zip(found) {
        if !errors.is_empty() {
            // A lookup that failed (not one that found nothing) may hide an address that
            // DigiCert will query: do not guess, fail and let the caller retry.
            return Err(no_ns(format!("addresses of {}: {}", dns::show(ns), errors.join("; "))));
        }
        ips.sort();
        ips.dedup();
        if !v6 && ips.iter().any(std::net::IpAddr::is_ipv6) {
            tracing::warn!(nameserver = %dns::show(ns), "no ipv6 route on this host: checking its ipv4 addresses only");
            ips.retain(std::net::IpAddr::is_ipv4);
        }
        if ips.is_empty() {
            tracing::warn!(zone = %dns::show(zone), nameserver = %dns::show(ns), "name server has no usable address, skipped");
            continue;
        }
        nameservers.push(NameServer {
            name: dns::show(ns),
            addrs: ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        });
    }
    if nameservers.is_empty() {
        return Err(no_ns(format!(
            "none of {} has an address",
            names.iter().map(dns::show).collect::<Vec<_>>().join(", ")
        )));
    }
    nameservers.sort_by(|a, b| a.name.cmp(&b.name));

    // Reached by a referral: the SOA comes from the zone's own servers.
    let negative_ttl = match soa {
        Some((neg, t)) => {
            ttl = ttl.min(t);
            neg
        }
        None => {
            let mut last = String::from("no address");
            let mut got = None;
            for addr in nameservers.iter().flat_map(|n| n.addrs.iter().copied()) {
                match inner.query(addr, zone, RecordType::SOA, false).await.result {
                    Ok(m) => match dns::read_soa(zone, &m) {
                        Some((neg, t)) => {
                            ttl = ttl.min(t);
                            got = Some(neg);
                            break;
                        }
                        None => {
                            last = format!("{addr} answered {} without SOA", dns::rcode_name(m.metadata.response_code))
                        }
                    },
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            got.ok_or_else(|| Error::Resolve { name: dns::show(zone), message: format!("SOA of the zone: {last}") })?
        }
    };
    Ok(ZoneInfo {
        nameservers,
        negative_ttl: Duration::from_secs(u64::from(negative_ttl)),
        expires: Instant::now() + dns::cache_for(ttl),
    })
}

/// See [`crate::Checker::caa`]: RFC 8659's relevant RRset, climbing from `name` towards the root.
pub(crate) async fn caa(inner: &Arc<Inner>, name: &str) -> Result<Option<crate::CaaSet>, Error> {
    let name = dns::parse_name(name).map_err(|message| Error::Resolve { name: name.to_string(), message })?;
    let mut candidate = name.clone();
    while !candidate.is_root() {
        // The name itself is asked every time; its parents are shared by many names (a
        // zone's apex by all of its names) and asked once per `CAA_CACHE_FOR`.
        let records =
            if candidate == name { caa_at(inner, &candidate).await? } else { parent_caa(inner, &candidate).await? };
        if !records.is_empty() {
            return Ok(Some(crate::CaaSet { owner: dns::show(&candidate), records }));
        }
        candidate = candidate.base_name();
    }
    Ok(None)
}

/// How long the CAA records of a parent name are reused: short, so a fixed record is seen soon.
const CAA_CACHE_FOR: Duration = Duration::from_secs(30);

/// The CAA records found at a parent name, and until when they are reused.
#[derive(Debug)]
pub(crate) struct CachedCaa {
    records: Vec<crate::Caa>,
    until: Instant,
}

/// [`caa_at`] for a parent name, through the checker's cache.
async fn parent_caa(inner: &Arc<Inner>, name: &Name) -> Result<Vec<crate::Caa>, Error> {
    let slot = slot_of(&inner.caa_parents, dns::show(name), |cached| cached.until);
    let mut slot = slot.lock().await;
    if let Some(cached) = slot.as_ref().filter(|cached| cached.until > Instant::now()) {
        return Ok(cached.records.clone());
    }
    // A failed lookup is not kept: the next caller asks again.
    let records = caa_at(inner, name).await?;
    *slot = Some(CachedCaa { records: records.clone(), until: Instant::now() + CAA_CACHE_FOR });
    Ok(records)
}

/// The CAA records at `name` itself (empty when there are none, or when the resolvers refuse to
/// answer for that part of the tree).
async fn caa_at(inner: &Arc<Inner>, name: &Name) -> Result<Vec<crate::Caa>, Error> {
    let message = match inner.resolve(name, RecordType::CAA).await {
        Ok(Ok(m)) => m,
        // REFUSED: the resolvers do not serve this part of the tree (an authoritative server
        // used as resolver, above its zones): nothing is known there; climb on.
        Ok(Err(_)) => return Ok(Vec::new()),
        Err(why) => {
            return Err(Error::Resolve { name: dns::show(name), message: format!("CAA query failed: {why}") });
        }
    };
    Ok(message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::CAA(caa) => Some(crate::Caa {
                critical: caa.issuer_critical,
                tag: caa.tag.to_ascii_lowercase(),
                value: String::from_utf8_lossy(&caa.value).into_owned(),
            }),
            _ => None,
        })
        .collect())
}

/// A cache keyed by name grows with every name a long-running daemon ever looked at; this many
/// entries are kept without looking at their age.
const SWEEP_FROM: usize = 1024;

/// A cache's map that drops its expired entries as it grows.
#[derive(Debug)]
pub(crate) struct Swept<K, V> {
    pub(crate) map: HashMap<K, V>,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

impl<K, V> Default for Swept<K, V> {
    fn default() -> Self {
        Self { map: HashMap::new(), sweep_at: SWEEP_FROM }
    }
}

impl<K: Eq + std::hash::Hash, V> Swept<K, V> {
    /// Call before `key` goes in: when it is a new key and the map has grown to the next sweep's
    /// size, drops the entries `expired` says are stale and sets the next sweep at twice what is
    /// left (at least [`SWEEP_FROM`]). The map stays within about twice its live entries, and each
    /// sweep is paid for by as many insertions as it reads entries.
    pub(crate) fn make_room_for(&mut self, key: &K, expired: impl Fn(&V) -> bool) {
        if self.map.len() >= self.sweep_at && !self.map.contains_key(key) {
            self.map.retain(|_, v| !expired(v));
            self.sweep_at = (2 * self.map.len()).max(SWEEP_FROM);
        }
    }
}

/// A cache where one lookup per key runs at a time (each key's slot has an async lock).
pub(crate) type Slots<T> = std::sync::Mutex<Swept<String, Arc<tokio::sync::Mutex<Option<T>>>>>;

/// The slot for `key`, made when missing; slots nobody uses whose value expired (`until`) or
/// whose lookup failed are swept as the map grows.
fn slot_of<T>(slots: &Slots<T>, key: String, until: impl Fn(&T) -> Instant) -> Arc<tokio::sync::Mutex<Option<T>>> {
    let mut slots = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    slots.make_room_for(&key, |slot| {
        // Held elsewhere (a lookup under way, a caller about to lock it) or still valid: kept.
        Arc::strong_count(slot) == 1
            && slot.try_lock().is_ok_and(|value| value.as_ref().is_none_or(|v| until(v) <= now))
    });
    slots.map.entry(key).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_swept_when_the_map_has_grown_to_the_next_sweep() {
        let mut cache: Swept<u32, bool> = Swept::default();
        cache.map.extend((0..1000).map(|k| (k, k % 2 == 0)));
        // Below the first sweep's size: nothing is looked at.
        cache.make_room_for(&u32::MAX, |expired| *expired);
        assert_eq!(cache.map.len(), 1000);
        cache.map.extend((1000..1024).map(|k| (k, true)));
        cache.make_room_for(&u32::MAX, |expired| *expired);
        assert_eq!(cache.map.len(), 500, "only the live half stays");
        assert!(cache.map.values().all(|expired| !expired));
        // The next sweep waits until the map has grown again (here to the floor, 1,024), so a map
        // near a sweep's size is not read at every insertion.
        cache.map.extend((2000..2523).map(|k| (k, true)));
        cache.make_room_for(&u32::MAX, |expired| *expired);
        assert_eq!(cache.map.len(), 1023);
        cache.map.insert(3000, true);
        cache.make_room_for(&u32::MAX, |expired| *expired);
        assert_eq!(cache.map.len(), 500);
    }

    #[tokio::test]
    async fn slots_in_use_or_still_valid_survive_the_sweep() {
        let slots: Slots<Instant> = std::sync::Mutex::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        // A lookup under way: its caller holds the slot, still empty.
        let held = slot_of(&slots, "held".into(), |at| *at);
        *slot_of(&slots, "valid".into(), |at| *at).lock().await = Some(later);
        *slot_of(&slots, "expired".into(), |at| *at).lock().await = Some(now);
        // A lookup that failed leaves its slot empty.
        drop(slot_of(&slots, "failed".into(), |at| *at));
        for k in 4..SWEEP_FROM {
            *slot_of(&slots, format!("old{k}"), |at| *at).lock().await = Some(now);
        }
        assert_eq!(slots.lock().unwrap().map.len(), SWEEP_FROM);
        drop(slot_of(&slots, "new".into(), |at| *at));
        let mut kept: Vec<String> = slots.lock().unwrap().map.keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["held", "new", "valid"]);
        drop(held);
    }
}
