//! OV/EV domains over HTTP against a real (in-process) authoritative DNS server: submit for
//! validation, token generation and replacement, validate-token, Domain info, methods, errors.

mod common;

use std::time::Duration;

use certcentral_sim::{DcvMethod, NewDomain, SimConfig};
use common::{Harness, TestDns, config, error_of};
use serde_json::json;

/// Submit with dns-txt-token returns a dcv_token; validate-token fails until the TXT is served,
/// then answers {token, status: active}; Domain info shows the validations active.
#[tokio::test]
async fn submit_txt_then_validate() {
    let dns = TestDns::start(&["example.org"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_domain(NewDomain::new(112233, "example.org"));

    let a = h
        .api(
            "POST",
            "/domain/112233/validation",
            Some(json!({"validations": [{"type": "ov"}, {"type": "ev"}], "dcv_method": "dns-txt-token"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["id"], 112233);
    let token = a.json["dcv_token"]["token"].as_str().unwrap().to_string();
    assert!(a.json["dcv_token"].get("verification_value").is_none());

    let v = h.api("PUT", "/domain/112233/dcv/validate-token", None).await;
    assert_eq!(v.status, 400);
    assert_eq!(
        error_of(&v),
        ("invalid_dns_txt".into(), "Could not find a valid TXT record for one or more domains.".into())
    );

    dns.add_txt("_dnsauth.example.org", &token).await;
    let v = h.api("PUT", "/domain/112233/dcv/validate-token", None).await;
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.json, json!({"token": token, "status": "active"}));

    let info = h.api("GET", "/domain/112233?include_dcv=true&include_validation=true", None).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json["name"], "example.org");
    assert_eq!(info.json["dcv_method"], "dns-txt-token");
    assert_eq!(info.json["dcv_token"]["token"], token.as_str());
    assert_eq!(info.json["dcv_token"]["status"], "active");
    let validations = info.json["validations"].as_array().unwrap();
    assert_eq!(validations.len(), 2);
    assert!(validations.iter().all(|v| v["status"] == "active"), "{validations:?}");
    assert!(h.sim().domain(112233).unwrap().dcv_valid);
}

/// CNAME method: submit returns verification_value dcv.digicert.com; the failure code carries
/// DigiCert's documented leading space; `_dnsauth.<name>` -> `<token>.dcv.digicert.com` works.
#[tokio::test]
async fn cname_method_with_leading_space_error_code() {
    let dns = TestDns::start(&["example.org"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_domain(NewDomain::new(5, "example.org"));
    let a = h
        .api(
            "POST",
            "/domain/5/validation",
            Some(json!({"validations": [{"type": "ov"}], "dcv_method": "dns-cname-token"})),
        )
        .await;
    assert_eq!(a.json["dcv_token"]["verification_value"], "dcv.digicert.com");
    let token = a.json["dcv_token"]["token"].as_str().unwrap().to_string();

    let v = h.api("PUT", "/domain/5/dcv/validate-token", None).await;
    assert_eq!(v.status, 400);
    assert_eq!(error_of(&v), (" invalid_dns_cname".into(), "Requested domain does not have a valid cname.".into()));
    dns.add_cname("_dnsauth.example.org", &format!("{token}.dcv.digicert.com")).await;
    let v = h.api("PUT", "/domain/5/dcv/validate-token", None).await;
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.json["status"], "active");
}

/// The older CNAME form validates a domain too, and a wildcard domain name is stripped.
#[tokio::test]
async fn cname_older_form_for_a_wildcard_domain() {
    let dns = TestDns::start(&["example.org"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_domain(NewDomain::new(6, "*.example.org").with_method(DcvMethod::DnsCnameToken));
    let t = h.api("POST", "/domain/6/dcv/token", None).await;
    assert_eq!(t.status, 200);
    let token = t.json["token"].as_str().unwrap().to_string();
    dns.add_cname(&format!("{token}.example.org"), "dcv.digicert.com").await;
    let v = h.api("PUT", "/domain/6/dcv/validate-token", None).await;
    assert_eq!(v.status, 200, "{}", v.text);
}

/// A new token replaces the old one: a record holding the old token no longer validates.
#[tokio::test]
async fn new_token_replaces_the_old_one() {
    let dns = TestDns::start(&["example.org"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    h.sim().add_domain(NewDomain::new(7, "example.org"));
    let t1 = h.api("POST", "/domain/7/dcv/token", None).await;
    assert_eq!(t1.status, 200, "{}", t1.text);
    let t1 = t1.json["token"].as_str().unwrap().to_string();
    let t2 = h.api("POST", "/domain/7/dcv/token", None).await;
    let t2 = t2.json["token"].as_str().unwrap().to_string();
    assert_ne!(t1, t2);

    dns.add_txt("_dnsauth.example.org", &t1).await;
    assert_eq!(h.api("PUT", "/domain/7/dcv/validate-token", None).await.status, 400);
    dns.add_txt("_dnsauth.example.org", &t2).await;
    let v = h.api("PUT", "/domain/7/dcv/validate-token", None).await;
    assert_eq!(v.status, 200);
    assert_eq!(v.json["token"], t2.as_str());
    assert_eq!(h.sim().stats().tokens_issued, 2);
}

/// Submit reuses a still-valid token instead of replacing it.
#[tokio::test]
async fn submit_reuses_a_valid_token() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_domain(NewDomain::new(8, "example.org"));
    let body = json!({"validations": [{"type": "ov"}], "dcv_method": "dns-txt-token"});
    let a = h.api("POST", "/domain/8/validation", Some(body.clone())).await;
    let b = h.api("POST", "/domain/8/validation", Some(body)).await;
    assert_eq!(a.json["dcv_token"], b.json["dcv_token"]);
}

/// An expired token does not validate; a new one does.
#[tokio::test]
async fn expired_token_fails_until_renewed() {
    let dns = TestDns::start(&["example.org"], 0).await;
    let h = Harness::start(SimConfig { token_validity: Duration::from_secs(600), ..config(&[&dns]) }).await;
    h.sim().add_domain(NewDomain::new(9, "example.org"));
    let t = h.api("POST", "/domain/9/dcv/token", None).await;
    let t = t.json["token"].as_str().unwrap().to_string();
    dns.add_txt("_dnsauth.example.org", &t).await;
    h.sim().advance_clock(Duration::from_secs(601));
    assert!(!h.sim().domain(9).unwrap().token_valid);
    assert_eq!(h.api("PUT", "/domain/9/dcv/validate-token", None).await.status, 400);
    let t2 = h.api("POST", "/domain/9/dcv/token", None).await;
    let t2 = t2.json["token"].as_str().unwrap().to_string();
    dns.add_txt("_dnsauth.example.org", &t2).await;
    assert_eq!(h.api("PUT", "/domain/9/dcv/validate-token", None).await.status, 200);
}

/// Email method: submit returns validation_emails; token requests answer invalid_dcv_method;
/// validate-token answers invalid_dns_method.
#[tokio::test]
async fn email_method() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_domain(NewDomain::new(10, "example.com"));
    let a = h
        .api(
            "POST",
            "/domain/10/validation",
            Some(json!({"validations": [{"type": "ov"}], "dcv_method": "email", "email_array": ["admin@example.com"]})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["validation_emails"]["name_scope"], "example.com");
    assert_eq!(a.json["validation_emails"]["base_emails"].as_array().unwrap().len(), 5);

    let t = h.api("POST", "/domain/10/dcv/token", None).await;
    assert_eq!(t.status, 400);
    assert_eq!(
        error_of(&t),
        ("invalid_dcv_method".into(), "This domain's DCV method is set incorrectly for this action.".into())
    );
    let v = h.api("PUT", "/domain/10/dcv/validate-token", None).await;
    assert_eq!(error_of(&v).0, "invalid_dns_method");
}

/// Submit without dcv_method answers an empty body and records the validation types; Domain info
/// includes dcv_token and validations only when asked.
#[tokio::test]
async fn submit_without_method_and_domain_info_flags() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_domain(NewDomain::new(11, "example.com"));
    let a = h.api("POST", "/domain/11/validation", Some(json!({"validations": [{"type": "ev"}]}))).await;
    assert_eq!(a.status, 204, "{}", a.text);
    assert!(a.text.is_empty());
    let _ = h.api("POST", "/domain/11/dcv/token", None).await;

    let bare = h.api("GET", "/domain/11", None).await;
    assert_eq!(bare.status, 200);
    assert!(bare.json.get("dcv_token").is_none() && bare.json.get("validations").is_none(), "{}", bare.text);
    let full = h.api("GET", "/domain/11?include_dcv=true&include_validation=true", None).await;
    assert_eq!(full.json["dcv_token"]["status"], "pending");
    assert_eq!(
        full.json["validations"],
        json!([{"type": "ev", "name": "EV", "status": "pending", "dcv_status": "pending"}])
    );
    assert_eq!(full.json["status"], "active");
}

/// Bad submit bodies and unknown domains answer clear 400s and 404s.
#[tokio::test]
async fn submit_errors_and_unknown_domains() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_domain(NewDomain::new(12, "example.com"));
    let a = h.api("POST", "/domain/12/validation", Some(json!({"dcv_method": "dns-txt-token"}))).await;
    assert_eq!(a.status, 400);
    assert_eq!(error_of(&a).0, "missing_param");
    let a = h
        .api("POST", "/domain/12/validation", Some(json!({"validations": [{"type": "ov"}], "dcv_method": "smoke"})))
        .await;
    assert_eq!(error_of(&a).0, "invalid_dcv_method");
    for (method, path) in [
        ("GET", "/domain/404"),
        ("POST", "/domain/404/validation"),
        ("POST", "/domain/404/dcv/token"),
        ("PUT", "/domain/404/dcv/validate-token"),
    ] {
        let a = h.api(method, path, Some(json!({"validations": [{"type": "ov"}]}))).await;
        assert_eq!(a.status, 404, "{method} {path}");
        assert_eq!(error_of(&a).0, "not_found");
    }
}
