//! Everything a unit task needs, built once per configuration: the CertCentral client, the
//! provider router, the propagation checker, the store, metrics and the concurrency permits.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Semaphore;

use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::providers;
use crate::store::Store;

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
    /// The state store.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bounds concurrent external operations (API calls, provider calls); waits hold none.
    pub permits: Arc<Semaphore>,
}

impl Env {
    /// Builds the client, providers and checker for `config`.
    pub async fn build(config: Arc<Config>, store: Arc<Store>, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = build_client(&config.certcentral, &metrics)?;
        let mut router = dns_provider::Router::new();
        for (name, provider) in &config.providers {
            let built = providers::build(name, provider).await.with_context(|| format!("provider {name}"))?;
            metrics.register_provider(name);
            router.add(name.clone(), built);
        }
        let checker = propagation::Checker::new(checker_config(&config.propagation))
            .map_err(|e| anyhow::anyhow!("propagation checker: {e}"))?;
        let permits = Arc::new(Semaphore::new(config.daemon.max_concurrent.max(1)));
        Ok(Self { config, client, router, checker, store, metrics, permits })
    }
}

/// The client settings of `[certcentral]`.
pub fn build_client(cc: &config::CertCentral, metrics: &Arc<Metrics>) -> anyhow::Result<certcentral::Client> {
    let mut cfg = certcentral::ClientConfig::new(cc.base_url.clone(), cc.api_key.clone());
    cfg.timeout = cc.timeout;
    cfg.rate_limits =
        cc.rate_limits.iter().map(|r| certcentral::RateWindow { requests: r.requests, per: r.per }).collect();
    cfg.allow_insecure_http = cc.allow_insecure_http;
    let mut client = certcentral::Client::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let m = metrics.clone();
    client.set_observer(Arc::new(move |call: &certcentral::CallRecord| m.observe_certcentral(call)));
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
