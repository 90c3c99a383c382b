//! dcvd as a strategy: its own configuration parser and engine (`dcvd::engine::run` in
//! `Mode::Once`), unchanged, with the `memory` provider. The provider's store is created through
//! `dcvd::providers::build` before the engine starts, so that the benchmark's name servers (with
//! the scenario's lag model) serve exactly the store the engine writes into.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dcvd::engine::{Mode, NoObserver};
use dcvd::store::UnitState;

use crate::child::{ChildSpec, Outcome, Sampler, order_domain, order_of_record, unix_ms_now};

/// Name of the memory provider in the generated configuration.
pub const PROVIDER: &str = "bench";

/// The dcvd configuration for `spec` (TOML), reading the API key from `key_file`.
pub fn render_config(spec: &ChildSpec, key_file: &str, state_dir: &str) -> String {
    let port = spec.dns_addrs.first().map_or(53, |a| a.port());
    let resolver = spec.dns_addrs.first().map_or_else(|| "127.0.0.1:53".to_string(), ToString::to_string);
    let windows: Vec<String> = spec
        .scenario
        .windows
        .iter()
        .map(|w| format!("{{ requests = {}, per = \"{}ms\" }}", w.requests, w.per_ms))
        .collect();
    let k = &spec.dcvd;
    let mut t = String::new();
    let _ = writeln!(t, "[certcentral]");
    let _ = writeln!(t, "base_url = {:?}", spec.sim_base_url);
    let _ = writeln!(t, "api_key_file = {key_file:?}");
    let _ = writeln!(t, "rate_limits = [{}]", windows.join(", "));
    // the simulator runs with the exact scope: one record per order (see runner.rs)
    let _ = writeln!(t, "validation_scope = \"exact\"");
    let _ = writeln!(t, "\n[daemon]");
    let _ = writeln!(t, "state_dir = {state_dir:?}");
    let _ = writeln!(t, "rescan = \"off\"");
    let _ = writeln!(t, "log_format = \"text\"");
    if let Some(n) = k.max_concurrent {
        let _ = writeln!(t, "max_concurrent = {n}");
    }
    let _ = writeln!(t, "\n[propagation]");
    let _ = writeln!(t, "resolvers = [\"{resolver}\"]");
    let _ = writeln!(t, "nameserver_port = {port}");
    if let Some(ms) = k.poll_min_ms {
        let _ = writeln!(t, "poll_min = \"{ms}ms\"");
    }
    if let Some(ms) = k.poll_max_ms {
        let _ = writeln!(t, "poll_max = \"{ms}ms\"");
    }
    if let Some(n) = k.max_qps {
        let _ = writeln!(t, "max_queries_per_second = {n}");
    }
    let _ = writeln!(t, "\n[check]");
    if let Some(ms) = k.check_min_ms {
        let _ = writeln!(t, "min_interval = \"{ms}ms\"");
    }
    if let Some(ms) = k.check_max_ms {
        let _ = writeln!(t, "max_interval = \"{ms}ms\"");
    }
    let _ = writeln!(t, "\n[providers.{PROVIDER}]");
    let _ = writeln!(t, "type = \"memory\"");
    let _ = writeln!(t, "zones = [{:?}]", spec.zone);
    for id in spec.order_ids() {
        let _ = writeln!(
            t,
            "\n[[order]]\nid = {id}\nmethod = \"dns-txt-token\"\ndomains = [{:?}]",
            order_domain(id, &spec.zone)
        );
    }
    t
}

/// Runs dcvd's engine over every order of `spec`.
pub async fn run(spec: &ChildSpec) -> anyhow::Result<Outcome> {
    let key_file = spec.work_dir.join("certcentral-api-key");
    write_secret(&key_file, &spec.api_key)?;
    let state_dir = spec.work_dir.join("state");
    let text = render_config(spec, &key_file.display().to_string(), &state_dir.display().to_string());
    let config_path = spec.work_dir.join("dcvd-bench.toml");
    std::fs::write(&config_path, &text)?;

    // The clock starts before dcvd parses its configuration: that is part of its work.
    let started_unix_ms = unix_ms_now();
    let config = dcvd::config::Config::from_toml_named(&text, &config_path)
        .map_err(|e| anyhow::anyhow!("generated dcvd configuration: {e}"))?;
    let provider = config.providers.get(PROVIDER).context("generated configuration lacks the memory provider")?;
    // Registers the provider's store in dcvd's process-wide registry; the engine reuses it.
    dcvd::providers::build(PROVIDER, provider).await.context("memory provider")?;
    let (store, _) = dcvd::providers::memory_store(PROVIDER).context("memory provider store not registered")?;
    let server = Arc::new(crate::child::start_dns(store.clone(), spec).await?);
    let sampler = Sampler::spawn(store.clone(), server.clone(), Duration::from_millis(50));

    let db = Arc::new(dcvd::store::Store::open(&config.daemon.state_dir).context("dcvd state store")?);
    let (_control, rx) = tokio::sync::mpsc::channel(1);
    let deadline = Duration::from_secs(spec.deadline_s);
    let summary = dcvd::engine::run(
        config,
        db,
        Arc::new(dcvd::metrics::Metrics::new()),
        Mode::Once,
        rx,
        Arc::new(NoObserver),
        tokio::time::sleep(deadline),
    )
    .await
    .context("dcvd engine")?;
    let finished_unix_ms = unix_ms_now();

    let mut out = Outcome { started_unix_ms, finished_unix_ms, store, ..Outcome::default() };
    for (name, at) in sampler.finish() {
        if let Some(id) = order_of_record(&name) {
            out.visible.insert(id, at);
        }
    }
    for unit in &summary.units {
        if matches!(unit.state, UnitState::Valid | UnitState::CleanedUp) {
            out.valid += 1;
        } else if out.errors.len() < 10 {
            out.errors.push(format!(
                "{}: {} {}",
                unit.unit,
                unit.state.as_str(),
                unit.last_error.as_deref().unwrap_or("")
            ));
        }
    }
    out.server_queries = server.queries();
    Ok(out)
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Scenario, Strategy};

    #[test]
    fn renders_a_configuration_dcvd_accepts() {
        let spec = ChildSpec {
            strategy: Strategy::Dcvd,
            scenario: Scenario { orders: 3, ..Scenario::quick() },
            sim_base_url: "http://127.0.0.1:9/services/v2".into(),
            api_key: "k".into(),
            dns_addrs: vec!["127.0.0.1:20053".parse().unwrap(), "127.0.0.2:20053".parse().unwrap()],
            zone: "bench.test".into(),
            first_id: 7,
            deadline_s: 60,
            work_dir: std::env::temp_dir(),
            dcvd: crate::child::DcvdKnobs { max_qps: Some(500), poll_max_ms: Some(1000), ..Default::default() },
            log: "warn".into(),
        };
        let dir = std::env::temp_dir().join(format!("dcvd-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        write_secret(&key, "k").unwrap();
        let text = render_config(&spec, &key.display().to_string(), &dir.join("state").display().to_string());
        let config = dcvd::config::Config::from_toml_named(&text, &dir.join("x.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
        let config = config.unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.units.len(), 3);
        assert_eq!(config.propagation.nameserver_port, 20053);
        assert_eq!(config.propagation.max_queries_per_second, 500);
        assert_eq!(config.certcentral.rate_limits.len(), 2);
        assert_eq!(config.certcentral.rate_limits[0].requests, 100);
    }
}
