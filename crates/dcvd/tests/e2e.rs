//! End to end: the real `dcvd` binary and the real `certcentral-sim` binary, one test per DNS
//! provider, against real servers or stateful fakes: moto (Route53) and the Cloudflare, Azure,
//! Cloud DNS and acme-dns fakes behind DNS front-ends, BIND for RFC 2136, an exec hook calling
//! `nsupdate` against BIND, and PowerDNS Authoritative (its HTTP API and its own DNS listener).
//!
//! Each test asserts what an operator cares about: the unit ends valid at the simulator, with the
//! minimum CertCentral calls (2 per DV order: token + one check; 2 per OV/EV domain: submit + one
//! check) and no premature check; the exact records were published (owner name and value); none
//! is left behind; and no secret appears anywhere in dcvd's output.

mod e2e_common;

use std::sync::Arc;
use std::time::Duration;

use certcentral_sim::{DcvMethod, NewDomain, NewOrder};
use e2e_common::{
    Dcvd, Scope, SimOpts, SimProc, dcv_records, eventually, order_toml, rfc2136_provider, states, watch_zone_until_exit,
};
use test_support::acmedns_fake::AcmeDnsFake;
use test_support::azure_fake::{AzureFake, TokenGrant};
use test_support::bind::{Bind, ZoneSpec};
use test_support::cloudflare_fake::CloudflareFake;
use test_support::frontend::Frontend;
use test_support::gcloud_fake::{GcloudFake, Role};
use test_support::moto::Moto;
use test_support::powerdns::PowerDns;

const ONCE_LIMIT: Duration = Duration::from_secs(120);
/// Lag of the second name server of every front-end: dcvd must wait for it.
const LAG: Duration = Duration::from_millis(400);

/// AWS credentials for dcvd's Route53 adapter (moto accepts any); the secret is searched for in
/// the log afterwards.
fn aws_env(dcvd: &mut Dcvd) -> String {
    let secret = format!("awsSecret{:032x}", rand::random::<u128>());
    dcvd.env("AWS_ACCESS_KEY_ID", "AKIAE2ETESTKEY000001");
    dcvd.env("AWS_SECRET_ACCESS_KEY", &secret);
    dcvd.env("AWS_REGION", test_support::moto::REGION);
    secret
}

fn route53_provider(name: &str, moto: &Moto, zones: &[&str]) -> String {
    format!(
        "[providers.{name}]\ntype = \"route53\"\nzones = {zones:?}\nregion = \"{}\"\nendpoint_url = \"{}\"\n",
        test_support::moto::REGION,
        moto.endpoint_url()
    )
}

fn cloudflare_provider(name: &str, dcvd: &Dcvd, fake: &CloudflareFake, zones: &[&str]) -> String {
    let token = dcvd.secret_file(&format!("{name}-token"), &fake.token);
    format!(
        "[providers.{name}]\ntype = \"cloudflare\"\nzones = {zones:?}\napi_token_file = \"{}\"\nbase_url = \"{}\"\n",
        token.display(),
        fake.base_url
    )
}

/// A `gcloud` provider section with a service-account key file whose `token_uri` is the fake's.
fn gcloud_provider(name: &str, dcvd: &Dcvd, fake: &GcloudFake, key_json: &str, zones: &[&str]) -> String {
    let key = dcvd.secret_file(&format!("{name}-key.json"), key_json);
    format!(
        "[providers.{name}]\ntype = \"gcloud\"\nproject = \"{}\"\nzones = {zones:?}\ncredentials_file = \"{}\"\napi_url = \"{}\"\n",
        fake.project,
        key.display(),
        fake.api_url
    )
}

/// Asserts the unit list of `dcvd status --json`: exactly `ids`, every one cleaned up.
fn assert_all_cleaned_up(dcvd: &Dcvd, ids: &[u64]) {
    let rows = dcvd.status_json();
    let got = states(&rows);
    let want: std::collections::BTreeMap<u64, String> = ids.iter().map(|id| (*id, "cleaned_up".to_string())).collect();
    assert_eq!(got, want, "dcvd status --json: {rows:#?}");
}

const R53_NAMES: [&str; 3] = ["a.r53.test", "www.a.r53.test", "*.b.r53.test"];

/// Route53 (moto), a DV TXT order of three names under the default validation scope (base
/// domains): all three are validated at the base domain, so exactly one record,
/// `_dnsauth.r53.test`, carries the random value; the lagging second name server is waited for,
/// the RRset is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_dv_txt_order() {
    route53_dv_txt(
        Scope::Base,
        1001,
        &["_dnsauth.r53.test"],
        &["_dnsauth.a.r53.test", "_dnsauth.www.a.r53.test", "_dnsauth.b.r53.test"],
    )
    .await;
}

/// The same order with the exact scope: one record per distinct name. `www.a` is no longer
/// covered by `a`, and `*.b` is validated at `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_dv_txt_order_exact_scope() {
    route53_dv_txt(
        Scope::Exact,
        1002,
        &["_dnsauth.a.r53.test", "_dnsauth.www.a.r53.test", "_dnsauth.b.r53.test"],
        &["_dnsauth.r53.test", "_dnsauth.*.b.r53.test"],
    )
    .await;
}

async fn route53_dv_txt(scope: Scope, id: u64, owners: &[&str], not_owners: &[&str]) {
    let moto = Moto::start().await;
    let zone_id = moto.create_hosted_zone("r53.test").await;
    let fe = Frontend::builder().route53(&moto, &zone_id, "r53.test").lag(LAG).start().await;
    let sim = SimProc::start(SimOpts {
        dns: fe.addrs(),
        orders: vec![NewOrder::new(id, &R53_NAMES)],
        seed: 11,
        extra: scope.sim_args(),
        ..SimOpts::default()
    });
    let mut dcvd = Dcvd::new(&sim);
    let aws_secret = aws_env(&mut dcvd);
    let rest = format!(
        "{}\n{}",
        route53_provider("aws", &moto, &["r53.test"]),
        scope.order_toml(id, "dns-txt-token", &R53_NAMES)
    );
    dcvd.write_config(&dcvd.config(&sim, fe.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(id).await;
    assert_eq!(order.dcv_status, "valid", "{log}");
    // Route 53's INSYNC is logged before the unit is propagated (polling starts after it).
    let insync = log.find("route53 change INSYNC").unwrap_or_else(|| panic!("no INSYNC line: {log}"));
    let propagated = log.find("state=\"propagated\"").unwrap_or_else(|| panic!("no propagated state: {log}"));
    assert!(insync < propagated, "INSYNC after propagation: {log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(id).await, 2, "token + one check: {:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0, "a check before every name server served the record");
    for name in owners {
        assert_eq!(
            fe.store().additions(name, &order.dcv_random_value),
            1,
            "{name} must have held the random value once ({scope:?} scope)"
        );
    }
    for name in not_owners {
        assert_eq!(fe.store().additions(name, &order.dcv_random_value), 0, "{name}: DigiCert does not look there");
    }
    fe.wait_synced().await;
    assert!(fe.added_more_than_once().is_empty(), "published twice: {:?}", fe.added_more_than_once());
    assert!(fe.store().is_empty(), "records left in Route53: {:?}", fe.store().snapshot());
    assert_eq!(moto.rejected_changes(), 0, "dcvd raced itself");
    assert!(
        moto.change_requests() <= 4,
        "publish + remove in one batch each: {} change requests",
        moto.change_requests()
    );
    assert_all_cleaned_up(&dcvd, &[id]);
    dcvd.assert_no_secrets(&[("AWS secret key", &aws_secret)]);
}

/// Cloudflare (the fake) with a DV CNAME order of two names: under the default scope one
/// `_dnsauth.cf.test` CNAME `<random value>.dcv.digicert.com` at their base domain, then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_dv_cname_order() {
    let fake = Arc::new(CloudflareFake::builder().zone("cf.test").start().await);
    let fe = Frontend::builder().cloudflare(fake.clone(), "cf.test").lag(LAG).start().await;
    let sim = SimProc::start(SimOpts {
        dns: fe.addrs(),
        orders: vec![NewOrder::new(2001, &["a.cf.test", "b.cf.test"]).with_method(DcvMethod::DnsCnameToken)],
        seed: 12,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let rest = format!(
        "{}\n{}",
        cloudflare_provider("cf", &dcvd, &fake, &["cf.test"]),
        order_toml(2001, "dns-cname-token", &["a.cf.test", "b.cf.test"])
    );
    dcvd.write_config(&dcvd.config(&sim, fe.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(2001).await;
    assert_eq!(order.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(2001).await, 2, "token + one check: {:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0);
    let target = format!("{}.dcv.digicert.com", order.dcv_random_value.to_ascii_lowercase());
    assert_eq!(
        fe.store().additions("_dnsauth.cf.test", &target),
        1,
        "_dnsauth.cf.test must have been a CNAME to {target}"
    );
    for name in ["_dnsauth.a.cf.test", "_dnsauth.b.cf.test"] {
        assert_eq!(fe.store().additions(name, &target), 0, "{name}: DigiCert looks at the base domain");
    }
    fe.wait_synced().await;
    assert!(fe.added_more_than_once().is_empty(), "published twice: {:?}", fe.added_more_than_once());
    assert!(fe.store().is_empty(), "records left: {:?}", fe.store().snapshot());
    let left: Vec<_> = fake.records("cf.test").into_iter().filter(|r| r.rtype == "TXT" || r.rtype == "CNAME").collect();
    assert!(left.is_empty(), "records left in Cloudflare: {left:?}");
    assert_all_cleaned_up(&dcvd, &[2001]);
    dcvd.assert_no_secrets(&[("Cloudflare token", &fake.token)]);
}

fn azure_provider(name: &str, dcvd: &Dcvd, fake: &AzureFake, zones: &[&str]) -> String {
    let secret = dcvd.secret_file(&format!("{name}-client-secret"), &fake.client_secret);
    format!(
        "[providers.{name}]\ntype = \"azure\"\nzones = {zones:?}\nsubscription_id = \"{}\"\n\
         resource_group = \"{}\"\nauth = \"client_secret\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"{}\"\nmanagement_url = \"{}\"\nauthority_url = \"{}\"\n",
        fake.subscription_id,
        fake.resource_group,
        fake.tenant_id,
        fake.client_id,
        secret.display(),
        fake.management_url,
        fake.authority_url,
    )
}

/// Azure DNS (the fake, client-secret credential) with a DV TXT order over two zones of one
/// provider; the names are registrable domains, so the owners are the same under either
/// validation scope: `*.example.com` goes under `example.com`, one record per zone, each
/// merged into its record set with an etag and removed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_dv_txt_order() {
    const NAMES: [&str; 3] = ["example.com", "*.example.com", "example.net"];
    let fake = Arc::new(AzureFake::builder().zone("example.com").zone("example.net").start().await);
    let mut fe = Frontend::builder();
    for zone in ["example.com", "example.net"] {
        let f = fake.clone();
        fe = fe.custom(zone, move || f.entries(zone));
    }
    let fe = fe.lag(LAG).start().await;
    let sim = SimProc::start(SimOpts {
        dns: fe.addrs(),
        orders: vec![NewOrder::new(4001, &NAMES)],
        seed: 14,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let rest = format!(
        "{}\n{}",
        azure_provider("az", &dcvd, &fake, &["example.com", "example.net"]),
        order_toml(4001, "dns-txt-token", &NAMES)
    );
    dcvd.write_config(&dcvd.config(&sim, fe.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(4001).await;
    assert_eq!(order.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(4001).await, 2, "token + one check: {:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0, "a check before every name server served the record");
    for name in ["_dnsauth.example.com", "_dnsauth.example.net"] {
        assert_eq!(
            fe.store().additions(name, &order.dcv_random_value),
            1,
            "{name} must have held the random value once"
        );
    }
    for name in ["_dnsauth.*.example.com", "_dnsauth.example.com.example.com", "example.com"] {
        assert_eq!(fe.store().additions(name, &order.dcv_random_value), 0, "{name}: no record belongs there");
    }
    fe.wait_synced().await;
    assert!(fe.added_more_than_once().is_empty(), "published twice: {:?}", fe.added_more_than_once());
    assert!(fe.store().is_empty(), "records left: {:?}", fe.store().snapshot());
    for zone in ["example.com", "example.net"] {
        assert!(
            fake.record_sets(zone).is_empty(),
            "record sets left in Azure zone {zone}: {:?}",
            fake.record_sets(zone)
        );
    }
    assert_eq!(fake.precondition_failures(), 0, "dcvd raced itself");
    assert_eq!(fake.token_requests(), vec![TokenGrant::ClientSecret], "one token for the whole run");
    assert_all_cleaned_up(&dcvd, &[4001]);
    let tokens = fake.issued_tokens();
    let mut secrets = vec![("Azure client secret", fake.client_secret.as_str())];
    secrets.extend(tokens.iter().map(|t| ("Azure access token", t.as_str())));
    dcvd.assert_no_secrets(&secrets);
}

/// RFC 2136 against BIND with a lagging secondary: dcvd publishes on the primary (one record at
/// the base domain for both names), makes no DigiCert check while the secondary lags, and
/// finishes once the test releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_dv_txt_with_lagging_secondary() {
    let bind = Bind::builder().zone(ZoneSpec::new("bind.test")).with_lagging_secondary().start();
    let secondary = bind.secondary_addr().expect("secondary");
    let sim = SimProc::start(SimOpts {
        dns: vec![bind.primary_addr(), secondary],
        orders: vec![NewOrder::new(3001, &["www.bind.test", "*.app.bind.test"])],
        seed: 13,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let rest = format!(
        "{}\n{}",
        rfc2136_provider("bind", &bind, &["bind.test"]),
        order_toml(3001, "dns-txt-token", &["www.bind.test", "*.app.bind.test"])
    );
    dcvd.write_config(&dcvd.config(&sim, bind.port(), &rest));
    let child = dcvd.spawn(&["once"]);
    let value = sim.order(3001).await.dcv_random_value;
    eventually(Duration::from_secs(60), "the record on the primary", || async {
        !dcv_records(bind.primary_addr(), "bind.test", &[]).is_empty()
    })
    .await;
    // A moment for a (wrong) second record to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        dcv_records(bind.primary_addr(), "bind.test", &[]),
        vec![("_dnsauth.bind.test".to_string(), "TXT".to_string(), value.clone())],
        "exact owner name (both names at their base domain) and value"
    );
    // A moment with the secondary lagging: no check may happen, and dcvd says whom it waits for
    // (every 4 x poll_max = 2 s here; a minute by default).
    eventually(Duration::from_secs(20), "a 'still waiting for propagation' line", || async {
        dcvd.log().lines().any(|l| {
            l.contains("still waiting for propagation")
                && l.contains(&secondary.ip().to_string())
                && l.contains("unit_id=3001")
        })
    })
    .await;
    let stats = sim.stats().await;
    assert!(stats.checks.is_empty(), "dcvd checked while the secondary lagged: {:?}", stats.checks);
    bind.refresh_secondary("bind.test");
    let status = dcvd.wait(child, ONCE_LIMIT, "dcvd once").await;
    let log = dcvd.assert_success(status, "dcvd once");

    assert_eq!(sim.order(3001).await.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(3001).await, 2, "{:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0);
    assert!(dcv_records(bind.primary_addr(), "bind.test", &[]).is_empty(), "records left on the primary");
    bind.refresh_secondary("bind.test");
    bind.wait_secondary_synced("bind.test", Duration::from_secs(10));
    assert!(dcv_records(secondary, "bind.test", &[]).is_empty(), "records left on the secondary");
    assert_all_cleaned_up(&dcvd, &[3001]);
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}

/// Waits until the primary holds `n` TXT/CNAME records in `zones` (the secondary lags, so dcvd
/// is waiting), returns them, then releases the secondary.
/// Fails at once (with the log) when dcvd exits before.
async fn hold_until_published(
    bind: &Bind,
    zones: &[&str],
    n: usize,
    dcvd: &Dcvd,
    child: &mut std::process::Child,
) -> Vec<(String, String, String)> {
    let all = || zones.iter().flat_map(|z| dcv_records(bind.primary_addr(), z, &[])).collect::<Vec<_>>();
    let start = std::time::Instant::now();
    while all().len() < n {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "dcvd exited ({status}) before publishing {n} records; log:\n{}",
                e2e_common::tail(&dcvd.log(), 100)
            );
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{n} records never appeared on the primary");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = all();
    for z in zones {
        bind.refresh_secondary(z);
    }
    records
}

/// The hook the exec provider runs: one `nsupdate` per record, TSIG key from a file.
const HOOK: &str = r#"#!/bin/sh
# dcvd exec hook for the e2e test: present or clean up one record with nsupdate.
# args: SERVER PORT KEYFILE
set -eu
server="$1"; port="$2"; keyfile="$3"
case "$DCVD_TYPE" in
  TXT) data="\"$DCVD_VALUE\"" ;;
  CNAME) data="$DCVD_VALUE." ;;
  *) echo "hook: unsupported type $DCVD_TYPE" >&2; exit 1 ;;
esac
case "$DCVD_ACTION" in
  present) op="update add $DCVD_NAME. $DCVD_TTL $DCVD_TYPE $data" ;;
  cleanup) op="update delete $DCVD_NAME. $DCVD_TYPE $data" ;;
  *) echo "hook: unknown action $DCVD_ACTION" >&2; exit 1 ;;
esac
printf 'server %s %s\nzone %s.\n%s\nsend\n' "$server" "$port" "$DCVD_ZONE" "$op" | nsupdate -k "$keyfile" || exit 75
echo "hook: $DCVD_ACTION $DCVD_NAME $DCVD_TYPE" >&2
"#;

/// OV/EV domains submitted for validation, through the exec provider (a hook running
/// `nsupdate`): the token the submission returns is used (no extra token request), TXT and
/// CNAME forms both validate, and the hook's cleanup leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_hook_ovev_domains_with_submit() {
    let bind = Bind::builder().zone(ZoneSpec::new("hook.test")).with_lagging_secondary().start();
    let sim = SimProc::start(SimOpts {
        dns: vec![bind.primary_addr(), bind.secondary_addr().expect("secondary")],
        domains: vec![
            NewDomain::new(4001, "corp.hook.test"),
            NewDomain::new(4002, "shop.hook.test").with_method(DcvMethod::DnsCnameToken),
        ],
        seed: 14,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let hook = dcvd.dir.path().join("dns-hook.sh");
    std::fs::write(&hook, HOOK).unwrap();
    e2e_common::set_mode(&hook, 0o755);
    let rest = format!(
        "[providers.hook]\ntype = \"exec\"\ncommand = [\"{}\", \"127.0.0.1\", \"{}\", \"{}\"]\nzones = [\"hook.test\"]\ntimeout = \"20s\"\n\n\
         [[domain]]\nid = 4001\nname = \"corp.hook.test\"\nmethod = \"dns-txt-token\"\nsubmit = [\"ov\", \"ev\"]\n\n\
         [[domain]]\nid = 4002\nname = \"shop.hook.test\"\nmethod = \"dns-cname-token\"\nsubmit = [\"ov\"]\n",
        hook.display(),
        bind.port(),
        bind.tsig_key_file().display()
    );
    dcvd.write_config(&dcvd.config(&sim, bind.port(), &rest));
    let mut child = dcvd.spawn(&["once"]);
    let seen = hold_until_published(&bind, &["hook.test"], 2, &dcvd, &mut child).await;
    let (status, later) = watch_zone_until_exit(&dcvd, child, bind.primary_addr(), "hook.test", ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");
    let seen: std::collections::BTreeSet<_> = seen.into_iter().chain(later).collect();

    let d1 = sim.domain(4001).await;
    let d2 = sim.domain(4002).await;
    assert!(d1.dcv_valid && d2.dcv_valid, "{d1:?}\n{d2:?}\n{log}");
    let (t1, t2) = (d1.token.clone().expect("token 4001"), d2.token.clone().expect("token 4002"));
    let want: std::collections::BTreeSet<_> = [
        ("_dnsauth.corp.hook.test".to_string(), "TXT".to_string(), t1),
        (
            "_dnsauth.shop.hook.test".to_string(),
            "CNAME".to_string(),
            format!("{}.dcv.digicert.com", t2.to_ascii_lowercase()),
        ),
    ]
    .into();
    assert_eq!(seen, want, "what the hook published (seen in BIND during the run)");
    assert_eq!(d1.validations.keys().collect::<Vec<_>>(), ["ev", "ov"], "{d1:?}");
    assert_eq!(d2.validations.keys().collect::<Vec<_>>(), ["ov"], "{d2:?}");
    let stats = sim.stats().await;
    for id in [4001, 4002] {
        assert_eq!(sim.domain_calls(id).await, 2, "submit + one check for {id}: {:?}", stats.domain_calls);
    }
    assert_eq!(stats.tokens_issued, 2, "a token request after the submission would invalidate its token");
    assert_eq!(stats.premature_checks, 0);
    assert!(dcv_records(bind.primary_addr(), "hook.test", &[]).is_empty(), "records left in BIND");
    assert_all_cleaned_up(&dcvd, &[4001, 4002]);
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}

/// Mixed zones, base scope: `shop.mixed.test` is its own zone at Cloudflare, the base domain
/// `mixed.test` is at Route53. DigiCert validates both names at `mixed.test`, so the one record
/// goes through Route53 although a name lives at Cloudflare: records are routed by owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_zones_base_scope_routes_by_owner() {
    mixed_zones(Scope::Base, 5001, &["_dnsauth.mixed.test"], &[]).await;
}

/// Mixed zones, exact scope: each name at its own zone's provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_zones_exact_scope_uses_both_providers() {
    mixed_zones(Scope::Exact, 5002, &["_dnsauth.api.mixed.test"], &["_dnsauth.www.shop.mixed.test"]).await;
}

/// One DV order for `api.mixed.test` and `www.shop.mixed.test`; `at_route53` and
/// `at_cloudflare` are the owners that must appear through each provider (and no other).
async fn mixed_zones(scope: Scope, id: u64, at_route53: &[&str], at_cloudflare: &[&str]) {
    let moto = Moto::start().await;
    let zone_id = moto.create_hosted_zone("mixed.test").await;
    let fake = Arc::new(CloudflareFake::builder().zone("shop.mixed.test").start().await);
    let fe = Frontend::builder()
        .route53(&moto, &zone_id, "mixed.test")
        .cloudflare(fake.clone(), "shop.mixed.test")
        .lag(LAG)
        .start()
        .await;
    let names = ["api.mixed.test", "www.shop.mixed.test"];
    let sim = SimProc::start(SimOpts {
        dns: fe.addrs(),
        orders: vec![NewOrder::new(id, &names)],
        seed: 15,
        extra: scope.sim_args(),
        ..SimOpts::default()
    });
    let mut dcvd = Dcvd::new(&sim);
    let aws_secret = aws_env(&mut dcvd);
    let rest = format!(
        "{}\n{}\n{}",
        route53_provider("aws", &moto, &["mixed.test"]),
        cloudflare_provider("cf", &dcvd, &fake, &["shop.mixed.test"]),
        scope.order_toml(id, "dns-txt-token", &names)
    );
    dcvd.write_config(&dcvd.config(&sim, fe.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(id).await;
    assert_eq!(order.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(id).await, 2, "{:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0);
    let mut want: Vec<String> = at_route53.iter().chain(at_cloudflare).map(|n| (*n).to_string()).collect();
    want.sort();
    assert_eq!(fe.store().names_added(&order.dcv_random_value), want, "exact owner names ({scope:?} scope)");
    assert_eq!(moto.change_requests() > 0, !at_route53.is_empty(), "Route53 used iff it serves an owner");
    assert_eq!(
        fake.count(reqwest::Method::POST, "/dns_records") > 0,
        !at_cloudflare.is_empty(),
        "Cloudflare used iff it serves an owner"
    );
    fe.wait_synced().await;
    assert!(fe.added_more_than_once().is_empty(), "published twice: {:?}", fe.added_more_than_once());
    assert!(fe.store().is_empty(), "records left: {:?}", fe.store().snapshot());
    assert_all_cleaned_up(&dcvd, &[id]);
    dcvd.assert_no_secrets(&[("AWS secret key", &aws_secret), ("Cloudflare token", &fake.token)]);
}

/// Delegated validation: `_dnsauth.example.test` is a CNAME to `_dnsauth.delegated.test`: the
/// TXT for `www.example.test` (base scope: validated at `example.test`) goes to the CNAME's
/// target in another zone, the operator's CNAMEs stay untouched. Here dcvd's provider serves both
/// zones; see the next tests for credentials on the target only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_validation_follows_the_cname() {
    delegated_validation(Scope::Base, &["example.test", "delegated.test"], 6001, "_dnsauth.delegated.test").await;
}

/// The common reason for delegating `_dnsauth` is to give dcvd credentials for the delegation
/// target's zone only: the unit names that provider (`provider = "bind"`), the configuration
/// accepts it with a warning, and the engine publishes at the CNAME's target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_validation_with_credentials_for_the_target_zone_only() {
    delegated_validation(Scope::Base, &["delegated.test"], 6002, "_dnsauth.delegated.test").await;
}

/// Exact scope: DigiCert looks at `_dnsauth.www.example.test`, whose own CNAME points elsewhere
/// (`_dnsauth-www.delegated.test`); the base domain's delegation is not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_validation_exact_scope_follows_the_names_own_cname() {
    delegated_validation(Scope::Exact, &["delegated.test"], 6003, "_dnsauth-www.delegated.test").await;
}

async fn delegated_validation(scope: Scope, provider_zones: &[&str], id: u64, target: &str) {
    let bind = Bind::builder()
        .zone(
            ZoneSpec::new("example.test")
                .with_line("_dnsauth 60 IN CNAME _dnsauth.delegated.test.")
                .with_line("_dnsauth.www 60 IN CNAME _dnsauth-www.delegated.test."),
        )
        .zone(ZoneSpec::new("delegated.test"))
        .with_lagging_secondary()
        .start();
    let sim = SimProc::start(SimOpts {
        dns: vec![bind.primary_addr(), bind.secondary_addr().expect("secondary")],
        orders: vec![NewOrder::new(id, &["www.example.test"])],
        seed: id,
        extra: scope.sim_args(),
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let mut order = scope.order_toml(id, "dns-txt-token", &["www.example.test"]);
    if !provider_zones.contains(&"example.test") {
        order.push_str("provider = \"bind\"\n");
    }
    let rest = format!("{}\n{}", rfc2136_provider("bind", &bind, provider_zones), order);
    dcvd.write_config(&dcvd.config(&sim, bind.port(), &rest));
    let value = sim.order(id).await.dcv_random_value;
    let mut child = dcvd.spawn(&["once"]);
    let seen = hold_until_published(&bind, &["delegated.test"], 1, &dcvd, &mut child).await;
    let (status, later) = watch_zone_until_exit(&dcvd, child, bind.primary_addr(), "delegated.test", ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");
    let seen: std::collections::BTreeSet<_> = seen.into_iter().chain(later).collect();
    let want: std::collections::BTreeSet<_> = [(target.to_string(), "TXT".to_string(), value.clone())].into();
    assert_eq!(seen, want, "the TXT must appear at the CNAME's target, and nothing else:\n{log}");

    assert_eq!(sim.order(id).await.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(id).await, 2, "{:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0);
    assert!(dcv_records(bind.primary_addr(), "delegated.test", &[]).is_empty(), "TXT left at the delegation target");
    let mut operator_records = dcv_records(bind.primary_addr(), "example.test", &[]);
    operator_records.sort();
    assert_eq!(
        operator_records,
        [
            ("_dnsauth.example.test".to_string(), "CNAME".to_string(), "_dnsauth.delegated.test".to_string()),
            ("_dnsauth.www.example.test".to_string(), "CNAME".to_string(), "_dnsauth-www.delegated.test".to_string()),
        ],
        "the operator's delegation CNAMEs must stay, and nothing else may be added"
    );
    assert_all_cleaned_up(&dcvd, &[id]);
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}

/// Google Cloud DNS (the fake, with a service-account key whose RS256 assertion the fake
/// verifies) with a DV TXT order for a registrable domain and its wildcard: both are validated at
/// `_dnsauth.gc.test` whatever the validation scope, so exactly one record holds the value; the
/// change is waited for (`done`), the lagging name server too, and the set is deleted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_dv_txt_order() {
    let fake = Arc::new(GcloudFake::builder().zone("gc.test").start().await);
    fake.set_pending_gets(1);
    let key = fake.service_account_key("dcvd@dcvd-test.iam.gserviceaccount.com", Role::DnsEditor);
    let reader = fake.clone();
    let fe = Frontend::builder().custom("gc.test", move || reader.entries("gc.test")).lag(LAG).start().await;
    let names = ["gc.test", "*.gc.test"];
    let sim = SimProc::start(SimOpts {
        dns: fe.addrs(),
        orders: vec![NewOrder::new(4001, &names)],
        seed: 14,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let rest = format!(
        "{}\n{}",
        gcloud_provider("gcp", &dcvd, &fake, &key, &["gc.test"]),
        order_toml(4001, "dns-txt-token", &names)
    );
    dcvd.write_config(&dcvd.config(&sim, fe.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(4001).await;
    assert_eq!(order.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(4001).await, 2, "token + one check: {:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0, "a check before every name server served the record");
    assert_eq!(fe.store().additions("_dnsauth.gc.test", &order.dcv_random_value), 1, "exact owner name and value");
    for name in ["_dnsauth.*.gc.test", "_dnsauth.gc.test.gc.test", "gc.test"] {
        assert_eq!(fe.store().additions(name, &order.dcv_random_value), 0, "{name}: no record belongs there");
    }
    fe.wait_synced().await;
    assert!(fe.added_more_than_once().is_empty(), "published twice: {:?}", fe.added_more_than_once());
    assert!(fe.store().is_empty(), "records left: {:?}", fe.store().snapshot());
    assert!(fake.entries("gc.test").is_empty(), "records left in Cloud DNS: {:?}", fake.entries("gc.test"));
    assert_eq!(fake.refused_changes(), Vec::<u16>::new(), "dcvd raced itself");
    assert_eq!(fake.change_count("gc-test"), 2, "one change to publish, one to remove");
    assert!(log.contains("gcloud change done"), "the change was waited for: {}", e2e_common::tail(&log, 40));
    assert_all_cleaned_up(&dcvd, &[4001]);
    let private_key: serde_json::Value = serde_json::from_str(&key).expect("key json");
    let pem = private_key["private_key"].as_str().expect("pem");
    let key_lines: Vec<(String, String)> = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(|l| ("private key line".to_string(), l.to_string()))
        .collect();
    let tokens: Vec<(String, String)> =
        fake.issued_tokens().into_iter().map(|t| ("access token".to_string(), t)).collect();
    assert!(!tokens.is_empty(), "dcvd obtained a token");
    let secrets: Vec<(&str, &str)> = key_lines.iter().chain(&tokens).map(|(w, s)| (w.as_str(), s.as_str())).collect();
    dcvd.assert_no_secrets(&secrets);
}

/// PowerDNS (the real server, SQLite backend) with a DV TXT order for a registrable domain and
/// its wildcard: one `_dnsauth.example.com` TXT carrying the order's random value, written
/// through the HTTP API (one PATCH to publish, one to remove) and served by PowerDNS's own DNS
/// listener, which the simulator queries; nothing is left afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powerdns_dv_txt_order() {
    let pdns = PowerDns::start(&["example.com"]).await;
    let names = ["example.com", "*.example.com"];
    let sim = SimProc::start(SimOpts {
        dns: vec![pdns.dns_addr()],
        orders: vec![NewOrder::new(7001, &names)],
        seed: 17,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let key = dcvd.secret_file("pdns-api-key", pdns.api_key());
    let rest = format!(
        "[providers.pdns]\ntype = \"powerdns\"\nzones = [\"example.com\"]\napi_url = \"{}\"\napi_key_file = \"{}\"\n\n{}",
        pdns.api_url(),
        key.display(),
        order_toml(7001, "dns-txt-token", &names)
    );
    dcvd.write_config(&dcvd.config(&sim, pdns.dns_port(), &rest));
    let child = dcvd.spawn(&["once"]);
    let (status, seen) = watch_zone_until_exit(&dcvd, child, pdns.dns_addr(), "example.com", ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(7001).await;
    assert_eq!(order.dcv_status, "valid", "{log}\n{}", pdns.log_tail(20));
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(7001).await, 2, "token + one check: {:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0, "a check before PowerDNS served the record");
    // what dcvd wrote through the API: exactly one TXT at the base name, then its removal
    let value = order.dcv_random_value.clone();
    assert_eq!(
        pdns.changes(),
        [
            (
                "_dnsauth.example.com".to_string(),
                "TXT".to_string(),
                "REPLACE".to_string(),
                vec![format!("\"{value}\"")]
            ),
            ("_dnsauth.example.com".to_string(), "TXT".to_string(), "DELETE".to_string(), vec![]),
        ],
        "exact owner name (the wildcard validates at its base name) and value"
    );
    assert_eq!(pdns.requests("PATCH"), 2, "one PATCH to publish, one to remove");
    // and what DNS served meanwhile (the zone is polled, so a short-lived record may be missed)
    let want = ("_dnsauth.example.com".to_string(), "TXT".to_string(), value);
    assert!(seen.iter().all(|r| *r == want), "unexpected records served: {seen:?}");
    assert!(dcv_records(pdns.dns_addr(), "example.com", &[]).is_empty(), "records left in PowerDNS");
    assert!(pdns.values("example.com", "_dnsauth.example.com", "TXT").await.is_empty());
    assert_all_cleaned_up(&dcvd, &[7001]);
    dcvd.assert_no_secrets(&[("PowerDNS API key", pdns.api_key())]);
}

/// acme-dns with `_dnsauth` CNAME delegation: the operator's `_dnsauth.example.com` is a CNAME to
/// the account's fulldomain; dcvd follows it, updates the account (one `/update`), DigiCert finds
/// the value through the CNAME, and cleanup makes no call (acme-dns has no delete: the value
/// stays in its slot). The fake accepts DigiCert's 32-character values, as a patched acme-dns
/// must (stock acme-dns refuses them: see docs/providers.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acmedns_dv_txt_order_through_cname_delegation() {
    let fake = Arc::new(AcmeDnsFake::builder("auth.example.org").accept_any_txt().start().await);
    let account = fake.register();
    let full = account.fulldomain.clone();
    let cname = full.clone();
    let (reader, served) = (fake.clone(), full.clone());
    let fe = Frontend::builder()
        .custom("example.com", move || vec![("_dnsauth.example.com".into(), "CNAME".into(), cname.clone())])
        .custom("auth.example.org", move || {
            reader.txt_values(&served).into_iter().map(|v| (served.clone(), "TXT".to_string(), v)).collect()
        })
        .lag(LAG)
        .start()
        .await;
    let names = ["example.com", "*.example.com"];
    let sim = SimProc::start(SimOpts {
        dns: fe.addrs(),
        orders: vec![NewOrder::new(8001, &names)],
        seed: 18,
        ..SimOpts::default()
    });
    let dcvd = Dcvd::new(&sim);
    let password = dcvd.secret_file("acmedns-example.com", &account.password);
    let rest = format!(
        "[providers.adns]\ntype = \"acmedns\"\napi_url = \"{}\"\nzones = [\"auth.example.org\"]\n\n\
         [providers.adns.accounts.\"example.com\"]\nusername = \"{}\"\npassword_file = \"{}\"\n\
         subdomain = \"{}\"\nfulldomain = \"{}\"\n\n{}provider = \"adns\"\n",
        fake.api_url,
        account.username,
        password.display(),
        account.subdomain,
        full,
        order_toml(8001, "dns-txt-token", &names)
    );
    dcvd.write_config(&dcvd.config(&sim, fe.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once");

    let order = sim.order(8001).await;
    assert_eq!(order.dcv_status, "valid", "{log}");
    let stats = sim.stats().await;
    assert_eq!(sim.order_calls(8001).await, 2, "token + one check: {:?}", stats.order_calls);
    assert_eq!(stats.premature_checks, 0, "a check before both name servers served the value");
    assert!(log.contains("following CNAME delegation"), "{log}");
    assert_eq!(fake.updates(), 1, "one /update for the order's one value; cleanup makes no call");
    assert_eq!(fake.refused(), 0);
    assert_eq!(fe.store().additions(&full, &order.dcv_random_value), 1, "the value at the fulldomain");
    assert_eq!(fe.store().additions("_dnsauth.example.com", &order.dcv_random_value), 0, "nothing at the CNAME itself");
    // acme-dns cannot delete: the value stays in the account's slot until later updates
    assert_eq!(fake.slots(&account.subdomain), vec![order.dcv_random_value.clone(), String::new()]);
    assert_all_cleaned_up(&dcvd, &[8001]);
    dcvd.assert_no_secrets(&[("acme-dns password", &account.password)]);
}
