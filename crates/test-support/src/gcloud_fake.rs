//! A stateful fake of Google Cloud DNS API v1 and of the Google token endpoints a DNS client
//! uses, with the documented shapes and rules.
//!
//! Routes (all on one `127.0.0.1` port):
//! - `POST /token`: OAuth 2.0 JWT bearer grant. The RS256 assertion is *verified* against the
//!   public key of the service account named by `iss` (keys made by
//!   [`GcloudFake::service_account_key`]), with `aud` = this endpoint, a live `exp`, at most one
//!   hour of lifetime and a DNS or cloud-platform `scope`; refusals are OAuth errors
//!   (`{"error": "invalid_grant", "error_description": ...}`, 400).
//! - `GET /computeMetadata/v1/instance/service-accounts/default/token`: the metadata server;
//!   without `Metadata-Flavor: Google` it answers 403 like the real one.
//! - `POST /sts/v1/token`: the Security Token Service's token exchange, accepting the subject
//!   tokens registered with [`GcloudFake::workload_identity`].
//! - `POST /iam/v1/projects/-/serviceAccounts/{email}:generateAccessToken`: impersonation by a
//!   federated token (`{"accessToken", "expireTime"}`).
//! - `/dns/v1/projects/{project}/managedZones[?dnsName=]`, `.../managedZones/{zone}/rrsets`
//!   (`name`, `type`, `maxResults`, `pageToken`), `POST .../managedZones/{zone}/changes`,
//!   `GET .../managedZones/{zone}/changes/{id}`.
//!
//! Behaviour copied from Cloud DNS: Bearer tokens (missing/unknown: 401 `UNAUTHENTICATED` with
//! reason `authError`; a reader token writing, or another project: 403 `PERMISSION_DENIED`
//! `forbidden`); a change is atomic; a deletion must match the current record set exactly (name,
//! type, TTL and every rrdata) or the whole change is refused with 412 `conditionNotMet`
//! ("Precondition not met for 'entity.change.deletions[i]'"); deleting a set that does not exist
//! is 404 `notFound`; adding a set that exists is 409 `alreadyExists`; a CNAME beside another
//! type is 400 (reason `cnameResourceRecordSetConflict`: the reason string is our assumption);
//! names must be absolute (trailing dot) and inside the zone; a new change is `pending`, then
//! `done`; every zone starts with its SOA and NS sets. Errors use Google's body
//! `{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}`.
//!
//! Test knobs: 429 (with `Retry-After`) or 5xx for the next N DNS API requests, a concurrent
//! writer's value slipped in just before the next change, request and token counters, page size,
//! token lifetime, and direct reads/writes of the record sets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::moto::unquote_txt;

const DNS_SCOPE: &str = "https://www.googleapis.com/auth/ndev.clouddns.readwrite";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// What a principal may do in the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read and change record sets (a custom role with the documented least privilege).
    DnsEditor,
    /// `roles/dns.reader`: list only.
    DnsReader,
    /// No DNS permission (a federated identity that must impersonate a service account).
    None,
}

/// A fault served instead of the next DNS API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcpFault {
    /// 429 `RESOURCE_EXHAUSTED`, with `Retry-After` when given.
    RateLimited {
        /// Seconds in `Retry-After`.
        retry_after_secs: Option<u64>,
    },
    /// A 5xx with Google's error body.
    ServerError(u16),
}

/// One record set held by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRrset {
    /// Absolute name with the trailing dot, lower-case.
    pub name: String,
    /// `TXT`, `CNAME`, ...
    pub rtype: String,
    /// TTL.
    pub ttl: i64,
    /// Rrdatas as stored (TXT quoted as sent).
    pub rrdatas: Vec<String>,
}

impl FakeRrset {
    fn json(&self) -> Value {
        json!({"kind": "dns#resourceRecordSet", "name": self.name, "type": self.rtype, "ttl": self.ttl, "rrdatas": self.rrdatas})
    }
}

#[derive(Debug)]
struct Zone {
    managed: String,
    dns_name: String,
    visibility: &'static str,
    /// (name, type) -> set
    rrsets: BTreeMap<(String, String), FakeRrset>,
    changes: Vec<FakeChange>,
}

#[derive(Debug, Clone)]
struct FakeChange {
    id: String,
    additions: Vec<Value>,
    deletions: Vec<Value>,
    gets: u32,
}

#[derive(Debug, Clone)]
struct Principal {
    name: String,
    role: Role,
}

#[derive(Debug, Default)]
struct FakeState {
    project: String,
    zones: Vec<Zone>,
    /// client_email -> (RSAPublicKey DER, role)
    service_accounts: HashMap<String, (Vec<u8>, Role)>,
    /// (audience, subject token) pairs the STS accepts, with the federated identity's role.
    federated: Vec<(String, String, Role)>,
    tokens: HashMap<String, Principal>,
    faults: VecDeque<GcpFault>,
    requests: Vec<(Method, String)>,
    token_requests: Vec<String>,
    refused_changes: Vec<u16>,
    interfere: Option<(String, String, String)>,
    page_size: usize,
    token_lifetime: u64,
    pending_gets: u32,
    token_url: String,
}

type Shared = Arc<Mutex<FakeState>>;

/// Builder for [`GcloudFake`].
#[derive(Debug)]
pub struct GcloudFakeBuilder {
    project: String,
    zones: Vec<(String, String, &'static str)>,
    page_size: usize,
}

impl Default for GcloudFakeBuilder {
    fn default() -> Self {
        Self { project: "dcvd-test".into(), zones: Vec::new(), page_size: 500 }
    }
}

fn absolute(name: &str) -> String {
    format!("{}.", name.trim().trim_end_matches('.').to_ascii_lowercase())
}

impl GcloudFakeBuilder {
    /// The project id (default `dcvd-test`).
    pub fn project(mut self, project: &str) -> Self {
        self.project = project.to_string();
        self
    }

    /// Adds a public managed zone for `dns_name`, named like `example-com`.
    pub fn zone(self, dns_name: &str) -> Self {
        let managed = dns_name.trim_end_matches('.').replace('.', "-");
        self.zone_named(dns_name, &managed, "public")
    }

    /// Adds a managed zone with an explicit name and visibility (`public` or `private`).
    pub fn zone_named(mut self, dns_name: &str, managed: &str, visibility: &'static str) -> Self {
        self.zones.push((absolute(dns_name), managed.to_string(), visibility));
        self
    }

    /// Record sets per `rrsets.list` page (default 500): a small value forces pagination.
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Starts the server on `127.0.0.1` (a free port).
    pub async fn start(self) -> GcloudFake {
        let zones = if self.zones.is_empty() {
            vec![(absolute("example.com"), "example-com".to_string(), "public")]
        } else {
            self.zones
        };
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the Cloud DNS fake on 127.0.0.1");
        let addr = listener.local_addr().expect("fake address");
        let base = format!("http://{addr}");
        let mut state = FakeState {
            project: self.project.clone(),
            page_size: self.page_size,
            token_lifetime: 3599,
            token_url: format!("{base}/token"),
            ..FakeState::default()
        };
        for (dns_name, managed, visibility) in zones {
            let mut rrsets = BTreeMap::new();
            let soa = FakeRrset {
                name: dns_name.clone(),
                rtype: "SOA".into(),
                ttl: 21600,
                rrdatas: vec![format!(
                    "ns-cloud-a1.googledomains.com. cloud-dns-hostmaster.google.com. 1 21600 3600 259200 300"
                )],
            };
            let ns = FakeRrset {
                name: dns_name.clone(),
                rtype: "NS".into(),
                ttl: 21600,
                rrdatas: (1..=4).map(|i| format!("ns-cloud-a{i}.googledomains.com.")).collect(),
            };
            rrsets.insert((dns_name.clone(), "SOA".into()), soa);
            rrsets.insert((dns_name.clone(), "NS".into()), ns);
            state.zones.push(Zone { managed, dns_name, visibility, rrsets, changes: Vec::new() });
        }
        let shared: Shared = Arc::new(Mutex::new(state));
        let dns = axum::Router::new()
            .route("/projects/{project}/managedZones", get(list_zones))
            .route("/projects/{project}/managedZones/{zone}/rrsets", get(list_rrsets))
            .route("/projects/{project}/managedZones/{zone}/changes", post(create_change))
            .route("/projects/{project}/managedZones/{zone}/changes/{id}", get(get_change))
            .fallback(|| async { google_error(StatusCode::NOT_FOUND, "notFound", "NOT_FOUND", "Not Found") })
            .layer(middleware::from_fn_with_state(shared.clone(), gate))
            .with_state(shared.clone());
        let app = axum::Router::new()
            .nest("/dns/v1", dns)
            .route("/token", post(oauth_token))
            .route("/computeMetadata/v1/instance/service-accounts/default/token", get(metadata_token))
            .route("/sts/v1/token", post(sts_token))
            .route("/iam/v1/projects/-/serviceAccounts/{action}", post(impersonate))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GcloudFake {
            api_url: format!("{base}/dns/v1"),
            token_url: format!("{base}/token"),
            sts_url: format!("{base}/sts/v1/token"),
            metadata_url: base.clone(),
            project: self.project,
            base_url: base,
            state: shared,
            task,
        }
    }
}

/// A running fake; the server stops when this is dropped.
#[derive(Debug)]
pub struct GcloudFake {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `http://127.0.0.1:PORT/dns/v1` (the adapter's `api_url`).
    pub api_url: String,
    /// The OAuth token endpoint (a service-account key's `token_uri`).
    pub token_url: String,
    /// The STS endpoint (an external_account's `token_url`).
    pub sts_url: String,
    /// The metadata server root (the adapter's `metadata_url`).
    pub metadata_url: String,
    /// The project id.
    pub project: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GcloudFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ascii")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A service-account key file (the JSON `gcloud iam service-accounts keys create` writes) with a
/// fresh 2048-bit RSA key, and the key's public half (RSAPublicKey DER), without any server.
pub fn service_account_key_file(client_email: &str, project: &str, token_uri: &str) -> (String, Vec<u8>) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key");
    let pkcs8 = pair.as_der().expect("PKCS#8 encoding");
    let public = pair.public_key().as_ref().to_vec();
    let key_id = format!("{:040x}", rand::random::<u128>());
    let json = json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": key_id,
        "private_key": pem("PRIVATE KEY", pkcs8.as_ref()),
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string();
    (json, public)
}

impl GcloudFake {
    /// A fake serving the public zone `example.com` (managed zone `example-com`).
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A builder for project, zones and page size.
    pub fn builder() -> GcloudFakeBuilder {
        GcloudFakeBuilder::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state lock")
    }

    /// Creates a service account with `role` and a fresh 2048-bit RSA key; returns its key file
    /// (the JSON `gcloud iam service-accounts keys create` writes), with `token_uri` pointing here.
    pub fn service_account_key(&self, client_email: &str, role: Role) -> String {
        let (key, public) = service_account_key_file(client_email, &self.project, &self.token_url);
        self.lock().service_accounts.insert(client_email.to_string(), (public, role));
        key
    }

    /// Makes the STS accept `subject_token` for `audience`; the federated identity gets `role`
    /// (use [`Role::None`] to force impersonation). Returns an external_account file whose subject
    /// token is read from `subject_token_file`, impersonating `impersonate` when given.
    pub fn workload_identity(
        &self,
        audience: &str,
        subject_token: &str,
        role: Role,
        subject_token_file: &std::path::Path,
        impersonate: Option<&str>,
    ) -> String {
        self.lock().federated.push((audience.to_string(), subject_token.to_string(), role));
        let mut v = json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": self.sts_url,
            "credential_source": {"file": subject_token_file.display().to_string(), "format": {"type": "text"}},
        });
        if let Some(email) = impersonate {
            v["service_account_impersonation_url"] =
                json!(format!("{}/iam/v1/projects/-/serviceAccounts/{email}:generateAccessToken", self.base_url));
        }
        v.to_string()
    }

    /// Gives the metadata server's default service account `role` (it has none until then).
    pub fn metadata_account(&self, role: Role) {
        self.lock().service_accounts.insert("default".into(), (Vec::new(), role));
    }

    /// Lifetime (`expires_in`) of the access tokens issued from now on (default 3599 s).
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.lock().token_lifetime = seconds;
    }

    /// How many `changes.get` answers say `pending` before `done` (default 0).
    pub fn set_pending_gets(&self, n: u32) {
        self.lock().pending_gets = n;
    }

    /// Serves `n` 429 answers (with `Retry-After` when given) before anything else.
    pub fn throttle_next(&self, n: u32, retry_after_secs: Option<u64>) {
        self.inject(GcpFault::RateLimited { retry_after_secs }, n);
    }

    /// Serves `fault` for the next `n` DNS API requests.
    pub fn inject(&self, fault: GcpFault, n: u32) {
        self.lock().faults.extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Faults not served yet.
    pub fn pending_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// Just before the next `changes.create` is applied, another writer adds `value` (raw rrdata)
    /// to the `rtype` set at `name`: a read-modify-write that read before it loses the race.
    pub fn interfere_next_change(&self, name: &str, rtype: &str, raw_value: &str) {
        self.lock().interfere = Some((absolute(name), rtype.to_ascii_uppercase(), raw_value.to_string()));
    }

    /// Every DNS API request so far (method, path with query).
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.lock().requests.clone()
    }

    /// How many DNS API requests had this method and a path (without query) containing `part`.
    pub fn count_path(&self, method: Method, part: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|(m, p)| *m == method && p.split('?').next().unwrap_or_default().contains(part))
            .count()
    }

    /// How many DNS API requests were received.
    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Token requests by endpoint (`oauth`, `metadata`, `sts`, `iam`), in order.
    pub fn token_requests(&self) -> Vec<String> {
        self.lock().token_requests.clone()
    }

    /// Every access token issued so far (to check that none leaks into a log).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// HTTP statuses of the changes refused so far.
    pub fn refused_changes(&self) -> Vec<u16> {
        self.lock().refused_changes.clone()
    }

    /// Changes accepted by `managed` so far.
    pub fn change_count(&self, managed: &str) -> usize {
        self.lock().zones.iter().find(|z| z.managed == managed).map_or(0, |z| z.changes.len())
    }

    /// Adds `raw_value` to the `rtype` set at `name` (another tool's value), creating the set
    /// with `ttl` when absent. TXT values are stored as given (quote them to look like Cloud DNS).
    pub fn insert_value(&self, name: &str, rtype: &str, raw_value: &str, ttl: i64) {
        let name = absolute(name);
        let rtype = rtype.to_ascii_uppercase();
        let mut st = self.lock();
        let zone = st.zones.iter_mut().find(|z| in_zone(&name, &z.dns_name)).expect("a zone holds the name");
        let set = zone.rrsets.entry((name.clone(), rtype.clone())).or_insert_with(|| FakeRrset {
            name,
            rtype,
            ttl,
            rrdatas: Vec::new(),
        });
        if !set.rrdatas.iter().any(|v| v == raw_value) {
            set.rrdatas.push(raw_value.to_string());
        }
    }

    /// The set at `name`/`rtype`, as stored.
    pub fn rrset(&self, name: &str, rtype: &str) -> Option<FakeRrset> {
        let key = (absolute(name), rtype.to_ascii_uppercase());
        self.lock().zones.iter().find_map(|z| z.rrsets.get(&key).cloned())
    }

    /// The values at `name`/`rtype` as DNS would serve them: TXT unquoted, CNAME without dot.
    pub fn values(&self, name: &str, rtype: &str) -> Vec<String> {
        self.rrset(name, rtype).map(|s| s.rrdatas.iter().map(|v| canonical(&s.rtype, v)).collect()).unwrap_or_default()
    }

    /// Every TXT and CNAME value of the zone `dns_name` as `(name, type, value)`, names without
    /// the trailing dot (for [`crate::frontend::FrontendBuilder::custom`]).
    pub fn entries(&self, dns_name: &str) -> Vec<(String, String, String)> {
        let dns_name = absolute(dns_name);
        let st = self.lock();
        st.zones
            .iter()
            .filter(|z| z.dns_name == dns_name)
            .flat_map(|z| z.rrsets.values())
            .filter(|s| s.rtype == "TXT" || s.rtype == "CNAME")
            .flat_map(|s| {
                s.rrdatas
                    .iter()
                    .map(|v| (s.name.trim_end_matches('.').to_string(), s.rtype.clone(), canonical(&s.rtype, v)))
            })
            .collect()
    }
}

fn in_zone(name: &str, dns_name: &str) -> bool {
    dns_provider::in_zone(name, dns_name)
}

fn canonical(rtype: &str, raw: &str) -> String {
    match rtype {
        "TXT" => unquote_txt(raw),
        "CNAME" => raw.trim_end_matches('.').to_ascii_lowercase(),
        _ => raw.to_string(),
    }
}

fn google_error(status: StatusCode, reason: &str, google_status: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
        "status": google_status,
    }});
    (status, Json(body)).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description}))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// Faults, request log, Bearer authentication and authorization, before any DNS route.
async fn gate(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let token = bearer(req.headers());
    let (fault, principal, project) = {
        let mut st = state.lock().expect("fake state lock");
        st.requests.push((method.clone(), path.clone()));
        let fault = st.faults.pop_front();
        let principal = token.as_ref().and_then(|t| st.tokens.get(t).cloned());
        (fault, principal, st.project.clone())
    };
    match fault {
        Some(GcpFault::RateLimited { retry_after_secs }) => {
            let mut resp = google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimitExceeded",
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' of service 'dns.googleapis.com'.",
            );
            if let Some(secs) = retry_after_secs {
                resp.headers_mut().insert("retry-after", secs.to_string().parse().expect("header value"));
            }
            return resp;
        }
        Some(GcpFault::ServerError(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return google_error(status, "backendError", "UNAVAILABLE", "The service is currently unavailable.");
        }
        None => {}
    }
    let Some(principal) = principal else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    };
    let forbidden = || google_error(StatusCode::FORBIDDEN, "forbidden", "PERMISSION_DENIED", "Forbidden");
    if !path.starts_with(&format!("/dns/v1/projects/{project}/")) && !path.starts_with(&format!("/projects/{project}/"))
    {
        return forbidden();
    }
    let allowed = match principal.role {
        Role::DnsEditor => true,
        Role::DnsReader => method == Method::GET,
        Role::None => false,
    };
    if !allowed {
        return forbidden();
    }
    next.run(req).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZonesQuery {
    dns_name: Option<String>,
}

async fn list_zones(State(state): State<Shared>, Query(q): Query<ZonesQuery>) -> Response {
    let st = state.lock().expect("fake state lock");
    let want = q.dns_name.map(|n| absolute(&n));
    let zones: Vec<Value> = st
        .zones
        .iter()
        .filter(|z| want.as_ref().is_none_or(|w| *w == z.dns_name))
        .map(|z| json!({"kind": "dns#managedZone", "name": z.managed, "dnsName": z.dns_name, "visibility": z.visibility, "id": "1"}))
        .collect();
    Json(json!({"kind": "dns#managedZonesListResponse", "managedZones": zones})).into_response()
}

fn no_zone(managed: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "notFound",
        "NOT_FOUND",
        &format!("The 'parameters.managedZone' resource named '{managed}' does not exist."),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RrsetsQuery {
    name: Option<String>,
    #[serde(rename = "type")]
    rtype: Option<String>,
    max_results: Option<usize>,
    page_token: Option<String>,
}

async fn list_rrsets(
    State(state): State<Shared>,
    Path((_project, managed)): Path<(String, String)>,
    Query(q): Query<RrsetsQuery>,
) -> Response {
    let st = state.lock().expect("fake state lock");
    let Some(zone) = st.zones.iter().find(|z| z.managed == managed) else {
        return no_zone(&managed);
    };
    if q.rtype.is_some() && q.name.is_none() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "INVALID_ARGUMENT",
            "Invalid value for 'type': a type filter requires a name filter",
        );
    }
    if let Some(n) = &q.name
        && !n.ends_with('.')
    {
        // Cloud DNS matches names exactly; a name without its dot matches nothing
        return Json(json!({"kind": "dns#resourceRecordSetsListResponse", "rrsets": []})).into_response();
    }
    let name = q.name.map(|n| n.to_ascii_lowercase());
    let rtype = q.rtype.map(|t| t.to_ascii_uppercase());
    let sets: Vec<&FakeRrset> = zone
        .rrsets
        .values()
        .filter(|s| name.as_ref().is_none_or(|n| *n == s.name))
        .filter(|s| rtype.as_ref().is_none_or(|t| *t == s.rtype))
        .collect();
    let size = q.max_results.unwrap_or(st.page_size).clamp(1, st.page_size);
    let start = match q.page_token.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= sets.len() => n,
        Some(_) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "INVALID_ARGUMENT",
                "Invalid value for 'pageToken'",
            );
        }
    };
    let end = (start + size).min(sets.len());
    let mut body = json!({"kind": "dns#resourceRecordSetsListResponse", "rrsets": sets[start..end].iter().map(|s| s.json()).collect::<Vec<_>>()});
    if end < sets.len() {
        body["nextPageToken"] = json!(end.to_string());
    }
    Json(body).into_response()
}

/// Parses one rrset of a change, or the 400 Cloud DNS would answer.
fn parse_rrset(v: &Value, field: &str, dns_name: &str) -> Result<FakeRrset, Box<Response>> {
    let invalid = |what: &str| {
        Box::new(google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "INVALID_ARGUMENT",
            &format!("Invalid value for '{field}.{what}'"),
        ))
    };
    let name = v["name"].as_str().ok_or_else(|| invalid("name"))?.to_ascii_lowercase();
    if !name.ends_with('.') || !in_zone(&name, dns_name) {
        return Err(invalid("name"));
    }
    let rtype = v["type"].as_str().ok_or_else(|| invalid("type"))?.to_ascii_uppercase();
    if !["A", "AAAA", "CNAME", "TXT", "MX", "NS", "SOA", "CAA", "SRV"].contains(&rtype.as_str()) {
        return Err(invalid("type"));
    }
    let ttl = v["ttl"].as_i64().ok_or_else(|| invalid("ttl"))?;
    if ttl < 0 {
        return Err(invalid("ttl"));
    }
    let rrdatas: Vec<String> = v["rrdatas"]
        .as_array()
        .ok_or_else(|| invalid("rrdatas"))?
        .iter()
        .map(|d| d.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("rrdatas"))?;
    if rrdatas.is_empty() || (rtype == "CNAME" && (rrdatas.len() != 1 || !rrdatas[0].ends_with('.'))) {
        return Err(invalid("rrdata"));
    }
    Ok(FakeRrset { name, rtype, ttl, rrdatas })
}

fn change_json(c: &FakeChange, status: &str) -> Value {
    json!({"kind": "dns#change", "id": c.id, "additions": c.additions, "deletions": c.deletions, "startTime": "2026-01-01T00:00:00.000Z", "status": status})
}

async fn create_change(
    State(state): State<Shared>,
    Path((_project, managed)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().expect("fake state lock");
    let interfere = st.interfere.take();
    let answer = apply_change(&mut st, &managed, &body, interfere);
    if !answer.status().is_success() {
        st.refused_changes.push(answer.status().as_u16());
    }
    answer
}

fn apply_change(
    st: &mut FakeState,
    managed: &str,
    body: &[u8],
    interfere: Option<(String, String, String)>,
) -> Response {
    let Some(zone) = st.zones.iter_mut().find(|z| z.managed == managed) else {
        return no_zone(managed);
    };
    if let Some((name, rtype, value)) = interfere {
        let set = zone.rrsets.entry((name.clone(), rtype.clone())).or_insert_with(|| FakeRrset {
            name,
            rtype,
            ttl: 300,
            rrdatas: Vec::new(),
        });
        set.rrdatas.push(value);
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return google_error(StatusCode::BAD_REQUEST, "parseError", "INVALID_ARGUMENT", "Parse Error");
    };
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let (additions, deletions) = (list("additions"), list("deletions"));
    if additions.is_empty() && deletions.is_empty() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "required",
            "INVALID_ARGUMENT",
            "The 'entity.change' resource is empty",
        );
    }
    let mut working = zone.rrsets.clone();
    for (i, d) in deletions.iter().enumerate() {
        let field = format!("entity.change.deletions[{i}]");
        let del = match parse_rrset(d, &field, &zone.dns_name) {
            Ok(s) => s,
            Err(resp) => return *resp,
        };
        let key = (del.name.clone(), del.rtype.clone());
        let Some(current) = working.get(&key) else {
            return google_error(
                StatusCode::NOT_FOUND,
                "notFound",
                "NOT_FOUND",
                &format!("The '{field}' resource named '{} ({})' does not exist.", del.name, del.rtype),
            );
        };
        let mut a = current.rrdatas.clone();
        let mut b = del.rrdatas.clone();
        a.sort();
        b.sort();
        if current.ttl != del.ttl || a != b {
            return google_error(
                StatusCode::PRECONDITION_FAILED,
                "conditionNotMet",
                "FAILED_PRECONDITION",
                &format!("Precondition not met for '{field}'"),
            );
        }
        working.remove(&key);
    }
    for (i, a) in additions.iter().enumerate() {
        let field = format!("entity.change.additions[{i}]");
        let add = match parse_rrset(a, &field, &zone.dns_name) {
            Ok(s) => s,
            Err(resp) => return *resp,
        };
        let key = (add.name.clone(), add.rtype.clone());
        if working.contains_key(&key) {
            return google_error(
                StatusCode::CONFLICT,
                "alreadyExists",
                "ALREADY_EXISTS",
                &format!(
                    "The resource 'entity.change.additions[{}][{}]' named '{} ({})' already exists",
                    add.name, add.rtype, add.name, add.rtype
                ),
            );
        }
        let others = working.keys().any(|(n, t)| *n == add.name && *t != add.rtype);
        if others && (add.rtype == "CNAME" || working.contains_key(&(add.name.clone(), "CNAME".to_string()))) {
            return google_error(
                StatusCode::BAD_REQUEST,
                "cnameResourceRecordSetConflict",
                "INVALID_ARGUMENT",
                &format!(
                    "The resource record set '{field}' is invalid because a CNAME resource record set cannot coexist with other resource record sets of the same name"
                ),
            );
        }
        working.insert(key, add);
    }
    zone.rrsets = working;
    let change = FakeChange { id: zone.changes.len().to_string(), additions, deletions, gets: 0 };
    let out = change_json(&change, "pending");
    zone.changes.push(change);
    Json(out).into_response()
}

async fn get_change(
    State(state): State<Shared>,
    Path((_project, managed, id)): Path<(String, String, String)>,
) -> Response {
    let mut st = state.lock().expect("fake state lock");
    let pending_gets = st.pending_gets;
    let Some(zone) = st.zones.iter_mut().find(|z| z.managed == managed) else {
        return no_zone(&managed);
    };
    let Some(change) = zone.changes.iter_mut().find(|c| c.id == id) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "NOT_FOUND",
            &format!("The 'parameters.changeId' resource named '{id}' does not exist."),
        );
    };
    change.gets += 1;
    let status = if change.gets > pending_gets { "done" } else { "pending" };
    Json(change_json(change, status)).into_response()
}

fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    reqwest::Url::parse(&format!("http://form.invalid/?{text}"))
        .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn issue_token(st: &mut FakeState, principal: &str, role: Role) -> (String, u64) {
    let token = format!("ya29.fake-{:032x}", rand::random::<u128>());
    st.tokens.insert(token.clone(), Principal { name: principal.to_string(), role });
    (token, st.token_lifetime)
}

fn decode_segment(s: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn oauth_token(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    let form = form_pairs(&body);
    let mut st = state.lock().expect("fake state lock");
    st.token_requests.push("oauth".into());
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "Invalid grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Missing required parameter: assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let (Some(header), Some(claims), Some(signature)) = (
        parts.first().and_then(|p| decode_segment(p)),
        parts.get(1).and_then(|p| decode_segment(p)),
        parts.get(2).and_then(|p| URL_SAFE_NO_PAD.decode(p).ok()),
    ) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        );
    };
    if parts.len() != 3 || header["alg"] != "RS256" {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT: unsupported algorithm");
    }
    let iss = claims["iss"].as_str().unwrap_or_default().to_string();
    let Some((public, role)) = st.service_accounts.get(&iss).cloned() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid grant: account not found");
    };
    let signed = format!("{}.{}", parts[0], parts[1]);
    if UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &public)
        .verify(signed.as_bytes(), &signature)
        .is_err()
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.");
    }
    let (iat, exp, now) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0), now_unix());
    if claims["aud"].as_str() != Some(st.token_url.as_str()) || exp <= now || iat > now + 60 || exp - iat > 3600 {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scope = claims["scope"].as_str().unwrap_or_default();
    if !scope.split(' ').any(|s| s == DNS_SCOPE || s == CLOUD_PLATFORM) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let (token, expires_in) = issue_token(&mut st, &iss, role);
    Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})).into_response()
}

async fn metadata_token(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let mut st = state.lock().expect("fake state lock");
    st.token_requests.push("metadata".into());
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "Missing required header: Metadata-Flavor").into_response();
    }
    let role = st.service_accounts.get("default").map_or(Role::None, |(_, r)| *r);
    let (token, expires_in) = issue_token(&mut st, "default", role);
    Json(json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})).into_response()
}

async fn sts_token(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    let form = form_pairs(&body);
    let mut st = state.lock().expect("fake state lock");
    st.token_requests.push("sts".into());
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || get("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token"
        || get("subject_token_type").is_empty()
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Invalid token exchange request");
    }
    let Some(role) =
        st.federated.iter().find(|(a, t, _)| a == get("audience") && t == get("subject_token")).map(|f| f.2)
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The audience in ID Token does not match the expected audience.",
        );
    };
    let audience = get("audience").to_string();
    let (token, expires_in) = issue_token(&mut st, &format!("principal://{audience}"), role);
    Json(json!({"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": expires_in})).into_response()
}

async fn impersonate(
    State(state): State<Shared>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut st = state.lock().expect("fake state lock");
    st.token_requests.push("iam".into());
    let Some(email) = action.strip_suffix(":generateAccessToken") else {
        return google_error(StatusCode::NOT_FOUND, "notFound", "NOT_FOUND", "Not Found");
    };
    let caller = bearer(&headers).and_then(|t| st.tokens.get(&t).cloned());
    let Some(caller) = caller.filter(|p| p.name.starts_with("principal://")) else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    };
    let Some((_, role)) = st.service_accounts.get(email).cloned() else {
        return google_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "PERMISSION_DENIED",
            &format!(
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist) for {}",
                caller.name
            ),
        );
    };
    let requested: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if requested["scope"].as_array().is_none_or(|s| s.is_empty()) {
        return google_error(StatusCode::BAD_REQUEST, "invalid", "INVALID_ARGUMENT", "Invalid value for 'scope'");
    }
    let (token, expires_in) = issue_token(&mut st, email, role);
    let expire = std::time::SystemTime::now() + std::time::Duration::from_secs(expires_in);
    Json(json!({"accessToken": token, "expireTime": humantime::format_rfc3339_seconds(expire).to_string()}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(fake: &GcloudFake, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let mut req = client.request(method, format!("{}{path}", fake.api_url)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    fn editor(fake: &GcloudFake) -> String {
        issue_token(&mut fake.lock(), "test", Role::DnsEditor).0
    }

    /// Deletions must match exactly (412), additions must be new (409), missing sets are 404,
    /// and a refused change changes nothing (atomicity).
    #[tokio::test]
    async fn changes_follow_cloud_dns_rules() {
        let fake = GcloudFake::start().await;
        let token = editor(&fake);
        let path = format!("/projects/{}/managedZones/example-com/changes", fake.project);
        let set = |ttl: i64, data: &[&str]| json!({"name": "_dnsauth.example.com.", "type": "TXT", "ttl": ttl, "rrdatas": data});
        let (s, v) = call(&fake, Method::POST, &path, &token, Some(json!({"additions": [set(60, &["\"a\""])]}))).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("pending")), "{v}");
        let (s, v) = call(&fake, Method::POST, &path, &token, Some(json!({"additions": [set(60, &["\"b\""])]}))).await;
        assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (409, Some("alreadyExists")), "{v}");
        // stale deletion (wrong TTL): 412, and the addition in the same change is not applied
        let stale = json!({"deletions": [set(300, &["\"a\""])], "additions": [set(60, &["\"a\"", "\"b\""])]});
        let (s, v) = call(&fake, Method::POST, &path, &token, Some(stale)).await;
        assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (412, Some("conditionNotMet")), "{v}");
        assert_eq!(v["error"]["message"], "Precondition not met for 'entity.change.deletions[0]'");
        assert_eq!(fake.values("_dnsauth.example.com", "TXT"), vec!["a"]);
        let good = json!({"deletions": [set(60, &["\"a\""])], "additions": [set(60, &["\"a\"", "\"b\""])]});
        let (s, _) = call(&fake, Method::POST, &path, &token, Some(good)).await;
        assert_eq!(s, 200);
        assert_eq!(fake.values("_dnsauth.example.com", "TXT"), vec!["a", "b"]);
        let missing =
            json!({"deletions": [{"name": "x.example.com.", "type": "TXT", "ttl": 60, "rrdatas": ["\"x\""]}]});
        let (s, v) = call(&fake, Method::POST, &path, &token, Some(missing)).await;
        assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (404, Some("notFound")), "{v}");
        let (s, v) = call(
            &fake,
            Method::GET,
            &format!("/projects/{}/managedZones/example-com/changes/1", fake.project),
            &token,
            None,
        )
        .await;
        assert_eq!((s, v["status"].as_str()), (200, Some("done")));
    }

    /// Unknown tokens are 401, readers cannot write, other projects are 403; 429 carries Retry-After.
    #[tokio::test]
    async fn auth_and_faults() {
        let fake = GcloudFake::start().await;
        let zones = format!("/projects/{}/managedZones?dnsName=example.com.", fake.project);
        let (s, v) = call(&fake, Method::GET, &zones, "nope", None).await;
        assert_eq!((s, v["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
        let reader = issue_token(&mut fake.lock(), "r", Role::DnsReader).0;
        let (s, v) = call(&fake, Method::GET, &zones, &reader, None).await;
        assert_eq!((s, v["managedZones"][0]["name"].as_str()), (200, Some("example-com")));
        let path = format!("/projects/{}/managedZones/example-com/changes", fake.project);
        let body = json!({"additions": [{"name": "a.example.com.", "type": "TXT", "ttl": 60, "rrdatas": ["\"v\""]}]});
        let (s, v) = call(&fake, Method::POST, &path, &reader, Some(body)).await;
        assert_eq!((s, v["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")));
        let (s, _) = call(&fake, Method::GET, "/projects/other/managedZones", &editor(&fake), None).await;
        assert_eq!(s, 403);
        fake.throttle_next(1, Some(3));
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let resp = client.get(format!("{}{zones}", fake.api_url)).bearer_auth(reader).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers()["retry-after"], "3");
    }

    /// The metadata server insists on its header.
    #[tokio::test]
    async fn metadata_needs_its_header() {
        let fake = GcloudFake::start().await;
        let url = format!("{}/computeMetadata/v1/instance/service-accounts/default/token", fake.metadata_url);
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        assert_eq!(client.get(&url).send().await.expect("request").status().as_u16(), 403);
        let ok = client.get(&url).header("Metadata-Flavor", "Google").send().await.expect("request");
        assert_eq!(ok.status().as_u16(), 200);
    }
}
