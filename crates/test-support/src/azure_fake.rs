//! A stateful fake of the parts of Azure that a DNS-01/DCV client uses: Azure Resource Manager's
//! DNS record-set API (`api-version=2018-05-01`), the Microsoft Entra ID v2.0 token endpoint and
//! the Instance Metadata Service (IMDS) identity endpoint, all on one `127.0.0.1` port.
//!
//! Endpoints (see the `*_url` fields):
//! - `POST {authority_url}/{tenant}/oauth2/v2.0/token` (form body): `client_credentials` with a
//!   `client_secret` or a `client_assertion` (workload identity). Refusals as Entra ID answers
//!   them, `{"error", "error_description"}`: unknown tenant 400 `invalid_request` (AADSTS90002),
//!   unknown client 400 `unauthorized_client` (AADSTS700016), wrong secret 401 `invalid_client`
//!   (AADSTS7000215), unmatched assertion 400 `invalid_client` (AADSTS700213), scope other than
//!   `{management_url}/.default` 400 `invalid_scope` (AADSTS70011).
//! - `GET {imds_url}?api-version=2018-02-01&resource=...[&client_id=...]` with `Metadata: true`
//!   (else 400 "Required metadata header not specified"); an unknown `client_id` is 400
//!   "Identity not found". IMDS sends `expires_in`/`expires_on` as *strings*, and so does this.
//! - ARM under `{management_url}/subscriptions/{sub}/resourceGroups/{rg}/providers/
//!   Microsoft.Network/dnsZones/{zone}`: `GET` the zone; `GET .../{TXT|CNAME}` lists record sets
//!   (`$top`, `nextLink` with `$skipToken`; also `.../recordsets` and `.../all`); `GET`, `PUT`,
//!   `DELETE .../{TXT|CNAME}/{relativeName}`.
//!
//! Behaviour copied from Azure (as documented; where the documentation is silent, what public
//! error reports show, marked *guess*):
//! - Bearer tokens: missing → 401 `AuthenticationFailed`; unknown → 401
//!   `InvalidAuthenticationToken`; expired → 401 `ExpiredAuthenticationToken` (ARM's
//!   `{"error": {"code", "message"}}` envelope).
//! - Every write gives the record set a new `etag`. `If-Match` with another etag, or on a record
//!   set that does not exist, is 412; `If-None-Match: *` on an existing one is 412. The DNS
//!   resource provider's own errors come as a bare `{"code", "message"}` (`PreconditionFailed`,
//!   `Conflict`, `NotFound`: the shape in public error reports).
//! - PUT answers 201 when it created the record set, 200 when it replaced it; DELETE answers 200,
//!   or 204 when there was nothing to delete (*guess*: 204 even with an `If-Match`).
//! - A CNAME record set cannot share its name with another record set: 409 `Conflict`.
//! - TXT strings longer than 255 characters are 400 `BadRequest`; so is a PUT without `TTL`
//!   (*guess*).
//! - An unknown zone is 404 `ResourceNotFound`, an unknown resource group 404
//!   `ResourceGroupNotFound`, an unknown subscription 404 `SubscriptionNotFound`; a missing
//!   record set is 404 `NotFound`.
//! - Throttling: 429 with `Retry-After` and `SubscriptionRequestsThrottled`.
//!
//! Test knobs: throttle or fail the next N ARM requests, deny writes (403
//! `AuthorizationFailed`), make another writer change a record set just before the next write
//! (to prove `If-Match` retries), count token and ARM requests, cap the list page size, and read
//! or write record sets directly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

const API_VERSION: &str = "2018-05-01";
const IMDS_API_VERSION: &str = "2018-02-01";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A fault served instead of the next ARM request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzFault {
    /// 429 with `Retry-After: secs`.
    Throttled {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// A 5xx with ARM's error envelope.
    ServerError(u16),
}

/// Which credential a token request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenGrant {
    /// OAuth client credentials with a client secret.
    ClientSecret,
    /// Client credentials with a federated `client_assertion`.
    WorkloadIdentity,
    /// IMDS.
    ManagedIdentity,
}

/// One record set held by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRecordSet {
    /// Zone name.
    pub zone: String,
    /// `TXT` or `CNAME`.
    pub rtype: String,
    /// Name relative to the zone (`@` at the apex), lower-case.
    pub relative: String,
    /// Current etag.
    pub etag: String,
    /// TTL.
    pub ttl: u64,
    /// Metadata as sent.
    pub metadata: Value,
    /// TXT records: each a list of strings.
    pub txt: Vec<Vec<String>>,
    /// CNAME target, as sent.
    pub cname: Option<String>,
}

impl FakeRecordSet {
    /// The absolute owner name.
    pub fn fqdn(&self) -> String {
        if self.relative == "@" { self.zone.clone() } else { format!("{}.{}", self.relative, self.zone) }
    }
}

#[derive(Debug, Default)]
struct FakeState {
    subscription_id: String,
    resource_group: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    federated_client_id: String,
    federated_token: String,
    managed_identity_client_id: String,
    scope: String,
    base_url: String,
    zones: Vec<String>,
    sets: BTreeMap<(String, String, String), FakeRecordSet>,
    issued: HashMap<String, (TokenGrant, Instant)>,
    token_lifetime: Duration,
    faults: VecDeque<AzFault>,
    deny_writes: bool,
    /// On the next write, add this TXT value to the target record set first (another writer).
    interfere_next_write: Option<String>,
    requests: Vec<(Method, String)>,
    token_requests: Vec<TokenGrant>,
    precondition_failures: usize,
    unauthorized: usize,
    max_page: usize,
}

type Shared = Arc<Mutex<FakeState>>;

/// Builder for [`AzureFake`].
#[derive(Debug)]
pub struct AzureFakeBuilder {
    zones: Vec<String>,
    token_lifetime: Duration,
    max_page: usize,
}

impl Default for AzureFakeBuilder {
    fn default() -> Self {
        Self { zones: Vec::new(), token_lifetime: Duration::from_secs(3599), max_page: 1000 }
    }
}

fn random_hex(bits: u32) -> String {
    let n: u128 = rand::random();
    format!("{:0width$x}", n, width = (bits / 4) as usize)[..(bits / 4) as usize].to_string()
}

fn guid() -> String {
    let h = random_hex(128);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl AzureFakeBuilder {
    /// Adds a zone in the fake's resource group.
    pub fn zone(mut self, name: &str) -> Self {
        self.zones.push(name.trim_end_matches('.').to_ascii_lowercase());
        self
    }

    /// Lifetime (`expires_in`) of issued tokens; default 3599 s.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Caps `$top` of list calls (forces `nextLink` pagination).
    pub fn max_page(mut self, n: usize) -> Self {
        self.max_page = n.max(1);
        self
    }

    /// Starts the server on `127.0.0.1` (a free port).
    pub async fn start(self) -> AzureFake {
        let zones = if self.zones.is_empty() { vec!["example.com".to_string()] } else { self.zones };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Azure fake on 127.0.0.1");
        let addr = listener.local_addr().expect("fake address");
        let root = format!("http://{addr}");
        let management_url = format!("{root}/arm");
        let state = FakeState {
            subscription_id: guid(),
            resource_group: "dns-rg".into(),
            tenant_id: guid(),
            client_id: guid(),
            client_secret: format!("azsecret~{}", random_hex(128)),
            federated_client_id: guid(),
            federated_token: format!("eyJhbGciOiJSUzI1NiJ9.fake-sa-token-{}.sig", random_hex(64)),
            managed_identity_client_id: guid(),
            scope: format!("{management_url}/.default"),
            base_url: management_url.clone(),
            zones,
            token_lifetime: self.token_lifetime,
            max_page: self.max_page,
            ..FakeState::default()
        };
        let shared: Shared = Arc::new(Mutex::new(state));
        let zone_path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/dnsZones/{zone}";
        let arm = axum::Router::new()
            .route(zone_path, get(get_zone))
            .route(&format!("{zone_path}/{{rtype}}"), get(list_sets))
            .route(&format!("{zone_path}/{{rtype}}/{{rel}}"), get(get_set).put(put_set).delete(delete_set))
            .fallback(|| async { arm_error(StatusCode::NOT_FOUND, "InvalidResourceType", "No route for that URI") })
            .layer(middleware::from_fn_with_state(shared.clone(), arm_gate))
            .with_state(shared.clone());
        let app = axum::Router::new()
            .nest("/arm", arm)
            .route("/aad/{tenant}/oauth2/v2.0/token", post(token_endpoint))
            .route("/metadata/identity/oauth2/token", get(imds_endpoint))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let st = shared.lock().expect("fake state lock");
        AzureFake {
            management_url,
            authority_url: format!("{root}/aad"),
            imds_url: format!("{root}/metadata/identity/oauth2/token"),
            subscription_id: st.subscription_id.clone(),
            resource_group: st.resource_group.clone(),
            tenant_id: st.tenant_id.clone(),
            client_id: st.client_id.clone(),
            client_secret: st.client_secret.clone(),
            federated_client_id: st.federated_client_id.clone(),
            federated_token: st.federated_token.clone(),
            managed_identity_client_id: st.managed_identity_client_id.clone(),
            state: shared.clone(),
            task,
        }
    }
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct AzureFake {
    /// ARM root: `http://127.0.0.1:PORT/arm` (the token audience is `{management_url}/.default`).
    pub management_url: String,
    /// Entra ID authority host: `http://127.0.0.1:PORT/aad`.
    pub authority_url: String,
    /// IMDS token endpoint.
    pub imds_url: String,
    /// The subscription holding the zones.
    pub subscription_id: String,
    /// The resource group holding the zones (`dns-rg`).
    pub resource_group: String,
    /// The tenant of every identity.
    pub tenant_id: String,
    /// The app registration accepting [`client_secret`](Self::client_secret).
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// The app registration with a federated credential.
    pub federated_client_id: String,
    /// The service-account token that federated credential accepts.
    pub federated_token: String,
    /// The client id of the user-assigned managed identity IMDS knows (the system-assigned one
    /// is used when no `client_id` is sent).
    pub managed_identity_client_id: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AzureFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AzureFake {
    /// A fake serving the single zone `example.com`.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A builder for zones and limits.
    pub fn builder() -> AzureFakeBuilder {
        AzureFakeBuilder::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state lock")
    }

    /// Serves 429 with `Retry-After: retry_after_secs` for the next `n` ARM requests.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        self.inject(AzFault::Throttled { retry_after_secs }, n);
    }

    /// Serves `fault` for the next `n` ARM requests.
    pub fn inject(&self, fault: AzFault, n: u32) {
        self.lock().faults.extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Faults not served yet.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// Refuses every write with 403 `AuthorizationFailed` (an identity with only the Reader role).
    pub fn deny_writes(&self, deny: bool) {
        self.lock().deny_writes = deny;
    }

    /// Just before the next PUT or DELETE of a record set, another writer adds TXT `value` to
    /// that record set (new etag), so the request's `If-Match` is stale.
    pub fn interfere_with_next_write(&self, value: &str) {
        self.lock().interfere_next_write = Some(value.to_string());
    }

    /// How many writes were refused with 412.
    pub fn precondition_failures(&self) -> usize {
        self.lock().precondition_failures
    }

    /// How many ARM requests were refused with 401 (no, unknown or expired token).
    pub fn unauthorized_count(&self) -> usize {
        self.lock().unauthorized
    }

    /// Every ARM request so far (method, path with query), faults included.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.lock().requests.clone()
    }

    /// How many ARM requests were received.
    pub fn arm_request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// How many ARM requests had this method.
    pub fn count(&self, method: Method) -> usize {
        self.lock().requests.iter().filter(|(m, _)| *m == method).count()
    }

    /// Successful token grants so far, in order.
    pub fn token_requests(&self) -> Vec<TokenGrant> {
        self.lock().token_requests.clone()
    }

    /// Every access token issued so far (to check that none leaks into logs).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.keys().cloned().collect()
    }

    /// Forgets every issued token (as if they were revoked): ARM answers 401 to them.
    pub fn revoke_tokens(&self) {
        self.lock().issued.clear();
    }

    /// Adds TXT `value` at `name` directly (another tool's value), creating the record set.
    pub fn insert_txt(&self, zone: &str, name: &str, value: &str) {
        let mut st = self.lock();
        let zone = norm(zone);
        let rel = relative_of(&norm(name), &zone);
        let set = st.sets.entry((zone.clone(), "TXT".into(), rel.clone())).or_insert_with(|| FakeRecordSet {
            zone,
            rtype: "TXT".into(),
            relative: rel,
            etag: guid(),
            ttl: 3600,
            metadata: Value::Null,
            txt: Vec::new(),
            cname: None,
        });
        set.txt.push(vec![value.to_string()]);
        set.etag = guid();
    }

    /// Every record set of `zone`.
    pub fn record_sets(&self, zone: &str) -> Vec<FakeRecordSet> {
        let zone = norm(zone);
        self.lock().sets.values().filter(|s| s.zone == zone).cloned().collect()
    }

    /// The values at absolute `name` of `rtype`: TXT strings joined, CNAME targets without dot.
    pub fn values(&self, name: &str, rtype: &str) -> Vec<String> {
        let name = norm(name);
        let rtype = rtype.to_ascii_uppercase();
        self.lock()
            .sets
            .values()
            .filter(|s| s.rtype == rtype && s.fqdn() == name)
            .flat_map(|s| match rtype.as_str() {
                "CNAME" => s.cname.iter().map(|c| norm(c)).collect::<Vec<_>>(),
                _ => s.txt.iter().map(|t| t.concat()).collect(),
            })
            .collect()
    }

    /// The TXT values at `name`.
    pub fn txt_values(&self, name: &str) -> Vec<String> {
        self.values(name, "TXT")
    }

    /// `(name, type, value)` of every TXT and CNAME value in `zone` (for DNS front-ends).
    pub fn entries(&self, zone: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for s in self.record_sets(zone) {
            for t in &s.txt {
                out.push((s.fqdn(), "TXT".to_string(), t.concat()));
            }
            if let Some(c) = &s.cname {
                out.push((s.fqdn(), "CNAME".to_string(), norm(c)));
            }
        }
        out
    }

    /// The etag of a record set, if it exists.
    pub fn etag(&self, name: &str, rtype: &str) -> Option<String> {
        let name = norm(name);
        self.lock().sets.values().find(|s| s.rtype == rtype && s.fqdn() == name).map(|s| s.etag.clone())
    }
}

fn norm(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn relative_of(name: &str, zone: &str) -> String {
    match dns_provider::relative_name(name, zone) {
        Some("") => "@".into(),
        Some(relative) => relative.to_string(),
        None => name.to_string(),
    }
}

/// ARM's envelope.
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// The DNS resource provider's bare error body.
fn dns_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

fn aad_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("{description}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: 2026-01-01 00:00:00Z", guid(), guid()),
        "error_codes": [description.split(':').next().unwrap_or("").trim_start_matches("AADSTS").parse::<u64>().unwrap_or(0)],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": guid(),
        "correlation_id": guid(),
    });
    (status, Json(body)).into_response()
}

fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    reqwest::Url::parse(&format!("http://form.invalid/?{text}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn issue(st: &mut FakeState, grant: TokenGrant) -> (String, u64) {
    let token = format!("eyJ0eXAiOiJKV1QifQ.fake-arm-token-{}.sig", random_hex(128));
    st.issued.insert(token.clone(), (grant, Instant::now() + st.token_lifetime));
    st.token_requests.push(grant);
    (token, st.token_lifetime.as_secs())
}

async fn token_endpoint(State(state): State<Shared>, Path(tenant): Path<String>, body: axum::body::Bytes) -> Response {
    let form = form_pairs(&body);
    let mut st = state.lock().expect("fake state lock");
    if tenant != st.tenant_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!(
                "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if form.get("scope") != Some(&st.scope) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "AADSTS70011: The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid: {:?}.",
                form.get("scope")
            ),
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let grant = if let Some(assertion) = form.get("client_assertion") {
        if client_id != st.federated_client_id {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                &format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory."),
            );
        }
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS50027: Invalid client_assertion_type.",
            );
        }
        if *assertion != st.federated_token {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                "AADSTS700213: No matching federated identity record found for presented assertion subject.",
            );
        }
        TokenGrant::WorkloadIdentity
    } else {
        if client_id != st.client_id {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                &format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory."),
            );
        }
        if form.get("client_secret") != Some(&st.client_secret) {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            );
        }
        TokenGrant::ClientSecret
    };
    let (token, lifetime) = issue(&mut st, grant);
    Json(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}))
        .into_response()
}

async fn imds_endpoint(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return aad_error_plain(StatusCode::BAD_REQUEST, "invalid_request", "Required metadata header not specified");
    }
    if q.get("api-version").map(String::as_str) != Some(IMDS_API_VERSION) {
        return aad_error_plain(StatusCode::BAD_REQUEST, "invalid_request", "Invalid or missing api-version");
    }
    let mut st = state.lock().expect("fake state lock");
    let audience = st.scope.trim_end_matches(".default").to_string();
    if q.get("resource") != Some(&audience) {
        return aad_error_plain(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            "AADSTS500011: The resource principal was not found",
        );
    }
    if let Some(id) = q.get("client_id").filter(|id| **id != st.managed_identity_client_id) {
        let _ = id;
        return aad_error_plain(StatusCode::BAD_REQUEST, "invalid_request", "Identity not found");
    }
    let (token, lifetime) = issue(&mut st, TokenGrant::ManagedIdentity);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Json(json!({
        "access_token": token,
        "client_id": q.get("client_id").cloned().unwrap_or_else(|| st.managed_identity_client_id.clone()),
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": audience,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// IMDS's error body (no trace ids).
fn aad_error_plain(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

/// Request log, faults, Bearer check and api-version, before any ARM route.
async fn arm_gate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let query = req.uri().query().unwrap_or_default().to_string();
    let (fault, issued) = {
        let mut st = state.lock().expect("fake state lock");
        st.requests.push((method.clone(), path.clone()));
        let fault = st.faults.pop_front();
        let issued = token.as_ref().map(|t| st.issued.get(t).map(|(_, exp)| *exp));
        (fault, issued)
    };
    match fault {
        Some(AzFault::Throttled { retry_after_secs }) => {
            let mut resp = arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "SubscriptionRequestsThrottled",
                &format!(
                    "Number of requests for subscription exceeded the limit. Please try again after '{retry_after_secs}' seconds."
                ),
            );
            resp.headers_mut().insert("retry-after", retry_after_secs.to_string().parse().expect("header value"));
            return resp;
        }
        Some(AzFault::ServerError(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return arm_error(
                status,
                "InternalServerError",
                "Encountered internal server error. Diagnostic information: timestamp '20260101T000000Z'.",
            );
        }
        None => {}
    }
    if !matches!(issued, Some(Some(expiry)) if Instant::now() < expiry) {
        state.lock().expect("fake state lock").unauthorized += 1;
    }
    match issued {
        None => {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            );
        }
        Some(None) => {
            return arm_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", "The access token is invalid.");
        }
        Some(Some(expiry)) if Instant::now() >= expiry => {
            return arm_error(
                StatusCode::UNAUTHORIZED,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            );
        }
        Some(Some(_)) => {}
    }
    let version = query.split('&').find_map(|kv| kv.strip_prefix("api-version="));
    match version {
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        }
        Some(API_VERSION) => {}
        Some(v) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!("The api-version '{v}' is invalid. The supported versions are '{API_VERSION}'."),
            );
        }
    }
    next.run(req).await
}

/// Checks subscription, resource group and zone; the zone name normalized.
/// Errors are boxed: a `Response` is large.
fn locate(st: &FakeState, sub: &str, rg: &str, zone: &str) -> Result<String, Box<Response>> {
    if !sub.eq_ignore_ascii_case(&st.subscription_id) {
        return Err(Box::new(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{sub}' could not be found."),
        )));
    }
    if !rg.eq_ignore_ascii_case(&st.resource_group) {
        return Err(Box::new(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        )));
    }
    let zone = norm(zone);
    if !st.zones.contains(&zone) {
        return Err(Box::new(arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.Network/dnszones/{zone}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )));
    }
    Ok(zone)
}

fn check_type(rtype: &str) -> Result<String, Box<Response>> {
    match rtype.to_ascii_uppercase().as_str() {
        t @ ("TXT" | "CNAME") => Ok(t.to_string()),
        other => Err(Box::new(dns_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the fake serves TXT and CNAME record sets only, not {other}"),
        ))),
    }
}

fn set_json(st: &FakeState, s: &FakeRecordSet) -> Value {
    let mut props = json!({
        "metadata": s.metadata,
        "TTL": s.ttl,
        "fqdn": format!("{}.", s.fqdn()),
        "provisioningState": "Succeeded",
        "targetResource": {},
    });
    if s.rtype == "TXT" {
        props["TXTRecords"] = s.txt.iter().map(|v| json!({"value": v})).collect();
    } else {
        props["CNAMERecord"] = json!({"cname": s.cname});
    }
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnszones/{}/{}/{}", st.subscription_id, st.resource_group, s.zone, s.rtype, s.relative),
        "name": s.relative,
        "type": format!("Microsoft.Network/dnszones/{}", s.rtype),
        "etag": s.etag,
        "properties": props,
    })
}

type SetPath = Path<(String, String, String, String, String)>;

async fn get_zone(State(state): State<Shared>, Path((sub, rg, zone)): Path<(String, String, String)>) -> Response {
    let st = state.lock().expect("fake state lock");
    match locate(&st, &sub, &rg, &zone) {
        Ok(zone) => Json(json!({
            "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnszones/{zone}", st.subscription_id, st.resource_group),
            "name": zone,
            "type": "Microsoft.Network/dnszones",
            "location": "global",
            "etag": "00000002-0000-0000-0000-000000000000",
            "properties": {"maxNumberOfRecordSets": 10000, "numberOfRecordSets": st.sets.values().filter(|s| s.zone == zone).count() + 2, "nameServers": ["ns1-01.azure-dns.com.", "ns2-01.azure-dns.net."], "zoneType": "Public"},
        }))
        .into_response(),
        Err(r) => *r,
    }
}

async fn list_sets(
    State(state): State<Shared>,
    Path((sub, rg, zone, rtype)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let st = state.lock().expect("fake state lock");
    let zone = match locate(&st, &sub, &rg, &zone) {
        Ok(z) => z,
        Err(r) => return *r,
    };
    let wanted = if rtype.eq_ignore_ascii_case("recordsets") || rtype.eq_ignore_ascii_case("all") {
        None
    } else {
        match check_type(&rtype) {
            Ok(t) => Some(t),
            Err(r) => return *r,
        }
    };
    let top = q.get("$top").and_then(|t| t.parse::<usize>().ok()).unwrap_or(100).clamp(1, st.max_page);
    let skip = q.get("$skipToken").and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
    let all: Vec<&FakeRecordSet> =
        st.sets.values().filter(|s| s.zone == zone && wanted.as_ref().is_none_or(|t| *t == s.rtype)).collect();
    let page: Vec<Value> = all.iter().skip(skip).take(top).map(|s| set_json(&st, s)).collect();
    let mut body = json!({"value": page});
    if skip + top < all.len() {
        body["nextLink"] = json!(format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnsZones/{zone}/{rtype}?api-version={API_VERSION}&$top={top}&$skipToken={}",
            st.base_url,
            st.subscription_id,
            st.resource_group,
            skip + top
        ));
    }
    Json(body).into_response()
}

async fn get_set(State(state): State<Shared>, Path((sub, rg, zone, rtype, rel)): SetPath) -> Response {
    let st = state.lock().expect("fake state lock");
    let zone = match locate(&st, &sub, &rg, &zone) {
        Ok(z) => z,
        Err(r) => return *r,
    };
    let rtype = match check_type(&rtype) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let rel = rel.to_ascii_lowercase();
    match st.sets.get(&(zone, rtype, rel.clone())) {
        Some(s) => Json(set_json(&st, s)).into_response(),
        None => not_found(&st, &rel),
    }
}

fn not_found(st: &FakeState, rel: &str) -> Response {
    dns_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "The resource record '{rel}' does not exist in resource group '{}' of subscription '{}'.",
            st.resource_group, st.subscription_id
        ),
    )
}

/// 403 for a write when writes are denied.
fn write_denied(st: &FakeState, zone: &str, rtype: &str, rel: &str) -> Option<Response> {
    st.deny_writes.then(|| {
        arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            &format!(
                "The client '{}' with object id '{}' does not have authorization to perform action 'Microsoft.Network/dnszones/{rtype}/write' over scope '/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnszones/{zone}/{rtype}/{rel}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                st.client_id, st.client_id, st.subscription_id, st.resource_group
            ),
        )
    })
}

/// The interfering writer of [`AzureFake::interfere_with_next_write`], if armed.
fn interfere(st: &mut FakeState, key: &(String, String, String)) {
    let Some(value) = st.interfere_next_write.take() else { return };
    let (zone, _, rel) = key.clone();
    let set = st.sets.entry((zone.clone(), "TXT".into(), rel.clone())).or_insert_with(|| FakeRecordSet {
        zone,
        rtype: "TXT".into(),
        relative: rel,
        etag: guid(),
        ttl: 300,
        metadata: Value::Null,
        txt: Vec::new(),
        cname: None,
    });
    set.txt.push(vec![value]);
    set.etag = guid();
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

async fn put_set(
    State(state): State<Shared>,
    Path((sub, rg, zone, rtype, rel)): SetPath,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().expect("fake state lock");
    let zone = match locate(&st, &sub, &rg, &zone) {
        Ok(z) => z,
        Err(r) => return *r,
    };
    let rtype = match check_type(&rtype) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let rel = rel.to_ascii_lowercase();
    if let Some(r) = write_denied(&st, &zone, &rtype, &rel) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return dns_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    let props = &body["properties"];
    let Some(ttl) = props["TTL"].as_u64() else {
        return dns_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The value for the record set TTL is missing or invalid.",
        );
    };
    let (txt, cname) = match rtype.as_str() {
        "TXT" => {
            let mut txt = Vec::new();
            for r in props["TXTRecords"].as_array().cloned().unwrap_or_default() {
                let strings: Vec<String> = r["value"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                if strings.iter().any(|s| s.chars().count() > 255) {
                    return dns_error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "A TXT record string cannot be longer than 255 characters.",
                    );
                }
                txt.push(strings);
            }
            if props.get("CNAMERecord").is_some_and(|c| !c.is_null()) {
                return dns_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The record set type TXT does not match the records in the request.",
                );
            }
            (txt, None)
        }
        _ => {
            let Some(target) = props["CNAMERecord"]["cname"].as_str().filter(|t| !t.is_empty()) else {
                return dns_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The CNAME record set must contain a CNAME record.",
                );
            };
            (Vec::new(), Some(target.to_string()))
        }
    };
    let key = (zone.clone(), rtype.clone(), rel.clone());
    interfere(&mut st, &key);
    let current = st.sets.get(&key).map(|s| s.etag.clone());
    match (header(&headers, "if-match"), header(&headers, "if-none-match"), &current) {
        (Some(want), _, Some(etag)) if want != "*" && want != etag => {
            st.precondition_failures += 1;
            return dns_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                &format!("The Record set {rel} has been modified (etag mismatch)."),
            );
        }
        (Some(_), _, None) => {
            st.precondition_failures += 1;
            return dns_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                &format!("The Record set {rel} does not exist."),
            );
        }
        (_, Some("*"), Some(_)) => {
            st.precondition_failures += 1;
            return dns_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                &format!("The Record set {rel} already exists."),
            );
        }
        _ => {}
    }
    // CNAME exclusivity, as Azure DNS enforces it.
    let others = st.sets.keys().any(|(z, t, r)| *z == zone && *r == rel && *t != rtype);
    if others {
        let message = if rtype == "CNAME" {
            "The CNAME record could not be created because another record with the same name already exists in this zone."
        } else {
            "The record could not be created because a CNAME record with the same name already exists in this zone."
        };
        if rtype == "CNAME" || st.sets.contains_key(&(zone.clone(), "CNAME".into(), rel.clone())) {
            return dns_error(StatusCode::CONFLICT, "Conflict", message);
        }
    }
    let created = current.is_none();
    let set = FakeRecordSet {
        zone,
        rtype,
        relative: rel,
        etag: guid(),
        ttl,
        metadata: props.get("metadata").cloned().unwrap_or(Value::Null),
        txt,
        cname,
    };
    let out = set_json(&st, &set);
    st.sets.insert(key, set);
    (if created { StatusCode::CREATED } else { StatusCode::OK }, Json(out)).into_response()
}

async fn delete_set(
    State(state): State<Shared>,
    Path((sub, rg, zone, rtype, rel)): SetPath,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().expect("fake state lock");
    let zone = match locate(&st, &sub, &rg, &zone) {
        Ok(z) => z,
        Err(r) => return *r,
    };
    let rtype = match check_type(&rtype) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let rel = rel.to_ascii_lowercase();
    if let Some(r) = write_denied(&st, &zone, &rtype, &rel) {
        return r;
    }
    let key = (zone, rtype, rel.clone());
    interfere(&mut st, &key);
    let Some(current) = st.sets.get(&key).map(|s| s.etag.clone()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if let Some(want) = header(&headers, "if-match").filter(|w| *w != "*" && *w != current) {
        let _ = want;
        st.precondition_failures += 1;
        return dns_error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            &format!("The Record set {rel} has been modified (etag mismatch)."),
        );
    }
    st.sets.remove(&key);
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().expect("client")
    }

    async fn token(fake: &AzureFake) -> String {
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            fake.client_id,
            fake.client_secret.replace('~', "%7E"),
            format!("{}/.default", fake.management_url).replace(':', "%3A").replace('/', "%2F")
        );
        let resp = client()
            .post(format!("{}/{}/oauth2/v2.0/token", fake.authority_url, fake.tenant_id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request");
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        v["access_token"].as_str().expect("token").to_string()
    }

    fn set_url(fake: &AzureFake, rel: &str) -> String {
        format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/dnsZones/example.com/TXT/{rel}?api-version=2018-05-01",
            fake.management_url, fake.subscription_id, fake.resource_group
        )
    }

    /// ETags: a new one per write; stale `If-Match` and `If-None-Match: *` on an existing set are 412.
    #[tokio::test]
    async fn etags_and_preconditions() {
        let fake = AzureFake::start().await;
        let t = token(&fake).await;
        let url = set_url(&fake, "_dnsauth");
        let body = json!({"properties": {"TTL": 60, "TXTRecords": [{"value": ["a"]}]}});
        let r = client().put(&url).bearer_auth(&t).header("if-none-match", "*").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let first: Value = r.json().await.unwrap();
        let etag1 = first["etag"].as_str().unwrap().to_string();
        let r = client().put(&url).bearer_auth(&t).header("if-none-match", "*").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 412);
        let r = client().put(&url).bearer_auth(&t).header("if-match", &etag1).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let etag2 = r.json::<Value>().await.unwrap()["etag"].as_str().unwrap().to_string();
        assert_ne!(etag1, etag2);
        let r = client().put(&url).bearer_auth(&t).header("if-match", &etag1).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 412);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "PreconditionFailed");
        let r = client().delete(&url).bearer_auth(&t).header("if-match", &etag1).send().await.unwrap();
        assert_eq!(r.status(), 412);
        let r = client().delete(&url).bearer_auth(&t).header("if-match", &etag2).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = client().get(&url).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "NotFound");
        assert_eq!(fake.precondition_failures(), 3);
    }

    /// Bearer checks, unknown zones and throttling use ARM's envelope.
    #[tokio::test]
    async fn auth_zones_and_throttling() {
        let fake = AzureFake::start().await;
        let url = set_url(&fake, "x");
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "AuthenticationFailed");
        let r = client().get(&url).bearer_auth("forged").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let t = token(&fake).await;
        let r = client().get(url.replace("example.com", "nope.example")).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ResourceNotFound");
        fake.throttle_next(1, 3);
        let r = client().get(&url).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        let r = client().get(format!("{}?api-version=2018-02-01", fake.imds_url)).send().await.unwrap();
        assert_eq!(r.status(), 400, "IMDS requires Metadata: true");
        assert_eq!(fake.token_requests(), vec![TokenGrant::ClientSecret]);
    }
}
