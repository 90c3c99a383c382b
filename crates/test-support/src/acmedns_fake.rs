//! A stateful fake of joohoi/acme-dns's HTTP API (acme-dns is not packaged for Debian), kept to
//! what the upstream code does (`pkg/api`: `register.go`, `auth.go`, `update.go`, `util.go`;
//! `pkg/database/db.go`):
//!
//! - `POST /register` creates an account: `username` (a UUID), `password` (40 characters of
//!   `[A-Za-z0-9_-]`), `subdomain` (a UUID), `fulldomain` (`<subdomain>.<domain>`), answering
//!   201 with those and `allowfrom`.
//! - `POST /update` with `X-Api-User` / `X-Api-Key` and `{"subdomain", "txt"}`: a username that
//!   is not a UUID, a key that is not 40 valid characters, an unknown user, a wrong password or
//!   a body `subdomain` other than the account's all answer `401 {"error": "forbidden"}`; then
//!   a bad subdomain answers `400 {"error": "bad_subdomain"}` and a value that is not exactly 43
//!   characters of `[A-Za-z0-9_-]` answers `400 {"error": "bad_txt"}`; else the slot with the
//!   oldest `LastUpdate` (unix seconds; ties go to the first slot, like SQLite's rowid order) gets
//!   the value and the answer is `200 {"txt": "<value>"}`.
//! - Each account has two slots, both empty (`""`) at registration; nothing is ever deleted.
//! - `GET /health` answers 200.
//!
//! Test hooks: [`AcmeDnsFake::slots`] reads an account's slots back, [`AcmeDnsFake::inject`]
//! answers the next requests with 429/503 (as a reverse proxy in front of acme-dns would; acme-dns
//! itself never throttles), and [`AcmeDnsFakeBuilder::accept_any_txt`] models a patched server
//! that accepts values of any length (DigiCert's random values are 32 characters).
//! `allowfrom` ranges are accepted and ignored (every request comes from loopback).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// A fault answered instead of handling a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeFault {
    /// 429 with `Retry-After: secs` when given.
    Throttle {
        /// Seconds for `Retry-After`.
        retry_after: Option<u64>,
    },
    /// 503.
    Unavailable,
}

/// A registered account, as `/register` returned it.
#[derive(Debug, Clone)]
pub struct AcmeAccount {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
    /// `subdomain`.
    pub subdomain: String,
    /// `fulldomain`.
    pub fulldomain: String,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    value: String,
    last_update: i64,
}

#[derive(Default)]
struct Inner {
    accounts: Vec<AcmeAccount>,
    /// subdomain -> two slots.
    slots: HashMap<String, [Slot; 2]>,
    faults: VecDeque<AcmeFault>,
    updates: u64,
    refused: u64,
}

struct Shared {
    domain: String,
    accept_any_txt: bool,
    inner: Mutex<Inner>,
}

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct AcmeDnsFakeBuilder {
    domain: String,
    accept_any_txt: bool,
}

impl AcmeDnsFakeBuilder {
    /// Accept TXT values of any length (a patched acme-dns), instead of exactly 43 characters.
    pub fn accept_any_txt(mut self) -> Self {
        self.accept_any_txt = true;
        self
    }

    /// Starts the fake on a free port of 127.0.0.1.
    pub async fn start(self) -> AcmeDnsFake {
        let shared = Arc::new(Shared {
            domain: self.domain.trim_end_matches('.').to_ascii_lowercase(),
            accept_any_txt: self.accept_any_txt,
            inner: Mutex::new(Inner::default()),
        });
        let app = axum::Router::new()
            .route("/register", post(register))
            .route("/update", post(update))
            .route("/health", get(|| async { StatusCode::OK }))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the acme-dns fake on 127.0.0.1");
        let addr = listener.local_addr().expect("fake address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AcmeDnsFake { api_url: format!("http://{addr}"), shared, server }
    }
}

/// A running fake; stops when dropped.
pub struct AcmeDnsFake {
    /// The API root (`http://127.0.0.1:PORT`).
    pub api_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for AcmeDnsFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeDnsFake").field("api_url", &self.api_url).finish_non_exhaustive()
    }
}

impl Drop for AcmeDnsFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AcmeDnsFake {
    /// A builder for a server whose accounts live under `domain` (`auth.example.org`).
    pub fn builder(domain: &str) -> AcmeDnsFakeBuilder {
        AcmeDnsFakeBuilder { domain: domain.to_string(), accept_any_txt: false }
    }

    /// A strict server (43-character values only) for `domain`.
    pub async fn start(domain: &str) -> Self {
        Self::builder(domain).start().await
    }

    /// Registers an account directly (what `POST /register` does).
    pub fn register(&self) -> AcmeAccount {
        register_account(&self.shared)
    }

    /// The two slots of the account with `subdomain`, in slot order (`""` = never written).
    pub fn slots(&self, subdomain: &str) -> Vec<String> {
        let inner = self.shared.inner.lock().expect("fake lock");
        inner.slots.get(subdomain).map(|s| s.iter().map(|slot| slot.value.clone()).collect()).unwrap_or_default()
    }

    /// The non-empty values served at `fulldomain` (what a TXT query would return), sorted.
    pub fn txt_values(&self, fulldomain: &str) -> Vec<String> {
        let full = fulldomain.trim_end_matches('.').to_ascii_lowercase();
        let inner = self.shared.inner.lock().expect("fake lock");
        let Some(account) = inner.accounts.iter().find(|a| a.fulldomain == full) else { return Vec::new() };
        let mut values: Vec<String> =
            inner.slots[&account.subdomain].iter().filter(|s| !s.value.is_empty()).map(|s| s.value.clone()).collect();
        values.sort();
        values
    }

    /// Successful updates so far.
    pub fn updates(&self) -> u64 {
        self.shared.inner.lock().expect("fake lock").updates
    }

    /// Updates refused with 401 so far.
    pub fn refused(&self) -> u64 {
        self.shared.inner.lock().expect("fake lock").refused
    }

    /// Answers the next `n` requests with `fault`.
    pub fn inject(&self, fault: AcmeFault, n: u32) {
        let mut inner = self.shared.inner.lock().expect("fake lock");
        inner.faults.extend(std::iter::repeat_n(fault, n as usize));
    }

    /// Faults not served yet.
    pub fn pending_faults(&self) -> usize {
        self.shared.inner.lock().expect("fake lock").faults.len()
    }
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

fn register_account(shared: &Shared) -> AcmeAccount {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let password: String = (0..40).map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())])).collect();
    let subdomain = uuid();
    let account = AcmeAccount {
        username: uuid(),
        password,
        fulldomain: format!("{subdomain}.{}", shared.domain),
        subdomain: subdomain.clone(),
    };
    let mut inner = shared.inner.lock().expect("fake lock");
    inner.accounts.push(account.clone());
    inner.slots.insert(subdomain, Default::default());
    account
}

/// acme-dns's `SanitizeString`: keeps `[A-Za-z0-9_-]`.
fn sanitized_len(s: &str) -> usize {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').count()
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn valid_subdomain(s: &str) -> bool {
    // ^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn json_error(status: StatusCode, error: &str) -> Response {
    let mut resp = (status, format!("{{\"error\": \"{error}\"}}")).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

fn fault_response(shared: &Shared) -> Option<Response> {
    let fault = shared.inner.lock().expect("fake lock").faults.pop_front()?;
    Some(match fault {
        AcmeFault::Throttle { retry_after } => {
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
            if let Some(secs) = retry_after {
                resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            resp
        }
        AcmeFault::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
    })
}

async fn register(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(resp) = fault_response(&shared) {
        return resp;
    }
    let a = register_account(&shared);
    let body = json!({
        "username": a.username, "password": a.password, "fulldomain": a.fulldomain,
        "subdomain": a.subdomain, "allowfrom": [],
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn update(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Some(resp) = fault_response(&shared) {
        return resp;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (user, key) = (header("X-Api-User"), header("X-Api-Key"));
    // acme-dns decodes the body leniently: a bad body leaves the fields empty
    let post: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let subdomain = post["subdomain"].as_str().unwrap_or_default().to_string();
    let txt = post["txt"].as_str().unwrap_or_default().to_string();

    let mut inner = shared.inner.lock().expect("fake lock");
    let key_ok = key.chars().count() == 40 && sanitized_len(&key) == 40;
    let account = (is_uuid(&user) && key_ok)
        .then(|| inner.accounts.iter().find(|a| a.username.eq_ignore_ascii_case(&user)))
        .flatten()
        .filter(|a| a.password == key && a.subdomain == subdomain)
        .cloned();
    let Some(account) = account else {
        inner.refused += 1;
        return json_error(StatusCode::UNAUTHORIZED, "forbidden");
    };
    if !valid_subdomain(&account.subdomain) {
        return json_error(StatusCode::BAD_REQUEST, "bad_subdomain");
    }
    let txt_ok = shared.accept_any_txt && !txt.is_empty() || (txt.chars().count() == 43 && sanitized_len(&txt) == 43);
    if !txt_ok {
        return json_error(StatusCode::BAD_REQUEST, "bad_txt");
    }
    let now = chrono::Utc::now().timestamp();
    let slots = inner.slots.get_mut(&account.subdomain).expect("slots of a registered account");
    // ORDER BY LastUpdate LIMIT 1: the first of the oldest
    let oldest = if slots[1].last_update < slots[0].last_update { 1 } else { 0 };
    slots[oldest] = Slot { value: txt.clone(), last_update: now };
    inner.updates += 1;
    let mut resp = (StatusCode::OK, format!("{{\"txt\": \"{txt}\"}}")).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Register over HTTP, update with the right and wrong credentials and values, read back.
    #[tokio::test]
    async fn register_update_and_errors() {
        let fake = AcmeDnsFake::start("auth.test").await;
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let reg: Value =
            http.post(format!("{}/register", fake.api_url)).send().await.expect("register").json().await.expect("json");
        let (user, pass, sub) = (
            reg["username"].as_str().expect("username"),
            reg["password"].as_str().expect("password"),
            reg["subdomain"].as_str().expect("subdomain"),
        );
        assert_eq!(reg["fulldomain"].as_str(), Some(format!("{sub}.auth.test").as_str()));
        assert_eq!(pass.len(), 40);
        let send = |user: &str, pass: &str, sub: &str, txt: &str| {
            http.post(format!("{}/update", fake.api_url))
                .header("X-Api-User", user)
                .header("X-Api-Key", pass)
                .json(&json!({"subdomain": sub, "txt": txt}))
                .send()
        };
        let v43 = "a".repeat(43);
        let ok = send(user, pass, sub, &v43).await.expect("update");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.text().await.expect("body"), format!("{{\"txt\": \"{v43}\"}}"));
        let wrong = send(user, &"x".repeat(40), sub, &v43).await.expect("update");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.text().await.expect("body"), "{\"error\": \"forbidden\"}");
        let other_sub = send(user, pass, "0000", &v43).await.expect("update");
        assert_eq!(other_sub.status(), StatusCode::UNAUTHORIZED);
        let short = send(user, pass, sub, &"b".repeat(32)).await.expect("update");
        assert_eq!(short.status(), StatusCode::BAD_REQUEST);
        assert_eq!(short.text().await.expect("body"), "{\"error\": \"bad_txt\"}");
        let bad_chars = send(user, pass, sub, &format!("{}!", "c".repeat(42))).await.expect("update");
        assert_eq!(bad_chars.status(), StatusCode::BAD_REQUEST);
        assert_eq!(fake.slots(sub), vec![v43.clone(), String::new()]);
        assert_eq!(fake.refused(), 2);
    }
}
