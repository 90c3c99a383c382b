//! Prometheus metrics (prometheus-client) and the optional `/metrics` + `/healthz` endpoint.
//!
//! The metric names are a contract with `deploy/prometheus/dcvd-rules.yml` and
//! `deploy/grafana/dcvd.json` (a test checks that every query there names a metric registered
//! here). Metrics only count and report: nothing here may change what the engine does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::store::{RecordRow, UnitRow, UnitState};

/// CertCentral endpoints that are DCV checks: a 2xx answer means DigiCert found the record.
const CHECK_ENDPOINTS: [certcentral::Endpoint; 2] =
    [certcentral::Endpoint::CheckDcv, certcentral::Endpoint::ValidateDomainToken];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit_kind: String,
    unit_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabel {
    sink: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabel {
    provider: String,
    unit_state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
    operation: String,
    result: String,
}

/// dcvd's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    units: Family<StateLabel, Gauge>,
    requests: Family<RequestLabel, Counter>,
    provider_calls: Family<ProviderLabel, Counter>,
    propagation: Histogram,
    validation: Histogram,
    change_sync: Family<ProviderNameLabel, Histogram, fn() -> Histogram>,
    rate_limit_wait: Counter<f64, AtomicU64>,
    account_condition: Family<ConditionLabel, Gauge>,
    token_expiry: Family<UnitLabel, Gauge>,
    live_records: Family<RecordLabel, Gauge>,
    last_successful_check: Gauge,
    scheduler_units: Family<PlaceLabel, Gauge>,
    notifications: Family<NotificationLabel, Counter>,
    notifications_dropped: Counter,
    discovery_scans: Family<ScanLabel, Counter>,
    leases: Family<LeaseLabel, Counter>,
    instance: Family<InstanceLabel, Gauge>,
    /// Every registered metric and its type, for [`Metrics::sample_names`].
    families: Vec<(&'static str, MetricType)>,
    /// Label sets set by the last [`Metrics::set_store_view`], to drop the ones that vanish.
    store_series: std::sync::Mutex<(Vec<UnitLabel>, Vec<RecordLabel>)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaceLabel {
    place: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabel {
    event: &'static str,
}

// Not `instance`: Prometheus sets that label on every scraped series itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabel {
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderNameLabel {
    provider: String,
}

fn change_sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 12))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabel {
    condition: String,
}

/// The account condition `dcvd_account_condition` reports (1 while it holds).
const API_KEY_REFUSED: &str = "api_key_refused";
/// The account condition of a CertCentral that does not answer (connection errors, timeouts,
/// 5xx after the client's retries).
const CERTCENTRAL_UNREACHABLE: &str = "certcentral_unreachable";
/// The condition of a state store that does not answer (PostgreSQL down or unreachable): units
/// pause once this instance's leases may have lapsed.
const STORE_UNAVAILABLE: &str = "store_unavailable";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dcvd");
        let mut families = Vec::new();
        let units = Family::<StateLabel, Gauge>::default();
        register(&mut registry, &mut families, "units", "Units by state", units.clone());
        let requests = Family::<RequestLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "certcentral_requests",
            "CertCentral requests by endpoint and HTTP status",
            requests.clone(),
        );
        let provider_calls = Family::<ProviderLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "provider_calls",
            "DNS provider calls by provider, operation and result",
            provider_calls.clone(),
        );
        let propagation = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        register(
            &mut registry,
            &mut families,
            "propagation_seconds",
            "Time from publishing to every name server serving",
            propagation.clone(),
        );
        let validation = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        register(
            &mut registry,
            &mut families,
            "validation_seconds",
            "Time from a unit's creation to DigiCert reporting it valid",
            validation.clone(),
        );
        let change_sync = Family::<ProviderNameLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            change_sync_histogram as fn() -> Histogram,
        );
        register(
            &mut registry,
            &mut families,
            "provider_change_sync_seconds",
            "Time from the start of the wait until a provider reported a change applied to its name \
             servers (Route 53 GetChange INSYNC), by provider",
            change_sync.clone(),
        );
        let rate_limit_wait = Counter::<f64, AtomicU64>::default();
        register(
            &mut registry,
            &mut families,
            "rate_limit_wait_seconds",
            "Time spent waiting for the client-side rate limiter",
            rate_limit_wait.clone(),
        );
        let token_expiry = Family::<UnitLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "unit_token_expiry_timestamp_seconds",
            "When the DCV token of a unit that is not yet valid expires (unix seconds)",
            token_expiry.clone(),
        );
        let live_records = Family::<RecordLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "live_records",
            "Records dcvd published and has not removed yet, by provider and the state of their unit",
            live_records.clone(),
        );
        let last_successful_check = Gauge::default();
        last_successful_check.set(unix_now());
        register(
            &mut registry,
            &mut families,
            "last_successful_check_timestamp_seconds",
            "When DigiCert last answered a DCV check with success (unix seconds; the start of the \
             process until then)",
            last_successful_check.clone(),
        );
        let scheduler_units = Family::<PlaceLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "scheduler_units",
            "Units with work left, by place: running (a task acting for the unit) or waiting (a timer \
             entry until its next check or retry)",
            scheduler_units.clone(),
        );
        let notifications = Family::<NotificationLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "notifications",
            "Notifications by sink (hook, webhook) and result (delivered, failed after retries)",
            notifications.clone(),
        );
        let notifications_dropped = Counter::default();
        register(
            &mut registry,
            &mut families,
            "notifications_dropped",
            "Notifications dropped because the queue was full",
            notifications_dropped.clone(),
        );
        let discovery_scans = Family::<ScanLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "discovery_scans",
            "[discovery] scans of the CertCentral account by result (ok; failed: a list call failed and the units found before were kept)",
            discovery_scans.clone(),
        );
        for result in ["ok", "failed"] {
            let _ = discovery_scans.get_or_create(&ScanLabel { result: result.into() });
        }
        let leases = Family::<LeaseLabel, Counter>::default();
        register(
            &mut registry,
            &mut families,
            "leases",
            "Unit leases by event: claimed (this instance took a unit nobody held, or one whose lease \
             expired), lost (another instance took over a unit this one held)",
            leases.clone(),
        );
        for event in ["claimed", "lost"] {
            let _ = leases.get_or_create(&LeaseLabel { event });
        }
        let instance = Family::<InstanceLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "instance",
            "This process's instance id (`[store] instance`), the lease owner `dcvd status` shows; always 1",
            instance.clone(),
        );
        let account_condition = Family::<ConditionLabel, Gauge>::default();
        register(
            &mut registry,
            &mut families,
            "account_condition",
            "Conditions that pause every unit (1 while they hold): api_key_refused, \
             certcentral_unreachable, store_unavailable",
            account_condition.clone(),
        );
        for condition in [API_KEY_REFUSED, CERTCENTRAL_UNREACHABLE, STORE_UNAVAILABLE] {
            let _ = account_condition.get_or_create(&ConditionLabel { condition: condition.into() });
        }
        Self {
            registry,
            account_condition,
            units,
            requests,
            provider_calls,
            propagation,
            validation,
            change_sync,
            rate_limit_wait,
            token_expiry,
            live_records,
            last_successful_check,
            scheduler_units,
            notifications,
            notifications_dropped,
            discovery_scans,
            leases,
            instance,
            families,
            store_series: std::sync::Mutex::default(),
        }
    }

    /// Sets the `api_key_refused` account condition (it also fails `/healthz`).
    pub fn set_api_key_refused(&self, refused: bool) {
        self.account_condition
            .get_or_create(&ConditionLabel { condition: API_KEY_REFUSED.into() })
            .set(i64::from(refused));
    }

    /// Whether CertCentral currently refuses the API key.
    pub fn api_key_refused(&self) -> bool {
        self.account_condition.get_or_create(&ConditionLabel { condition: API_KEY_REFUSED.into() }).get() > 0
    }

    /// Sets the `certcentral_unreachable` account condition (it also fails `/healthz`).
    pub fn set_certcentral_unreachable(&self, unreachable: bool) {
        self.account_condition
            .get_or_create(&ConditionLabel { condition: CERTCENTRAL_UNREACHABLE.into() })
            .set(i64::from(unreachable));
    }

    /// Whether CertCentral is currently unreachable (every unit that needs it waits).
    pub fn certcentral_unreachable(&self) -> bool {
        self.account_condition.get_or_create(&ConditionLabel { condition: CERTCENTRAL_UNREACHABLE.into() }).get() > 0
    }

    /// Sets the `store_unavailable` condition (it also fails `/healthz`).
    pub fn set_store_unavailable(&self, unavailable: bool) {
        self.account_condition
            .get_or_create(&ConditionLabel { condition: STORE_UNAVAILABLE.into() })
            .set(i64::from(unavailable));
    }

    /// Whether the state store currently does not answer.
    pub fn store_unavailable(&self) -> bool {
        self.account_condition.get_or_create(&ConditionLabel { condition: STORE_UNAVAILABLE.into() }).get() > 0
    }

    /// Names this process's instance (`dcvd_instance{id}`).
    pub fn set_instance(&self, id: &str) {
        self.instance.clear();
        self.instance.get_or_create(&InstanceLabel { id: id.to_owned() }).set(1);
    }

    /// Counts one lease renewal's claims and losses.
    pub fn observe_leases(&self, claimed: usize, lost: usize) {
        self.leases.get_or_create(&LeaseLabel { event: "claimed" }).inc_by(claimed as u64);
        self.leases.get_or_create(&LeaseLabel { event: "lost" }).inc_by(lost as u64);
    }

    /// The names every sample of a scrape can have (`dcvd_units`, `dcvd_certcentral_requests_total`,
    /// `dcvd_propagation_seconds_bucket`, ...), whether or not a series exists yet: what queries
    /// of dashboards and alerts may name.
    pub fn sample_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (name, kind) in &self.families {
            let suffixes: &[&str] = match kind {
                MetricType::Counter => &["_total"],
                MetricType::Histogram => &["_bucket", "_sum", "_count"],
                MetricType::Info => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("dcvd_{name}{suffix}")));
        }
        names
    }

    /// Sets the per-unit token expiry and the live record gauges from the state store's units and
    /// live records (units that are valid or terminal have no expiry series: their token no longer
    /// matters).
    pub fn set_store_view(&self, units: &[UnitRow], live_records: &[RecordRow]) {
        let mut expiring = Vec::new();
        for unit in units {
            let (Some(expires), false) =
                (unit.token_expires_at, unit.state == UnitState::Valid || unit.state.is_terminal())
            else {
                continue;
            };
            let label = UnitLabel { unit_kind: unit.unit.kind.as_str().into(), unit_id: unit.unit.id.to_string() };
            self.token_expiry.get_or_create(&label).set(expires);
            expiring.push(label);
        }
        let mut records: BTreeMap<(String, String), i64> = BTreeMap::new();
        for record in live_records {
            let state = units.iter().find(|u| u.unit == record.unit).map_or("unknown", |u| u.state.as_str());
            *records.entry((record.provider.clone(), state.to_owned())).or_default() += 1;
        }
        let mut record_labels = Vec::new();
        for ((provider, unit_state), n) in records {
            let label = RecordLabel { provider, unit_state };
            self.live_records.get_or_create(&label).set(n);
            record_labels.push(label);
        }
        let mut previous = self.store_series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in previous.0.iter().filter(|l| !expiring.contains(l)) {
            self.token_expiry.remove(gone);
        }
        for gone in previous.1.iter().filter(|l| !record_labels.contains(l)) {
            self.live_records.remove(gone);
        }
        *previous = (expiring, record_labels);
    }

    /// Makes a provider's series exist before its first call.
    pub fn register_provider(&self, name: &str) {
        for op in ["publish", "remove"] {
            let _ = self.provider_calls.get_or_create(&ProviderLabel {
                provider: name.into(),
                operation: op.into(),
                result: "ok".into(),
            });
        }
    }

    /// Records how long a provider change took to be applied (Route 53 `INSYNC`).
    pub fn observe_change_sync(&self, provider: &str, took: Duration) {
        self.change_sync.get_or_create(&ProviderNameLabel { provider: provider.into() }).observe(took.as_secs_f64());
    }

    /// Counts one CertCentral call.
    pub fn observe_certcentral(&self, call: &certcentral::CallRecord) {
        let status = call.status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.requests.get_or_create(&RequestLabel { endpoint: call.endpoint.as_str().into(), status }).inc();
        self.note_check(call.endpoint, call.status, unix_now());
        self.rate_limit_wait.inc_by(call.rate_limit_wait.as_secs_f64());
    }

    /// Moves the last-successful-check time to `now` when `endpoint` is a DCV check answered 2xx.
    fn note_check(&self, endpoint: certcentral::Endpoint, status: Option<u16>, now: i64) {
        if CHECK_ENDPOINTS.contains(&endpoint) && status.is_some_and(|s| (200..300).contains(&s)) {
            self.last_successful_check.set(now);
        }
    }

    /// Counts one notification that was delivered or given up (`result`) by `sink`.
    pub fn observe_notification(&self, sink: &str, result: &str) {
        self.notifications.get_or_create(&NotificationLabel { sink: sink.into(), result: result.into() }).inc();
    }

    /// Counts one discovery scan (`failed`: a list call failed, the previous units were kept).
    pub fn observe_discovery_scan(&self, failed: bool) {
        let result = if failed { "failed" } else { "ok" };
        self.discovery_scans.get_or_create(&ScanLabel { result: result.into() }).inc();
    }

    /// Counts one notification dropped because the queue was full.
    pub fn observe_notification_dropped(&self) {
        self.notifications_dropped.inc();
    }

    /// Counts one provider call.
    pub fn observe_provider(&self, provider: &str, operation: &str, ok: bool, _elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.provider_calls
            .get_or_create(&ProviderLabel {
                provider: provider.into(),
                operation: operation.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Records how long propagation took.
    pub fn observe_propagation(&self, d: Duration) {
        self.propagation.observe(d.as_secs_f64());
    }

    /// Records how long validation took.
    pub fn observe_validation(&self, d: Duration) {
        self.validation.observe(d.as_secs_f64());
    }

    /// Sets how many units run as tasks and how many wait in the timer queue.
    pub fn set_scheduler_units(&self, running: usize, waiting: usize) {
        self.scheduler_units.get_or_create(&PlaceLabel { place: "running" }).set(running as i64);
        self.scheduler_units.get_or_create(&PlaceLabel { place: "waiting" }).set(waiting as i64);
    }

    /// Sets the units-by-state gauges.
    pub fn set_unit_counts(&self, counts: &BTreeMap<UnitState, u64>) {
        for state in [
            UnitState::Pending,
            UnitState::TokenIssued,
            UnitState::Published,
            UnitState::Propagated,
            UnitState::Checking,
            UnitState::Valid,
            UnitState::CleanedUp,
            UnitState::Expired,
            UnitState::Failed,
            UnitState::Removed,
        ] {
            let n = counts.get(&state).copied().unwrap_or(0);
            self.units.get_or_create(&StateLabel { state: state.as_str().into() }).set(n as i64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Registers `metric` and notes its name and type.
fn register<M: prometheus_client::registry::Metric + TypedMetric>(
    registry: &mut Registry,
    families: &mut Vec<(&'static str, MetricType)>,
    name: &'static str,
    help: &str,
    metric: M,
) {
    families.push((name, M::TYPE));
    registry.register(name, help, metric);
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Keeps the gauges fed from the state store ([`Metrics::set_store_view`]) fresh: reads the
/// store every `every` (off the async workers: SQLite blocks) until `stop` fires.
pub fn spawn_store_view(
    store: Arc<crate::store::Store>,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (store, metrics) = (store.clone(), metrics.clone());
            let refreshed = tokio::task::spawn_blocking(move || {
                let units = store.units()?;
                let records = store.live_records()?;
                metrics.set_store_view(&units, &records);
                Ok::<_, crate::store::StoreError>(())
            })
            .await;
            if let Ok(Err(error)) = refreshed {
                tracing::warn!(%error, "cannot read the state store for metrics");
            }
        }
    })
}

/// Serves `/metrics` and `/healthz` on `listen` until `shutdown` fires.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let health = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let refused = health.api_key_refused();
                let unreachable = health.certcentral_unreachable();
                let store_down = health.store_unavailable();
                async move {
                    if store_down {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "the state store does not answer: units pause once this instance's leases may have lapsed\n",
                        )
                    } else if refused {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "CertCentral refuses the API key: every unit is paused\n",
                        )
                    } else if unreachable {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "CertCentral is unreachable: every unit is paused\n",
                        )
                    } else {
                        (axum::http::StatusCode::OK, "ok\n")
                    }
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RecordStatus, UnitId};

    fn unit(id: UnitId, state: UnitState, expires: Option<i64>) -> UnitRow {
        let mut row = UnitRow::new_pending(id, "dns-txt-token", &["example.com".into()], None, 0);
        row.state = state;
        row.token = expires.map(|_| "tok".into());
        row.token_expires_at = expires;
        row
    }

    fn record(id: i64, unit: UnitId, provider: &str) -> RecordRow {
        RecordRow {
            id,
            unit,
            provider: provider.into(),
            zone: "example.com".into(),
            name: "_dnsauth.example.com".into(),
            rtype: dns_provider::RecordType::Txt,
            value: "tok".into(),
            ttl: 60,
            provider_id: None,
            change_id: None,
            status: RecordStatus::Published,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        m.encode().lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
    }

    /// Token expiries are exported for units not yet valid only, and vanish once a unit is
    /// valid; live records are counted by provider and the state of their unit.
    #[test]
    fn store_view_exports_pending_token_expiries_and_live_records() {
        let m = Metrics::new();
        let (a, b, c) = (UnitId::order(1), UnitId::domain(2), UnitId::order(3));
        let units = [
            unit(a, UnitState::Published, Some(1_900_000_000)),
            unit(b, UnitState::Checking, Some(1_900_000_500)),
            unit(c, UnitState::Failed, Some(1_800_000_000)),
        ];
        let records = [record(1, a, "cf"), record(2, a, "cf"), record(3, c, "cf"), record(4, b, "bind")];
        m.set_store_view(&units, &records);
        let mut expiry = lines(&m, "dcvd_unit_token_expiry_timestamp_seconds{");
        expiry.sort();
        assert_eq!(
            expiry,
            [
                "dcvd_unit_token_expiry_timestamp_seconds{unit_kind=\"domain\",unit_id=\"2\"} 1900000500",
                "dcvd_unit_token_expiry_timestamp_seconds{unit_kind=\"order\",unit_id=\"1\"} 1900000000",
            ]
        );
        let mut live = lines(&m, "dcvd_live_records{");
        live.sort();
        assert_eq!(
            live,
            [
                "dcvd_live_records{provider=\"bind\",unit_state=\"checking\"} 1",
                "dcvd_live_records{provider=\"cf\",unit_state=\"failed\"} 1",
                "dcvd_live_records{provider=\"cf\",unit_state=\"published\"} 2",
            ]
        );

        // Unit 1 is valid and its records are gone; unit 3's record is still there.
        let units = [
            unit(a, UnitState::Valid, Some(1_900_000_000)),
            unit(b, UnitState::Checking, Some(1_900_000_500)),
            unit(c, UnitState::Failed, Some(1_800_000_000)),
        ];
        m.set_store_view(&units, &[record(3, c, "cf")]);
        assert_eq!(
            lines(&m, "dcvd_unit_token_expiry_timestamp_seconds{"),
            ["dcvd_unit_token_expiry_timestamp_seconds{unit_kind=\"domain\",unit_id=\"2\"} 1900000500"]
        );
        assert_eq!(lines(&m, "dcvd_live_records{"), ["dcvd_live_records{provider=\"cf\",unit_state=\"failed\"} 1"]);
    }

    /// Only a DCV check answered 2xx moves the last successful check; it starts at the process
    /// start so that "no success since" is measurable from the first scrape.
    #[test]
    fn last_successful_check_moves_on_a_successful_check_only() {
        let m = Metrics::new();
        let start = m.last_successful_check.get();
        assert!(start > 1_700_000_000, "starts at the current time: {start}");
        m.note_check(certcentral::Endpoint::CheckDcv, Some(400), start + 10);
        m.note_check(certcentral::Endpoint::CheckDcv, None, start + 11);
        m.note_check(certcentral::Endpoint::OrderInfo, Some(200), start + 12);
        assert_eq!(m.last_successful_check.get(), start);
        m.note_check(certcentral::Endpoint::CheckDcv, Some(200), start + 20);
        assert_eq!(m.last_successful_check.get(), start + 20);
        m.note_check(certcentral::Endpoint::ValidateDomainToken, Some(204), start + 30);
        assert_eq!(
            lines(&m, "dcvd_last_successful_check_timestamp_seconds "),
            [format!("dcvd_last_successful_check_timestamp_seconds {}", start + 30)]
        );
    }
}
