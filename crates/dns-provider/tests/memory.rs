//! The `memory` provider against its own authoritative DNS server: the conformance battery (read
//! back over real DNS), and the server's behaviour (lag per server, truncation and TCP retry,
//! NXDOMAIN vs NODATA, NS glue, query counts, shutdown).

mod battery;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use battery::Harness;
use dns_provider::memory::{LagModel, MemoryDnsServer, MemoryProvider, MemoryStore, ServerConfig, serve};
use dns_provider::{DnsProvider, Record, RecordType, SharedProvider};
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{DnsResponse, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType as DnsType};

const ZONE: &str = "memory.test";

/// How a test query travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// UDP with EDNS (1232-byte payload).
    Udp,
    /// UDP without EDNS (512 bytes).
    UdpNoEdns,
    /// TCP.
    Tcp,
}

/// One non-recursive query straight to `server`.
async fn query(server: SocketAddr, name: &str, rtype: DnsType, via: Via) -> DnsResponse {
    let provider = TokioRuntimeProvider::default();
    let name = Name::from_ascii(format!("{name}.")).expect("name");
    let mut client = match via {
        Via::Udp | Via::UdpNoEdns => {
            let stream = UdpClientStream::builder(server, provider).with_timeout(Some(Duration::from_secs(5))).build();
            let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
            tokio::spawn(bg);
            client
        }
        Via::Tcp => {
            let (stream, handle) = TcpClientStream::new(server, None, Some(Duration::from_secs(5)), provider);
            let stream = stream.await.unwrap_or_else(|e| panic!("tcp connect to {server}: {e}"));
            let (client, bg) = Client::<TokioRuntimeProvider>::new(stream, handle);
            tokio::spawn(bg);
            client
        }
    };
    if via == Via::UdpNoEdns {
        client.disable_edns();
    }
    client.query(name, DNSClass::IN, rtype).await.unwrap_or_else(|e| panic!("query {server} {via:?}: {e}"))
}

fn txt_values(resp: &DnsResponse) -> Vec<String> {
    resp.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
            _ => None,
        })
        .collect()
}

fn cname_values(resp: &DnsResponse) -> Vec<String> {
    resp.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.to_ascii().trim_end_matches('.').to_string()),
            _ => None,
        })
        .collect()
}

/// Two name servers (127.0.0.1 and 127.0.0.2, one port) serving `ZONE` from a fresh store.
async fn start(lag: LagModel) -> (MemoryStore, MemoryDnsServer) {
    let store = MemoryStore::new();
    let mut config = ServerConfig::new(
        vec![ZONE.into()],
        vec!["127.0.0.1:0".parse().expect("addr"), "127.0.0.2:0".parse().expect("addr")],
    );
    config.lag = lag;
    config.soa_minimum = 17;
    let server = serve(store.clone(), config).await.expect("start the memory dns server");
    (store, server)
}

struct MemoryHarness {
    store: MemoryStore,
    server: MemoryDnsServer,
    provider: SharedProvider,
}

async fn setup() -> MemoryHarness {
    let (store, server) = start(LagModel::default()).await;
    let provider = Arc::new(MemoryProvider::new(vec![ZONE.into()], store.clone()));
    MemoryHarness { store, server, provider }
}

#[async_trait]
impl Harness for MemoryHarness {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.into()
    }

    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String> {
        // Both name servers must agree (no lag configured here).
        let mut seen = Vec::new();
        for addr in self.server.addrs() {
            let resp = match rtype {
                RecordType::Txt => txt_values(&query(*addr, name, DnsType::TXT, Via::Udp).await),
                RecordType::Cname => cname_values(&query(*addr, name, DnsType::CNAME, Via::Udp).await),
            };
            seen.push(resp);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "name servers disagree: {seen:?}");
        seen.swap_remove(0)
    }

    async fn add_foreign(&self, record: &Record) {
        self.store.insert(record);
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        None // the memory store has no credentials
    }

    async fn throttle_next(&self, _n: u32) -> bool {
        false
    }
}

conformance_battery!(setup);

/// A published value is served authoritatively by every name server, at exactly its name.
#[tokio::test]
async fn served_authoritatively_by_every_server() {
    let h = setup().await;
    let name = format!("_dnsauth.www.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "tok-served")).await.expect("publish");
    for addr in h.server.addrs() {
        let resp = query(*addr, &name, DnsType::TXT, Via::Udp).await;
        assert!(resp.metadata.authoritative, "{addr}: answer must be authoritative");
        assert_eq!(resp.response_code, ResponseCode::NoError);
        assert_eq!(txt_values(&resp), ["tok-served"]);
        assert_eq!(resp.answers[0].name.to_ascii(), format!("{name}."));
    }
    assert_eq!(h.server.queries(), vec![1, 1]);
    assert_eq!(h.store.counters().publish_calls, 1);
}

/// Server 2 lags by an hour: server 1 serves the value, server 2 does not, and the "visible
/// everywhere" instant is the publication plus that hour. A short lag ends: the server serves
/// the value only once its lag has passed.
#[tokio::test]
async fn lag_per_server_is_respected() {
    let (store, server) =
        start(LagModel { per_server: vec![Duration::ZERO, Duration::from_secs(3600)], ..LagModel::default() }).await;
    let provider = MemoryProvider::new(vec![ZONE.into()], store.clone());
    let name = format!("_dnsauth.lag.{ZONE}");
    provider.publish(ZONE, &Record::txt(&name, "tok-lag")).await.expect("publish");
    let published = store.get(&name, RecordType::Txt)[0].published_at;
    assert_eq!(txt_values(&query(server.addrs()[0], &name, DnsType::TXT, Via::Udp).await), ["tok-lag"]);
    let lagging = query(server.addrs()[1], &name, DnsType::TXT, Via::Udp).await;
    assert_eq!(lagging.response_code, ResponseCode::NXDomain, "the lagging server must not serve it yet");
    assert_eq!(server.visible_everywhere_at(&name, "tok-lag"), Some(published + Duration::from_secs(3600)));
    assert_eq!(server.visible_at(0, &name, "tok-lag"), Some(published));
    assert_eq!(server.visible_everywhere_at(&name, "absent"), None);
    // Removal is immediate everywhere.
    provider.remove(ZONE, &Record::txt(&name, "tok-lag")).await.expect("remove");
    assert_eq!(query(server.addrs()[0], &name, DnsType::TXT, Via::Udp).await.response_code, ResponseCode::NXDomain);

    let (store, server) =
        start(LagModel { per_server: vec![Duration::ZERO, Duration::from_millis(300)], ..LagModel::default() }).await;
    store.insert(&Record::txt(&name, "tok-short"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resp = query(server.addrs()[1], &name, DnsType::TXT, Via::Udp).await;
        if txt_values(&resp) == ["tok-short"] {
            let visible = server.visible_at(1, &name, "tok-short").expect("held");
            assert!(tokio::time::Instant::now() >= visible, "served before its lag had passed");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lagging server never served the value");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TXT RRset larger than 512 bytes is truncated (TC) over UDP without EDNS, larger than the
/// EDNS size with it, and comes whole over TCP.
#[tokio::test]
async fn large_rrset_truncates_over_udp_and_works_over_tcp() {
    let h = setup().await;
    let name = format!("_dnsauth.big.{ZONE}");
    let values: Vec<String> = (0..30).map(|i| format!("{i:02}-{}", "x".repeat(60))).collect();
    for v in &values {
        h.provider.publish(ZONE, &Record::txt(&name, v)).await.expect("publish");
    }
    let addr = h.server.addrs()[0];
    let udp = query(addr, &name, DnsType::TXT, Via::UdpNoEdns).await;
    assert!(udp.metadata.truncation, "a >512-byte answer over plain UDP must set TC");
    assert!(udp.answers.len() < values.len());
    let edns = query(addr, &name, DnsType::TXT, Via::Udp).await;
    assert!(edns.metadata.truncation, "a >1232-byte answer must set TC even with EDNS");
    let tcp = query(addr, &name, DnsType::TXT, Via::Tcp).await;
    assert!(!tcp.metadata.truncation);
    let mut got = txt_values(&tcp);
    got.sort();
    assert_eq!(got, values);
}

/// A value longer than 255 bytes is served as several strings of one TXT record.
#[tokio::test]
async fn long_txt_value_is_split_into_strings() {
    let h = setup().await;
    let name = format!("_dnsauth.long.{ZONE}");
    let value = "a".repeat(300);
    h.provider.publish(ZONE, &Record::txt(&name, &value)).await.expect("publish");
    let resp = query(h.server.addrs()[0], &name, DnsType::TXT, Via::Tcp).await;
    let RData::TXT(txt) = &resp.answers[0].data else { panic!("not a TXT: {resp:?}") };
    assert_eq!(txt.txt_data.iter().map(|s| s.len()).collect::<Vec<_>>(), [255, 45]);
    assert_eq!(txt_values(&resp), [value]);
}

/// NXDOMAIN for an absent name, NODATA for a present name of another type, both with the SOA
/// (negative TTL = soa_minimum) in the authority section; REFUSED outside the zones.
#[tokio::test]
async fn nxdomain_nodata_refused() {
    let h = setup().await;
    let name = format!("_dnsauth.neg.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "tok")).await.expect("publish");
    let addr = h.server.addrs()[1];

    let nx = query(addr, &format!("absent.{ZONE}"), DnsType::TXT, Via::Udp).await;
    assert_eq!(nx.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    let RData::SOA(soa) = &nx.authorities[0].data else { panic!("no SOA in authority: {nx:?}") };
    assert_eq!(soa.minimum, 17);
    assert_eq!(nx.authorities[0].name.to_ascii(), format!("{ZONE}."));

    let nodata = query(addr, &name, DnsType::CNAME, Via::Udp).await;
    assert_eq!(nodata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(matches!(nodata.authorities[0].data, RData::SOA(_)));

    // the parent of a record is an empty non-terminal: NODATA, not NXDOMAIN
    let ent = query(addr, &format!("neg.{ZONE}"), DnsType::TXT, Via::Udp).await;
    assert_eq!(ent.response_code, ResponseCode::NoError);

    let refused = query(addr, "example.org", DnsType::SOA, Via::Udp).await;
    assert_eq!(refused.response_code, ResponseCode::Refused);
    assert!(!refused.metadata.authoritative);
}

/// SOA and NS at the apex; `nsK.<zone>` resolve to the servers' addresses.
#[tokio::test]
async fn soa_and_ns_point_at_the_servers() {
    let h = setup().await;
    let addr = h.server.addrs()[0];
    let soa = query(addr, ZONE, DnsType::SOA, Via::Udp).await;
    assert!(matches!(soa.answers[0].data, RData::SOA(_)));
    let ns = query(addr, ZONE, DnsType::NS, Via::Udp).await;
    let mut hosts: Vec<String> = ns.answers.iter().map(|r| r.data.to_string()).collect();
    hosts.sort();
    assert_eq!(hosts, [format!("ns1.{ZONE}."), format!("ns2.{ZONE}.")]);
    let a = query(addr, &format!("ns2.{ZONE}"), DnsType::A, Via::Udp).await;
    assert_eq!(a.answers[0].data.to_string(), h.server.addrs()[1].ip().to_string());
    assert_eq!(h.server.addrs()[0].port(), h.server.addrs()[1].port(), "name servers share one port");
}

/// After shutdown nothing listens any more.
#[tokio::test]
async fn shutdown_stops_serving() {
    let (_store, server) = start(LagModel::default()).await;
    let addr = server.addrs()[0];
    assert_eq!(query(addr, ZONE, DnsType::SOA, Via::Tcp).await.response_code, ResponseCode::NoError);
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "TCP still accepted after shutdown");
}
