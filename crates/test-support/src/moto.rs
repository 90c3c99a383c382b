//! moto launcher: a real `moto_server` (Route53 API) on `127.0.0.1`, behind a small proxy that
//! makes it behave like Route53 where moto does not, counts change requests and injects faults.
//!
//! Why a proxy: moto 5.x accepts a `DELETE` whose values no longer match the current RRset and a
//! `CREATE` of an RRset that already exists (it even stores a duplicate), so it cannot detect a
//! lost update the way Route53 does. The proxy applies Route53's documented `ChangeBatch` rules
//! (DELETE must match the current values and TTL exactly; CREATE of an existing RRset fails; a
//! CNAME cannot share its name) atomically, answering `InvalidChangeBatch` like Route53, and only
//! then forwards the batch to moto. It also:
//! - counts `ChangeResourceRecordSets` requests ([`Moto::change_requests`]);
//! - answers the next N requests with `Throttling`, `PriorRequestNotComplete` or a 503
//!   ([`Moto::inject`], [`Moto::throttle_next`]);
//! - rejects requests signed with chosen access keys ([`Moto::reject_access_key`]), since moto
//!   itself does not check signatures.
//!
//! Adapters under test use [`Moto::endpoint_url`] (the proxy); the helpers here talk to moto
//! directly, so reading back and adding foreign values never depend on the adapter.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_route53::Client;
use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HostedZoneConfig, ResourceRecord, ResourceRecordSet, RrType, Vpc, VpcRegion,
};
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ports;

/// The access key moto's helpers and tests use (moto accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
/// The secret key paired with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "testing";
/// The region tests use.
pub const REGION: &str = "us-east-1";

const INSTALL_HINT: &str = "install it with pip install 'moto[server]' (scripts/test does this)";

/// A fault the proxy answers instead of forwarding a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 `Throttling` "Rate exceeded", as Route53 answers above 5 requests/s.
    Throttling,
    /// 400 `PriorRequestNotComplete`, as Route53 answers while a change to the zone is in flight.
    PriorRequestNotComplete,
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
}

/// How the proxy treats requests signed with a given access key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    /// Every request fails with 403 `InvalidClientTokenId` (unknown or deleted key).
    InvalidClientTokenId,
    /// Reads work; `ChangeResourceRecordSets` fails with 403 `AccessDenied` (a read-only policy).
    DenyChanges,
}

/// One RRset as moto holds it (values raw, as Route53 writes them: TXT strings quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    /// Owner name, lower-case, no trailing dot.
    pub name: String,
    /// `TXT`, `CNAME`, ...
    pub rtype: String,
    /// TTL in seconds.
    pub ttl: i64,
    /// Values as stored.
    pub values: Vec<String>,
}

struct Shared {
    moto_url: String,
    http: reqwest::Client,
    direct: Client,
    requests: AtomicU64,
    change_requests: AtomicU64,
    rejected_changes: AtomicU64,
    /// Foreign writes applied just before the next change batch is checked (a deterministic race).
    interference: std::sync::Mutex<Vec<(String, String, String, String)>>,
    faults: std::sync::Mutex<VecDeque<Fault>>,
    rejected_keys: std::sync::Mutex<HashMap<String, KeyRejection>>,
    /// Serializes validation + forwarding of change batches, so a batch is checked against the
    /// state it is applied to (Route53 applies batches atomically).
    change_lock: tokio::sync::Mutex<()>,
}

/// A running moto server and its proxy; both stop when this is dropped.
pub struct Moto {
    child: Child,
    endpoint_url: String,
    shared: Arc<Shared>,
    proxy: tokio::task::JoinHandle<()>,
    _stderr: tempfile::NamedTempFile,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("endpoint_url", &self.endpoint_url)
            .field("moto_url", &self.shared.moto_url)
            .finish_non_exhaustive()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.proxy.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Route53 client for `endpoint_url` with the test credentials and no SDK retries.
pub fn client_for(endpoint_url: &str) -> Client {
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint_url)
        .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "moto-test"))
        .retry_config(aws_sdk_route53::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

impl Moto {
    /// Starts `moto_server` on a free port and the proxy in front of it. Panics with install
    /// instructions when moto is not available.
    pub async fn start() -> Self {
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = ports::free_port();
            match spawn_moto(port).await {
                Ok((child, stderr)) => return Self::with_child(child, stderr, port).await,
                Err(SpawnError::Missing(msg)) => {
                    panic!("moto is not available ({msg}): {INSTALL_HINT}")
                }
                Err(SpawnError::Failed(msg)) => last_err = msg,
            }
        }
        panic!("moto_server did not start: {last_err}; {INSTALL_HINT}");
    }

    async fn with_child(child: Child, stderr: tempfile::NamedTempFile, port: u16) -> Self {
        let moto_url = format!("http://127.0.0.1:{port}");
        let shared = Arc::new(Shared {
            direct: client_for(&moto_url),
            moto_url,
            http: reqwest::Client::builder().no_proxy().build().expect("reqwest client"),
            requests: AtomicU64::new(0),
            change_requests: AtomicU64::new(0),
            rejected_changes: AtomicU64::new(0),
            interference: std::sync::Mutex::new(Vec::new()),
            faults: std::sync::Mutex::new(VecDeque::new()),
            rejected_keys: std::sync::Mutex::new(HashMap::new()),
            change_lock: tokio::sync::Mutex::new(()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind moto proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let app = axum::Router::new().fallback(proxy).with_state(shared.clone());
        let proxy = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { child, endpoint_url: format!("http://{addr}"), shared, proxy, _stderr: stderr }
    }

    /// The URL adapters should use as `endpoint_url` (the proxy in front of moto).
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint_url
    }

    /// moto's own URL (no Route53 rules, no counting, no faults).
    pub fn moto_url(&self) -> &str {
        &self.shared.moto_url
    }

    /// A client talking to moto directly, with the test credentials.
    pub fn client(&self) -> &Client {
        &self.shared.direct
    }

    /// Creates a public hosted zone and returns its id (without `/hostedzone/`).
    pub async fn create_hosted_zone(&self, name: &str) -> String {
        let out = self
            .client()
            .create_hosted_zone()
            .name(name)
            .caller_reference(format!("ref-{}", rand::random::<u64>()))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("moto: create hosted zone {name}: {}", aws_sdk_route53::error::DisplayErrorContext(e))
            });
        strip_zone_prefix(out.hosted_zone().map(|z| z.id()).expect("hosted zone in response"))
    }

    /// Creates a private hosted zone (attached to a made-up VPC) and returns its id.
    pub async fn create_private_hosted_zone(&self, name: &str) -> String {
        let out = self
            .client()
            .create_hosted_zone()
            .name(name)
            .caller_reference(format!("ref-{}", rand::random::<u64>()))
            .hosted_zone_config(HostedZoneConfig::builder().private_zone(true).build())
            .vpc(Vpc::builder().vpc_id("vpc-12345678").vpc_region(VpcRegion::UsEast1).build())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("moto: create private zone {name}: {}", aws_sdk_route53::error::DisplayErrorContext(e))
            });
        strip_zone_prefix(out.hosted_zone().map(|z| z.id()).expect("hosted zone in response"))
    }

    /// Clears moto's state (`POST /moto-api/reset`), the counters and pending faults.
    pub async fn reset(&self) {
        let resp = self
            .shared
            .http
            .post(format!("{}/moto-api/reset", self.shared.moto_url))
            .send()
            .await
            .expect("moto reset request");
        assert!(resp.status().is_success(), "moto reset answered {}", resp.status());
        self.shared.requests.store(0, Ordering::SeqCst);
        self.shared.change_requests.store(0, Ordering::SeqCst);
        self.shared.rejected_changes.store(0, Ordering::SeqCst);
        self.shared.interference.lock().expect("interference lock").clear();
        self.shared.faults.lock().expect("faults lock").clear();
    }

    /// `ChangeResourceRecordSets` requests received by the proxy (including rejected ones).
    pub fn change_requests(&self) -> u64 {
        self.shared.change_requests.load(Ordering::SeqCst)
    }

    /// Change batches the proxy refused with `InvalidChangeBatch` (lost races, conflicts).
    pub fn rejected_changes(&self) -> u64 {
        self.shared.rejected_changes.load(Ordering::SeqCst)
    }

    /// Just before the next change batch is checked, adds `raw_value` to `name`/`rtype` in
    /// moto, as another writer would between the adapter's read and its write.
    pub fn interfere_next_change(&self, zone_id: &str, name: &str, rtype: &str, raw_value: &str) {
        self.shared.interference.lock().expect("interference lock").push((
            zone_id.to_string(),
            name.to_string(),
            rtype.to_string(),
            raw_value.to_string(),
        ));
    }

    /// Every request received by the proxy.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Answers the next `n` requests through the proxy with `fault`.
    pub fn inject(&self, fault: Fault, n: u32) {
        let mut faults = self.shared.faults.lock().expect("faults lock");
        faults.extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Answers the next `n` requests with `Throttling`.
    pub fn throttle_next(&self, n: u32) {
        self.inject(Fault::Throttling, n);
    }

    /// Faults still waiting to be served.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().expect("faults lock").len()
    }

    /// Rejects requests signed with `access_key_id` as `how`.
    pub fn reject_access_key(&self, access_key_id: &str, how: KeyRejection) {
        self.shared.rejected_keys.lock().expect("keys lock").insert(access_key_id.to_string(), how);
    }

    /// Every RRset at `name` (any type), read from moto directly.
    pub async fn rrsets_at(&self, zone_id: &str, name: &str) -> Vec<RrSet> {
        rrsets_at(&self.shared.direct, zone_id, name).await.unwrap_or_else(|e| panic!("moto: list {name}: {e}"))
    }

    /// The raw values at `name`/`rtype` (TXT quoted), empty when there is no such RRset.
    pub async fn values(&self, zone_id: &str, name: &str, rtype: &str) -> Vec<String> {
        self.rrsets_at(zone_id, name)
            .await
            .into_iter()
            .find(|s| s.rtype.eq_ignore_ascii_case(rtype))
            .map(|s| s.values)
            .unwrap_or_default()
    }

    /// The TXT values at `name`, each unquoted and its strings joined (`"a" "b"` -> `ab`).
    pub async fn txt_values(&self, zone_id: &str, name: &str) -> Vec<String> {
        self.values(zone_id, name, "TXT").await.iter().map(|v| unquote_txt(v)).collect()
    }

    /// Adds `value` (raw: quote TXT yourself) to the RRset at `name`/`rtype`, keeping the values
    /// already there, directly in moto: another tool's write, invisible to the proxy's counters.
    pub async fn add_value(&self, zone_id: &str, name: &str, rtype: &str, value: &str, ttl: i64) {
        add_value(self.client(), zone_id, name, rtype, value, ttl).await;
    }
}

async fn add_value(client: &Client, zone_id: &str, name: &str, rtype: &str, value: &str, ttl: i64) {
    let current = rrsets_at(client, zone_id, name).await.unwrap_or_else(|e| panic!("moto: list {name}: {e}"));
    let existing = current.into_iter().find(|s| s.rtype.eq_ignore_ascii_case(rtype));
    // keep the TTL of an existing RRset, as a tool adding one value would
    let ttl = existing.as_ref().map_or(ttl, |s| s.ttl);
    let mut values = existing.map(|s| s.values).unwrap_or_default();
    if !values.iter().any(|v| v == value) {
        values.push(value.to_string());
    }
    let set = ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::from(rtype))
        .ttl(ttl)
        .set_resource_records(Some(
            values.iter().map(|v| ResourceRecord::builder().value(v).build().expect("record")).collect(),
        ))
        .build()
        .expect("rrset");
    let change = Change::builder().action(ChangeAction::Upsert).resource_record_set(set).build().expect("change");
    client
        .change_resource_record_sets()
        .hosted_zone_id(zone_id)
        .change_batch(ChangeBatch::builder().changes(change).build().expect("batch"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto: upsert {name}: {}", aws_sdk_route53::error::DisplayErrorContext(e)));
}

enum SpawnError {
    Missing(String),
    Failed(String),
}

/// Starts moto on `port` (`moto_server`, else `python3 -m moto.server`) and waits until it answers.
async fn spawn_moto(port: u16) -> Result<(Child, tempfile::NamedTempFile), SpawnError> {
    let port_s = port.to_string();
    let candidates: [(&str, &[&str]); 2] = [("moto_server", &[]), ("python3", &["-m", "moto.server"])];
    let mut missing = Vec::new();
    for (prog, pre) in candidates {
        let stderr = tempfile::NamedTempFile::new().expect("temp file for moto's stderr");
        let spawned = Command::new(prog)
            .args(pre)
            .args(["-H", "127.0.0.1", "-p", &port_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().expect("reopen temp file"))
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                missing.push(format!("{prog}: {e}"));
                continue;
            }
        };
        match wait_ready(&mut child, port).await {
            Ok(()) => return Ok((child, stderr)),
            Err(exited) => {
                let _ = child.kill();
                let _ = child.wait();
                let mut text = String::new();
                let _ = File::open(stderr.path()).and_then(|mut f| f.read_to_string(&mut text));
                let tail: String =
                    text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
                if exited
                    && (text.contains("No module named")
                        || text.contains("command not found")
                        || text.contains("not installed"))
                {
                    missing.push(format!("{prog}: {tail}"));
                    continue;
                }
                if exited && text.contains("Address already in use") {
                    return Err(SpawnError::Failed(format!("port {port} taken: {tail}")));
                }
                return Err(SpawnError::Failed(format!("{prog} on port {port}: {tail}")));
            }
        }
    }
    Err(SpawnError::Missing(missing.join("; ")))
}

/// Ok when moto answers HTTP; Err(true) when the process exited, Err(false) on timeout.
async fn wait_ready(child: &mut Child, port: u16) -> Result<(), bool> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(true);
        }
        if http.get(format!("http://127.0.0.1:{port}/moto-api/")).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(false)
}

fn strip_zone_prefix(id: &str) -> String {
    id.trim_start_matches("/hostedzone/").to_string()
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

async fn rrsets_at(client: &Client, zone_id: &str, name: &str) -> Result<Vec<RrSet>, String> {
    let want = norm(name);
    let out = client
        .list_resource_record_sets()
        .hosted_zone_id(zone_id)
        .start_record_name(&want)
        .max_items(100)
        .send()
        .await
        .map_err(|e| aws_sdk_route53::error::DisplayErrorContext(e).to_string())?;
    Ok(out
        .resource_record_sets()
        .iter()
        .filter(|s| norm(s.name()) == want)
        .map(|s| RrSet {
            name: want.clone(),
            rtype: s.r#type().as_str().to_string(),
            ttl: s.ttl().unwrap_or_default(),
            values: s.resource_records().iter().map(|r| r.value().to_string()).collect(),
        })
        .collect())
}

/// Joins the quoted strings of a TXT value (`"a" "b"` -> `ab`), undoing `\"`, `\\` and `\DDD`;
/// an unquoted value is returned as is. Kept independent of the adapters on purpose.
pub fn unquote_txt(raw: &str) -> String {
    let raw = raw.trim();
    if !raw.starts_with('"') {
        return raw.to_string();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut inside = false;
    while i < bytes.len() {
        let c = bytes[i];
        if !inside {
            if c == b'"' {
                inside = true;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => inside = false,
            b'\\' if i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit) => {
                let n = (bytes[i + 1] - b'0') as u32 * 100
                    + (bytes[i + 2] - b'0') as u32 * 10
                    + (bytes[i + 3] - b'0') as u32;
                out.push(n as u8);
                i += 3;
            }
            b'\\' if i + 1 < bytes.len() => {
                out.push(bytes[i + 1]);
                i += 1;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- the proxy ----

fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
    let message = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{:032x}</RequestId></ErrorResponse>",
        rand::random::<u128>()
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}

fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let rest = &auth[auth.find("Credential=")? + "Credential=".len()..];
    Some(rest.split('/').next()?.to_string())
}

fn is_change_request(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST && path.trim_end_matches('/').ends_with("/rrset")
}

async fn proxy(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let is_change = is_change_request(&parts.method, &path);
    if is_change {
        shared.change_requests.fetch_add(1, Ordering::SeqCst);
    }
    let fault = shared.faults.lock().expect("faults lock").pop_front();
    match fault {
        Some(Fault::Throttling) => {
            return aws_error(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded");
        }
        Some(Fault::PriorRequestNotComplete) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "PriorRequestNotComplete",
                "The request was rejected because Route 53 was still processing a prior request.",
            );
        }
        Some(Fault::ServiceUnavailable) => {
            return aws_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "Service is unavailable, retry later.",
            );
        }
        None => {}
    }
    if let Some(key) = access_key(&parts.headers) {
        let rejection = shared.rejected_keys.lock().expect("keys lock").get(&key).copied();
        match rejection {
            Some(KeyRejection::InvalidClientTokenId) => {
                return aws_error(
                    StatusCode::FORBIDDEN,
                    "InvalidClientTokenId",
                    "The security token included in the request is invalid.",
                );
            }
            Some(KeyRejection::DenyChanges) if is_change => {
                let zone = path.split('/').nth(3).unwrap_or("?");
                return aws_error(
                    StatusCode::FORBIDDEN,
                    "AccessDenied",
                    &format!(
                        "User: arn:aws:iam::123456789012:user/dcvd is not authorized to perform: route53:ChangeResourceRecordSets on resource: arn:aws:route53:::hostedzone/{zone} because no identity-based policy allows the route53:ChangeResourceRecordSets action"
                    ),
                );
            }
            _ => {}
        }
    }
    let body = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return aws_error(StatusCode::BAD_REQUEST, "InvalidInput", &format!("unreadable body: {e}"));
        }
    };
    let _guard;
    if is_change {
        _guard = shared.change_lock.lock().await;
        let zone_id = path.split('/').nth(3).unwrap_or_default().to_string();
        let interference: Vec<_> = std::mem::take(&mut *shared.interference.lock().expect("interference lock"));
        for (zone, name, rtype, value) in interference {
            add_value(&shared.direct, &zone, &name, &rtype, &value, 60).await;
        }
        if let Err(message) = check_change_batch(&shared.direct, &zone_id, &body).await {
            shared.rejected_changes.fetch_add(1, Ordering::SeqCst);
            return aws_error(StatusCode::BAD_REQUEST, "InvalidChangeBatch", &message);
        }
    }
    forward(&shared, parts, body).await
}

async fn forward(shared: &Shared, parts: axum::http::request::Parts, body: axum::body::Bytes) -> Response {
    let url = format!("{}{}", shared.moto_url, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = shared.http.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            req = req.header(name, value);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return aws_error(StatusCode::BAD_GATEWAY, "InternalFailure", &format!("moto unreachable: {e}"));
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

#[derive(Debug, Default)]
struct ParsedChange {
    action: String,
    name: String,
    rtype: String,
    ttl: Option<i64>,
    values: Vec<String>,
}

fn parse_change_batch(body: &[u8]) -> Result<Vec<ParsedChange>, String> {
    fn text(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, String> {
        try_data(tag).map(|s| s.into_owned()).map_err(|e| e.to_string())
    }
    let body = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut doc = Document::new(body);
    let mut root = doc.root_element().map_err(|e| e.to_string())?;
    let mut changes = Vec::new();
    while let Some(mut batch) = root.next_tag() {
        if batch.start_el().local() != "ChangeBatch" {
            continue;
        }
        while let Some(mut list) = batch.next_tag() {
            if list.start_el().local() != "Changes" {
                continue;
            }
            while let Some(mut change) = list.next_tag() {
                let mut parsed = ParsedChange::default();
                while let Some(mut field) = change.next_tag() {
                    match field.start_el().local() {
                        "Action" => parsed.action = text(&mut field)?,
                        "ResourceRecordSet" => {
                            while let Some(mut f) = field.next_tag() {
                                match f.start_el().local() {
                                    "Name" => parsed.name = norm(&text(&mut f)?),
                                    "Type" => parsed.rtype = text(&mut f)?,
                                    "TTL" => parsed.ttl = text(&mut f)?.parse().ok(),
                                    "ResourceRecords" => {
                                        while let Some(mut rr) = f.next_tag() {
                                            while let Some(mut v) = rr.next_tag() {
                                                if v.start_el().local() == "Value" {
                                                    parsed.values.push(text(&mut v)?);
                                                }
                                            }
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                changes.push(parsed);
            }
        }
    }
    Ok(changes)
}

/// Route53's documented `ChangeBatch` rules, checked against moto's current state.
async fn check_change_batch(direct: &Client, zone_id: &str, body: &[u8]) -> Result<(), String> {
    let changes = parse_change_batch(body).map_err(|e| format!("could not parse the change batch: {e}"))?;
    let chars: usize = changes.iter().flat_map(|c| c.values.iter()).map(String::len).sum();
    if chars > 32_000 {
        return Err(format!("Number of characters in all Value elements ({chars}) exceeds 32000"));
    }
    // (name, type) -> (ttl, values), for every name the batch touches
    let mut working: HashMap<(String, String), (i64, Vec<String>)> = HashMap::new();
    let mut loaded = std::collections::HashSet::new();
    for c in &changes {
        if loaded.insert(c.name.clone()) {
            for set in rrsets_at(direct, zone_id, &c.name).await? {
                working.insert((set.name, set.rtype), (set.ttl, set.values));
            }
        }
    }
    for c in &changes {
        let key = (c.name.clone(), c.rtype.clone());
        let shown = format!("[name='{}.', type='{}']", c.name, c.rtype);
        match c.action.as_str() {
            "CREATE" | "UPSERT" => {
                if c.action == "CREATE" && working.contains_key(&key) {
                    return Err(format!("Tried to create resource record set {shown} but it already exists"));
                }
                let others: Vec<&String> =
                    working.keys().filter(|(n, t)| *n == c.name && *t != c.rtype).map(|(_, t)| t).collect();
                let conflict = if c.rtype == "CNAME" {
                    others.first().copied().cloned()
                } else {
                    others.iter().find(|t| t.as_str() == "CNAME").map(|t| (*t).clone())
                };
                if let Some(other) = conflict {
                    return Err(format!(
                        "RRSet of type {} with DNS name {}. is not permitted because a conflicting RRSet of type {other} with the same DNS name already exists in zone",
                        c.rtype, c.name
                    ));
                }
                working.insert(key, (c.ttl.unwrap_or_default(), c.values.clone()));
            }
            "DELETE" => {
                let Some((ttl, values)) = working.get(&key) else {
                    return Err(format!("Tried to delete resource record set {shown} but it was not found"));
                };
                let mut a = values.clone();
                let mut b = c.values.clone();
                a.sort();
                b.sort();
                if Some(*ttl) != c.ttl || a != b {
                    return Err(format!(
                        "Tried to delete resource record set {shown} but the values provided do not match the current values"
                    ));
                }
                working.remove(&key);
            }
            other => return Err(format!("Unknown change action: {other}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt_set(name: &str, values: &[&str]) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::Txt)
            .ttl(60)
            .set_resource_records(Some(
                values.iter().map(|v| ResourceRecord::builder().value(*v).build().expect("rr")).collect(),
            ))
            .build()
            .expect("rrset")
    }

    async fn change(
        client: &Client,
        zone: &str,
        changes: Vec<(ChangeAction, ResourceRecordSet)>,
    ) -> Result<(), String> {
        let mut batch = ChangeBatch::builder();
        for (action, set) in changes {
            batch = batch.changes(Change::builder().action(action).resource_record_set(set).build().expect("change"));
        }
        client
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch.build().expect("batch"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_route53::error::DisplayErrorContext(e).to_string())
    }

    /// Through the proxy, moto follows Route53's rules: stale DELETEs and duplicate CREATEs fail
    /// with InvalidChangeBatch, requests are counted, throttling and rejected keys are served.
    #[tokio::test]
    async fn proxy_enforces_route53_rules() {
        let moto = Moto::start().await;
        let zone = moto.create_hosted_zone("rules.example").await;
        let via_proxy = client_for(moto.endpoint_url());
        let name = "_dnsauth.rules.example";
        change(&via_proxy, &zone, vec![(ChangeAction::Create, txt_set(name, &["\"a\""]))]).await.expect("create");
        let dup = change(&via_proxy, &zone, vec![(ChangeAction::Create, txt_set(name, &["\"b\""]))])
            .await
            .expect_err("duplicate create");
        assert!(dup.contains("InvalidChangeBatch") && dup.contains("already exists"), "{dup}");
        let stale = change(
            &via_proxy,
            &zone,
            vec![
                (ChangeAction::Delete, txt_set(name, &["\"zzz\""])),
                (ChangeAction::Create, txt_set(name, &["\"zzz\"", "\"b\""])),
            ],
        )
        .await
        .expect_err("stale delete");
        assert!(stale.contains("do not match"), "{stale}");
        change(
            &via_proxy,
            &zone,
            vec![
                (ChangeAction::Delete, txt_set(name, &["\"a\""])),
                (ChangeAction::Create, txt_set(name, &["\"a\"", "\"b\""])),
            ],
        )
        .await
        .expect("matching delete + create");
        let mut got = moto.txt_values(&zone, name).await;
        got.sort();
        assert_eq!(got, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(moto.change_requests(), 4);

        moto.throttle_next(1);
        let throttled = change(&via_proxy, &zone, vec![(ChangeAction::Upsert, txt_set(name, &["\"c\""]))])
            .await
            .expect_err("throttled");
        assert!(throttled.contains("Throttling"), "{throttled}");
        assert_eq!(moto.pending_faults(), 0);

        moto.reject_access_key(ACCESS_KEY_ID, KeyRejection::DenyChanges);
        let denied = change(&via_proxy, &zone, vec![(ChangeAction::Upsert, txt_set(name, &["\"c\""]))])
            .await
            .expect_err("denied");
        assert!(denied.contains("AccessDenied"), "{denied}");

        moto.reset().await;
        assert_eq!(moto.change_requests(), 0);
        assert!(moto.client().list_hosted_zones().send().await.expect("list zones").hosted_zones().is_empty());
    }

    #[test]
    fn unquotes_txt() {
        assert_eq!(unquote_txt("\"abc\""), "abc");
        assert_eq!(unquote_txt("\"a\" \"b\""), "ab");
        assert_eq!(unquote_txt("\"say \\\"hi\\\"\""), "say \"hi\"");
        assert_eq!(unquote_txt("\"\\065\""), "A");
        assert_eq!(unquote_txt("plain"), "plain");
    }

    #[test]
    fn parses_a_change_batch() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change><Action>DELETE</Action><ResourceRecordSet><Name>_a.example.com.</Name><Type>TXT</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>"x"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change><Change><Action>CREATE</Action><ResourceRecordSet><Name>_a.example.com</Name><Type>TXT</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>"x"</Value></ResourceRecord><ResourceRecord><Value>"y"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#;
        let changes = parse_change_batch(body).expect("parse");
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].action, "DELETE");
        assert_eq!(changes[0].name, "_a.example.com");
        assert_eq!(changes[1].values, vec!["\"x\"".to_string(), "\"y\"".to_string()]);
        assert_eq!(changes[1].ttl, Some(60));
    }

    #[test]
    fn finds_the_access_key() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=AKIDBAD/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=00"),
        );
        assert_eq!(access_key(&h).as_deref(), Some("AKIDBAD"));
    }
}
