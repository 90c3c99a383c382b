//! What makes the simulator more than a mock: negative caching like a CA's resolver, round-robin
//! over lagging name servers, rate-limit windows, seeded fault injection, authentication, the
//! admin API and the stats benchmarks rely on.

mod common;

use std::time::{Duration, Instant};

use certcentral_sim::{CheckOutcome, FaultConfig, FaultRule, NewOrder, SimConfig, UnitKind};
use common::{Harness, KEY, TestDns, config, error_of};
use serde_json::json;

async fn random_value(h: &Harness, id: u64) -> String {
    let a = h.api("PUT", &format!("/order/certificate/{id}/dcv-random-value"), None).await;
    a.json["dcv_random_value"].as_str().expect("dcv_random_value").to_string()
}

async fn check_status(h: &Harness, id: u64) -> u16 {
    h.api("PUT", &format!("/order/certificate/{id}/check-dcv"), None).await.status
}

/// A check made before publication caches the negative answer for the SOA's negative TTL: the
/// record published afterwards stays invisible until the TTL passes (clock advanced), then the
/// check succeeds. Every failed check counts as premature.
#[tokio::test]
async fn negative_cache_makes_a_premature_check_fail_until_the_ttl_passes() {
    let a = TestDns::start(&["example.com"], 30).await;
    let b = TestDns::start(&["example.com"], 30).await;
    let h = Harness::start(config(&[&a, &b])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let value = random_value(&h, 1).await;

    assert_eq!(check_status(&h, 1).await, 400);
    a.add_txt("_dnsauth.example.com", &value).await;
    b.add_txt("_dnsauth.example.com", &value).await;
    assert_eq!(check_status(&h, 1).await, 400, "the negative answer must still be cached");
    let stats = h.sim().stats();
    assert_eq!(stats.premature_checks, 2);
    assert!(stats.negative_cache_hits >= 1);
    assert_eq!(stats.checks[1].negative_cache_hits, 2, "both TXT names answered from the cache");

    // 20 s leaves 10 s of slack for a slow machine
    h.sim().advance_clock(Duration::from_secs(20));
    assert_eq!(check_status(&h, 1).await, 400, "still within the SOA's 30 s");
    h.sim().advance_clock(Duration::from_secs(11));
    assert_eq!(check_status(&h, 1).await, 200, "the TTL passed: the record is seen");
    assert_eq!(h.sim().stats().premature_checks, 3);
}

/// The negative TTL also expires in real time (a 1 s SOA minimum, no clock offset).
#[tokio::test]
async fn negative_cache_expires_in_real_time() {
    let dns = TestDns::start(&["example.com"], 1).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let value = random_value(&h, 1).await;
    assert_eq!(check_status(&h, 1).await, 400);
    dns.add_txt("_dnsauth.example.com", &value).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(check_status(&h, 1).await, 200);
}

/// The cap bounds a long SOA TTL, and a fixed negative_ttl overrides the SOA.
#[tokio::test]
async fn negative_ttl_cap_and_fixed_override() {
    let dns = TestDns::start(&["example.com"], 3600).await;
    let capped = Harness::start(SimConfig { negative_ttl_cap: Duration::from_secs(5), ..config(&[&dns]) }).await;
    capped.sim().add_order(NewOrder::new(1, &["example.com"]));
    let v1 = random_value(&capped, 1).await;
    assert_eq!(check_status(&capped, 1).await, 400);
    dns.add_txt("_dnsauth.example.com", &v1).await;
    capped.sim().advance_clock(Duration::from_secs(6));
    assert_eq!(check_status(&capped, 1).await, 200, "the 5 s cap must bound the SOA's 3600 s");

    let dns2 = TestDns::start(&["example.net"], 0).await;
    let fixed = Harness::start(SimConfig { negative_ttl: Some(Duration::from_secs(20)), ..config(&[&dns2]) }).await;
    fixed.sim().add_order(NewOrder::new(2, &["example.net"]));
    let v2 = random_value(&fixed, 2).await;
    assert_eq!(check_status(&fixed, 2).await, 400);
    dns2.add_txt("_dnsauth.example.net", &v2).await;
    assert_eq!(check_status(&fixed, 2).await, 400, "a fixed 20 s TTL applies although the SOA says 0");
    fixed.sim().advance_clock(Duration::from_secs(21));
    assert_eq!(check_status(&fixed, 2).await, 200);
}

/// Each lookup asks one name server, round-robin: while one of them lags, checks that land on it
/// fail; once every server serves the record the check succeeds.
#[tokio::test]
async fn lagging_name_server_fails_the_checks_that_reach_it() {
    let lagging = TestDns::start(&["example.com"], 0).await;
    let current = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&lagging, &current])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let value = random_value(&h, 1).await;
    current.add_txt("_dnsauth.example.com", &value).await;
    // a failing check makes two lookups, so `_dnsauth` always reaches the lagging server first
    for _ in 0..3 {
        assert_eq!(check_status(&h, 1).await, 400);
    }
    lagging.add_txt("_dnsauth.example.com", &value).await;
    assert_eq!(check_status(&h, 1).await, 200);
    assert_eq!(h.sim().stats().premature_checks, 3);
    assert!(h.sim().stats().dns_queries >= 7);
}

/// Two sliding windows: the shorter one trips first, the longer one later; 429 carries
/// `request_limit_exceeded` and no Retry-After; 401s do not use the budget.
#[tokio::test]
async fn rate_limit_windows() {
    let h = Harness::start(SimConfig {
        rate_limits: vec![(3, Duration::from_secs(10)), (5, Duration::from_secs(100))],
        ..config(&[])
    })
    .await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let unauth = h.api_with_key("GET", "/order/certificate/1", None, None).await;
    assert_eq!(unauth.status, 401);
    for _ in 0..3 {
        assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200);
    }
    let limited = h.api("GET", "/order/certificate/1", None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(error_of(&limited).0, "request_limit_exceeded");
    assert!(limited.headers.get("retry-after").is_none(), "DigiCert sends no Retry-After");

    h.sim().advance_clock(Duration::from_secs(10));
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200);
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200);
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 429, "the 100 s window is full");
    h.sim().advance_clock(Duration::from_secs(100));
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200);

    let stats = h.sim().stats();
    assert_eq!(stats.rate_limited, 2);
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.calls["order_info"], 9);
}

/// The default windows are DigiCert's documented ones.
#[test]
fn default_rate_limits_are_digicerts() {
    assert_eq!(SimConfig::default().rate_limits, vec![(100, Duration::from_secs(5)), (1000, Duration::from_secs(300))]);
}

fn rule(f: impl FnOnce(&mut FaultRule)) -> FaultConfig {
    let mut r = FaultRule::default();
    f(&mut r);
    FaultConfig { global: r, ..FaultConfig::default() }
}

/// Certain faults (probability 1) produce each documented failure: 500/503 with a JSON errors
/// body, an HTML 502, a dropped connection (no response at all), added latency, 429 bursts.
/// Faulted requests change no state.
#[tokio::test]
async fn each_fault_kind() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let before = h.sim().order(1).unwrap().dcv_random_value;

    h.sim().set_faults(rule(|r| r.error_500 = 1.0));
    let a = h.api("GET", "/order/certificate/1", None).await;
    assert_eq!(a.status, 500);
    assert_eq!(error_of(&a).0, "internal_server_error");

    h.sim().set_faults(rule(|r| r.error_503 = 1.0));
    let a = h.api("GET", "/order/certificate/1", None).await;
    assert_eq!(a.status, 503);
    assert_eq!(error_of(&a).0, "service_unavailable");

    h.sim().set_faults(rule(|r| r.html_502 = 1.0));
    let a = h.api("GET", "/order/certificate/1", None).await;
    assert_eq!(a.status, 502);
    assert!(a.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(a.text.contains("502 Bad Gateway"));
    assert!(a.json.is_null(), "the 502 page is not JSON");

    h.sim().set_faults(rule(|r| r.drop = 1.0));
    let url = format!("{}/order/certificate/1/dcv-random-value", h.running.base_url);
    let err = h.send("PUT", &url, None, Some(KEY)).await.expect_err("the connection must be dropped");
    assert!(!err.is_status() && !err.is_timeout(), "expected a closed connection, got {err:?}");

    h.sim().set_faults(rule(|r| {
        r.latency = 1.0;
        r.latency_min_ms = 300;
        r.latency_max_ms = 300;
    }));
    let started = Instant::now();
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    h.sim().set_faults(rule(|r| {
        r.burst_429 = 1.0;
        r.burst_len = 3;
    }));
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 429);
    h.sim().set_faults(FaultConfig::default());
    let a = h.api("GET", "/order/certificate/1", None).await;
    assert_eq!(a.status, 429, "a burst continues after its trigger");
    assert!(a.headers.get("retry-after").is_none());
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 429);
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200, "the burst had 3 answers");

    assert_eq!(h.sim().order(1).unwrap().dcv_random_value, before);
    let f = h.sim().stats().faults;
    assert_eq!((f.error_500, f.error_503, f.html_502, f.dropped, f.latency, f.burst_429), (1, 1, 1, 1, 1, 3));
}

async fn statuses(seed: u64) -> Vec<u16> {
    let h = Harness::start(SimConfig {
        seed,
        faults: rule(|r| {
            r.error_500 = 0.3;
            r.error_503 = 0.2;
        }),
        ..config(&[])
    })
    .await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let mut out = Vec::new();
    for _ in 0..30 {
        out.push(h.api("GET", "/order/certificate/1", None).await.status);
    }
    out
}

/// The same seed gives the same fault sequence; another seed another one.
#[tokio::test]
async fn faults_are_reproducible_by_seed() {
    let a = statuses(11).await;
    let b = statuses(11).await;
    let c = statuses(12).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.contains(&200) && a.contains(&500) && a.contains(&503), "{a:?}");
}

/// A per-endpoint rule applies to its endpoint only; the admin API sets it at runtime and
/// rejects invalid rules.
#[tokio::test]
async fn per_endpoint_faults_through_the_admin_api() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let put = h.admin("PUT", "/faults", Some(json!({"endpoints": {"check_dcv": {"error_503": 1.0}}}))).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(h.api("PUT", "/order/certificate/1/check-dcv", None).await.status, 503);
    assert_eq!(h.api("GET", "/order/certificate/1", None).await.status, 200);
    let got = h.admin("GET", "/faults", None).await;
    assert_eq!(got.json["endpoints"]["check_dcv"]["error_503"], 1.0);

    for bad in [
        json!({"global": {"error_500": 1.5}}),
        json!({"endpoints": {"nope": {"drop": 0.1}}}),
        json!({"global": {"error_500": 0.6, "drop": 0.6}}),
        json!({"global": {"surprise": 1}}),
    ] {
        let a = h.admin("PUT", "/faults", Some(bad.clone())).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text);
    }
}

/// Missing and wrong keys answer 401 with an errors body; admin calls need no key.
#[tokio::test]
async fn authentication_failures() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let a = h.api_with_key("GET", "/order/certificate/1", None, None).await;
    assert_eq!(a.status, 401);
    assert_eq!(error_of(&a).0, "access_denied");
    let a = h.api_with_key("PUT", "/order/certificate/1/check-dcv", None, Some("wrong")).await;
    assert_eq!(a.status, 401);
    assert_eq!(error_of(&a), ("unauthorized".into(), "The specified API key is invalid.".into()));
    assert!(!a.text.contains(KEY), "the expected key must never be echoed");
    assert_eq!(h.admin("GET", "/stats", None).await.status, 200);
    assert_eq!(h.sim().stats().unauthorized, 2);
    assert!(h.sim().stats().checks.is_empty(), "an unauthenticated check must not run");
    assert!(!format!("{:?}", h.sim().config()).contains(KEY), "Debug must redact the key");
}

/// The admin API creates units (one or many), shows them, advances the clock, reports stats per
/// endpoint and per unit with check events, and resets to the preloaded state.
#[tokio::test]
async fn admin_api_and_stats() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().preload(certcentral_sim::Fixtures { orders: vec![NewOrder::new(500, &["example.com"])], domains: vec![] });
    let created = h
        .admin(
            "POST",
            "/orders",
            Some(json!([
                {"id": 1, "dns_names": ["example.com"], "dcv_random_value": "fixedvalue1"},
                {"id": 2, "dns_names": ["www.example.com"], "dcv_method": "dns-cname-token", "status": "pending"}
            ])),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json.as_array().unwrap().len(), 2);
    let d = h.admin("POST", "/domains", Some(json!({"id": 9, "name": "example.com", "validations": ["ov"]}))).await;
    assert_eq!(d.status, 201, "{}", d.text);
    let bad = h.admin("POST", "/orders", Some(json!({"id": 3}))).await;
    assert_eq!(bad.status, 400);

    let view = h.admin("GET", "/orders/1", None).await;
    assert_eq!(view.json["dcv_random_value"], "fixedvalue1");
    assert_eq!(view.json["random_value_valid"], true);
    assert_eq!(view.json["dcv_status"], "pending");
    let dv = h.admin("GET", "/domains/9", None).await;
    assert_eq!(dv.json["validations"]["ov"], "pending");
    assert_eq!(h.admin("GET", "/orders/77", None).await.status, 404);

    dns.add_txt("_dnsauth.example.com", "fixedvalue1").await;
    assert_eq!(h.api("PUT", "/order/certificate/2/check-dcv", None).await.status, 400);
    assert_eq!(h.api("PUT", "/order/certificate/1/check-dcv", None).await.status, 200);

    let clock = h.admin("POST", "/clock/advance", Some(json!({"seconds": 90}))).await;
    assert_eq!(clock.json["offset_seconds"], 90.0);
    assert_eq!(h.admin("POST", "/clock/advance", Some(json!({"seconds": -1}))).await.status, 400);

    let stats = h.admin("GET", "/stats", None).await;
    assert_eq!(stats.json["calls"]["check_dcv"], 2);
    assert_eq!(stats.json["order_calls"]["1"]["check_dcv"], 1);
    assert_eq!(stats.json["premature_checks"], 1);
    assert_eq!(stats.json["successful_validations"], 1);
    let parsed: certcentral_sim::Stats = serde_json::from_value(stats.json.clone()).unwrap();
    let valid = parsed.checks.iter().find(|c| c.outcome == CheckOutcome::Valid).unwrap();
    assert_eq!((valid.kind, valid.id), (UnitKind::Order, 1));
    assert!(valid.unix_ms > 0);

    assert_eq!(h.admin("POST", "/reset", None).await.status, 204);
    assert!(h.sim().order(1).is_none());
    assert!(h.sim().order(500).is_some(), "reset restores the preloaded fixtures");
    assert_eq!(h.sim().clock_offset(), Duration::ZERO);
    assert_eq!(h.sim().stats(), certcentral_sim::Stats::default());
}
