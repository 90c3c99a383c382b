//! The authoritative DNS server for a [`MemoryStore`].
//!
//! Built on hickory-server's `Server` with our own `RequestHandler` (one `Server` per name-server
//! address, so each knows its own lag). hickory-server frames UDP and TCP and truncates UDP
//! answers to 512 bytes or the client's EDNS size (setting TC), so clients retry over TCP; the
//! handler only decides what to answer. No zone files and no `Catalog`: records come live from
//! the store, filtered by the lag model at the moment of the query.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hickory_net::runtime::Time;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record as DnsRecord, RecordType as DnsType};
use hickory_server::Server;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

use super::{MemoryStore, StoredValue};
use crate::{RecordType, normalize_name};

/// Propagation lag of the served records.
///
/// Server `i` serves a value once `published_at + record lag + per_server[i]` has passed, where
/// the record lag is drawn (deterministically from `seed`, the name and the value) from
/// `uniform`. Removal is immediate everywhere. The default is no lag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LagModel {
    /// Extra lag of server `i` (missing entries mean none).
    pub per_server: Vec<Duration>,
    /// Range `(min, max)` of the random per-record lag.
    pub uniform: (Duration, Duration),
    /// Seed of the per-record lag.
    pub seed: u64,
}

impl LagModel {
    /// The lag of one value, common to every server.
    pub fn record_lag(&self, name: &str, value: &str) -> Duration {
        let (lo, hi) = self.uniform;
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_nanos()).unwrap_or(u64::MAX);
        let draw = mix(self.seed, name, value);
        lo + Duration::from_nanos(if span == u64::MAX { draw } else { draw % (span + 1) })
    }

    /// The extra lag of server `index`.
    pub fn server_lag(&self, index: usize) -> Duration {
        self.per_server.get(index).copied().unwrap_or_default()
    }
}

/// FNV-1a over the name and value, then a splitmix64 finalizer: stable across runs and Rust
/// versions (unlike `DefaultHasher`), so a seed reproduces a benchmark.
fn mix(seed: u64, name: &str, value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes().chain([0]).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// What [`serve`] starts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Zones served (absolute, no trailing dot); names outside them are REFUSED.
    pub zones: Vec<String>,
    /// One address per name server (`ns1.<zone>` is the first). Port 0 picks one free port that
    /// every address then shares, as real name servers of one zone share port 53.
    pub addrs: Vec<SocketAddr>,
    /// Propagation lag.
    pub lag: LagModel,
    /// SOA minimum: the negative-caching TTL of NXDOMAIN/NODATA answers.
    pub soa_minimum: u32,
}

impl ServerConfig {
    /// `zones` served on `addrs`, no lag, a 30 s negative TTL.
    pub fn new(zones: Vec<String>, addrs: Vec<SocketAddr>) -> Self {
        Self { zones, addrs, lag: LagModel::default(), soa_minimum: 30 }
    }
}

/// Running name servers for a [`MemoryStore`]; they stop on drop or [`shutdown`](Self::shutdown).
pub struct MemoryDnsServer {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    servers: Vec<Server<Handler>>,
}

impl std::fmt::Debug for MemoryDnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDnsServer").field("addrs", &self.addrs).field("zones", &self.shared.zones).finish()
    }
}

struct Shared {
    store: MemoryStore,
    zones: Vec<String>,
    lag: LagModel,
    soa_minimum: u32,
    ips: Vec<IpAddr>,
    queries: Vec<AtomicU64>,
}

/// Starts one UDP + TCP listener pair per address of `config`, serving `store`.
pub async fn serve(store: MemoryStore, config: ServerConfig) -> io::Result<MemoryDnsServer> {
    if config.addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "memory dns server: no listen address given"));
    }
    let sockets = bind_all(&config.addrs).await?;
    let addrs: Vec<SocketAddr> = sockets.iter().map(|(u, _)| u.local_addr()).collect::<io::Result<_>>()?;
    let shared = Arc::new(Shared {
        store,
        zones: config.zones.iter().map(|z| normalize_name(z)).collect(),
        lag: config.lag,
        soa_minimum: config.soa_minimum,
        ips: addrs.iter().map(SocketAddr::ip).collect(),
        queries: addrs.iter().map(|_| AtomicU64::new(0)).collect(),
    });
    let mut servers = Vec::with_capacity(addrs.len());
    for (index, (udp, tcp)) in sockets.into_iter().enumerate() {
        let mut server = Server::new(Handler { index, shared: shared.clone() });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        servers.push(server);
    }
    tracing::debug!(?addrs, zones = ?shared.zones, "memory dns server listening");
    Ok(MemoryDnsServer { addrs, shared, servers })
}

/// Binds every address; those with port 0 share one free port.
async fn bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<(UdpSocket, TcpListener)>> {
    let mut last_err = None;
    for _ in 0..20 {
        match try_bind_all(addrs).await {
            Ok(s) => return Ok(s),
            // another process took the shared port on one of the addresses: pick another
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addrs.iter().any(|a| a.port() == 0) => {
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("memory dns server: no free port")))
}

async fn try_bind_all(addrs: &[SocketAddr]) -> io::Result<Vec<(UdpSocket, TcpListener)>> {
    let mut shared_port = 0;
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let mut addr = *addr;
        if addr.port() == 0 {
            addr.set_port(shared_port);
        }
        let udp = UdpSocket::bind(addr).await.map_err(|e| with_addr(e, addr))?;
        let bound = udp.local_addr()?;
        if addrs.iter().any(|a| a.port() == 0) && shared_port == 0 && addr.port() == 0 {
            shared_port = bound.port();
        }
        let tcp = TcpListener::bind(bound).await.map_err(|e| with_addr(e, bound))?;
        out.push((udp, tcp));
    }
    Ok(out)
}

fn with_addr(e: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("memory dns server: cannot listen on {addr}: {e}"))
}

impl MemoryDnsServer {
    /// The bound addresses, one per name server, in configuration order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Queries answered so far, per server.
    pub fn queries(&self) -> Vec<u64> {
        self.shared.queries.iter().map(|q| q.load(Ordering::Relaxed)).collect()
    }

    /// When server `index` starts (or started) serving `value` at `name`, if the store holds it.
    pub fn visible_at(&self, index: usize, name: &str, value: &str) -> Option<Instant> {
        self.published(name, value)
            .map(|(published_at, record_lag)| published_at + record_lag + self.shared.lag.server_lag(index))
    }

    /// When the last server starts (or started) serving `value` at `name` (TXT or CNAME), if the
    /// store holds it: the reference point of detection-latency benchmarks.
    pub fn visible_everywhere_at(&self, name: &str, value: &str) -> Option<Instant> {
        (0..self.addrs.len()).filter_map(|i| self.visible_at(i, name, value)).max()
    }

    fn published(&self, name: &str, value: &str) -> Option<(Instant, Duration)> {
        let name = normalize_name(name);
        let inner = self.shared.store.lock();
        [RecordType::Txt, RecordType::Cname].into_iter().find_map(|t| {
            inner
                .values(&name, t)
                .iter()
                .find(|v| v.value == value)
                .map(|v| (v.published_at, self.shared.lag.record_lag(&name, &v.value)))
        })
    }

    /// Stops every listener and waits for them to finish.
    pub async fn shutdown(mut self) {
        for server in &mut self.servers {
            if let Err(error) = server.shutdown_gracefully().await {
                tracing::debug!(%error, "memory dns server stopped with an error");
            }
        }
    }
}

impl Drop for MemoryDnsServer {
    fn drop(&mut self) {
        // Dropping a `Server` aborts its tasks; cancelling first lets them end cleanly.
        for server in &self.servers {
            server.shutdown_token().cancel();
        }
    }
}

struct Handler {
    index: usize,
    shared: Arc<Shared>,
}

/// What one server answers to one question.
#[derive(Debug, Default)]
struct Answer {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<DnsRecord>,
    authorities: Vec<DnsRecord>,
    additionals: Vec<DnsRecord>,
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.shared.queries[self.index].fetch_add(1, Ordering::Relaxed);
        let resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512)).set_version(0);
            e
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let answer = match (request.metadata.op_code, request.request_info()) {
            (OpCode::Query, Ok(info)) => {
                let qname = normalize_name(&info.query.name().to_string());
                self.shared.answer(self.index, Instant::now(), &qname, info.query.query_type())
            }
            (OpCode::Query, Err(_)) => Answer { rcode: ResponseCode::FormErr, ..Answer::default() },
            _ => Answer { rcode: ResponseCode::NotImp, ..Answer::default() },
        };
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;
        let response = MessageResponseBuilder::new(&request.queries, resp_edns.as_ref()).build(
            metadata,
            answer.answers.iter(),
            answer.authorities.iter(),
            std::iter::empty(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "memory dns server could not send a response");
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

fn dns_name(name: &str) -> Name {
    // Names reach here from the store or the zones list, already validated as DNS names by
    // their writers; an unparsable one (a provider bug) is served as the root rather than panic.
    Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
}

fn txt_rdata(value: &str) -> RData {
    // One character-string holds at most 255 bytes: longer values become several strings.
    RData::TXT(TXT::from_bytes(value.as_bytes().chunks(255).collect()))
}

impl Shared {
    /// The answer of server `index` at `now` to `qname`/`qtype` (pure: tested without sockets).
    fn answer(&self, index: usize, now: Instant, qname: &str, qtype: DnsType) -> Answer {
        let Some(zone) = self.zones.iter().filter(|z| crate::in_zone(qname, z)).max_by_key(|z| z.len()) else {
            return Answer { rcode: ResponseCode::Refused, ..Answer::default() };
        };
        let mut out = Answer { authoritative: true, ..Answer::default() };
        let inner = self.store.lock();
        let visible = |name: &str, v: &StoredValue| {
            now >= v.published_at + self.lag.record_lag(name, &v.value) + self.lag.server_lag(index)
        };
        let any = qtype == DnsType::ANY;
        let mut exists = false;

        if qname == zone {
            exists = true;
            if any || qtype == DnsType::SOA {
                out.answers.push(self.soa(zone, inner.serial));
            }
            if any || qtype == DnsType::NS {
                for (i, ip) in self.ips.iter().enumerate() {
                    let host = format!("ns{}.{zone}", i + 1);
                    out.answers.push(DnsRecord::from_rdata(dns_name(zone), 3600, RData::NS(NS(dns_name(&host)))));
                    if let IpAddr::V4(v4) = ip {
                        out.additionals.push(DnsRecord::from_rdata(dns_name(&host), 3600, RData::A(A(*v4))));
                    }
                }
            }
        }
        if let Some(ip) = self.ns_host_ip(zone, qname) {
            exists = true;
            if let (true, IpAddr::V4(v4)) = (any || qtype == DnsType::A, ip) {
                out.answers.push(DnsRecord::from_rdata(dns_name(qname), 3600, RData::A(A(v4))));
            }
        }

        // Store data, following in-zone CNAMEs like an authoritative server does (bounded, so a
        // loop ends).
        let mut name = qname.to_string();
        for _ in 0..8 {
            let cnames: Vec<&StoredValue> =
                inner.values(&name, RecordType::Cname).iter().filter(|v| visible(&name, v)).collect();
            let txts: Vec<&StoredValue> =
                inner.values(&name, RecordType::Txt).iter().filter(|v| visible(&name, v)).collect();
            if name == qname {
                exists |= !cnames.is_empty() || !txts.is_empty() || inner.has_descendants(&name);
            }
            if any || qtype == DnsType::TXT {
                out.answers
                    .extend(txts.iter().map(|v| DnsRecord::from_rdata(dns_name(&name), v.ttl, txt_rdata(&v.value))));
            }
            let Some(cname) = cnames.first() else { break };
            out.answers.push(DnsRecord::from_rdata(
                dns_name(&name),
                cname.ttl,
                RData::CNAME(CNAME(dns_name(&cname.value))),
            ));
            let target = &cname.value;
            let in_our_zones = self.zones.iter().any(|z| crate::in_zone(target, z));
            if any || qtype == DnsType::CNAME || !in_our_zones {
                break;
            }
            name = target.clone();
        }

        if out.answers.is_empty() {
            out.rcode = if exists { ResponseCode::NoError } else { ResponseCode::NXDomain };
        }
        if out.answers.is_empty() || (name != qname && out.answers.iter().all(|r| r.record_type() == DnsType::CNAME)) {
            // negative answer (or a CNAME chain ending in no data): the SOA gives the negative TTL
            out.authorities.push(self.soa(zone, inner.serial));
        }
        out
    }

    fn soa(&self, zone: &str, serial: u32) -> DnsRecord {
        let soa = SOA::new(
            dns_name(&format!("ns1.{zone}")),
            dns_name(&format!("hostmaster.{zone}")),
            serial,
            3600,
            600,
            604_800,
            self.soa_minimum,
        );
        DnsRecord::from_rdata(dns_name(zone), self.soa_minimum, RData::SOA(soa))
    }

    /// The address of `qname` when it is one of the zone's name-server hosts `nsK.<zone>`.
    fn ns_host_ip(&self, zone: &str, qname: &str) -> Option<IpAddr> {
        let label = crate::relative_name(qname, zone).filter(|l| !l.is_empty())?;
        let k: usize = label.strip_prefix("ns")?.parse().ok()?;
        self.ips.get(k.checked_sub(1)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn shared(store: MemoryStore, lag: LagModel) -> Shared {
        Shared {
            store,
            zones: vec!["example.com".into(), "sub.example.com".into()],
            lag,
            soa_minimum: 42,
            ips: vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
            queries: vec![AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    fn texts(a: &Answer) -> Vec<String> {
        a.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => {
                    Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>())
                }
                _ => None,
            })
            .collect()
    }

    /// Each server serves a value only after its own lag; the random lag is within its range and
    /// reproducible from the seed.
    #[test]
    fn lag_per_server_and_record() {
        let store = MemoryStore::new();
        store.insert(&Record::txt("_dnsauth.example.com", "v"));
        let published = store.get("_dnsauth.example.com", RecordType::Txt)[0].published_at;
        let lag = LagModel {
            per_server: vec![Duration::ZERO, Duration::from_secs(10)],
            uniform: (Duration::from_secs(1), Duration::from_secs(3)),
            seed: 7,
        };
        let rl = lag.record_lag("_dnsauth.example.com", "v");
        assert!((Duration::from_secs(1)..=Duration::from_secs(3)).contains(&rl), "{rl:?}");
        assert_eq!(rl, lag.clone().record_lag("_dnsauth.example.com", "v"));
        let s = shared(store, lag);
        let q = |i, at| s.answer(i, at, "_dnsauth.example.com", DnsType::TXT);
        let before = q(0, published + rl - Duration::from_millis(1));
        assert_eq!(before.rcode, ResponseCode::NXDomain);
        assert_eq!(texts(&q(0, published + rl)), ["v"]);
        assert!(texts(&q(1, published + rl + Duration::from_secs(9))).is_empty());
        assert_eq!(texts(&q(1, published + rl + Duration::from_secs(10))), ["v"]);
    }

    /// Negative answers carry the SOA; empty non-terminals are NODATA; other zones are REFUSED;
    /// the most specific zone answers.
    #[test]
    fn negative_answers_and_zones() {
        let store = MemoryStore::new();
        store.insert(&Record::txt("_dnsauth.www.example.com", "v"));
        let s = shared(store, LagModel::default());
        let now = Instant::now();
        let nx = s.answer(0, now, "nope.example.com", DnsType::TXT);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert!(nx.authoritative);
        assert!(matches!(&nx.authorities[0].data, RData::SOA(soa) if soa.minimum == 42));
        let ent = s.answer(0, now, "www.example.com", DnsType::TXT);
        assert_eq!((ent.rcode, ent.answers.len(), ent.authorities.len()), (ResponseCode::NoError, 0, 1));
        let nodata = s.answer(0, now, "_dnsauth.www.example.com", DnsType::AAAA);
        assert_eq!((nodata.rcode, nodata.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(s.answer(0, now, "example.org", DnsType::SOA).rcode, ResponseCode::Refused);
        let sub = s.answer(0, now, "x.sub.example.com", DnsType::TXT);
        assert_eq!(sub.authorities[0].name, dns_name("sub.example.com"));
        let ns = s.answer(1, now, "example.com", DnsType::NS);
        assert_eq!(ns.answers.len(), 2);
        assert_eq!(ns.additionals.len(), 2);
        let a = s.answer(0, now, "ns2.example.com", DnsType::A);
        assert!(matches!(&a.answers[0].data, RData::A(A(ip)) if ip.to_string() == "127.0.0.2"));
        assert_eq!(s.answer(0, now, "ns3.example.com", DnsType::A).rcode, ResponseCode::NXDomain);
    }

    /// A TXT query at a CNAME answers the CNAME and follows it inside our zones.
    #[test]
    fn cname_chase() {
        let store = MemoryStore::new();
        store.insert(&Record::cname("_dnsauth.example.com", "_dnsauth.sub.example.com"));
        store.insert(&Record::txt("_dnsauth.sub.example.com", "delegated"));
        store.insert(&Record::cname("_dnsauth.www.example.com", "x.dcv.digicert.com"));
        let s = shared(store, LagModel::default());
        let now = Instant::now();
        let a = s.answer(0, now, "_dnsauth.example.com", DnsType::TXT);
        assert_eq!(a.answers.len(), 2);
        assert_eq!(texts(&a), ["delegated"]);
        let out = s.answer(0, now, "_dnsauth.www.example.com", DnsType::TXT);
        assert_eq!((out.rcode, out.answers.len()), (ResponseCode::NoError, 1));
    }
}
