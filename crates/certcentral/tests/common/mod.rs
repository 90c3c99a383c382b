//! Shared helpers for the certcentral integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use certcentral::{CallRecord, Client, ClientConfig, RetryPolicy, SecretString};
use wiremock::MockServer;
use wiremock::ResponseTemplate;

/// A recognisable fake API key; tests assert it never leaks.
pub const KEY: &str = "dk-TESTKEY-7f3a9c2e51b84d06";
/// Path prefix of the API on the mock server (as on DigiCert's hosts).
pub const PREFIX: &str = "/services/v2";

/// A config for `server`: plain http to loopback allowed, fast retries, no client-side limits.
pub fn config(server: &MockServer) -> ClientConfig {
    let mut config = ClientConfig::new(format!("{}{PREFIX}", server.uri()), SecretString::from(KEY));
    config.allow_insecure_http = true;
    config.timeout = Duration::from_secs(10);
    config.rate_limits = Vec::new();
    config.retry =
        RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) };
    config
}

/// A client for `server` with [`config`].
pub fn client(server: &MockServer) -> Client {
    Client::new(config(server)).expect("client config is valid")
}

/// A client whose observer records every attempt.
pub fn observed_client(config: ClientConfig) -> (Client, Arc<Mutex<Vec<CallRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut client = Client::new(config).expect("client config is valid");
    let sink = records.clone();
    client.set_observer(Arc::new(move |r: &CallRecord| sink.lock().unwrap().push(r.clone())));
    (client, records)
}

/// The full API path for `rest`.
pub fn api(rest: &str) -> String {
    format!("{PREFIX}{rest}")
}

/// A JSON answer with `status` and `body`.
pub fn json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json")
}
