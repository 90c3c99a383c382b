//! The Cloud DNS adapter against test-support's stateful Cloud DNS fake (which verifies the
//! RS256 assertions, enforces exact-match deletions and refuses existing additions).

mod battery;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use battery::Harness;
use dns_provider::gcloud::{Credentials, GcloudProvider, GcloudSettings};
use dns_provider::{DnsProvider, ProviderError, Published, Record, RecordType, SharedProvider};
use reqwest::Method;
use test_support::gcloud_fake::{GcloudFake, GcpFault, Role};

const ZONE: &str = "example.com";
const SA: &str = "dcvd@dcvd-test.iam.gserviceaccount.com";

struct Gcp {
    fake: GcloudFake,
    key: String,
    provider: SharedProvider,
}

fn settings(fake: &GcloudFake, credentials: Credentials) -> GcloudSettings {
    GcloudSettings {
        api_url: fake.api_url.clone(),
        metadata_url: Some(fake.metadata_url.clone()),
        ..GcloudSettings::new(fake.project.clone(), vec![ZONE.to_string()], credentials)
    }
}

fn make_provider(fake: &GcloudFake, key_json: &str) -> GcloudProvider {
    let credentials = Credentials::from_json(key_json).expect("service-account key");
    GcloudProvider::new(settings(fake, credentials)).expect("gcloud provider")
}

async fn setup_with(fake: GcloudFake) -> Gcp {
    let key = fake.service_account_key(SA, Role::DnsEditor);
    let provider: SharedProvider = Arc::new(make_provider(&fake, &key));
    Gcp { fake, key, provider }
}

async fn setup() -> Gcp {
    setup_with(GcloudFake::start().await).await
}

#[async_trait]
impl Harness for Gcp {
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
        let raw = match record.rtype {
            RecordType::Txt => format!("\"{}\"", record.value),
            RecordType::Cname => format!("{}.", record.value),
        };
        self.fake.insert_value(&record.name, record.rtype.as_str(), &raw, 300);
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        // a well-formed key the fake's project does not know: its token request is refused
        let stranger = self.fake.service_account_key("stranger@x.iam.gserviceaccount.com", Role::DnsEditor);
        let forged = stranger.replace("stranger@x.iam.gserviceaccount.com", SA);
        Some(Arc::new(make_provider(&self.fake, &forged)))
    }

    async fn throttle_next(&self, n: u32) -> bool {
        self.fake.throttle_next(n, Some(1));
        true
    }
}

conformance_battery!(setup);

/// TXT rrdatas go out quoted, CNAME targets absolute; a set is written with our TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_format_is_what_cloud_dns_stores() {
    let h = setup().await;
    let name = format!("_dnsauth.w.{ZONE}");
    h.provider.publish(ZONE, &Record::txt(&name, "tok-w")).await.expect("publish");
    let set = h.fake.rrset(&name, "TXT").expect("set");
    assert_eq!(
        (set.name.as_str(), set.ttl, set.rrdatas.clone()),
        ("_dnsauth.w.example.com.", 60, vec!["\"tok-w\"".to_string()])
    );
    let cname = format!("_dnsauth.c.{ZONE}");
    h.provider.publish(ZONE, &Record::cname(&cname, "abc.dcv.digicert.com")).await.expect("publish cname");
    assert_eq!(h.fake.rrset(&cname, "CNAME").expect("cname").rrdatas, vec!["abc.dcv.digicert.com.".to_string()]);
}

/// A foreign value with a longer TTL: the merge deletes the set exactly as read (TTL 300) and
/// removing ours leaves the foreign value (at the shorter TTL the set then has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_deletes_the_set_as_read() {
    let h = setup().await;
    let name = format!("_dnsauth.m.{ZONE}");
    h.fake.insert_value(&name, "TXT", "\"v=spf1 -all\"", 300);
    h.provider.publish(ZONE, &Record::txt(&name, "ours")).await.expect("publish");
    let set = h.fake.rrset(&name, "TXT").expect("set");
    assert_eq!(set.rrdatas, vec!["\"v=spf1 -all\"".to_string(), "\"ours\"".to_string()]);
    assert!(h.fake.refused_changes().is_empty(), "{:?}", h.fake.refused_changes());
    h.provider.remove(ZONE, &Record::txt(&name, "ours")).await.expect("remove");
    assert_eq!(h.fake.values(&name, "TXT"), vec!["v=spf1 -all"]);
}

/// Lost update: another writer adds its value between our read and our change. Cloud DNS (the
/// fake) refuses our stale deletion with 412; the adapter reads again and both values survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_deletion_is_refused_then_retried() {
    let h = setup().await;
    let name = format!("_dnsauth.race.{ZONE}");
    h.fake.insert_value(&name, "TXT", "\"first\"", 60);
    h.fake.interfere_next_change(&name, "TXT", "\"concurrent\"");
    h.provider.publish(ZONE, &Record::txt(&name, "ours")).await.expect("publish");
    assert_eq!(h.fake.refused_changes(), vec![412], "the stale change was refused once");
    let mut got = h.fake.values(&name, "TXT");
    got.sort();
    assert_eq!(got, vec!["concurrent", "first", "ours"]);

    // the first value at a name: the other writer created the set meanwhile (409 alreadyExists)
    let fresh = format!("_dnsauth.race2.{ZONE}");
    h.fake.interfere_next_change(&fresh, "TXT", "\"concurrent\"");
    h.provider.publish(ZONE, &Record::txt(&fresh, "ours")).await.expect("publish");
    assert_eq!(h.fake.refused_changes().last(), Some(&409));
    let mut got = h.fake.values(&fresh, "TXT");
    got.sort();
    assert_eq!(got, vec!["concurrent", "ours"]);
}

/// Two adapters (two dcvd instances, no shared lock) write two values on one name at once, many
/// times: every value survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_name_lose_nothing() {
    let h = setup().await;
    let other = make_provider(&h.fake, &h.key);
    for round in 0..15 {
        let name = format!("_dnsauth.lost{round}.{ZONE}");
        let a = Record::txt(&name, "value-a");
        let b = Record::txt(&name, "value-b");
        let (ra, rb) = tokio::join!(h.provider.publish(ZONE, &a), other.publish(ZONE, &b));
        ra.expect("writer a");
        rb.expect("writer b");
        let mut got = h.fake.values(&name, "TXT");
        got.sort();
        assert_eq!(got, vec!["value-a", "value-b"], "round {round}");
        let (ra, rb) = tokio::join!(h.provider.remove(ZONE, &a), other.remove(ZONE, &b));
        ra.expect("remove a");
        rb.expect("remove b");
        assert!(h.fake.values(&name, "TXT").is_empty(), "round {round}");
    }
    println!("refused changes over 15 rounds: {:?}", h.fake.refused_changes());
}

/// 100 records in one zone: publish costs the zone lookup, one list and one change; removal one
/// list and one change. Cloud DNS charges per request, so this is a count, not a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_records_take_three_calls_each_way() {
    let h = setup().await;
    let records: Vec<Record> =
        (0..100).map(|i| Record::txt(format!("_dnsauth.host{i:03}.{ZONE}"), format!("tok-{i}"))).collect();
    let before = h.fake.request_count();
    let published = h.provider.publish_batch(ZONE, &records).await.expect("publish batch");
    let publish_calls = h.fake.request_count() - before;
    assert_eq!(published.len(), 100);
    for r in &records {
        assert_eq!(h.fake.values(&r.name, "TXT"), vec![r.value.clone()]);
    }
    let before = h.fake.request_count();
    h.provider.remove_batch(ZONE, &records).await.expect("remove batch");
    let remove_calls = h.fake.request_count() - before;
    println!(
        "gcloud: 100 records: publish {publish_calls} API calls, remove {remove_calls} API calls, {} token requests",
        h.fake.token_requests().len()
    );
    assert!(publish_calls <= 3, "publish took {publish_calls} calls: {:?}", h.fake.requests());
    assert!(remove_calls <= 3, "remove took {remove_calls} calls: {:?}", h.fake.requests());
    assert_eq!(h.fake.change_count("example-com"), 2, "one change each way");
    for r in &records {
        assert!(h.fake.values(&r.name, "TXT").is_empty());
    }
    assert_eq!(h.fake.token_requests(), vec!["oauth"], "one token for everything");
}

/// `rrsets.list` pages are followed with `pageToken`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_is_followed() {
    let h = setup_with(GcloudFake::builder().zone(ZONE).page_size(3).start().await).await;
    for i in 0..8 {
        h.fake.insert_value(&format!("other{i}.{ZONE}"), "TXT", "\"x\"", 300);
    }
    let records: Vec<Record> = (0..5).map(|i| Record::txt(format!("_dnsauth.p{i}.{ZONE}"), "v")).collect();
    h.provider.publish_batch(ZONE, &records).await.expect("publish");
    assert!(h.fake.requests().iter().any(|(_, p)| p.contains("pageToken=")), "{:?}", h.fake.requests());
    // the second batch must see the first one's sets on later pages and change nothing
    let changes = h.fake.change_count("example-com");
    h.provider.publish_batch(ZONE, &records).await.expect("publish again");
    assert_eq!(h.fake.change_count("example-com"), changes, "publishing again must be a no-op");
}

/// A 429 with `Retry-After: 1` is waited out; 5xx are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let h = setup().await;
    let name = format!("_dnsauth.t.{ZONE}");
    h.fake.throttle_next(2, Some(1));
    h.fake.inject(GcpFault::ServerError(503), 1);
    h.provider.publish(ZONE, &Record::txt(&name, "after-429")).await.expect("publish through 429s and a 503");
    assert_eq!(h.fake.pending_faults(), 0);
    assert_eq!(h.fake.values(&name, "TXT"), vec!["after-429"]);

    h.fake.throttle_next(1, Some(3600));
    let err = h.provider.publish(ZONE, &Record::txt(&name, "later")).await.expect_err("too long to wait");
    match &err {
        ProviderError::Throttled { retry_after, .. } => assert_eq!(*retry_after, Some(Duration::from_secs(3600))),
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(err.is_retryable() && err.to_string().starts_with("gcloud: "), "{err}");
}

/// `wait_until_applied` polls `changes.get` until `done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_change_to_be_done() {
    let h = setup().await;
    h.fake.set_pending_gets(2);
    let published =
        h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.wait.{ZONE}"), "v")).await.expect("publish");
    let id = published.change_id.clone().expect("a change id");
    assert!(id.starts_with("example-com/"), "{id}");
    h.provider.wait_until_applied(&[published], Duration::from_secs(30)).await.expect("done");
    assert_eq!(h.fake.count_path(Method::GET, "/changes/"), 3, "two pending answers, then done");

    h.fake.set_pending_gets(1000);
    let published =
        h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.wait2.{ZONE}"), "v")).await.expect("publish");
    let err = h.provider.wait_until_applied(&[published], Duration::from_millis(600)).await.expect_err("still pending");
    assert!(err.is_retryable() && err.to_string().contains("still \"pending\""), "{err}");
    // nothing to wait for
    h.provider.wait_until_applied(&[Published::default()], Duration::from_secs(1)).await.expect("no change");
}

/// The service-account token is cached across calls and renewed once it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_until_they_expire() {
    let h = setup().await;
    for i in 0..3 {
        h.provider.publish(ZONE, &Record::txt(format!("_dnsauth.c{i}.{ZONE}"), "v")).await.expect("publish");
    }
    assert_eq!(h.fake.token_requests(), vec!["oauth"], "one token for three publishes");

    let short = setup().await;
    short.fake.set_token_lifetime(1);
    short.provider.list(ZONE, &format!("_dnsauth.x.{ZONE}"), RecordType::Txt).await.expect("list");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    short.provider.list(ZONE, &format!("_dnsauth.x.{ZONE}"), RecordType::Txt).await.expect("list");
    assert_eq!(short.fake.token_requests(), vec!["oauth", "oauth"], "an expired token is renewed");
}

/// The metadata server's token works (with its `Metadata-Flavor` header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_server_credentials() {
    let fake = GcloudFake::start().await;
    fake.metadata_account(Role::DnsEditor);
    let provider = GcloudProvider::new(settings(&fake, Credentials::Metadata)).expect("provider");
    provider.preflight().await.expect("preflight");
    let name = format!("_dnsauth.md.{ZONE}");
    provider.publish(ZONE, &Record::txt(&name, "via-metadata")).await.expect("publish");
    assert_eq!(fake.values(&name, "TXT"), vec!["via-metadata"]);
    assert_eq!(fake.token_requests(), vec!["metadata"]);
}

/// Workload identity federation: the subject token file is exchanged at the STS, directly and
/// through service-account impersonation; the subject token is re-read (it rotates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_credentials() {
    let fake = GcloudFake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "subject-jwt-1\n").expect("write token");
    let audience = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s";

    let direct = fake.workload_identity(audience, "subject-jwt-1", Role::DnsEditor, &token_file, None);
    let provider =
        GcloudProvider::new(settings(&fake, Credentials::from_json(&direct).expect("config"))).expect("provider");
    let name = format!("_dnsauth.wif.{ZONE}");
    provider.publish(ZONE, &Record::txt(&name, "via-sts")).await.expect("publish");
    assert_eq!(fake.values(&name, "TXT"), vec!["via-sts"]);
    assert_eq!(fake.token_requests(), vec!["sts"]);

    let sa = "dns-writer@dcvd-test.iam.gserviceaccount.com";
    let _ = fake.service_account_key(sa, Role::DnsEditor);
    let via_sa = fake.workload_identity(audience, "subject-jwt-2", Role::None, &token_file, Some(sa));
    std::fs::write(&token_file, "subject-jwt-2").expect("rotate token");
    let creds = Credentials::from_json(&via_sa).expect("config");
    assert!(format!("{creds:?}").contains("impersonation_url"), "{creds:?}");
    let provider = GcloudProvider::new(settings(&fake, creds)).expect("provider");
    provider.publish(ZONE, &Record::txt(&name, "via-impersonation")).await.expect("publish");
    assert_eq!(fake.token_requests(), vec!["sts", "sts", "iam"]);
    let mut got = fake.values(&name, "TXT");
    got.sort();
    assert_eq!(got, vec!["via-impersonation", "via-sts"]);

    // a federated identity without DNS roles and without impersonation is told what it lacks
    let none = fake.workload_identity(audience, "subject-jwt-2", Role::None, &token_file, None);
    let provider =
        GcloudProvider::new(settings(&fake, Credentials::from_json(&none).expect("config"))).expect("provider");
    let err = provider.publish(ZONE, &Record::txt(&name, "x")).await.expect_err("no role");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("dns.managedZones.list"), "{err}");
}

/// Permission errors name the permission; a refused key is an auth error; nothing secret shows
/// in errors or Debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_name_the_permission_and_hide_secrets() {
    let h = setup().await;
    let reader_key = h.fake.service_account_key("reader@dcvd-test.iam.gserviceaccount.com", Role::DnsReader);
    let reader = make_provider(&h.fake, &reader_key);
    reader.preflight().await.expect("a reader passes the read-only preflight");
    let err = reader.publish(ZONE, &Record::txt(format!("_dnsauth.ro.{ZONE}"), "v")).await.expect_err("reader");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("gcloud: service account reader@dcvd-test.iam.gserviceaccount.com lacks dns.changes.create"),
        "{msg}"
    );
    assert!(msg.contains("PERMISSION_DENIED") || msg.contains("forbidden"), "{msg}");

    let pem_line = private_key_line(&reader_key);
    let stranger = h.fake.service_account_key("s@x.iam.gserviceaccount.com", Role::DnsEditor);
    let forged = make_provider(&h.fake, &stranger.replace("s@x.iam.gserviceaccount.com", SA));
    let err = forged.preflight().await.expect_err("signature does not match the account's key");
    assert!(matches!(err, ProviderError::Auth { .. }) && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");

    for text in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{reader:?}"),
        format!("{forged:?}"),
        format!("{:?}", Credentials::from_json(&reader_key).expect("key")),
    ] {
        assert!(!text.contains(&pem_line), "private key leaked: {text}");
        assert!(!text.contains("PRIVATE KEY"), "private key leaked: {text}");
        assert!(!text.contains("ya29."), "access token leaked: {text}");
    }
    let debug = format!("{reader:?}");
    assert!(debug.contains("reader@dcvd-test.iam.gserviceaccount.com"), "Debug names the account: {debug}");
}

fn private_key_line(key_json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(key_json).expect("json");
    v["private_key"].as_str().expect("pem").lines().nth(3).expect("a key line").to_string()
}

/// Bad credentials files are refused before any network call, without quoting them.
#[test]
fn credentials_files_are_validated() {
    let err = Credentials::from_json("{\"type\": \"service_account\", \"client_email\": \"a@b\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nc2VjcmV0LWJ5dGVz\\n-----END PRIVATE KEY-----\\n\"}")
        .expect_err("not an RSA key");
    assert!(
        err.to_string().starts_with("gcloud: the service-account key of a@b: `private_key` is not a usable RSA key"),
        "{err}"
    );
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    let err = Credentials::from_json("{\"type\": \"authorized_user\", \"refresh_token\": \"rt-secret\"}")
        .expect_err("user creds");
    assert!(err.to_string().contains("not supported") && !err.to_string().contains("rt-secret"), "{err}");
    let err = Credentials::from_json("not json secret-ish").expect_err("not json");
    assert!(err.to_string().contains("line 1") && !err.to_string().contains("secret-ish"), "{err}");
    let err = Credentials::from_json(r#"{"type": "external_account", "audience": "a", "subject_token_type": "t", "credential_source": {"url": "http://x"}}"#)
        .expect_err("url source");
    assert!(err.to_string().contains("file"), "{err}");
}

/// Managed zones: a configured name skips the lookup; private zones of the same name are
/// ignored; an unknown zone is ZoneNotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_zone_lookup() {
    let fake = GcloudFake::builder()
        .zone_named(ZONE, "internal-example", "private")
        .zone_named(ZONE, "public-example", "public")
        .start()
        .await;
    let key = fake.service_account_key(SA, Role::DnsEditor);
    let by_lookup = make_provider(&fake, &key);
    by_lookup.publish(ZONE, &Record::txt(format!("_dnsauth.l.{ZONE}"), "v")).await.expect("publish");
    assert_eq!(fake.change_count("public-example"), 1);
    assert_eq!(fake.change_count("internal-example"), 0, "a private zone is invisible to DigiCert");

    let mut s = settings(&fake, Credentials::from_json(&key).expect("key"));
    s.managed_zones.insert(ZONE.to_string(), "public-example".to_string());
    let pinned = GcloudProvider::new(s).expect("provider");
    let lookups = || fake.requests().iter().filter(|(_, p)| p.contains("/managedZones?dnsName=")).count();
    let before = lookups();
    assert_eq!(before, 1, "the first provider looked the zone up");
    pinned.publish(ZONE, &Record::txt(format!("_dnsauth.p.{ZONE}"), "v")).await.expect("publish");
    assert_eq!(lookups(), before, "a configured managed zone skips the lookup");

    let mut s = settings(&fake, Credentials::from_json(&key).expect("key"));
    s.zones = vec!["not-here.example".to_string()];
    let err = GcloudProvider::new(s).expect("provider").preflight().await.expect_err("no such zone");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("gcloud: zone not-here.example not found"), "{err}");
}

/// Settings are checked without network: https only (loopback excepted), a sane project.
#[test]
fn settings_are_validated() {
    let base = || GcloudSettings::new("p-1", vec![ZONE.into()], Credentials::Metadata);
    assert!(GcloudProvider::new(base()).is_ok());
    assert!(GcloudProvider::new(GcloudSettings { api_url: "http://dns.example.net/dns/v1".into(), ..base() }).is_err());
    assert!(GcloudProvider::new(GcloudSettings { project: "a/b".into(), ..base() }).is_err());
    assert!(GcloudProvider::new(GcloudSettings { metadata_url: Some("http://10.0.0.1".into()), ..base() }).is_err());
    let err = GcloudProvider::new(GcloudSettings { zones: vec![], ..base() }).expect_err("no zones");
    assert!(matches!(err, ProviderError::Config { .. }) && err.to_string().starts_with("gcloud: "));
}
