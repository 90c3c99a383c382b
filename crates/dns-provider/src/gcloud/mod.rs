//! Google Cloud DNS adapter (API v1), with service-account keys, the metadata server or
//! workload identity federation for credentials (see [`auth`]).
//!
//! - Managed zones are found by DNS name (`managedZones?dnsName=example.com.`, the public one
//!   wins over private zones of the same name, which DigiCert cannot see) and cached; a
//!   configured `managed_zones` entry skips the lookup.
//! - Cloud DNS holds one resource record set per (name, type), so a value is merged into its set:
//!   one `changes.create` deletes the set exactly as read (name, type, TTL, rrdatas) and adds the
//!   merged one. When another writer changed the set in between, Cloud DNS refuses the whole
//!   change (412 `conditionNotMet`; 409 `alreadyExists` when both added the first value; 404
//!   `notFound` when the set vanished) and the adapter reads again and retries, bounded. An
//!   in-process lock per (zone, name, type) keeps one instance from racing itself.
//! - [`DnsProvider::publish_batch`] reads the whole zone once (or each name, for three names or
//!   fewer) and sends one change for every set, so 100 records cost one list and one change.
//! - [`DnsProvider::wait_until_applied`] polls `changes.get` until the change is `done`.
//!
//! Errors start with `gcloud:`; permission errors name the IAM permission the call needed. This
//! module must not decide what to publish, and must never log credentials or tokens.

mod api;
pub mod auth;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use self::api::DEFAULT_API_URL;
use self::api::{Api, ApiError, Change, ResourceRecordSet};
pub use self::auth::{Credentials, SubjectTokenFile};
use crate::locks::NameLocks;
use crate::rrset::{self, Encoding, Op, Submitted, ValueSet, decode_value, same_value};
use crate::txt;
use crate::{DnsProvider, ProviderError, Published, Record, RecordType, check_owner, normalize_name};

pub(crate) const KIND: &str = "gcloud";
/// Record sets per change (each a deletion and/or an addition); Cloud DNS documents a quota of
/// additions and deletions per change, this stays well under it.
const MAX_RRSETS_PER_CHANGE: usize = 500;
/// How often a change is rebuilt from a fresh read after losing a race to another writer.
const MAX_RACE_ATTEMPTS: u32 = 10;
/// Above this many names, one walk of the zone is cheaper than one read per name.
const PER_NAME_READS: usize = 3;

/// Settings of one Cloud DNS provider instance. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct GcloudSettings {
    /// The Google Cloud project holding the managed zones.
    pub project: String,
    /// Zones served (absolute, no trailing dot).
    pub zones: Vec<String>,
    /// Managed zone names by zone (`example.com` -> `example-com`); others are looked up.
    pub managed_zones: BTreeMap<String, String>,
    /// Where access tokens come from.
    pub credentials: Credentials,
    /// API root, [`DEFAULT_API_URL`] unless testing (plain http only to loopback).
    pub api_url: String,
    /// Metadata server root (tests); default `http://metadata.google.internal`.
    pub metadata_url: Option<String>,
    /// Overrides the token endpoint of the credentials (service-account `token_uri`, STS `token_url`).
    pub token_url: Option<String>,
    /// Awaited before every API request: the account's client-side rate limit (shared).
    pub gate: Option<crate::SharedGate>,
}

impl GcloudSettings {
    /// Settings with the default endpoints and managed zone lookup by DNS name.
    pub fn new(project: impl Into<String>, zones: Vec<String>, credentials: Credentials) -> Self {
        Self {
            project: project.into(),
            zones,
            managed_zones: BTreeMap::new(),
            credentials,
            api_url: DEFAULT_API_URL.to_string(),
            metadata_url: None,
            token_url: None,
            gate: None,
        }
    }
}

/// The IAM permission a call needs.
#[derive(Debug, Clone, Copy)]
enum Need {
    ZonesList,
    RrsetsList,
    ChangesCreate,
    ChangesGet,
}

impl Need {
    fn as_str(self) -> &'static str {
        match self {
            Self::ZonesList => "dns.managedZones.list",
            Self::RrsetsList => "dns.resourceRecordSets.list",
            Self::ChangesCreate => "dns.changes.create with dns.resourceRecordSets.create, .update and .delete",
            Self::ChangesGet => "dns.changes.get",
        }
    }
}

/// The managed zone of a zone.
#[derive(Debug, Clone)]
struct ZoneRef {
    name: String,
    managed: String,
}

/// Every record set at one name: type (`TXT`, `CNAME`, ...) -> the set as read.
type NameState = BTreeMap<String, ResourceRecordSet>;

/// How Cloud DNS writes values.
const ENCODING: Encoding = Encoding { encode: raw_value, same: same_value };

/// One record set change: the set as read (deleted exactly) and the set to write.
#[derive(Debug)]
struct Plan {
    name: String,
    rtype: RecordType,
    old: Option<ResourceRecordSet>,
    new: Option<ResourceRecordSet>,
}

/// The Cloud DNS adapter.
pub struct GcloudProvider {
    api: Api,
    project: String,
    zones: Vec<String>,
    api_url: String,
    managed_zones: Mutex<HashMap<String, String>>,
    locks: NameLocks,
}

impl fmt::Debug for GcloudProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcloudProvider")
            .field("project", &self.project)
            .field("zones", &self.zones)
            .field("api_url", &self.api_url)
            .field("credentials", self.api.auth().credentials())
            .finish_non_exhaustive()
    }
}

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

/// A record's value as Cloud DNS writes it: TXT quoted, CNAME absolute with a trailing dot.
fn raw_value(record: &Record) -> String {
    match record.rtype {
        RecordType::Txt => txt::quote(&record.value),
        RecordType::Cname => format!("{}.", normalize_name(&record.value)),
    }
}

/// Whether a refused change means "another writer changed these sets": read again and retry.
fn is_race(err: &ApiError) -> bool {
    match err.status() {
        Some(StatusCode::PRECONDITION_FAILED) => true,
        Some(StatusCode::CONFLICT) => err.reason() == "alreadyExists" || err.reason().is_empty(),
        // a deletion of a set that is gone; not a missing managed zone ('parameters.managedZone')
        Some(StatusCode::NOT_FOUND) => err.describe().contains("entity.change"),
        _ => false,
    }
}

impl GcloudProvider {
    /// Validates the settings; no network call (see [`DnsProvider::preflight`]).
    pub fn new(settings: GcloudSettings) -> Result<Self, ProviderError> {
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(err_config("no zones configured: list the zones of the project's managed zones in `zones`"));
        }
        let project = settings.project.trim().to_string();
        if project.is_empty() || !project.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == '.')
        {
            return Err(err_config(format!(
                "project {:?} is not a Google Cloud project id (lower-case letters, digits and hyphens)",
                settings.project
            )));
        }
        let mut managed_zones = HashMap::new();
        for (zone, managed) in &settings.managed_zones {
            let zone = normalize_name(zone);
            if !zones.contains(&zone) {
                return Err(err_config(format!("managed_zones names zone {zone}, which is not in `zones`")));
            }
            let managed = managed.trim();
            if managed.is_empty() || managed.contains('/') {
                return Err(err_config(format!(
                    "managed_zones gives an invalid managed zone name {managed:?} for {zone}"
                )));
            }
            managed_zones.insert(zone, managed.to_string());
        }
        auth::check_url("api_url", &settings.api_url)?;
        let loopback = auth::is_loopback(&settings.api_url);
        let authenticator = auth::Authenticator::new(settings.credentials, settings.token_url, settings.metadata_url)?;
        let api = Api::new(&settings.api_url, &project, Arc::new(authenticator), loopback)
            .map_err(err_config)?
            .with_gate(settings.gate.clone());
        Ok(Self {
            api,
            project,
            zones,
            api_url: settings.api_url,
            managed_zones: Mutex::new(managed_zones),
            locks: NameLocks::new(),
        })
    }

    /// Turns an API failure into the adapter's error, naming the permission the call needed.
    fn map_err(&self, err: ApiError, zone: &str, need: Need, what: &str) -> ProviderError {
        match err {
            ApiError::Token(e) => e,
            ApiError::Throttled { retry_after, .. } => ProviderError::Throttled {
                provider: KIND,
                message: format!("{what} in zone {zone}: still rate limited after retries ({})", err.describe()),
                retry_after,
            },
            ApiError::Transient(m) => {
                ProviderError::Transient { provider: KIND, message: format!("{what} in zone {zone}: {m}") }
            }
            ApiError::Api { status, .. } => {
                let who = self.api.auth().credentials().describe();
                if status == StatusCode::UNAUTHORIZED {
                    ProviderError::Auth {
                        provider: KIND,
                        message: format!(
                            "Google rejected the access token of {who} ({}): check the credentials file or the attached service account",
                            err.describe()
                        ),
                    }
                } else if status == StatusCode::FORBIDDEN {
                    ProviderError::Auth {
                        provider: KIND,
                        message: format!(
                            "{who} lacks {} on project {} (zone {zone}): grant it a role with dns.changes.create, dns.changes.get, dns.resourceRecordSets.* and dns.managedZones.list (Google said: {})",
                            need.as_str(),
                            self.project,
                            err.describe()
                        ),
                    }
                } else if status == StatusCode::NOT_FOUND {
                    ProviderError::ZoneNotFound {
                        provider: KIND,
                        zone: zone.to_string(),
                        message: format!(
                            "{what}: {} (project {}): fix `project` or `managed_zones`",
                            err.describe(),
                            self.project
                        ),
                    }
                } else if err.reason() == "cnameResourceRecordSetConflict" {
                    ProviderError::Conflict {
                        provider: KIND,
                        message: format!("{what} in zone {zone}: {}; a CNAME cannot share its name", err.describe()),
                    }
                } else {
                    let code = Some(err.reason().to_string()).filter(|r| !r.is_empty());
                    ProviderError::Rejected {
                        provider: KIND,
                        code,
                        message: format!("{what} in zone {zone} rejected: {}", err.describe()),
                    }
                }
            }
        }
    }

    /// The managed zone of `zone` (configured, cached, or `managedZones?dnsName=`).
    async fn zone(&self, zone: &str) -> Result<ZoneRef, ProviderError> {
        let name = normalize_name(zone);
        if !self.zones.contains(&name) {
            return Err(err_config(format!(
                "zone {name} is not configured for this provider (configured: {})",
                self.zones.join(", ")
            )));
        }
        if let Some(managed) = self.managed_zones.lock().expect("zone cache lock").get(&name) {
            return Ok(ZoneRef { name, managed: managed.clone() });
        }
        let found = self
            .api
            .managed_zones_by_dns_name(&format!("{name}."))
            .await
            .map_err(|e| self.map_err(e, &name, Need::ZonesList, "looking up the managed zone"))?;
        let matching: Vec<_> = found.into_iter().filter(|z| normalize_name(&z.dns_name) == name).collect();
        // Private zones are invisible to DigiCert: only a public zone is useful.
        let public: Vec<_> = matching.iter().filter(|z| z.visibility.is_empty() || z.visibility == "public").collect();
        let managed = match public.as_slice() {
            [one] => one.name.clone(),
            [] => {
                return Err(ProviderError::ZoneNotFound {
                    provider: KIND,
                    zone: name,
                    message: format!(
                        "project {} has no public managed zone with this DNS name{}: fix `project` or `zones`, or set `managed_zones`",
                        self.project,
                        if matching.is_empty() { String::new() } else { format!(" ({} private ones)", matching.len()) }
                    ),
                });
            }
            many => {
                return Err(err_config(format!(
                    "zone {name} is ambiguous: public managed zones {} share the DNS name; set `managed_zones` to the one DigiCert queries",
                    many.iter().map(|z| z.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        debug!(zone = %name, managed_zone = %managed, "gcloud managed zone found");
        self.managed_zones.lock().expect("zone cache lock").insert(name.clone(), managed.clone());
        Ok(ZoneRef { name, managed })
    }

    /// The record sets at every name in `names`: one read per name, or one walk of the zone.
    async fn read_names(
        &self,
        zone: &ZoneRef,
        names: &BTreeSet<String>,
    ) -> Result<HashMap<String, NameState>, ProviderError> {
        let mut out: HashMap<String, NameState> = names.iter().map(|n| (n.clone(), NameState::new())).collect();
        let sets = if names.len() > PER_NAME_READS {
            self.api.rrsets(&zone.managed, None, None).await
        } else {
            let mut all = Vec::new();
            for n in names {
                match self.api.rrsets(&zone.managed, Some(&format!("{n}.")), None).await {
                    Ok(sets) => all.extend(sets),
                    Err(e) => return Err(self.map_err(e, &zone.name, Need::RrsetsList, "reading record sets")),
                }
            }
            Ok(all)
        }
        .map_err(|e| self.map_err(e, &zone.name, Need::RrsetsList, "reading record sets"))?;
        for set in sets {
            if let Some(state) = out.get_mut(&normalize_name(&set.name)) {
                state.insert(set.rtype.to_ascii_uppercase(), set);
            }
        }
        Ok(out)
    }

    /// Computes the change of one (name, type) from what was read, or a conflict.
    fn plan(
        zone: &str,
        name: &str,
        rtype: RecordType,
        ops: &[(Op, &Record)],
        state: &NameState,
    ) -> Result<Option<Plan>, ProviderError> {
        let type_key = rtype.as_str();
        let old = state.get(type_key).cloned();
        let old_values = old.as_ref().map(|s| ValueSet { ttl: s.ttl, values: s.rrdatas.clone() });
        let others: Vec<&str> = state.keys().map(String::as_str).filter(|t| *t != type_key).collect();
        let new = rrset::merge(KIND, zone, name, rtype, ops, old_values.as_ref(), &others, &ENCODING)?;
        if new == old_values {
            return Ok(None);
        }
        let new = new.map(|set| ResourceRecordSet {
            name: format!("{name}."),
            rtype: type_key.to_string(),
            ttl: set.ttl,
            rrdatas: set.values,
            signature_rrdatas: Vec::new(),
        });
        Ok(Some(Plan { name: name.to_string(), rtype, old, new }))
    }

    /// Adds and removes values, merging with whatever else the sets hold. Returns the change
    /// (`managed_zone/id`) that carried each key; keys that needed no change are absent.
    async fn apply(
        &self,
        zone: &str,
        ops: &[(Op, &Record)],
    ) -> Result<HashMap<(String, RecordType), String>, ProviderError> {
        let zone_name = normalize_name(zone);
        let mut by_key: BTreeMap<(String, RecordType), Vec<(Op, &Record)>> = BTreeMap::new();
        for (op, record) in ops {
            let (_, name) = check_owner(KIND, &self.zones, &zone_name, &record.name)?;
            by_key.entry((name, record.rtype)).or_default().push((*op, *record));
        }
        let zone = self.zone(&zone_name).await?;
        let guards =
            self.locks.lock_all(by_key.keys().map(|(name, rtype)| format!("{}|{name}|{rtype}", zone.name))).await;

        let (this, zone, by_key) = (self, &zone, &by_key);
        let done = rrset::apply_optimistically(
            KIND,
            &zone.name,
            by_key.keys().cloned().collect(),
            MAX_RACE_ATTEMPTS,
            |round| crate::CLOUD_API_RETRY.backoff(round.min(3)) / 4,
            |plan: &Plan| (plan.name.clone(), plan.rtype),
            move |pending| async move {
                let names: BTreeSet<String> = pending.iter().map(|(n, _)| n.clone()).collect();
                let states = this.read_names(zone, &names).await?;
                let mut plans = Vec::new();
                for key in &pending {
                    if let Some(plan) = Self::plan(&zone.name, &key.0, key.1, &by_key[key], &states[&key.0])? {
                        plans.push(plan);
                    }
                }
                let mut chunks = Vec::new();
                while plans.len() > MAX_RRSETS_PER_CHANGE {
                    let rest = plans.split_off(MAX_RRSETS_PER_CHANGE);
                    chunks.push(std::mem::replace(&mut plans, rest));
                }
                if !plans.is_empty() {
                    chunks.push(plans);
                }
                Ok(chunks)
            },
            move |round, chunk| async move {
                let change = Change {
                    deletions: chunk.iter().filter_map(|p| p.old.clone()).collect(),
                    additions: chunk.iter().filter_map(|p| p.new.clone()).collect(),
                    ..Change::default()
                };
                match self.api.create_change(&zone.managed, &change).await {
                    Ok(created) => {
                        info!(zone = %zone.name, managed_zone = %zone.managed, change_id = %created.id, status = %created.status, rrsets = chunk.len(), "gcloud change submitted");
                        Ok(Submitted::Done(format!("{}/{}", zone.managed, created.id)))
                    }
                    Err(e) if is_race(&e) => {
                        warn!(zone = %zone.name, attempt = round, error = %e.describe(), "gcloud record sets changed meanwhile, reading them again");
                        Ok(Submitted::Race(e.describe()))
                    }
                    Err(e) => Err(self.map_err(e, &zone.name, Need::ChangesCreate, "changing record sets")),
                }
            },
        )
        .await?;
        drop(guards);
        Ok(done)
    }

    async fn publish_many(&self, zone: &str, records: &[Record]) -> Result<Vec<Published>, ProviderError> {
        let ops: Vec<(Op, &Record)> = records.iter().map(|r| (Op::Add, r)).collect();
        let done = self.apply(zone, &ops).await?;
        Ok(records
            .iter()
            .map(|r| Published { provider_id: None, change_id: done.get(&(normalize_name(&r.name), r.rtype)).cloned() })
            .collect())
    }
}

#[async_trait]
impl DnsProvider for GcloudProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn zones(&self) -> &[String] {
        &self.zones
    }

    async fn publish(&self, zone: &str, record: &Record) -> Result<Published, ProviderError> {
        let mut out = self.publish_many(zone, std::slice::from_ref(record)).await?;
        Ok(out.pop().unwrap_or_default())
    }

    async fn remove(&self, zone: &str, record: &Record) -> Result<(), ProviderError> {
        self.apply(zone, &[(Op::Remove, record)]).await.map(|_| ())
    }

    async fn publish_batch(&self, zone: &str, records: &[Record]) -> Result<Vec<Published>, ProviderError> {
        self.publish_many(zone, records).await
    }

    async fn remove_batch(&self, zone: &str, records: &[Record]) -> Result<(), ProviderError> {
        let ops: Vec<(Op, &Record)> = records.iter().map(|r| (Op::Remove, r)).collect();
        self.apply(zone, &ops).await.map(|_| ())
    }

    async fn wait_until_applied(&self, published: &[Published], timeout: Duration) -> Result<(), ProviderError> {
        let ids: BTreeSet<&str> =
            published.iter().filter_map(|p| p.change_id.as_deref()).filter(|id| !id.is_empty()).collect();
        let started = Instant::now();
        let deadline = started + timeout;
        for full in ids {
            let Some((managed, id)) = full.split_once('/') else { continue };
            let polled = retry::poll_until(Duration::from_millis(250), Duration::from_secs(5), deadline, || async {
                let change = self
                    .api
                    .get_change(managed, id)
                    .await
                    .map_err(|e| self.map_err(e, managed, Need::ChangesGet, "waiting for a change"))?;
                if change.status == "done" {
                    return Ok(Ok(()));
                }
                debug!(managed_zone = managed, change_id = id, status = %change.status, "gcloud change not done yet");
                Ok(Err(change.status))
            })
            .await?;
            if let Err(status) = polled {
                return Err(ProviderError::Transient {
                    provider: KIND,
                    message: format!(
                        "change {id} of managed zone {managed} still {status:?} after {timeout:?}: Cloud DNS has not applied it yet"
                    ),
                });
            }
            info!(
                managed_zone = managed,
                change_id = id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "gcloud change done"
            );
        }
        Ok(())
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        for zone in &self.zones {
            let z = self.zone(zone).await?;
            self.api
                .rrsets(&z.managed, Some(&format!("_dnsauth.{}.", z.name)), Some("TXT"))
                .await
                .map_err(|e| self.map_err(e, &z.name, Need::RrsetsList, "reading record sets"))?;
            debug!(zone = %z.name, managed_zone = %z.managed, "gcloud preflight ok");
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let (zone_name, name) = check_owner(KIND, &self.zones, zone, name)?;
        let z = self.zone(&zone_name).await?;
        let sets = self
            .api
            .rrsets(&z.managed, Some(&format!("{name}.")), Some(rtype.as_str()))
            .await
            .map_err(|e| self.map_err(e, &z.name, Need::RrsetsList, "reading record sets"))?;
        Ok(sets
            .iter()
            .filter(|s| normalize_name(&s.name) == name && s.rtype.eq_ignore_ascii_case(rtype.as_str()))
            .flat_map(|s| s.rrdatas.iter().map(|v| decode_value(rtype, v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rtype: &str, ttl: i64, rrdatas: &[&str]) -> ResourceRecordSet {
        ResourceRecordSet {
            name: "_dnsauth.example.com.".into(),
            rtype: rtype.into(),
            ttl,
            rrdatas: rrdatas.iter().map(|s| s.to_string()).collect(),
            signature_rrdatas: Vec::new(),
        }
    }

    #[test]
    fn merge_deletes_exactly_what_was_read_and_keeps_foreign_values() {
        let ours = Record::txt("_dnsauth.example.com", "tok");
        let mut state = NameState::new();
        state.insert("TXT".into(), set("TXT", 300, &["\"foreign\""]));
        let plan =
            GcloudProvider::plan("example.com", "_dnsauth.example.com", RecordType::Txt, &[(Op::Add, &ours)], &state)
                .expect("no conflict")
                .expect("a change");
        assert_eq!(plan.old, Some(set("TXT", 300, &["\"foreign\""])));
        assert_eq!(plan.new, Some(set("TXT", 60, &["\"foreign\"", "\"tok\""])));

        let mut state = NameState::new();
        state.insert("TXT".into(), plan.new.clone().expect("new"));
        assert!(
            GcloudProvider::plan("example.com", "_dnsauth.example.com", RecordType::Txt, &[(Op::Add, &ours)], &state)
                .expect("ok")
                .is_none(),
            "publishing again changes nothing"
        );
        let removal = GcloudProvider::plan(
            "example.com",
            "_dnsauth.example.com",
            RecordType::Txt,
            &[(Op::Remove, &ours)],
            &state,
        )
        .expect("ok")
        .expect("a change");
        assert_eq!(removal.new, Some(set("TXT", 60, &["\"foreign\""])));
    }

    #[test]
    fn cname_values_are_absolute_and_conflicts_refused() {
        let cname = Record::cname("_dnsauth.example.com", "x.dcv.digicert.com");
        assert_eq!(raw_value(&cname), "x.dcv.digicert.com.");
        let mut state = NameState::new();
        state.insert("TXT".into(), set("TXT", 60, &["\"v\""]));
        let err = GcloudProvider::plan(
            "example.com",
            "_dnsauth.example.com",
            RecordType::Cname,
            &[(Op::Add, &cname)],
            &state,
        )
        .expect_err("conflict");
        assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().starts_with("gcloud: "), "{err}");
    }

    #[test]
    fn races_are_recognized() {
        let api = |status: u16, reason: &str, message: &str| ApiError::Api {
            status: StatusCode::from_u16(status).expect("status"),
            reason: reason.into(),
            google_status: String::new(),
            message: message.into(),
        };
        assert!(is_race(&api(412, "conditionNotMet", "Precondition not met for 'entity.change.deletions[0]'")));
        assert!(is_race(&api(409, "alreadyExists", "The resource 'entity.change.additions[0]' already exists")));
        assert!(is_race(&api(
            404,
            "notFound",
            "The 'entity.change.deletions[0]' resource named 'a. (TXT)' does not exist."
        )));
        assert!(!is_race(&api(404, "notFound", "The 'parameters.managedZone' resource named 'x' does not exist.")));
        assert!(!is_race(&api(403, "forbidden", "Forbidden")));
    }
}
