//! The Azure DNS adapter against test-support's stateful Azure fake (ARM record sets with ETags,
//! Entra ID's token endpoint, IMDS).

mod battery;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use battery::Harness;
use dns_provider::azure::{AzureCredential, AzureProvider, AzureSettings};
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use reqwest::Method;
use test_support::azure_fake::{AzFault, AzureFake, TokenGrant};

const ZONE: &str = "example.com";

fn settings(fake: &AzureFake, credential: AzureCredential) -> AzureSettings {
    AzureSettings {
        management_url: fake.management_url.clone(),
        authority_url: fake.authority_url.clone(),
        imds_url: fake.imds_url.clone(),
        ..AzureSettings::new(vec![ZONE.to_string()], &fake.subscription_id, &fake.resource_group, credential)
    }
}

fn secret_credential(fake: &AzureFake, secret: &str) -> AzureCredential {
    AzureCredential::ClientSecret {
        tenant_id: fake.tenant_id.clone(),
        client_id: fake.client_id.clone(),
        client_secret: secret.to_string().into(),
    }
}

fn make_provider(fake: &AzureFake, credential: AzureCredential) -> AzureProvider {
    AzureProvider::new(settings(fake, credential)).expect("azure provider")
}

struct Az {
    fake: AzureFake,
    provider: SharedProvider,
}

async fn setup_with(fake: AzureFake) -> Az {
    let provider: SharedProvider = Arc::new(make_provider(&fake, secret_credential(&fake, &fake.client_secret)));
    Az { fake, provider }
}

async fn setup() -> Az {
    setup_with(AzureFake::start().await).await
}

#[async_trait]
impl Harness for Az {
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
        self.fake.insert_txt(ZONE, &record.name, &record.value);
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        Some(Arc::new(make_provider(&self.fake, secret_credential(&self.fake, "wrong-secret"))))
    }

    async fn throttle_next(&self, n: u32) -> bool {
        self.fake.throttle_next(n, 1);
        true
    }
}

conformance_battery!(setup);

fn unique(label: &str) -> String {
    format!("_dnsauth.{label}-{:08x}.{ZONE}", rand::random::<u32>())
}

/// The record set goes out in Azure's shape: relative name, TTL 60, one TXT record holding our
/// value, our metadata; its fqdn is exactly the owner name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_set_shape() {
    let h = setup().await;
    h.provider.publish(ZONE, &Record::txt("_dnsauth.www.example.com", "tok-shape")).await.expect("publish");
    h.provider.publish(ZONE, &Record::txt(ZONE, "tok-apex")).await.expect("publish at the apex");
    let mut sets = h.fake.record_sets(ZONE);
    sets.sort_by(|a, b| a.relative.cmp(&b.relative));
    assert_eq!(sets.len(), 2);
    assert_eq!((sets[0].relative.as_str(), sets[0].fqdn()), ("@", ZONE.to_string()));
    assert_eq!(sets[1].relative, "_dnsauth.www");
    assert_eq!(sets[1].fqdn(), "_dnsauth.www.example.com");
    assert_eq!(sets[1].ttl, 60);
    assert_eq!(sets[1].txt, vec![vec!["tok-shape".to_string()]]);
    assert_eq!(sets[1].metadata["managedBy"], "dcvd");
    // a value over 255 bytes is split into strings and read back whole
    let long = "x".repeat(300);
    let name = unique("long");
    h.provider.publish(ZONE, &Record::txt(&name, &long)).await.expect("publish long");
    assert_eq!(h.provider.list(ZONE, &name, RecordType::Txt).await.expect("list"), vec![long.clone()]);
    assert_eq!(h.fake.txt_values(&name), vec![long]);
}

/// Lost update: two adapters (two dcvd instances, no shared lock) add two values to one name at
/// the same moment, many times; every value survives, thanks to `If-Match` and retries on 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_value() {
    let h = setup().await;
    let other = make_provider(&h.fake, secret_credential(&h.fake, &h.fake.client_secret));
    for round in 0..20 {
        let name = unique(&format!("race{round}"));
        let (a, b) = (Record::txt(&name, "value-a"), Record::txt(&name, "value-b"));
        let (ra, rb) = tokio::join!(h.provider.publish(ZONE, &a), other.publish(ZONE, &b));
        ra.expect("publish a");
        rb.expect("publish b");
        let mut got = h.fake.txt_values(&name);
        got.sort();
        assert_eq!(got, vec!["value-a", "value-b"], "round {round}");
        let (ra, rb) = tokio::join!(h.provider.remove(ZONE, &a), other.remove(ZONE, &b));
        ra.expect("remove a");
        rb.expect("remove b");
        assert!(h.fake.txt_values(&name).is_empty(), "round {round}");
    }
    // how often the two actually collided (timing-dependent; the next test forces it)
    println!("etag conflicts resolved in 20 rounds: {}", h.fake.precondition_failures());
}

/// The race made certain: another writer changes the record set between our read and our
/// write; the PUT's stale `If-Match` gets 412, the adapter reads again and keeps both values.
/// The same for removal: the other writer's value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_etag_is_reread_and_retried() {
    let h = setup().await;
    let name = unique("stale");
    h.fake.insert_txt(ZONE, &name, "existing");
    h.fake.interfere_with_next_write("sneaked-in");
    let ours = Record::txt(&name, "ours");
    h.provider.publish(ZONE, &ours).await.expect("publish despite the race");
    assert_eq!(h.fake.precondition_failures(), 1);
    let mut got = h.fake.txt_values(&name);
    got.sort();
    assert_eq!(got, vec!["existing", "ours", "sneaked-in"]);

    h.fake.interfere_with_next_write("late-arrival");
    h.provider.remove(ZONE, &ours).await.expect("remove despite the race");
    assert_eq!(h.fake.precondition_failures(), 2);
    let mut got = h.fake.txt_values(&name);
    got.sort();
    assert_eq!(got, vec!["existing", "late-arrival", "sneaked-in"]);

    // ours was the last value: the record set is deleted (with If-Match), racing a writer too
    let alone = unique("alone");
    let rec = Record::txt(&alone, "only");
    h.provider.publish(ZONE, &rec).await.expect("publish");
    h.fake.interfere_with_next_write("other-tool");
    h.provider.remove(ZONE, &rec).await.expect("remove");
    assert_eq!(h.fake.txt_values(&alone), vec!["other-tool"], "the other writer's value must survive");
}

/// 429 with `Retry-After` and 5xx are retried; a `Retry-After` too long to sleep comes back as a
/// retryable error carrying the server's delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors() {
    let h = setup().await;
    let name = unique("throttle");
    h.fake.throttle_next(3, 1);
    h.provider.publish(ZONE, &Record::txt(&name, "v")).await.expect("publish through 429s");
    assert_eq!(h.fake.pending_faults(), 0);
    h.fake.inject(AzFault::ServerError(503), 2);
    h.provider.remove(ZONE, &Record::txt(&name, "v")).await.expect("remove through 503s");
    assert!(h.fake.txt_values(&name).is_empty());

    h.fake.throttle_next(1, 3600);
    let err = h.provider.publish(ZONE, &Record::txt(&name, "w")).await.expect_err("throttled");
    match &err {
        ProviderError::Throttled { retry_after, .. } => assert_eq!(*retry_after, Some(Duration::from_secs(3600))),
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().starts_with("azure: "), "{err}");
}

/// Managed identity: IMDS with `Metadata: true`, system-assigned and user-assigned; an identity
/// IMDS does not know is a clear, non-retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_credential() {
    let fake = AzureFake::start().await;
    let system = make_provider(&fake, AzureCredential::ManagedIdentity { client_id: None });
    let user = make_provider(
        &fake,
        AzureCredential::ManagedIdentity { client_id: Some(fake.managed_identity_client_id.clone()) },
    );
    system.publish(ZONE, &Record::txt(unique("mi"), "system")).await.expect("system-assigned");
    user.publish(ZONE, &Record::txt(unique("mi"), "user")).await.expect("user-assigned");
    assert_eq!(fake.token_requests(), vec![TokenGrant::ManagedIdentity, TokenGrant::ManagedIdentity]);
    assert_eq!(system.credential_kind(), "managed_identity");

    let unknown = make_provider(&fake, AzureCredential::ManagedIdentity { client_id: Some("not-attached".into()) });
    let err = unknown.preflight().await.expect_err("unknown identity");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(err.to_string().starts_with("azure: managed identity token request (IMDS) refused"), "{err}");
    assert!(err.to_string().contains("Identity not found"), "{err}");
    assert!(err.to_string().contains("not-attached"), "{err}");
}

/// Workload identity: the federated token file is read on every exchange (Kubernetes rotates
/// it), sent as a jwt-bearer `client_assertion`; a refused assertion is not cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_credential() {
    let fake = AzureFake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "stale-projected-token\n").expect("write token");
    let provider = make_provider(
        &fake,
        AzureCredential::WorkloadIdentity {
            tenant_id: fake.tenant_id.clone(),
            client_id: fake.federated_client_id.clone(),
            token_file: token_file.clone(),
        },
    );
    let err = provider.publish(ZONE, &Record::txt(unique("wi"), "v")).await.expect_err("stale assertion");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(err.to_string().contains("AADSTS700213"), "{err}");
    assert!(err.to_string().contains("federated credential"), "{err}");
    assert!(!err.to_string().contains("stale-projected-token"), "the assertion leaked: {err}");

    // the kubelet rotates the file: the next exchange reads the new token
    std::fs::write(&token_file, format!("{}\n", fake.federated_token)).expect("rotate token");
    let name = unique("wi");
    provider.publish(ZONE, &Record::txt(&name, "v")).await.expect("publish with the rotated token");
    assert_eq!(fake.txt_values(&name), vec!["v"]);
    assert_eq!(fake.token_requests(), vec![TokenGrant::WorkloadIdentity]);

    std::fs::remove_file(&token_file).expect("remove");
    let missing = make_provider(
        &fake,
        AzureCredential::WorkloadIdentity {
            tenant_id: fake.tenant_id.clone(),
            client_id: fake.federated_client_id.clone(),
            token_file,
        },
    );
    let err = missing.preflight().await.expect_err("no token file");
    assert!(err.to_string().starts_with("azure: cannot read the federated token file"), "{err}");
}

/// One token serves many operations (cached until shortly before `expires_in`); a token ARM
/// refuses (revoked) is dropped and replaced once, transparently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_and_replaced_when_refused() {
    let h = setup().await;
    for i in 0..10 {
        let rec = Record::txt(unique(&format!("cache{i}")), "v");
        h.provider.publish(ZONE, &rec).await.expect("publish");
        h.provider.remove(ZONE, &rec).await.expect("remove");
    }
    let recs: Vec<Record> = (0..8).map(|i| Record::txt(unique(&format!("conc{i}")), "v")).collect();
    let results = futures_join(&h.provider, &recs).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(h.fake.token_requests(), vec![TokenGrant::ClientSecret], "one token for every operation");

    h.fake.revoke_tokens();
    h.provider.publish(ZONE, &Record::txt(unique("revoked"), "v")).await.expect("publish after revocation");
    assert_eq!(h.fake.token_requests().len(), 2, "a refused token is replaced once");
    assert_eq!(h.fake.unauthorized_count(), 1);
}

/// A token is replaced before it expires: with a 2 s lifetime it is refreshed after 1 s, so an
/// operation 2 s later fetches a new one instead of sending an expired one (which the fake
/// refuses with `ExpiredAuthenticationToken`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire() {
    let h = setup_with(AzureFake::builder().zone(ZONE).token_lifetime(Duration::from_secs(2)).start().await).await;
    h.provider.publish(ZONE, &Record::txt(unique("early"), "v")).await.expect("first publish");
    let first = h.fake.token_requests().len();
    assert!(first >= 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    h.provider.publish(ZONE, &Record::txt(unique("late"), "v")).await.expect("publish after the first token expired");
    assert!(h.fake.token_requests().len() > first, "a new token was fetched");
    assert_eq!(h.fake.unauthorized_count(), 0, "no expired token was ever sent");
}

async fn futures_join(provider: &SharedProvider, recs: &[Record]) -> Vec<Result<(), ProviderError>> {
    let mut set = tokio::task::JoinSet::new();
    for r in recs {
        let (p, r) = (provider.clone(), r.clone());
        set.spawn(async move { p.publish(ZONE, &r).await.map(|_| ()) });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

/// 100 records in one zone: the honest call counts. Azure has no multi-record-set write, so a
/// batch is one list call per record type plus one write per *owner name*.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_call_counts_for_100_records() {
    let h = setup_with(AzureFake::builder().zone(ZONE).start().await).await;
    h.provider.preflight().await.expect("warm the token");
    let mut figures = Vec::new();
    for (label, owners) in [("100 owners", 100usize), ("5 owners", 5), ("1 owner", 1)] {
        let recs: Vec<Record> = (0..100)
            .map(|i| {
                Record::txt(
                    format!("_dnsauth.{label_}-{}.{ZONE}", i % owners, label_ = label.replace(' ', "")),
                    format!("tok-{i}"),
                )
            })
            .collect();
        let before = h.fake.arm_request_count();
        h.provider.publish_batch(ZONE, &recs).await.expect("publish batch");
        let published = h.fake.arm_request_count() - before;
        for r in &recs {
            assert!(h.fake.txt_values(&r.name).contains(&r.value), "{r}");
        }
        let before = h.fake.arm_request_count();
        h.provider.remove_batch(ZONE, &recs).await.expect("remove batch");
        let removed = h.fake.arm_request_count() - before;
        assert!(recs.iter().all(|r| h.fake.txt_values(&r.name).is_empty()));
        // 1 list + one write per owner, both ways
        assert_eq!(published, 1 + owners, "{label}: publish calls");
        assert_eq!(removed, 1 + owners, "{label}: remove calls");
        figures.push(format!("{label}: publish {published} calls, remove {removed} calls"));
    }
    assert_eq!(h.fake.token_requests().len(), 1);
    println!(
        "azure, 100 TXT records in one zone (ARM calls; plus 1 token request per hour):\n  {}",
        figures.join("\n  ")
    );
}

/// List pages are followed through `nextLink`; a batch then still sees every record set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_are_followed() {
    let h = setup_with(AzureFake::builder().zone(ZONE).max_page(5).start().await).await;
    for i in 0..12 {
        h.fake.insert_txt(ZONE, &format!("_dnsauth.f{i}.{ZONE}"), "foreign");
    }
    let recs: Vec<Record> = (0..12).map(|i| Record::txt(format!("_dnsauth.f{i}.{ZONE}"), "ours")).collect();
    h.provider.publish_batch(ZONE, &recs).await.expect("publish batch");
    assert_eq!(h.fake.precondition_failures(), 0, "every etag came from the list");
    assert!(
        h.fake.requests().iter().any(|(m, p)| *m == Method::GET && p.contains("$skipToken=10")),
        "third page fetched"
    );
    for r in &recs {
        let mut got = h.fake.txt_values(&r.name);
        got.sort();
        assert_eq!(got, vec!["foreign", "ours"]);
    }
}

/// Foreign record sets keep their metadata; the TTL drops to ours so resolvers do not cache the
/// set without our value for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_record_sets_keep_their_data() {
    let h = setup().await;
    let name = unique("meta");
    h.fake.insert_txt(ZONE, &name, "v=spf1 -all");
    h.provider.publish(ZONE, &Record::txt(&name, "ours")).await.expect("publish");
    let set = h.fake.record_sets(ZONE).into_iter().find(|s| s.fqdn() == name).expect("set");
    assert_eq!(set.ttl, 60);
    h.provider.remove(ZONE, &Record::txt(&name, "ours")).await.expect("remove");
    assert_eq!(h.fake.txt_values(&name), vec!["v=spf1 -all"]);
}

/// Authorization and zone errors say what to do: the role to assign, the zone and resource group
/// to check. Neither the secret nor a token appears in any error or Debug output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_fix_and_hide_secrets() {
    let h = setup().await;
    h.fake.deny_writes(true);
    let err = h.provider.publish(ZONE, &Record::txt(unique("ro"), "v")).await.expect_err("denied");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.starts_with("azure: the identity may not do"), "{msg}");
    assert!(msg.contains("DNS Zone Contributor"), "{msg}");
    assert!(msg.contains("AuthorizationFailed"), "{msg}");
    h.fake.deny_writes(false);

    let secret = "az-wrong-secret-value-123";
    let bad = make_provider(&h.fake, secret_credential(&h.fake, secret));
    let err = bad.preflight().await.expect_err("wrong secret");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("azure: client secret token request refused (invalid_client: AADSTS7000215"), "{msg}");
    assert!(!msg.contains("Trace ID"), "only the first line of the description: {msg}");
    for text in [msg.clone(), format!("{err:?}"), format!("{bad:?}"), format!("{:?}", h.provider)] {
        assert!(!text.contains(secret) && !text.contains(&h.fake.client_secret), "secret leaked: {text}");
        assert!(!text.contains("fake-arm-token"), "token leaked: {text}");
    }

    let elsewhere = AzureProvider::new(AzureSettings {
        zones: vec!["not-in-rg.example".into()],
        ..settings(&h.fake, secret_credential(&h.fake, &h.fake.client_secret))
    })
    .expect("provider");
    let err = elsewhere.preflight().await.expect_err("zone not in the resource group");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().starts_with("azure: zone not-in-rg.example not found"), "{err}");
    assert!(err.to_string().contains("resource_group"), "{err}");
}

/// A CNAME is refused when another CNAME target owns the name; a TXT is refused where a CNAME
/// is; removing someone else's CNAME target leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_rules() {
    let h = setup().await;
    let name = unique("cn");
    h.provider.publish(ZONE, &Record::cname(&name, "a.dcv.digicert.com")).await.expect("publish cname");
    let err = h.provider.publish(ZONE, &Record::cname(&name, "b.dcv.digicert.com")).await.expect_err("other target");
    assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
    let err = h.provider.publish(ZONE, &Record::txt(&name, "t")).await.expect_err("txt at a cname");
    assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
    h.provider.remove(ZONE, &Record::cname(&name, "b.dcv.digicert.com")).await.expect("remove other target");
    assert_eq!(h.fake.values(&name, "CNAME"), vec!["a.dcv.digicert.com"]);
    h.provider.remove(ZONE, &Record::cname(&name, "a.dcv.digicert.com")).await.expect("remove ours");
    assert!(h.fake.values(&name, "CNAME").is_empty());
}

/// Settings are validated without network: https only (loopback, and IMDS's link-local address,
/// excepted), ids present, a non-empty secret.
#[test]
fn settings_are_validated() {
    let cred = AzureCredential::ClientSecret {
        tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret: "s".to_string().into(),
    };
    let base = AzureSettings::new(vec![ZONE.into()], "sub", "rg", cred.clone());
    assert!(AzureProvider::new(base.clone()).is_ok());
    assert!(
        AzureProvider::new(AzureSettings { management_url: "http://management.example".into(), ..base.clone() })
            .is_err()
    );
    assert!(AzureProvider::new(AzureSettings { resource_group: String::new(), ..base.clone() }).is_err());
    assert!(AzureProvider::new(AzureSettings { zones: Vec::new(), ..base.clone() }).is_err());
    let empty = AzureCredential::ClientSecret {
        tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret: String::new().into(),
    };
    let err = AzureProvider::new(AzureSettings { credential: empty, ..base }).expect_err("empty secret");
    assert!(matches!(err, ProviderError::Config { .. }));
    assert!(err.to_string().starts_with("azure: "), "{err}");
}
