//! `Checker::inspect` (what `dcvd doctor` shows per name) against a scripted transport: each
//! server's answer at the record name, a failing server, and the three DNSSEC outcomes (unsigned,
//! signed and validated by the resolver's AD bit, signed and bogus: SERVFAIL from a validating
//! resolver).
//!
//! The fake zone `i.test` has two name servers, ns1 (10.0.1.11) and ns2 (10.0.1.12); the
//! "resolver" 10.0.1.1 answers discovery queries and the validating lookup.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, NULL, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use propagation::{Checker, CheckerConfig, Dnssec, Mode, Protocol, ResolverSpec, Transport};

const RESOLVER: &str = "10.0.1.1:53";
const NS1: &str = "10.0.1.11:53";
const NS2: &str = "10.0.1.12:53";

/// What the validating resolver makes of a signed zone.
#[derive(Debug, Clone, Copy)]
enum Validation {
    Unsigned,
    Validates,
    Bogus,
}

#[derive(Debug)]
struct Fake {
    zone: Validation,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

fn soa() -> RData {
    RData::SOA(SOA::new(name("ns1.i.test."), name("hostmaster.i.test."), 1, 3600, 600, 86400, 120))
}

#[async_trait]
impl Transport for Fake {
    async fn exchange(&self, server: SocketAddr, query: &Message, _protocol: Protocol) -> io::Result<Message> {
        let q = query.queries[0].clone();
        let mut resp = Message::response(query.metadata.id, OpCode::Query);
        resp.add_query(q.clone());
        let qname = q.name().clone();
        let apex = name("i.test.");
        let owner = name("_dnsauth.i.test.");
        if server == addr(RESOLVER) {
            let validating = query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
            match (q.query_type(), validating, self.zone) {
                (RecordType::TXT, true, Validation::Bogus) => resp.metadata.response_code = ResponseCode::ServFail,
                (RecordType::TXT, true, Validation::Validates) => resp.metadata.authentic_data = true,
                (RecordType::SOA, _, _) if qname == apex => {
                    resp.add_answer(Record::from_rdata(apex, 3600, soa()));
                }
                (RecordType::NS, _, _) => {
                    resp.add_answer(Record::from_rdata(apex.clone(), 3600, RData::NS(NS(name("ns1.i.test.")))));
                    resp.add_answer(Record::from_rdata(apex, 3600, RData::NS(NS(name("ns2.i.test.")))));
                }
                (RecordType::A, _, _) if qname == name("ns1.i.test.") => {
                    resp.add_answer(Record::from_rdata(qname, 3600, RData::A(A::new(10, 0, 1, 11))));
                }
                (RecordType::A, _, _) if qname == name("ns2.i.test.") => {
                    resp.add_answer(Record::from_rdata(qname, 3600, RData::A(A::new(10, 0, 1, 12))));
                }
                _ => {
                    if qname != name("ns1.i.test.") && qname != name("ns2.i.test.") && qname != owner {
                        resp.metadata.response_code = ResponseCode::NXDomain;
                    }
                    resp.add_authority(Record::from_rdata(apex, 0, soa()));
                }
            }
            return Ok(resp);
        }
        resp.metadata.authoritative = true;
        match (server, q.query_type()) {
            (s, _) if s == addr(NS2) => resp.metadata.response_code = ResponseCode::Refused,
            (_, RecordType::TXT) if qname == owner => {
                resp.add_answer(Record::from_rdata(qname, 60, RData::TXT(TXT::new(vec!["token-1".into()]))));
            }
            (_, RecordType::DNSKEY) if !matches!(self.zone, Validation::Unsigned) => {
                let key = RData::Unknown { code: RecordType::DNSKEY, rdata: NULL::with(vec![1, 0, 3, 13]) };
                resp.add_answer(Record::from_rdata(apex, 3600, key));
            }
            _ => {
                resp.add_authority(Record::from_rdata(apex, 120, soa()));
            }
        }
        Ok(resp)
    }
}

fn checker(zone: Validation) -> Checker {
    let config = CheckerConfig {
        resolvers: vec![ResolverSpec::Addr(addr(RESOLVER))],
        mode: Mode::Authoritative,
        nameserver_port: 53,
        poll_min: Duration::from_millis(250),
        poll_max: Duration::from_secs(2),
        query_timeout: Duration::from_secs(2),
        max_queries_per_second: 1000,
    };
    Checker::with_transport(config, std::sync::Arc::new(Fake { zone })).expect("checker")
}

#[tokio::test]
async fn each_server_says_what_it_serves() {
    let found = checker(Validation::Unsigned).inspect("_dnsauth.i.test").await.expect("inspect");
    assert_eq!(found.target.zone, "i.test");
    assert_eq!(found.target.negative_ttl, Duration::from_secs(120));
    assert_eq!(found.servers.len(), 2);
    let ns1 = found.servers.iter().find(|s| s.addr == addr(NS1)).unwrap();
    assert_eq!(ns1.answer, Ok(vec!["TXT \"token-1\"".to_string()]));
    let ns2 = found.servers.iter().find(|s| s.addr == addr(NS2)).unwrap();
    assert_eq!(ns2.answer, Err("answered REFUSED".to_string()));
    assert_eq!(found.dnssec, Dnssec::Unsigned);
}

#[tokio::test]
async fn a_signed_zone_validates_or_is_bogus() {
    let found = checker(Validation::Validates).inspect("_dnsauth.i.test").await.expect("inspect");
    assert_eq!(found.dnssec, Dnssec::Validated);
    let found = checker(Validation::Bogus).inspect("_dnsauth.i.test").await.expect("inspect");
    let Dnssec::Bogus(why) = found.dnssec else { panic!("expected bogus: {:?}", found.dnssec) };
    assert!(why.contains("SERVFAIL") && why.contains("_dnsauth.i.test"), "{why}");
}
