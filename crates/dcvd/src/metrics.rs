//! Prometheus metrics (prometheus-client) and the optional `/metrics` + `/healthz` endpoint.

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
use prometheus_client::registry::Registry;

use crate::store::UnitState;

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
    rate_limit_wait: Counter<f64, AtomicU64>,
    account_condition: Family<ConditionLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabel {
    condition: String,
}

/// The account condition `dcvd_account_condition` reports (1 while it holds).
const API_KEY_REFUSED: &str = "api_key_refused";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dcvd");
        let units = Family::<StateLabel, Gauge>::default();
        registry.register("units", "Units by state", units.clone());
        let requests = Family::<RequestLabel, Counter>::default();
        registry.register("certcentral_requests", "CertCentral requests by endpoint and HTTP status", requests.clone());
        let provider_calls = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "provider_calls",
            "DNS provider calls by provider, operation and result",
            provider_calls.clone(),
        );
        let propagation = Histogram::new(exponential_buckets(0.25, 2.0, 14));
        registry.register(
            "propagation_seconds",
            "Time from publishing to every name server serving",
            propagation.clone(),
        );
        let validation = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "validation_seconds",
            "Time from a unit's creation to DigiCert reporting it valid",
            validation.clone(),
        );
        let rate_limit_wait = Counter::<f64, AtomicU64>::default();
        registry.register(
            "rate_limit_wait_seconds",
            "Time spent waiting for the client-side rate limiter",
            rate_limit_wait.clone(),
        );
        let account_condition = Family::<ConditionLabel, Gauge>::default();
        registry.register(
            "account_condition",
            "Account-wide conditions that pause every unit (1 while they hold): api_key_refused",
            account_condition.clone(),
        );
        let _ = account_condition.get_or_create(&ConditionLabel { condition: API_KEY_REFUSED.into() });
        Self { registry, units, requests, provider_calls, propagation, validation, rate_limit_wait, account_condition }
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

    /// Counts one CertCentral call.
    pub fn observe_certcentral(&self, call: &certcentral::CallRecord) {
        let status = call.status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.requests.get_or_create(&RequestLabel { endpoint: call.endpoint.as_str().into(), status }).inc();
        self.rate_limit_wait.inc_by(call.rate_limit_wait.as_secs_f64());
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
                async move {
                    if refused {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "CertCentral refuses the API key: every unit is paused\n",
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
