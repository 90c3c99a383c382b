//! The Route53 adapter against a real moto server (behind test-support's proxy, which applies
//! Route53's change-batch rules, counts change requests and injects throttling).

mod battery;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use battery::Harness;
use dns_provider::route53::{Route53Provider, Route53Settings, StaticCredentials};
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use test_support::moto::{self, Fault, KeyRejection, Moto};

const ZONE: &str = "example.com";

struct R53 {
    moto: Moto,
    zone_id: String,
    provider: SharedProvider,
    bad: SharedProvider,
}

fn settings(moto: &Moto, access_key: &str) -> Route53Settings {
    Route53Settings {
        zones: vec![ZONE.to_string()],
        region: Some(moto::REGION.to_string()),
        endpoint_url: Some(moto.endpoint_url().to_string()),
        credentials: Some(StaticCredentials {
            access_key_id: access_key.to_string(),
            secret_access_key: moto::SECRET_ACCESS_KEY.to_string().into(),
            session_token: None,
        }),
        ..Route53Settings::default()
    }
}

async fn make_provider(moto: &Moto, access_key: &str) -> Route53Provider {
    Route53Provider::new(settings(moto, access_key)).await.expect("route53 provider")
}

async fn setup() -> R53 {
    let moto = Moto::start().await;
    let zone_id = moto.create_hosted_zone(ZONE).await;
    moto.reject_access_key("AKIDWRONG", KeyRejection::InvalidClientTokenId);
    let provider: SharedProvider = Arc::new(make_provider(&moto, moto::ACCESS_KEY_ID).await);
    let bad: SharedProvider = Arc::new(make_provider(&moto, "AKIDWRONG").await);
    R53 { moto, zone_id, provider, bad }
}

#[async_trait]
impl Harness for R53 {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.to_string()
    }

    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String> {
        let raw = self.moto.values(&self.zone_id, name, rtype.as_str()).await;
        match rtype {
            RecordType::Txt => raw.iter().map(|v| moto::unquote_txt(v)).collect(),
            RecordType::Cname => raw.iter().map(|v| v.trim_end_matches('.').to_string()).collect(),
        }
    }

    async fn add_foreign(&self, record: &Record) {
        let raw = match record.rtype {
            RecordType::Txt => format!("\"{}\"", record.value),
            RecordType::Cname => record.value.clone(),
        };
        self.moto.add_value(&self.zone_id, &record.name, record.rtype.as_str(), &raw, 300).await;
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        Some(self.bad.clone())
    }

    async fn throttle_next(&self, n: u32) -> bool {
        self.moto.throttle_next(n);
        true
    }
}

conformance_battery!(setup);

/// 100 records of one zone go out in at most 3 change requests (measured: 1), and come back out
/// the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_records_in_few_change_requests() {
    let h = setup().await;
    let records: Vec<Record> = (0..100)
        .map(|i| Record::txt(format!("_dnsauth.host{i:03}.{ZONE}"), format!("tok-{i:03}-{}", "x".repeat(32))))
        .collect();
    let published = h.provider.publish_batch(ZONE, &records).await.expect("publish 100");
    let publish_requests = h.moto.change_requests();
    eprintln!("route53: 100 records published with {publish_requests} change request(s)");
    assert!(publish_requests <= 3, "100 records took {publish_requests} change requests");
    assert_eq!(published.len(), 100);
    assert!(published.iter().all(|p| p.change_id.is_some()), "every record carries its change id");
    h.provider.wait_until_applied(&published, Duration::from_secs(30)).await.expect("moto is INSYNC at once");
    for r in records.iter().step_by(7) {
        assert_eq!(h.read_back(&r.name, RecordType::Txt).await, vec![r.value.clone()]);
    }
    h.provider.remove_batch(ZONE, &records).await.expect("remove 100");
    let remove_requests = h.moto.change_requests() - publish_requests;
    eprintln!("route53: 100 records removed with {remove_requests} change request(s)");
    assert!(remove_requests <= 3, "removing 100 records took {remove_requests} change requests");
    for r in records.iter().step_by(7) {
        assert!(h.read_back(&r.name, RecordType::Txt).await.is_empty());
    }
}

/// Another writer changes the RRset between our read and our write: Route53 rejects the stale
/// DELETE, the adapter reads again, and both values survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_update_is_detected_and_retried() {
    let h = setup().await;
    let name = format!("_dnsauth.race.{ZONE}");
    h.add_foreign(&Record::txt(&name, "first-foreign")).await;
    h.moto.interfere_next_change(&h.zone_id, &name, "TXT", "\"sneaky-foreign\"");
    h.provider.publish(ZONE, &Record::txt(&name, "ours")).await.expect("publish despite the race");
    assert_eq!(h.moto.rejected_changes(), 1, "the first batch must have lost the race");
    let mut got = h.read_back(&name, RecordType::Txt).await;
    got.sort();
    assert_eq!(got, vec!["first-foreign", "ours", "sneaky-foreign"]);

    // the same on removal: the value added meanwhile stays
    h.moto.interfere_next_change(&h.zone_id, &name, "TXT", "\"late-foreign\"");
    h.provider.remove(ZONE, &Record::txt(&name, "ours")).await.expect("remove despite the race");
    assert_eq!(h.moto.rejected_changes(), 2);
    let mut got = h.read_back(&name, RecordType::Txt).await;
    got.sort();
    assert_eq!(got, vec!["first-foreign", "late-foreign", "sneaky-foreign"]);
}

/// Two provider instances (two processes' worth of locks) add different values to the same names
/// at the same time, round after round: no value is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_both_survive() {
    let h = setup().await;
    let other: SharedProvider = Arc::new(make_provider(&h.moto, moto::ACCESS_KEY_ID).await);
    for round in 0..25 {
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
    eprintln!("route53: {} change batches lost a race and were retried", h.moto.rejected_changes());
}

/// Throttling, PriorRequestNotComplete and 503 are all retried: every injected fault is served
/// and the change still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let h = setup().await;
    h.moto.inject(Fault::Throttling, 1);
    h.moto.inject(Fault::PriorRequestNotComplete, 1);
    h.moto.inject(Fault::ServiceUnavailable, 1);
    let before = h.moto.requests();
    let name = format!("_dnsauth.faults.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "v")).await.expect("publish through faults");
    assert_eq!(h.moto.pending_faults(), 0);
    assert!(h.moto.requests() - before >= 6, "3 faults + lookup + read + change");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["v"]);
}

/// Endless throttling ends in a retryable Throttled error after the bounded retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_throttling_gives_up_with_a_retryable_error() {
    let h = setup().await;
    h.moto.throttle_next(100);
    let err =
        h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.t.{ZONE}"), "v")).await.expect_err("must give up");
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().starts_with("route53: "), "{err}");
}

/// A read-only identity gets an error naming the missing permission and the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_names_the_permission() {
    let h = setup().await;
    h.moto.reject_access_key("AKIDREADONLY", KeyRejection::DenyChanges);
    let ro = make_provider(&h.moto, "AKIDREADONLY").await;
    ro.preflight().await.expect("preflight only reads");
    let err = ro.publish(ZONE, &Record::txt(format!("_dnsauth.ro.{ZONE}"), "v")).await.expect_err("denied");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("route53: credentials lack route53:ChangeResourceRecordSets on zone {}", h.zone_id)),
        "{msg}"
    );
    let mut with_secret = settings(&h.moto, "AKIDREADONLY");
    with_secret.credentials.as_mut().expect("creds").secret_access_key = "ro-secret-4711".to_string().into();
    let ro2 = Route53Provider::new(with_secret).await.expect("provider");
    let err = ro2.publish(ZONE, &Record::txt(format!("_dnsauth.ro2.{ZONE}"), "v")).await.expect_err("denied");
    assert!(
        !err.to_string().contains("ro-secret-4711") && !format!("{err:?}").contains("ro-secret-4711"),
        "secret in {err:?}"
    );

    let bad = make_provider(&h.moto, "AKIDWRONG").await;
    let err = bad.preflight().await.expect_err("invalid key");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("InvalidClientTokenId"), "{err}");
}

/// Zone lookup: a private twin is ignored, two public zones of one name are refused, an unknown
/// name or a wrong configured id give ZoneNotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_zone_discovery() {
    let h = setup().await;
    h.moto.create_private_hosted_zone(ZONE).await;
    let name = format!("_dnsauth.pub.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "public-one")).await.expect("the public zone is chosen");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["public-one"]);

    h.moto.create_hosted_zone(ZONE).await;
    let fresh = make_provider(&h.moto, moto::ACCESS_KEY_ID).await;
    let err = fresh.preflight().await.expect_err("two public zones");
    assert!(matches!(err, ProviderError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("set hosted_zone_id"), "{err}");

    // a configured id skips the lookup
    let pinned = Route53Provider::new(Route53Settings {
        hosted_zone_id: Some(format!("/hostedzone/{}", h.zone_id)),
        ..settings(&h.moto, moto::ACCESS_KEY_ID)
    })
    .await
    .expect("pinned provider");
    pinned.preflight().await.expect("pinned preflight");
    assert_eq!(pinned.list(ZONE, &name, RecordType::Txt).await.expect("list"), vec!["public-one"]);

    let wrong = Route53Provider::new(Route53Settings {
        hosted_zone_id: Some("ZNOSUCHZONE".into()),
        ..settings(&h.moto, moto::ACCESS_KEY_ID)
    })
    .await
    .expect("provider");
    let err = wrong.preflight().await.expect_err("unknown id");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("fix hosted_zone_id"), "{err}");

    let other = Route53Provider::new(Route53Settings {
        zones: vec!["not-hosted.example".into()],
        ..settings(&h.moto, moto::ACCESS_KEY_ID)
    })
    .await
    .expect("provider");
    let err = other.preflight().await.expect_err("no such zone");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("route53: zone not-hosted.example not found"), "{err}");
}

/// A TXT value longer than 255 bytes is stored as several strings and read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_txt_values_are_split() {
    let h = setup().await;
    let name = format!("_dnsauth.long.{ZONE}");
    let value = "v".repeat(300);
    h.provider.publish(ZONE, &Record::txt(&name, &value)).await.expect("publish");
    let raw = h.moto.values(&h.zone_id, &name, "TXT").await;
    assert_eq!(raw, vec![format!("\"{}\" \"{}\"", "v".repeat(255), "v".repeat(45))]);
    assert_eq!(h.provider.list(ZONE, &name, RecordType::Txt).await.expect("list"), vec![value.clone()]);
    h.provider.remove(ZONE, &Record::txt(&name, &value)).await.expect("remove");
    assert!(h.read_back(&name, RecordType::Txt).await.is_empty());
}

/// The provider's Debug output holds no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_output_has_no_secret() {
    let moto = Moto::start().await;
    let mut s = settings(&moto, "AKIDSHOWN");
    s.credentials.as_mut().expect("creds").secret_access_key = "very-secret-key-123".to_string().into();
    assert!(!format!("{s:?}").contains("very-secret-key-123"));
    let p = Route53Provider::new(s).await.expect("provider");
    assert!(!format!("{p:?}").contains("very-secret-key-123"));
}

/// Counts admissions; admits at once.
#[derive(Debug, Default)]
struct CountingGate(std::sync::atomic::AtomicU64);

#[async_trait]
impl dns_provider::RequestGate for CountingGate {
    async fn admit(&self) -> dns_provider::GatePass {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(())
    }
}

/// A change reaching INSYNC is reported (change id and wait) before propagation polling starts,
/// and every SDK request (throttled attempts included) first waits at the account's gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insync_is_reported_and_every_request_is_gated() {
    let moto = Moto::start().await;
    moto.create_hosted_zone(ZONE).await;
    let synced: Arc<std::sync::Mutex<Vec<(String, Duration)>>> = Arc::default();
    let gate = Arc::new(CountingGate::default());
    let mut settings = settings(&moto, moto::ACCESS_KEY_ID);
    settings.gate = Some(gate.clone());
    let sink = synced.clone();
    settings.on_insync = Some(dns_provider::route53::ChangeSyncObserver(Arc::new(move |id: &str, took| {
        sink.lock().unwrap().push((id.to_string(), took));
    })));
    let provider = Route53Provider::new(settings).await.expect("provider");
    let before = moto.requests();
    moto.throttle_next(1);
    let published = provider
        .publish_batch(ZONE, &[Record::txt(format!("_dnsauth.sync.{ZONE}"), "in-sync")])
        .await
        .expect("publish");
    let change_id = published[0].change_id.clone().expect("a change id");
    assert!(synced.lock().unwrap().is_empty(), "nothing is reported before the wait");
    provider.wait_until_applied(&published, Duration::from_secs(30)).await.expect("moto is INSYNC at once");
    let reported = synced.lock().unwrap().clone();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, change_id);
    assert!(reported[0].1 < Duration::from_secs(30));
    let sent = moto.requests() - before;
    assert!(sent >= 4, "zone lookup, a throttled attempt and its retry, read, change, GetChange: {sent}");
    assert_eq!(gate.0.load(std::sync::atomic::Ordering::SeqCst), sent, "one admission per request");
}
