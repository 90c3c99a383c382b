//! The `/_sim/` admin API: create units, inspect them, move the clock, read stats, set faults.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::error;
use crate::{DomainPatch, FaultConfig, NewDomain, NewOrder, OrderPatch, Sim, SyntheticAccount};

pub(crate) fn routes(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/orders", post(create_orders))
        .route("/_sim/orders/{id}", get(get_order).patch(patch_order))
        .route("/_sim/domains", post(create_domains))
        .route("/_sim/domains/{id}", get(get_domain).patch(patch_domain))
        .route("/_sim/bulk", post(bulk))
        .route("/_sim/clock/advance", post(advance_clock))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/account", get(get_account).put(put_account))
        .with_state(sim)
}

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", &message)
}

/// One item or an array of them.
fn one_or_many<T: DeserializeOwned>(body: &Bytes) -> Result<Vec<T>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let items = match v {
        Value::Array(items) => items,
        other => vec![other],
    };
    items.into_iter().map(|i| serde_json::from_value(i).map_err(|e| format!("invalid item: {e}"))).collect()
}

async fn create_orders(State(sim): State<Sim>, body: Bytes) -> Response {
    let orders: Vec<NewOrder> = match one_or_many(&body) {
        Ok(o) => o,
        Err(msg) => return bad_request(msg),
    };
    let ids: Vec<u64> = orders.iter().map(|o| o.id).collect();
    for o in orders {
        sim.add_order(o);
    }
    let views: Vec<_> = ids.iter().filter_map(|id| sim.order(*id)).collect();
    (StatusCode::CREATED, axum::Json(views)).into_response()
}

async fn create_domains(State(sim): State<Sim>, body: Bytes) -> Response {
    let domains: Vec<NewDomain> = match one_or_many(&body) {
        Ok(d) => d,
        Err(msg) => return bad_request(msg),
    };
    let ids: Vec<u64> = domains.iter().map(|d| d.id).collect();
    for d in domains {
        sim.add_domain(d);
    }
    let views: Vec<_> = ids.iter().filter_map(|id| sim.domain(*id)).collect();
    (StatusCode::CREATED, axum::Json(views)).into_response()
}

fn unknown(kind: &str, id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", &format!("no {kind} with id {id}"))
}

async fn get_order(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| sim.order(id)) {
        Some(v) => axum::Json(v).into_response(),
        None => unknown("order", &id),
    }
}

async fn get_domain(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    match id.parse().ok().and_then(|id| sim.domain(id)) {
        Some(v) => axum::Json(v).into_response(),
        None => unknown("domain", &id),
    }
}

/// A 404 for an unknown id, a 400 for anything else wrong.
fn patch_failed(kind: &str, id: &str, message: String) -> Response {
    if message.starts_with("no ") { unknown(kind, id) } else { bad_request(message) }
}

async fn patch_order(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    let patch: OrderPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return bad_request(format!(
                "invalid order change: {e} (fields: status, product_name_id, container_id, dcv_method)"
            ));
        }
    };
    let Ok(numeric) = id.parse() else {
        return unknown("order", &id);
    };
    match sim.update_order(numeric, patch) {
        Ok(view) => axum::Json(view).into_response(),
        Err(message) => patch_failed("order", &id, message),
    }
}

async fn patch_domain(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    let patch: DomainPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return bad_request(format!(
                "invalid domain change: {e} (fields: is_active, container_id, validations {{type: timestamp|null}}, \
                 dcv_expiration {{type: timestamp}})"
            ));
        }
    };
    let Ok(numeric) = id.parse() else {
        return unknown("domain", &id);
    };
    match sim.update_domain(numeric, patch) {
        Ok(view) => axum::Json(view).into_response(),
        Err(message) => patch_failed("domain", &id, message),
    }
}

async fn bulk(State(sim): State<Sim>, body: Bytes) -> Response {
    let account: SyntheticAccount = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return bad_request(format!(
                "invalid bulk request: {e} (fields: orders, pending, domains, zones, first_order_id, first_domain_id)"
            ));
        }
    };
    if account.pending > account.orders {
        return bad_request(format!("pending ({}) exceeds orders ({})", account.pending, account.orders));
    }
    let (orders, domains) = sim.add_synthetic(&account);
    (StatusCode::CREATED, axum::Json(json!({"orders": orders, "domains": domains}))).into_response()
}

async fn advance_clock(State(sim): State<Sim>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("expected {{\"seconds\": N}}: {e}")),
    };
    let Some(seconds) = v.get("seconds").and_then(Value::as_f64).filter(|s| *s >= 0.0 && s.is_finite()) else {
        return bad_request("expected {\"seconds\": N} with N >= 0".to_string());
    };
    sim.advance_clock(Duration::from_secs_f64(seconds));
    axum::Json(json!({
        "offset_seconds": sim.clock_offset().as_secs_f64(),
        "now": sim.now(),
    }))
    .into_response()
}

async fn stats(State(sim): State<Sim>) -> Response {
    axum::Json(sim.stats()).into_response()
}

async fn reset(State(sim): State<Sim>) -> Response {
    sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(sim): State<Sim>) -> Response {
    axum::Json(sim.faults()).into_response()
}

async fn put_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    let faults: FaultConfig = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid fault config: {e}")),
    };
    if let Err(e) = faults.validate() {
        return bad_request(format!("invalid fault config: {e}"));
    }
    sim.set_faults(faults.clone());
    axum::Json(faults).into_response()
}

/// The account settings the simulator models.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Account {
    validation_scope: crate::ValidationScope,
}

async fn get_account(State(sim): State<Sim>) -> Response {
    axum::Json(Account { validation_scope: sim.validation_scope() }).into_response()
}

async fn put_account(State(sim): State<Sim>, body: Bytes) -> Response {
    match serde_json::from_slice::<Account>(&body) {
        Ok(account) => {
            sim.set_validation_scope(account.validation_scope);
            axum::Json(account).into_response()
        }
        Err(e) => bad_request(format!(
            "invalid account settings: {e} (expected {{\"validation_scope\": \"base\" | \"exact\"}})"
        )),
    }
}
