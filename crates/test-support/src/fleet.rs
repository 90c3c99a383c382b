//! Several dcvd processes on one shared PostgreSQL store, and a monitor of the zone they publish
//! into: what the high-availability tests and benchmark drive.
//!
//! An [`Instance`] is one `dcvd run` with its own directory, configuration file, log and metrics
//! address, and a `[store]` section naming the shared database. A [`ZoneMonitor`] transfers a
//! zone every ~100 ms and flags a name holding two values at once or a value published again
//! after its removal (either means a token was used twice or a record came back).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Dcvd, Harness, SimProc, axfr, eventually, signal, tail};
use crate::postgres::{PASSWORD, PgCluster};

/// One dcvd instance on a shared PostgreSQL store.
pub struct Instance {
    /// Its id (`[store] instance`).
    pub name: String,
    /// Its directory, configuration and log.
    pub dcvd: Dcvd,
    child: Option<Child>,
    metrics_port: u16,
    store_section: String,
}

impl Instance {
    /// An instance named `name` against `sim`, storing in `pg`'s database `db` with leases of
    /// `lease_ttl` (a humantime string).
    pub fn new(harness: &Harness, sim: &SimProc, name: &str, pg: &PgCluster, db: &str, lease_ttl: &str) -> Self {
        let dcvd = harness.dcvd(sim);
        let password = dcvd.secret_file("pg-password", PASSWORD);
        let store_section = format!(
            "[store]\nurl = \"{}\"\npassword_file = \"{}\"\ninstance = \"{name}\"\nlease_ttl = \"{lease_ttl}\"\n",
            pg.url(db),
            password.display()
        );
        Self { name: name.to_owned(), dcvd, child: None, metrics_port: crate::ports::free_port(), store_section }
    }

    /// Writes the configuration: the harness's (propagation through `dns_port`), this instance's
    /// `[store]` and metrics address, then `body` (providers, units).
    pub fn write_config(&self, dns_port: u16, body: &str) {
        let config = self.dcvd.config(dns_port, &format!("{}\n{body}", self.store_section)).replace(
            "log_format = \"text\"\n",
            &format!("log_format = \"text\"\nmetrics_listen = \"127.0.0.1:{}\"\n", self.metrics_port),
        );
        self.dcvd.write_config(&config);
    }

    /// Starts `dcvd run`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        self.child = Some(self.dcvd.spawn(&["run"]));
    }

    /// Whether it was started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` (`"STOP"`, `"CONT"`, ...).
    pub fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("running"), sig);
    }

    /// `kill -9`, then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM once it serves `/healthz` (its signal handlers are in place by then), then waits
    /// for a clean exit.
    pub async fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let port = self.metrics_port;
        eventually(Duration::from_secs(30), "dcvd serves /healthz", || async move { healthz(port).await.is_some() })
            .await;
        if let Some(child) = self.child.take() {
            signal(&child, "TERM");
            let status = self.dcvd.wait(child, Duration::from_secs(30), &format!("{} stopping", self.name)).await;
            assert!(status.success(), "{} exited with {status} on SIGTERM; log:\n{}", self.name, self.log_tail(60));
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.dcvd.log(), n)
    }

    /// `/healthz`'s status code (`None`: no answer).
    pub async fn healthz(&self) -> Option<u16> {
        healthz(self.metrics_port).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn healthz(port: u16) -> Option<u16> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().ok()?;
    client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.ok().map(|r| r.status().as_u16())
}

/// What a zone monitor saw.
#[derive(Default, Debug)]
pub struct ZoneMonitor {
    /// Transfers made.
    pub snapshots: u64,
    /// (name, value) ever seen.
    pub seen: BTreeSet<(String, String)>,
    /// (name, value) seen and then gone.
    pub gone: BTreeSet<(String, String)>,
    /// What should never happen, one line each.
    pub violations: Vec<String>,
}

impl ZoneMonitor {
    /// Takes one snapshot of `(name, type, value)` records.
    pub fn observe(&mut self, records: &[(String, String, String)]) {
        self.snapshots += 1;
        let now: BTreeSet<(String, String)> = records.iter().map(|(n, _, v)| (n.clone(), v.clone())).collect();
        let mut per_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (n, v) in &now {
            per_name.entry(n).or_default().push(v);
        }
        for (name, values) in per_name.into_iter().filter(|(_, v)| v.len() > 1) {
            self.violations.push(format!(
                "snapshot {}: {name} holds {} values at once: {values:?}",
                self.snapshots,
                values.len()
            ));
        }
        for rv in now.intersection(&self.gone) {
            self.violations.push(format!("snapshot {}: {rv:?} was published again after its removal", self.snapshots));
        }
        let gone: Vec<_> = self.seen.difference(&now).cloned().collect();
        self.gone.extend(gone);
        self.seen.extend(now);
    }

    /// Transfers `zone` from `primary` every ~100 ms on a thread until `stop` is set.
    pub fn spawn(primary: SocketAddr, zone: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Self> {
        let zone = zone.to_owned();
        std::thread::spawn(move || {
            let mut m = Self::default();
            while !stop.load(Ordering::SeqCst) {
                m.observe(&axfr(primary, &zone));
                std::thread::sleep(Duration::from_millis(100));
            }
            m
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The monitor flags a name holding two values and a value that comes back after its
    /// removal, and nothing else.
    #[test]
    fn monitor_flags_double_values_and_republication() {
        let r = |n: &str, v: &str| (n.to_string(), "TXT".to_string(), v.to_string());
        let mut m = ZoneMonitor::default();
        m.observe(&[r("_dnsauth.a", "1")]);
        m.observe(&[r("_dnsauth.a", "1"), r("_dnsauth.b", "2")]);
        m.observe(&[r("_dnsauth.b", "2")]);
        m.observe(&[]);
        assert!(m.violations.is_empty(), "{:?}", m.violations);
        m.observe(&[r("_dnsauth.c", "3"), r("_dnsauth.c", "4")]);
        assert_eq!(m.violations.len(), 1, "{:?}", m.violations);
        m.observe(&[r("_dnsauth.a", "1")]);
        assert_eq!(m.violations.len(), 2, "{:?}", m.violations);
        assert!(m.violations[1].contains("published again"), "{:?}", m.violations);
    }
}
