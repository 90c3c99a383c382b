//! List orders and List domains on the simulator: filters, paging, the 1000 cap, absent keys as
//! DigiCert leaves them out, date formats, the admin calls that move orders and domains at run
//! time, the bulk account, and that list calls are counted and rate limited like any call.

mod common;

use std::time::Duration;

use certcentral_sim::{DcvMethod, NewDomain, NewOrder, SimConfig, SyntheticAccount};
use chrono::{TimeZone, Utc};
use common::{Harness, TestDns, config, error_of};
use serde_json::{Value, json};

fn ids(list: &Value, key: &str) -> Vec<u64> {
    list[key].as_array().map(|a| a.iter().map(|o| o["id"].as_u64().unwrap()).collect()).unwrap_or_default()
}

/// Twelve orders: statuses, products and containers vary.
fn seed_orders(h: &Harness) {
    for id in 1..=12u64 {
        let status = match id % 4 {
            0 => "issued",
            1 => "canceled",
            _ => "pending",
        };
        let product = if id % 3 == 0 { "ssl_plus" } else { "ssl_dv_geotrust" };
        h.sim().add_order(
            NewOrder::new(id, &[&format!("o{id}.example.com")])
                .with_status(status)
                .with_product(product)
                .with_container(if id > 6 { 2 } else { 1 }),
        );
    }
}

/// Filters by status, product and container combine; entries have DigiCert's List orders
/// shape (no `dcv_method`); `page.total` counts every match.
#[tokio::test]
async fn list_orders_filters() {
    let h = Harness::start(config(&[])).await;
    seed_orders(&h);
    let pending = h.api("GET", "/order/certificate?filters%5Bstatus%5D=pending", None).await;
    assert_eq!(pending.status, 200, "{}", pending.text);
    assert_eq!(ids(&pending.json, "orders"), [2, 3, 6, 7, 10, 11]);
    assert_eq!(pending.json["page"], json!({"total": 6, "limit": 1000, "offset": 0}));
    let first = &pending.json["orders"][0];
    assert!(first.get("dcv_method").is_none(), "{first}");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["product"]["name_id"], "ssl_dv_geotrust");
    assert_eq!(first["product"]["type"], "dv_ssl_certificate");
    assert_eq!(first["product_name_id"], "ssl_dv_geotrust");
    assert_eq!(first["container"]["id"], 1);
    assert_eq!(first["certificate"]["dns_names"], json!(["o2.example.com"]));
    assert!(chrono::DateTime::parse_from_rfc3339(first["date_created"].as_str().unwrap()).is_ok());

    let narrowed = h
        .api(
            "GET",
            "/order/certificate?filters[status]=pending&filters[product_name_id]=ssl_plus&filters[container_id]=1",
            None,
        )
        .await;
    assert_eq!(ids(&narrowed.json, "orders"), [3, 6]);
    let container2 = h.api("GET", "/order/certificate?filters[container_id]=2", None).await;
    assert_eq!(ids(&container2.json, "orders"), [7, 8, 9, 10, 11, 12]);
    let all = h.api("GET", "/order/certificate", None).await;
    assert_eq!(all.json["page"]["total"], 12);

    // Order info carries what the list leaves out
    let info = h.api("GET", "/order/certificate/3", None).await;
    assert_eq!(info.json["dcv_method"], "dns-txt-token");
    assert_eq!(info.json["product"]["name_id"], "ssl_plus");
    assert_eq!(info.json["container"]["id"], 1);
}

/// Paging by offset and limit; past the end and with no match, the `orders` key is left out.
#[tokio::test]
async fn list_orders_paging_and_empty_answer() {
    let h = Harness::start(config(&[])).await;
    seed_orders(&h);
    let p1 = h.api("GET", "/order/certificate?filters[status]=pending&offset=0&limit=4", None).await;
    let p2 = h.api("GET", "/order/certificate?filters[status]=pending&offset=4&limit=4", None).await;
    assert_eq!(ids(&p1.json, "orders"), [2, 3, 6, 7]);
    assert_eq!(ids(&p2.json, "orders"), [10, 11]);
    assert_eq!(p2.json["page"], json!({"total": 6, "limit": 4, "offset": 4}));
    let past = h.api("GET", "/order/certificate?filters[status]=pending&offset=6&limit=4", None).await;
    assert_eq!(past.status, 200);
    assert!(past.json.get("orders").is_none(), "{}", past.text);
    let none = h.api("GET", "/order/certificate?filters[status]=rejected", None).await;
    assert_eq!(none.json, json!({"page": {"total": 0, "limit": 1000, "offset": 0}}));
}

/// GUESSES: limit above 1000, bad numbers and unknown statuses answer 400 `invalid_param`; a
/// filter the simulator lacks answers 400 `unsupported_filter`; none changes anything.
#[tokio::test]
async fn list_parameters_are_checked() {
    let h = Harness::start(config(&[])).await;
    seed_orders(&h);
    for (path, code, needle) in [
        ("/order/certificate?limit=1001", "invalid_param", "at most 1000"),
        ("/order/certificate?offset=-1", "invalid_param", "offset"),
        ("/order/certificate?filters[status]=done", "invalid_param", "done"),
        ("/order/certificate?filters[container_id]=x", "invalid_param", "container_id"),
        ("/order/certificate?filters[common_name]=a", "unsupported_filter", "common_name"),
        ("/domain?limit=5000", "invalid_param", "at most 1000"),
        ("/domain?filters[status]=pending", "invalid_param", "active or inactive"),
        ("/domain?filters[product_name_id]=ssl_plus", "unsupported_filter", "product_name_id"),
    ] {
        let a = h.api("GET", path, None).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        let (got, message) = error_of(&a);
        assert_eq!(got, code, "{path}");
        assert!(message.contains(needle), "{path}: {message}");
    }
    assert_eq!(h.api("GET", "/order/certificate?limit=1000", None).await.status, 200);
    assert_eq!(h.api("GET", "/order/certificate?limit=0", None).await.json["page"]["limit"], 1000);
}

/// List calls count per endpoint and against the rate limit like every call.
#[tokio::test]
async fn list_calls_are_counted_and_rate_limited() {
    let h = Harness::start(SimConfig { rate_limits: vec![(3, Duration::from_secs(60))], ..config(&[]) }).await;
    seed_orders(&h);
    assert_eq!(h.api("GET", "/order/certificate", None).await.status, 200);
    assert_eq!(h.api("GET", "/domain", None).await.status, 200);
    assert_eq!(h.api("GET", "/order/certificate/2", None).await.status, 200);
    let limited = h.api("GET", "/domain", None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(error_of(&limited).0, "request_limit_exceeded");
    let stats = h.sim().stats();
    assert_eq!(stats.calls.get("list_orders"), Some(&1));
    assert_eq!(stats.calls.get("list_domains"), Some(&2));
    assert_eq!(stats.rate_limited, 1);
    assert!(stats.order_calls.keys().all(|id| *id == 2), "list calls are not per-order: {:?}", stats.order_calls);
}

/// `PATCH /_sim/orders/{id}` moves an order out of the pending list; unknown statuses and ids
/// are refused; the DCV method of a non-pending order cannot change (GUESS: 400
/// `invalid_order_status`).
#[tokio::test]
async fn order_status_changes_at_run_time() {
    let h = Harness::start(config(&[])).await;
    seed_orders(&h);
    let a = h.admin("PATCH", "/orders/2", Some(json!({"status": "issued"}))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["status"], "issued");
    let pending = h.api("GET", "/order/certificate?filters[status]=pending", None).await;
    assert_eq!(ids(&pending.json, "orders"), [3, 6, 7, 10, 11]);
    let moved =
        h.admin("PATCH", "/orders/3", Some(json!({"product_name_id": "ssl_ev_basic", "container_id": 9}))).await;
    assert_eq!(
        (moved.json["product_name_id"].as_str(), moved.json["container_id"].as_u64()),
        (Some("ssl_ev_basic"), Some(9))
    );
    assert_eq!(h.api("GET", "/order/certificate/3", None).await.json["product"]["type"], "ssl_certificate");

    let bad = h.admin("PATCH", "/orders/3", Some(json!({"status": "done"}))).await;
    assert_eq!(bad.status, 400);
    assert!(error_of(&bad).1.contains("unknown order status \"done\""), "{}", bad.text);
    assert_eq!(h.admin("PATCH", "/orders/999", Some(json!({"status": "issued"}))).await.status, 404);
    assert_eq!(h.admin("PATCH", "/orders/3", Some(json!({"colour": "red"}))).await.status, 400);

    let change = h.api("PUT", "/order/certificate/2/dcv-method", Some(json!({"dcv_method": "dns-cname-token"}))).await;
    assert_eq!(change.status, 400);
    assert_eq!(error_of(&change).0, "invalid_order_status");
    assert_eq!(h.sim().order(2).unwrap().dcv_method, DcvMethod::DnsTxtToken);
    let change = h.api("PUT", "/order/certificate/3/dcv-method", Some(json!({"dcv_method": "dns-cname-token"}))).await;
    assert_eq!(change.status, 204);
}

/// List domains: `validations` only active ones and left out when none; `dcv_expiration` only
/// once DCV completed, as UTC timestamps with `include_dcv_expiration_time=true` and as Mountain
/// Time dates without (GUESS: fixed UTC-7); `filters[status]` on `is_active`; containers.
#[tokio::test]
async fn list_domains_shapes_and_filters() {
    let h = Harness::start(config(&[])).await;
    let now = h.sim().now();
    let soon = Utc.with_ymd_and_hms(2040, 3, 27, 3, 0, 0).unwrap();
    h.sim().add_domain(NewDomain::new(1, "validated.example.com").validated("ov", soon).validated("ev", soon));
    h.sim().add_domain(NewDomain::new(2, "fresh.example.com").pending("ov"));
    h.sim().add_domain(NewDomain::new(3, "lapsed.example.org").validated("ov", now - chrono::Duration::days(1)));
    h.sim().add_domain(NewDomain::new(4, "other.example.net").with_container(5));
    h.sim().update_domain(4, certcentral_sim::DomainPatch { is_active: Some(false), ..Default::default() }).unwrap();

    let list = h.api("GET", "/domain?include_dcv_expiration_time=true", None).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(ids(&list.json, "domains"), [1, 2, 3, 4]);
    let d = &list.json["domains"];
    assert_eq!(d[0]["validations"].as_array().unwrap().len(), 2);
    assert_eq!(d[0]["validations"][0]["validated_until"], "2040-03-27T03:00:00+00:00");
    assert_eq!(d[0]["validations"][0]["status"], "active");
    assert_eq!(d[0]["dcv_expiration"], json!({"ev": "2040-03-27T03:00:00+00:00", "ov": "2040-03-27T03:00:00+00:00"}));
    assert!(d[0].get("dcv_token").is_none());
    assert_eq!(d[0]["base_domain"], "example.com");
    assert!(d[1].get("validations").is_none() && d[1].get("dcv_expiration").is_none(), "{}", d[1]);
    assert!(d[2].get("validations").is_none(), "an expired validation is not active: {}", d[2]);
    assert!(d[2].get("dcv_expiration").is_some(), "DCV completed once: {}", d[2]);
    assert_eq!((d[3]["is_active"].as_bool(), d[3]["container"]["id"].as_u64()), (Some(false), Some(5)));

    let dates = h.api("GET", "/domain?filters[status]=active&limit=1", None).await;
    assert_eq!(ids(&dates.json, "domains"), [1]);
    assert_eq!(dates.json["page"], json!({"total": 3, "limit": 1, "offset": 0}));
    // 03:00 UTC is still the previous day in Mountain Time
    assert_eq!(dates.json["domains"][0]["dcv_expiration"]["ov"], "2040-03-26");
    let inactive = h.api("GET", "/domain?filters[status]=inactive", None).await;
    assert_eq!(ids(&inactive.json, "domains"), [4]);
    let container = h.api("GET", "/domain?filters[container_id]=5", None).await;
    assert_eq!(ids(&container.json, "domains"), [4]);
    let past = h.api("GET", "/domain?offset=10", None).await;
    assert!(past.json.get("domains").is_none(), "{}", past.text);

    // Domain info shows every validation, the expired one as such (GUESS: "expired")
    let info = h.api("GET", "/domain/3?include_dcv=true&include_validation=true", None).await;
    assert_eq!(info.json["validations"][0]["status"], "expired");
    assert_eq!(info.json["validations"][0]["dcv_status"], "pending");
    let info =
        h.api("GET", "/domain/1?include_dcv=true&include_validation=true&include_dcv_expiration_time=true", None).await;
    assert_eq!(info.json["validations"][1]["dcv_status"], "complete");
    assert_eq!(info.json["dcv_expiration"]["ev"], "2040-03-27T03:00:00+00:00");
    assert_eq!(info.json["is_active"], true);
    assert_eq!(info.json["container"]["id"], 1);
}

/// `PATCH /_sim/domains/{id}` sets validation and DCV expiry dates; a domain whose dates all
/// lapse is no longer DCV-complete.
#[tokio::test]
async fn domain_dates_change_at_run_time() {
    let h = Harness::start(config(&[])).await;
    let now = h.sim().now();
    h.sim().add_domain(NewDomain::new(1, "example.com").validated("ov", now + chrono::Duration::days(200)));
    assert!(h.sim().domain(1).unwrap().dcv_valid);
    let until = (now + chrono::Duration::days(10)).to_rfc3339();
    let a = h.admin("PATCH", "/domains/1", Some(json!({"validations": {"ov": until, "ev": null}}))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["validations"], json!({"ev": "pending", "ov": "active"}));
    let listed = h.api("GET", "/domain?include_dcv_expiration_time=true", None).await;
    let shown = listed.json["domains"][0]["dcv_expiration"]["ov"].as_str().unwrap().to_string();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&shown).unwrap().timestamp(),
        (now + chrono::Duration::days(10)).timestamp()
    );

    let past = (now - chrono::Duration::days(1)).to_rfc3339();
    let a = h
        .admin("PATCH", "/domains/1", Some(json!({"validations": {"ov": past}, "dcv_expiration": {"ov": past}})))
        .await;
    assert_eq!(a.json["validations"]["ov"], "expired", "{}", a.text);
    assert_eq!(a.json["dcv_valid"], false);
    assert_eq!(h.admin("PATCH", "/domains/77", Some(json!({"is_active": false}))).await.status, 404);
    assert_eq!(h.admin("PATCH", "/domains/1", Some(json!({"validations": {"ov": "soon"}}))).await.status, 400);
}

/// Revalidation: a domain validated until ten days from now is submitted again (GUESS: a new
/// DCV cycle), fails the check until its record is in DNS, then validates for 397 more days.
#[tokio::test]
async fn expiring_domain_revalidates() {
    let dns = TestDns::start(&["example.com"], 0).await;
    let h = Harness::start(config(&[&dns])).await;
    let now = h.sim().now();
    h.sim().add_domain(NewDomain::new(1, "example.com").validated("ov", now + chrono::Duration::days(10)));
    let submit = h
        .api(
            "POST",
            "/domain/1/validation",
            Some(json!({"validations": [{"type": "ov"}], "dcv_method": "dns-txt-token"})),
        )
        .await;
    assert_eq!(submit.status, 200, "{}", submit.text);
    let token = submit.json["dcv_token"]["token"].as_str().unwrap().to_string();
    assert_eq!(h.api("PUT", "/domain/1/dcv/validate-token", None).await.status, 400);
    dns.add_txt("_dnsauth.example.com", &token).await;
    let ok = h.api("PUT", "/domain/1/dcv/validate-token", None).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let view = h.sim().domain(1).unwrap();
    let renewed = view.dcv_expiration["ov"];
    assert!(renewed > now + chrono::Duration::days(396), "{renewed}");
    assert_eq!(view.validated_until["ov"], renewed);
}

/// The bulk helper: 10,000 orders of which 500 pending, 5,000 domains; paging through them
/// with limit 1000 takes 1 and 5 calls.
#[tokio::test]
async fn bulk_account_pages() {
    let h = Harness::start(config(&[])).await;
    let a = h.admin("POST", "/bulk", Some(json!({"orders": 10000, "pending": 500, "domains": 5000}))).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json, json!({"orders": 10000, "domains": 5000}));
    let pending = h.api("GET", "/order/certificate?filters[status]=pending&limit=1000", None).await;
    assert_eq!(pending.json["page"]["total"], 500);
    assert_eq!(pending.json["orders"].as_array().unwrap().len(), 500);
    let mut seen = 0;
    let mut calls = 0;
    loop {
        let page = h.api("GET", &format!("/domain?offset={seen}&limit=1000"), None).await;
        calls += 1;
        let n = page.json["domains"].as_array().map_or(0, Vec::len);
        seen += n;
        if n == 0 || seen >= page.json["page"]["total"].as_u64().unwrap() as usize {
            break;
        }
    }
    assert_eq!((seen, calls), (5000, 5));
    let bad = h.admin("POST", "/bulk", Some(json!({"orders": 1, "pending": 2}))).await;
    assert_eq!(bad.status, 400);
    let counts = h.sim().add_synthetic(&SyntheticAccount { orders: 3, first_order_id: 50_000, ..Default::default() });
    assert_eq!(counts, (3, 0));
}

/// The real client walks a 10,000-order (500 pending), 5,000-domain account in one List orders
/// call and five List domains calls, and the simulator counts exactly those (the measured
/// version with rate limits: `cargo run -p certcentral-sim --example scan_cost`).
#[tokio::test]
async fn client_walks_the_bulk_account_in_six_calls() {
    let h = Harness::start(config(&[])).await;
    h.sim().add_synthetic(&SyntheticAccount { orders: 10_000, pending: 500, domains: 5_000, ..Default::default() });
    let mut client_config = certcentral::ClientConfig::new(h.running.base_url.clone(), common::KEY.to_string().into());
    client_config.allow_insecure_http = true;
    let client = certcentral::Client::new(client_config).unwrap();

    let orders = client.list_all_orders(&certcentral::OrderFilter::pending()).await.unwrap();
    assert_eq!((orders.calls, orders.total, orders.items.len()), (1, 500, 500));
    assert!(orders.items.iter().all(|o| o.status == "pending" && o.product_name_id() == Some("ssl_dv_geotrust")));
    let domains = client.list_all_domains(&certcentral::DomainFilter::active()).await.unwrap();
    assert_eq!((domains.calls, domains.total, domains.items.len()), (5, 5000, 5000));
    let due = domains
        .items
        .iter()
        .filter(|d| {
            d.dcv_expiration.as_ref().and_then(|e| e.ov).is_some_and(|t| t <= Utc::now() + chrono::Duration::days(30))
        })
        .count();
    assert_eq!(due, 390, "30 of every 397 domains fall due within 30 days");
    let stats = h.sim().stats();
    assert_eq!((stats.calls.get("list_orders"), stats.calls.get("list_domains")), (Some(&1), Some(&5)));
    assert_eq!(stats.calls.values().sum::<u64>(), 6);
}
