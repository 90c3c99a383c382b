//! Azure DNS adapter over Azure Resource Manager's record-set API (`api-version=2018-05-01`).
//!
//! Azure keeps all TXT values of a name in one *record set* that is written whole (PUT), so a
//! value is merged read-modify-write with optimistic concurrency: read the record set and its
//! `etag`, PUT the merged set with `If-Match: <etag>` (or `If-None-Match: *` when creating it),
//! and on `412 Precondition Failed` (another writer got there first) read again and retry, a
//! bounded number of times. Removing drops only our value and DELETEs the record set (also with
//! `If-Match`) when ours was the last one. Everything else in the record set (other values,
//! metadata) is sent back unchanged. An in-process lock per (zone, name, type) avoids racing
//! ourselves; the etags protect against every other writer.
//!
//! Batches: Azure has no multi-record-set write. [`DnsProvider::publish_batch`] reads every
//! record set of the type with one list call, then writes each *owner name* once (all values for
//! that name merged into one PUT), so a batch costs 1 list + one PUT per distinct name (plus a
//! token request when the cached token is stale). A PUT that loses a race falls back to the
//! single-record path.
//!
//! Credentials: see [`auth`]; the identity needs the built-in role "DNS Zone Contributor" on each
//! zone (or on its resource group). Errors start with `azure:`. The adapter must never write a
//! record set without a precondition (an unconditional PUT could drop another writer's value),
//! nor delete one that still holds values other than ours.

mod api;
pub mod auth;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use tracing::{debug, info};

use self::api::{ApiError, Arm, CnameRecord, Http, Precondition, RecordSet, RecordSetProperties, TxtRecord};
use self::auth::TokenSource;
pub use self::auth::{AzureCredential, DEFAULT_AUTHORITY_URL, DEFAULT_IMDS_URL};
use crate::locks::NameLocks;
use crate::{DnsProvider, ProviderError, Published, Record, RecordType, check_owner, normalize_name};

const KIND: &str = "azure";
/// Azure Resource Manager in Azure's public cloud.
pub const DEFAULT_MANAGEMENT_URL: &str = "https://management.azure.com";
/// How often a merge is redone from a fresh read after a `412 Precondition Failed`.
const MAX_RACE_ATTEMPTS: u32 = 10;
/// The longest character string of a TXT record (RFC 1035); longer values are split.
const MAX_TXT_STRING: usize = 255;
/// The role that covers every call the adapter makes.
const ROLE: &str = "\"DNS Zone Contributor\" on the zone (or its resource group)";

/// Settings of one Azure DNS provider instance.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// Zones served (absolute, no trailing dot); all in `resource_group`.
    pub zones: Vec<String>,
    /// The subscription holding the zones.
    pub subscription_id: String,
    /// The resource group holding the zones.
    pub resource_group: String,
    /// How to get tokens.
    pub credential: AzureCredential,
    /// ARM root, [`DEFAULT_MANAGEMENT_URL`] unless testing or in a sovereign cloud; the token
    /// audience is derived from it.
    pub management_url: String,
    /// Entra ID authority host, [`DEFAULT_AUTHORITY_URL`] unless testing or in a sovereign cloud.
    pub authority_url: String,
    /// IMDS token endpoint, [`DEFAULT_IMDS_URL`] unless testing.
    pub imds_url: String,
    /// Awaited before every API request: the account's client-side rate limit (shared).
    pub gate: Option<crate::SharedGate>,
}

impl AzureSettings {
    /// Settings with Azure's public-cloud endpoints.
    pub fn new(
        zones: Vec<String>,
        subscription_id: impl Into<String>,
        resource_group: impl Into<String>,
        credential: AzureCredential,
    ) -> Self {
        Self {
            zones,
            subscription_id: subscription_id.into(),
            resource_group: resource_group.into(),
            credential,
            management_url: DEFAULT_MANAGEMENT_URL.to_string(),
            authority_url: DEFAULT_AUTHORITY_URL.to_string(),
            imds_url: DEFAULT_IMDS_URL.to_string(),
            gate: None,
        }
    }
}

/// The Azure DNS adapter.
pub struct AzureProvider {
    inner: Arc<Inner>,
}

struct Inner {
    arm: Arm,
    zones: Vec<String>,
    subscription_id: String,
    resource_group: String,
    locks: NameLocks,
}

impl fmt::Debug for AzureProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureProvider").field("zones", &self.inner.zones).field("arm", &self.inner.arm).finish()
    }
}

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

/// Checks the scheme of an endpoint; returns whether its host is loopback. `imds` allows the
/// link-local IMDS address over http (IMDS has no https).
fn check_url(key: &str, url: &str, imds: bool) -> Result<bool, ProviderError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| err_config(format!("{key} {url:?} is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let ip = host.parse::<std::net::IpAddr>().ok();
    let loopback = host == "localhost" || ip.is_some_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(loopback),
        "http" if loopback => Ok(true),
        "http" if imds && ip == Some(std::net::IpAddr::from([169, 254, 169, 254])) => Ok(false),
        _ => Err(err_config(format!(
            "{key} {url:?} must use https (plain http is only allowed to loopback test servers{})",
            if imds { " and to IMDS at 169.254.169.254" } else { "" }
        ))),
    }
}

/// The record set name relative to `zone` (`@` at the apex). `name` is inside `zone`.
fn relative(name: &str, zone: &str) -> String {
    match crate::relative_name(name, zone) {
        Some("") => "@".to_string(),
        Some(relative) => relative.to_string(),
        None => name.to_string(),
    }
}

/// A TXT value as Azure's string list: chunks of at most 255 bytes, never inside a character.
fn txt_chunks(value: &str) -> Vec<String> {
    let mut chunks = vec![String::new()];
    for ch in value.chars() {
        let last = chunks.last_mut().expect("one chunk");
        if last.len() + ch.len_utf8() > MAX_TXT_STRING {
            chunks.push(String::new());
        }
        chunks.last_mut().expect("one chunk").push(ch);
    }
    chunks
}

fn txt_value(record: &TxtRecord) -> String {
    record.value.concat()
}

fn txt_values(set: &RecordSet) -> Vec<String> {
    set.properties.txt_records.iter().flatten().map(txt_value).collect()
}

fn cname_target(set: &RecordSet) -> Option<String> {
    set.properties.cname_record.as_ref().map(|c| normalize_name(&c.cname)).filter(|c| !c.is_empty())
}

/// What a merge wants written.
enum Write {
    /// Nothing to do: the record set already says what we want.
    Nothing,
    /// PUT these properties under this condition.
    Put(RecordSetProperties, Precondition),
    /// DELETE the record set if it still has this etag.
    Delete(String),
}

/// Adds `values` (all of one name) to the TXT record set `current`.
fn add_txt(current: Option<&RecordSet>, values: &[&Record]) -> Write {
    let ttl = values.iter().map(|r| r.ttl).min().unwrap_or(60);
    match current {
        None => {
            let mut metadata = serde_json::Map::new();
            metadata.insert("managedBy".into(), "dcvd".into());
            let mut txt: Vec<TxtRecord> = Vec::new();
            for r in values {
                if !txt.iter().any(|t| txt_value(t) == r.value) {
                    txt.push(TxtRecord { value: txt_chunks(&r.value) });
                }
            }
            let mut other = serde_json::Map::new();
            other.insert("metadata".into(), metadata.into());
            Write::Put(
                RecordSetProperties { ttl: Some(ttl), txt_records: Some(txt), cname_record: None, other },
                Precondition::Absent,
            )
        }
        Some(set) => {
            let mut props = set.properties.clone().for_write();
            let txt = props.txt_records.get_or_insert_with(Vec::new);
            let before = txt.len();
            for r in values {
                if !txt.iter().any(|t| txt_value(t) == r.value) {
                    txt.push(TxtRecord { value: txt_chunks(&r.value) });
                }
            }
            if txt.len() == before {
                return Write::Nothing;
            }
            // Keep the lower TTL, so resolvers do not cache the set without our value for long.
            props.ttl = Some(props.ttl.map_or(ttl, |t| t.min(ttl)));
            Write::Put(props, etag_condition(set))
        }
    }
}

/// Removes `values` (all of one name) from the TXT record set `current`.
fn remove_txt(current: Option<&RecordSet>, values: &[&Record]) -> Write {
    let Some(set) = current else { return Write::Nothing };
    let mut props = set.properties.clone().for_write();
    let txt = props.txt_records.get_or_insert_with(Vec::new);
    let before = txt.len();
    txt.retain(|t| !values.iter().any(|r| txt_value(t) == r.value));
    if txt.len() == before {
        Write::Nothing
    } else if txt.is_empty() {
        Write::Delete(set.etag.clone().unwrap_or_default())
    } else {
        Write::Put(props, etag_condition(set))
    }
}

fn etag_condition(set: &RecordSet) -> Precondition {
    // A record set always has an etag; without one, a PUT that must not create is the safest.
    set.etag.clone().map_or(Precondition::Absent, Precondition::Matches)
}

/// Turns an API failure into the adapter's error, naming what to fix.
fn map_err(inner: &Inner, err: ApiError, zone: &str, what: &str) -> ProviderError {
    match err {
        ApiError::Throttled { retry_after } => ProviderError::Throttled {
            provider: KIND,
            message: format!("{what} in zone {zone}: still rate limited by Azure Resource Manager after retries"),
            retry_after,
        },
        ApiError::Transient(m) => {
            ProviderError::Transient { provider: KIND, message: format!("{what} in zone {zone}: {m}") }
        }
        ApiError::Credential { message } => ProviderError::Auth { provider: KIND, message },
        ref e @ ApiError::Api { status, ref code, .. } => {
            let said = e.describe();
            if status == StatusCode::UNAUTHORIZED {
                ProviderError::Auth {
                    provider: KIND,
                    message: format!(
                        "Azure Resource Manager refused the access token ({said}): check that the \
                         credential belongs to the tenant of subscription {}",
                        inner.subscription_id
                    ),
                }
            } else if status == StatusCode::FORBIDDEN {
                ProviderError::Auth {
                    provider: KIND,
                    message: format!(
                        "the identity may not do {what} in zone {zone} ({said}): assign it the role {ROLE}"
                    ),
                }
            } else if status == StatusCode::NOT_FOUND
                && matches!(
                    code.as_str(),
                    "ResourceNotFound" | "ResourceGroupNotFound" | "ParentResourceNotFound" | "SubscriptionNotFound"
                )
            {
                ProviderError::ZoneNotFound {
                    provider: KIND,
                    zone: zone.to_string(),
                    message: format!(
                        "no such DNS zone in resource group {} of subscription {} ({said}): check \
                         `subscription_id`, `resource_group` and `zones`",
                        inner.resource_group, inner.subscription_id
                    ),
                }
            } else if status == StatusCode::CONFLICT {
                ProviderError::Conflict {
                    provider: KIND,
                    message: format!("{what} in zone {zone}: {said}; a CNAME cannot share its name with other records"),
                }
            } else {
                ProviderError::Rejected {
                    provider: KIND,
                    code: (!code.is_empty()).then(|| code.clone()),
                    message: format!("{what} in zone {zone} rejected: {said}"),
                }
            }
        }
    }
}

fn is_precondition_failed(e: &ApiError) -> bool {
    e.status() == Some(StatusCode::PRECONDITION_FAILED)
}

impl AzureProvider {
    /// Validates the settings; no network call (see [`DnsProvider::preflight`]).
    pub fn new(settings: AzureSettings) -> Result<Self, ProviderError> {
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(err_config("no zones configured: list the Azure DNS zones of the resource group in `zones`"));
        }
        for (key, value) in
            [("subscription_id", &settings.subscription_id), ("resource_group", &settings.resource_group)]
        {
            if value.trim().is_empty() || value.contains('/') {
                return Err(err_config(format!(
                    "`{key}` {value:?} is empty or contains '/': give the bare id or name"
                )));
            }
        }
        match &settings.credential {
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret } => {
                use secrecy::ExposeSecret as _;
                if tenant_id.trim().is_empty() || client_id.trim().is_empty() {
                    return Err(err_config("the client secret credential needs `tenant_id` and `client_id`"));
                }
                if client_secret.expose_secret().trim().is_empty() {
                    return Err(err_config(
                        "the client secret is empty: put it in the file named by client_secret_file",
                    ));
                }
            }
            AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file } => {
                if tenant_id.trim().is_empty() || client_id.trim().is_empty() || token_file.as_os_str().is_empty() {
                    return Err(err_config(
                        "workload identity needs `tenant_id`, `client_id` and `federated_token_file` (or \
                         AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE)",
                    ));
                }
            }
            AzureCredential::ManagedIdentity { .. } => {}
        }
        let management_loopback = check_url("management_url", &settings.management_url, false)?;
        let authority_loopback = check_url("authority_url", &settings.authority_url, false)?;
        check_url("imds_url", &settings.imds_url, true)?;
        // No proxy when the endpoints are local test servers; IMDS never goes through one.
        let direct = management_loopback && authority_loopback;
        let http = Http::new(direct).map_err(err_config)?.with_gate(settings.gate.clone());
        let tokens = Arc::new(TokenSource::new(
            http.clone(),
            settings.credential,
            &settings.authority_url,
            &settings.imds_url,
            &settings.management_url,
        ));
        let arm = Arm::new(http, &settings.management_url, &settings.subscription_id, &settings.resource_group, tokens);
        Ok(Self {
            inner: Arc::new(Inner {
                arm,
                zones,
                subscription_id: settings.subscription_id,
                resource_group: settings.resource_group,
                locks: NameLocks::new(),
            }),
        })
    }

    /// The credential kind in use (`client_secret`, `managed_identity`, `workload_identity`).
    pub fn credential_kind(&self) -> &'static str {
        self.inner.arm.tokens().credential().kind()
    }
}

impl Inner {
    fn owner(&self, zone: &str, name: &str) -> Result<(String, String), ProviderError> {
        check_owner(KIND, &self.zones, zone, name)
    }

    /// Applies `write` to the record set `rel` of `rtype`; `Ok(false)` when another writer
    /// changed it first (412) and the caller must read again.
    async fn apply(
        &self,
        zone: &str,
        rtype: RecordType,
        rel: &str,
        write: Write,
        what: &str,
    ) -> Result<bool, ProviderError> {
        let t = rtype.as_str();
        let result = match write {
            Write::Nothing => return Ok(true),
            Write::Put(props, cond) => self.arm.put(zone, t, rel, &props, &cond).await.map(|_| ()),
            Write::Delete(etag) => self.arm.delete(zone, t, rel, &etag).await,
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if is_precondition_failed(&e) => {
                debug!(zone, name = rel, rtype = t, "azure record set changed meanwhile (412), reading it again");
                Ok(false)
            }
            Err(e) => Err(map_err(self, e, zone, what)),
        }
    }

    /// Read-modify-write of one name's record set until it sticks (bounded).
    async fn merge(
        &self,
        zone: &str,
        name: &str,
        rtype: RecordType,
        what: &str,
        decide: impl Fn(Option<&RecordSet>) -> Result<Write, ProviderError>,
    ) -> Result<(), ProviderError> {
        let rel = relative(name, zone);
        let _guard = self.locks.lock(&format!("{zone}|{name}|{rtype}")).await;
        for _ in 0..MAX_RACE_ATTEMPTS {
            let current = self
                .arm
                .get(zone, rtype.as_str(), &rel)
                .await
                .map_err(|e| map_err(self, e, zone, "reading a record set"))?;
            let write = decide(current.as_ref())?;
            if self.apply(zone, rtype, &rel, write, what).await? {
                return Ok(());
            }
        }
        Err(ProviderError::Transient {
            provider: KIND,
            message: format!(
                "{what} at {name} in zone {zone}: the record set kept changing under us \
                 ({MAX_RACE_ATTEMPTS} etag conflicts in a row); another tool is writing it constantly"
            ),
        })
    }

    fn cname_decision(zone: &str, record: &Record, current: Option<&RecordSet>) -> Result<Write, ProviderError> {
        match current.and_then(|s| cname_target(s).map(|t| (s, t))) {
            Some((_, target)) if target == normalize_name(&record.value) => Ok(Write::Nothing),
            Some((_, target)) => Err(ProviderError::Conflict {
                provider: KIND,
                message: format!(
                    "cannot publish CNAME {} -> {}: it already points to {target} (zone {zone}); remove that CNAME first",
                    record.name, record.value
                ),
            }),
            None => {
                let mut other = serde_json::Map::new();
                other.insert("metadata".into(), serde_json::json!({"managedBy": "dcvd"}));
                let props = RecordSetProperties {
                    ttl: Some(record.ttl),
                    txt_records: None,
                    cname_record: Some(CnameRecord { cname: normalize_name(&record.value) }),
                    other,
                };
                Ok(Write::Put(props, Precondition::Absent))
            }
        }
    }

    async fn publish_one(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        let (zone, name) = self.owner(zone, &record.name)?;
        match record.rtype {
            RecordType::Txt => {
                self.merge(&zone, &name, RecordType::Txt, "adding a TXT value", |cur| Ok(add_txt(cur, &[record])))
                    .await?
            }
            RecordType::Cname => {
                self.merge(&zone, &name, RecordType::Cname, "creating a CNAME", |cur| {
                    Self::cname_decision(&zone, record, cur)
                })
                .await?
            }
        }
        info!(zone = %zone, record = %record, "azure record published");
        Ok(())
    }

    async fn remove_one(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        let (zone, name) = self.owner(zone, &record.name)?;
        match record.rtype {
            RecordType::Txt => {
                self.merge(&zone, &name, RecordType::Txt, "removing a TXT value", |cur| Ok(remove_txt(cur, &[record])))
                    .await?
            }
            RecordType::Cname => {
                self.merge(&zone, &name, RecordType::Cname, "deleting a CNAME", |cur| {
                    Ok(match cur {
                        Some(set) if cname_target(set).as_deref() == Some(normalize_name(&record.value).as_str()) => {
                            Write::Delete(set.etag.clone().unwrap_or_default())
                        }
                        // absent, or someone else's target: not ours to delete
                        _ => Write::Nothing,
                    })
                })
                .await?
            }
        }
        info!(zone = %zone, record = %record, "azure record removed");
        Ok(())
    }

    /// Publishes (`adding`) or removes many records: one list call per record type, then one
    /// write per owner name, each falling back to [`Self::merge`] when it loses a race.
    async fn batch(self: &Arc<Self>, zone: &str, records: &[Record], adding: bool) -> Result<(), ProviderError> {
        if records.is_empty() {
            return Ok(());
        }
        let zone = normalize_name(zone);
        let mut groups: BTreeMap<(RecordType, String), Vec<Record>> = BTreeMap::new();
        for r in records {
            let (_, name) = self.owner(&zone, &r.name)?;
            groups.entry((r.rtype, name)).or_default().push(r.clone());
        }
        let mut listed: HashMap<RecordType, HashMap<String, RecordSet>> = HashMap::new();
        for rtype in groups.keys().map(|(t, _)| *t).collect::<std::collections::BTreeSet<_>>() {
            let sets = self
                .arm
                .list(&zone, rtype.as_str())
                .await
                .map_err(|e| map_err(self, e, &zone, "listing record sets"))?;
            listed.insert(rtype, sets.into_iter().map(|s| (s.name.to_ascii_lowercase(), s)).collect());
        }
        let mut tasks = tokio::task::JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(BATCH_CONCURRENCY));
        for ((rtype, name), group) in groups {
            let rel = relative(&name, &zone);
            let current = listed.get(&rtype).and_then(|m| m.get(&rel.to_ascii_lowercase())).cloned();
            let (this, zone, limit) = (self.clone(), zone.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                this.batch_group(&zone, &name, rtype, &group, current, adding).await
            });
        }
        let mut first_err = None;
        while let Some(joined) = tasks.join_next().await {
            let result = joined.unwrap_or_else(|e| {
                Err(ProviderError::Transient { provider: KIND, message: format!("a batch task failed: {e}") })
            });
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn batch_group(
        &self,
        zone: &str,
        name: &str,
        rtype: RecordType,
        group: &[Record],
        listed: Option<RecordSet>,
        adding: bool,
    ) -> Result<(), ProviderError> {
        if rtype == RecordType::Cname {
            // A name has one CNAME: the single-record path checks and writes it.
            return self.fallback(zone, group, adding).await;
        }
        let refs: Vec<&Record> = group.iter().collect();
        let rel = relative(name, zone);
        let first_try = {
            let _guard = self.locks.lock(&format!("{zone}|{name}|{rtype}")).await;
            let write = if adding { add_txt(listed.as_ref(), &refs) } else { remove_txt(listed.as_ref(), &refs) };
            self.apply(zone, rtype, &rel, write, if adding { "adding TXT values" } else { "removing TXT values" })
                .await?
        };
        if first_try {
            for r in group {
                info!(zone = %zone, record = %r, "azure record {}", if adding { "published" } else { "removed" });
            }
            Ok(())
        } else {
            self.fallback(zone, group, adding).await
        }
    }

    async fn fallback(&self, zone: &str, group: &[Record], adding: bool) -> Result<(), ProviderError> {
        for r in group {
            if adding {
                self.publish_one(zone, r).await?;
            } else {
                self.remove_one(zone, r).await?;
            }
        }
        Ok(())
    }
}

/// Record-set writes of one batch in flight at once (ARM allows bursts of writes per
/// subscription; a handful in parallel keeps a large batch quick without provoking 429s).
const BATCH_CONCURRENCY: usize = 4;

#[async_trait]
impl DnsProvider for AzureProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.inner.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        self.inner.publish_one(zone, record).await?;
        Ok(Published::default())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        self.inner.remove_one(zone, record).await
    }

    async fn publish_batch(&self, zone: &str, records: &[Record]) -> Result<Vec<Published>, ProviderError> {
        self.inner.batch(zone, records, true).await?;
        Ok(vec![Published::default(); records.len()])
    }

    async fn remove_batch(&self, zone: &str, records: &[Record]) -> Result<(), ProviderError> {
        self.inner.batch(zone, records, false).await
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        for zone in &self.inner.zones {
            self.inner.arm.get_zone(zone).await.map_err(|e| map_err(&self.inner, e, zone, "reading the zone"))?;
            debug!(zone = %zone, "azure preflight ok");
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let (zone, name) = self.inner.owner(zone, name)?;
        let set = self
            .inner
            .arm
            .get(&zone, rtype.as_str(), &relative(&name, &zone))
            .await
            .map_err(|e| map_err(&self.inner, e, &zone, "reading a record set"))?;
        Ok(match (rtype, set) {
            (_, None) => Vec::new(),
            (RecordType::Txt, Some(s)) => txt_values(&s),
            (RecordType::Cname, Some(s)) => cname_target(&s).into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(etag: &str, values: &[&str]) -> RecordSet {
        RecordSet {
            name: "_dnsauth".into(),
            etag: Some(etag.into()),
            properties: RecordSetProperties {
                ttl: Some(3600),
                txt_records: Some(values.iter().map(|v| TxtRecord { value: txt_chunks(v) }).collect()),
                cname_record: None,
                other: serde_json::json!({"metadata": {"owner": "x"}, "fqdn": "_dnsauth.example.com."})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            },
        }
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative("example.com", "example.com"), "@");
        assert_eq!(relative("_dnsauth.www.example.com", "example.com"), "_dnsauth.www");
    }

    #[test]
    fn long_values_are_chunked_at_255_bytes() {
        let v = "é".repeat(200);
        let chunks = txt_chunks(&v);
        assert!(chunks.iter().all(|c| c.len() <= 255));
        assert_eq!(chunks.concat(), v);
        assert_eq!(txt_chunks("abc"), vec!["abc"]);
    }

    #[test]
    fn adding_keeps_foreign_values_metadata_and_the_lower_ttl() {
        let r = Record::txt("_dnsauth.example.com", "ours");
        let Write::Put(props, Precondition::Matches(etag)) = add_txt(Some(&set("e1", &["theirs"])), &[&r]) else {
            panic!("expected a conditional PUT")
        };
        assert_eq!(etag, "e1");
        let values: Vec<String> = props.txt_records.iter().flatten().map(txt_value).collect();
        assert_eq!(values, vec!["theirs", "ours"]);
        assert_eq!(props.ttl, Some(60));
        assert_eq!(props.other.get("metadata"), Some(&serde_json::json!({"owner": "x"})));
        assert!(!props.other.contains_key("fqdn"), "read-only fields are not sent back");
        assert!(matches!(add_txt(Some(&set("e1", &["ours"])), &[&r]), Write::Nothing));
        assert!(matches!(add_txt(None, &[&r]), Write::Put(_, Precondition::Absent)));
    }

    #[test]
    fn removing_the_last_value_deletes_the_set() {
        let r = Record::txt("_dnsauth.example.com", "ours");
        assert!(matches!(remove_txt(Some(&set("e2", &["ours"])), &[&r]), Write::Delete(e) if e == "e2"));
        assert!(matches!(
            remove_txt(Some(&set("e2", &["ours", "theirs"])), &[&r]),
            Write::Put(_, Precondition::Matches(_))
        ));
        assert!(matches!(remove_txt(Some(&set("e2", &["theirs"])), &[&r]), Write::Nothing));
        assert!(matches!(remove_txt(None, &[&r]), Write::Nothing));
    }

    #[test]
    fn endpoints_must_be_https_except_loopback_and_imds() {
        assert!(check_url("management_url", DEFAULT_MANAGEMENT_URL, false).is_ok());
        assert!(check_url("management_url", "http://127.0.0.1:9/", false).is_ok());
        assert!(check_url("management_url", "http://management.azure.com", false).is_err());
        assert!(check_url("imds_url", DEFAULT_IMDS_URL, true).is_ok());
        assert!(check_url("authority_url", "http://169.254.169.254/", false).is_err());
    }
}
