//! The baseline: what a simple script does. Per order: fetch the random value, publish the TXT
//! record, call `check-dcv` every `interval` until DigiCert says valid, remove the record. No
//! propagation check; the same CertCentral client (with the same client-side rate limiter) and
//! the same memory provider as dcvd, so only the strategy differs.

use std::sync::Arc;
use std::time::Duration;

use certcentral::{Client, ClientConfig, RateWindow};
use dns_provider::DnsProvider as _;
use dns_provider::Record;
use dns_provider::memory::{MemoryDnsServer, MemoryProvider, MemoryStore};
use secrecy::SecretString;
use tokio::task::JoinSet;

use crate::child::{ChildSpec, Outcome, order_domain, unix_ms_now, unix_ms_of};

/// A CertCentral client for the simulator with the scenario's windows.
pub fn client(spec: &ChildSpec) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(spec.sim_base_url.clone(), SecretString::from(spec.api_key.clone()));
    cfg.rate_limits = spec.scenario.windows.iter().map(|w| RateWindow::new(w.requests, w.per())).collect();
    cfg.allow_insecure_http = true;
    Client::new(cfg).map_err(|e| anyhow::anyhow!("certcentral client: {e}"))
}

/// Runs every order of `spec` with fixed-interval polling.
pub async fn run(spec: &ChildSpec, interval: Duration) -> anyhow::Result<Outcome> {
    let store = MemoryStore::new();
    let server = Arc::new(crate::child::start_dns(store.clone(), spec).await?);
    let client = client(spec)?;
    let provider = Arc::new(MemoryProvider::new(vec![spec.zone.clone()], store.clone()));
    let started_unix_ms = unix_ms_now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(spec.deadline_s);
    let mut tasks = JoinSet::new();
    for id in spec.order_ids() {
        let job = Job {
            client: client.clone(),
            provider: provider.clone(),
            server: server.clone(),
            zone: spec.zone.clone(),
            id,
            interval,
            deadline,
        };
        tasks.spawn(async move { (id, job.run().await) });
    }
    let mut out = Outcome { started_unix_ms, store, ..Outcome::default() };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((id, result)) => {
                if let Some(at) = result.visible {
                    out.visible.insert(id, at);
                }
                match result.error {
                    None => out.valid += 1,
                    Some(e) if out.errors.len() < 10 => out.errors.push(format!("order {id}: {e}")),
                    Some(_) => {}
                }
            }
            Err(e) => out.errors.push(format!("order task: {e}")),
        }
    }
    out.finished_unix_ms = unix_ms_now();
    out.server_queries = server.queries();
    Ok(out)
}

struct Job {
    client: Client,
    provider: Arc<MemoryProvider>,
    server: Arc<MemoryDnsServer>,
    zone: String,
    id: u64,
    interval: Duration,
    deadline: tokio::time::Instant,
}

struct JobResult {
    visible: Option<i64>,
    error: Option<String>,
}

impl Job {
    async fn run(self) -> JobResult {
        let value = match self.client.dcv_random_value(self.id).await {
            Ok(v) => v.dcv_random_value,
            Err(e) => return JobResult { visible: None, error: Some(format!("random value: {e}")) },
        };
        let record = Record::txt(format!("_dnsauth.{}", order_domain(self.id, &self.zone)), value);
        if let Err(e) = self.provider.publish(&self.zone, &record).await {
            return JobResult { visible: None, error: Some(format!("publish: {e}")) };
        }
        let visible = self.server.visible_everywhere_at(&record.name, &record.value).map(unix_ms_of);
        let error = self.poll().await.err();
        if let Err(e) = self.provider.remove(&self.zone, &record).await {
            return JobResult { visible, error: Some(format!("remove: {e}")) };
        }
        JobResult { visible, error }
    }

    async fn poll(&self) -> Result<(), String> {
        loop {
            if tokio::time::Instant::now() + self.interval > self.deadline {
                return Err("deadline reached before DigiCert saw the record".into());
            }
            tokio::time::sleep(self.interval).await;
            match self.client.check_dcv(self.id).await {
                Ok(r) if r.is_valid() => return Ok(()),
                Ok(_) => {}
                Err(e) if e.is_not_found_yet() || e.is_retryable() => {}
                Err(e) => return Err(format!("check-dcv: {e}")),
            }
        }
    }
}
