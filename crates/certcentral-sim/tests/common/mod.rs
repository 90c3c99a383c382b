//! Test helpers: an in-process authoritative DNS server (hickory-server) whose zones the test
//! changes at runtime, and a running simulator with a reqwest client.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use certcentral_sim::{RunningSim, Sim, SimConfig};
use hickory_server::Server;
use hickory_server::proto::rr::rdata::{CNAME, NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use serde_json::Value;
use tokio::net::{TcpListener, UdpSocket};

/// The API key the test simulators expect.
pub const KEY: &str = "test-devkey";

/// One authoritative name server (UDP and TCP on one port) serving zones from memory.
pub struct TestDns {
    pub addr: SocketAddr,
    zones: Vec<(Name, Arc<InMemoryZoneHandler>)>,
    server: Server<Catalog>,
}

fn name(s: &str) -> Name {
    let s = if s.ends_with('.') { s.to_string() } else { format!("{s}.") };
    Name::from_ascii(&s).unwrap_or_else(|e| panic!("bad test name {s:?}: {e}"))
}

impl TestDns {
    /// Serves `origins` with an SOA whose TTL and minimum are both `negative_ttl` seconds.
    pub async fn start(origins: &[&str], negative_ttl: u32) -> Self {
        let mut catalog = Catalog::new();
        let mut zones = Vec::new();
        for origin in origins {
            let origin = name(origin);
            let zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny, None);
            let soa = SOA::new(
                name(&format!("ns1.{origin}")),
                name(&format!("hostmaster.{origin}")),
                1,
                3600,
                600,
                86400,
                negative_ttl,
            );
            assert!(zone.upsert(Record::from_rdata(origin.clone(), negative_ttl, RData::SOA(soa)), 1).await);
            let ns = RData::NS(NS(name(&format!("ns1.{origin}"))));
            assert!(zone.upsert(Record::from_rdata(origin.clone(), 3600, ns), 1).await);
            let zone = Arc::new(zone);
            catalog.upsert(LowerName::from(&origin), vec![zone.clone() as Arc<dyn ZoneHandler>]);
            zones.push((origin, zone));
        }
        let mut server = Server::new(catalog);
        // UDP and TCP on the same port: retry until a free UDP port is also free for TCP
        let mut bound = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("cannot bind a UDP socket on 127.0.0.1 for the test DNS server");
            let addr = udp.local_addr().expect("udp local addr");
            if let Ok(tcp) = TcpListener::bind(addr).await {
                bound = Some((udp, tcp, addr));
                break;
            }
        }
        let (udp, tcp, addr) =
            bound.expect("could not find a port free for both UDP and TCP on 127.0.0.1 for the test DNS server");
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Self { addr, zones, server }
    }

    fn zone_of(&self, owner: &Name) -> &Arc<InMemoryZoneHandler> {
        self.zones
            .iter()
            .filter(|(origin, _)| origin.zone_of(owner))
            .max_by_key(|(origin, _)| origin.num_labels())
            .map(|(_, z)| z)
            .unwrap_or_else(|| panic!("no test zone holds {owner}"))
    }

    /// Adds a TXT value (one string) at `owner`, next to any others.
    pub async fn add_txt(&self, owner: &str, value: &str) {
        let owner = name(owner);
        let rec = Record::from_rdata(owner.clone(), 60, RData::TXT(TXT::new(vec![value.to_string()])));
        assert!(self.zone_of(&owner).upsert(rec, 2).await, "TXT {owner} not inserted");
    }

    /// Adds a TXT record made of several strings.
    pub async fn add_txt_strings(&self, owner: &str, strings: &[&str]) {
        let owner = name(owner);
        let txt = TXT::new(strings.iter().map(|s| (*s).to_string()).collect());
        let rec = Record::from_rdata(owner.clone(), 60, RData::TXT(txt));
        assert!(self.zone_of(&owner).upsert(rec, 2).await, "TXT {owner} not inserted");
    }

    /// Sets the CNAME at `owner`.
    pub async fn add_cname(&self, owner: &str, target: &str) {
        let owner = name(owner);
        let rec = Record::from_rdata(owner.clone(), 60, RData::CNAME(CNAME(name(target))));
        assert!(self.zone_of(&owner).upsert(rec, 2).await, "CNAME {owner} not inserted");
    }

    /// Removes the whole `rtype` RRset at `owner`.
    pub async fn remove(&self, owner: &str, rtype: RecordType) {
        let owner = name(owner);
        let key = RrKey::new(LowerName::from(&owner), rtype);
        self.zone_of(&owner).records_mut().await.remove(&key);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// A config for tests: the test key, these name servers, no rate limits, a fixed seed.
pub fn config(dns: &[&TestDns]) -> SimConfig {
    SimConfig {
        api_key: KEY.to_string(),
        dns_servers: dns.iter().map(|d| d.addr).collect(),
        rate_limits: Vec::new(),
        seed: 7,
        dns_timeout: Duration::from_secs(2),
        ..SimConfig::default()
    }
}

/// A running simulator and an HTTP client for it.
pub struct Harness {
    pub running: RunningSim,
    pub http: reqwest::Client,
}

/// An answer: status, headers and the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Harness {
    pub async fn start(config: SimConfig) -> Self {
        let running = Sim::new(config)
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .expect("the simulator could not listen on 127.0.0.1:0");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("reqwest client");
        Self { running, http }
    }

    pub fn sim(&self) -> &Sim {
        self.running.sim()
    }

    /// Calls the DigiCert API at `path` (under /services/v2) with the test key.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.api_with_key(method, path, body, Some(KEY)).await
    }

    pub async fn api_with_key(&self, method: &str, path: &str, body: Option<Value>, key: Option<&str>) -> Answer {
        let url = format!("{}{}", self.running.base_url, path);
        self.send(method, &url, body, key).await.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Result<Answer, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("http method");
        let mut req = self.http.request(method, url).header("Content-Type", "application/json");
        if let Some(key) = key {
            req = req.header("X-DC-DEVKEY", key);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, headers, text, json })
    }

    /// Calls the admin API at `path` (under /_sim).
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let url = format!("{}{}", self.running.admin_url, path);
        self.send(method, &url, body, None).await.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
    }
}

/// The `(code, message)` of the single error of an errors body.
pub fn error_of(a: &Answer) -> (String, String) {
    let errors =
        a.json["errors"].as_array().unwrap_or_else(|| panic!("expected an errors body, got {} {}", a.status, a.text));
    assert_eq!(errors.len(), 1, "one error expected: {}", a.text);
    (errors[0]["code"].as_str().expect("code").to_string(), errors[0]["message"].as_str().expect("message").to_string())
}
