//! Cloudflare adapter over the v4 API with a scoped API token.
//!
//! Cloudflare stores one record per TXT value, so publishing adds a record and removing deletes
//! the records holding exactly our value; other values at the name are other records and are
//! never touched. TXT content is sent as quoted RFC 1035 strings (what Cloudflare's API documents;
//! it splits strings longer than 255 bytes itself) and read back whether quoted or not. "Record
//! already exists" (81057/81058) counts as success, so publishing is idempotent even when two
//! instances race. The token needs Zone:Zone:Read and Zone:DNS:Edit on every zone.

mod api;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::json;
use tracing::{debug, info};

use self::api::{Api, ApiError, DnsRecord, TokenStatus, ZoneInfo};
use crate::locks::NameLocks;
use crate::rrset::{decode_value, same_value};
use crate::txt;
use crate::{DnsProvider, ProviderError, Published, Record, RecordType, normalize_name};

const KIND: &str = "cloudflare";
/// Records per list page (Cloudflare's default; it allows more, pagination handles any size).
const PER_PAGE: u32 = 100;
/// Cloudflare's shortest TTL outside Enterprise plans.
const MIN_TTL: u32 = 60;

/// The default API root.
pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";

/// Settings of one Cloudflare provider instance.
#[derive(Debug, Clone)]
pub struct CloudflareSettings {
    /// Zones served (absolute, no trailing dot).
    pub zones: Vec<String>,
    /// A scoped API token (Zone:Zone:Read + Zone:DNS:Edit).
    pub api_token: SecretString,
    /// API root, [`DEFAULT_BASE_URL`] unless testing (plain http only to loopback).
    pub base_url: String,
    /// Zone ids known in advance (zone name -> id); others are looked up by name.
    pub zone_ids: BTreeMap<String, String>,
    /// Awaited before every API request: the account's client-side rate limit (shared).
    pub gate: Option<crate::SharedGate>,
}

impl CloudflareSettings {
    /// Settings for `zones` with the default API root and zone lookup by name.
    pub fn new(zones: Vec<String>, api_token: SecretString) -> Self {
        Self { zones, api_token, base_url: DEFAULT_BASE_URL.to_string(), zone_ids: BTreeMap::new(), gate: None }
    }
}

/// The permission a call needs, named as Cloudflare's token editor names it.
#[derive(Debug, Clone, Copy)]
enum Need {
    ZoneRead,
    DnsRead,
    DnsEdit,
}

impl Need {
    fn as_str(self) -> &'static str {
        match self {
            Self::ZoneRead => "Zone:Zone:Read",
            Self::DnsRead => "Zone:DNS:Read",
            Self::DnsEdit => "Zone:DNS:Edit",
        }
    }
}

/// Codes meaning "this token is not valid at all" (as opposed to "valid, but not allowed").
const INVALID_TOKEN_CODES: &[i64] = &[1000, 1001, 6003, 6111, 9103, 9106, 9109];
const AUTH_CODES: &[i64] = &[10000, 9109, 1000, 1001, 6003, 6111, 9103, 9106];
const ALREADY_EXISTS: &[i64] = &[81057, 81058];
const CNAME_CONFLICT: &[i64] = &[81053, 81054];
const RECORD_MISSING: &[i64] = &[81044];

/// Turns an API failure into the adapter's error, naming the permission the call needed.
fn map_err(err: ApiError, zone: &str, need: Need, what: &str) -> ProviderError {
    match &err {
        ApiError::Throttled { retry_after } => ProviderError::Throttled {
            provider: KIND,
            message: format!("{what} in zone {zone}: still rate limited after retries ({})", err.describe()),
            retry_after: *retry_after,
        },
        ApiError::Transient(m) => {
            ProviderError::Transient { provider: KIND, message: format!("{what} in zone {zone}: {m}") }
        }
        ApiError::Api { status, errors } => {
            if err.has_code(INVALID_TOKEN_CODES) || *status == StatusCode::UNAUTHORIZED {
                ProviderError::Auth {
                    provider: KIND,
                    message: format!(
                        "the API token was rejected as invalid ({}): create a token with Zone:Zone:Read and Zone:DNS:Edit on {zone} and store it in the provider's api_token_file",
                        err.describe()
                    ),
                }
            } else if err.has_code(AUTH_CODES) || *status == StatusCode::FORBIDDEN {
                ProviderError::Auth {
                    provider: KIND,
                    message: format!(
                        "token lacks {} on {zone}: add that permission for the zone to the API token (Cloudflare said: {})",
                        need.as_str(),
                        err.describe()
                    ),
                }
            } else {
                ProviderError::Rejected {
                    provider: KIND,
                    code: errors.first().map(|e| e.code.to_string()),
                    message: format!("{what} in zone {zone} rejected: {}", err.describe()),
                }
            }
        }
    }
}

/// The Cloudflare adapter.
pub struct CloudflareProvider {
    api: Api,
    zones: Vec<String>,
    base_url: String,
    zone_ids: Mutex<HashMap<String, String>>,
    locks: NameLocks,
}

impl fmt::Debug for CloudflareProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudflareProvider")
            .field("zones", &self.zones)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

/// Checks the scheme; returns whether the host is loopback.
fn check_base_url(base_url: &str) -> Result<bool, ProviderError> {
    let url =
        reqwest::Url::parse(base_url).map_err(|e| err_config(format!("base_url {base_url:?} is not a URL: {e}")))?;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(loopback),
        "http" if loopback => Ok(true),
        _ => Err(err_config(format!(
            "base_url {base_url:?} must use https (plain http is only allowed to loopback test servers)"
        ))),
    }
}

impl CloudflareProvider {
    /// Validates the settings; no network call (see [`DnsProvider::preflight`]).
    pub fn new(settings: CloudflareSettings) -> Result<Self, ProviderError> {
        use secrecy::ExposeSecret;
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(err_config("no zones configured: list the zones this token manages in `zones`"));
        }
        let token = settings.api_token.expose_secret();
        if token.trim().is_empty() {
            return Err(err_config("the API token is empty: put the token in the file named by api_token_file"));
        }
        if token.trim() != token || token.chars().any(char::is_control) {
            return Err(err_config(
                "the API token contains whitespace or control characters: store only the token in its file",
            ));
        }
        let loopback = check_base_url(&settings.base_url)?;
        let api = Api::new(&settings.base_url, settings.api_token.clone(), loopback)
            .map_err(err_config)?
            .with_gate(settings.gate.clone());
        let zone_ids = settings.zone_ids.iter().map(|(z, id)| (normalize_name(z), id.trim().to_string())).collect();
        Ok(Self { api, zones, base_url: settings.base_url, zone_ids: Mutex::new(zone_ids), locks: NameLocks::new() })
    }

    /// The zone id of `zone`: configured, cached, or `GET /zones?name=`.
    async fn zone_id(&self, zone: &str) -> Result<String, ProviderError> {
        let zone = normalize_name(zone);
        if !self.zones.contains(&zone) {
            return Err(err_config(format!(
                "zone {zone} is not configured for this provider (configured: {})",
                self.zones.join(", ")
            )));
        }
        if let Some(id) = self.zone_ids.lock().expect("zone cache lock").get(&zone) {
            return Ok(id.clone());
        }
        let (found, _) = self
            .api
            .request::<Vec<ZoneInfo>>(Method::GET, "/zones", &[("name", zone.clone())], None)
            .await
            .map_err(|e| map_err(e, &zone, Need::ZoneRead, "looking up the zone"))?;
        let Some(z) = found.into_iter().find(|z| normalize_name(&z.name) == zone) else {
            return Err(ProviderError::ZoneNotFound {
                provider: KIND,
                zone,
                message: "the token sees no zone of this name: add the zone to the token's Zone Resources (Zone:Zone:Read), or fix `zones`".into(),
            });
        };
        self.zone_ids.lock().expect("zone cache lock").insert(zone, z.id.clone());
        Ok(z.id)
    }

    /// Every record at `name` (of `rtype`, or of any type), across all pages.
    async fn records_at(
        &self,
        zone: &str,
        zone_id: &str,
        name: &str,
        rtype: Option<RecordType>,
    ) -> Result<Vec<DnsRecord>, ProviderError> {
        let path = format!("/zones/{zone_id}/dns_records");
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let mut query =
                vec![("name", name.to_string()), ("page", page.to_string()), ("per_page", PER_PAGE.to_string())];
            if let Some(t) = rtype {
                query.push(("type", t.as_str().to_string()));
            }
            let (records, info) = self
                .api
                .request::<Vec<DnsRecord>>(Method::GET, &path, &query, None)
                .await
                .map_err(|e| map_err(e, zone, Need::DnsRead, "listing records"))?;
            let got = records.len();
            out.extend(records.into_iter().filter(|r| normalize_name(&r.name) == name));
            let more = match info.and_then(|i| i.total_pages.map(|t| (i.page.max(page), t))) {
                Some((current, total)) => current < total,
                None => got as u32 >= PER_PAGE,
            };
            if !more || got == 0 {
                return Ok(out);
            }
            page += 1;
        }
    }

    fn check_conflicts(zone: &str, record: &Record, existing: &[DnsRecord]) -> Result<(), ProviderError> {
        let name = &record.name;
        match record.rtype {
            RecordType::Cname => {
                if let Some(other) = existing.iter().find(|r| !r.rtype.eq_ignore_ascii_case("CNAME")) {
                    return Err(ProviderError::Conflict {
                        provider: KIND,
                        message: format!(
                            "cannot publish CNAME at {name}: a {} record already exists there (zone {zone}); a CNAME cannot share its name: remove it or use the TXT method",
                            other.rtype
                        ),
                    });
                }
                if let Some(cname) = existing.iter().find(|r| !same_value(RecordType::Cname, &r.content, &record.value))
                {
                    return Err(ProviderError::Conflict {
                        provider: KIND,
                        message: format!(
                            "cannot publish CNAME {name} -> {}: it already points to {} (zone {zone}); remove that CNAME first",
                            record.value,
                            normalize_name(&cname.content)
                        ),
                    });
                }
            }
            RecordType::Txt => {
                if existing.iter().any(|r| r.rtype.eq_ignore_ascii_case("CNAME")) {
                    return Err(ProviderError::Conflict {
                        provider: KIND,
                        message: format!(
                            "cannot publish TXT at {name}: the name is a CNAME (zone {zone}); publish at the CNAME's target instead"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl DnsProvider for CloudflareProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        let zone = normalize_name(zone);
        let zone_id = self.zone_id(&zone).await?;
        let name = normalize_name(&record.name);
        let _guard = self.locks.lock(&format!("{zone}|{name}|{}", record.rtype)).await;

        let existing = self.records_at(&zone, &zone_id, &name, None).await?;
        Self::check_conflicts(&zone, record, &existing)?;
        if let Some(r) = existing.iter().find(|r| {
            r.rtype.eq_ignore_ascii_case(record.rtype.as_str()) && same_value(record.rtype, &r.content, &record.value)
        }) {
            debug!(zone = %zone, record = %record, id = %r.id, "cloudflare record already present");
            return Ok(Published { provider_id: Some(r.id.clone()), change_id: None });
        }
        let content = match record.rtype {
            RecordType::Txt => txt::quote(&record.value),
            RecordType::Cname => normalize_name(&record.value),
        };
        let mut body = json!({
            "type": record.rtype.as_str(),
            "name": name,
            "content": content,
            "ttl": record.ttl.max(MIN_TTL),
            "comment": "dcvd: DigiCert domain control validation",
        });
        if record.rtype == RecordType::Cname {
            // DCV needs the CNAME visible in DNS, not hidden behind Cloudflare's proxy
            body["proxied"] = json!(false);
        }
        let path = format!("/zones/{zone_id}/dns_records");
        match self.api.request::<DnsRecord>(Method::POST, &path, &[], Some(&body)).await {
            Ok((created, _)) => {
                info!(zone = %zone, record = %record, id = %created.id, "cloudflare record created");
                Ok(Published { provider_id: Some(created.id), change_id: None })
            }
            Err(e) if e.has_code(ALREADY_EXISTS) => {
                // another instance created it meanwhile: find its id
                let again = self.records_at(&zone, &zone_id, &name, Some(record.rtype)).await?;
                let id = again.into_iter().find(|r| same_value(record.rtype, &r.content, &record.value)).map(|r| r.id);
                debug!(zone = %zone, record = %record, "cloudflare record already existed");
                Ok(Published { provider_id: id, change_id: None })
            }
            Err(e) if e.has_code(CNAME_CONFLICT) => Err(ProviderError::Conflict {
                provider: KIND,
                message: format!(
                    "cannot publish {record} in zone {zone}: {}; a CNAME cannot share its name with other records",
                    e.describe()
                ),
            }),
            Err(e) => Err(map_err(e, &zone, Need::DnsEdit, "creating a record")),
        }
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        let zone = normalize_name(zone);
        let zone_id = self.zone_id(&zone).await?;
        let name = normalize_name(&record.name);
        let _guard = self.locks.lock(&format!("{zone}|{name}|{}", record.rtype)).await;

        let existing = self.records_at(&zone, &zone_id, &name, Some(record.rtype)).await?;
        for r in existing.iter().filter(|r| same_value(record.rtype, &r.content, &record.value)) {
            let path = format!("/zones/{zone_id}/dns_records/{}", r.id);
            match self.api.request::<serde_json::Value>(Method::DELETE, &path, &[], None).await {
                Ok(_) => {
                    info!(zone = %zone, record = %record, id = %r.id, "cloudflare record deleted")
                }
                Err(e)
                    if e.has_code(RECORD_MISSING)
                        || matches!(e, ApiError::Api { status: StatusCode::NOT_FOUND, .. }) =>
                {
                    debug!(zone = %zone, id = %r.id, "cloudflare record already gone");
                }
                Err(e) => return Err(map_err(e, &zone, Need::DnsEdit, "deleting a record")),
            }
        }
        Ok(())
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        let first = self.zones.first().cloned().unwrap_or_default();
        let (status, _) = self
            .api
            .request::<TokenStatus>(Method::GET, "/user/tokens/verify", &[], None)
            .await
            .map_err(|e| map_err(e, &first, Need::ZoneRead, "verifying the token"))?;
        if status.status != "active" {
            return Err(ProviderError::Auth {
                provider: KIND,
                message: format!(
                    "the API token is {:?}, not active: enable it or create a new one in the Cloudflare dashboard",
                    status.status
                ),
            });
        }
        for zone in &self.zones {
            let zone_id = self.zone_id(zone).await?;
            let query =
                [("type", "TXT".to_string()), ("name", format!("_dnsauth.{zone}")), ("per_page", "5".to_string())];
            self.api
                .request::<Vec<DnsRecord>>(Method::GET, &format!("/zones/{zone_id}/dns_records"), &query, None)
                .await
                .map_err(|e| map_err(e, zone, Need::DnsRead, "listing records"))?;
            debug!(zone = %zone, zone_id = %zone_id, "cloudflare preflight ok");
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let zone = normalize_name(zone);
        let zone_id = self.zone_id(&zone).await?;
        let records = self.records_at(&zone, &zone_id, &normalize_name(name), Some(rtype)).await?;
        Ok(records.iter().map(|r| decode_value(rtype, &r.content)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_quoted_or_not() {
        assert!(same_value(RecordType::Txt, "\"tok\"", "tok"));
        assert!(same_value(RecordType::Txt, "tok", "tok"));
        assert!(!same_value(RecordType::Txt, "\"tok2\"", "tok"));
        assert!(same_value(RecordType::Cname, "a.dcv.digicert.com.", "a.dcv.digicert.com"));
    }

    #[test]
    fn base_url_must_be_https_except_loopback() {
        assert!(check_base_url(DEFAULT_BASE_URL).is_ok());
        assert!(check_base_url("http://127.0.0.1:8788/client/v4").is_ok());
        assert!(check_base_url("http://api.cloudflare.com/client/v4").is_err());
    }

    #[test]
    fn settings_debug_hides_the_token() {
        let s = CloudflareSettings::new(vec!["example.com".into()], "tok-secret-123".to_string().into());
        assert!(!format!("{s:?}").contains("tok-secret-123"));
        let p = CloudflareProvider::new(s).expect("provider");
        assert!(!format!("{p:?}").contains("tok-secret-123"));
    }
}
