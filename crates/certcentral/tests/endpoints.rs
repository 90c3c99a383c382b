//! Every endpoint against DigiCert's documented success and error bodies (the shared fixtures in
//! `crates/test-support/fixtures/digicert`, copied from `shared/digicert-api`; the simulator's
//! tests assert it answers in the same shapes), plus the quirks: tokens as numbers, `Z` and `+00:00` timestamps,
//! codes with stray spaces, unknown fields, `dns_names: [" "]`.

mod common;

use certcentral::Error;
use certcentral::types::{DcvMethod, SubmitValidationRequest, SubmitValidationResponse, ValidationType};
use chrono::{TimeZone, Utc};
use common::{KEY, api, client, json};
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../test-support/fixtures/digicert/", $name))
    };
}

/// Mounts `status`/`body` for `verb path` and expects exactly one call.
async fn serve(server: &MockServer, verb: &str, rest: &str, status: u16, body: &str) {
    Mock::given(method(verb)).and(path(api(rest))).respond_with(json(status, body)).expect(1).mount(server).await;
}

fn api_error(result: Result<impl std::fmt::Debug, Error>) -> Error {
    result.expect_err("expected an error")
}

/// DV random value: PUT to the right path with the key, user agent and content type; the
/// documented `+00:00` expiry parses.
#[tokio::test]
async fn dcv_random_value_documented_answer() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/12345678/dcv-random-value")))
        .and(header("X-DC-DEVKEY", KEY))
        .and(header("Content-Type", "application/json"))
        .and(header("User-Agent", concat!("dcvd/", env!("CARGO_PKG_VERSION"))))
        .respond_with(json(200, fixture!("dv-generate-dcv-token.200.json")))
        .expect(1)
        .mount(&server)
        .await;
    let value = client(&server).dcv_random_value(12345678).await.unwrap();
    assert_eq!(value.dcv_random_value, "fjqr7th5ds");
    assert_eq!(value.expiration_date, Some(Utc.with_ymd_and_hms(2023, 2, 24, 16, 25, 52).unwrap()));
}

/// A numeric random value, a `Z` timestamp and unknown fields are accepted.
#[tokio::test]
async fn dcv_random_value_quirks() {
    let server = MockServer::start().await;
    let body = r#"{"dcv_random_value": 1234567890, "expiration_date": "2023-02-24T16:25:52Z",
                  "new_field": {"x": 1}, "another": [true]}"#;
    serve(&server, "PUT", "/order/certificate/1/dcv-random-value", 200, body).await;
    let value = client(&server).dcv_random_value(1).await.unwrap();
    assert_eq!(value.dcv_random_value, "1234567890");
    assert_eq!(value.expiration_date, Some(Utc.with_ymd_and_hms(2023, 2, 24, 16, 25, 52).unwrap()));
}

/// DV check-dcv success (documented body).
#[tokio::test]
async fn check_dcv_valid() {
    let server = MockServer::start().await;
    serve(&server, "PUT", "/order/certificate/42/check-dcv", 200, fixture!("dv-check-dcv.200.json")).await;
    let answer = client(&server).check_dcv(42).await.unwrap();
    assert!(answer.is_valid());
    assert_eq!(answer.order_status.as_deref(), Some("pending"));
    assert_eq!(answer.certificate_id, Some(123456));
    assert_eq!(answer.dns_name_validations, None);
}

/// Newer check-dcv answers carry per-name progress; unknown fields are ignored.
#[tokio::test]
async fn check_dcv_with_dns_name_validations() {
    let server = MockServer::start().await;
    let body = r#"{"order_status":"pending","certificate_id":7,"dcv_status":"pending",
        "dns_name_validations":[{"dns_name":"example.com","status":"valid","extra":1},
                                {"dns_name":"www.example.com","status":"pending"}],
        "unexpected":"ignored"}"#;
    serve(&server, "PUT", "/order/certificate/42/check-dcv", 200, body).await;
    let answer = client(&server).check_dcv(42).await.unwrap();
    assert!(!answer.is_valid());
    let names = answer.dns_name_validations.unwrap();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0].dns_name, "example.com");
    assert_eq!(names[0].status.as_deref(), Some("valid"));
    assert_eq!(names[1].status.as_deref(), Some("pending"));
}

/// The three documented check-dcv errors map to the right predicates, are not retried, and the
/// message carries DigiCert's code and text.
#[tokio::test]
async fn check_dcv_documented_errors() {
    let cases = [
        (fixture!("dv-check-dcv.400-dns-txt-token.json"), "invalid_dns_txt", true, false),
        (fixture!("dv-check-dcv.400-http-token.json"), "file_random_value_not_found", true, false),
        (fixture!("dv-check-dcv.400-email.json"), "invalid_dns_method", false, true),
    ];
    for (body, code, not_found_yet, wrong_method) in cases {
        let server = MockServer::start().await;
        serve(&server, "PUT", "/order/certificate/42/check-dcv", 400, body).await;
        let err = api_error(client(&server).check_dcv(42).await);
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.is_not_found_yet(), not_found_yet, "{code}");
        assert_eq!(err.is_wrong_method(), wrong_method, "{code}");
        assert!(!err.is_retryable() && !err.is_auth() && !err.is_rate_limited());
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("certcentral: {code}: ")), "{shown}");
        assert!(shown.ends_with("(HTTP 400)"), "{shown}");
    }
}

/// Order info: names, status and method; unknown nested objects are ignored.
#[tokio::test]
async fn order_info_documented_shape() {
    let server = MockServer::start().await;
    serve(&server, "GET", "/order/certificate/12345678", 200, fixture!("order-info.200.json")).await;
    let order = client(&server).order_info(12345678).await.unwrap();
    assert_eq!(order.id, 12345678);
    assert_eq!(order.status, "pending");
    assert_eq!(order.dcv_method, Some(DcvMethod::DnsTxtToken));
    assert_eq!(order.dns_names(), vec!["example.com", "www.example.com"]);
    assert!(!certcentral::types::is_terminal_order_status(&order.status));
}

/// Some products return `dns_names: [" "]`: blanks are dropped and the common name used.
#[tokio::test]
async fn order_info_blank_dns_names() {
    let server = MockServer::start().await;
    serve(&server, "GET", "/order/certificate/12345679", 200, fixture!("order-info.200-blank-names.json")).await;
    let order = client(&server).order_info(12345679).await.unwrap();
    assert_eq!(order.certificate.dns_names, vec![" "]);
    assert_eq!(order.dns_names(), vec!["blank.example"]);
    assert_eq!(order.dcv_method, Some(DcvMethod::DnsCnameToken));
    assert!(certcentral::types::is_terminal_order_status(&order.status));
}

/// An unknown order answers 404: `is_not_found`, not retried.
#[tokio::test]
async fn order_info_not_found() {
    let server = MockServer::start().await;
    serve(&server, "GET", "/order/certificate/9", 404, fixture!("error.404-not-found.json")).await;
    let err = api_error(client(&server).order_info(9).await);
    assert!(err.is_not_found());
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some("not_found"));
}

/// Order validation: per-name status with a `Z` timestamp.
#[tokio::test]
async fn order_validation_per_name() {
    let server = MockServer::start().await;
    serve(&server, "GET", "/order/certificate/5/validation", 200, fixture!("order-validation.200.json")).await;
    let validation = client(&server).order_validation(5).await.unwrap();
    let names = validation.dns_name_validations;
    assert_eq!(names.len(), 2);
    assert_eq!(names[0].validated_on, Some(Utc.with_ymd_and_hms(2023, 2, 17, 10, 0, 0).unwrap()));
    assert_eq!(names[1].dns_name, "www.example.com");
    assert_eq!(names[1].validated_on, None);
}

/// Change DCV method sends exactly `{"dcv_method": "..."}` and accepts a 204.
#[tokio::test]
async fn change_order_dcv_method_body() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(api("/order/certificate/77/dcv-method")))
        .and(header("X-DC-DEVKEY", KEY))
        .and(body_json(serde_json::json!({"dcv_method": "dns-cname-token"})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    client(&server).change_order_dcv_method(77, &DcvMethod::DnsCnameToken).await.unwrap();
}

/// Changing to a method the product does not allow is a permanent error.
#[tokio::test]
async fn change_order_dcv_method_refused() {
    let server = MockServer::start().await;
    serve(&server, "PUT", "/order/certificate/77/dcv-method", 400, fixture!("ovev-generate-dcv-token.400-email.json"))
        .await;
    let err = api_error(client(&server).change_order_dcv_method(77, &DcvMethod::DnsTxtToken).await);
    assert!(err.is_wrong_method());
    assert_eq!(err.code(), Some("invalid_dcv_method"));
}

/// Submit for validation: the documented request body goes out; the token answer parses.
#[tokio::test]
async fn submit_validation_request_body_and_token_answer() {
    let server = MockServer::start().await;
    let expected: serde_json::Value = serde_json::from_str(fixture!("submit-for-validation.request.json")).unwrap();
    Mock::given(method("POST"))
        .and(path(api("/domain/112233/validation")))
        .and(header("X-DC-DEVKEY", KEY))
        .and(body_json(expected))
        .respond_with(json(201, fixture!("submit-for-validation.200-dns-txt-token.json")))
        .expect(1)
        .mount(&server)
        .await;
    let request = SubmitValidationRequest {
        validations: vec![ValidationType { kind: "ov".into() }, ValidationType { kind: "ev".into() }],
        dcv_method: None,
        email_array: None,
    };
    let answer = client(&server).submit_domain_validation(112233, &request).await.unwrap();
    assert_eq!(answer.id, Some(112233));
    let token = answer.dcv_token.unwrap();
    assert_eq!(token.token, "{{random_value}}");
    assert_eq!(token.expiration_date, Some(Utc.with_ymd_and_hms(2020, 2, 21, 6, 29, 24).unwrap()));
    assert_eq!(token.verification_value, None);
}

/// Submit with a method and email list serialises both fields.
#[tokio::test]
async fn submit_validation_with_method_and_emails() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/domain/9/validation")))
        .and(body_json(serde_json::json!({
            "validations": [{"type": "ov"}],
            "dcv_method": "email",
            "email_array": ["admin@example.com"]
        })))
        .respond_with(json(200, fixture!("submit-for-validation.200-email.json")))
        .expect(1)
        .mount(&server)
        .await;
    let request = SubmitValidationRequest {
        validations: vec![ValidationType { kind: "ov".into() }],
        dcv_method: Some(DcvMethod::Email),
        email_array: Some(vec!["admin@example.com".into()]),
    };
    let answer = client(&server).submit_domain_validation(9, &request).await.unwrap();
    let emails = answer.validation_emails.unwrap();
    assert_eq!(emails.name_scope.as_deref(), Some("example.com"));
    assert_eq!(emails.base_emails.len(), 5);
    assert_eq!(emails.email_array, None);
    assert!(answer.dcv_token.is_none());
}

/// The documented "empty" answer (204 or an empty 200) gives the default response.
#[tokio::test]
async fn submit_validation_empty_answer() {
    for template in [ResponseTemplate::new(204), ResponseTemplate::new(200).set_body_string("")] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(api("/domain/5/validation")))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let request = SubmitValidationRequest {
            validations: vec![ValidationType { kind: "ev".into() }],
            dcv_method: Some(DcvMethod::DnsTxtToken),
            email_array: None,
        };
        let answer = client(&server).submit_domain_validation(5, &request).await.unwrap();
        assert_eq!(answer, SubmitValidationResponse::default());
    }
}

/// CNAME and http answers of submit keep `verification_value` and `http_token_url`.
#[tokio::test]
async fn submit_validation_cname_and_http_answers() {
    let request = SubmitValidationRequest {
        validations: vec![ValidationType { kind: "ov".into() }],
        dcv_method: Some(DcvMethod::DnsCnameToken),
        email_array: None,
    };
    let server = MockServer::start().await;
    serve(&server, "POST", "/domain/1/validation", 200, fixture!("submit-for-validation.200-dns-cname-token.json"))
        .await;
    serve(&server, "POST", "/domain/2/validation", 200, fixture!("submit-for-validation.200-http-token.json")).await;
    let client = client(&server);
    let cname = client.submit_domain_validation(1, &request).await.unwrap().dcv_token.unwrap();
    assert_eq!(cname.verification_value.as_deref(), Some("dcv.digicert.com"));
    assert_eq!(cname.http_token_url, None);
    let http = client.submit_domain_validation(2, &request).await.unwrap().dcv_token.unwrap();
    assert_eq!(http.http_token_url.as_deref(), Some("http://example.com/.well-known/pki-validation/fileauth.txt"));
}

/// Generate token: POST with the key and the three documented answers.
#[tokio::test]
async fn generate_domain_token_documented_answers() {
    let server = MockServer::start().await;
    for (id, body) in [
        (1, fixture!("ovev-generate-dcv-token.200-dns-txt-token.json")),
        (2, fixture!("ovev-generate-dcv-token.200-http-token.json")),
        (3, fixture!("ovev-generate-dcv-token.200-dns-cname-token.json")),
    ] {
        Mock::given(method("POST"))
            .and(path(api(&format!("/domain/{id}/dcv/token"))))
            .and(header("X-DC-DEVKEY", KEY))
            .respond_with(json(200, body))
            .expect(1)
            .mount(&server)
            .await;
    }
    let client = client(&server);
    let txt = client.generate_domain_token(1).await.unwrap();
    assert_eq!(txt.token, "fdy6m0wy5lq063sz4h0r6qmdt722gyfc");
    assert_eq!(txt.expiration_date, Some(Utc.with_ymd_and_hms(2020, 8, 22, 20, 21, 10).unwrap()));
    assert_eq!(txt.verification_value, None);
    let http = client.generate_domain_token(2).await.unwrap();
    assert_eq!(http.verification_value.as_deref(), Some("http://example.com/.well-known/pki-validation/fileauth.txt"));
    assert!(http.http_token_url.is_some());
    let cname = client.generate_domain_token(3).await.unwrap();
    assert_eq!(cname.token, "vq4k16kwn69rjxgfw4hf2xn8b36ht119");
    assert_eq!(cname.verification_value.as_deref(), Some("dcv.digicert.com"));
}

/// Generate token for a domain without a token method: `invalid_dcv_method`, permanent.
#[tokio::test]
async fn generate_domain_token_wrong_method() {
    let server = MockServer::start().await;
    serve(&server, "POST", "/domain/4/dcv/token", 400, fixture!("ovev-generate-dcv-token.400-email.json")).await;
    let err = api_error(client(&server).generate_domain_token(4).await);
    assert!(err.is_wrong_method());
    assert!(!err.is_not_found_yet() && !err.is_retryable());
    assert!(err.to_string().contains("This domain's DCV method is set incorrectly"));
}

/// Validate token: the documented active answer, and a token sent as a JSON number.
#[tokio::test]
async fn validate_domain_token_active_and_numeric_token() {
    let server = MockServer::start().await;
    serve(&server, "PUT", "/domain/6/dcv/validate-token", 200, fixture!("ovev-check-dcv.200.json")).await;
    serve(&server, "PUT", "/domain/7/dcv/validate-token", 200, r#"{"token": 998877, "status": "inactive"}"#).await;
    let client = client(&server);
    let active = client.validate_domain_token(6).await.unwrap();
    assert!(active.is_active());
    assert_eq!(active.token.as_deref(), Some("36m5kkf95gx4nwz"));
    let inactive = client.validate_domain_token(7).await.unwrap();
    assert!(!inactive.is_active());
    assert_eq!(inactive.token.as_deref(), Some("998877"));
}

/// Validate token errors, including the documented `" invalid_dns_cname"` with a leading space.
#[tokio::test]
async fn validate_domain_token_documented_errors() {
    let cases = [
        (fixture!("ovev-check-dcv.400-dns-txt-token.json"), "invalid_dns_txt", true),
        (fixture!("ovev-check-dcv.400-http-token.json"), "file_random_value_not_found", true),
        (fixture!("ovev-check-dcv.400-dns-cname-token.json"), "invalid_dns_cname", true),
        (fixture!("ovev-check-dcv.400-email.json"), "invalid_dns_method", false),
    ];
    for (body, code, not_found_yet) in cases {
        let server = MockServer::start().await;
        serve(&server, "PUT", "/domain/8/dcv/validate-token", 400, body).await;
        let err = api_error(client(&server).validate_domain_token(8).await);
        assert_eq!(err.code(), Some(code), "code must be trimmed");
        assert_eq!(err.is_not_found_yet(), not_found_yet, "{code}");
        assert_eq!(err.is_wrong_method(), !not_found_yet, "{code}");
        assert!(!err.to_string().contains(": invalid_dns_cname") || code == "invalid_dns_cname");
        if let Error::Api { errors, .. } = &err {
            assert_eq!(errors[0].code, code);
        } else {
            panic!("expected Error::Api, got {err:?}");
        }
    }
}

/// Domain info asks for DCV and validation details and parses both.
#[tokio::test]
async fn domain_info_query_and_shape() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("/domain/112233")))
        .and(query_param("include_dcv", "true"))
        .and(query_param("include_validation", "true"))
        .and(header("X-DC-DEVKEY", KEY))
        .respond_with(json(200, fixture!("domain-info.200.json")))
        .expect(1)
        .mount(&server)
        .await;
    let domain = client(&server).domain_info(112233).await.unwrap();
    assert_eq!(domain.name, "example.org");
    assert_eq!(domain.dcv_method, Some(DcvMethod::DnsCnameToken));
    let token = domain.dcv_token.unwrap();
    assert_eq!(token.status.as_deref(), Some("pending"));
    assert_eq!(token.verification_value.as_deref(), Some("dcv.digicert.com"));
    assert_eq!(domain.validations.len(), 2);
    assert_eq!(domain.validations[0].kind, "ov");
    assert_eq!(domain.validations[0].validated_until, Some(Utc.with_ymd_and_hms(2024, 2, 10, 18, 22, 10).unwrap()));
}

/// A refused key (401) is an auth error, not retried.
#[tokio::test]
async fn unauthorized_is_auth_and_not_retried() {
    let server = MockServer::start().await;
    serve(&server, "PUT", "/order/certificate/1/check-dcv", 401, fixture!("error.401-unauthorized.json")).await;
    let err = api_error(client(&server).check_dcv(1).await);
    assert!(err.is_auth());
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some("unauthorized"));
}

/// Unknown codes are kept verbatim (only trimmed); every entry is kept; predicates look at all.
#[tokio::test]
async fn unknown_and_multiple_error_codes() {
    let server = MockServer::start().await;
    let body = r#"{"errors":[{"code":"brand_new_code\t","message":"Something new."},
                             {"code":" invalid_dns_txt ","message":"Could not find a valid TXT record."}]}"#;
    serve(&server, "PUT", "/order/certificate/3/check-dcv", 400, body).await;
    let err = api_error(client(&server).check_dcv(3).await);
    assert_eq!(err.code(), Some("brand_new_code"));
    assert_eq!(err.to_string(), "certcentral: brand_new_code: Something new. (HTTP 400)");
    assert!(err.is_not_found_yet(), "second entry is invalid_dns_txt");
    let Error::Api { errors, .. } = err else { panic!("expected Error::Api") };
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[1].code, "invalid_dns_txt");
}

/// A 200 whose JSON has the wrong shape is a decode error, not retried.
#[tokio::test]
async fn wrong_json_shape_is_decode_error() {
    let server = MockServer::start().await;
    serve(&server, "PUT", "/order/certificate/3/dcv-random-value", 200, r#"{"unexpected": true}"#).await;
    let err = api_error(client(&server).dcv_random_value(3).await);
    assert!(matches!(err, Error::Decode { endpoint: "dcv_random_value", .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("dcv_random_value"));
}

/// Bodyless PUT/POST calls still send a JSON content type and an empty body.
#[tokio::test]
async fn bodyless_calls_send_empty_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("/domain/11/dcv/token")))
        .and(header("Content-Type", "application/json"))
        .and(header("Content-Length", "0"))
        .and(body_string(""))
        .respond_with(json(200, fixture!("ovev-generate-dcv-token.200-dns-txt-token.json")))
        .expect(1)
        .mount(&server)
        .await;
    let result = client(&server).generate_domain_token(11).await;
    let requests = server.received_requests().await.unwrap();
    assert!(result.is_ok(), "{result:?}: {:?}", requests[0].headers);
}
