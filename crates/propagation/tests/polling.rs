//! Polling, backoff, deadline, cancellation and the global query cap, against a scripted
//! transport under paused tokio time (no network: every run is instant and deterministic).
//!
//! The fake zone `f.test` has two name servers, ns1 (10.0.0.11) and ns2 (10.0.0.12); the
//! "resolver" 10.0.0.1 answers discovery queries.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use propagation::{Checker, CheckerConfig, Error, Expected, Mode, Protocol, ResolverSpec, ServerStatus, Transport};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const RESOLVER: &str = "10.0.0.1:53";
const NS1: &str = "10.0.0.11:53";
const NS2: &str = "10.0.0.12:53";

/// How a name server answers TXT queries.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Serves `v` from this moment on (NXDOMAIN before).
    ServesFrom(Instant),
    /// Never answers.
    Hangs,
    /// SERVFAIL.
    ServFail,
    /// Serves `v`, but only over TCP (UDP answers are truncated).
    Large,
}

/// `(server, type, protocol, recursion desired, when)` of one query.
type Sent = (SocketAddr, RecordType, Protocol, bool, Instant);

#[derive(Debug)]
struct Fake {
    behaviour: Mutex<HashMap<SocketAddr, Behaviour>>,
    /// `(server, type, protocol, recursion desired, when)` of every query.
    log: Mutex<Vec<Sent>>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

impl Fake {
    fn new(ns1: Behaviour, ns2: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour: Mutex::new(HashMap::from([(addr(NS1), ns1), (addr(NS2), ns2)])),
            log: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, server: &str, b: Behaviour) {
        self.behaviour.lock().unwrap().insert(addr(server), b);
    }

    /// Times of the TXT queries sent to `server`.
    fn txt_queries(&self, server: &str) -> Vec<Instant> {
        let server = addr(server);
        self.log.lock().unwrap().iter().filter(|q| q.0 == server && q.1 == RecordType::TXT).map(|q| q.4).collect()
    }

    fn soa() -> RData {
        RData::SOA(SOA::new(name("ns1.f.test."), name("hostmaster.f.test."), 1, 3600, 600, 86400, 300))
    }
}

#[async_trait]
impl Transport for Fake {
    async fn exchange(&self, server: SocketAddr, query: &Message, protocol: Protocol) -> io::Result<Message> {
        let q = query.queries[0].clone();
        self.log.lock().unwrap().push((
            server,
            q.query_type(),
            protocol,
            query.metadata.recursion_desired,
            Instant::now(),
        ));
        let mut resp = Message::response(query.metadata.id, OpCode::Query);
        resp.add_query(q.clone());
        let qname = q.name().clone();
        let apex = name("f.test.");
        if server == addr(RESOLVER) {
            if matches!(self.behaviour.lock().unwrap().get(&server), Some(Behaviour::Hangs)) {
                return std::future::pending().await;
            }
            resp.metadata.authoritative = true;
            match q.query_type() {
                RecordType::SOA if qname == apex => {
                    resp.add_answer(Record::from_rdata(apex, 3600, Self::soa()));
                }
                RecordType::NS => {
                    resp.add_answer(Record::from_rdata(apex.clone(), 3600, RData::NS(NS(name("ns1.f.test.")))));
                    resp.add_answer(Record::from_rdata(apex, 3600, RData::NS(NS(name("ns2.f.test.")))));
                }
                RecordType::A if qname == name("ns1.f.test.") => {
                    resp.add_answer(Record::from_rdata(qname, 3600, RData::A(A::new(10, 0, 0, 11))));
                }
                RecordType::A if qname == name("ns2.f.test.") => {
                    resp.add_answer(Record::from_rdata(qname, 3600, RData::A(A::new(10, 0, 0, 12))));
                }
                RecordType::TXT if qname == name("_dnsauth.f.test.") => {
                    resp.add_answer(Record::from_rdata(qname, 60, RData::TXT(TXT::new(vec!["v".into()]))));
                }
                _ => {
                    // NODATA / NXDOMAIN: the zone's SOA in the authority section.
                    if qname != name("ns1.f.test.") && qname != name("ns2.f.test.") {
                        resp.metadata.response_code = ResponseCode::NXDomain;
                    }
                    resp.add_authority(Record::from_rdata(apex, 0, Self::soa()));
                }
            }
            return Ok(resp);
        }
        let b = self.behaviour.lock().unwrap().get(&server).cloned();
        let Some(b) = b else {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"));
        };
        resp.metadata.authoritative = true;
        let serve = |resp: &mut Message| {
            resp.add_answer(Record::from_rdata(qname.clone(), 60, RData::TXT(TXT::new(vec!["v".into()]))));
        };
        match b {
            Behaviour::Hangs => std::future::pending().await,
            Behaviour::ServFail => resp.metadata.response_code = ResponseCode::ServFail,
            Behaviour::ServesFrom(t) if Instant::now() >= t => serve(&mut resp),
            Behaviour::ServesFrom(_) => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.add_authority(Record::from_rdata(apex, 300, Self::soa()));
            }
            Behaviour::Large if protocol == Protocol::Udp => resp.metadata.truncation = true,
            Behaviour::Large => serve(&mut resp),
        }
        Ok(resp)
    }
}

fn config(poll_min: u64, poll_max: u64) -> CheckerConfig {
    CheckerConfig {
        resolvers: vec![ResolverSpec::Addr(addr(RESOLVER))],
        mode: Mode::Authoritative,
        nameserver_port: 53,
        poll_min: Duration::from_secs(poll_min),
        poll_max: Duration::from_secs(poll_max),
        query_timeout: Duration::from_secs(2),
        max_queries_per_second: 1000,
    }
}

fn never() -> Behaviour {
    Behaviour::ServesFrom(Instant::now() + Duration::from_secs(1_000_000))
}

fn v() -> Expected {
    Expected::Txt("v".into())
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Once one server serves the value the lagging one is polled every `poll_min` for 30 s (it
/// usually follows within seconds), then stretching by half up to `4 x poll_min`; the wait ends
/// at the deadline with an error naming the lagging server, and the serving one is asked once.
#[tokio::test(start_paused = true)]
async fn backoff_schedule_and_deadline() {
    let fake = Fake::new(Behaviour::ServesFrom(Instant::now()), never());
    let checker = Checker::with_transport(config(1, 8), fake.clone()).expect("checker");
    let start = Instant::now();
    let mut polls = 0;
    let err = checker
        .wait_visible("_dnsauth.f.test", &v(), start + Duration::from_secs(60), &CancellationToken::new(), &mut |_| {
            polls += 1
        })
        .await
        .expect_err("ns2 never serves");
    assert_eq!(start.elapsed(), Duration::from_secs(60), "ends at the deadline");
    assert_eq!(fake.txt_queries(NS1).len(), 1, "a serving server is not asked again");
    let ns2 = fake.txt_queries(NS2);
    assert_eq!(ns2.len(), polls);
    let ms: Vec<u128> = gaps(&ns2).iter().map(Duration::as_millis).collect();
    // poll_min for 30 s, then x1.5 each time (tokio rounds timers to the millisecond), capped at
    // 4 x poll_min.
    let fast = ms.iter().take_while(|g| g.abs_diff(1000) <= 1).count();
    assert!((29..=31).contains(&fast), "{fast} polls at poll_min: {ms:?}");
    let want = [1500, 2250, 3375, 4000, 4000];
    assert!(ms[fast..].iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 1) && ms.len() > fast + want.len(), "{ms:?}");
    // The last poll runs at the deadline itself.
    assert!(ms[fast + 3..].iter().rev().skip(1).all(|g| *g == 4000), "{ms:?}");
    assert_eq!(*ns2.last().unwrap() - start, Duration::from_secs(60));
    let Error::Timeout { lagging, waited, .. } = err else { panic!("expected a timeout: {err:?}") };
    assert_eq!(waited, Duration::from_secs(60));
    assert_eq!(lagging, vec!["ns2.f.test (10.0.0.12:53)".to_string()]);
}

/// While no server serves the value yet, the interval keeps stretching up to `poll_max`.
#[tokio::test(start_paused = true)]
async fn backoff_grows_to_poll_max_while_nothing_serves() {
    let fake = Fake::new(never(), never());
    let checker = Checker::with_transport(config(1, 8), fake.clone()).expect("checker");
    let start = Instant::now();
    let _ = checker
        .wait_visible("_dnsauth.f.test", &v(), start + Duration::from_secs(60), &CancellationToken::new(), &mut |_| {})
        .await
        .expect_err("nothing serves");
    let ms: Vec<u128> = gaps(&fake.txt_queries(NS1)).iter().map(Duration::as_millis).collect();
    let want = [1000, 1500, 2250, 3375, 5062, 7593, 8000];
    assert!(ms.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 1) && ms.len() > want.len(), "{ms:?}");
}

/// When the lagging server starts serving, the next poll (at most `poll_max` later) sees it,
/// and a change resets the interval to `poll_min`.
#[tokio::test(start_paused = true)]
async fn detects_at_the_next_poll_and_resets_the_interval() {
    let start = Instant::now();
    let fake = Fake::new(
        Behaviour::ServesFrom(start + Duration::from_secs(20)),
        Behaviour::ServesFrom(start + Duration::from_secs(40)),
    );
    let checker = Checker::with_transport(config(1, 8), fake.clone()).expect("checker");
    let mut seen = Vec::new();
    let p = checker
        .wait_visible("_dnsauth.f.test", &v(), start + Duration::from_secs(600), &CancellationToken::new(), &mut |p| {
            seen.push(p.servers.iter().map(|s| s.2.clone()).collect::<Vec<_>>())
        })
        .await
        .expect("visible");
    assert!(p.all_serving());
    let done = start.elapsed();
    // ns2 serves 20 s after ns1, inside the 30 s of polls at poll_min: seen within one poll_min.
    assert!(done >= Duration::from_secs(40) && done <= Duration::from_secs(41), "{done:?}");
    // ns1 got it at 20 s: the poll after that one came poll_min later.
    let ns2 = fake.txt_queries(NS2);
    let ns1 = fake.txt_queries(NS1);
    let ns1_served_at = *ns1.last().unwrap();
    assert!(ns1_served_at - start >= Duration::from_secs(20));
    let next = ns2.iter().find(|t| **t > ns1_served_at).expect("a later poll");
    assert_eq!(*next - ns1_served_at, Duration::from_secs(1));
    assert_eq!(seen.first().unwrap(), &vec![ServerStatus::NotYet, ServerStatus::NotYet]);
    assert_eq!(p.queries as usize, ns1.len() + ns2.len());
}

/// Cancellation ends a wait at once, even while a query is in flight.
#[tokio::test(start_paused = true)]
async fn cancellation_stops_the_wait() {
    let fake = Fake::new(Behaviour::ServesFrom(Instant::now()), Behaviour::Hangs);
    let checker = Checker::with_transport(config(1, 8), fake.clone()).expect("checker");
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(4500)).await;
        c.cancel();
    });
    let start = Instant::now();
    let mut last = None;
    let err = checker
        .wait_visible("_dnsauth.f.test", &v(), start + Duration::from_secs(600), &cancel, &mut |p| {
            last = Some(p.clone())
        })
        .await
        .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(4500));
    // The hanging server timed out (2 s) and was reported failing before the cancel.
    let last = last.expect("progress");
    assert!(matches!(&last.servers[1].2, ServerStatus::Failing(e) if e.contains("no answer within 2s")), "{last:?}");
}

/// SERVFAIL is a failure, not "not yet"; a truncated UDP answer is fetched again over TCP.
#[tokio::test(start_paused = true)]
async fn servfail_and_truncation() {
    let fake = Fake::new(Behaviour::ServFail, Behaviour::Large);
    let checker = Checker::with_transport(config(1, 8), fake.clone()).expect("checker");
    let p = checker.check_once("_dnsauth.f.test", &v()).await.expect("check");
    assert_eq!(p.servers[0].2, ServerStatus::Failing("answered SERVFAIL".into()));
    assert_eq!(p.servers[1].2, ServerStatus::Serving);
    assert_eq!(p.queries, 3, "ns1 once, ns2 over UDP then TCP");
    let ns2: Vec<Protocol> = fake.log.lock().unwrap().iter().filter(|q| q.0 == addr(NS2)).map(|q| q.2).collect();
    assert_eq!(ns2, vec![Protocol::Udp, Protocol::Tcp]);
    // Every authoritative query went without recursion.
    assert!(fake.log.lock().unwrap().iter().filter(|q| q.0 != addr(RESOLVER)).all(|q| !q.3));

    fake.set(NS1, Behaviour::ServesFrom(Instant::now()));
    let p = checker.check_once("_dnsauth.f.test", &v()).await.expect("check");
    assert!(p.all_serving());
}

/// Discovery is cached: a second check sends only the server queries. The zone's NS, both
/// addresses and the negative TTL come from the resolver.
#[tokio::test(start_paused = true)]
async fn discovery_is_cached() {
    let fake = Fake::new(Behaviour::ServesFrom(Instant::now()), Behaviour::ServesFrom(Instant::now()));
    let checker = Checker::with_transport(config(1, 8), fake.clone()).expect("checker");
    let t = checker.target("_dnsauth.f.test", true).await.expect("target");
    assert_eq!(t.zone, "f.test");
    assert_eq!(t.negative_ttl, Duration::from_secs(300));
    let servers: Vec<(String, Vec<SocketAddr>)> =
        t.nameservers.iter().map(|n| (n.name.clone(), n.addrs.clone())).collect();
    assert_eq!(servers, vec![("ns1.f.test".into(), vec![addr(NS1)]), ("ns2.f.test".into(), vec![addr(NS2)])]);
    let discovery = checker.queries_sent();
    // SOA probe, apex SOA, NS, and A + AAAA for each name server.
    assert_eq!(discovery, 7);
    let clone = checker.clone();
    clone.check_once("_dnsauth.f.test", &v()).await.expect("check");
    assert_eq!(checker.queries_sent(), discovery + 2);
    assert!(fake.log.lock().unwrap().iter().filter(|q| q.0 == addr(RESOLVER)).all(|q| q.3), "resolvers get RD=1");
}

/// In resolvers mode only the configured resolvers are asked, with recursion.
#[tokio::test(start_paused = true)]
async fn resolvers_mode_asks_only_the_resolvers() {
    let fake = Fake::new(never(), never());
    let checker = Checker::with_transport(CheckerConfig { mode: Mode::Resolvers, ..config(1, 8) }, fake.clone())
        .expect("checker");
    let p = checker.check_once("_dnsauth.f.test", &v()).await.expect("check");
    assert!(p.all_serving(), "{p:?}");
    assert_eq!(p.servers, vec![("resolver".to_string(), addr(RESOLVER), ServerStatus::Serving)]);
    assert!(fake.txt_queries(NS1).is_empty() && fake.txt_queries(NS2).is_empty());
}

/// Many waits sharing one checker never exceed the cap: at most `rate * t + burst` queries in
/// `t`, and the cap (not idleness) is what limits them.
#[tokio::test(start_paused = true)]
async fn global_query_cap_is_shared_by_all_waits() {
    const RATE: u32 = 20;
    let fake = Fake::new(never(), never());
    let checker = Checker::with_transport(
        CheckerConfig { max_queries_per_second: RATE, poll_min: Duration::from_millis(100), ..config(1, 1) },
        fake.clone(),
    )
    .expect("checker");
    let start = Instant::now();
    let cancel = CancellationToken::new();
    let mut waits = Vec::new();
    for i in 0..50 {
        let (c, cancel) = (checker.clone(), cancel.clone());
        // Different names so each wait discovers (and is paced) on its own.
        let name = if i == 0 { "_dnsauth.f.test".to_string() } else { format!("r{i}.f.test") };
        waits.push(tokio::spawn(async move {
            c.wait_visible(&name, &v(), start + Duration::from_secs(3600), &cancel, &mut |_| {}).await
        }));
    }
    let t = Duration::from_secs(10);
    tokio::time::sleep(t).await;
    let sent = checker.queries_sent();
    let burst = u64::from(RATE / 5);
    println!("{sent} queries in {t:?} (cap {RATE}/s, burst {burst})");
    assert!(sent <= u64::from(RATE) * t.as_secs() + burst, "{sent} queries in {t:?}");
    assert!(sent >= u64::from(RATE) * t.as_secs() * 9 / 10, "the waits should saturate the cap: {sent}");
    // Over any one-second window, too.
    let times: Vec<Instant> = fake.log.lock().unwrap().iter().map(|q| q.4).collect();
    for (i, t0) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|t| **t < *t0 + Duration::from_secs(1)).count() as u64;
        assert!(in_window <= u64::from(RATE) + burst, "{in_window} queries in one second");
    }
    cancel.cancel();
    for w in waits {
        assert!(matches!(w.await.expect("task"), Err(Error::Cancelled)));
    }
}

/// A checker on `fake` with no query cap to speak of, the runtime's task count before any wait,
/// and 1,000 waits on it (`rN.f.test`, an hour's deadline).
fn thousand_waits(fake: &Arc<Fake>) -> (Checker, tokio::runtime::RuntimeMetrics, usize, Vec<propagation::Watch>) {
    let checker =
        Checker::with_transport(CheckerConfig { max_queries_per_second: 1_000_000, ..config(1, 8) }, fake.clone())
            .expect("checker");
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let watches = (0..1000).map(|i| checker.watch(&format!("r{i}.f.test"), &v(), deadline)).collect();
    (checker, runtime, before, watches)
}

/// Every wait of a checker is polled by one shared task, not a task each: with 1,000 records
/// waiting, between two rounds the runtime holds the poller alone. Dropping the watches cancels
/// them: no query for them after their next round is due.
#[tokio::test(start_paused = true)]
async fn a_thousand_waits_share_one_task_and_dropped_watches_stop() {
    let fake = Fake::new(never(), never());
    let (_checker, runtime, before, watches) = thousand_waits(&fake);
    // First round at 0 s, the next one poll_min later: half-way, nothing is in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let txt = |server| fake.txt_queries(server).len();
    assert_eq!((txt(NS1), txt(NS2)), (1000, 1000), "one round asked both servers for every record");
    assert_eq!(runtime.num_alive_tasks() - before, 1, "1,000 waits, one task: the poller");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((txt(NS1), txt(NS2)), (2000, 2000), "the second round at poll_min");
    drop(watches);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!((txt(NS1), txt(NS2)), (2000, 2000), "no query for a dropped watch");
    assert_eq!(runtime.num_alive_tasks() - before, 1);
}

/// Names that miss the discovery cache all at once (every name of a zone when its cached data
/// expires) queue for discovery: at most 256 run at a time, each one query, while the resolver
/// does not answer; once it answers, every wait is discovered and polled.
#[tokio::test(start_paused = true)]
async fn discoveries_run_a_bounded_number_at_a_time() {
    let fake = Fake::new(Behaviour::ServesFrom(Instant::now()), Behaviour::ServesFrom(Instant::now()));
    fake.set(RESOLVER, Behaviour::Hangs);
    let (_checker, runtime, before, watches) = thousand_waits(&fake);
    // Within the query timeout (2 s): the first 256 discoveries wait for their first answer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resolver_queries = fake.log.lock().unwrap().iter().filter(|q| q.0 == addr(RESOLVER)).count();
    assert_eq!(resolver_queries, 256, "one query per discovery in flight, 256 of them");
    assert_eq!(runtime.num_alive_tasks() - before, 1 + 256, "the poller and 256 discoveries");
    fake.behaviour.lock().unwrap().remove(&addr(RESOLVER));
    for watch in watches {
        let progress = tokio::time::timeout(Duration::from_secs(60), watch).await.expect("in time").expect("visible");
        assert!(progress.all_serving());
    }
}
