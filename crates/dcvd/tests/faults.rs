//! Fault suite: the real `dcvd` and `certcentral-sim` binaries while things go wrong, each test
//! asserting that every unit still ends valid, that retries stay bounded, and that nothing is
//! left behind:
//! - the simulator answers 20% of requests with 500/503 JSON errors or 502 HTML pages, adds
//!   latency, and starts 429 bursts (seeded);
//! - Route53 (moto behind the test proxy) answers `Throttling`, `PriorRequestNotComplete` and
//!   503, and Cloudflare (the fake) answers 429 with `Retry-After`;
//! - one of BIND's two name servers is down for a while.

use std::sync::Arc;
use std::time::Duration;

use certcentral_sim::{NewDomain, NewOrder};
use test_support::bind::{Bind, ZoneSpec};
use test_support::cloudflare_fake::CloudflareFake;
use test_support::frontend::Frontend;
use test_support::harness::{Dcvd, Harness, SimOpts, dcv_records, eventually, order_toml, rfc2136_provider, states};
use test_support::moto::{Fault, Moto};

/// The binaries under test.
const HARNESS: Harness = Harness::new(env!("CARGO_BIN_EXE_dcvd"));

const ONCE_LIMIT: Duration = Duration::from_secs(150);

fn assert_all_cleaned_up(dcvd: &Dcvd, ids: &[u64]) {
    let got = states(&dcvd.status_json());
    let want: std::collections::BTreeMap<u64, String> = ids.iter().map(|id| (*id, "cleaned_up".to_string())).collect();
    assert_eq!(got, want);
}

/// 20% of CertCentral requests fail (8% 500, 6% 503, 6% HTML 502), 2% start a burst of three
/// 429s, 25% get 50-400 ms of latency. Ten DV orders and two OV/EV domains still end valid.
///
/// Bound on calls: a unit needs 2 calls; each attempt fails independently with p ≈ 0.2 plus the
/// bursts, so 2 logical calls needing more than 4 attempts each has probability ≈ 0.2^4 per
/// call. Allowing 10 calls per unit (2 × 5 attempts) and 3× the minimum overall detects a retry
/// loop (or a re-run of whole steps) without flaking; the seed makes the draw reproducible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certcentral_errors_latency_and_429_bursts() {
    let bind = Bind::start(&["faulty.test"]);
    let orders: Vec<NewOrder> = (0..10).map(|i| NewOrder::new(8000 + i, &[&format!("o{i}.faulty.test")])).collect();
    let sim = HARNESS.start_sim(SimOpts {
        dns: vec![bind.primary_addr()],
        orders: orders.clone(),
        domains: vec![NewDomain::new(8100, "corp.faulty.test"), NewDomain::new(8101, "shop.faulty.test")],
        faults: [
            "error_500=0.08",
            "error_503=0.06",
            "html_502=0.06",
            "burst_429=0.02",
            "burst_len=3",
            "latency=0.25",
            "latency_min_ms=50",
            "latency_max_ms=400",
        ]
        .map(String::from)
        .to_vec(),
        seed: 2024,
        ..SimOpts::default()
    });
    let dcvd = HARNESS.dcvd(&sim);
    let mut rest = rfc2136_provider("bind", &bind, &["faulty.test"]);
    for o in &orders {
        rest.push_str(&format!("\n{}", order_toml(o.id, "dns-txt-token", &[&o.dns_names[0]])));
    }
    rest.push_str(
        "\n[[domain]]\nid = 8100\nname = \"corp.faulty.test\"\nmethod = \"dns-txt-token\"\nsubmit = [\"ov\"]\n\
         \n[[domain]]\nid = 8101\nname = \"shop.faulty.test\"\nmethod = \"dns-txt-token\"\n",
    );
    dcvd.write_config(&dcvd.config(bind.port(), &rest));
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once under CertCentral faults");

    let stats = sim.stats().await;
    let f = &stats.faults;
    let injected = f.error_500 + f.error_503 + f.html_502 + f.burst_429;
    let total: u64 = stats.calls.values().sum();
    println!("certcentral faults: {f:?}; {total} calls for 12 units (minimum 24): {:?}", stats.calls);
    assert!(injected >= 3, "the faults must actually have hit dcvd: {f:?}");
    for o in &orders {
        assert_eq!(sim.order(o.id).await.dcv_status, "valid", "order {}:\n{log}", o.id);
        let calls = sim.order_calls(o.id).await;
        assert!(calls <= 10, "order {}: {calls} calls: {:?}", o.id, stats.order_calls.get(&o.id));
    }
    for id in [8100, 8101] {
        assert!(sim.domain(id).await.dcv_valid, "domain {id}:\n{log}");
        let calls = sim.domain_calls(id).await;
        assert!(calls <= 10, "domain {id}: {calls} calls: {:?}", stats.domain_calls.get(&id));
    }
    assert!(total <= 3 * 24, "{total} CertCentral calls for 12 units (minimum 24): {:?}", stats.calls);
    assert_eq!(stats.premature_checks, 0);
    assert_eq!(stats.tokens_issued, 2, "one token per domain: a faulted call must not make dcvd request another");
    assert!(log.contains("WARN"), "retries must be logged as warnings");
    assert!(dcv_records(bind.primary_addr(), "faulty.test", &[]).is_empty(), "records left in BIND");
    assert_all_cleaned_up(&dcvd, &[8000, 8001, 8002, 8003, 8004, 8005, 8006, 8007, 8008, 8009, 8100, 8101]);
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}

/// Route53 throttles (`Throttling` ×4, `PriorRequestNotComplete` ×2, 503 ×1) and Cloudflare
/// answers 429 with `Retry-After: 1` three times: dcvd retries, every fault is consumed, the
/// orders end valid with two CertCentral calls each, and the provider request counts stay
/// within the faults plus a small constant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_throttling_and_cloudflare_429() {
    let moto = Moto::start().await;
    let zone_id = moto.create_hosted_zone("thr-r53.test").await;
    let fake = Arc::new(CloudflareFake::builder().zone("thr-cf.test").start().await);
    let fe = Frontend::builder()
        .route53(&moto, &zone_id, "thr-r53.test")
        .cloudflare(fake.clone(), "thr-cf.test")
        .lag(Duration::from_millis(300))
        .start()
        .await;
    let sim = HARNESS.start_sim(SimOpts {
        dns: fe.addrs(),
        orders: vec![
            NewOrder::new(8201, &["thr-r53.test", "www.thr-r53.test"]),
            NewOrder::new(8202, &["thr-cf.test", "www.thr-cf.test"]),
        ],
        seed: 7,
        ..SimOpts::default()
    });
    let mut dcvd = HARNESS.dcvd(&sim);
    let aws_secret = format!("awsSecret{:032x}", rand::random::<u128>());
    dcvd.env("AWS_ACCESS_KEY_ID", "AKIAE2EFAULTS0000001");
    dcvd.env("AWS_SECRET_ACCESS_KEY", &aws_secret);
    dcvd.env("AWS_REGION", test_support::moto::REGION);
    let token = dcvd.secret_file("cf-token", &fake.token);
    let rest = format!(
        "[providers.aws]\ntype = \"route53\"\nzones = [\"thr-r53.test\"]\nregion = \"{}\"\nendpoint_url = \"{}\"\n\n\
         [providers.cf]\ntype = \"cloudflare\"\nzones = [\"thr-cf.test\"]\napi_token_file = \"{}\"\nbase_url = \"{}\"\n\n{}\n{}",
        test_support::moto::REGION,
        moto.endpoint_url(),
        token.display(),
        fake.base_url,
        order_toml(8201, "dns-txt-token", &["thr-r53.test", "www.thr-r53.test"]),
        order_toml(8202, "dns-txt-token", &["thr-cf.test", "www.thr-cf.test"]),
    );
    dcvd.write_config(&dcvd.config(fe.port(), &rest));
    moto.inject(Fault::Throttling, 4);
    moto.inject(Fault::PriorRequestNotComplete, 2);
    moto.inject(Fault::ServiceUnavailable, 1);
    fake.rate_limit_next(3, 1);
    let status = dcvd.once(ONCE_LIMIT).await;
    let log = dcvd.assert_success(status, "dcvd once under provider throttling");

    println!(
        "provider faults: {} Route53 requests ({} changes), {} Cloudflare requests",
        moto.requests(),
        moto.change_requests(),
        fake.request_count()
    );
    assert_eq!(moto.pending_faults(), 0, "dcvd never met all Route53 faults");
    assert_eq!(fake.pending_faults(), 0, "dcvd never met all Cloudflare 429s");
    for id in [8201, 8202] {
        assert_eq!(sim.order(id).await.dcv_status, "valid", "order {id}:\n{log}");
        assert_eq!(sim.order_calls(id).await, 2, "order {id}: provider faults must not cost CertCentral calls");
    }
    assert_eq!(sim.stats().await.premature_checks, 0);
    // Route53: the 7 faulted requests, lookups of the hosted zone, a read + change per record
    // for publish and again for removal: 7 + 20 is far above a correct run, far below a loop.
    assert!(moto.requests() <= 27, "{} Route53 requests", moto.requests());
    assert!(fake.request_count() <= 3 + 20, "{} Cloudflare requests: {:?}", fake.request_count(), fake.requests());
    fe.wait_synced().await;
    assert!(fe.store().is_empty(), "records left: {:?}", fe.store().snapshot());
    assert_all_cleaned_up(&dcvd, &[8201, 8202]);
    dcvd.assert_no_secrets(&[("AWS secret key", &aws_secret), ("Cloudflare token", &fake.token)]);
}

/// The secondary name server is down while dcvd publishes: dcvd keeps waiting (an unreachable
/// authoritative server has not served the record) and makes no DigiCert check; once it is back
/// and synced, every order ends valid with two calls and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_server_down_for_a_while() {
    let mut bind = Bind::builder().zone(ZoneSpec::new("down.test")).with_lagging_secondary().start();
    let secondary = bind.secondary_addr().expect("secondary");
    let primary = bind.primary_addr();
    let ids: Vec<u64> = (0..4).map(|i| 8300 + i).collect();
    let sim = HARNESS.start_sim(SimOpts {
        dns: vec![primary, secondary],
        orders: ids.iter().map(|id| NewOrder::new(*id, &[&format!("n{id}.down.test")])).collect(),
        seed: 9,
        ..SimOpts::default()
    });
    let dcvd = HARNESS.dcvd(&sim);
    let mut rest = rfc2136_provider("bind", &bind, &["down.test"]);
    for id in &ids {
        rest.push_str(&format!("\n{}", order_toml(*id, "dns-txt-token", &[&format!("n{id}.down.test")])));
    }
    dcvd.write_config(&dcvd.config(bind.port(), &rest));
    bind.stop_secondary();
    let child = dcvd.spawn(&["once"]);
    eventually(Duration::from_secs(60), "every record on the primary", || async {
        dcv_records(primary, "down.test", &[]).len() == ids.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = sim.stats().await;
    assert!(stats.checks.is_empty(), "dcvd checked while a name server was down: {:?}", stats.checks);
    bind.start_secondary();
    bind.refresh_secondary("down.test");
    let status = dcvd.wait(child, ONCE_LIMIT, "dcvd once").await;
    let log = dcvd.assert_success(status, "dcvd once with a name server down for a while");

    let stats = sim.stats().await;
    for id in &ids {
        assert_eq!(sim.order(*id).await.dcv_status, "valid", "order {id}:\n{log}");
        assert_eq!(sim.order_calls(*id).await, 2, "order {id}: {:?}", stats.order_calls.get(id));
    }
    assert_eq!(stats.premature_checks, 0);
    assert!(dcv_records(primary, "down.test", &[]).is_empty(), "records left on the primary");
    bind.refresh_secondary("down.test");
    bind.wait_secondary_synced("down.test", Duration::from_secs(10));
    assert!(dcv_records(secondary, "down.test", &[]).is_empty(), "records left on the secondary");
    assert_all_cleaned_up(&dcvd, &ids);
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}
