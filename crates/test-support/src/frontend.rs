//! DNS front-ends: authoritative name servers that serve, over real DNS, the records held by a
//! provider's API backend (moto's Route53, the Cloudflare fake), so that dcvd's propagation check
//! and the CertCentral simulator can look them up as they would on the internet.
//!
//! A [`Frontend`] mirrors the TXT and CNAME records of its sources into a
//! [`MemoryStore`](dns_provider::memory::MemoryStore) by polling them (every 100 ms by default)
//! and serves that store with [`dns_provider::memory::serve`] on `127.0.0.1:PORT` and
//! `127.0.0.2:PORT` (`ns1.<zone>` and `ns2.<zone>`, same port, SOA/NS/A answered for every zone).
//! With [`FrontendBuilder::lag`], the second name server serves a new value that much later than
//! the first, modelling a lagging secondary. Removals are immediate on both.
//!
//! Route53 sources are read through moto's own API (not the counting/faulting proxy, so the
//! front-end neither shows up in request counts nor consumes injected faults); Cloudflare sources
//! are read from the fake's state for the same reason.
//!
//! The mirror keeps the store's per-value addition counts ([`Frontend::added_more_than_once`]):
//! a value that disappears from the backend and comes back counts twice, which is what a
//! "nothing was published twice" assertion needs.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dns_provider::memory::{LagModel, MemoryDnsServer, MemoryStore, ServerConfig, serve};
use dns_provider::{Record, RecordType, normalize_name};

use crate::cloudflare_fake::CloudflareFake;
use crate::moto::unquote_txt;

/// One mirrored value: (owner name, type, value), normalized like the memory store holds them.
type Entry = (String, RecordType, String);

type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<Entry>, String>> + Send>>;

/// Something whose records a front-end serves.
#[derive(Clone)]
struct Source {
    zone: String,
    label: String,
    read: Arc<dyn Fn() -> ReadFuture + Send + Sync>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("zone", &self.zone).field("label", &self.label).finish_non_exhaustive()
    }
}

/// How to start a [`Frontend`].
#[derive(Debug, Clone)]
pub struct FrontendBuilder {
    sources: Vec<Source>,
    lag: Duration,
    poll: Duration,
    soa_minimum: u32,
}

impl Default for FrontendBuilder {
    fn default() -> Self {
        Self { sources: Vec::new(), lag: Duration::ZERO, poll: Duration::from_millis(100), soa_minimum: 30 }
    }
}

impl FrontendBuilder {
    /// Serves `zone`, hosted by moto as hosted zone `zone_id`, read through moto's API directly.
    pub fn route53(mut self, moto: &crate::moto::Moto, zone_id: &str, zone: &str) -> Self {
        let client = moto.client().clone();
        let zone_id = zone_id.to_string();
        let zone_n = normalize_name(zone);
        let z = zone_n.clone();
        self.sources.push(Source {
            zone: zone_n,
            label: format!("route53 {zone_id}"),
            read: Arc::new(move || {
                let (client, zone_id, zone) = (client.clone(), zone_id.clone(), z.clone());
                Box::pin(async move { read_route53(&client, &zone_id, &zone).await })
            }),
        });
        self
    }

    /// Serves `zone` as held by the Cloudflare fake.
    pub fn cloudflare(mut self, fake: Arc<CloudflareFake>, zone: &str) -> Self {
        let zone_n = normalize_name(zone);
        let z = zone_n.clone();
        self.sources.push(Source {
            zone: zone_n,
            label: "cloudflare fake".into(),
            read: Arc::new(move || {
                let entries =
                    fake.records(&z).into_iter().filter_map(|r| entry(&r.name, &r.rtype, &r.content, &z)).collect();
                Box::pin(async move { Ok(entries) })
            }),
        });
        self
    }

    /// Serves `zone` with whatever `read` returns as `(name, type, value)` triples (type `TXT` or
    /// `CNAME`; TXT values unquoted), for backends without a helper here.
    pub fn custom<F>(mut self, zone: &str, read: F) -> Self
    where
        F: Fn() -> Vec<(String, String, String)> + Send + Sync + 'static,
    {
        let zone_n = normalize_name(zone);
        let z = zone_n.clone();
        self.sources.push(Source {
            zone: zone_n,
            label: "custom".into(),
            read: Arc::new(move || {
                let entries = read().into_iter().filter_map(|(n, t, v)| entry(&n, &t, &v, &z)).collect();
                Box::pin(async move { Ok(entries) })
            }),
        });
        self
    }

    /// The second name server serves new values `lag` later than the first (default: no lag).
    pub fn lag(mut self, lag: Duration) -> Self {
        self.lag = lag;
        self
    }

    /// How often the backends are read (default 100 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// SOA minimum (negative-caching TTL) of every zone (default 30 s).
    pub fn soa_minimum(mut self, seconds: u32) -> Self {
        self.soa_minimum = seconds;
        self
    }

    /// Starts the name servers and the mirror; the first mirror pass is done when this returns.
    /// Panics with the reason when the servers cannot listen.
    pub async fn start(self) -> Frontend {
        assert!(!self.sources.is_empty(), "FrontendBuilder needs at least one source (route53, cloudflare, custom)");
        let store = MemoryStore::new();
        let mut zones: Vec<String> = self.sources.iter().map(|s| s.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        let mut config = ServerConfig::new(
            zones.clone(),
            vec!["127.0.0.1:0".parse().expect("addr"), "127.0.0.2:0".parse().expect("addr")],
        );
        config.lag = LagModel { per_server: vec![Duration::ZERO, self.lag], ..LagModel::default() };
        config.soa_minimum = self.soa_minimum;
        let server = serve(store.clone(), config)
            .await
            .unwrap_or_else(|e| panic!("DNS front-end for {zones:?} cannot listen on 127.0.0.1/127.0.0.2: {e}"));
        let (passes_tx, passes) = tokio::sync::watch::channel(0u64);
        let mirror = Mirror { store: store.clone(), sources: self.sources, last: Vec::new() };
        let task = tokio::spawn(mirror.run(self.poll, passes_tx));
        let frontend = Frontend { server, store, zones, passes, task };
        frontend.wait_synced().await;
        frontend
    }
}

/// Running name servers mirroring their sources; stopped on drop.
pub struct Frontend {
    server: MemoryDnsServer,
    store: MemoryStore,
    zones: Vec<String>,
    passes: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frontend").field("addrs", &self.server.addrs()).field("zones", &self.zones).finish()
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Frontend {
    /// A builder.
    pub fn builder() -> FrontendBuilder {
        FrontendBuilder::default()
    }

    /// The name servers' addresses: `ns1` (127.0.0.1) then `ns2` (127.0.0.2, the lagging one).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.server.addrs().to_vec()
    }

    /// The port both name servers share.
    pub fn port(&self) -> u16 {
        self.server.addrs()[0].port()
    }

    /// The zones served.
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The mirrored records (what the name servers serve once their lag has passed).
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Every `(name, value, times)` that appeared in a backend more than once (added, removed,
    /// added again) while mirrored.
    pub fn added_more_than_once(&self) -> Vec<(String, String, u64)> {
        self.store.added_more_than_once()
    }

    /// Waits until a full mirror pass has started and finished after this call.
    pub async fn wait_synced(&self) {
        let mut rx = self.passes.clone();
        let start = *rx.borrow_and_update();
        let waited = tokio::time::timeout(Duration::from_secs(30), async {
            while *rx.borrow_and_update() < start + 2 {
                if rx.changed().await.is_err() {
                    panic!("DNS front-end mirror task stopped");
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "DNS front-end mirror made no pass within 30 s: is the backend answering?");
    }
}

struct Mirror {
    store: MemoryStore,
    sources: Vec<Source>,
    /// The last good read of each source (kept when a read fails, so a backend hiccup does not
    /// look like a removal).
    last: Vec<Option<Vec<Entry>>>,
}

impl Mirror {
    async fn run(mut self, every: Duration, passes: tokio::sync::watch::Sender<u64>) {
        self.last = vec![None; self.sources.len()];
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.pass().await;
            passes.send_modify(|n| *n += 1);
        }
    }

    async fn pass(&mut self) {
        for (i, source) in self.sources.iter().enumerate() {
            match (source.read)().await {
                Ok(entries) => self.last[i] = Some(entries),
                Err(error) => {
                    tracing::debug!(source = %source.label, %error, "front-end read failed; keeping the last view")
                }
            }
        }
        let wanted: BTreeSet<Entry> = self.last.iter().flatten().flatten().cloned().collect();
        let held: BTreeSet<Entry> =
            self.store.snapshot().into_iter().map(|s| (s.record.name, s.record.rtype, s.record.value)).collect();
        for (name, rtype, value) in held.difference(&wanted) {
            self.store.delete(&record(name, *rtype, value));
        }
        for (name, rtype, value) in wanted.difference(&held) {
            self.store.insert(&record(name, *rtype, value));
        }
    }
}

fn record(name: &str, rtype: RecordType, value: &str) -> Record {
    match rtype {
        RecordType::Txt => Record::txt(name, value),
        RecordType::Cname => Record::cname(name, value),
    }
}

/// A TXT or CNAME inside `zone` as the store holds it; other types (SOA, NS, A) are the
/// front-end's own business and skipped.
fn entry(name: &str, rtype: &str, value: &str, zone: &str) -> Option<Entry> {
    // Route53 escapes `*` (and other specials) as \DDD in names.
    let name = normalize_name(&name.replace("\\052", "*"));
    if !dns_provider::in_zone(&name, zone) {
        return None;
    }
    match rtype.to_ascii_uppercase().as_str() {
        "TXT" => Some((name, RecordType::Txt, unquote_txt(value))),
        "CNAME" => Some((name, RecordType::Cname, normalize_name(value))),
        _ => None,
    }
}

/// RRsets per listing page (Route53 allows up to 300; smaller pages keep pagination tested).
const PAGE: i32 = 100;

async fn read_route53(client: &aws_sdk_route53::Client, zone_id: &str, zone: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    let mut start: Option<(String, aws_sdk_route53::types::RrType)> = None;
    // Bounded: a zone of a test never holds more than a few thousand RRsets.
    for _ in 0..1000 {
        let mut req = client.list_resource_record_sets().hosted_zone_id(zone_id).max_items(PAGE);
        if let Some((name, rtype)) = start.take() {
            req = req.start_record_name(name).start_record_type(rtype);
        }
        let page = req.send().await.map_err(|e| aws_sdk_route53::error::DisplayErrorContext(e).to_string())?;
        for set in page.resource_record_sets() {
            for rr in set.resource_records() {
                out.extend(entry(set.name(), set.r#type().as_str(), rr.value(), zone));
            }
        }
        match (page.is_truncated(), page.next_record_name(), page.next_record_type()) {
            (true, Some(name), Some(rtype)) => start = Some((name.to_string(), rtype.clone())),
            _ => return Ok(out),
        }
    }
    Err(format!("hosted zone {zone_id}: listing did not end"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bind::dig;

    /// Records written into the Cloudflare fake appear on both name servers (the second one
    /// `lag` later), removals disappear, SOA/NS/A of the zone are served, and a value that comes
    /// back is counted as added twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mirrors_cloudflare_with_lag() {
        let fake = Arc::new(CloudflareFake::builder().zone("cf.test").start().await);
        let fe = Frontend::builder().cloudflare(fake.clone(), "cf.test").lag(Duration::from_secs(4)).start().await;
        let [ns1, ns2] = [fe.addrs()[0], fe.addrs()[1]];
        assert_eq!(ns1.port(), ns2.port());
        let ns = dig(ns1, "cf.test", "NS");
        assert_eq!(ns.len(), 2, "{ns:?}");
        assert_eq!(dig(ns1, "ns2.cf.test", "A"), ["127.0.0.2"]);
        assert_eq!(dig(ns2, "cf.test", "SOA").len(), 1);

        let id = fake.insert_record("cf.test", "TXT", "_dnsauth.cf.test", "\"v1\"", 60);
        fake.insert_record("cf.test", "CNAME", "_dnsauth.www.cf.test", "abc.dcv.digicert.com.", 60);
        fe.wait_synced().await;
        assert_eq!(dig(ns1, "_dnsauth.cf.test", "TXT"), ["v1"]);
        assert_eq!(dig(ns1, "_dnsauth.www.cf.test", "CNAME"), ["abc.dcv.digicert.com"]);
        assert!(dig(ns2, "_dnsauth.cf.test", "TXT").is_empty(), "the second server must lag");
        let mut seen = false;
        for _ in 0..300 {
            if dig(ns2, "_dnsauth.cf.test", "TXT") == ["v1"] {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(seen, "the second server never served the value");

        let http = reqwest::Client::new();
        let zone_id = fake.zone_id("cf.test");
        let resp = http
            .delete(format!("{}/zones/{zone_id}/dns_records/{id}", fake.base_url))
            .bearer_auth(&fake.token)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        fe.wait_synced().await;
        assert!(dig(ns1, "_dnsauth.cf.test", "TXT").is_empty());
        assert!(dig(ns2, "_dnsauth.cf.test", "TXT").is_empty());
        assert!(fe.added_more_than_once().is_empty());
        fake.insert_record("cf.test", "TXT", "_dnsauth.cf.test", "v1", 60);
        fe.wait_synced().await;
        assert_eq!(fe.added_more_than_once(), vec![("_dnsauth.cf.test".to_string(), "v1".to_string(), 2)]);
    }

    /// Route53 records (quoted TXT, escaped wildcard names, paginated listings) are mirrored from
    /// moto; the front-end reads moto directly, so the proxy counts nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mirrors_route53_from_moto() {
        let moto = crate::moto::Moto::start().await;
        let zone_id = moto.create_hosted_zone("r53.test").await;
        moto.add_value(&zone_id, "_dnsauth.r53.test", "TXT", "\"part1\" \"part2\"", 60).await;
        moto.add_value(&zone_id, "_dnsauth.r53.test", "TXT", "\"other\"", 60).await;
        moto.add_value(&zone_id, "_dnsauth.x.r53.test", "CNAME", "tok.dcv.digicert.com.", 60).await;
        fill(&moto, &zone_id, 120).await;
        let fe = Frontend::builder().route53(&moto, &zone_id, "r53.test").start().await;
        let ns1 = fe.addrs()[0];
        let mut txt = dig(ns1, "_dnsauth.r53.test", "TXT");
        txt.sort();
        assert_eq!(txt, ["other", "part1part2"]);
        assert_eq!(dig(ns1, "_dnsauth.x.r53.test", "CNAME"), ["tok.dcv.digicert.com"]);
        assert_eq!(dig(ns1, "filler119.r53.test", "TXT"), ["f"], "the listing must follow pagination");
        assert_eq!(dig(ns1, "r53.test", "NS").len(), 2);
        assert_eq!(moto.requests(), 0, "the front-end must not go through the proxy");
    }

    /// `n` single-value TXT RRsets `filler{i}` in one change batch.
    async fn fill(moto: &crate::moto::Moto, zone_id: &str, n: usize) {
        use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
        let changes = (0..n)
            .map(|i| {
                let set = ResourceRecordSet::builder()
                    .name(format!("filler{i}.r53.test"))
                    .r#type(RrType::Txt)
                    .ttl(60)
                    .resource_records(ResourceRecord::builder().value("\"f\"").build().unwrap())
                    .build()
                    .unwrap();
                Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().unwrap()
            })
            .collect();
        moto.client()
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(ChangeBatch::builder().set_changes(Some(changes)).build().unwrap())
            .send()
            .await
            .expect("moto: fill the zone");
    }
}
