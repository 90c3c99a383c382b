//! PowerDNS Authoritative adapter over its HTTP API (`/api/v1`, authenticated with `X-API-Key`).
//!
//! - PowerDNS stores values per RRset and a `PATCH` with `changetype: REPLACE` replaces the whole
//!   RRset, so a value is merged in or out: read the zone's RRsets (`GET` of the zone), compute
//!   the new RRset keeping every other value (and its `disabled` flag), and write it back
//!   (`REPLACE`, or `DELETE` when nothing is left). The whole zone is read on purpose: the
//!   `rrset_name` filter of the API leaves out disabled records (seen with 4.7), and a `REPLACE`
//!   built from that answer would silently delete them.
//! - [`DnsProvider::publish_batch`] and [`DnsProvider::remove_batch`] read the zone once and send
//!   one `PATCH` with every RRset; PowerDNS applies a `PATCH` in one transaction.
//! - Lost updates: PowerDNS's API has no compare-and-set (no ETag, no "delete exactly these
//!   values"), so read-merge-write is guarded by a lock per (API, server, zone, name) shared by
//!   every adapter instance of this process (several provider sections or a reload pointing at
//!   one server included). What remains: another *process or tool* replacing the same RRset
//!   between our read and our write can still lose a value (ours or theirs). Keep other writers
//!   off the `_dnsauth` names dcvd manages, or use a dedicated validation zone.
//! - 429 and 5xx (and network failures) are retried with jittered backoff, honouring
//!   `Retry-After`; PowerDNS itself does not throttle, a reverse proxy in front of it may.
//! - Names are canonical with a trailing dot; TXT content is sent quoted, split into 255-byte
//!   strings, as PowerDNS's zone-file content format wants.
//!
//! It must not touch values it did not publish, and never sends the API key anywhere but the
//! configured API (plain http only to loopback).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info};

use crate::RetryPolicy;
use crate::locks::NameLocks;
use crate::rest::{self, Answer, Failure, Rest};
use crate::rrset::{decode_value, same_value};
use crate::txt;
use crate::{DnsProvider, ProviderError, Published, Record, RecordType, check_owner, normalize_name};

const KIND: &str = "powerdns";
/// PowerDNS's name for the one server an Authoritative instance has.
pub const DEFAULT_SERVER_ID: &str = "localhost";
/// Default timeout of one API request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one PowerDNS provider instance.
#[derive(Debug, Clone)]
pub struct PowerDnsSettings {
    /// The webserver's URL (`https://pdns.example.net:8081`, or `http://` to loopback); the
    /// adapter appends `/api/v1`.
    pub api_url: String,
    /// The `api-key` of pdns.conf.
    pub api_key: SecretString,
    /// The server id in API paths (always `localhost` for PowerDNS Authoritative).
    pub server_id: String,
    /// Zones served (absolute, no trailing dot).
    pub zones: Vec<String>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries of throttled and transient calls.
    pub retry: RetryPolicy,
    /// Awaited before every API request: the account's client-side rate limit (shared).
    pub gate: Option<crate::SharedGate>,
}

impl PowerDnsSettings {
    /// Settings with the default server id, timeout and retries.
    pub fn new(api_url: impl Into<String>, api_key: SecretString, zones: Vec<String>) -> Self {
        Self {
            api_url: api_url.into(),
            api_key,
            server_id: DEFAULT_SERVER_ID.to_string(),
            zones,
            timeout: DEFAULT_TIMEOUT,
            retry: crate::PROVIDER_RETRY,
            gate: None,
        }
    }
}

/// One record of an RRset as PowerDNS holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rr {
    content: String,
    disabled: bool,
}

/// One RRset as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RrSet {
    ttl: u32,
    records: Vec<Rr>,
}

/// Every RRset at one name: type (`TXT`, `CNAME`, ...) -> RRset.
type NameState = BTreeMap<String, RrSet>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
}

#[derive(Deserialize)]
struct ZoneDoc {
    #[serde(default)]
    rrsets: Vec<ApiRrSet>,
}

#[derive(Deserialize)]
struct ApiRrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    ttl: u32,
    #[serde(default)]
    records: Vec<ApiRecord>,
}

#[derive(Deserialize)]
struct ApiRecord {
    content: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
}

/// The PowerDNS adapter. Its `Debug` never shows the API key.
pub struct PowerDnsProvider {
    rest: Rest,
    /// `.../api/v1`, no trailing slash.
    api_root: String,
    api_url: String,
    api_key: SecretString,
    server_id: String,
    zones: Vec<String>,
}

impl fmt::Debug for PowerDnsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerDnsProvider")
            .field("api_url", &self.api_url)
            .field("server_id", &self.server_id)
            .field("zones", &self.zones)
            .finish_non_exhaustive()
    }
}

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

/// Locks per (API, server, zone, name), shared by every instance in this process.
static NAME_LOCKS: LazyLock<NameLocks> = LazyLock::new(NameLocks::new);

/// The content of `record` as PowerDNS stores it.
fn content(record: &Record) -> String {
    match record.rtype {
        RecordType::Txt => txt::quote(&record.value),
        RecordType::Cname => format!("{}.", normalize_name(&record.value)),
    }
}

/// The message of a PowerDNS error body (`{"error": "..."}`), else the body itself.
fn detail(answer: &Answer) -> String {
    match serde_json::from_slice::<ApiErrorBody>(&answer.body) {
        Ok(body) => body.error,
        Err(_) => answer.text(),
    }
}

fn from_failure(failure: Failure, what: &str) -> ProviderError {
    match failure {
        Failure::Throttled { retry_after, message } => ProviderError::Throttled {
            provider: KIND,
            message: format!("{what}: still rate limited after retries ({message})"),
            retry_after,
        },
        Failure::Transient(message) => ProviderError::Transient {
            provider: KIND,
            // PowerDNS resets connections from addresses outside webserver-allow-from
            message: format!(
                "{what}: {message} (if this persists: is the webserver up at api_url, and is dcvd's address in webserver-allow-from?)"
            ),
        },
    }
}

/// Maps a non-success answer of a call about `zone`.
fn api_error(answer: &Answer, zone: &str, what: &str) -> ProviderError {
    let detail = detail(answer);
    match answer.status {
        StatusCode::UNAUTHORIZED => ProviderError::Auth {
            provider: KIND,
            message: format!(
                "{what}: the API key was rejected (HTTP 401 {detail}): put the `api-key` of pdns.conf in the provider's api_key_file"
            ),
        },
        StatusCode::FORBIDDEN => ProviderError::Auth {
            provider: KIND,
            message: format!(
                "{what}: the API refused access (HTTP 403 {detail}): allow dcvd's address in the reverse proxy in front of PowerDNS (or `webserver-allow-from` in pdns.conf)"
            ),
        },
        StatusCode::NOT_FOUND => ProviderError::ZoneNotFound {
            provider: KIND,
            zone: zone.to_string(),
            message: format!("{what}: HTTP 404 {detail}: create the zone in PowerDNS, or fix `zones` / `server_id`"),
        },
        StatusCode::UNPROCESSABLE_ENTITY if detail.to_ascii_lowercase().contains("conflicts with") => {
            ProviderError::Conflict {
                provider: KIND,
                message: format!("{what} in zone {zone}: {detail}; a CNAME cannot share its name with other records"),
            }
        }
        status => ProviderError::Rejected {
            provider: KIND,
            code: Some(status.as_u16().to_string()),
            message: format!("{what} in zone {zone} rejected: HTTP {status}: {detail}"),
        },
    }
}

impl PowerDnsProvider {
    /// Validates the settings; no network call (see [`DnsProvider::preflight`]).
    pub fn new(settings: PowerDnsSettings) -> Result<Self, ProviderError> {
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(err_config("no zones configured: list the zones this PowerDNS server holds in `zones`"));
        }
        let key = settings.api_key.expose_secret();
        if key.trim().is_empty() {
            return Err(err_config(
                "the API key is empty: put the `api-key` of pdns.conf in the file named by api_key_file",
            ));
        }
        if key.trim() != key || key.chars().any(char::is_control) {
            return Err(err_config(
                "the API key contains whitespace or control characters: store only the key in its file",
            ));
        }
        let server_id = settings.server_id.trim().to_string();
        if server_id.is_empty() || server_id.contains('/') {
            return Err(err_config(format!(
                "server_id {server_id:?} is not valid: PowerDNS Authoritative uses \"localhost\""
            )));
        }
        let loopback = rest::check_url("api_url", &settings.api_url).map_err(err_config)?;
        let base = settings.api_url.trim_end_matches('/');
        let base = base.strip_suffix("/api/v1").unwrap_or(base);
        let rest = Rest::new(KIND, loopback, settings.timeout, settings.retry)
            .map_err(err_config)?
            .with_gate(settings.gate.clone());
        Ok(Self {
            rest,
            api_root: format!("{base}/api/v1"),
            api_url: settings.api_url,
            api_key: settings.api_key,
            server_id,
            zones,
        })
    }

    /// `{api_root}/servers/{server_id}` plus `segments`, each percent-encoded.
    fn url(&self, segments: &[&str]) -> String {
        let mut url = reqwest::Url::parse(&self.api_root).expect("api_root was checked in new()");
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .extend(["servers", self.server_id.as_str()])
            .extend(segments);
        url.to_string()
    }

    async fn get(&self, url: &str, what: &str) -> Result<Answer, Failure> {
        self.rest.send(Method::GET, url, what, |r| r.header("X-API-Key", self.api_key.expose_secret())).await
    }

    /// Reads the RRsets at `names` (all types) with one GET of the whole zone (see the module
    /// doc for why not the `rrset_name` filter).
    async fn read_names(
        &self,
        zone: &str,
        names: &BTreeSet<String>,
    ) -> Result<HashMap<String, NameState>, ProviderError> {
        let url = self.url(&["zones", &format!("{zone}.")]);
        let doc = self.read_zone_doc(&url, zone).await?;
        let mut out: HashMap<String, NameState> = names.iter().map(|n| (n.clone(), NameState::new())).collect();
        for set in doc.rrsets {
            let name = normalize_name(&set.name);
            let Some(state) = out.get_mut(&name) else { continue };
            if set.records.is_empty() {
                continue; // an RRset holding only comments
            }
            state.insert(
                set.rtype.to_ascii_uppercase(),
                RrSet {
                    ttl: set.ttl,
                    records: set.records.into_iter().map(|r| Rr { content: r.content, disabled: r.disabled }).collect(),
                },
            );
        }
        Ok(out)
    }

    async fn read_zone_doc(&self, url: &str, zone: &str) -> Result<ZoneDoc, ProviderError> {
        let what = "reading the zone";
        let answer = self.get(url, what).await.map_err(|f| from_failure(f, what))?;
        if !answer.status.is_success() {
            return Err(api_error(&answer, zone, what));
        }
        serde_json::from_slice(&answer.body).map_err(|e| ProviderError::Transient {
            provider: KIND,
            message: format!("{what} {zone}: unreadable answer: {e}"),
        })
    }

    /// The RRset change for one (name, type), or `None` when nothing has to change.
    fn plan(
        zone: &str,
        name: &str,
        rtype: RecordType,
        ops: &[(Op, &Record)],
        state: &NameState,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let type_key = rtype.as_str();
        let old = state.get(type_key);
        if ops.iter().any(|(op, _)| *op == Op::Add) {
            let others: Vec<&String> = state.keys().filter(|t| t.as_str() != type_key).collect();
            match rtype {
                RecordType::Cname => {
                    if let Some(other) = others.first() {
                        return Err(ProviderError::Conflict {
                            provider: KIND,
                            message: format!(
                                "cannot publish CNAME at {name}: a {other} record already exists there (zone {zone}); a CNAME cannot share its name: remove the {other} record or use the TXT method"
                            ),
                        });
                    }
                    let targets: BTreeSet<String> = ops
                        .iter()
                        .filter(|(op, _)| *op == Op::Add)
                        .map(|(_, r)| normalize_name(&r.value))
                        .chain(old.iter().flat_map(|s| s.records.iter().map(|r| normalize_name(&r.content))))
                        .collect();
                    if targets.len() > 1 {
                        return Err(ProviderError::Conflict {
                            provider: KIND,
                            message: format!(
                                "cannot publish CNAME at {name}: it would point to several targets ({}) (zone {zone}); remove the other CNAME first",
                                targets.into_iter().collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                }
                RecordType::Txt => {
                    if others.iter().any(|t| t.as_str() == "CNAME") {
                        return Err(ProviderError::Conflict {
                            provider: KIND,
                            message: format!(
                                "cannot publish TXT at {name}: the name is a CNAME (zone {zone}); publish at the CNAME's target instead"
                            ),
                        });
                    }
                }
            }
        }
        let mut records: Vec<Rr> = old.map(|s| s.records.clone()).unwrap_or_default();
        let mut ttl = old.map(|s| s.ttl);
        for (op, record) in ops {
            match op {
                Op::Add => {
                    match records.iter_mut().find(|r| same_value(rtype, &r.content, &record.value)) {
                        Some(existing) => existing.disabled = false,
                        None => records.push(Rr { content: content(record), disabled: false }),
                    }
                    ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                }
                Op::Remove => records.retain(|r| !same_value(rtype, &r.content, &record.value)),
            }
        }
        let unchanged = match old {
            Some(old) => old.records == records && Some(old.ttl) == ttl,
            None => records.is_empty(),
        };
        if unchanged {
            return Ok(None);
        }
        let owner = format!("{name}.");
        if records.is_empty() {
            return Ok(Some(json!({ "name": owner, "type": type_key, "changetype": "DELETE" })));
        }
        Ok(Some(json!({
            "name": owner,
            "type": type_key,
            "ttl": ttl.unwrap_or(60),
            "changetype": "REPLACE",
            "records": records.iter().map(|r| json!({ "content": r.content, "disabled": r.disabled })).collect::<Vec<_>>(),
        })))
    }

    /// Adds and removes values in `zone` with one read and (at most) one PATCH.
    async fn apply(&self, zone: &str, ops: &[(Op, &Record)]) -> Result<(), ProviderError> {
        let zone = normalize_name(zone);
        let mut by_key: BTreeMap<(String, RecordType), Vec<(Op, &Record)>> = BTreeMap::new();
        for (op, record) in ops {
            let (_, name) = check_owner(KIND, &self.zones, &zone, &record.name)?;
            by_key.entry((name, record.rtype)).or_default().push((*op, *record));
        }
        if by_key.is_empty() {
            return Ok(());
        }
        let names: BTreeSet<String> = by_key.keys().map(|(n, _)| n.clone()).collect();
        let guards = NAME_LOCKS
            .lock_all(names.iter().map(|name| format!("{}|{}|{zone}|{name}", self.api_root, self.server_id)))
            .await;
        let states = self.read_names(&zone, &names).await?;
        let mut rrsets = Vec::new();
        for ((name, rtype), key_ops) in &by_key {
            if let Some(change) = Self::plan(&zone, name, *rtype, key_ops, &states[name])? {
                rrsets.push(change);
            }
        }
        if rrsets.is_empty() {
            debug!(zone = %zone, records = ops.len(), "powerdns: nothing to change");
            return Ok(());
        }
        let what = "changing record sets";
        let url = self.url(&["zones", &format!("{zone}.")]);
        let body = json!({ "rrsets": rrsets });
        let answer = self
            .rest
            .send(Method::PATCH, &url, what, |r| r.header("X-API-Key", self.api_key.expose_secret()).json(&body))
            .await
            .map_err(|f| from_failure(f, what))?;
        if !answer.status.is_success() {
            return Err(api_error(&answer, &zone, what));
        }
        info!(zone = %zone, rrsets = rrsets.len(), "powerdns record sets changed");
        drop(guards);
        Ok(())
    }
}

#[async_trait]
impl DnsProvider for PowerDnsProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        self.apply(zone, &[(Op::Add, record)]).await?;
        Ok(Published::default())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        self.apply(zone, &[(Op::Remove, record)]).await
    }

    async fn publish_batch(&self, zone: &str, records: &[Record]) -> Result<Vec<Published>, ProviderError> {
        let ops: Vec<(Op, &Record)> = records.iter().map(|r| (Op::Add, r)).collect();
        self.apply(zone, &ops).await?;
        Ok(vec![Published::default(); records.len()])
    }

    async fn remove_batch(&self, zone: &str, records: &[Record]) -> Result<(), ProviderError> {
        let ops: Vec<(Op, &Record)> = records.iter().map(|r| (Op::Remove, r)).collect();
        self.apply(zone, &ops).await
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        let what = "checking the API key and server_id";
        let first = self.zones.first().cloned().unwrap_or_default();
        let answer = self.get(&self.url(&[]), what).await.map_err(|f| from_failure(f, what))?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(err_config(format!(
                "server_id {:?} is unknown to the API at {} (HTTP 404 {}): PowerDNS Authoritative uses \"localhost\"",
                self.server_id,
                self.api_url,
                detail(&answer)
            )));
        }
        if !answer.status.is_success() {
            return Err(api_error(&answer, &first, what));
        }
        for zone in &self.zones {
            let probe = BTreeSet::from([format!("_dnsauth.{zone}")]);
            self.read_names(zone, &probe).await?;
            debug!(zone = %zone, "powerdns preflight ok");
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let (zone, name) = check_owner(KIND, &self.zones, zone, name)?;
        let states = self.read_names(&zone, &BTreeSet::from([name.clone()])).await?;
        Ok(states[&name]
            .get(rtype.as_str())
            .map(|s| s.records.iter().filter(|r| !r.disabled).map(|r| decode_value(rtype, &r.content)).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rtype: &str, ttl: u32, contents: &[(&str, bool)]) -> NameState {
        let mut s = NameState::new();
        s.insert(
            rtype.to_string(),
            RrSet { ttl, records: contents.iter().map(|(c, d)| Rr { content: c.to_string(), disabled: *d }).collect() },
        );
        s
    }

    #[test]
    fn merge_keeps_foreign_values_and_their_flags() {
        let ours = Record::txt("_dnsauth.example.com", "tok");
        let st = state("TXT", 300, &[("\"foreign\"", false), ("\"parked\"", true)]);
        let change =
            PowerDnsProvider::plan("example.com", "_dnsauth.example.com", RecordType::Txt, &[(Op::Add, &ours)], &st)
                .expect("no conflict")
                .expect("a change");
        assert_eq!(
            change,
            json!({"name": "_dnsauth.example.com.", "type": "TXT", "ttl": 60, "changetype": "REPLACE", "records": [
                {"content": "\"foreign\"", "disabled": false},
                {"content": "\"parked\"", "disabled": true},
                {"content": "\"tok\"", "disabled": false},
            ]})
        );
        // publishing again changes nothing
        let st = state("TXT", 60, &[("\"foreign\"", false), ("\"tok\"", false)]);
        assert!(
            PowerDnsProvider::plan("example.com", "_dnsauth.example.com", RecordType::Txt, &[(Op::Add, &ours)], &st)
                .expect("ok")
                .is_none()
        );
        // removing the last value deletes the RRset
        let st = state("TXT", 60, &[("tok", false)]);
        let change =
            PowerDnsProvider::plan("example.com", "_dnsauth.example.com", RecordType::Txt, &[(Op::Remove, &ours)], &st)
                .expect("ok")
                .expect("a change");
        assert_eq!(change, json!({"name": "_dnsauth.example.com.", "type": "TXT", "changetype": "DELETE"}));
        // removing an absent value changes nothing
        assert!(
            PowerDnsProvider::plan(
                "example.com",
                "_dnsauth.example.com",
                RecordType::Txt,
                &[(Op::Remove, &ours)],
                &NameState::new()
            )
            .expect("ok")
            .is_none()
        );
    }

    #[test]
    fn cname_conflicts_are_refused() {
        let cname = Record::cname("_dnsauth.example.com", "x.dcv.digicert.com");
        let st = state("TXT", 60, &[("\"v\"", false)]);
        let err =
            PowerDnsProvider::plan("example.com", "_dnsauth.example.com", RecordType::Cname, &[(Op::Add, &cname)], &st)
                .expect_err("conflict");
        assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().starts_with("powerdns: "), "{err}");
        let st = state("CNAME", 60, &[("other.dcv.digicert.com.", false)]);
        assert!(
            PowerDnsProvider::plan("example.com", "_dnsauth.example.com", RecordType::Cname, &[(Op::Add, &cname)], &st)
                .is_err()
        );
        let st = state("CNAME", 60, &[("x.dcv.digicert.com.", false)]);
        assert!(
            PowerDnsProvider::plan("example.com", "_dnsauth.example.com", RecordType::Cname, &[(Op::Add, &cname)], &st)
                .expect("same target")
                .is_none()
        );
    }

    #[test]
    fn settings_are_checked_and_debug_hides_the_key() {
        let s = PowerDnsSettings::new(
            "http://127.0.0.1:8081",
            "pdns-key-4711".to_string().into(),
            vec!["example.com".into()],
        );
        assert!(!format!("{s:?}").contains("pdns-key-4711"));
        let p = PowerDnsProvider::new(s.clone()).expect("provider");
        assert!(!format!("{p:?}").contains("pdns-key-4711"));
        assert_eq!(
            p.url(&["zones", "example.com."]),
            "http://127.0.0.1:8081/api/v1/servers/localhost/zones/example.com."
        );
        let p =
            PowerDnsProvider::new(PowerDnsSettings { api_url: "http://127.0.0.1:8081/api/v1/".into(), ..s.clone() })
                .expect("provider");
        assert_eq!(p.api_root, "http://127.0.0.1:8081/api/v1");
        let err =
            PowerDnsProvider::new(PowerDnsSettings { api_url: "http://pdns.example.net:8081".into(), ..s.clone() })
                .expect_err("plain http to a remote host");
        assert!(err.to_string().starts_with("powerdns: api_url"), "{err}");
        assert!(PowerDnsProvider::new(PowerDnsSettings { api_key: String::new().into(), ..s.clone() }).is_err());
        assert!(PowerDnsProvider::new(PowerDnsSettings { zones: vec![], ..s }).is_err());
    }
}
