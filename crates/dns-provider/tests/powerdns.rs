//! The PowerDNS adapter against a real PowerDNS Authoritative server (SQLite backend), started
//! by test-support on high ports, its API behind a proxy that counts requests and injects 429s.

mod battery;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use battery::Harness;
use dns_provider::powerdns::{PowerDnsProvider, PowerDnsSettings};
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use test_support::powerdns::PowerDns;

const ZONE: &str = "example.com";

struct Pdns {
    pdns: PowerDns,
    provider: SharedProvider,
}

fn make_provider(pdns: &PowerDns, key: &str) -> PowerDnsProvider {
    PowerDnsProvider::new(PowerDnsSettings::new(pdns.api_url(), key.to_string().into(), vec![ZONE.to_string()]))
        .expect("powerdns provider")
}

async fn setup() -> Pdns {
    let pdns = PowerDns::start(&[ZONE]).await;
    let provider: SharedProvider = Arc::new(make_provider(&pdns, pdns.api_key()));
    Pdns { pdns, provider }
}

#[async_trait]
impl Harness for Pdns {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.to_string()
    }

    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String> {
        self.pdns.values(ZONE, name, rtype.as_str()).await
    }

    async fn add_foreign(&self, record: &Record) {
        let content = match record.rtype {
            RecordType::Txt => format!("\"{}\"", record.value),
            RecordType::Cname => format!("{}.", record.value),
        };
        self.pdns.add_value(ZONE, &record.name, record.rtype.as_str(), &content, 300).await;
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        Some(Arc::new(make_provider(&self.pdns, "not-the-api-key")))
    }

    async fn throttle_next(&self, n: u32) -> bool {
        self.pdns.throttle_next(n, None);
        true
    }
}

conformance_battery!(setup);

/// 100 records of one zone are published with at most 3 API calls (measured: one GET of the
/// zone, one PATCH) and removed the same way; the figures are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_records_in_few_api_calls() {
    let h = setup().await;
    let records: Vec<Record> = (0..100)
        .map(|i| Record::txt(format!("_dnsauth.host{i:03}.{ZONE}"), format!("tok-{i:03}-{}", "x".repeat(32))))
        .collect();
    let before = h.pdns.total_requests();
    let published = h.provider.publish_batch(ZONE, &records).await.expect("publish 100");
    assert_eq!(published.len(), 100);
    let publish_calls = h.pdns.total_requests() - before;
    eprintln!(
        "powerdns: 100 records published with {publish_calls} API call(s) ({} GET, {} PATCH)",
        h.pdns.requests("GET"),
        h.pdns.requests("PATCH")
    );
    assert!(publish_calls <= 3, "publishing 100 records took {publish_calls} API calls");
    for r in &records {
        assert_eq!(h.read_back(&r.name, RecordType::Txt).await, vec![r.value.clone()], "{}", r.name);
    }
    // over DNS too
    assert_eq!(test_support::bind::dig(h.pdns.dns_addr(), &records[42].name, "TXT"), vec![records[42].value.clone()]);

    let before = h.pdns.total_requests();
    h.provider.remove_batch(ZONE, &records).await.expect("remove 100");
    let remove_calls = h.pdns.total_requests() - before;
    eprintln!("powerdns: 100 records removed with {remove_calls} API call(s)");
    assert!(remove_calls <= 3, "removing 100 records took {remove_calls} API calls");
    for r in records.iter().step_by(7) {
        assert!(h.read_back(&r.name, RecordType::Txt).await.is_empty(), "{}", r.name);
    }
}

/// Two adapter instances (two provider sections on one server, or an old and a new one across
/// a reload) publish and remove different values on the same names at the same time, round
/// after round: no value is lost, foreign values stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_both_survive() {
    let h = setup().await;
    let other: SharedProvider = Arc::new(make_provider(&h.pdns, h.pdns.api_key()));
    for round in 0..20 {
        let name = format!("_dnsauth.both{round}.{ZONE}");
        if round % 2 == 0 {
            h.add_foreign(&Record::txt(&name, "foreign")).await;
        }
        let a = Record::txt(&name, format!("writer-a-{round}"));
        let b = Record::txt(&name, format!("writer-b-{round}"));
        let (ra, rb) = tokio::join!(h.provider.publish(ZONE, &a), other.publish(ZONE, &b));
        ra.expect("writer a");
        rb.expect("writer b");
        let mut got = h.read_back(&name, RecordType::Txt).await;
        got.sort();
        let mut want = vec![a.value.clone(), b.value.clone()];
        if round % 2 == 0 {
            want.push("foreign".to_string());
        }
        want.sort();
        assert_eq!(got, want, "round {round}");
        let (ra, rb) = tokio::join!(h.provider.remove(ZONE, &a), other.remove(ZONE, &b));
        ra.expect("remove a");
        rb.expect("remove b");
        let left = h.read_back(&name, RecordType::Txt).await;
        assert_eq!(left, if round % 2 == 0 { vec!["foreign".to_string()] } else { vec![] }, "round {round}");
    }
}

/// Many tasks of one adapter add values to one name at once: all of them land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_one_name() {
    let h = setup().await;
    let name = format!("_dnsauth.crowd.{ZONE}");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let p = if i % 2 == 0 { h.provider.clone() } else { Arc::new(make_provider(&h.pdns, h.pdns.api_key())) };
        let rec = Record::txt(&name, format!("crowd-{i}"));
        tasks.push(tokio::spawn(async move { p.publish(ZONE, &rec).await }));
    }
    for t in tasks {
        t.await.expect("task").expect("publish");
    }
    let mut got = h.read_back(&name, RecordType::Txt).await;
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("crowd-{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

/// 429 (with and without `Retry-After`) and 503 are retried; every fault is served and the
/// change lands. A `Retry-After: 2` makes the adapter wait at least 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let h = setup().await;
    h.pdns.throttle_next(1, None);
    h.pdns.fail_next(1);
    let name = format!("_dnsauth.faults.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "v")).await.expect("publish through faults");
    assert_eq!(h.pdns.pending_faults(), 0);
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["v"]);

    h.pdns.throttle_next(1, Some(2));
    let started = Instant::now();
    h.provider.remove(ZONE, &Record::txt(&name, "v")).await.expect("remove after 429");
    // a lower bound only: the adapter slept for what the server asked, not its own shorter backoff
    assert!(started.elapsed() >= Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert!(h.read_back(&name, RecordType::Txt).await.is_empty());
}

/// Endless throttling ends in a retryable Throttled error after the bounded retries; a long
/// `Retry-After` is returned to the caller at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_throttling_gives_up_with_a_retryable_error() {
    let h = setup().await;
    h.pdns.throttle_next(100, None);
    let err =
        h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.t.{ZONE}"), "v")).await.expect_err("must give up");
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().starts_with("powerdns: "), "{err}");

    let h = setup().await;
    h.pdns.throttle_next(1, Some(3600));
    let err = h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.l.{ZONE}"), "v")).await.expect_err("throttled");
    match &err {
        ProviderError::Throttled { retry_after, .. } => assert_eq!(*retry_after, Some(Duration::from_secs(3600))),
        other => panic!("expected Throttled, got {other:?}"),
    }
}

/// A wrong key is an Auth error that says where the key comes from and never shows a key; an
/// unknown zone is ZoneNotFound; a wrong server_id is named by preflight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_cause_and_hide_the_key() {
    let h = setup().await;
    h.provider.preflight().await.expect("preflight with the right key");

    let bad = make_provider(&h.pdns, "wrong-key-4711");
    let err = bad.preflight().await.expect_err("wrong key");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("powerdns: ") && msg.contains("HTTP 401") && msg.contains("api_key_file"), "{msg}");
    assert!(!msg.contains("wrong-key-4711") && !format!("{err:?}").contains("wrong-key-4711"), "{msg}");
    assert!(!msg.contains(h.pdns.api_key()));

    let missing = PowerDnsProvider::new(PowerDnsSettings::new(
        h.pdns.api_url(),
        h.pdns.api_key().to_string().into(),
        vec!["not-hosted.example".to_string()],
    ))
    .expect("provider");
    let err = missing.preflight().await.expect_err("zone not hosted");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("powerdns: zone not-hosted.example not found"), "{err}");
    let err = missing
        .publish("not-hosted.example", &Record::txt("_dnsauth.not-hosted.example", "v"))
        .await
        .expect_err("zone not hosted");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");

    let wrong_server = PowerDnsProvider::new(PowerDnsSettings {
        server_id: "nosuchserver".into(),
        ..PowerDnsSettings::new(h.pdns.api_url(), h.pdns.api_key().to_string().into(), vec![ZONE.to_string()])
    })
    .expect("provider");
    let err = wrong_server.preflight().await.expect_err("unknown server id");
    assert!(err.to_string().contains("server_id \"nosuchserver\""), "{err}");

    // nothing answering (or PowerDNS resetting a connection from outside webserver-allow-from):
    // retried, then a retryable error that names the likely causes
    let unreachable = PowerDnsProvider::new(PowerDnsSettings {
        retry: dns_provider::RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        },
        ..PowerDnsSettings::new("http://127.0.0.1:9", h.pdns.api_key().to_string().into(), vec![ZONE.to_string()])
    })
    .expect("provider");
    let err = unreachable.preflight().await.expect_err("nothing listens");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().starts_with("powerdns: ") && err.to_string().contains("webserver-allow-from"), "{err}");

    // a record outside the zone is refused before any call
    let before = h.pdns.total_requests();
    let err = h.provider.publish(ZONE, &Record::txt("_dnsauth.example.net", "v")).await.expect_err("outside");
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert_eq!(h.pdns.total_requests(), before);
}

/// TXT content is stored quoted, long values split into 255-byte strings; names are canonical
/// (no zone appended twice); the TTL is ours; disabled foreign records stay disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_format() {
    let h = setup().await;
    let name = format!("_dnsauth.fmt.{ZONE}");
    h.pdns
        .patch(
            ZONE,
            serde_json::json!({"name": format!("{name}."), "type": "TXT", "ttl": 300, "changetype": "REPLACE",
                "records": [{"content": "\"parked\"", "disabled": true}]}),
        )
        .await;
    let long = "v".repeat(300);
    h.provider.publish(ZONE, &Record::txt(&name, &long)).await.expect("publish");
    let sets = h.pdns.rrsets_at(ZONE, &name).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let (rtype, ttl, records) = &sets[0];
    assert_eq!(rtype, "TXT");
    assert_eq!(*ttl, 60);
    assert!(records.contains(&("\"parked\"".to_string(), true)), "{records:?}");
    assert!(records.contains(&(format!("\"{}\" \"{}\"", "v".repeat(255), "v".repeat(45)), false)), "{records:?}");
    assert_eq!(h.provider.list(ZONE, &name, RecordType::Txt).await.expect("list"), vec![long.clone()]);
    assert_eq!(test_support::bind::dig(h.pdns.dns_addr(), &name, "TXT"), vec![long.clone()]);
    h.provider.remove(ZONE, &Record::txt(&name, &long)).await.expect("remove");
    assert_eq!(
        h.pdns.rrsets_at(ZONE, &name).await,
        vec![("TXT".to_string(), 60, vec![("\"parked\"".to_string(), true)])]
    );
}
