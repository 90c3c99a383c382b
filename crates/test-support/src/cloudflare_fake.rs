//! A stateful fake of Cloudflare's v4 API, limited to what a DNS-01/DCV client uses, with the
//! documented shapes: every answer is the `{success, errors: [{code, message}], messages, result,
//! result_info}` envelope; lists paginate with `page`/`per_page` and `result_info {page, per_page,
//! count, total_count, total_pages}`.
//!
//! Routes (under `/client/v4`): `GET /user/tokens/verify`, `GET /zones?name=`, `GET /zones/{id}`,
//! `GET|POST /zones/{id}/dns_records` (filters `type`, `name`, `content`), `GET|DELETE
//! /zones/{id}/dns_records/{record_id}`.
//!
//! Behaviour copied from Cloudflare: Bearer tokens (unknown token: 403 code 9109 "Invalid access
//! token"; `/user/tokens/verify` with an unknown token: 401 code 1000; a read-only token writing:
//! 403 code 10000 "Authentication error"); duplicates rejected with 400 code 81058 "An identical
//! record already exists."; a CNAME next to other records rejected (81053 / 81054); deleting a
//! missing record: 404 code 81044; names without the zone suffix are made relative to the zone;
//! TXT content accepted raw or quoted (Cloudflare's docs ask for quoted RFC 1035 strings) and
//! returned as sent; TTL 1 (automatic) or 60..=86400; rate limiting answered 429 with
//! `Retry-After` and code 971.
//!
//! Test knobs: inject 429s or 5xx for the next N requests, count requests, cap `per_page` to force
//! pagination, and read/write the records directly ([`CloudflareFake::insert_record`],
//! [`CloudflareFake::records`], [`CloudflareFake::txt_values`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::moto::unquote_txt;

/// Permissions of a token known to the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScope {
    /// Zone:Zone:Read + Zone:DNS:Edit on every zone.
    Edit,
    /// Zone:Zone:Read + Zone:DNS:Read only.
    ReadOnly,
}

/// A fault served instead of the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfFault {
    /// 429 with `Retry-After: secs`.
    RateLimited {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// A 5xx with Cloudflare's generic error body.
    ServerError(u16),
}

/// One DNS record held by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRecord {
    /// 32 hex digits.
    pub id: String,
    /// Zone id.
    pub zone_id: String,
    /// Absolute name, lower-case, no trailing dot.
    pub name: String,
    /// `TXT`, `CNAME`, ...
    pub rtype: String,
    /// Content as sent by the client.
    pub content: String,
    /// TTL (1 = automatic).
    pub ttl: u32,
    /// Comment, when one was sent.
    pub comment: Option<String>,
}

#[derive(Debug)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Debug, Default)]
struct FakeState {
    zones: Vec<Zone>,
    records: Vec<FakeRecord>,
    tokens: HashMap<String, TokenScope>,
    faults: VecDeque<CfFault>,
    requests: Vec<(Method, String)>,
    max_per_page: u32,
}

type Shared = Arc<Mutex<FakeState>>;

/// Builder for [`CloudflareFake`].
#[derive(Debug)]
pub struct CloudflareFakeBuilder {
    zones: Vec<String>,
    max_per_page: u32,
}

impl Default for CloudflareFakeBuilder {
    fn default() -> Self {
        Self { zones: Vec::new(), max_per_page: 5_000_000 }
    }
}

impl CloudflareFakeBuilder {
    /// Adds a zone (active, in the token's account).
    pub fn zone(mut self, name: &str) -> Self {
        self.zones.push(name.trim_end_matches('.').to_ascii_lowercase());
        self
    }

    /// Caps `per_page` (Cloudflare allows up to 5,000,000 for DNS records): forces pagination.
    pub fn max_per_page(mut self, n: u32) -> Self {
        self.max_per_page = n.max(1);
        self
    }

    /// Starts the server on `127.0.0.1` (a free port).
    pub async fn start(self) -> CloudflareFake {
        let zones = if self.zones.is_empty() { vec!["example.com".to_string()] } else { self.zones };
        let token = format!("cf-edit-{}", hex_id());
        let read_only_token = format!("cf-read-{}", hex_id());
        let mut state = FakeState { max_per_page: self.max_per_page, ..FakeState::default() };
        for name in &zones {
            state.zones.push(Zone { id: hex_id(), name: name.clone() });
        }
        state.tokens.insert(token.clone(), TokenScope::Edit);
        state.tokens.insert(read_only_token.clone(), TokenScope::ReadOnly);
        let shared: Shared = Arc::new(Mutex::new(state));

        let api = axum::Router::new()
            .route("/user/tokens/verify", get(verify))
            .route("/zones", get(list_zones))
            .route("/zones/{zone_id}", get(get_zone))
            .route("/zones/{zone_id}/dns_records", get(list_records).post(create_record))
            .route("/zones/{zone_id}/dns_records/{record_id}", get(get_record).delete(delete_record))
            .fallback(|| async { cf_error(StatusCode::NOT_FOUND, 7000, "No route for that URI") })
            .layer(middleware::from_fn_with_state(shared.clone(), gate))
            .with_state(shared.clone());
        let app = axum::Router::new().nest("/client/v4", api);
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Cloudflare fake on 127.0.0.1");
        let addr = listener.local_addr().expect("fake address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CloudflareFake { base_url: format!("http://{addr}/client/v4"), token, read_only_token, state: shared, task }
    }
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct CloudflareFake {
    /// `http://127.0.0.1:PORT/client/v4`.
    pub base_url: String,
    /// A token with Zone:DNS:Edit on every zone.
    pub token: String,
    /// A token with read permissions only.
    pub read_only_token: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CloudflareFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CloudflareFake {
    /// A fake serving the single zone `example.com`.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A builder for zones and limits.
    pub fn builder() -> CloudflareFakeBuilder {
        CloudflareFakeBuilder::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state lock")
    }

    /// The id of `zone`.
    pub fn zone_id(&self, zone: &str) -> String {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        self.lock()
            .zones
            .iter()
            .find(|z| z.name == zone)
            .map(|z| z.id.clone())
            .unwrap_or_else(|| panic!("fake has no zone {zone}"))
    }

    /// Serves `n` 429 answers with `Retry-After: retry_after_secs` before anything else.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.inject(CfFault::RateLimited { retry_after_secs }, n);
    }

    /// Serves `fault` for the next `n` requests.
    pub fn inject(&self, fault: CfFault, n: u32) {
        self.lock().faults.extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Faults not served yet.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// Every request received so far (method, path with query).
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.lock().requests.clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// How many requests had this method and a path (without query) ending with `suffix`.
    pub fn count(&self, method: Method, suffix: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|(m, p)| *m == method && p.split('?').next().unwrap_or_default().ends_with(suffix))
            .count()
    }

    /// Adds a record directly (another tool's record); returns its id. `content` is stored as is.
    pub fn insert_record(&self, zone: &str, rtype: &str, name: &str, content: &str, ttl: u32) -> String {
        let zone_id = self.zone_id(zone);
        let id = hex_id();
        self.lock().records.push(FakeRecord {
            id: id.clone(),
            zone_id,
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            rtype: rtype.to_ascii_uppercase(),
            content: content.to_string(),
            ttl,
            comment: None,
        });
        id
    }

    /// Every record of `zone`.
    pub fn records(&self, zone: &str) -> Vec<FakeRecord> {
        let zone_id = self.zone_id(zone);
        self.lock().records.iter().filter(|r| r.zone_id == zone_id).cloned().collect()
    }

    /// The contents at `name`/`rtype` as DNS would serve them: TXT unquoted (strings joined),
    /// CNAME targets without trailing dot.
    pub fn values(&self, name: &str, rtype: &str) -> Vec<String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.lock()
            .records
            .iter()
            .filter(|r| r.name == name && r.rtype.eq_ignore_ascii_case(rtype))
            .map(|r| canonical(&r.rtype, &r.content))
            .collect()
    }

    /// The TXT values at `name`.
    pub fn txt_values(&self, name: &str) -> Vec<String> {
        self.values(name, "TXT")
    }
}

fn hex_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What a content means as DNS data, for duplicate detection and read-back.
fn canonical(rtype: &str, content: &str) -> String {
    match rtype {
        "TXT" => unquote_txt(content),
        "CNAME" => content.trim_end_matches('.').to_ascii_lowercase(),
        _ => content.to_string(),
    }
}

fn envelope(result: Value, result_info: Option<Value>) -> Value {
    let mut v = json!({"success": true, "errors": [], "messages": [], "result": result});
    if let Some(info) = result_info {
        v["result_info"] = info;
    }
    v
}

fn cf_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
    )
        .into_response()
}

fn record_json(r: &FakeRecord, zone_name: &str) -> Value {
    json!({
        "id": r.id,
        "zone_id": r.zone_id,
        "zone_name": zone_name,
        "name": r.name,
        "type": r.rtype,
        "content": r.content,
        "proxiable": r.rtype == "CNAME",
        "proxied": false,
        "ttl": r.ttl,
        "settings": {},
        "meta": {},
        "comment": r.comment,
        "tags": [],
        "created_on": "2026-01-01T00:00:00.000000Z",
        "modified_on": "2026-01-01T00:00:00.000000Z",
    })
}

/// Faults, request log and Bearer authentication, before any route.
async fn gate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let token = bearer(req.headers());
    let (fault, scope) = {
        let mut st = state.lock().expect("fake state lock");
        st.requests.push((method.clone(), path.clone()));
        let fault = st.faults.pop_front();
        let scope = token.as_ref().and_then(|t| st.tokens.get(t).copied());
        (fault, scope)
    };
    match fault {
        Some(CfFault::RateLimited { retry_after_secs }) => {
            let mut resp =
                cf_error(StatusCode::TOO_MANY_REQUESTS, 971, "Please wait and consider throttling your request speed");
            resp.headers_mut().insert("retry-after", retry_after_secs.to_string().parse().expect("header value"));
            return resp;
        }
        Some(CfFault::ServerError(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return cf_error(status, 10001, "Internal error, please try again");
        }
        None => {}
    }
    let is_verify = path.contains("/user/tokens/verify");
    let Some(scope) = scope else {
        if token.is_none() {
            return cf_error(StatusCode::BAD_REQUEST, 6003, "Invalid request headers");
        }
        if is_verify {
            return cf_error(StatusCode::UNAUTHORIZED, 1000, "Invalid API Token");
        }
        return cf_error(StatusCode::FORBIDDEN, 9109, "Invalid access token");
    };
    if scope == TokenScope::ReadOnly && method != Method::GET {
        return cf_error(StatusCode::FORBIDDEN, 10000, "Authentication error");
    }
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

async fn verify(headers: HeaderMap) -> Response {
    let id = format!("{:032x}", bearer(&headers).map(|t| t.len() as u128).unwrap_or_default());
    Json(envelope(json!({"id": id, "status": "active"}), None)).into_response()
}

#[derive(Debug, Deserialize)]
struct Paging {
    page: Option<String>,
    per_page: Option<String>,
}

/// `(page, per_page)` after Cloudflare's validation, or an error response.
fn paging(p: &Paging, default_per_page: u32, max: u32) -> Result<(u32, u32), &'static str> {
    let page = match &p.page {
        None => 1,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err("page must be a positive integer");
            }
        },
    };
    let per_page = match &p.per_page {
        None => default_per_page,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err("per_page must be a positive integer");
            }
        },
    };
    Ok((page, per_page.clamp(5.min(max), max)))
}

fn paginate<T: Clone>(items: &[T], page: u32, per_page: u32) -> (Vec<T>, Value) {
    let total = items.len();
    let total_pages = total.div_ceil(per_page as usize);
    let start = ((page - 1) as usize).saturating_mul(per_page as usize).min(total);
    let end = (start + per_page as usize).min(total);
    let slice = items[start..end].to_vec();
    let info = json!({"page": page, "per_page": per_page, "count": slice.len(), "total_count": total, "total_pages": total_pages});
    (slice, info)
}

#[derive(Debug, Deserialize)]
struct ZoneQuery {
    name: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn list_zones(State(state): State<Shared>, Query(q): Query<ZoneQuery>) -> Response {
    let st = state.lock().expect("fake state lock");
    let (page, per_page) = match paging(&q.paging, 20, 50) {
        Ok(p) => p,
        Err(m) => return cf_error(StatusCode::BAD_REQUEST, 1004, m),
    };
    let want = q.name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let zones: Vec<Value> = st
        .zones
        .iter()
        .filter(|z| want.as_ref().is_none_or(|w| *w == z.name))
        .map(|z| json!({"id": z.id, "name": z.name, "status": "active", "paused": false, "type": "full"}))
        .collect();
    let (result, info) = paginate(&zones, page, per_page);
    Json(envelope(Value::Array(result), Some(info))).into_response()
}

fn zone_name(st: &FakeState, zone_id: &str) -> Option<String> {
    st.zones.iter().find(|z| z.id == zone_id).map(|z| z.name.clone())
}

fn no_zone() -> Response {
    cf_error(StatusCode::NOT_FOUND, 7003, "Could not route to /zones, perhaps your object identifier is invalid?")
}

async fn get_zone(State(state): State<Shared>, Path(zone_id): Path<String>) -> Response {
    let st = state.lock().expect("fake state lock");
    match zone_name(&st, &zone_id) {
        Some(name) => Json(envelope(json!({"id": zone_id, "name": name, "status": "active"}), None)).into_response(),
        None => no_zone(),
    }
}

#[derive(Debug, Deserialize)]
struct RecordQuery {
    #[serde(rename = "type")]
    rtype: Option<String>,
    name: Option<String>,
    #[serde(rename = "name.exact")]
    name_exact: Option<String>,
    content: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

async fn list_records(
    State(state): State<Shared>,
    Path(zone_id): Path<String>,
    Query(q): Query<RecordQuery>,
) -> Response {
    let st = state.lock().expect("fake state lock");
    let Some(zname) = zone_name(&st, &zone_id) else {
        return no_zone();
    };
    let (page, per_page) = match paging(&q.paging, 100, st.max_per_page) {
        Ok(p) => p,
        Err(m) => return cf_error(StatusCode::BAD_REQUEST, 1004, m),
    };
    let name = q.name_exact.or(q.name).map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let rtype = q.rtype.map(|t| t.to_ascii_uppercase());
    let records: Vec<&FakeRecord> = st
        .records
        .iter()
        .filter(|r| r.zone_id == zone_id)
        .filter(|r| name.as_ref().is_none_or(|n| *n == r.name))
        .filter(|r| rtype.as_ref().is_none_or(|t| *t == r.rtype))
        .filter(|r| q.content.as_ref().is_none_or(|c| *c == r.content))
        .collect();
    let (result, info) = paginate(&records, page, per_page);
    let result: Vec<Value> = result.into_iter().map(|r| record_json(r, &zname)).collect();
    Json(envelope(Value::Array(result), Some(info))).into_response()
}

#[derive(Debug, Deserialize)]
struct NewRecord {
    #[serde(rename = "type")]
    rtype: Option<String>,
    name: Option<String>,
    content: Option<String>,
    ttl: Option<u32>,
    comment: Option<String>,
    #[allow(dead_code)]
    proxied: Option<bool>,
}

async fn create_record(State(state): State<Shared>, Path(zone_id): Path<String>, body: axum::body::Bytes) -> Response {
    let Ok(new) = serde_json::from_slice::<NewRecord>(&body) else {
        return cf_error(StatusCode::BAD_REQUEST, 9207, "Request body is invalid.");
    };
    let mut st = state.lock().expect("fake state lock");
    let Some(zname) = zone_name(&st, &zone_id) else {
        return no_zone();
    };
    let (Some(rtype), Some(name), Some(content)) = (new.rtype, new.name, new.content) else {
        return cf_error(StatusCode::BAD_REQUEST, 9000, "DNS name, type and content are required.");
    };
    let rtype = rtype.to_ascii_uppercase();
    let mut name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "@" {
        name = zname.clone();
    } else if !dns_provider::in_zone(&name, &zname) {
        // Cloudflare reads a name without the zone suffix as relative to the zone.
        name = format!("{name}.{zname}");
    }
    let ttl = new.ttl.unwrap_or(1);
    if ttl != 1 && !(60..=86_400).contains(&ttl) {
        return cf_error(
            StatusCode::BAD_REQUEST,
            9021,
            "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.",
        );
    }
    if content.is_empty() {
        return cf_error(StatusCode::BAD_REQUEST, 9005, "Content for the record is invalid.");
    }
    let at_name: Vec<&FakeRecord> = st.records.iter().filter(|r| r.zone_id == zone_id && r.name == name).collect();
    let wanted = canonical(&rtype, &content);
    if at_name.iter().any(|r| r.rtype == rtype && canonical(&r.rtype, &r.content) == wanted) {
        return cf_error(StatusCode::BAD_REQUEST, 81058, "An identical record already exists.");
    }
    if rtype == "CNAME" && !at_name.is_empty() {
        return cf_error(StatusCode::BAD_REQUEST, 81053, "An A, AAAA, or CNAME record with that host already exists.");
    }
    if rtype != "CNAME" && at_name.iter().any(|r| r.rtype == "CNAME") {
        return cf_error(StatusCode::BAD_REQUEST, 81054, "A CNAME record with that host already exists.");
    }
    let record = FakeRecord {
        id: hex_id(),
        zone_id,
        name,
        rtype: rtype.clone(),
        content: if rtype == "CNAME" { content.trim_end_matches('.').to_string() } else { content },
        ttl,
        comment: new.comment,
    };
    let out = record_json(&record, &zname);
    st.records.push(record);
    Json(envelope(out, None)).into_response()
}

async fn get_record(State(state): State<Shared>, Path((zone_id, record_id)): Path<(String, String)>) -> Response {
    let st = state.lock().expect("fake state lock");
    let Some(zname) = zone_name(&st, &zone_id) else {
        return no_zone();
    };
    match st.records.iter().find(|r| r.zone_id == zone_id && r.id == record_id) {
        Some(r) => Json(envelope(record_json(r, &zname), None)).into_response(),
        None => cf_error(StatusCode::NOT_FOUND, 81044, "Record does not exist."),
    }
}

async fn delete_record(State(state): State<Shared>, Path((zone_id, record_id)): Path<(String, String)>) -> Response {
    let mut st = state.lock().expect("fake state lock");
    if zone_name(&st, &zone_id).is_none() {
        return no_zone();
    }
    let before = st.records.len();
    st.records.retain(|r| !(r.zone_id == zone_id && r.id == record_id));
    if st.records.len() == before {
        return cf_error(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    }
    Json(envelope(json!({"id": record_id}), None)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(fake: &CloudflareFake, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let mut req = client.request(method, format!("{}{path}", fake.base_url)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    /// Zones by name, create, duplicate rejection, pagination and delete follow Cloudflare's shapes.
    #[tokio::test]
    async fn documented_shapes() {
        let fake = CloudflareFake::builder().zone("example.com").max_per_page(5).start().await;
        let (s, v) = call(&fake, Method::GET, "/zones?name=example.com", &fake.token, None).await;
        assert_eq!(s, 200);
        assert_eq!(v["success"], true);
        let zid = v["result"][0]["id"].as_str().expect("zone id").to_string();
        assert_eq!(v["result_info"]["total_count"], 1);

        let body = json!({"type": "TXT", "name": "_dnsauth.example.com", "content": "\"tok\"", "ttl": 60});
        let (s, v) = call(&fake, Method::POST, &format!("/zones/{zid}/dns_records"), &fake.token, Some(body)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["result"]["name"], "_dnsauth.example.com");
        // identical content, unquoted this time: still a duplicate
        let body = json!({"type": "TXT", "name": "_dnsauth.example.com", "content": "tok", "ttl": 60});
        let (s, v) = call(&fake, Method::POST, &format!("/zones/{zid}/dns_records"), &fake.token, Some(body)).await;
        assert_eq!(s, 400);
        assert_eq!(v["errors"][0]["code"], 81058);

        for i in 0..7 {
            fake.insert_record("example.com", "TXT", "many.example.com", &format!("v{i}"), 60);
        }
        let (_, v) = call(
            &fake,
            Method::GET,
            &format!("/zones/{zid}/dns_records?name=many.example.com&page=2&per_page=5"),
            &fake.token,
            None,
        )
        .await;
        assert_eq!(v["result_info"], json!({"page": 2, "per_page": 5, "count": 2, "total_count": 7, "total_pages": 2}));

        let id = fake.records("example.com")[0].id.clone();
        let (s, _) = call(&fake, Method::DELETE, &format!("/zones/{zid}/dns_records/{id}"), &fake.token, None).await;
        assert_eq!(s, 200);
        let (s, v) = call(&fake, Method::DELETE, &format!("/zones/{zid}/dns_records/{id}"), &fake.token, None).await;
        assert_eq!((s, v["errors"][0]["code"].clone()), (404, json!(81044)));
    }

    /// Tokens: unknown ones and read-only writes are refused with Cloudflare's codes.
    #[tokio::test]
    async fn auth_and_faults() {
        let fake = CloudflareFake::start().await;
        let zid = fake.zone_id("example.com");
        let (s, v) = call(&fake, Method::GET, "/zones", "nope", None).await;
        assert_eq!((s, v["errors"][0]["code"].clone()), (403, json!(9109)));
        let (s, v) = call(&fake, Method::GET, "/user/tokens/verify", "nope", None).await;
        assert_eq!((s, v["errors"][0]["code"].clone()), (401, json!(1000)));
        let body = json!({"type": "TXT", "name": "x.example.com", "content": "\"v\"", "ttl": 60});
        let (s, v) =
            call(&fake, Method::POST, &format!("/zones/{zid}/dns_records"), &fake.read_only_token, Some(body)).await;
        assert_eq!((s, v["errors"][0]["code"].clone()), (403, json!(10000)));

        fake.rate_limit_next(1, 7);
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let resp =
            client.get(format!("{}/zones", fake.base_url)).bearer_auth(&fake.token).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(fake.pending_faults(), 0);
        assert_eq!(fake.request_count(), 4);
    }
}
