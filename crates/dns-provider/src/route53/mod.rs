//! Route53 adapter (aws-sdk-route53 with the standard AWS credential chain).
//!
//! - Hosted zones are found by exact name with `ListHostedZonesByName` and cached; a configured
//!   `hosted_zone_id` skips the lookup.
//! - A value is merged into its RRset without losing other values and without a lost update:
//!   read the RRset, then send one `ChangeBatch` that DELETEs the RRset as read (exact values and
//!   TTL) and CREATEs the new one. Route53 rejects the batch when another writer changed the RRset
//!   in between (`InvalidChangeBatch`; moto: `InvalidInput`), and the adapter starts over from a
//!   fresh read. An in-process lock per (zone, name, type) avoids racing ourselves.
//! - [`DnsProvider::publish_batch`] sends one `ChangeBatch` for many records, chunked to Route53's
//!   limits (1,000 `ResourceRecord`s, 32,000 value characters per request).
//! - Throttling, `PriorRequestNotComplete`, 5xx and network errors are retried with jittered
//!   exponential backoff (bounded); the SDK's own retries are off so every retry is logged here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_route53::Client;
use aws_sdk_route53::config::http::HttpResponse;
use aws_sdk_route53::config::retry::RetryConfig;
use aws_sdk_route53::config::timeout::TimeoutConfig;
use aws_sdk_route53::config::{Credentials, Region};
use aws_sdk_route53::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use retry::Verdict;
use secrecy::{ExposeSecret, SecretString};
use tracing::{debug, info, warn};

use crate::locks::NameLocks;
use crate::rrset::{self, Encoding, Op, Submitted, ValueSet, decode_value, same_value};
use crate::txt;
use crate::{
    DnsProvider, PROVIDER_RETRY, ProviderError, Published, Record, RecordType, RetryPolicy, SharedGate, normalize_name,
};

const KIND: &str = "route53";
/// Route53 limits per `ChangeResourceRecordSets` request.
const MAX_RECORDS_PER_BATCH: usize = 1000;
const MAX_CHARS_PER_BATCH: usize = 32_000;
/// `ListResourceRecordSets` returns at most 300 RRsets per page.
const LIST_PAGE: usize = 300;
/// How often a batch is rebuilt from a fresh read after losing a race to another writer.
const MAX_RACE_ATTEMPTS: u32 = 10;

/// Static AWS keys, for when the credential chain is not wanted (tests, unusual setups).
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Session token of temporary credentials.
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticCredentials([redacted])")
    }
}

/// Settings of one Route53 provider instance.
#[derive(Debug, Clone)]
pub struct Route53Settings {
    /// Zones served (absolute, no trailing dot).
    pub zones: Vec<String>,
    /// The hosted zone id, when the provider serves one zone and the lookup by name is unwanted
    /// (or ambiguous). With several zones, leave it unset.
    pub hosted_zone_id: Option<String>,
    /// AWS region for the SDK (Route53 is global; default: the chain's region, else us-east-1).
    pub region: Option<String>,
    /// Endpoint override (moto in tests).
    pub endpoint_url: Option<String>,
    /// AWS profile to use from the shared config files (assume-role profiles work).
    pub profile: Option<String>,
    /// Static keys instead of the credential chain.
    pub credentials: Option<StaticCredentials>,
    /// Retries of throttled/transient calls.
    pub retry: RetryPolicy,
    /// Awaited before every API request: the account's client-side rate limit (Route 53 allows
    /// five requests per second per account).
    pub gate: Option<SharedGate>,
    /// Told when a change reaches `INSYNC`: its id and how long the wait took (metrics).
    pub on_insync: Option<ChangeSyncObserver>,
}

/// A callback taking a change id and how long the change took to be applied.
pub type ChangeSyncFn = dyn Fn(&str, Duration) + Send + Sync;

/// Called with a change id and how long it took to be applied.
#[derive(Clone)]
pub struct ChangeSyncObserver(pub std::sync::Arc<ChangeSyncFn>);

impl fmt::Debug for ChangeSyncObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChangeSyncObserver")
    }
}

impl Default for Route53Settings {
    fn default() -> Self {
        Self {
            zones: Vec::new(),
            hosted_zone_id: None,
            region: None,
            endpoint_url: None,
            profile: None,
            credentials: None,
            retry: PROVIDER_RETRY,
            gate: None,
            on_insync: None,
        }
    }
}

#[derive(Debug, Clone)]
struct ZoneRef {
    name: String,
    id: String,
}

/// One RRset as read: raw values (TXT quoted) exactly as Route53 holds them.
type RrSet = ValueSet;

/// Every RRset at one name: type (`TXT`, `CNAME`, ...) -> RRset.
type NameState = BTreeMap<String, RrSet>;

/// How Route53 writes values.
const ENCODING: Encoding = Encoding { encode: raw_value, same: same_value };

/// What a failed SDK call means for us.
enum Failure {
    /// Throttling, 5xx, network: retry after a delay.
    Retry { throttled: bool, code: String, message: String },
    /// The change batch no longer matches the RRsets: read again and rebuild it.
    Race(String),
    /// Give up with this error.
    Fatal(ProviderError),
}

/// The Route53 adapter.
pub struct Route53Provider {
    client: Client,
    zones: Vec<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    retry: RetryPolicy,
    zone_ids: Mutex<HashMap<String, String>>,
    locks: NameLocks,
    gate: Option<SharedGate>,
    on_insync: Option<ChangeSyncObserver>,
}

impl fmt::Debug for Route53Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route53Provider")
            .field("zones", &self.zones)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

fn err_config(message: impl Into<String>) -> ProviderError {
    ProviderError::Config { provider: KIND, message: message.into() }
}

/// Names as Route53 returns them: trailing dot, lower case, `\ooo` octal escapes (`\052` = `*`).
fn route53_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3
                && digits.chars().all(|d| d.is_digit(8))
                && let Ok(n) = u8::from_str_radix(&digits, 8)
            {
                out.push(char::from(n));
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    normalize_name(&out)
}

/// The value of a record as Route53 writes it.
fn raw_value(record: &Record) -> String {
    match record.rtype {
        RecordType::Txt => txt::quote(&record.value),
        RecordType::Cname => record.value.clone(),
    }
}

fn is_race_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("values provided do not match")
        || m.contains("but it already exists")
        || m.contains("but it was not found")
        || m.contains("conflicting rrset")
        // moto's answer to a DELETE of an RRset it does not hold (any more)
        || m.contains("expected exactly one of")
}

/// Maps an SDK error of operation `op` on `zone` to what the adapter does next.
fn classify<E>(err: &SdkError<E, HttpResponse>, op: &str, zone: &str, zone_id: &str) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let details = DisplayErrorContext(err).to_string();
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            return Failure::Retry { throttled: false, code: "network".into(), message: details };
        }
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
            let lower = details.to_ascii_lowercase();
            if lower.contains("credential") || lower.contains("identity") {
                return Failure::Fatal(ProviderError::Auth {
                    provider: KIND,
                    message: format!(
                        "no usable AWS credentials: configure the standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, or an instance role) ({details})"
                    ),
                });
            }
            return Failure::Retry { throttled: false, code: "network".into(), message: details };
        }
        _ => {}
    }
    let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or_default();
    let code = err.code().unwrap_or_default().to_string();
    let message = err.message().map(str::to_string).unwrap_or_else(|| details.clone());
    match code.as_str() {
        "Throttling"
        | "ThrottlingException"
        | "PriorRequestNotComplete"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "SlowDown" => Failure::Retry { throttled: true, code, message },
        "AccessDenied" | "AccessDeniedException" => Failure::Fatal(ProviderError::Auth {
            provider: KIND,
            message: format!(
                "credentials lack route53:{op} on zone {zone_id} ({zone}): allow it in the IAM policy of the identity dcvd runs as (AWS said: {message})"
            ),
        }),
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidAccessKeyId" => Failure::Fatal(ProviderError::Auth {
            provider: KIND,
            message: format!(
                "AWS rejected the credentials ({code}: {message}): check the keys, profile or role the credential chain uses"
            ),
        }),
        "NoSuchHostedZone" => Failure::Fatal(ProviderError::ZoneNotFound {
            provider: KIND,
            zone: zone.to_string(),
            message: format!(
                "hosted zone {zone_id} does not exist: fix hosted_zone_id or remove it to look the zone up by name"
            ),
        }),
        "InvalidChangeBatch" | "InvalidInput" if is_race_message(&message) => Failure::Race(message),
        _ if status >= 500 || code == "InternalFailure" || code == "ServiceUnavailable" => {
            Failure::Retry { throttled: false, code: if code.is_empty() { status.to_string() } else { code }, message }
        }
        _ => Failure::Fatal(ProviderError::Rejected {
            provider: KIND,
            code: (!code.is_empty()).then_some(code.clone()),
            message: format!("{op} on zone {zone} ({zone_id}) rejected: {code} {message}"),
        }),
    }
}

/// One RRset change we want: the key, the state read, the state to write.
struct Plan {
    name: String,
    rtype: RecordType,
    old: Option<RrSet>,
    new: Option<RrSet>,
}

impl Plan {
    fn changes(&self) -> Vec<Change> {
        let set = |s: &RrSet| {
            ResourceRecordSet::builder()
                .name(format!("{}.", self.name))
                .r#type(RrType::from(self.rtype.as_str()))
                .ttl(s.ttl)
                .set_resource_records(Some(
                    s.values
                        .iter()
                        .map(|v| ResourceRecord::builder().value(v).build().expect("value is set"))
                        .collect(),
                ))
                .build()
                .expect("name and type are set")
        };
        let mut out = Vec::new();
        if let Some(old) = &self.old {
            out.push(
                Change::builder().action(ChangeAction::Delete).resource_record_set(set(old)).build().expect("complete"),
            );
        }
        if let Some(new) = &self.new {
            out.push(
                Change::builder().action(ChangeAction::Create).resource_record_set(set(new)).build().expect("complete"),
            );
        }
        out
    }

    /// `(ResourceRecord elements, value characters)`, as Route53 counts them against its limits.
    fn weight(&self) -> (usize, usize) {
        [&self.old, &self.new]
            .into_iter()
            .flatten()
            .fold((0, 0), |(n, c), s| (n + s.values.len(), c + s.values.iter().map(String::len).sum::<usize>()))
    }
}

impl Route53Provider {
    /// Builds the SDK client from the standard AWS configuration chain and `settings`. No network
    /// call is made here; [`DnsProvider::preflight`] checks credentials and zones.
    pub async fn new(settings: Route53Settings) -> Result<Self, ProviderError> {
        let zones: Vec<String> = settings.zones.iter().map(|z| normalize_name(z)).collect();
        if zones.is_empty() {
            return Err(err_config("no zones configured: list the hosted zones this provider serves in `zones`"));
        }
        let mut zone_ids = HashMap::new();
        if let Some(id) = &settings.hosted_zone_id {
            if zones.len() != 1 {
                return Err(err_config(format!(
                    "hosted_zone_id is set but {} zones are configured: use one provider section per zone, or drop hosted_zone_id to look zones up by name",
                    zones.len()
                )));
            }
            let id = id.trim().trim_start_matches("/hostedzone/").to_string();
            if id.is_empty() {
                return Err(err_config("hosted_zone_id is empty"));
            }
            zone_ids.insert(zones[0].clone(), id);
        }
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            // our own retry loop logs and bounds every retry
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(creds) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                creds.access_key_id.clone(),
                creds.secret_access_key.expose_secret().to_string(),
                creds.session_token.as_ref().map(|t| t.expose_secret().to_string()),
                None,
                "dcvd-config",
            ));
        }
        let sdk_config = loader.load().await;
        Ok(Self {
            client: Client::new(&sdk_config),
            zones,
            region: settings.region,
            endpoint_url: settings.endpoint_url,
            retry: settings.retry,
            zone_ids: Mutex::new(zone_ids),
            locks: NameLocks::new(),
            gate: settings.gate,
            on_insync: settings.on_insync,
        })
    }

    /// Runs `f` until it succeeds, retrying throttling and transient failures per the policy.
    async fn call<T, E, F, Fut>(&self, op: &str, zone: &str, zone_id: &str, mut f: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let result = self
            .retry
            .run(
                |_| {
                    // SDK futures are lazy: nothing is sent before the gate admits the request
                    let attempt = f();
                    let gate = self.gate.clone();
                    async move {
                        let _pass = crate::admit(gate.as_ref()).await;
                        attempt.await.map_err(|err| classify(&err, op, zone, zone_id))
                    }
                },
                |failure| if matches!(failure, Failure::Retry { .. }) { Verdict::Retry } else { Verdict::Stop },
                |retry| {
                    if let Failure::Retry { code, .. } = retry.error {
                        warn!(op, zone, code = %code, attempt = retry.attempt, delay_ms = retry.delay_ms(), "route53 call failed, retrying");
                    }
                },
            )
            .await;
        result.map_err(|failure| match failure {
            Failure::Retry { throttled, code, message } => {
                let attempts = self.retry.max_attempts;
                let message = format!("{op} on zone {zone} still failing after {attempts} attempts: {code}: {message}");
                Failure::Fatal(if throttled {
                    ProviderError::Throttled { provider: KIND, message, retry_after: None }
                } else {
                    ProviderError::Transient { provider: KIND, message }
                })
            }
            other => other,
        })
    }

    fn fatal(failure: Failure, what: &str) -> ProviderError {
        match failure {
            Failure::Fatal(e) => e,
            Failure::Race(m) => ProviderError::Rejected {
                provider: KIND,
                code: Some("InvalidChangeBatch".into()),
                message: format!("{what}: {m}"),
            },
            Failure::Retry { code, message, .. } => {
                ProviderError::Transient { provider: KIND, message: format!("{what}: {code}: {message}") }
            }
        }
    }

    /// The hosted zone for `zone` (configured id, cache, or lookup by exact name).
    async fn zone(&self, zone: &str) -> Result<ZoneRef, ProviderError> {
        let name = normalize_name(zone);
        if !self.zones.contains(&name) {
            return Err(err_config(format!(
                "zone {name} is not configured for this provider (configured: {})",
                self.zones.join(", ")
            )));
        }
        if let Some(id) = self.zone_ids.lock().expect("zone cache lock").get(&name) {
            return Ok(ZoneRef { name, id: id.clone() });
        }
        let out = self
            .call("ListHostedZonesByName", &name, "-", || {
                self.client.list_hosted_zones_by_name().dns_name(name.as_str()).max_items(100).send()
            })
            .await
            .map_err(|f| Self::fatal(f, "looking up the hosted zone"))?;
        let matching: Vec<(String, bool)> = out
            .hosted_zones()
            .iter()
            .filter(|z| route53_name(z.name()) == name)
            .map(|z| {
                (z.id().trim_start_matches("/hostedzone/").to_string(), z.config().is_some_and(|c| c.private_zone()))
            })
            .collect();
        let public: Vec<&(String, bool)> = matching.iter().filter(|(_, private)| !private).collect();
        let id = match (matching.len(), public.len()) {
            (0, _) => {
                return Err(ProviderError::ZoneNotFound {
                    provider: KIND,
                    zone: name,
                    message: "no hosted zone with this name is visible to these credentials: create it, fix `zones`, or set hosted_zone_id".into(),
                });
            }
            // Private zones are invisible to DigiCert: the one public zone is the only useful one.
            (_, 1) => public[0].0.clone(),
            _ => {
                let list: Vec<String> = matching
                    .iter()
                    .map(|(id, private)| format!("{id} ({})", if *private { "private" } else { "public" }))
                    .collect();
                return Err(err_config(format!(
                    "zone {name} is ambiguous: hosted zones {} share the name and {} of them are public; set hosted_zone_id to the public zone DigiCert queries",
                    list.join(", "),
                    public.len()
                )));
            }
        };
        if matching.len() > 1 {
            debug!(zone = %name, hosted_zone_id = %id, "route53 using the public zone, ignoring private zones of the same name");
        }
        self.zone_ids.lock().expect("zone cache lock").insert(name.clone(), id.clone());
        Ok(ZoneRef { name, id })
    }

    /// Every RRset at `name`.
    async fn read_name(&self, zone: &ZoneRef, name: &str) -> Result<NameState, Failure> {
        let mut state = NameState::new();
        let mut start: (String, Option<RrType>) = (name.to_string(), None);
        loop {
            let out = self
                .call("ListResourceRecordSets", &zone.name, &zone.id, || {
                    self.client
                        .list_resource_record_sets()
                        .hosted_zone_id(&zone.id)
                        .start_record_name(&start.0)
                        .set_start_record_type(start.1.clone())
                        .max_items(16)
                        .send()
                })
                .await?;
            let mut past = false;
            for s in out.resource_record_sets() {
                if route53_name(s.name()) != name {
                    past = true;
                    continue;
                }
                state.insert(
                    s.r#type().as_str().to_string(),
                    RrSet {
                        ttl: s.ttl().unwrap_or(300),
                        values: s.resource_records().iter().map(|r| r.value().to_string()).collect(),
                    },
                );
            }
            match (out.is_truncated(), out.next_record_name()) {
                (true, Some(next)) if !past && route53_name(next) == name => {
                    start = (next.to_string(), out.next_record_type().cloned());
                }
                _ => return Ok(state),
            }
        }
    }

    /// The RRsets at every name in `names`: one read per name, or one walk of the whole zone
    /// when that takes fewer requests (Route53 allows 5 requests per second per account).
    async fn read_names(
        &self,
        zone: &ZoneRef,
        names: &BTreeSet<String>,
    ) -> Result<HashMap<String, NameState>, Failure> {
        let mut out: HashMap<String, NameState> = HashMap::new();
        if names.len() > 3 {
            let count = self
                .call("GetHostedZone", &zone.name, &zone.id, || self.client.get_hosted_zone().id(&zone.id).send())
                .await?
                .hosted_zone()
                .and_then(|z| z.resource_record_set_count())
                .unwrap_or(i64::MAX);
            let pages = usize::try_from(count).unwrap_or(usize::MAX).div_ceil(LIST_PAGE);
            if pages < names.len() {
                let mut next: Option<(String, Option<RrType>)> = None;
                loop {
                    let out_page = self
                        .call("ListResourceRecordSets", &zone.name, &zone.id, || {
                            let mut req = self
                                .client
                                .list_resource_record_sets()
                                .hosted_zone_id(&zone.id)
                                .max_items(LIST_PAGE as i32);
                            if let Some((n, t)) = &next {
                                req = req.start_record_name(n).set_start_record_type(t.clone());
                            }
                            req.send()
                        })
                        .await?;
                    for s in out_page.resource_record_sets() {
                        let n = route53_name(s.name());
                        if names.contains(&n) {
                            out.entry(n).or_default().insert(
                                s.r#type().as_str().to_string(),
                                RrSet {
                                    ttl: s.ttl().unwrap_or(300),
                                    values: s.resource_records().iter().map(|r| r.value().to_string()).collect(),
                                },
                            );
                        }
                    }
                    match (out_page.is_truncated(), out_page.next_record_name()) {
                        (true, Some(n)) => next = Some((n.to_string(), out_page.next_record_type().cloned())),
                        _ => break,
                    }
                }
                for n in names {
                    out.entry(n.clone()).or_default();
                }
                return Ok(out);
            }
        }
        for n in names {
            let state = self.read_name(zone, n).await?;
            out.insert(n.clone(), state);
        }
        Ok(out)
    }

    /// Computes the change for one key from what was read, or a conflict.
    fn plan(
        zone: &ZoneRef,
        name: &str,
        rtype: RecordType,
        ops: &[(Op, &Record)],
        state: &NameState,
    ) -> Result<Option<Plan>, ProviderError> {
        let type_key = rtype.as_str();
        let old = state.get(type_key).cloned();
        let others: Vec<&str> = state.keys().map(String::as_str).filter(|t| *t != type_key).collect();
        let new = rrset::merge(KIND, &zone.name, name, rtype, ops, old.as_ref(), &others, &ENCODING)?;
        if new == old {
            return Ok(None);
        }
        Ok(Some(Plan { name: name.to_string(), rtype, old, new }))
    }

    /// Adds and removes values, merging with whatever else the RRsets hold. Returns the change
    /// id that carried each key (absent when nothing had to change).
    async fn apply(
        &self,
        zone: &str,
        ops: &[(Op, &Record)],
    ) -> Result<HashMap<(String, RecordType), String>, ProviderError> {
        let zone = self.zone(zone).await?;
        let mut by_key: BTreeMap<(String, RecordType), Vec<(Op, &Record)>> = BTreeMap::new();
        for (op, record) in ops {
            let name = normalize_name(&record.name);
            if !crate::in_zone(&name, &zone.name) {
                return Err(ProviderError::Rejected {
                    provider: KIND,
                    code: None,
                    message: format!(
                        "{name} is not inside zone {}: route it to the provider serving its zone",
                        zone.name
                    ),
                });
            }
            by_key.entry((name, record.rtype)).or_default().push((*op, *record));
        }
        let guards =
            self.locks.lock_all(by_key.keys().map(|(name, rtype)| format!("{}|{name}|{rtype}", zone.name))).await;

        let (this, zone, by_key) = (self, &zone, &by_key);
        let done = rrset::apply_optimistically(
            KIND,
            &zone.name,
            by_key.keys().cloned().collect(),
            MAX_RACE_ATTEMPTS,
            |round| this.retry.backoff(round.min(4)) / 4,
            |plan: &Plan| (plan.name.clone(), plan.rtype),
            move |pending| async move {
                let names: BTreeSet<String> = pending.iter().map(|(n, _)| n.clone()).collect();
                let states =
                    this.read_names(zone, &names).await.map_err(|f| Self::fatal(f, "reading record sets"))?;
                let mut plans = Vec::new();
                for key in &pending {
                    let empty = NameState::new();
                    let state = states.get(&key.0).unwrap_or(&empty);
                    if let Some(plan) = Self::plan(zone, &key.0, key.1, &by_key[key], state)? {
                        plans.push(plan);
                    }
                }
                // chunk to Route53's limits, never splitting one key's DELETE + CREATE
                let mut chunks: Vec<Vec<Plan>> = Vec::new();
                let (mut n, mut c) = (0, 0);
                for plan in plans {
                    let (pn, pc) = plan.weight();
                    if chunks.is_empty() || n + pn > MAX_RECORDS_PER_BATCH || c + pc > MAX_CHARS_PER_BATCH {
                        chunks.push(Vec::new());
                        (n, c) = (0, 0);
                    }
                    (n, c) = (n + pn, c + pc);
                    chunks.last_mut().expect("a chunk was pushed").push(plan);
                }
                Ok(chunks)
            },
            move |round, chunk| async move {
                let changes: Vec<Change> = chunk.iter().flat_map(Plan::changes).collect();
                let batch = ChangeBatch::builder()
                    .comment("dcvd: DigiCert domain control validation")
                    .set_changes(Some(changes))
                    .build()
                    .expect("changes are set");
                let result = this
                    .call("ChangeResourceRecordSets", &zone.name, &zone.id, || {
                        this.client.change_resource_record_sets().hosted_zone_id(&zone.id).change_batch(batch.clone()).send()
                    })
                    .await;
                match result {
                    Ok(out) => {
                        let id = out
                            .change_info()
                            .map(|c| c.id().trim_start_matches("/change/").to_string())
                            .unwrap_or_default();
                        info!(zone = %zone.name, hosted_zone_id = %zone.id, change_id = %id, rrsets = chunk.len(), "route53 change submitted");
                        Ok(Submitted::Done(id))
                    }
                    Err(Failure::Race(message)) => {
                        warn!(zone = %zone.name, attempt = round, %message, "route53 record set changed meanwhile, reading it again");
                        Ok(Submitted::Race(message))
                    }
                    Err(other) => Err(Self::fatal(other, "changing record sets")),
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
impl DnsProvider for Route53Provider {
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
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        for id in ids {
            let polled = retry::poll_until(Duration::from_millis(500), Duration::from_secs(10), deadline, || async {
                let out = self
                    .call("GetChange", "-", "-", || self.client.get_change().id(id).send())
                    .await
                    .map_err(|f| Self::fatal(f, "waiting for a change"))?;
                let status = out.change_info().map(|c| c.status().clone());
                Ok(if status == Some(ChangeStatus::Insync) { Ok(()) } else { Err(status) })
            })
            .await?;
            if let Err(status) = polled {
                return Err(ProviderError::Transient {
                    provider: KIND,
                    message: format!(
                        "change {id} still {status:?} after {timeout:?}: Route53 has not applied it to its name servers yet"
                    ),
                });
            }
            let took = started.elapsed();
            info!(change_id = id, took_ms = took.as_millis() as u64, "route53 change INSYNC");
            if let Some(observe) = &self.on_insync {
                (observe.0)(id, took);
            }
        }
        Ok(())
    }

    async fn preflight(&self) -> Result<(), ProviderError> {
        for zone in &self.zones {
            let z = self.zone(zone).await?;
            self.call("ListResourceRecordSets", &z.name, &z.id, || {
                self.client.list_resource_record_sets().hosted_zone_id(&z.id).max_items(1).send()
            })
            .await
            .map_err(|f| Self::fatal(f, "reading record sets"))?;
            debug!(zone = %z.name, hosted_zone_id = %z.id, "route53 preflight ok");
        }
        Ok(())
    }

    async fn list(&self, zone: &str, name: &str, rtype: RecordType) -> Result<Vec<String>, ProviderError> {
        let zone = self.zone(zone).await?;
        let name = normalize_name(name);
        let state = self.read_name(&zone, &name).await.map_err(|f| Self::fatal(f, "reading record sets"))?;
        Ok(state
            .get(rtype.as_str())
            .map(|s| s.values.iter().map(|v| decode_value(rtype, v)).collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route53_names_are_unescaped_and_normalized() {
        assert_eq!(route53_name("\\052.Example.COM."), "*.example.com");
        assert_eq!(route53_name("_dnsauth.example.com."), "_dnsauth.example.com");
    }

    #[test]
    fn race_messages_are_recognized() {
        assert!(is_race_message(
            "Tried to delete resource record set [name='a.', type='TXT'] but the values provided do not match the current values"
        ));
        assert!(is_race_message("Tried to create resource record set [name='a.', type='TXT'] but it already exists"));
        assert!(!is_race_message("RRSet with DNS name a. is not permitted in zone b."));
    }

    fn zone() -> ZoneRef {
        ZoneRef { name: "example.com".into(), id: "Z1".into() }
    }

    #[test]
    fn merge_keeps_foreign_values_and_deletes_exactly_what_was_read() {
        let ours = Record::txt("_dnsauth.example.com", "tok");
        let mut state = NameState::new();
        state.insert("TXT".into(), RrSet { ttl: 300, values: vec!["\"foreign\"".into()] });
        let plan = Route53Provider::plan(&zone(), "_dnsauth.example.com", RecordType::Txt, &[(Op::Add, &ours)], &state)
            .expect("no conflict")
            .expect("a change");
        assert_eq!(plan.old, Some(RrSet { ttl: 300, values: vec!["\"foreign\"".into()] }));
        assert_eq!(plan.new, Some(RrSet { ttl: 60, values: vec!["\"foreign\"".into(), "\"tok\"".into()] }));

        let mut state = NameState::new();
        state.insert("TXT".into(), plan.new.clone().expect("new"));
        let removal =
            Route53Provider::plan(&zone(), "_dnsauth.example.com", RecordType::Txt, &[(Op::Remove, &ours)], &state)
                .expect("no conflict")
                .expect("a change");
        assert_eq!(removal.new, Some(RrSet { ttl: 60, values: vec!["\"foreign\"".into()] }));
        // publishing again is a no-op
        assert!(
            Route53Provider::plan(&zone(), "_dnsauth.example.com", RecordType::Txt, &[(Op::Add, &ours)], &state)
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn cname_next_to_txt_is_a_conflict() {
        let cname = Record::cname("_dnsauth.example.com", "x.dcv.digicert.com");
        let mut state = NameState::new();
        state.insert("TXT".into(), RrSet { ttl: 60, values: vec!["\"v\"".into()] });
        let err =
            Route53Provider::plan(&zone(), "_dnsauth.example.com", RecordType::Cname, &[(Op::Add, &cname)], &state)
                .err()
                .expect("conflict");
        assert!(matches!(err, ProviderError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().starts_with("route53: "));
    }
}
