//! Everything a unit task needs, built once per configuration: the CertCentral client, the
//! provider router, the propagation checker, the store, metrics and the concurrency permits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Semaphore;

use super::account::AccountGate;
use super::leases::Leases;
use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::providers;
use crate::store::StoreThread;

/// Shared by every unit task of one configuration generation.
#[derive(Debug)]
pub struct Env {
    /// The configuration these parts were built from.
    pub config: Arc<Config>,
    /// The CertCentral client (clones share the rate limiter).
    pub client: certcentral::Client,
    /// Provider instances by zone.
    pub router: dns_provider::Router,
    /// The propagation checker (clones share the zone cache and the query cap).
    pub checker: propagation::Checker,
    /// The state store, on its own thread (group commits; never called on a tokio worker).
    pub store: StoreThread,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent external operations (API calls, provider calls); waits hold none.
    pub permits: Arc<Semaphore>,
    /// The account-wide condition of the API key (`dcvd run`): a refused key pauses the units
    /// instead of failing them. `None` (`dcvd once`, `dcvd cleanup`): a refusal fails the unit.
    pub account: Option<Arc<AccountGate>>,
    /// Terminal unit states and account conditions go out through `[notify]` (never blocks).
    pub notifier: Notifier,
    /// Whether this instance may still act for the units it holds: no DigiCert or provider call
    /// goes out once its leases may have lapsed.
    pub leases: Arc<Leases>,
}

impl Env {
    /// Builds the client, providers and checker for `config`.
    /// Its leases never lapse: for commands that run alone (`dcvd cleanup`).
    pub async fn build(config: Arc<Config>, store: StoreThread, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        Self::build_with(config, store, metrics, None, Arc::new(Leases::unbounded())).await
    }

    /// [`build`](Self::build) with the account gate of `dcvd run` and the engine's leases.
    pub async fn build_with(
        config: Arc<Config>,
        store: StoreThread,
        metrics: Arc<Metrics>,
        account: Option<Arc<AccountGate>>,
        leases: Arc<Leases>,
    ) -> anyhow::Result<Self> {
        let client = guarded(build_shared_client(&config, &metrics, account.as_ref())?, &leases);
        let mut router = dns_provider::Router::new();
        for (name, provider) in &config.providers {
            let built = providers::build_with(name, provider, Some(metrics.clone()))
                .await
                .with_context(|| format!("provider {name}"))?;
            metrics.register_provider(name);
            router.add(name.clone(), built);
        }
        let checker = propagation::Checker::new(checker_config(&config.propagation))
            .map_err(|e| anyhow::anyhow!("propagation checker: {e}"))?;
        let permits = Arc::new(Semaphore::new(config.daemon.max_concurrent.max(1)));
        let notifier = Notifier::disabled(metrics.clone());
        Ok(Self { config, client, router, checker, store, metrics, permits, account, notifier, leases })
    }

    /// The parts for a reloaded `config`, reusing every part whose settings did not change: the
    /// client (so its rate limiter keeps counting across reloads and stays the one limiter of
    /// the process), the checker (zone cache, query cap), the permits and unchanged providers.
    pub async fn rebuild(&self, config: Arc<Config>) -> anyhow::Result<Self> {
        let client = if same_certcentral(&self.config.certcentral, &config.certcentral)
            && self.config.store.postgres.as_ref().map(|p| p.url()) == config.store.postgres.as_ref().map(|p| p.url())
        {
            self.client.clone()
        } else {
            guarded(build_shared_client(&config, &self.metrics, self.account.as_ref())?, &self.leases)
        };
        let checker = if self.config.propagation == config.propagation {
            self.checker.clone()
        } else {
            propagation::Checker::new(checker_config(&config.propagation))
                .map_err(|e| anyhow::anyhow!("propagation checker: {e}"))?
        };
        let permits = if self.config.daemon.max_concurrent == config.daemon.max_concurrent {
            self.permits.clone()
        } else {
            Arc::new(Semaphore::new(config.daemon.max_concurrent.max(1)))
        };
        let mut router = dns_provider::Router::new();
        for (name, provider) in &config.providers {
            // Settings compare by value, secrets included (`config::Provider: PartialEq`).
            let unchanged = self.config.providers.get(name) == Some(provider);
            let built = match (unchanged, self.router.provider(name)) {
                (true, Some(existing)) => existing.clone(),
                _ => providers::build_with(name, provider, Some(self.metrics.clone()))
                    .await
                    .with_context(|| format!("provider {name}"))?,
            };
            self.metrics.register_provider(name);
            router.add(name.clone(), built);
        }
        Ok(Self {
            config,
            client,
            router,
            checker,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            permits,
            account: self.account.clone(),
            notifier: self.notifier.clone(),
            leases: self.leases.clone(),
        })
    }

    /// `Err` when this instance may no longer act for its units (see [`Leases`]).
    pub fn may_act(&self) -> Result<(), String> {
        self.leases.check()
    }
}

/// `client`, refusing to send once this instance's leases may have lapsed: a request that waited
/// in the rate limiter while the process was paused must not go out for a unit another instance
/// may hold by now.
fn guarded(mut client: certcentral::Client, leases: &Arc<Leases>) -> certcentral::Client {
    let leases = leases.clone();
    client.set_send_guard(Arc::new(move || leases.check()));
    client
}

fn same_certcentral(a: &config::CertCentral, b: &config::CertCentral) -> bool {
    use secrecy::ExposeSecret as _;
    a.base_url == b.base_url
        && a.rate_limits == b.rate_limits
        && a.timeout == b.timeout
        && a.allow_insecure_http == b.allow_insecure_http
        && a.api_key.expose_secret() == b.api_key.expose_secret()
}

/// The engine's client: [`build_client`], counting its calls in the database's shared ledger
/// when the store is PostgreSQL (every instance using the API key counts together, and a
/// restarted instance knows what it sent before).
fn build_shared_client(
    config: &Config,
    metrics: &Arc<Metrics>,
    account: Option<&Arc<AccountGate>>,
) -> anyhow::Result<certcentral::Client> {
    let shared: Option<Arc<dyn certcentral::SharedWindows>> = match &config.store.postgres {
        Some(pg) => {
            let (settings, tls) = pg.connection_settings().map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(Arc::new(crate::shared_limit::PgSharedWindows::new(settings, tls, &config.certcentral.api_key)))
        }
        None => None,
    };
    build_client_with(&config.certcentral, metrics, account, shared)
}

/// The client settings of `[certcentral]`, its limiter counting in this process only.
pub fn build_client(
    cc: &config::CertCentral,
    metrics: &Arc<Metrics>,
    account: Option<&Arc<AccountGate>>,
) -> anyhow::Result<certcentral::Client> {
    build_client_with(cc, metrics, account, None)
}

fn build_client_with(
    cc: &config::CertCentral,
    metrics: &Arc<Metrics>,
    account: Option<&Arc<AccountGate>>,
    shared: Option<Arc<dyn certcentral::SharedWindows>>,
) -> anyhow::Result<certcentral::Client> {
    let mut cfg = certcentral::ClientConfig::new(cc.base_url.clone(), cc.api_key.clone());
    cfg.shared_windows = shared;
    cfg.timeout = cc.timeout;
    cfg.rate_limits =
        cc.rate_limits.iter().map(|r| certcentral::RateWindow { requests: r.requests, per: r.per }).collect();
    cfg.allow_insecure_http = cc.allow_insecure_http;
    let max_attempts = cfg.retry.max_attempts;
    let mut client = certcentral::Client::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let m = metrics.clone();
    let gate = account.cloned();
    let base_url = cc.base_url.clone();
    client.set_observer(Arc::new(move |call: &certcentral::CallRecord| {
        m.observe_certcentral(call);
        let Some(gate) = &gate else { return };
        match call.status {
            // Any answer about the request (not 401/403, not a 429 or 5xx that says nothing about
            // the key) shows that CertCentral is reachable and accepts the key.
            Some(status) if !matches!(status, 401 | 403 | 429) && status < 500 => gate.accepted(),
            // The last attempt of a call got nothing usable: the client gave up on CertCentral.
            // (401/403 are reported by the unit, with DigiCert's message.)
            None | Some(500..) if call.attempt >= max_attempts => {
                let got = call
                    .status
                    .map_or_else(|| "no answer (connection error or timeout)".to_owned(), |s| format!("HTTP {s}"));
                gate.unreachable(&format!(
                    "certcentral: {} at {base_url}: {got} after {} attempts",
                    call.endpoint.as_str(),
                    call.attempt
                ));
            }
            _ => {}
        }
    }));
    Ok(client)
}

/// The checker settings of `[propagation]`.
pub fn checker_config(p: &config::Propagation) -> propagation::CheckerConfig {
    propagation::CheckerConfig {
        resolvers: p
            .resolvers
            .iter()
            .map(|r| match r {
                config::Resolver::System => propagation::ResolverSpec::System,
                config::Resolver::Addr(a) => propagation::ResolverSpec::Addr(*a),
            })
            .collect(),
        mode: match p.check {
            config::PropagationMode::Authoritative => propagation::Mode::Authoritative,
            config::PropagationMode::Resolvers => propagation::Mode::Resolvers,
            config::PropagationMode::Both => propagation::Mode::Both,
        },
        nameserver_port: p.nameserver_port,
        poll_min: p.poll_min,
        poll_max: p.poll_max,
        query_timeout: Duration::from_secs(2).min(p.poll_max.max(Duration::from_millis(500))),
        max_queries_per_second: p.max_queries_per_second,
    }
}
