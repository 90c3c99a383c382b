//! The Cloudflare adapter against test-support's stateful Cloudflare fake.

mod battery;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use battery::Harness;
use dns_provider::cloudflare::{CloudflareProvider, CloudflareSettings};
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use reqwest::Method;
use test_support::cloudflare_fake::{CfFault, CloudflareFake};

const ZONE: &str = "example.com";

struct Cf {
    fake: CloudflareFake,
    provider: SharedProvider,
}

fn make_provider(fake: &CloudflareFake, token: &str) -> CloudflareProvider {
    CloudflareProvider::new(CloudflareSettings {
        zones: vec![ZONE.to_string()],
        api_token: token.to_string().into(),
        base_url: fake.base_url.clone(),
        zone_ids: BTreeMap::new(),
        gate: None,
    })
    .expect("cloudflare provider")
}

async fn setup_with(fake: CloudflareFake) -> Cf {
    let provider: SharedProvider = Arc::new(make_provider(&fake, &fake.token));
    Cf { fake, provider }
}

async fn setup() -> Cf {
    setup_with(CloudflareFake::start().await).await
}

#[async_trait]
impl Harness for Cf {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.to_string()
    }

    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String> {
        self.fake.values(name, rtype.as_str())
    }

    async fn add_foreign(&self, record: &Record) {
        // other tools often store TXT content unquoted
        self.fake.insert_record(ZONE, record.rtype.as_str(), &record.name, &record.value, 300);
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        Some(Arc::new(make_provider(&self.fake, "not-a-valid-token")))
    }

    async fn throttle_next(&self, n: u32) -> bool {
        self.fake.rate_limit_next(n, 1);
        true
    }
}

conformance_battery!(setup);

/// TXT content goes out quoted, as Cloudflare documents; the record id is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txt_content_is_quoted_and_id_returned() {
    let h = setup().await;
    let name = format!("_dnsauth.q.{ZONE}");
    let published = h.provider.publish(ZONE, &Record::txt(&name, "tok-q")).await.expect("publish");
    let records = h.fake.records(ZONE);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, name);
    assert_eq!(records[0].content, "\"tok-q\"");
    assert_eq!(records[0].ttl, 60);
    assert_eq!(published.provider_id.as_deref(), Some(records[0].id.as_str()));
}

/// Lists follow `result_info` across pages, with a small page cap and with Cloudflare's default
/// page size; removal keeps every foreign record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_is_followed() {
    let h = setup_with(CloudflareFake::builder().zone(ZONE).max_per_page(5).start().await).await;
    let name = format!("_dnsauth.paged.{ZONE}");
    for i in 0..12 {
        h.fake.insert_record(ZONE, "TXT", &name, &format!("\"foreign-{i}\""), 300);
    }
    h.provider.publish(ZONE, &Record::txt(&name, "ours")).await.expect("publish");
    let listed = h.provider.list(ZONE, &name, RecordType::Txt).await.expect("list");
    assert_eq!(listed.len(), 13);
    assert!(listed.contains(&"ours".to_string()));
    assert!(h.fake.requests().iter().any(|(_, p)| p.contains("page=3")), "the third page was fetched");
    // publishing again finds ours even though it sits on the last page
    h.provider.publish(ZONE, &Record::txt(&name, "ours")).await.expect("publish again");
    assert_eq!(h.fake.txt_values(&name).len(), 13);
    h.provider.remove(ZONE, &Record::txt(&name, "ours")).await.expect("remove");
    let left = h.fake.txt_values(&name);
    assert_eq!(left.len(), 12);
    assert!(!left.contains(&"ours".to_string()));

    let big = setup().await;
    let name = format!("_dnsauth.big.{ZONE}");
    for i in 0..130 {
        big.fake.insert_record(ZONE, "TXT", &name, &format!("v{i}"), 300);
    }
    assert_eq!(big.provider.list(ZONE, &name, RecordType::Txt).await.expect("list").len(), 130);
    assert!(big.fake.requests().iter().any(|(_, p)| p.contains("page=2")));
}

/// A 429 with `Retry-After: 2` makes the adapter wait at least two seconds, then succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = setup().await;
    let name = format!("_dnsauth.ra.{ZONE}");
    h.provider.list(ZONE, &name, RecordType::Txt).await.expect("warm the zone cache");
    h.fake.rate_limit_next(1, 2);
    let started = Instant::now();
    h.provider.publish(ZONE, &Record::txt(&name, "after-wait")).await.expect("publish after 429");
    // a lower bound only: the adapter slept for what the server asked, not its own shorter backoff
    assert!(started.elapsed() >= Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert_eq!(h.fake.pending_faults(), 0);
    assert_eq!(h.fake.txt_values(&name), vec!["after-wait"]);
}

/// A `Retry-After` longer than the adapter is willing to sleep comes back as a retryable error
/// carrying the server's delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_retry_after_is_returned_to_the_caller() {
    let h = setup().await;
    h.fake.rate_limit_next(1, 3600);
    let err =
        h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.long.{ZONE}"), "v")).await.expect_err("throttled");
    match &err {
        ProviderError::Throttled { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(3600)))
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().starts_with("cloudflare: "), "{err}");
}

/// 5xx answers are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let h = setup().await;
    h.fake.inject(CfFault::ServerError(502), 2);
    let name = format!("_dnsauth.5xx.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "v")).await.expect("publish through 502s");
    assert_eq!(h.fake.pending_faults(), 0);
    assert_eq!(h.fake.txt_values(&name), vec!["v"]);
}

/// A read-only token gets an error naming the missing permission and the zone; an invalid token
/// is called invalid; neither error (nor Debug) contains the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_name_the_permission_and_hide_the_token() {
    let h = setup().await;
    let ro = make_provider(&h.fake, &h.fake.read_only_token);
    ro.preflight().await.expect("a read-only token passes the read-only preflight");
    let err = ro.publish(ZONE, &Record::txt(format!("_dnsauth.ro.{ZONE}"), "v")).await.expect_err("read-only");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("cloudflare: token lacks Zone:DNS:Edit on example.com"), "{msg}");
    assert!(!msg.contains(&h.fake.read_only_token), "token leaked into {msg}");
    assert!(!format!("{err:?}").contains(&h.fake.read_only_token));
    assert!(!format!("{ro:?}").contains(&h.fake.read_only_token));

    let secret = "cf-invalid-secret-token-123";
    let bad = make_provider(&h.fake, secret);
    let err = bad.preflight().await.expect_err("invalid token");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("rejected as invalid"), "{err}");
    assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));
    assert!(!format!("{bad:?}").contains(secret));
    let err = bad.publish(ZONE, &Record::txt(format!("_dnsauth.bad.{ZONE}"), "v")).await.expect_err("invalid token");
    assert!(!err.to_string().contains(secret));
}

/// Two instances publishing the same value at once leave one record and both succeed
/// (Cloudflare's 81058 "identical record" counts as success).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_publishes_are_idempotent() {
    let h = setup().await;
    let other = make_provider(&h.fake, &h.fake.token);
    for round in 0..20 {
        let rec = Record::txt(format!("_dnsauth.same{round}.{ZONE}"), "same-value");
        let (a, b) = tokio::join!(h.provider.publish(ZONE, &rec), other.publish(ZONE, &rec));
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert_eq!(h.fake.txt_values(&rec.name), vec!["same-value"], "round {round}");
        assert_eq!(a.provider_id, b.provider_id, "round {round}");
    }
}

/// Zone lookup: configured ids skip `GET /zones`; an unknown zone is ZoneNotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_lookup() {
    let fake = CloudflareFake::builder().zone(ZONE).zone("example.net").start().await;
    let pinned = CloudflareProvider::new(CloudflareSettings {
        zones: vec![ZONE.to_string()],
        api_token: fake.token.clone().into(),
        base_url: fake.base_url.clone(),
        zone_ids: BTreeMap::from([(ZONE.to_string(), fake.zone_id(ZONE))]),
        gate: None,
    })
    .expect("provider");
    pinned.publish(ZONE, &Record::txt(format!("_dnsauth.p.{ZONE}"), "v")).await.expect("publish");
    assert_eq!(fake.count(Method::GET, "/zones"), 0, "configured zone id must skip the lookup");

    let missing = CloudflareProvider::new(CloudflareSettings {
        zones: vec!["not-in-account.example".to_string()],
        api_token: fake.token.clone().into(),
        base_url: fake.base_url.clone(),
        zone_ids: BTreeMap::new(),
        gate: None,
    })
    .expect("provider");
    let err = missing.preflight().await.expect_err("zone not in account");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cloudflare: zone not-in-account.example not found"), "{err}");
}

/// Settings are validated without network: https only (loopback excepted), a non-empty token.
#[test]
fn settings_are_validated() {
    let base = |url: &str| CloudflareSettings {
        base_url: url.to_string(),
        ..CloudflareSettings::new(vec![ZONE.into()], "t".to_string().into())
    };
    assert!(CloudflareProvider::new(base("http://api.example.net/client/v4")).is_err());
    assert!(CloudflareProvider::new(base("https://api.cloudflare.com/client/v4")).is_ok());
    let err = CloudflareProvider::new(CloudflareSettings::new(vec![ZONE.into()], String::new().into()))
        .expect_err("empty token");
    assert!(matches!(err, ProviderError::Config { .. }));
}

/// A gate that counts admissions and holds every request until released: the adapter waits at
/// it before each API request (the daemon's per-account rate limit).
#[derive(Debug)]
struct CountingGate {
    admitted: std::sync::atomic::AtomicUsize,
    /// Passes dropped: the adapter gave them back once its request's answer was read.
    returned: Arc<std::sync::atomic::AtomicUsize>,
    open: tokio::sync::Semaphore,
}

/// Counts itself returned when dropped.
struct CountedPass(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CountedPass {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl dns_provider::RequestGate for CountingGate {
    async fn admit(&self) -> dns_provider::GatePass {
        self.open.acquire().await.expect("gate open").forget();
        self.admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(CountedPass(self.returned.clone()))
    }
}

/// Every API request waits at the gate: none is sent before it admits one, and the number of
/// admissions is the number of requests the API saw (retries included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_waits_at_the_gate() {
    let fake = CloudflareFake::start().await;
    let gate = Arc::new(CountingGate {
        admitted: Default::default(),
        returned: Default::default(),
        open: tokio::sync::Semaphore::new(0),
    });
    let mut settings = CloudflareSettings::new(vec![ZONE.into()], fake.token.clone().into());
    settings.base_url = fake.base_url.clone();
    settings.gate = Some(gate.clone());
    let provider = Arc::new(CloudflareProvider::new(settings).expect("provider"));
    fake.rate_limit_next(1, 0);
    let record = Record::txt(format!("_dnsauth.gate.{ZONE}"), "gated");
    let publish = {
        let (provider, record) = (provider.clone(), record.clone());
        tokio::spawn(async move { provider.publish(ZONE, &record).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.request_count(), 0, "nothing is sent before the gate admits it");
    gate.open.add_permits(1000);
    publish.await.expect("task").expect("publish");
    let admitted = gate.admitted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(fake.request_count() >= 3, "a 429, its retry and the write: {:?}", fake.requests());
    assert_eq!(admitted, fake.request_count(), "one admission per request, retries included");
    assert_eq!(gate.returned.load(std::sync::atomic::Ordering::SeqCst), admitted, "every pass given back");
}
