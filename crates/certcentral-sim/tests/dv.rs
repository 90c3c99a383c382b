//! DV orders over HTTP against a real (in-process) authoritative DNS server: every lookup rule,
//! per-name progress, random value expiry and renewal, methods and errors.

mod common;

use std::time::Duration;

use certcentral_sim::{CheckOutcome, DcvMethod, NewOrder, SimConfig, ValidationScope};
use common::{Harness, TestDns, config, error_of};
use hickory_server::proto::rr::RecordType;
use serde_json::json;

async fn random_value(h: &Harness, id: u64) -> String {
    let a = h.api("PUT", &format!("/order/certificate/{id}/dcv-random-value"), None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json["dcv_random_value"].as_str().expect("dcv_random_value").to_string()
}

async fn check(h: &Harness, id: u64) -> common::Answer {
    h.api("PUT", &format!("/order/certificate/{id}/check-dcv"), None).await
}

/// TXT at `_dnsauth.<name>`: a check before publication answers 400 invalid_dns_txt, after it
/// 200 with dcv_status valid, and the order becomes issued.
#[tokio::test]
async fn txt_at_dnsauth_validates_and_issues_the_order() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(101, &["example.com"]));
    let value = random_value(&h, 101).await;

    let a = check(&h, 101).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        error_of(&a),
        ("invalid_dns_txt".into(), "Could not find a valid TXT record for one or more domains.".into())
    );

    dns.add_txt("_dnsauth.example.com", &value).await;
    let a = check(&h, 101).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["dcv_status"], "valid");
    assert_eq!(a.json["order_status"], "issued");
    assert_eq!(a.json["certificate_id"], 1_000_101);
    assert_eq!(a.json["dns_name_validations"], json!([{"dns_name": "example.com", "status": "valid"}]));

    let info = h.api("GET", "/order/certificate/101", None).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json["status"], "issued");
    assert_eq!(info.json["dcv_method"], "dns-txt-token");
    assert_eq!(info.json["certificate"]["dns_names"], json!(["example.com"]));
    assert_eq!(info.json["certificate"]["common_name"], "example.com");

    let stats = h.sim().stats();
    assert_eq!(stats.premature_checks, 1);
    assert_eq!(stats.successful_validations, 1);
    let outcomes: Vec<_> = stats.checks.iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes, vec![CheckOutcome::NotFound, CheckOutcome::Valid]);
    // a check after validation answers valid again without DNS work
    let a = check(&h, 101).await;
    assert_eq!(a.status, 200);
    assert_eq!(h.sim().stats().checks.last().unwrap().outcome, CheckOutcome::AlreadyValid);
}

/// TXT at the name itself counts, and a record that merely *contains* the value (even split over
/// several strings of one record) counts too.
#[tokio::test]
async fn txt_at_the_name_itself_and_contains_match() {
    let dns = TestDns::start(&["example.com", "example.org"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    h.sim().add_order(NewOrder::new(2, &["example.org"]));
    let v1 = random_value(&h, 1).await;
    let v2 = random_value(&h, 2).await;

    dns.add_txt("example.com", &format!("v=spf1 -all {v1} trailing")).await;
    assert_eq!(check(&h, 1).await.status, 200);

    let (head, tail) = v2.split_at(10);
    dns.add_txt_strings("_dnsauth.example.org", &["prefix-", head, tail]).await;
    assert_eq!(check(&h, 2).await.status, 200);
}

/// A TXT holding another value does not validate (the match is on the value, not the name).
#[tokio::test]
async fn txt_with_another_value_does_not_validate() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(1, &["example.com"]));
    let _ = random_value(&h, 1).await;
    dns.add_txt("_dnsauth.example.com", "someone-elses-value").await;
    assert_eq!(check(&h, 1).await.status, 400);
}

/// Base scope (CertCentral's default): `*.` is stripped and every name is validated at its base
/// domain, so one record at `_dnsauth.example.com` validates all four names.
#[tokio::test]
async fn base_scope_validates_every_name_at_the_base_domain() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(7, &["*.example.com", "www.example.com", "a.b.example.com", "example.com"]));
    let value = random_value(&h, 7).await;
    dns.add_txt("_dnsauth.example.com", &value).await;
    let a = check(&h, 7).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let statuses: Vec<_> = a.json["dns_name_validations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, vec!["valid"; 4]);
}

/// Base scope: a record at the name itself is not where DigiCert looks.
#[tokio::test]
async fn base_scope_ignores_a_record_at_the_subdomain() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(10, &["shop.example.com"]));
    let value = random_value(&h, 10).await;
    dns.add_txt("_dnsauth.shop.example.com", &value).await;
    assert_eq!(check(&h, 10).await.status, 400);
    let v = h.api("GET", "/order/certificate/10/validation", None).await;
    assert_eq!(v.json["order_name_scope"], "base_domain");
    assert_eq!(v.json["dns_name_validations"][0]["name_scope"], "example.com");
    dns.add_txt("_dnsauth.example.com", &value).await;
    assert_eq!(check(&h, 10).await.status, 200);
}

/// Exact scope: every name is validated as named; a parent's record does not stand for a child
/// and a child's does not stand for the parent.
#[tokio::test]
async fn exact_scope_validates_every_name_as_named() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().set_validation_scope(ValidationScope::Exact);
    h.sim().add_order(NewOrder::new(8, &["example.com", "www.example.com", "*.example.com"]));
    let value = random_value(&h, 8).await;
    dns.add_txt("_dnsauth.www.example.com", &value).await;
    assert_eq!(check(&h, 8).await.status, 400);
    let v = h.api("GET", "/order/certificate/8/validation", None).await;
    assert_eq!(v.json["order_name_scope"], "fqdn");
    assert_eq!(
        v.json["dns_name_validations"],
        json!([
            {"dns_name": "example.com", "status": "pending", "name_scope": "example.com"},
            {"dns_name": "www.example.com", "status": "valid", "name_scope": "www.example.com"},
            {"dns_name": "*.example.com", "status": "pending", "name_scope": "example.com"},
        ])
    );
    dns.add_txt("_dnsauth.example.com", &value).await;
    let a = check(&h, 8).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// An order's own scope wins over the account's, and the admin API reads and sets the account's.
#[tokio::test]
async fn order_scope_overrides_the_account_scope() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    let account = h.admin("GET", "/account", None).await;
    assert_eq!(account.json, json!({"validation_scope": "base"}));
    let set = h.admin("PUT", "/account", Some(json!({"validation_scope": "exact"}))).await;
    assert_eq!(set.status, 200);
    assert_eq!(h.sim().validation_scope(), ValidationScope::Exact);
    assert_eq!(h.admin("PUT", "/account", Some(json!({"validation_scope": "wide"}))).await.status, 400);

    let mut order = NewOrder::new(11, &["shop.example.com"]);
    order.validation_scope = Some(ValidationScope::Base);
    h.sim().add_order(order);
    let value = random_value(&h, 11).await;
    dns.add_txt("_dnsauth.example.com", &value).await;
    assert_eq!(check(&h, 11).await.status, 200);
}

/// A multi-name order is valid only once every name validates; the validation endpoint shows
/// per-name progress, and names found earlier stay valid.
#[tokio::test]
async fn multi_name_order_partially_valid_then_complete() {
    let dns = TestDns::start(&["example.com", "example.net"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(9, &["example.com", "shop.example.net"]));
    let value = random_value(&h, 9).await;
    dns.add_txt("_dnsauth.example.com", &value).await;

    let a = check(&h, 9).await;
    assert_eq!(a.status, 400);
    assert_eq!(error_of(&a).0, "invalid_dns_txt");
    let v = h.api("GET", "/order/certificate/9/validation", None).await;
    assert_eq!(v.status, 200);
    assert_eq!(
        v.json["dns_name_validations"],
        json!([
            {"dns_name": "example.com", "status": "valid", "name_scope": "example.com"},
            {"dns_name": "shop.example.net", "status": "pending", "name_scope": "example.net"},
        ])
    );
    let info = h.api("GET", "/order/certificate/9", None).await;
    assert_eq!(info.json["status"], "pending");

    // the first name stays valid even once its record is gone
    dns.remove("_dnsauth.example.com", RecordType::TXT).await;
    dns.add_txt("_dnsauth.example.net", &value).await;
    let a = check(&h, 9).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let last = h.sim().stats().checks.last().cloned().unwrap();
    assert_eq!((last.names_valid, last.names_total), (2, 2));
}

/// CNAME method, DigiCert's preferred form: `_dnsauth.<name>` -> `<value>.dcv.digicert.com`;
/// failures answer `invalid_dns_cname` (no leading space on the DV endpoint).
#[tokio::test]
async fn cname_preferred_form() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(20, &["example.com"]).with_method(DcvMethod::DnsCnameToken));
    let value = random_value(&h, 20).await;

    let a = check(&h, 20).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        error_of(&a),
        ("invalid_dns_cname".into(), "Could not find a valid CNAME record for one or more domains.".into())
    );
    // a CNAME to the wrong target does not count
    dns.add_cname("_dnsauth.example.com", "elsewhere.example.net").await;
    assert_eq!(check(&h, 20).await.status, 400);
    dns.add_cname("_dnsauth.example.com", &format!("{value}.dcv.digicert.com")).await;
    let a = check(&h, 20).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// CNAME method, the older form: `<value>.<name>` CNAME `dcv.digicert.com`, at the name the
/// scope picks.
#[tokio::test]
async fn cname_older_form() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(21, &["shop.example.com"]).with_method(DcvMethod::DnsCnameToken));
    let value = random_value(&h, 21).await;
    dns.add_cname(&format!("{value}.shop.example.com"), "dcv.digicert.com").await;
    assert_eq!(check(&h, 21).await.status, 400, "base scope looks at example.com");
    dns.add_cname(&format!("{value}.example.com"), "dcv.digicert.com").await;
    let a = check(&h, 21).await;
    assert_eq!(a.status, 200, "{}", a.text);

    let mut exact = NewOrder::new(23, &["shop.example.com"]).with_method(DcvMethod::DnsCnameToken);
    exact.validation_scope = Some(ValidationScope::Exact);
    h.sim().add_order(exact);
    let value = random_value(&h, 23).await;
    dns.add_cname(&format!("{value}.shop.example.com"), "dcv.digicert.com").await;
    let a = check(&h, 23).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// A TXT record does not satisfy the CNAME method.
#[tokio::test]
async fn txt_does_not_satisfy_the_cname_method() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_order(NewOrder::new(22, &["example.com"]).with_method(DcvMethod::DnsCnameToken));
    let value = random_value(&h, 22).await;
    dns.add_txt("_dnsauth.example.com", &value).await;
    assert_eq!(check(&h, 22).await.status, 400);
}

/// The random value is returned unchanged while valid and renewed once expired (the clock is
/// advanced through the admin API); a check with an expired value fails, and the old value in
/// DNS does not validate the renewed one.
#[tokio::test]
async fn random_value_expiry_and_renewal() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(SimConfig { token_validity: Duration::from_secs(3600), ..config(&[&dns]) }).await;
    h.sim().add_order(NewOrder::new(30, &["example.com"]));
    let first = h.api("PUT", "/order/certificate/30/dcv-random-value", None).await;
    let again = h.api("PUT", "/order/certificate/30/dcv-random-value", None).await;
    assert_eq!(first.json, again.json, "a valid random value must be returned unchanged");
    let old = first.json["dcv_random_value"].as_str().unwrap().to_string();
    let old_expiry = first.json["expiration_date"].as_str().unwrap().to_string();
    assert!(old_expiry.ends_with("+00:00"), "{old_expiry}");
    assert!(h.sim().order(30).unwrap().random_value_valid);

    let a = h.admin("POST", "/clock/advance", Some(json!({"seconds": 3601}))).await;
    assert_eq!(a.status, 200);
    assert!(!h.sim().order(30).unwrap().random_value_valid);
    dns.add_txt("_dnsauth.example.com", &old).await;
    let a = check(&h, 30).await;
    assert_eq!(a.status, 400, "an expired value must not validate");
    assert_eq!(h.sim().stats().checks.last().unwrap().outcome, CheckOutcome::Expired);

    let renewed = h.api("PUT", "/order/certificate/30/dcv-random-value", None).await;
    let new = renewed.json["dcv_random_value"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(renewed.json["expiration_date"].as_str().unwrap() > old_expiry.as_str());
    assert_eq!(check(&h, 30).await.status, 400, "the old value must not validate the new one");
    dns.add_txt("_dnsauth.example.com", &new).await;
    assert_eq!(check(&h, 30).await.status, 200);
    assert_eq!(h.sim().stats().tokens_issued, 1);
}

/// With issue_on_valid = false the order stays pending with dcv_status valid.
#[tokio::test]
async fn keep_pending_option() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(SimConfig { issue_on_valid: false, ..config(&[&dns]) }).await;
    h.sim().add_order(NewOrder::new(40, &["example.com"]));
    let value = random_value(&h, 40).await;
    dns.add_txt("_dnsauth.example.com", &value).await;
    let a = check(&h, 40).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["order_status"], "pending");
    assert_eq!(a.json["dcv_status"], "valid");
    assert_eq!(h.sim().order(40).unwrap().dcv_status, "valid");
}

/// Change order DCV method: 204, visible in Order info; an unknown method answers 400
/// invalid_dcv_method.
#[tokio::test]
async fn change_dcv_method() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_order(NewOrder::new(50, &["example.com"]));
    let a = h.api("PUT", "/order/certificate/50/dcv-method", Some(json!({"dcv_method": "dns-cname-token"}))).await;
    assert_eq!(a.status, 204, "{}", a.text);
    let info = h.api("GET", "/order/certificate/50", None).await;
    assert_eq!(info.json["dcv_method"], "dns-cname-token");
    let a = h.api("PUT", "/order/certificate/50/dcv-method", Some(json!({"dcv_method": "carrier-pigeon"}))).await;
    assert_eq!(a.status, 400);
    assert_eq!(error_of(&a).0, "invalid_dcv_method");
}

/// Email and http-token orders answer DigiCert's documented 400s on check-dcv.
#[tokio::test]
async fn email_and_http_orders_answer_documented_errors() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_order(NewOrder::new(60, &["example.com"]).with_method(DcvMethod::Email));
    h.sim().add_order(NewOrder::new(61, &["example.com"]).with_method(DcvMethod::HttpToken));
    let a = check(&h, 60).await;
    assert_eq!(a.status, 400);
    assert_eq!(error_of(&a), ("invalid_dns_method".into(), "An error occurred while processing your request.".into()));
    let a = check(&h, 61).await;
    assert_eq!(a.status, 400);
    assert_eq!(error_of(&a).0, "file_random_value_not_found");
    let a = h.api("PUT", "/order/certificate/60/dcv-random-value", None).await;
    assert_eq!(error_of(&a).0, "invalid_dcv_method");
}

/// Unknown orders, non-numeric ids and unknown paths answer 404 not_found.
#[tokio::test]
async fn unknown_orders_answer_404_not_found() {
    let h = Harness::start(config(&[])).await;
    for (method, path) in [
        ("PUT", "/order/certificate/999/dcv-random-value"),
        ("PUT", "/order/certificate/999/check-dcv"),
        ("GET", "/order/certificate/999"),
        ("GET", "/order/certificate/999/validation"),
        ("PUT", "/order/certificate/abc/check-dcv"),
        ("GET", "/no/such/endpoint"),
    ] {
        let a = h.api(method, path, None).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.text);
        assert_eq!(error_of(&a).0, "not_found", "{method} {path}");
    }
}

/// With no name server configured every check fails (and counts a DNS error), never panics.
#[tokio::test]
async fn no_dns_servers_means_checks_fail() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_order(NewOrder::new(70, &["example.com"]));
    assert_eq!(check(&h, 70).await.status, 400);
    assert!(h.sim().stats().dns_errors > 0);
}
