//! Discovery endpoints against DigiCert's documented and recorded bodies: List orders and List
//! domains (one page, every page, the empty answer without `orders`, domains without
//! `validations` or `dcv_expiration`, dates with `Z`, `+00:00` or none), Order info's product and
//! container, and the Order validation status's scope fields with string ids.

mod common;

use certcentral::types::DcvMethod;
use certcentral::{DomainFilter, Endpoint, OrderFilter};
use chrono::{TimeZone, Utc};
use common::{api, client, config, json, observed_client};
use serde_json::json as j;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../test-support/fixtures/digicert/", $name))
    };
}

/// `count` pending orders starting at id `first`, in List orders' shape.
fn orders_page(first: u64, count: u64, total: u64, offset: u64) -> String {
    let orders: Vec<_> = (first..first + count)
        .map(|id| {
            j!({"id": id, "status": "pending",
                "certificate": {"common_name": format!("o{id}.example.com"), "dns_names": [format!("o{id}.example.com")]},
                "product": {"name_id": "ssl_dv_geotrust"}, "container": {"id": 7}})
        })
        .collect();
    j!({"orders": orders, "page": {"total": total, "limit": 1000, "offset": offset}}).to_string()
}

/// The documented List orders answer parses: both entries, product and container (a string
/// container id too), no `dcv_method`, the DV example's `organization: []` ignored.
#[tokio::test]
async fn list_orders_documented_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate")))
        .and(query_param("filters[status]", "pending"))
        .and(query_param("offset", "0"))
        .and(query_param("limit", "1000"))
        .and(query_param_is_missing("filters[product_name_id]"))
        .respond_with(json(200, fixture!("list-orders.200-varied.json")))
        .expect(1)
        .mount(&server)
        .await;
    let list = client(&server).list_orders(&OrderFilter::pending(), 0, 1000).await.unwrap();
    assert_eq!(list.page.total, 2);
    assert_eq!(list.orders.len(), 2);
    let first = &list.orders[0];
    assert_eq!((first.id, first.status.as_str()), (123456, "pending"));
    assert_eq!(first.product_name_id(), Some("ssl_plus"));
    assert_eq!(first.container_id(), Some(14));
    assert_eq!(first.date_created, Some(Utc.with_ymd_and_hms(2018, 10, 16, 17, 29, 56).unwrap()));
    let second = &list.orders[1];
    assert_eq!(second.container_id(), Some(15));
    assert_eq!(second.product_name_id(), Some("ssl_dv_geotrust"));
    assert_eq!(second.certificate.dns_names, ["shop.example.net", "www.shop.example.net"]);
    assert_eq!(second.date_created, Some(Utc.with_ymd_and_hms(2018, 10, 17, 9, 0, 0).unwrap()));
}

/// Filters and paging go into the query string; a limit above 1000 is sent as 1000.
#[tokio::test]
async fn list_orders_filters_and_limit_cap() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate")))
        .and(query_param("filters[status]", "pending"))
        .and(query_param("filters[product_name_id]", "ssl_dv_geotrust"))
        .and(query_param("filters[container_id]", "7"))
        .and(query_param("offset", "2000"))
        .and(query_param("limit", "1000"))
        .respond_with(json(200, &orders_page(1, 3, 2003, 2000)))
        .expect(1)
        .mount(&server)
        .await;
    let filter = OrderFilter {
        product_name_id: Some("ssl_dv_geotrust".into()),
        container_id: Some(7),
        ..OrderFilter::pending()
    };
    let list = client(&server).list_orders(&filter, 2000, 5000).await.unwrap();
    assert_eq!(list.orders.len(), 3);
    assert_eq!(list.page, certcentral::types::Page { total: 2003, limit: 1000, offset: 2000 });
}

/// 2,500 pending orders: three calls (offsets 0, 1000, 2000), every order once, each call
/// reported to the observer as `list_orders`.
#[tokio::test]
async fn list_all_orders_walks_three_pages() {
    let server = MockServer::start().await;
    for (offset, count) in [(0u64, 1000u64), (1000, 1000), (2000, 500)] {
        Mock::given(method("GET"))
            .and(path(api("/order/certificate")))
            .and(query_param("filters[status]", "pending"))
            .and(query_param("offset", offset.to_string()))
            .and(query_param("limit", "1000"))
            .respond_with(json(200, &orders_page(offset + 1, count, 2500, offset)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let (client, records) = observed_client(config(&server));
    let all = client.list_all_orders(&OrderFilter::pending()).await.unwrap();
    assert_eq!((all.calls, all.total, all.items.len()), (3, 2500, 2500));
    let ids: Vec<u64> = all.items.iter().map(|o| o.id).collect();
    assert_eq!(ids, (1..=2500).collect::<Vec<_>>());
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.endpoint == Endpoint::ListOrders && r.status == Some(200)));
}

/// No pending order: DigiCert leaves out the `orders` key; one call, nothing listed.
#[tokio::test]
async fn list_orders_empty_answer_has_no_orders_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate")))
        .respond_with(json(200, fixture!("list-orders.200-empty.json")))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let all = client.list_all_orders(&OrderFilter::pending()).await.unwrap();
    assert_eq!((all.calls, all.total, all.items.len()), (1, 0, 0));
}

/// A server that ignores `offset` (the same page again) cannot make the walk loop: the second
/// page brings nothing new and the walk stops.
#[tokio::test]
async fn list_all_orders_stops_when_a_page_brings_nothing_new() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate")))
        .respond_with(json(200, &orders_page(1, 1000, 5000, 0)))
        .expect(2)
        .mount(&server)
        .await;
    let all = client(&server).list_all_orders(&OrderFilter::pending()).await.unwrap();
    assert_eq!((all.calls, all.items.len()), (2, 1000));
}

/// Without `page`, the walk goes on while pages are full and stops at a short one.
#[tokio::test]
async fn list_all_orders_without_page_object() {
    let server = MockServer::start().await;
    for (offset, count) in [(0u64, 1000u64), (1000, 10)] {
        let body = j!({"orders": serde_json::from_str::<serde_json::Value>(&orders_page(offset + 1, count, 0, 0)).unwrap()["orders"]});
        Mock::given(method("GET"))
            .and(path(api("/order/certificate")))
            .and(query_param("offset", offset.to_string()))
            .respond_with(json(200, &body.to_string()))
            .expect(1)
            .mount(&server)
            .await;
    }
    let all = client(&server).list_all_orders(&OrderFilter::default()).await.unwrap();
    assert_eq!((all.calls, all.items.len()), (2, 1010));
}

/// The List domains answer: `include_dcv_expiration_time=true` is sent; `validations` absent
/// gives an empty list; `dcv_expiration` absent until DCV was done; timestamps with `Z` and
/// `+00:00`, and bare Mountain Time dates read as 06:00 UTC.
#[tokio::test]
async fn list_domains_documented_shapes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/domain")))
        .and(query_param("include_dcv_expiration_time", "true"))
        .and(query_param("filters[status]", "active"))
        .and(query_param("offset", "0"))
        .and(query_param("limit", "1000"))
        .respond_with(json(200, fixture!("list-domains.200-varied.json")))
        .expect(1)
        .mount(&server)
        .await;
    let all = client(&server).list_all_domains(&DomainFilter::active()).await.unwrap();
    assert_eq!((all.calls, all.total, all.items.len()), (1, 3, 3));
    let until = Utc.with_ymd_and_hms(2023, 3, 27, 6, 0, 0).unwrap();

    let validated = &all.items[0];
    assert_eq!((validated.id, validated.name.as_str(), validated.is_active), (12345, "example.org", Some(true)));
    assert_eq!(validated.container_id(), Some(677797));
    assert_eq!(validated.dcv_method, Some(DcvMethod::Email));
    assert_eq!(validated.validation("ov").unwrap().validated_until, Some(until));
    assert_eq!(validated.validation("EV").unwrap().validated_until, Some(until));
    assert_eq!(validated.validation("ev").unwrap().status.as_deref(), Some("active"));
    let expiration = validated.dcv_expiration.as_ref().unwrap();
    assert_eq!((expiration.of("ov"), expiration.of("ev"), expiration.of("dv")), (Some(until), Some(until), None));
    assert_eq!(expiration.ov_status.as_deref(), Some("valid"));
    assert!(validated.dcv_token.is_none());

    let never = &all.items[1];
    assert!(never.validations.is_empty());
    assert!(never.dcv_expiration.is_none());
    assert!(never.validation("ov").is_none());

    let lapsed = &all.items[2];
    assert_eq!(lapsed.is_active, Some(false));
    assert_eq!(lapsed.container_id(), Some(677798));
    let expiration = lapsed.dcv_expiration.as_ref().unwrap();
    assert_eq!(expiration.ev, Some(Utc.with_ymd_and_hms(2021, 5, 21, 6, 0, 0).unwrap()));
    assert_eq!(expiration.ov, Some(Utc.with_ymd_and_hms(2022, 7, 30, 6, 0, 0).unwrap()));
}

/// 5,000 domains in five pages of 1,000.
#[tokio::test]
async fn list_all_domains_walks_five_pages() {
    let server = MockServer::start().await;
    for page in 0..5u64 {
        let offset = page * 1000;
        let domains: Vec<_> = (offset + 1..=offset + 1000)
            .map(|id| j!({"id": id, "name": format!("d{id}.example"), "is_active": true}))
            .collect();
        Mock::given(method("GET"))
            .and(path(api("/domain")))
            .and(query_param("offset", offset.to_string()))
            .respond_with(json(
                200,
                &j!({"domains": domains, "page": {"total": 5000, "limit": 1000, "offset": offset}}).to_string(),
            ))
            .expect(1)
            .mount(&server)
            .await;
    }
    let all = client(&server).list_all_domains(&DomainFilter::default()).await.unwrap();
    assert_eq!((all.calls, all.items.len()), (5, 5000));
    assert_eq!(all.items.last().unwrap().name, "d5000.example");
}

/// A malformed date in `dcv_expiration` is a decode error naming the endpoint, not a silent
/// `None` (a silent `None` would read as "never validated").
#[tokio::test]
async fn list_domains_bad_date_is_an_error() {
    let server = MockServer::start().await;
    let body = r#"{"domains":[{"id":1,"name":"x.example","dcv_expiration":{"ov":"27/03/2023"}}],"page":{"total":1}}"#;
    Mock::given(method("GET")).and(path(api("/domain"))).respond_with(json(200, body)).expect(1).mount(&server).await;
    let err = client(&server).list_domains(&DomainFilter::default(), 0, 1000).await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("list_domains") && shown.contains("27/03/2023"), "{shown}");
}

/// Order info: `product.name_id` and `container.id` (a string id accepted too).
#[tokio::test]
async fn order_info_product_and_container() {
    let server = MockServer::start().await;
    let body = r#"{"id": 9, "status": "pending", "dcv_method": "dns-cname-token",
        "certificate": {"common_name": "a.example", "dns_names": ["a.example"]},
        "product": {"name_id": "ssl_dv_geotrust", "type": "dv_ssl_certificate", "validation_type": "dv"},
        "container": {"id": "42", "name": "Ops"}, "organization": []}"#;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate/9")))
        .respond_with(json(200, body))
        .expect(1)
        .mount(&server)
        .await;
    let order = client(&server).order_info(9).await.unwrap();
    assert_eq!(order.product_name_id(), Some("ssl_dv_geotrust"));
    assert_eq!(order.product.as_ref().unwrap().kind.as_deref(), Some("dv_ssl_certificate"));
    assert_eq!(order.container_id(), Some(42));
    assert_eq!(order.dcv_method, Some(DcvMethod::DnsCnameToken));
}

/// Order info without product or container (older answers): both `None`.
#[tokio::test]
async fn order_info_fixture_has_product_without_container() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate/12345678")))
        .respond_with(json(200, fixture!("order-info.200.json")))
        .expect(1)
        .mount(&server)
        .await;
    let order = client(&server).order_info(12345678).await.unwrap();
    assert_eq!(order.product_name_id(), Some("ssl_dv_geotrust"));
    assert_eq!(order.container_id(), None);
}

/// The documented Order validation status answer: string ids, the order's name scope, and per
/// entry the name scope covering its names.
#[tokio::test]
async fn order_validation_scope_fields() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/order/certificate/112211/validation")))
        .respond_with(json(200, fixture!("order-validation.200-scope.json")))
        .expect(1)
        .mount(&server)
        .await;
    let v = client(&server).order_validation(112211).await.unwrap();
    assert_eq!(v.order_id.as_deref(), Some("112211"));
    assert_eq!(v.order_status.as_deref(), Some("pending"));
    assert_eq!(v.order_name_scope.as_deref(), Some("base_domain"));
    assert_eq!(v.order_dcv_method, Some(DcvMethod::Email));
    let entry = &v.dns_name_validations[0];
    assert_eq!(entry.domain_id.as_deref(), Some("1234"));
    assert_eq!(entry.name_scope.as_deref(), Some("example.com"));
    assert_eq!(entry.dns_names, ["sub.example.com"]);
    assert_eq!(entry.dns_name, "");
    assert_eq!(entry.status.as_deref(), Some("approved"));
    assert_eq!(entry.method, Some(DcvMethod::Email));
}

/// The documented Domain info answer with `include_dcv` and `include_validation`: validations
/// with `dcv_status`, `dcv_expiration` as bare dates, container and `is_active`.
#[tokio::test]
async fn domain_info_full_documented_answer() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/domain/12345678")))
        .and(query_param("include_dcv", "true"))
        .and(query_param("include_validation", "true"))
        .respond_with(json(200, fixture!("domain-info.200-full.json")))
        .expect(1)
        .mount(&server)
        .await;
    let d = client(&server).domain_info(12345678).await.unwrap();
    assert_eq!((d.is_active, d.container_id()), (Some(true), Some(123456)));
    let ov = d.validation("ov").unwrap();
    assert_eq!(ov.dcv_status.as_deref(), Some("complete"));
    assert_eq!(ov.validated_until, Some(Utc.with_ymd_and_hms(2022, 5, 27, 14, 51, 31).unwrap()));
    assert_eq!(d.validation("ev").unwrap().validated_until, ov.validated_until);
    let day = Utc.with_ymd_and_hms(2022, 5, 27, 6, 0, 0).unwrap();
    assert_eq!(d.dcv_expiration.as_ref().map(|e| (e.ov, e.ev)), Some((Some(day), Some(day))));
    assert_eq!(d.dcv_token.as_ref().unwrap().token, "x7m3k2bq9w");
    assert_eq!(d.dcv_method, Some(DcvMethod::DnsTxtToken));
}
