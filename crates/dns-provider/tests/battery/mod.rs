//! The conformance battery every [`DnsProvider`] adapter passes against its real backend (or, for
//! Cloudflare, the stateful fake). Each adapter's test file implements [`Harness`] and invokes
//! [`conformance_battery!`]; adding an adapter costs one harness and one macro line.

#![allow(dead_code, unreachable_pub)]

use async_trait::async_trait;
use dns_provider::{ProviderError, Record, RecordType, SharedProvider};

/// What the battery needs from a backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The adapter under test, with valid credentials.
    fn provider(&self) -> SharedProvider;
    /// The zone the battery writes into (absolute, no trailing dot).
    fn zone(&self) -> String;
    /// The values the backend serves at `name`/`rtype`, read *independently of the adapter*
    /// (over DNS for BIND and memory, through the backend's own API for moto and the fake).
    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String>;
    /// Puts a value into the backend behind the adapter's back (another tool's value).
    async fn add_foreign(&self, record: &Record);
    /// An adapter for the same backend with wrong credentials, when the backend checks them.
    fn with_wrong_credentials(&self) -> Option<SharedProvider>;
    /// Makes the backend throttle the next `n` requests (429 / Throttling); false when the
    /// backend cannot be made to throttle.
    async fn throttle_next(&self, n: u32) -> bool;
}

fn unique(h: &dyn Harness, label: &str) -> String {
    let n: u32 = rand::random();
    format!("_dnsauth.{label}-{n:08x}.{}", h.zone())
}

/// Publish, then the backend serves exactly that value at exactly that name.
pub async fn publish_then_read_back(h: &dyn Harness) {
    let name = unique(h, "pub");
    let rec = Record::txt(&name, "tok-publish-1");
    h.provider().publish(&h.zone(), &rec).await.expect("publish");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["tok-publish-1".to_string()]);
    // exact owner names: the zone is not appended twice
    let doubled = format!("{name}.{}", h.zone());
    assert!(h.read_back(&doubled, RecordType::Txt).await.is_empty(), "zone appended twice: {doubled}");
    h.provider().remove(&h.zone(), &rec).await.expect("remove");
    assert!(h.read_back(&name, RecordType::Txt).await.is_empty());
}

/// Publishing the same value twice leaves one value.
pub async fn publish_twice_is_one_value(h: &dyn Harness) {
    let name = unique(h, "twice");
    let rec = Record::txt(&name, "tok-twice");
    h.provider().publish(&h.zone(), &rec).await.expect("first publish");
    h.provider().publish(&h.zone(), &rec).await.expect("second publish");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["tok-twice".to_string()]);
    h.provider().remove(&h.zone(), &rec).await.expect("remove");
}

/// Two values on one name coexist.
pub async fn two_values_coexist(h: &dyn Harness) {
    let name = unique(h, "two");
    let a = Record::txt(&name, "tok-a");
    let b = Record::txt(&name, "tok-b");
    h.provider().publish(&h.zone(), &a).await.expect("publish a");
    h.provider().publish(&h.zone(), &b).await.expect("publish b");
    let mut got = h.read_back(&name, RecordType::Txt).await;
    got.sort();
    assert_eq!(got, vec!["tok-a".to_string(), "tok-b".to_string()]);
    h.provider().remove(&h.zone(), &a).await.expect("remove a");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["tok-b".to_string()]);
    h.provider().remove(&h.zone(), &b).await.expect("remove b");
}

/// Removing our value keeps a foreign value at the same name.
pub async fn remove_only_ours(h: &dyn Harness) {
    let name = unique(h, "foreign");
    h.add_foreign(&Record::txt(&name, "someone-elses-value")).await;
    let ours = Record::txt(&name, "tok-ours");
    h.provider().publish(&h.zone(), &ours).await.expect("publish");
    let mut got = h.read_back(&name, RecordType::Txt).await;
    got.sort();
    assert_eq!(got, vec!["someone-elses-value".to_string(), "tok-ours".to_string()]);
    h.provider().remove(&h.zone(), &ours).await.expect("remove");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["someone-elses-value".to_string()]);
}

/// Removing a value that is not there succeeds.
pub async fn remove_absent_succeeds(h: &dyn Harness) {
    let name = unique(h, "absent");
    h.provider().remove(&h.zone(), &Record::txt(&name, "never-published")).await.expect("remove absent");
}

/// A CNAME where another record already exists is refused with a clear error.
pub async fn cname_conflict_refused(h: &dyn Harness) {
    let name = unique(h, "cname");
    h.add_foreign(&Record::txt(&name, "existing-txt")).await;
    let err = h
        .provider()
        .publish(&h.zone(), &Record::cname(&name, "abc.dcv.digicert.com"))
        .await
        .expect_err("a CNAME next to a TXT must be refused");
    assert!(matches!(err, ProviderError::Conflict { .. }), "expected Conflict, got {err:?}");
    assert!(err.to_string().starts_with(h.provider().kind()), "error must start with the provider kind: {err}");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["existing-txt".to_string()]);
}

/// A CNAME is published with the exact target (no trailing dot inside, no zone appended).
pub async fn cname_exact_target(h: &dyn Harness) {
    let name = unique(h, "cn");
    let rec = Record::cname(&name, "rnd123.dcv.digicert.com");
    h.provider().publish(&h.zone(), &rec).await.expect("publish cname");
    h.provider().publish(&h.zone(), &rec).await.expect("publish cname again");
    assert_eq!(h.read_back(&name, RecordType::Cname).await, vec!["rnd123.dcv.digicert.com".to_string()]);
    h.provider().remove(&h.zone(), &rec).await.expect("remove cname");
    assert!(h.read_back(&name, RecordType::Cname).await.is_empty());
}

/// Throttling is answered with backoff inside the adapter: the call still succeeds.
pub async fn throttling_is_retried(h: &dyn Harness) {
    if !h.throttle_next(2).await {
        return; // backend cannot throttle (BIND, memory): nothing to prove
    }
    let name = unique(h, "throttle");
    let rec = Record::txt(&name, "tok-throttled");
    h.provider().publish(&h.zone(), &rec).await.expect("publish after throttling");
    assert_eq!(h.read_back(&name, RecordType::Txt).await, vec!["tok-throttled".to_string()]);
    h.provider().remove(&h.zone(), &rec).await.expect("remove");
}

/// Wrong credentials give a clear, non-retryable error naming the provider.
pub async fn wrong_credentials_clear_error(h: &dyn Harness) {
    let Some(bad) = h.with_wrong_credentials() else { return };
    let name = unique(h, "auth");
    let err = bad.publish(&h.zone(), &Record::txt(&name, "tok")).await.expect_err("wrong credentials must fail");
    assert!(!err.is_retryable(), "auth errors are not retryable: {err:?}");
    assert!(err.to_string().starts_with(bad.kind()), "error must start with the provider kind: {err}");
    assert!(h.read_back(&name, RecordType::Txt).await.is_empty());
}

/// Batch publish/remove of several records of one zone.
pub async fn batch_roundtrip(h: &dyn Harness) {
    let recs: Vec<Record> =
        (0..5).map(|i| Record::txt(unique(h, &format!("batch{i}")), format!("tok-batch-{i}"))).collect();
    h.provider().publish_batch(&h.zone(), &recs).await.expect("publish batch");
    for r in &recs {
        assert_eq!(h.read_back(&r.name, RecordType::Txt).await, vec![r.value.clone()]);
    }
    h.provider().remove_batch(&h.zone(), &recs).await.expect("remove batch");
    for r in &recs {
        assert!(h.read_back(&r.name, RecordType::Txt).await.is_empty());
    }
}

/// Instantiates the battery as `#[tokio::test]`s. `$setup` is an async fn returning a value that
/// implements [`Harness`] (keep server guards inside it).
#[macro_export]
macro_rules! conformance_battery {
    ($setup:path) => {
        $crate::conformance_battery!(@cases $setup;
            publish_then_read_back, publish_twice_is_one_value, two_values_coexist, remove_only_ours,
            remove_absent_succeeds, cname_conflict_refused, cname_exact_target, throttling_is_retried,
            wrong_credentials_clear_error, batch_roundtrip);
    };
    (@cases $setup:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let h = $setup().await;
                battery::$case(&h).await;
            }
        )*
    };
}
