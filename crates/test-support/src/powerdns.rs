//! PowerDNS Authoritative launcher: a real `pdns_server` with the SQLite backend in a temp dir,
//! its HTTP API and its DNS listener on free high ports of 127.0.0.1, behind a small proxy.
//!
//! Why a proxy: PowerDNS never throttles, so the proxy answers the next N requests with 429
//! (optionally with `Retry-After`) or 503 ([`PowerDns::throttle_next`], [`PowerDns::fail_next`]),
//! the way a rate-limiting reverse proxy in front of PowerDNS would, and counts requests per
//! method ([`PowerDns::requests`]). Everything else goes to PowerDNS unchanged. Adapters under
//! test use [`PowerDns::api_url`] (the proxy); the helpers here talk to PowerDNS directly, so
//! reading back and adding foreign values never depend on the adapter nor show in the counts.
//!
//! Each zone gets `ns1.<zone>` (127.0.0.1) as its name server, so a propagation checker walking
//! SOA/NS through the DNS port finds PowerDNS itself. Caches are off: an API change is served at
//! once. The server is killed on drop.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::ports;

const INSTALL_HINT: &str =
    "install it with `apt-get install -y pdns-server pdns-backend-sqlite3` (scripts/test does this)";
const SCHEMAS: &[&str] = &[
    "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
    "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
];

/// A fault the proxy answers instead of forwarding a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdnsFault {
    /// 429 Too Many Requests, with `Retry-After: secs` when given.
    Throttle {
        /// Seconds for `Retry-After`.
        retry_after: Option<u64>,
    },
    /// 503 Service Unavailable.
    Unavailable,
}

#[derive(Default)]
struct Counts {
    get: AtomicU64,
    patch: AtomicU64,
    other: AtomicU64,
}

struct Shared {
    direct_url: String,
    http: reqwest::Client,
    counts: Counts,
    faults: Mutex<VecDeque<PdnsFault>>,
    /// The `rrsets` of every PATCH forwarded to PowerDNS, in order.
    patches: Mutex<Vec<Value>>,
}

/// A running PowerDNS server and its proxy; both stop when this is dropped.
pub struct PowerDns {
    child: Child,
    dir: tempfile::TempDir,
    dns_port: u16,
    api_key: String,
    proxy_url: String,
    shared: Arc<Shared>,
    proxy: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PowerDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDns")
            .field("api_url", &self.proxy_url)
            .field("direct_url", &self.shared.direct_url)
            .field("dns_port", &self.dns_port)
            .finish_non_exhaustive()
    }
}

impl Drop for PowerDns {
    fn drop(&mut self) {
        self.proxy.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_pdns() -> PathBuf {
    for p in ["/usr/sbin/pdns_server", "/usr/bin/pdns_server", "/usr/local/sbin/pdns_server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("PowerDNS `pdns_server` not found: {INSTALL_HINT}");
}

fn find_schema() -> PathBuf {
    SCHEMAS.iter().map(PathBuf::from).find(|p| p.exists()).unwrap_or_else(|| {
        panic!("the PowerDNS SQLite schema (schema.sqlite3.sql) was not found in {SCHEMAS:?}: {INSTALL_HINT}")
    })
}

impl PowerDns {
    /// Starts PowerDNS serving `zones` (created through the API). Panics with a clear message
    /// when the server cannot start.
    pub async fn start(zones: &[&str]) -> Self {
        let pdns = find_pdns();
        let schema = find_schema();
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::try_start(&pdns, &schema).await {
                Ok(server) => {
                    for zone in zones {
                        server.create_zone(zone).await;
                    }
                    return server;
                }
                Err(e) => last_err = e,
            }
        }
        panic!("PowerDNS did not start after 3 attempts: {last_err}");
    }

    async fn try_start(pdns: &Path, schema: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new().prefix("dcvd-pdns-").tempdir().map_err(|e| e.to_string())?;
        let db = dir.path().join("pdns.sqlite3");
        let sql = std::fs::read_to_string(schema).map_err(|e| format!("reading {}: {e}", schema.display()))?;
        rusqlite::Connection::open(&db)
            .and_then(|c| c.execute_batch(&sql))
            .map_err(|e| format!("creating the SQLite database from {}: {e}", schema.display()))?;
        let api_port = ports::free_port();
        let dns_port = ports::free_port();
        let api_key = format!("pdns-test-key-{:016x}", rand::random::<u64>());
        std::fs::write(dir.path().join("api.key"), format!("{api_key}\n")).map_err(|e| e.to_string())?;
        let conf = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={db}\n\
             gsqlite3-dnssec=no\n\
             api=yes\n\
             api-key={api_key}\n\
             webserver=yes\n\
             webserver-address=127.0.0.1\n\
             webserver-port={api_port}\n\
             webserver-allow-from=127.0.0.0/8\n\
             local-address=127.0.0.1\n\
             local-port={dns_port}\n\
             guardian=no\n\
             daemon=no\n\
             socket-dir={dir}\n\
             disable-syslog=yes\n\
             loglevel=4\n\
             security-poll-suffix=\n\
             cache-ttl=0\n\
             query-cache-ttl=0\n\
             negquery-cache-ttl=0\n\
             zone-cache-refresh-interval=0\n\
             default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 30\n",
            db = db.display(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("pdns.conf"), conf).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("pdns.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(pdns)
            .arg(format!("--config-dir={}", dir.path().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", pdns.display()))?;

        let direct_url = format!("http://127.0.0.1:{api_port}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{direct_url}/api/v1/servers/localhost"))
                .header("X-API-Key", &api_key)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("pdns.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "pdns_server (API port {api_port}, DNS port {dns_port}) {}; log tail:\n{}",
                    if exited { "exited" } else { "did not answer within 20s" },
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let shared = Arc::new(Shared {
            direct_url,
            http,
            counts: Counts::default(),
            faults: Mutex::new(VecDeque::new()),
            patches: Mutex::new(Vec::new()),
        });
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("binding the proxy: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = axum::Router::new().fallback(proxy).with_state(shared.clone());
        let proxy = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { child, dir, dns_port, api_key, proxy_url: format!("http://{addr}"), shared, proxy })
    }

    /// The URL adapters use as `api_url` (the proxy: counts requests, injects faults).
    pub fn api_url(&self) -> &str {
        &self.proxy_url
    }

    /// PowerDNS's own webserver URL (no counting, no faults).
    pub fn direct_url(&self) -> &str {
        &self.shared.direct_url
    }

    /// The `api-key` PowerDNS accepts.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// A file holding only the API key (what `api_key_file` expects).
    pub fn api_key_file(&self) -> PathBuf {
        self.dir.path().join("api.key")
    }

    /// The DNS listener (127.0.0.1:port, UDP and TCP).
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    /// The DNS port.
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// The last lines of PowerDNS's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn zone_url(&self, zone: &str) -> String {
        format!("{}/api/v1/servers/localhost/zones/{}.", self.shared.direct_url, zone.trim_end_matches('.'))
    }

    /// Creates a native zone with `ns1.<zone>` (A 127.0.0.1) as its name server.
    pub async fn create_zone(&self, zone: &str) {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let body = json!({
            "name": format!("{zone}."),
            "kind": "Native",
            "nameservers": [format!("ns1.{zone}.")],
            "rrsets": [{
                "name": format!("ns1.{zone}."), "type": "A", "ttl": 60,
                "records": [{"content": "127.0.0.1", "disabled": false}],
            }],
        });
        let resp = self
            .shared
            .http
            .post(format!("{}/api/v1/servers/localhost/zones", self.shared.direct_url))
            .header("X-API-Key", &self.api_key)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("powerdns: creating zone {zone}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "powerdns: creating zone {zone}: HTTP {status}: {text}");
    }

    /// The RRsets at `name` as PowerDNS holds them: `(type, ttl, [(content, disabled)])`.
    pub async fn rrsets_at(&self, zone: &str, name: &str) -> Vec<(String, u32, Vec<(String, bool)>)> {
        let name = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
        let resp = self
            .shared
            .http
            .get(self.zone_url(zone))
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("powerdns: reading zone {zone}: {e}"));
        assert!(resp.status().is_success(), "powerdns: reading zone {zone}: HTTP {}", resp.status());
        let doc: Value = resp.json().await.expect("zone JSON");
        doc["rrsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(&name)))
            .map(|s| {
                let records = s["records"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        (
                            r["content"].as_str().unwrap_or_default().to_string(),
                            r["disabled"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect();
                (s["type"].as_str().unwrap_or_default().to_string(), s["ttl"].as_u64().unwrap_or(0) as u32, records)
            })
            .filter(|(_, _, records): &(String, u32, Vec<(String, bool)>)| !records.is_empty())
            .collect()
    }

    /// The enabled values at `name`/`rtype`: TXT unquoted (strings joined), names without dot.
    pub async fn values(&self, zone: &str, name: &str, rtype: &str) -> Vec<String> {
        self.rrsets_at(zone, name)
            .await
            .into_iter()
            .filter(|(t, _, _)| t.eq_ignore_ascii_case(rtype))
            .flat_map(|(_, _, records)| records)
            .filter(|(_, disabled)| !disabled)
            .map(|(content, _)| {
                if rtype.eq_ignore_ascii_case("TXT") {
                    crate::moto::unquote_txt(&content)
                } else {
                    content.trim_end_matches('.').to_string()
                }
            })
            .collect()
    }

    /// Adds raw `content` (quote TXT yourself) to the RRset at `name`/`rtype`, keeping what is
    /// there, directly in PowerDNS: another tool's write, invisible to the proxy's counters.
    pub async fn add_value(&self, zone: &str, name: &str, rtype: &str, content: &str, ttl: u32) {
        let existing = self.rrsets_at(zone, name).await.into_iter().find(|(t, _, _)| t.eq_ignore_ascii_case(rtype));
        let ttl = existing.as_ref().map_or(ttl, |(_, t, _)| *t);
        let mut records = existing.map(|(_, _, r)| r).unwrap_or_default();
        if !records.iter().any(|(c, _)| c == content) {
            records.push((content.to_string(), false));
        }
        self.patch(
            zone,
            json!({
                "name": format!("{}.", name.trim_end_matches('.')), "type": rtype, "ttl": ttl, "changetype": "REPLACE",
                "records": records.iter().map(|(c, d)| json!({"content": c, "disabled": d})).collect::<Vec<_>>(),
            }),
        )
        .await;
    }

    /// Sends one RRset change directly to PowerDNS; panics unless it succeeds.
    pub async fn patch(&self, zone: &str, rrset: Value) {
        let resp = self
            .shared
            .http
            .patch(self.zone_url(zone))
            .header("X-API-Key", &self.api_key)
            .json(&json!({ "rrsets": [rrset] }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("powerdns: patching zone {zone}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "powerdns: patching zone {zone}: HTTP {status}: {text}");
    }

    /// Requests the proxy received with `method` (`GET`, `PATCH`; anything else counts as other).
    pub fn requests(&self, method: &str) -> u64 {
        let c = &self.shared.counts;
        match method {
            "GET" => c.get.load(Ordering::SeqCst),
            "PATCH" => c.patch.load(Ordering::SeqCst),
            _ => c.other.load(Ordering::SeqCst),
        }
    }

    /// Every request the proxy received.
    pub fn total_requests(&self) -> u64 {
        self.requests("GET") + self.requests("PATCH") + self.requests("other")
    }

    /// Answers the next `n` requests with 429 (and `Retry-After` when given).
    pub fn throttle_next(&self, n: u32, retry_after: Option<u64>) {
        self.inject(PdnsFault::Throttle { retry_after }, n);
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: u32) {
        self.inject(PdnsFault::Unavailable, n);
    }

    /// Queues `n` copies of `fault`.
    pub fn inject(&self, fault: PdnsFault, n: u32) {
        let mut faults = self.shared.faults.lock().expect("faults lock");
        faults.extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Faults not served yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.faults.lock().expect("faults lock").len()
    }

    /// Every RRset change sent through the proxy (what an adapter wrote), as
    /// `(name without dot, type, changetype, [record contents])`, in order.
    pub fn changes(&self) -> Vec<(String, String, String, Vec<String>)> {
        let patches = self.shared.patches.lock().expect("patches lock");
        patches
            .iter()
            .flat_map(|rrsets| rrsets.as_array().cloned().unwrap_or_default())
            .map(|set| {
                let text = |k: &str| set[k].as_str().unwrap_or_default().to_string();
                let contents = set["records"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r["content"].as_str().unwrap_or_default().to_string())
                    .collect();
                (text("name").trim_end_matches('.').to_string(), text("type"), text("changetype"), contents)
            })
            .collect()
    }
}

async fn proxy(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let counter = match parts.method.as_str() {
        "GET" => &shared.counts.get,
        "PATCH" => &shared.counts.patch,
        _ => &shared.counts.other,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let fault = shared.faults.lock().expect("faults lock").pop_front();
    match fault {
        Some(PdnsFault::Throttle { retry_after }) => {
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, "{\"error\": \"Too Many Requests\"}").into_response();
            if let Some(secs) = retry_after {
                resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            return resp;
        }
        Some(PdnsFault::Unavailable) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
        }
        None => {}
    }
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("unreadable body: {e}")).into_response(),
    };
    if parts.method == axum::http::Method::PATCH
        && let Ok(doc) = serde_json::from_slice::<Value>(&body)
    {
        shared.patches.lock().expect("patches lock").push(doc["rrsets"].clone());
    }
    let url = format!("{}{}", shared.direct_url, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut req = shared.http.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            req = req.header(name, value);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("powerdns unreachable: {e}")).into_response(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher starts PowerDNS; a value added through the API is served over DNS on the
    /// high port, and the proxy counts and throttles.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_api_changes_over_dns() {
        let pdns = PowerDns::start(&["launch.test"]).await;
        pdns.add_value("launch.test", "_dnsauth.launch.test", "TXT", "\"v1\"", 60).await;
        assert_eq!(pdns.values("launch.test", "_dnsauth.launch.test", "TXT").await, vec!["v1"]);
        assert_eq!(crate::bind::dig(pdns.dns_addr(), "_dnsauth.launch.test", "TXT"), vec!["v1"]);
        assert_eq!(crate::bind::dig(pdns.dns_addr(), "launch.test", "NS"), vec!["ns1.launch.test"]);

        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        pdns.throttle_next(1, Some(7));
        let url = format!("{}/api/v1/servers/localhost", pdns.api_url());
        let first = http.get(&url).header("X-API-Key", pdns.api_key()).send().await.expect("proxy");
        assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(first.headers()["retry-after"], "7");
        let second = http.get(&url).header("X-API-Key", pdns.api_key()).send().await.expect("proxy");
        assert!(second.status().is_success());
        assert_eq!(pdns.requests("GET"), 2);
    }
}
