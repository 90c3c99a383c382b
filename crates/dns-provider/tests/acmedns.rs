//! The acme-dns adapter against test-support's stateful acme-dns fake.
//!
//! acme-dns differs from the other backends in ways the battery assumes away: values live in
//! accounts configured up front (the battery's random names have none), an account holds two
//! values, and nothing can be deleted. The battery case that applies runs as is; the others are
//! restated below for acme-dns's rules.

mod battery;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use battery::Harness;
use dns_provider::acmedns::{AcmeDnsAccount, AcmeDnsProvider, AcmeDnsSettings};
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use test_support::acmedns_fake::{AcmeAccount, AcmeDnsFake, AcmeFault};

const ZONE: &str = "auth.example.org";

struct Acme {
    fake: AcmeDnsFake,
    /// Accounts for example.com and shop.example.net.
    accounts: Vec<AcmeAccount>,
    provider: SharedProvider,
}

fn settings_for(fake: &AcmeDnsFake, accounts: &[AcmeAccount], password: Option<&str>) -> AcmeDnsSettings {
    let domains = ["example.com", "shop.example.net", "third.example"];
    AcmeDnsSettings::new(
        fake.api_url.clone(),
        vec![ZONE.to_string()],
        accounts
            .iter()
            .zip(domains)
            .map(|(a, domain)| AcmeDnsAccount {
                domain: domain.to_string(),
                username: a.username.clone(),
                password: password.unwrap_or(&a.password).to_string().into(),
                subdomain: a.subdomain.clone(),
                fulldomain: a.fulldomain.clone(),
            })
            .collect(),
    )
}

async fn setup_with(fake: AcmeDnsFake) -> Acme {
    let accounts = vec![fake.register(), fake.register()];
    let provider: SharedProvider =
        Arc::new(AcmeDnsProvider::new(settings_for(&fake, &accounts, None)).expect("acmedns provider"));
    Acme { fake, accounts, provider }
}

async fn setup() -> Acme {
    setup_with(AcmeDnsFake::start(ZONE).await).await
}

/// A value acme-dns accepts: 43 characters of the base64url alphabet.
fn v43(label: &str) -> String {
    format!("{label}{}", "x".repeat(43 - label.len()))
}

#[async_trait]
impl Harness for Acme {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.to_string()
    }

    async fn read_back(&self, name: &str, _rtype: RecordType) -> Vec<String> {
        self.fake.txt_values(name)
    }

    async fn add_foreign(&self, _record: &Record) {
        unreachable!("acme-dns accounts hold only their owner's values")
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        let s = settings_for(&self.fake, &self.accounts, Some(&"w".repeat(40)));
        Some(Arc::new(AcmeDnsProvider::new(s).expect("provider")))
    }

    async fn throttle_next(&self, n: u32) -> bool {
        self.fake.inject(AcmeFault::Throttle { retry_after: None }, n);
        true
    }
}

// The battery case that holds for acme-dns as written; the rest are restated below.
conformance_battery!(@cases setup; remove_absent_succeeds);

/// Publish: the value lands in the account of exactly that fulldomain, and in no other.
#[tokio::test]
async fn publish_then_read_back() {
    let h = setup().await;
    let (a, b) = (&h.accounts[0], &h.accounts[1]);
    let value = v43("pub");
    h.provider.publish(ZONE, &Record::txt(&a.fulldomain, &value)).await.expect("publish");
    assert_eq!(h.read_back(&a.fulldomain, RecordType::Txt).await, vec![value.clone()]);
    assert_eq!(h.fake.slots(&a.subdomain), vec![value.clone(), String::new()]);
    assert!(h.read_back(&b.fulldomain, RecordType::Txt).await.is_empty());
    assert_eq!(h.provider.list(ZONE, &a.fulldomain, RecordType::Txt).await.expect("list"), vec![value]);
}

/// Publishing the same value twice makes one update and leaves one copy (the other slot keeps
/// its value).
#[tokio::test]
async fn publish_twice_is_one_value() {
    let h = setup().await;
    let full = &h.accounts[0].fulldomain;
    let (first, second) = (v43("first"), v43("second"));
    h.provider.publish(ZONE, &Record::txt(full, &first)).await.expect("publish first");
    h.provider.publish(ZONE, &Record::txt(full, &second)).await.expect("publish second");
    h.provider.publish(ZONE, &Record::txt(full, &second)).await.expect("publish second again");
    assert_eq!(h.fake.updates(), 2);
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(h.read_back(full, RecordType::Txt).await, want);
}

/// Two values coexist in the two slots; a third replaces the oldest, so the two newest remain.
#[tokio::test]
async fn two_slots_keep_the_two_newest_values() {
    let h = setup().await;
    let full = &h.accounts[0].fulldomain;
    let (one, two, three) = (v43("one"), v43("two"), v43("three"));
    for v in [&one, &two] {
        h.provider.publish(ZONE, &Record::txt(full, v)).await.expect("publish");
    }
    let mut want = vec![one.clone(), two.clone()];
    want.sort();
    assert_eq!(h.read_back(full, RecordType::Txt).await, want);
    h.provider.publish(ZONE, &Record::txt(full, &three)).await.expect("publish third");
    let mut want = vec![two.clone(), three.clone()];
    want.sort();
    assert_eq!(h.read_back(full, RecordType::Txt).await, want);
    let mut listed = h.provider.list(ZONE, full, RecordType::Txt).await.expect("list");
    listed.sort();
    assert_eq!(listed, want, "the adapter's memory matches the server");
}

/// Remove succeeds without any call (acme-dns has no delete): the value stays.
#[tokio::test]
async fn remove_is_a_no_op() {
    let h = setup().await;
    let full = &h.accounts[0].fulldomain;
    let value = v43("stays");
    h.provider.publish(ZONE, &Record::txt(full, &value)).await.expect("publish");
    h.fake.inject(AcmeFault::Unavailable, 1); // any request would hit this
    h.provider.remove(ZONE, &Record::txt(full, &value)).await.expect("remove");
    h.provider.remove_batch(ZONE, &[Record::txt(full, &value)]).await.expect("remove batch");
    assert_eq!(h.fake.pending_faults(), 1, "remove made a request");
    assert_eq!(h.read_back(full, RecordType::Txt).await, vec![value]);
}

/// Wrong credentials: a clear, non-retryable Auth error naming the account, without the
/// password; nothing is written.
#[tokio::test]
async fn wrong_credentials_clear_error() {
    let h = setup().await;
    let bad = h.with_wrong_credentials().expect("bad provider");
    let full = &h.accounts[0].fulldomain;
    let err = bad.publish(ZONE, &Record::txt(full, v43("auth"))).await.expect_err("wrong password");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.starts_with("acmedns: the update was refused for the account for example.com"), "{msg}");
    assert!(msg.contains("HTTP 401") && msg.contains("forbidden"), "{msg}");
    assert!(!msg.contains(&"w".repeat(40)) && !format!("{err:?}").contains(&"w".repeat(40)));
    assert_eq!(h.fake.refused(), 1);
    assert!(h.read_back(full, RecordType::Txt).await.is_empty());
}

/// Stock acme-dns refuses a DigiCert-sized (32-character) value with `bad_txt`; the error says
/// why and what to do. A server that accepts any length takes it.
#[tokio::test]
async fn digicert_values_need_a_server_that_accepts_them() {
    let h = setup().await;
    let full = &h.accounts[0].fulldomain;
    let digicert_like = "0q9x3w7m5k2j8h4g6f1d3s5a7p9o2i4u";
    let err = h.provider.publish(ZONE, &Record::txt(full, digicert_like)).await.expect_err("bad_txt");
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.starts_with("acmedns: ") && msg.contains("bad_txt") && msg.contains("32-character"), "{msg}");

    let relaxed = setup_with(AcmeDnsFake::builder(ZONE).accept_any_txt().start().await).await;
    let full = &relaxed.accounts[0].fulldomain;
    relaxed.provider.publish(ZONE, &Record::txt(full, digicert_like)).await.expect("publish");
    assert_eq!(relaxed.read_back(full, RecordType::Txt).await, vec![digicert_like.to_string()]);
}

/// Names without an account, CNAMEs and names outside the zone are refused before any call.
#[tokio::test]
async fn misrouted_records_are_refused() {
    let h = setup().await;
    let err =
        h.provider.publish(ZONE, &Record::txt(format!("unknown.{ZONE}"), v43("x"))).await.expect_err("no account");
    assert!(err.to_string().contains("no acme-dns account has fulldomain unknown.auth.example.org"), "{err}");
    let err = h
        .provider
        .publish(ZONE, &Record::cname(&h.accounts[0].fulldomain, "x.dcv.digicert.com"))
        .await
        .expect_err("cname");
    assert!(err.to_string().starts_with("acmedns: cannot publish") && err.to_string().contains("TXT records only"));
    let err = h.provider.publish(ZONE, &Record::txt("_dnsauth.example.com", v43("x"))).await.expect_err("outside");
    assert!(matches!(err, ProviderError::Rejected { .. }), "{err:?}");
    assert_eq!(h.fake.updates() + h.fake.refused(), 0);
}

/// Throttling and 503 are retried; `Retry-After` is honoured; endless throttling ends in a
/// retryable error.
#[tokio::test]
async fn throttling_is_retried() {
    let h = setup().await;
    let full = &h.accounts[0].fulldomain;
    h.fake.inject(AcmeFault::Throttle { retry_after: None }, 1);
    h.fake.inject(AcmeFault::Unavailable, 1);
    h.fake.inject(AcmeFault::Throttle { retry_after: Some(1) }, 1);
    let started = Instant::now();
    h.provider.publish(ZONE, &Record::txt(full, v43("throttled"))).await.expect("publish through faults");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After ignored: {:?}", started.elapsed());
    assert_eq!(h.fake.pending_faults(), 0);
    assert_eq!(h.read_back(full, RecordType::Txt).await, vec![v43("throttled")]);

    h.fake.inject(AcmeFault::Throttle { retry_after: None }, 100);
    let err = h.provider.publish(ZONE, &Record::txt(full, v43("never"))).await.expect_err("gives up");
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable() && err.to_string().starts_with("acmedns: "), "{err}");
}

/// Two accounts in one batch: each value goes to its own account; two tasks on one account
/// both land (the two slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_concurrent_writers() {
    let h = setup().await;
    let (a, b) = (&h.accounts[0], &h.accounts[1]);
    let recs = vec![Record::txt(&a.fulldomain, v43("batch-a")), Record::txt(&b.fulldomain, v43("batch-b"))];
    h.provider.publish_batch(ZONE, &recs).await.expect("batch");
    assert_eq!(h.read_back(&a.fulldomain, RecordType::Txt).await, vec![v43("batch-a")]);
    assert_eq!(h.read_back(&b.fulldomain, RecordType::Txt).await, vec![v43("batch-b")]);

    let (p1, p2) = (h.provider.clone(), h.provider.clone());
    let (r1, r2) = (Record::txt(&b.fulldomain, v43("writer-1")), Record::txt(&b.fulldomain, v43("writer-2")));
    let (x, y) = tokio::join!(p1.publish(ZONE, &r1), p2.publish(ZONE, &r2));
    x.expect("writer 1");
    y.expect("writer 2");
    let mut want = vec![v43("writer-1"), v43("writer-2")];
    want.sort();
    assert_eq!(h.read_back(&b.fulldomain, RecordType::Txt).await, want);
}

/// Preflight checks that the API answers (acme-dns cannot check credentials without writing).
#[tokio::test]
async fn preflight_checks_reachability() {
    let h = setup().await;
    h.provider.preflight().await.expect("preflight");
    let nothing = AcmeDnsProvider::new(AcmeDnsSettings {
        api_url: "http://127.0.0.1:9".into(),
        retry: dns_provider::RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        },
        ..settings_for(&h.fake, &h.accounts, None)
    })
    .expect("provider");
    let err = nothing.preflight().await.expect_err("nothing listens");
    assert!(err.is_retryable() && err.to_string().starts_with("acmedns: checking the acme-dns API"), "{err}");
}
