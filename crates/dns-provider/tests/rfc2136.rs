//! The `rfc2136` adapter against a real BIND 9 primary (TSIG hmac-sha256, allow-update): the
//! conformance battery, read back over DNS with `dig`, plus the adapter's own error paths.

mod battery;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use battery::Harness;
use dns_provider::rfc2136::{Rfc2136Provider, Rfc2136Settings};
use dns_provider::{DnsProvider, ProviderError, Record, RecordType, SharedProvider};
use secrecy::SecretString;
use test_support::bind::Bind;

const ZONE: &str = "rfc2136.test";

struct BindHarness {
    bind: Arc<Bind>,
    provider: SharedProvider,
}

fn settings(bind: &Bind, secret_b64: &str) -> Rfc2136Settings {
    Rfc2136Settings {
        server: bind.primary_addr(),
        zones: vec![ZONE.into()],
        tsig_key_name: bind.tsig().name.clone(),
        tsig_algorithm: bind.tsig().algorithm.clone(),
        tsig_secret: SecretString::from(secret_b64.to_string()),
        timeout: Duration::from_secs(5),
    }
}

fn provider_for(bind: &Bind) -> Rfc2136Provider {
    // Read the secret the way the daemon does: from the secret file, trailing newline included.
    let secret = std::fs::read_to_string(bind.tsig_secret_file()).expect("read the TSIG secret file");
    Rfc2136Provider::new(settings(bind, &secret)).expect("valid settings")
}

/// A valid base64 secret that is not the server's.
const WRONG_SECRET: &str = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZy0hIQ==";

async fn setup() -> BindHarness {
    let bind = Arc::new(tokio::task::spawn_blocking(|| Bind::start(&[ZONE])).await.expect("start BIND"));
    let provider = Arc::new(provider_for(&bind));
    BindHarness { bind, provider }
}

impl BindHarness {
    async fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let (bind, name, rtype) = (self.bind.clone(), name.to_string(), rtype.to_string());
        tokio::task::spawn_blocking(move || bind.query(bind.primary_addr(), &name, &rtype)).await.expect("dig")
    }

    async fn nsupdate(&self, commands: String) {
        let bind = self.bind.clone();
        tokio::task::spawn_blocking(move || bind.nsupdate(&format!("zone {ZONE}\n{commands}")))
            .await
            .expect("nsupdate");
    }
}

#[async_trait]
impl Harness for BindHarness {
    fn provider(&self) -> SharedProvider {
        self.provider.clone()
    }

    fn zone(&self) -> String {
        ZONE.into()
    }

    async fn read_back(&self, name: &str, rtype: RecordType) -> Vec<String> {
        self.dig(name, rtype.as_str()).await
    }

    async fn add_foreign(&self, record: &Record) {
        let data = match record.rtype {
            RecordType::Txt => format!("\"{}\"", record.value),
            RecordType::Cname => format!("{}.", record.value),
        };
        self.nsupdate(format!("update add {}. {} {} {data}", record.name, record.ttl, record.rtype)).await;
    }

    fn with_wrong_credentials(&self) -> Option<SharedProvider> {
        Some(Arc::new(Rfc2136Provider::new(settings(&self.bind, WRONG_SECRET)).expect("valid settings")))
    }

    async fn throttle_next(&self, _n: u32) -> bool {
        false // BIND does not throttle updates
    }
}

conformance_battery!(setup);

/// A wrong secret is a non-retryable Auth error naming the key, without the secret; preflight
/// passes with the right key and fails the same way with the wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_and_wrong_key() {
    let h = setup().await;
    h.provider.preflight().await.expect("preflight with the right key");
    let bad = Rfc2136Provider::new(settings(&h.bind, WRONG_SECRET)).expect("settings");
    let err = bad.preflight().await.expect_err("preflight with a wrong secret");
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("rfc2136: server 127.0.0.1:"), "{text}");
    assert!(text.contains("refused the TSIG key \"dcvd\": check tsig_key_name/secret and allow-update"), "{text}");
    assert!(!text.contains(WRONG_SECRET) && !text.contains(&h.bind.tsig().secret_b64), "secret leaked: {text}");

    // an unknown key name is refused the same way
    let mut s = settings(&h.bind, &h.bind.tsig().secret_b64);
    s.tsig_key_name = "someone-else".into();
    let err = Rfc2136Provider::new(s).expect("settings").preflight().await.expect_err("unknown key");
    assert!(matches!(err, ProviderError::Auth { .. }) && err.to_string().contains("\"someone-else\""), "{err}");
}

/// `list` reads back our value and a foreign one; a value longer than 255 bytes is published as
/// several strings and read back whole, by the adapter and by dig.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_long_values() {
    let h = setup().await;
    let name = format!("_dnsauth.list.{ZONE}");
    h.add_foreign(&Record::txt(&name, "foreign")).await;
    let long = "L".repeat(400);
    h.provider.publish(ZONE, &Record::txt(&name, &long)).await.expect("publish long value");
    let mut listed = h.provider.list(ZONE, &name, RecordType::Txt).await.expect("list");
    listed.sort();
    assert_eq!(listed, [long.clone(), "foreign".to_string()]);
    let mut dug = h.dig(&name, "TXT").await;
    dug.sort();
    assert_eq!(dug, [long, "foreign".to_string()]);
    assert!(h.provider.list(ZONE, &format!("absent.{ZONE}"), RecordType::Txt).await.expect("list absent").is_empty());
}

/// A TXT where a CNAME lives and a CNAME to another target are conflicts, and leave the
/// existing CNAME alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_owned_names_conflict() {
    let h = setup().await;
    let name = format!("_dnsauth.delegated.{ZONE}");
    h.add_foreign(&Record::cname(&name, "_dnsauth.elsewhere.example")).await;
    let err = h.provider.publish(ZONE, &Record::txt(&name, "tok")).await.expect_err("TXT at a CNAME");
    assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("the name is a CNAME"), "{err}");
    let err = h.provider.publish(ZONE, &Record::cname(&name, "x.dcv.digicert.com")).await.expect_err("other CNAME");
    assert!(err.to_string().contains("is already a CNAME to _dnsauth.elsewhere.example"), "{err}");
    assert_eq!(h.dig(&name, "CNAME").await, ["_dnsauth.elsewhere.example"]);
}

/// A zone the server does not serve, and a server that does not answer, give clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_zone_and_dead_server() {
    let h = setup().await;
    let mut s = settings(&h.bind, &h.bind.tsig().secret_b64);
    s.zones = vec!["not-served.test".into()];
    let p = Rfc2136Provider::new(s).expect("settings");
    let err =
        p.publish("not-served.test", &Record::txt("_dnsauth.not-served.test", "v")).await.expect_err("foreign zone");
    assert!(matches!(err, ProviderError::ZoneNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("is not authoritative (primary) for it"), "{err}");

    let dead = test_support::ports::free_port();
    let mut s = settings(&h.bind, &h.bind.tsig().secret_b64);
    s.server = format!("127.0.0.1:{dead}").parse().expect("addr");
    s.timeout = Duration::from_millis(500);
    let err = Rfc2136Provider::new(s)
        .expect("settings")
        .publish(ZONE, &Record::txt(format!("_dnsauth.{ZONE}"), "v"))
        .await
        .expect_err("nothing listens");
    assert!(err.is_retryable(), "an unreachable server is transient: {err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{dead}")), "{err}");
}

/// A large TXT batch goes in a few UPDATE messages (over TCP: too large for UDP) and is
/// removed the same way; a batch touching a CNAME-owned name reports the conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches() {
    let h = setup().await;
    let recs: Vec<Record> =
        (0..250).map(|i| Record::txt(format!("_dnsauth.b{i}.{ZONE}"), format!("tok-{i}-{}", "x".repeat(40)))).collect();
    h.provider.publish_batch(ZONE, &recs).await.expect("publish batch");
    for r in [&recs[0], &recs[99], &recs[100], &recs[249]] {
        assert_eq!(h.dig(&r.name, "TXT").await, std::slice::from_ref(&r.value), "{}", r.name);
    }
    h.provider.remove_batch(ZONE, &recs).await.expect("remove batch");
    for r in [&recs[0], &recs[249]] {
        assert!(h.dig(&r.name, "TXT").await.is_empty(), "{}", r.name);
    }

    let cname_owned = format!("_dnsauth.owned.{ZONE}");
    h.add_foreign(&Record::cname(&cname_owned, "target.example")).await;
    let batch = [Record::txt(format!("_dnsauth.free.{ZONE}"), "tok-free"), Record::txt(&cname_owned, "tok")];
    let err = h.provider.publish_batch(ZONE, &batch).await.expect_err("a name of the batch is a CNAME");
    assert!(matches!(err, ProviderError::Conflict { .. }) && err.to_string().contains(&cname_owned), "{err}");
}
