//! The DigiCert endpoints under `/services/v2` and the request pipeline in front of them
//! (call counting, API key, rate limits, fault injection).

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::{Value, json};

use crate::ValidationScope;
use crate::dns::{DCV_CNAME_TARGET, LookupCounters};
use crate::state::{CheckEvent, CheckOutcome, DcvMethod, UnitKind};
use crate::{Sim, World, random_token, timestamp};

/// Marks a response whose connection the server must drop instead of answering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

const PREFIX: &str = "/services/v2";

pub(crate) fn routes(sim: Sim) -> Router {
    let api = Router::new()
        .route("/order/certificate", get(list_orders))
        .route("/domain", get(list_domains))
        .route("/order/certificate/{id}", get(order_info))
        .route("/order/certificate/{id}/dcv-random-value", put(dcv_random_value))
        .route("/order/certificate/{id}/check-dcv", put(check_dcv))
        .route("/order/certificate/{id}/validation", get(order_validation))
        .route("/order/certificate/{id}/dcv-method", put(order_dcv_method))
        .route("/domain/{id}", get(domain_info))
        .route("/domain/{id}/validation", post(domain_submit_validation))
        .route("/domain/{id}/dcv/token", post(domain_dcv_token))
        .route("/domain/{id}/dcv/validate-token", put(domain_validate_token))
        .route_layer(middleware::from_fn_with_state(sim.clone(), pipeline))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "The requested resource could not be found.") })
        .with_state(sim);
    Router::new().nest(PREFIX, api)
}

/// `{"errors":[{"code","message"}]}` with `status`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"errors": [{"code": code, "message": message}]}))).into_response()
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "The requested resource could not be found.")
}

fn endpoint_name(matched: &str) -> &'static str {
    let tail = matched.strip_prefix(PREFIX).unwrap_or(matched);
    match tail {
        "/order/certificate" => "list_orders",
        "/domain" => "list_domains",
        "/order/certificate/{id}" => "order_info",
        "/order/certificate/{id}/dcv-random-value" => "dcv_random_value",
        "/order/certificate/{id}/check-dcv" => "check_dcv",
        "/order/certificate/{id}/validation" => "order_validation",
        "/order/certificate/{id}/dcv-method" => "order_dcv_method",
        "/domain/{id}" => "domain_info",
        "/domain/{id}/validation" => "domain_submit_validation",
        "/domain/{id}/dcv/token" => "domain_dcv_token",
        "/domain/{id}/dcv/validate-token" => "domain_validate_token",
        _ => "unknown",
    }
}

/// The unit a request path is about, from `/order/certificate/{id}` or `/domain/{id}`.
fn unit_of(path: &str) -> Option<(UnitKind, u64)> {
    // inside the nested router the prefix is already stripped
    let path = path.strip_prefix(PREFIX).unwrap_or(path);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["order", "certificate", id, ..] => id.parse().ok().map(|id| (UnitKind::Order, id)),
        ["domain", id, ..] => id.parse().ok().map(|id| (UnitKind::Domain, id)),
        _ => None,
    }
}

enum Fault {
    Drop,
    Html502,
    Error500,
    Error503,
    Burst429,
}

fn draw_fault(w: &mut World, endpoint: &str) -> (Option<Fault>, Option<Duration>) {
    let rule = w.faults.rule_for(endpoint).clone();
    // always draw the same numbers per request so one seed gives one sequence
    let r: f64 = w.rng.random();
    let r_latency: f64 = w.rng.random();
    let latency = if r_latency < rule.latency {
        Some(Duration::from_millis(w.rng.random_range(rule.latency_min_ms..=rule.latency_max_ms)))
    } else {
        None
    };
    if w.burst_remaining > 0 {
        w.burst_remaining -= 1;
        return (Some(Fault::Burst429), latency);
    }
    let mut acc = 0.0;
    let mut pick = |p: f64| {
        acc += p;
        r < acc
    };
    let fault = if pick(rule.drop) {
        Some(Fault::Drop)
    } else if pick(rule.html_502) {
        Some(Fault::Html502)
    } else if pick(rule.error_500) {
        Some(Fault::Error500)
    } else if pick(rule.error_503) {
        Some(Fault::Error503)
    } else if pick(rule.burst_429) {
        w.burst_remaining = rule.burst_len.saturating_sub(1);
        Some(Fault::Burst429)
    } else {
        None
    };
    (fault, latency)
}

fn too_many_requests() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "request_limit_exceeded",
        "You have exceeded the number of requests allowed for your API key. Try again later.",
    )
}

/// Counting, authentication, rate limits and faults, in that order.
async fn pipeline(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().map_or("unknown", |m| endpoint_name(m.as_str()));
    let unit = unit_of(req.uri().path());
    let key = req.headers().get("x-dc-devkey").map(HeaderValue::as_bytes).map(<[u8]>::to_vec);
    let now = sim.mono_now();

    let (fault, latency) = {
        let mut w = sim.world();
        *w.stats.calls.entry(endpoint.to_string()).or_default() += 1;
        match unit {
            Some((UnitKind::Order, id)) => {
                *w.stats.order_calls.entry(id).or_default().entry(endpoint.to_string()).or_default() += 1;
            }
            Some((UnitKind::Domain, id)) => {
                *w.stats.domain_calls.entry(id).or_default().entry(endpoint.to_string()).or_default() += 1;
            }
            None => {}
        }
        match key {
            None => {
                w.stats.unauthorized += 1;
                return error(
                    StatusCode::UNAUTHORIZED,
                    "access_denied",
                    "An API key is required: send it in the X-DC-DEVKEY header.",
                );
            }
            Some(k) if k != sim.inner.config.api_key.as_bytes() => {
                w.stats.unauthorized += 1;
                return error(StatusCode::UNAUTHORIZED, "unauthorized", "The specified API key is invalid.");
            }
            Some(_) => {}
        }
        let limits = &sim.inner.config.rate_limits;
        let longest = limits.iter().map(|(_, d)| *d).max().unwrap_or_default();
        while w.accepted.front().is_some_and(|t| now.saturating_duration_since(*t) >= longest) {
            w.accepted.pop_front();
        }
        let breached = limits.iter().any(|(n, per)| {
            let in_window = w.accepted.iter().rev().take_while(|t| now.saturating_duration_since(**t) < *per).count();
            in_window >= *n as usize
        });
        if breached {
            w.stats.rate_limited += 1;
            tracing::debug!(endpoint, "rate limit window full");
            return too_many_requests();
        }
        if !limits.is_empty() {
            w.accepted.push_back(now);
        }
        let (fault, latency) = draw_fault(&mut w, endpoint);
        if latency.is_some() {
            w.stats.faults.latency += 1;
        }
        match fault {
            Some(Fault::Drop) => w.stats.faults.dropped += 1,
            Some(Fault::Html502) => w.stats.faults.html_502 += 1,
            Some(Fault::Error500) => w.stats.faults.error_500 += 1,
            Some(Fault::Error503) => w.stats.faults.error_503 += 1,
            Some(Fault::Burst429) => w.stats.faults.burst_429 += 1,
            None => {}
        }
        (fault, latency)
    };

    if let Some(delay) = latency {
        tracing::debug!(endpoint, delay_ms = delay.as_millis() as u64, "injecting latency");
        tokio::time::sleep(delay).await;
    }
    match fault {
        None => next.run(req).await,
        Some(Fault::Drop) => {
            tracing::debug!(endpoint, "injecting a dropped connection");
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "connection dropped by the simulator (only real when served by Sim::spawn)",
            );
            resp.extensions_mut().insert(DropConnection);
            resp
        }
        Some(Fault::Html502) => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
             <center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        )
            .into_response(),
        Some(Fault::Error500) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "An internal error occurred while processing your request.",
        ),
        Some(Fault::Error503) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The service is temporarily unavailable. Try again later.",
        ),
        Some(Fault::Burst429) => too_many_requests(),
    }
}

fn parse_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

fn token_expiry(sim: &Sim) -> DateTime<Utc> {
    sim.now() + sim.validity()
}

async fn dcv_random_value(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let now = sim.now();
    let expiry = token_expiry(&sim);
    let mut w = sim.world();
    let w = &mut *w;
    let Some(order) = parse_id(&id).and_then(|id| w.orders.get_mut(&id)) else {
        return not_found();
    };
    if order.dcv_method == DcvMethod::Email {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_dcv_method",
            "This order's DCV method is set incorrectly for this action.",
        );
    }
    if order.random_value_expires <= now {
        order.random_value = random_token(&mut w.rng);
        order.random_value_expires = expiry;
        w.stats.tokens_issued += 1;
        tracing::info!(order_id = order.id, "new dcv random value (the old one expired)");
    }
    axum::Json(json!({
        "dcv_random_value": order.random_value,
        "expiration_date": timestamp(order.random_value_expires),
    }))
    .into_response()
}

fn record_check(
    sim: &Sim,
    w: &mut World,
    (kind, id): (UnitKind, u64),
    outcome: CheckOutcome,
    (valid, total): (usize, usize),
    counters: LookupCounters,
) {
    w.stats.dns_queries += counters.queries;
    w.stats.negative_cache_hits += counters.negative_cache_hits;
    w.stats.dns_errors += counters.errors;
    match outcome {
        CheckOutcome::Valid => w.stats.successful_validations += 1,
        CheckOutcome::NotFound => w.stats.premature_checks += 1,
        _ => {}
    }
    w.stats.checks.push(CheckEvent {
        kind,
        id,
        at: sim.now(),
        unix_ms: Utc::now().timestamp_millis(),
        outcome,
        names_valid: valid,
        names_total: total,
        negative_cache_hits: counters.negative_cache_hits,
    });
}

/// Looks `name` up where `scope` says DigiCert validates it, by `method`'s rule.
async fn validate_name(
    sim: &Sim,
    method: DcvMethod,
    scope: ValidationScope,
    name: &str,
    value: &str,
    counters: &mut LookupCounters,
) -> bool {
    let now = sim.mono_now();
    let validated_at = scope.owner(name);
    let found = match method {
        DcvMethod::DnsTxtToken => sim.inner.dns.find_txt(&validated_at, value, now, counters).await,
        DcvMethod::DnsCnameToken => sim.inner.dns.find_cname(&validated_at, value, now, counters).await,
        DcvMethod::HttpToken | DcvMethod::Email => None,
    };
    match found {
        Some(owner) => {
            tracing::debug!(name, owner, scope = scope.as_str(), "dcv record found");
            true
        }
        None => false,
    }
}

fn wrong_method(method: DcvMethod) -> Response {
    match method {
        DcvMethod::HttpToken => error(
            StatusCode::BAD_REQUEST,
            "file_random_value_not_found",
            "Could not find the random value at the expected file location for one or more domains.",
        ),
        _ => error(StatusCode::BAD_REQUEST, "invalid_dns_method", "An error occurred while processing your request."),
    }
}

fn dv_not_found(method: DcvMethod, expired: bool) -> Response {
    let (code, mut message) = match method {
        DcvMethod::DnsCnameToken => {
            ("invalid_dns_cname", "Could not find a valid CNAME record for one or more domains.".to_string())
        }
        _ => ("invalid_dns_txt", "Could not find a valid TXT record for one or more domains.".to_string()),
    };
    if expired {
        message.push_str(" The random value has expired: request a new one.");
    }
    error(StatusCode::BAD_REQUEST, code, &message)
}

fn check_dcv_ok(order: &crate::state::Order) -> Response {
    axum::Json(json!({
        "order_status": order.status,
        "certificate_id": order.certificate_id,
        "dcv_status": "valid",
        "dns_name_validations": order.name_validations(),
    }))
    .into_response()
}

async fn check_dcv(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let now = sim.now();
    let snapshot = {
        let mut w = sim.world();
        let w = &mut *w;
        let Some(order) = parse_id(&id).and_then(|id| w.orders.get(&id)) else {
            return not_found();
        };
        let (oid, method, total) = (order.id, order.dcv_method, order.dns_names.len());
        if matches!(method, DcvMethod::Email | DcvMethod::HttpToken) {
            let valid = order.validated.len();
            record_check(
                &sim,
                w,
                (UnitKind::Order, oid),
                CheckOutcome::WrongMethod,
                (valid, total),
                LookupCounters::default(),
            );
            return wrong_method(method);
        }
        if order.dcv_valid {
            let resp = check_dcv_ok(order);
            record_check(
                &sim,
                w,
                (UnitKind::Order, oid),
                CheckOutcome::AlreadyValid,
                (total, total),
                LookupCounters::default(),
            );
            return resp;
        }
        if order.random_value_expires <= now {
            let valid = order.validated.len();
            record_check(
                &sim,
                w,
                (UnitKind::Order, oid),
                CheckOutcome::Expired,
                (valid, total),
                LookupCounters::default(),
            );
            return dv_not_found(method, true);
        }
        let pending: Vec<String> =
            order.dns_names.iter().filter(|n| !order.validated.contains_key(*n)).cloned().collect();
        (oid, method, order.random_value.clone(), pending, order.scope(w.validation_scope))
    };
    let (oid, method, value, pending, scope) = snapshot;

    let mut counters = LookupCounters::default();
    let mut found = Vec::new();
    for name in &pending {
        if validate_name(&sim, method, scope, name, &value, &mut counters).await {
            found.push(name.clone());
        }
    }

    let issue = sim.inner.config.issue_on_valid;
    let mut w = sim.world();
    let w = &mut *w;
    let Some(order) = w.orders.get_mut(&oid) else {
        return not_found();
    };
    // a value replaced during the lookups was not what we looked for
    if order.random_value == value && order.dcv_method == method {
        let at = sim.now();
        for name in found {
            order.validated.entry(name).or_insert(at);
        }
    }
    let total = order.dns_names.len();
    let valid = order.validated.len();
    if valid == total && total > 0 {
        order.dcv_valid = true;
        if issue && order.status == "pending" {
            order.status = "issued".to_string();
        }
        tracing::info!(order_id = oid, "order dcv valid");
        let resp = check_dcv_ok(order);
        record_check(&sim, w, (UnitKind::Order, oid), CheckOutcome::Valid, (valid, total), counters);
        resp
    } else {
        tracing::info!(
            order_id = oid,
            valid,
            total,
            negative_cache_hits = counters.negative_cache_hits,
            "order dcv check found no record for some names"
        );
        record_check(&sim, w, (UnitKind::Order, oid), CheckOutcome::NotFound, (valid, total), counters);
        dv_not_found(method, false)
    }
}

async fn order_info(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let w = sim.world();
    let Some(order) = parse_id(&id).and_then(|id| w.orders.get(&id)) else {
        return not_found();
    };
    let mut v = order_json(order);
    v["dcv_method"] = json!(order.dcv_method.as_str());
    axum::Json(v).into_response()
}

/// GUESS: the product type from the product id (`dv_ssl_certificate` for DV products,
/// `ssl_certificate` otherwise; DigiCert's EV value is not documented).
fn product_type(name_id: &str) -> &'static str {
    if name_id.contains("dv") { "dv_ssl_certificate" } else { "ssl_certificate" }
}

/// An order as List orders shows it (Order info adds `dcv_method`).
fn order_json(order: &crate::state::Order) -> Value {
    json!({
        "id": order.id,
        "status": order.status,
        "date_created": timestamp(order.date_created),
        "is_renewed": false,
        "validity_years": 1,
        "certificate": {
            "id": order.certificate_id,
            "common_name": order.common_name,
            "dns_names": order.dns_names,
            "signature_hash": "sha256",
        },
        "organization": {"id": 1, "name": "Simulated Organization"},
        "container": {"id": order.container_id, "name": format!("Container {}", order.container_id)},
        "product": {
            "name_id": order.product_name_id,
            "name": order.product_name_id,
            "type": product_type(&order.product_name_id),
        },
        "product_name_id": order.product_name_id,
        "has_duplicates": false,
    })
}

/// The largest `limit` of a list call (documented for List domains; GUESS for List orders).
pub(crate) const MAX_LIMIT: usize = 1000;

/// Query parameters of a list call: `offset`, `limit` and the supported `filters[...]`.
struct ListQuery {
    offset: usize,
    limit: usize,
    filters: HashMap<String, String>,
}

fn invalid_param(message: &str) -> Response {
    ListError::invalid(message.to_string()).into_response()
}

/// A refused list request (kept small; becomes a 400 errors body).
struct ListError {
    code: &'static str,
    message: String,
}

impl ListError {
    /// GUESS: DigiCert's code for a bad list parameter is not documented.
    fn invalid(message: String) -> Self {
        Self { code: "invalid_param", message }
    }
}

impl IntoResponse for ListError {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.code, &self.message)
    }
}

/// Parses paging and filters; `supported` are the filter names this list implements. GUESSES:
/// no `limit` (or `limit=0`, as in DigiCert's example `page`) means 1000; above 1000 answers 400
/// `invalid_param`; a filter the simulator does not implement answers 400 `unsupported_filter`
/// (a simulator limitation: DigiCert has more filters).
fn list_query(q: &[(String, String)], supported: &[&str]) -> Result<ListQuery, ListError> {
    let mut query = ListQuery { offset: 0, limit: MAX_LIMIT, filters: HashMap::new() };
    for (key, value) in q {
        if key == "offset" {
            query.offset = value
                .trim()
                .parse()
                .map_err(|_| ListError::invalid(format!("offset must be a number, got {value:?}")))?;
        } else if key == "limit" {
            let limit: usize = value
                .trim()
                .parse()
                .map_err(|_| ListError::invalid(format!("limit must be a number, got {value:?}")))?;
            if limit > MAX_LIMIT {
                return Err(ListError::invalid(format!("limit must be at most {MAX_LIMIT}, got {limit}")));
            }
            query.limit = if limit == 0 { MAX_LIMIT } else { limit };
        } else if let Some(name) = key.strip_prefix("filters[").and_then(|k| k.strip_suffix(']')) {
            if !supported.contains(&name) {
                return Err(ListError {
                    code: "unsupported_filter",
                    message: format!(
                        "the simulator does not implement filters[{name}] (supported: {})",
                        supported.join(", ")
                    ),
                });
            }
            query.filters.insert(name.to_string(), value.clone());
        }
    }
    Ok(query)
}

fn container_filter(q: &ListQuery) -> Result<Option<u64>, ListError> {
    q.filters
        .get("container_id")
        .map(|c| {
            c.trim()
                .parse()
                .map_err(|_| ListError::invalid(format!("filters[container_id] must be a number, got {c:?}")))
        })
        .transpose()
}

/// `{key: items, page}`; the key is left out when nothing matched (as DigiCert does).
fn page_json(key: &str, items: Vec<Value>, total: usize, q: &ListQuery) -> Response {
    let mut v = json!({"page": {"total": total, "limit": q.limit, "offset": q.offset}});
    if !items.is_empty() {
        v[key] = Value::Array(items);
    }
    axum::Json(v).into_response()
}

/// `GET /order/certificate`: List orders, by id, filtered by status, product and container.
async fn list_orders(State(sim): State<Sim>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let q = match list_query(&q, &["status", "product_name_id", "container_id"]) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let container = match container_filter(&q) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Some(status) = q.filters.get("status")
        && !crate::state::ORDER_STATUSES.contains(&status.as_str())
    {
        return invalid_param(&format!("filters[status] {status:?} is not an order status"));
    }
    let w = sim.world();
    let matching: Vec<&crate::state::Order> = w
        .orders
        .values()
        .filter(|o| q.filters.get("status").is_none_or(|s| *s == o.status))
        .filter(|o| q.filters.get("product_name_id").is_none_or(|p| *p == o.product_name_id))
        .filter(|o| container.is_none_or(|c| c == o.container_id))
        .collect();
    let items = matching.iter().skip(q.offset).take(q.limit).map(|o| order_json(o)).collect();
    page_json("orders", items, matching.len(), &q)
}

/// A `dcv_expiration` value: a UTC timestamp, or (without `include_dcv_expiration_time`) a date
/// in Mountain Time, GUESS: taken at a fixed UTC-7, daylight saving ignored.
fn dcv_expiration_json(dates: &std::collections::BTreeMap<String, DateTime<Utc>>, with_time: bool) -> Value {
    let mountain = chrono::FixedOffset::west_opt(7 * 3600).expect("UTC-7 is a valid offset");
    let map = dates
        .iter()
        .map(|(kind, t)| {
            let shown =
                if with_time { timestamp(*t) } else { t.with_timezone(&mountain).format("%Y-%m-%d").to_string() };
            (kind.clone(), json!(shown))
        })
        .collect();
    Value::Object(map)
}

/// One validation entry of a domain.
fn validation_json(kind: &str, until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Value {
    let status = crate::validation_status(until, now);
    let mut v = json!({
        "type": kind,
        "name": kind.to_ascii_uppercase(),
        "status": status,
        "dcv_status": if status == "active" { "complete" } else { "pending" },
    });
    if let Some(until) = until {
        v["validated_until"] = json!(timestamp(until));
    }
    v
}

/// A domain as List domains shows it: active validations only, the key left out when none;
/// `dcv_expiration` only once DCV completed; no `dcv_token`.
fn domain_list_json(d: &crate::state::Domain, now: DateTime<Utc>, with_time: bool) -> Value {
    let mut v = json!({
        "id": d.id,
        "is_active": d.is_active,
        "name": d.name,
        "date_created": timestamp(d.date_created),
        "dcv_method": d.dcv_method.as_str(),
        "container": {"id": d.container_id, "name": format!("Container {}", d.container_id)},
        "base_domain": ValidationScope::Base.owner(&d.name),
    });
    let active: Vec<Value> = d
        .validations
        .iter()
        .filter(|(_, until)| until.is_some_and(|u| u > now))
        .map(|(kind, until)| {
            let mut v = validation_json(kind, *until, now);
            // List domains' documented entries carry no dcv_status (Domain info's do)
            if let Some(entry) = v.as_object_mut() {
                entry.remove("dcv_status");
            }
            v
        })
        .collect();
    if !active.is_empty() {
        v["validations"] = json!(active);
    }
    if !d.dcv_expiration.is_empty() {
        v["dcv_expiration"] = dcv_expiration_json(&d.dcv_expiration, with_time);
    }
    v
}

/// `GET /domain`: List domains, by id, filtered by `filters[status]` (`active`/`inactive`) and
/// `filters[container_id]` (GUESS: DigiCert's page does not list this filter; third-party
/// clients send a container id).
async fn list_domains(State(sim): State<Sim>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let now = sim.now();
    let with_time = q.iter().any(|(k, v)| k == "include_dcv_expiration_time" && (v == "true" || v == "1"));
    let q = match list_query(&q, &["status", "container_id"]) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let container = match container_filter(&q) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let active = match q.filters.get("status").map(String::as_str) {
        None => None,
        Some("active") => Some(true),
        Some("inactive") => Some(false),
        Some(other) => return invalid_param(&format!("filters[status] {other:?}: expected active or inactive")),
    };
    let w = sim.world();
    let matching: Vec<&crate::state::Domain> = w
        .domains
        .values()
        .filter(|d| active.is_none_or(|a| a == d.is_active))
        .filter(|d| container.is_none_or(|c| c == d.container_id))
        .collect();
    let items = matching.iter().skip(q.offset).take(q.limit).map(|d| domain_list_json(d, now, with_time)).collect();
    page_json("domains", items, matching.len(), &q)
}

async fn order_validation(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let w = sim.world();
    let Some(order) = parse_id(&id).and_then(|id| w.orders.get(&id)) else {
        return not_found();
    };
    let scope = order.scope(w.validation_scope);
    let validations: Vec<Value> = order
        .name_validations()
        .into_iter()
        .map(|v| json!({ "dns_name": v.dns_name, "status": v.status, "name_scope": scope.owner(&v.dns_name) }))
        .collect();
    axum::Json(json!({
        "order_id": order.id.to_string(),
        "order_status": order.status,
        "order_dcv_method": order.dcv_method.as_str(),
        "order_name_scope": match scope { ValidationScope::Base => "base_domain", ValidationScope::Exact => "fqdn" },
        "dns_name_validations": validations,
    }))
    .into_response()
}

fn parse_json(body: &Bytes) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| format!("The request body is not valid JSON: {e}"))
}

fn invalid_dcv_method() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_dcv_method",
        "The DCV method is invalid: expected email, dns-txt-token, dns-cname-token or http-token.",
    )
}

async fn order_dcv_method(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "invalid_json", &msg),
    };
    let mut w = sim.world();
    let Some(order) = parse_id(&id).and_then(|id| w.orders.get_mut(&id)) else {
        return not_found();
    };
    let Some(method) = body.get("dcv_method").and_then(Value::as_str).and_then(DcvMethod::parse) else {
        return invalid_dcv_method();
    };
    if order.status != "pending" {
        // documented: pending orders only; GUESS: the code and message of the refusal
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_order_status",
            "The DCV method can only be changed on a pending order.",
        );
    }
    order.dcv_method = method;
    StatusCode::NO_CONTENT.into_response()
}

fn dcv_token_json(method: DcvMethod, name: &str, token: &str, expires: DateTime<Utc>) -> Value {
    let mut v = json!({ "token": token, "expiration_date": timestamp(expires) });
    match method {
        DcvMethod::DnsCnameToken => v["verification_value"] = json!(DCV_CNAME_TARGET),
        DcvMethod::HttpToken => {
            v["http_token_url"] = json!(format!("http://{name}/.well-known/pki-validation/fileauth.txt"));
        }
        _ => {}
    }
    v
}

fn base_emails(name: &str) -> Vec<String> {
    ["administrator", "postmaster", "admin", "webmaster", "hostmaster"].iter().map(|u| format!("{u}@{name}")).collect()
}

async fn domain_submit_validation(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    let body = match parse_json(&body) {
        Ok(b) => b,
        Err(msg) => return error(StatusCode::BAD_REQUEST, "invalid_json", &msg),
    };
    let now = sim.now();
    let expiry = token_expiry(&sim);
    let mut w = sim.world();
    let w = &mut *w;
    let Some(domain) = parse_id(&id).and_then(|id| w.domains.get_mut(&id)) else {
        return not_found();
    };
    let types: Option<Vec<String>> = body
        .get("validations")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.get("type").and_then(Value::as_str).map(str::to_ascii_lowercase)).collect());
    let Some(types) = types.filter(|t| !t.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_param",
            "validations is required: a list of objects such as {\"type\": \"ov\"}.",
        );
    };
    let method = match body.get("dcv_method") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_str().and_then(DcvMethod::parse) {
            Some(m) => Some(m),
            None => return invalid_dcv_method(),
        },
    };
    for t in types {
        domain.validations.entry(t).or_insert(None);
    }
    let Some(method) = method else {
        // without a dcv_method DigiCert answers an empty body; the token comes from Domain info
        return StatusCode::NO_CONTENT.into_response();
    };
    domain.dcv_method = method;
    // GUESS (undocumented): submitting a validated domain again opens a new DCV cycle; its
    // validations stay active until their dates, a new check renews them.
    domain.validated_at = None;
    if method == DcvMethod::Email {
        return axum::Json(json!({
            "id": domain.id,
            "validation_emails": { "name_scope": domain.name, "base_emails": base_emails(&domain.name) },
        }))
        .into_response();
    }
    let needs_token = domain.token.as_ref().is_none_or(|(_, e)| *e <= now);
    if needs_token {
        domain.token = Some((random_token(&mut w.rng), expiry));
        w.stats.tokens_issued += 1;
    }
    let (token, expires) = domain.token.clone().expect("token set above");
    axum::Json(json!({
        "id": domain.id,
        "dcv_token": dcv_token_json(method, &domain.name, &token, expires),
    }))
    .into_response()
}

async fn domain_dcv_token(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let expiry = token_expiry(&sim);
    let mut w = sim.world();
    let w = &mut *w;
    let Some(domain) = parse_id(&id).and_then(|id| w.domains.get_mut(&id)) else {
        return not_found();
    };
    if !domain.dcv_method.uses_token() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_dcv_method",
            "This domain's DCV method is set incorrectly for this action.",
        );
    }
    let token = random_token(&mut w.rng);
    domain.token = Some((token.clone(), expiry));
    w.stats.tokens_issued += 1;
    tracing::info!(domain_id = domain.id, "new domain dcv token (the old one no longer validates)");
    let mut v = dcv_token_json(domain.dcv_method, &domain.name, &token, expiry);
    if domain.dcv_method == DcvMethod::HttpToken {
        v["verification_value"] = v["http_token_url"].clone();
    }
    axum::Json(v).into_response()
}

/// How long a completed domain DCV can be reused (397 days, the CA/B Forum maximum before
/// SC-081 shortens it).
const DCV_REUSE_DAYS: i64 = 397;

fn domain_not_found(method: DcvMethod, expired: bool) -> Response {
    let mut resp = match method {
        // DigiCert documents this code with a leading space; keep it so clients learn to trim
        DcvMethod::DnsCnameToken => {
            error(StatusCode::BAD_REQUEST, " invalid_dns_cname", "Requested domain does not have a valid cname.")
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "invalid_dns_txt",
            "Could not find a valid TXT record for one or more domains.",
        ),
    };
    if expired {
        resp.headers_mut().insert("x-sim-note", HeaderValue::from_static("token expired or never issued"));
    }
    resp
}

async fn domain_validate_token(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let now = sim.now();
    let snapshot = {
        let mut w = sim.world();
        let w = &mut *w;
        let Some(domain) = parse_id(&id).and_then(|id| w.domains.get(&id)) else {
            return not_found();
        };
        let (did, method) = (domain.id, domain.dcv_method);
        if matches!(method, DcvMethod::Email | DcvMethod::HttpToken) {
            let valid = usize::from(domain.validated_at.is_some());
            record_check(
                &sim,
                w,
                (UnitKind::Domain, did),
                CheckOutcome::WrongMethod,
                (valid, 1),
                LookupCounters::default(),
            );
            return wrong_method(method);
        }
        if domain.validated_at.is_some() {
            let token = domain.token.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
            record_check(
                &sim,
                w,
                (UnitKind::Domain, did),
                CheckOutcome::AlreadyValid,
                (1, 1),
                LookupCounters::default(),
            );
            return axum::Json(json!({"token": token, "status": "active"})).into_response();
        }
        match domain.token.clone() {
            Some((token, expires)) if expires > now => (did, method, domain.name.clone(), token),
            _ => {
                record_check(
                    &sim,
                    w,
                    (UnitKind::Domain, did),
                    CheckOutcome::Expired,
                    (0, 1),
                    LookupCounters::default(),
                );
                return domain_not_found(method, true);
            }
        }
    };
    let (did, method, name, token) = snapshot;
    let mut counters = LookupCounters::default();
    // Domain prevalidation always validates the name as submitted.
    let found = validate_name(&sim, method, ValidationScope::Exact, &name, &token, &mut counters).await;

    let mut w = sim.world();
    let w = &mut *w;
    let Some(domain) = w.domains.get_mut(&did) else {
        return not_found();
    };
    let current = domain.token.as_ref().is_some_and(|(t, _)| *t == token) && domain.dcv_method == method;
    if found && current {
        let at = sim.now();
        domain.validated_at = Some(at);
        let until = at + chrono::Duration::days(DCV_REUSE_DAYS);
        for (kind, validated_until) in &mut domain.validations {
            *validated_until = Some(until);
            domain.dcv_expiration.insert(kind.clone(), until);
        }
        tracing::info!(domain_id = did, "domain dcv valid");
        record_check(&sim, w, (UnitKind::Domain, did), CheckOutcome::Valid, (1, 1), counters);
        axum::Json(json!({"token": token, "status": "active"})).into_response()
    } else {
        tracing::info!(
            domain_id = did,
            negative_cache_hits = counters.negative_cache_hits,
            "domain dcv check found no record"
        );
        record_check(&sim, w, (UnitKind::Domain, did), CheckOutcome::NotFound, (0, 1), counters);
        domain_not_found(method, false)
    }
}

async fn domain_info(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let now = sim.now();
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let w = sim.world();
    let Some(d) = parse_id(&id).and_then(|id| w.domains.get(&id)) else {
        return not_found();
    };
    let mut v = json!({
        "id": d.id,
        "name": d.name,
        "status": d.status,
        "is_active": d.is_active,
        "date_created": timestamp(d.date_created),
        "dcv_method": d.dcv_method.as_str(),
        "container": {"id": d.container_id, "name": format!("Container {}", d.container_id)},
        "base_domain": ValidationScope::Base.owner(&d.name),
    });
    if flag("include_dcv") && !d.dcv_expiration.is_empty() {
        v["dcv_expiration"] = dcv_expiration_json(&d.dcv_expiration, flag("include_dcv_expiration_time"));
    }
    if flag("include_dcv")
        && let Some((token, expires)) = &d.token
    {
        let mut t = dcv_token_json(d.dcv_method, &d.name, token, *expires);
        let status = if d.validated_at.is_some() {
            "active"
        } else if *expires <= now {
            "expired"
        } else {
            "pending"
        };
        t["status"] = json!(status);
        v["dcv_token"] = t;
    }
    if flag("include_validation") {
        let validations: Vec<Value> =
            d.validations.iter().map(|(kind, until)| validation_json(kind, *until, now)).collect();
        v["validations"] = json!(validations);
    }
    axum::Json(v).into_response()
}
