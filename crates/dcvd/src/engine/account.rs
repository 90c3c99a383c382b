//! Account-wide conditions: CertCentral refusing the API key, or not answering at all, is one
//! condition of the account, not a failure of every unit.
//!
//! Two conditions close the gate: `api_key_refused` (a call answered 401/403) and
//! `certcentral_unreachable` (a call got no answer, or only 5xx, through all of the client's
//! retries). Either way one ERROR says what to fix, `/healthz` fails and
//! `dcvd_account_condition{condition}` reads 1, and every unit that needs DigiCert waits at the
//! gate instead of failing (units that only publish, wait for DNS or clean up go on). While it is
//! closed, one unit at a time is let through as a probe, with a growing interval (30 s doubling
//! to 5 min); the first DigiCert answer that says something about the request opens the gate
//! again and every unit resumes. A reload (SIGHUP, after the operator fixed the key) lets a probe
//! through at once.
//!
//! The gate knows nothing about units or steps; the unit task asks it before a DigiCert step and
//! reports a refusal; the client's observer (`env::build_client`) reports answers and
//! exhausted retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

use crate::metrics::Metrics;
use crate::notify::{Event, Notifier};

/// First interval between probes while the key is refused.
const PROBE_MIN: Duration = Duration::from_secs(30);
/// Longest interval between probes.
const PROBE_MAX: Duration = Duration::from_secs(300);

/// Why the gate is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// CertCentral answered 401/403: the API key is wrong, revoked or lacks permission.
    ApiKeyRefused,
    /// No answer (connection errors, timeouts) or only 5xx through all of the client's retries.
    CertCentralUnreachable,
}

impl Condition {
    /// The `condition` label of `dcvd_account_condition` and of notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKeyRefused => "api_key_refused",
            Self::CertCentralUnreachable => "certcentral_unreachable",
        }
    }
}

#[derive(Debug)]
struct Closed {
    condition: Condition,
    /// The refusal or failure, as the client saw it.
    reason: String,
    next_probe: Instant,
    interval: Duration,
    probing: bool,
}

/// Whether CertCentral accepts the account's API key, shared by every unit task.
#[derive(Debug)]
pub struct AccountGate {
    closed: Mutex<Option<Closed>>,
    metrics: Arc<Metrics>,
    notifier: Mutex<Option<Notifier>>,
    /// Bumped on every change, so waiting units re-check.
    changes: watch::Sender<u64>,
}

/// What a unit may do before a DigiCert step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The gate is open: go on.
    Open,
    /// The gate is closed, and this unit is the probe: go on and report the outcome.
    Probe,
}

impl AccountGate {
    /// An open gate; its condition is exported through `metrics` (gauge and `/healthz`).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        metrics.set_api_key_refused(false);
        Self { closed: Mutex::new(None), metrics, notifier: Mutex::new(None), changes: watch::channel(0).0 }
    }

    /// Sends the account's conditions through `notifier` too.
    pub fn notify_through(&self, notifier: Notifier) {
        *self.notifier.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(notifier);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Closed>> {
        self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The refusal or failure while the gate is closed.
    pub fn condition(&self) -> Option<String> {
        self.lock().as_ref().map(|c| c.reason.clone())
    }

    /// Which condition holds, if any.
    pub fn current(&self) -> Option<Condition> {
        self.lock().as_ref().map(|c| c.condition)
    }

    fn set_metric(&self, condition: Condition, on: bool) {
        match condition {
            Condition::ApiKeyRefused => self.metrics.set_api_key_refused(on),
            Condition::CertCentralUnreachable => self.metrics.set_certcentral_unreachable(on),
        }
    }

    /// Waits until the unit may call DigiCert: at once while open, else until it is its turn to
    /// probe or the gate opens.
    pub async fn admit(&self) -> Admission {
        let mut changes = self.changes.subscribe();
        loop {
            let wake = {
                let mut closed = self.lock();
                let Some(c) = closed.as_mut() else { return Admission::Open };
                let now = Instant::now();
                if !c.probing && c.next_probe <= now {
                    c.probing = true;
                    return Admission::Probe;
                }
                (!c.probing).then_some(c.next_probe)
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        _ = changes.changed() => {}
                    }
                }
                None => {
                    let _ = changes.changed().await;
                }
            }
        }
    }

    /// CertCentral refused the key (`reason`: its error). The first refusal logs the ERROR.
    pub fn refused(&self, reason: &str) {
        self.close(Condition::ApiKeyRefused, reason);
    }

    /// A call got no usable answer through all of the client's retries (`reason`: what the
    /// last attempt got). The first one logs the ERROR.
    pub fn unreachable(&self, reason: &str) {
        self.close(Condition::CertCentralUnreachable, reason);
    }

    fn close(&self, condition: Condition, reason: &str) {
        let mut closed = self.lock();
        let previous = closed.as_ref().map(|c| (c.condition, c.probing));
        match previous {
            // The probe failed the same way: wait longer. (Other failures are calls that were in
            // flight when the gate closed; they say nothing new.)
            Some((held, probing)) if held == condition => {
                if probing && let Some(c) = closed.as_mut() {
                    c.probing = false;
                    c.interval = (c.interval * 2).min(PROBE_MAX);
                    c.next_probe = Instant::now() + c.interval;
                }
            }
            // CertCentral answers again but refuses the key: the refusal is what to fix now.
            // (Unreachable while the key is refused says nothing about the key: keep it.)
            Some((held, probing)) if condition == Condition::ApiKeyRefused => {
                self.set_metric(held, false);
                self.announce(condition, reason);
                let interval = closed.as_ref().map_or(PROBE_MIN, |c| c.interval);
                let interval = if probing { (interval * 2).min(PROBE_MAX) } else { interval };
                *closed = Some(Closed {
                    condition,
                    reason: reason.to_owned(),
                    next_probe: Instant::now() + interval,
                    interval,
                    probing: false,
                });
            }
            Some((_, probing)) => {
                if probing && let Some(c) = closed.as_mut() {
                    c.probing = false;
                    c.interval = (c.interval * 2).min(PROBE_MAX);
                    c.next_probe = Instant::now() + c.interval;
                }
            }
            None => {
                self.announce(condition, reason);
                *closed = Some(Closed {
                    condition,
                    reason: reason.to_owned(),
                    next_probe: Instant::now() + PROBE_MIN,
                    interval: PROBE_MIN,
                    probing: false,
                });
            }
        }
        drop(closed);
        self.changed();
    }

    /// The one ERROR of a condition, its metric and its notification.
    fn announce(&self, condition: Condition, reason: &str) {
        match condition {
            Condition::ApiKeyRefused => error!(
                condition = condition.as_str(),
                error = reason,
                "CertCentral refused the API key: fix [certcentral] api_key_file / api_key_env (a key of this \
                 account with API access), then `systemctl reload dcvd`; until then every unit waits (none \
                 fails) and dcvd retries by itself every few minutes"
            ),
            Condition::CertCentralUnreachable => error!(
                condition = condition.as_str(),
                error = reason,
                "CertCentral is unreachable: check DNS, the firewall and any HTTPS proxy (HTTPS_PROXY) on the \
                 way to [certcentral] base_url, and DigiCert's status page; until then every unit waits (none \
                 fails) and dcvd retries by itself every few minutes"
            ),
        }
        self.set_metric(condition, true);
        if let Some(n) = self.notifier.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            n.send(Event::account(condition.as_str(), reason));
        }
    }

    /// A DigiCert call was answered without a refusal (and not with a 5xx): CertCentral is
    /// reachable and the key works.
    pub fn accepted(&self) {
        let mut closed = self.lock();
        if let Some(c) = closed.take() {
            self.set_metric(c.condition, false);
            match c.condition {
                Condition::ApiKeyRefused => {
                    info!(condition = c.condition.as_str(), "CertCentral accepts the API key again; units resume");
                }
                Condition::CertCentralUnreachable => {
                    info!(condition = c.condition.as_str(), "CertCentral answers again; units resume");
                }
            }
            drop(closed);
            self.changed();
        }
    }

    /// Frees the probe slot: the probe ended (a refusal or a success already updated the gate;
    /// otherwise, a network error or a 5xx, another unit may try at the next probe time).
    pub fn probe_inconclusive(&self) {
        if let Some(c) = self.lock().as_mut() {
            c.probing = false;
        }
        self.changed();
    }

    /// After a reload: probe at once (the operator may have fixed the key).
    pub fn probe_now(&self) {
        if let Some(c) = self.lock().as_mut() {
            c.next_probe = Instant::now();
            c.interval = PROBE_MIN;
        }
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_with_growing_intervals_then_open() {
        let metrics = Arc::new(Metrics::new());
        let gate = Arc::new(AccountGate::new(metrics.clone()));
        assert_eq!(gate.admit().await, Admission::Open);
        gate.refused("certcentral: unauthorized (HTTP 401)");
        // calls that were in flight when the gate closed do not push the first probe back
        gate.refused("certcentral: unauthorized (HTTP 401)");
        assert!(gate.condition().is_some());
        assert!(metrics.api_key_refused());
        let start = Instant::now();
        assert_eq!(gate.admit().await, Admission::Probe);
        assert_eq!(Instant::now() - start, PROBE_MIN, "the first probe waits 30 s");
        // a second unit waits while the probe runs
        let other = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!other.is_finished());
        gate.refused("still 401");
        let probe = other.await.unwrap();
        assert_eq!(probe, Admission::Probe);
        assert_eq!(Instant::now() - start, PROBE_MIN + Duration::from_secs(1) + PROBE_MIN * 2, "doubled");
        gate.probe_now();
        gate.accepted();
        assert_eq!(gate.condition(), None);
        assert!(!metrics.api_key_refused());
        assert_eq!(gate.admit().await, Admission::Open);
    }

    /// An unreachable CertCentral closes the gate as its own condition (its own metric, /healthz
    /// through it), probes back off the same way, a refusal seen meanwhile takes over, and the
    /// first answer opens the gate.
    #[tokio::test(start_paused = true)]
    async fn unreachable_is_a_condition_of_its_own() {
        let metrics = Arc::new(Metrics::new());
        let gate = Arc::new(AccountGate::new(metrics.clone()));
        gate.unreachable("no answer after 5 attempts");
        assert_eq!(gate.current(), Some(Condition::CertCentralUnreachable));
        assert!(metrics.certcentral_unreachable() && !metrics.api_key_refused());
        let start = Instant::now();
        assert_eq!(gate.admit().await, Admission::Probe);
        assert_eq!(Instant::now() - start, PROBE_MIN);
        gate.unreachable("still nothing");
        assert_eq!(gate.admit().await, Admission::Probe);
        assert_eq!(Instant::now() - start, PROBE_MIN * 3, "the second probe waited twice as long");
        // the probe reaches CertCentral, which refuses the key: that is what to fix now
        gate.refused("certcentral: unauthorized (HTTP 401)");
        assert_eq!(gate.current(), Some(Condition::ApiKeyRefused));
        assert!(metrics.api_key_refused() && !metrics.certcentral_unreachable());
        // an unreachable call while the key is refused says nothing about the key
        gate.unreachable("timeout");
        assert_eq!(gate.current(), Some(Condition::ApiKeyRefused));
        gate.accepted();
        assert_eq!(gate.current(), None);
        assert!(!metrics.api_key_refused() && !metrics.certcentral_unreachable());
        assert_eq!(gate.admit().await, Admission::Open);
    }
}
