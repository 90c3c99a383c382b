//! The orchestrator: [`run`] schedules units (DV orders and OV/EV domains), applies reloads and
//! stops gracefully; [`unit`] executes one unit's effects as [`crate::machine`] decides.
//!
//! Scheduling: a unit that has work runs as a task (at most [`MAX_LIVE_UNITS`] at once); a unit
//! that waits for its next DigiCert check or a retry costs one timer entry, not a task, so an
//! account's thousands of waiting units cost little memory. `max_concurrent` bounds the DNS
//! provider calls in flight, not the waits; CertCentral calls are paced by the rate limiter.

mod account;
mod caa;
mod cleanup;
mod env;
mod leases;
mod timers;
mod unit;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use account::{AccountGate, Admission, Condition};
pub use caa::check_names as caa_forbids;
pub use cleanup::CleanupReport;
pub use env::{Env, build_client, checker_config};
pub use leases::Leases;

use crate::config::{Config, Unit, UnitKey};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::{
    ClaimScope, Store, StoreError, StoreThread, UnitId, UnitKind, UnitRow, UnitSpec, UnitState, now_millis,
};
use timers::Timers;
use unit::Parked;

/// Units driven as tasks at the same time; more due units wait their turn in due order, as timer
/// entries. A live unit waits for DNS propagation or at the rate limiter (about 2 KiB of task and
/// step each); a parked one costs a few bytes. The bound must stay above what keeps the rate
/// limiter busy (the units in propagation plus the queue of checks and token requests): at
/// 10,000 orders on scaled limits (docs/benchmarks.md) 4,000 keeps the wall at the unbounded
/// figure with 14 MiB less peak RSS, while 2,000 starved the token lane (wall +5.7 %).
pub const MAX_LIVE_UNITS: usize = 4_000;

/// Units claimed at most at once.
pub const CLAIM_BATCH: usize = 10_000;

/// How often the engine looks for units nobody holds (new ones, those of a dead instance).
const CLAIM_EVERY: Duration = Duration::from_secs(1);

/// The configuration could not be turned into working parts (a provider refused its settings):
/// a configuration error for the command line (exit 78), not a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct SetupError(pub anyhow::Error);

/// Messages to a running engine (signals, the cron rescan, tests).
#[derive(Debug)]
pub enum Control {
    /// Apply this new configuration (already validated). `retry_failed` (SIGHUP, not the cron
    /// rescan) also restarts units that failed.
    Reload {
        /// The new configuration.
        config: Box<Config>,
        /// Whether failed units start over.
        retry_failed: bool,
    },
    /// Stop gracefully.
    Stop,
    /// Stop gracefully, then remove every record still published (`dcvd once --deadline`: the
    /// units that did not finish keep their state and resume at the next run).
    GiveUp,
}

/// How [`run`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run until stopped (`dcvd run`).
    Daemon,
    /// Return once every unit is terminal (`dcvd once`, `dcvd demo`).
    Once,
}

/// What a run leaves behind.
#[derive(Debug)]
pub struct Summary {
    /// Every unit of the store at the end.
    pub units: Vec<UnitRow>,
}

impl Summary {
    /// Whether every unit that is still configured ended valid (or was already done).
    pub fn all_valid(&self) -> bool {
        self.units.iter().filter(|u| u.in_config).all(|u| matches!(u.state, UnitState::Valid | UnitState::CleanedUp))
    }
}

/// Hooks for the supervisor's surroundings (systemd notifications).
pub trait Observer: Send + Sync {
    /// The store is open and units are being driven.
    fn ready(&self) {}
    /// Periodic status line (counts per state).
    fn status(&self, _line: &str) {}
    /// Shutdown started.
    fn stopping(&self) {}
}

/// No-op observer.
#[derive(Debug, Default)]
pub struct NoObserver;
impl Observer for NoObserver {}

/// Converts a config unit key to the store's id.
pub fn unit_id(key: UnitKey) -> UnitId {
    match key {
        UnitKey::Order(id) => UnitId { kind: UnitKind::Order, id },
        UnitKey::Domain(id) => UnitId { kind: UnitKind::Domain, id },
    }
}

/// Records every configured unit in the store; marks units gone from the config. With
/// `retry_failed`, units that failed or expired in an earlier run start over (an operator who
/// restarts or reloads dcvd after fixing something expects that).
pub fn sync_units(store: &Store, config: &Config, retry_failed: bool) -> anyhow::Result<()> {
    sync_units_when(store, config, retry_failed, true)
}

/// [`sync_units`]; `at_start` says whether this is the process's first sync (a unit that is
/// failed then ended in an earlier run) or a reload's (it may have failed in this one).
fn sync_units_when(store: &Store, config: &Config, retry_failed: bool, at_start: bool) -> anyhow::Result<()> {
    let ids: Vec<UnitId> = config.units.iter().map(|u| unit_id(u.key)).collect();
    let specs: Vec<UnitSpec<'_>> = config
        .units
        .iter()
        .zip(&ids)
        .map(|(u, id)| UnitSpec {
            unit: *id,
            method: u.method.as_str(),
            domains: &u.domains,
            provider: u.provider.as_deref(),
            source: u.source,
        })
        .collect();
    // One transaction (one fsync) for the whole configuration.
    for row in store.sync_units(&specs)? {
        let restart = match row.state {
            UnitState::Failed | UnitState::Expired => retry_failed,
            // Back in the configuration after it was removed: validate it again.
            UnitState::Removed => true,
            // A discovered unit that a scan found due again (a domain nearing the end of its
            // validation once more) validates again.
            UnitState::CleanedUp => config.rediscovered.contains(&config_key(row.unit)),
            _ => false,
        };
        if restart {
            let _unit = unit::unit_span(row.unit).entered();
            match row.state {
                UnitState::Removed => info!(state = row.state.as_str(), "unit is configured again; starting it over"),
                UnitState::CleanedUp => {
                    info!(state = row.state.as_str(), "the scan found the unit due again; starting it over");
                }
                _ if at_start => info!(state = row.state.as_str(), "starting over a unit that ended in an earlier run"),
                _ => info!(state = row.state.as_str(), "starting over a unit that ended, after the reload"),
            }
            store.transition(row.unit, UnitState::Pending, |r| {
                r.token = None;
                r.token_expires_at = None;
                r.renewals = 0;
                r.attempts = 0;
                r.transient_failures = 0;
                r.last_error = None;
                r.next_action_at = None;
            })?;
        }
    }
    let mut present = ids;
    // A discovered unit that DigiCert reports done (the order issued, the domain validated) while
    // it is still cleaning up leaves the scan's list: let it finish instead of retiring it.
    if config.discovery.is_some() {
        let finishing = store
            .units()?
            .into_iter()
            .filter(|r| r.source == crate::store::UnitSource::Discovered && r.state == UnitState::Valid);
        present.extend(finishing.map(|r| r.unit));
    }
    for gone in store.mark_missing_from_config(&present)? {
        let _unit = unit::unit_span(gone).entered();
        info!("unit is no longer configured; it will be cleaned up");
    }
    Ok(())
}

/// Runs the engine until `shutdown` resolves, a [`Control::Stop`] arrives, or (in
/// [`Mode::Once`]) every unit is terminal.
pub async fn run(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    mode: Mode,
    control: mpsc::Receiver<Control>,
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Summary> {
    crate::logging::set_instance(store.instance());
    metrics.set_instance(store.instance());
    let span = tracing::info_span!("engine", instance = store.instance());
    tracing::Instrument::instrument(run_engine(config, store, metrics, mode, control, observer, shutdown), span).await
}

async fn run_engine(
    config: Config,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    mode: Mode,
    mut control: mpsc::Receiver<Control>,
    observer: Arc<dyn Observer>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Summary> {
    let store = StoreThread::start(store).context("cannot start the state store's thread")?;
    let config = Arc::new(config);
    // `dcvd run` pauses every unit while CertCentral refuses the key; `dcvd once` fails them.
    let account = (mode == Mode::Daemon).then(|| Arc::new(AccountGate::new(metrics.clone())));
    let notify_stop = CancellationToken::new();
    let _stop_notifier = notify_stop.clone().drop_guard();
    let (notifier, delivery) = match config.notify.clone() {
        Some(settings) => {
            let (notifier, task) = Notifier::start(settings, metrics.clone(), notify_stop.clone());
            (notifier, Some(task))
        }
        None => (Notifier::disabled(metrics.clone()), None),
    };
    if let Some(account) = &account {
        account.notify_through(notifier.clone());
    }
    let leases = Arc::new(Leases::new(config.store.lease_ttl));
    let mut env =
        Env::build_with(config, store.clone(), metrics.clone(), account, leases.clone()).await.map_err(SetupError)?;
    env.notifier = notifier;
    // The first scan goes through the daemon's own client (the one rate limiter), before the
    // first sync, so discovered units start with the configured ones.
    let mut scanner = crate::discovery::Scanner::new();
    if env.config.discovery.is_some() {
        env.config = Arc::new(scanner.apply((*env.config).clone(), &env.client).await);
        metrics.observe_discovery_scan(scanner.last_report.failed);
    }
    // Later scans (in the reload task) are bounded, so a burst of new orders does not hold the
    // token lane for long (new candidates beyond the budget wait for the next scan).
    scanner.info_budget = Some(crate::discovery::RELOAD_INFO_BUDGET);
    let scanner = Arc::new(tokio::sync::Mutex::new(scanner));
    let mut reloading: Option<Reloading> = None;
    let mut queued_reload: Option<ReloadRequest> = None;
    // A reload that met a store outage, to run again when the store answers.
    let mut postponed_reload: Option<ReloadRequest> = None;
    sync_in_thread(&store, &env.config, true, true).await?;
    let mut env = Arc::new(env);
    observer.ready();
    let stop = CancellationToken::new();
    let mut live = Live {
        tasks: JoinSet::new(),
        running: HashMap::new(),
        timers: Timers::default(),
        stop: stop.clone(),
        last_renewal: None,
        store_answering_since: None,
    };
    let mut respawn: HashSet<UnitId> = HashSet::new();
    live.schedule_from_store(&env).await?;
    live.keep_leases(&env, &mut respawn).await?;
    live.start_due(&env);
    let mut status_tick = tokio::time::interval(Duration::from_secs(5));
    // Claims every second (a dead instance's units are taken over within a second of its leases
    // expiring), renewals every third of the lease.
    let mut lease_tick = tokio::time::interval_at(tokio::time::Instant::now() + CLAIM_EVERY, CLAIM_EVERY);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut store_down = false;
    let mut give_up = false;
    tokio::pin!(shutdown);
    loop {
        if mode == Mode::Once && live.is_idle() {
            break;
        }
        metrics.set_scheduler_units(live.running.len(), live.timers.len());
        let next_timer = live.timers.next_wake();
        tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = live.tasks.join_next(), if !live.tasks.is_empty() => {
                match joined {
                    Ok((id, parked)) => {
                        live.running.remove(&id);
                        if respawn.remove(&id) {
                            live.timers.wake_at(id, 0);
                        } else if let Parked::Until(at) = parked {
                            live.timers.wake_at(id, at);
                        }
                        live.start_due(&env);
                    }
                    Err(e) => error!(error = %e, "unit task panicked"),
                }
            }
            // Only while a task slot is free: due units beyond the bound wait for a task to end.
            () = sleep_until_millis(next_timer.unwrap_or(0)),
                if next_timer.is_some() && live.running.len() < MAX_LIVE_UNITS => live.start_due(&env),
            msg = control.recv() => match msg {
                None | Some(Control::Stop) => break,
                Some(Control::GiveUp) => {
                    give_up = true;
                    break;
                }
                Some(Control::Reload { config: new, retry_failed }) => {
                    // One reload at a time, off the loop (its scan may take seconds of rate
                    // limit): a second one waits for the first; a third replaces the second.
                    if reloading.is_none() {
                        reloading = Some(spawn_reload(&env, (new, retry_failed), &scanner));
                    } else {
                        queued_reload = Some((new, retry_failed));
                    }
                }
            },
            reloaded = async { (&mut reloading.as_mut().expect("guarded").task).await }, if reloading.is_some() => {
                let request = reloading.take().expect("guarded").request;
                let retry_failed = request.1;
                let trigger = if retry_failed { "sighup" } else { "rescan" };
                match reloaded.unwrap_or_else(|e| Err(anyhow::anyhow!("reload task: {e}"))) {
                        Ok(new_env) => {
                            // A new CertCentral client (a changed key, URL or limits): running
                            // units must use it too, or a fixed API key would never reach them.
                            let new_client =
                                !std::ptr::eq(env.client.rate_limiter(), new_env.client.rate_limiter());
                            env = new_env;
                            // A unit that left the configuration may be deep in a wait: stop its
                            // task now; the replacement cleans it up. Steps are atomic, so a task
                            // stopped at an await point resumes exactly in its replacement.
                            // A store outage from here on leaves the new configuration in place
                            // (the lease renewal reports the outage); tasks not stopped here pick
                            // it up when they next park.
                            let rows = store.read(|s| s.units()).await.unwrap_or_else(|e| {
                                warn!(error = %e, "cannot read the units to restart them on the new configuration");
                                Vec::new()
                            });
                            for row in rows {
                                if (new_client || !row.in_config)
                                    && !row.state.is_terminal()
                                    && let Some(cancel) = live.running.get(&row.unit)
                                {
                                    cancel.cancel();
                                    respawn.insert(row.unit);
                                } else if row.state == UnitState::Pending && live.running.contains_key(&row.unit) {
                                    // Started over by this reload while its task may be ending
                                    // (it saw the unit failed): a new task once that one ends.
                                    respawn.insert(row.unit);
                                }
                            }
                            // The operator may have fixed the API key: ask CertCentral at once
                            // (after the cancellations, so no old client's refusal delays it).
                            if let Some(account) = &env.account {
                                account.probe_now();
                            }
                            // Units keep their running task (they read their row at every step);
                            // new ones and ones to clean up are scheduled, and units the reload
                            // started over (their leases were released when they ended) claimed.
                            if let Err(e) = live.schedule_from_store(&env).await {
                                warn!(error = %e, "cannot schedule the reloaded units yet; the next lease renewal claims them");
                            }
                            if let Err(e) = live.keep_leases(&env, &mut respawn).await {
                                warn!(error = %e, "cannot claim the reloaded units yet; the next lease renewal will");
                            }
                            live.start_due(&env);
                            // Only SIGHUP retries failed units; the cron rescan does not.
                            info!(trigger, units = env.config.units.len(), "configuration reloaded");
                        }
                        // The outage itself is reported once (ERROR, `/healthz`); the reload runs
                        // again when the store answers.
                        Err(e) if is_store_outage(&e) => {
                            warn!(trigger, error = %format!("{e:#}"),
                                "reload postponed: the state store does not answer; it runs once the store answers again");
                            postponed_reload = Some(request);
                        }
                        Err(e) => error!(trigger, error = %format!("{e:#}"),
                            "reload failed; the previous configuration keeps running"),
                }
                // The queued reload builds on what this one left running, and supersedes one
                // postponed.
                if let Some(queued) = queued_reload.take() {
                    postponed_reload = None;
                    reloading = Some(spawn_reload(&env, queued, &scanner));
                }
            }
            _ = lease_tick.tick() => {
                match live.keep_leases(&env, &mut respawn).await {
                    Ok(()) => {
                        if std::mem::take(&mut store_down) {
                            metrics.set_store_unavailable(false);
                            info!("the state store answers again; units resume");
                        }
                        if reloading.is_none() && let Some(request) = postponed_reload.take() {
                            reloading = Some(spawn_reload(&env, request, &scanner));
                        }
                        live.start_due(&env);
                    }
                    // One ERROR per outage; units pause on their own once the leases may have
                    // lapsed (`Leases::check`), and resume after the next renewal.
                    Err(e) => if !std::mem::replace(&mut store_down, true) {
                        metrics.set_store_unavailable(true);
                        error!(error = %e, "cannot renew this instance's leases: the state store does not answer; \
                            units pause until it does (check the database and the network to it)");
                    } else {
                        tracing::debug!(error = %e, "lease renewal failed again");
                    },
                }
            }
            _ = status_tick.tick() => {
                match store.read(|s| s.counts_by_state()).await {
                    Ok(counts) => {
                        metrics.set_unit_counts(&counts);
                        let line = counts.iter().map(|(s, n)| format!("{}={n}", s.as_str())).collect::<Vec<_>>().join(" ");
                        observer.status(&line);
                    }
                    Err(e) => warn!(error = %e, "cannot count the units by state for the status line"),
                }
            }
        }
    }
    observer.stopping();
    stop.cancel();
    // Steps are atomic store transactions around idempotent side effects, so cancelling at an
    // await point leaves a state the next start resumes exactly.
    let drained =
        tokio::time::timeout(Duration::from_secs(10), async { while live.tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!("some unit tasks did not stop within 10 s; aborting them");
        live.tasks.abort_all();
    }
    // Others take over at once instead of after `lease_ttl`. Units still holding records keep
    // them listed; whoever claims the unit next removes them.
    if let Err(e) = store.write(|s| s.release_leases()).await {
        warn!(error = %e, "cannot release this instance's leases; other instances take its units over after lease_ttl");
    }
    if give_up {
        match cleanup::remove_every_record(&env).await {
            Ok(report) => {
                for f in &report.failures {
                    warn!(error = %f, "record left published after giving up");
                }
            }
            Err(e) => error!(error = %format!("{e:#}"), "cannot remove the records after giving up"),
        }
    }
    match store.read(|s| s.counts_by_state()).await {
        Ok(counts) => metrics.set_unit_counts(&counts),
        Err(e) => warn!(error = %e, "cannot count the units by state at shutdown"),
    }
    let summary = Summary { units: store.read(|s| s.units()).await? };
    // Deliver what is queued (the last units' events) before returning: the senders go with the
    // environment, then the delivery task ends by itself; a hung sink gets 10 s.
    drop(env);
    if let Some(delivery) = delivery
        && tokio::time::timeout(Duration::from_secs(10), delivery).await.is_err()
    {
        warn!("notifications still queued after 10 s were dropped");
    }
    Ok(summary)
}

/// Whether `e` comes from a state store that does not answer (PostgreSQL down or unreachable).
fn is_store_outage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Unavailable { .. })))
}

/// Runs [`reload`] in a task of its own, so the control loop keeps starting due units meanwhile.
fn spawn_reload(
    env: &Arc<Env>,
    request: ReloadRequest,
    scanner: &Arc<tokio::sync::Mutex<crate::discovery::Scanner>>,
) -> Reloading {
    let (env, scanner) = (env.clone(), scanner.clone());
    let (config, retry_failed) = ((*request.0).clone(), request.1);
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let mut scanner = scanner.lock().await;
        reload(&env, config, retry_failed, &mut scanner).await
    }));
    Reloading { task, request }
}

/// A configuration to reload, and whether SIGHUP asked for it (it retries failed units; the
/// rescan does not).
type ReloadRequest = (Box<Config>, bool);

/// The reload in flight, with its request (kept to run it again after a store outage).
struct Reloading {
    task: tokio::task::JoinHandle<anyhow::Result<Arc<Env>>>,
    request: ReloadRequest,
}

async fn reload(
    env: &Arc<Env>,
    config: Config,
    retry_failed: bool,
    scanner: &mut crate::discovery::Scanner,
) -> anyhow::Result<Arc<Env>> {
    let mut new = env.rebuild(Arc::new(config)).await?;
    // Every reload (SIGHUP, the cron rescan) scans the account, with the new configuration's
    // client (the same one, and so the same limiter, unless [certcentral] changed).
    if new.config.discovery.is_some() || env.config.discovery.is_some() {
        new.config = Arc::new(scanner.apply((*new.config).clone(), &new.client).await);
        if new.config.discovery.is_some() {
            env.metrics.observe_discovery_scan(scanner.last_report.failed);
        }
    }
    // Only once everything built: a provider that fails to build leaves the old config running.
    sync_in_thread(&env.store, &new.config, retry_failed, false).await?;
    for (key, old, new) in env.config.restart_only_changes(&new.config) {
        warn!(key, old = %old, new = %new, "`{key}` changed, but it takes effect only after a restart (systemctl restart dcvd); the running value stays");
    }
    Ok(Arc::new(new))
}

/// [`sync_units`] on the store's thread, as one group commit.
async fn sync_in_thread(
    store: &StoreThread,
    config: &Arc<Config>,
    retry_failed: bool,
    at_start: bool,
) -> anyhow::Result<()> {
    let config = config.clone();
    store.write(move |s| Ok(sync_units_when(s, &config, retry_failed, at_start))).await?
}

/// The units being driven (tasks) and the ones waiting (timer entries).
struct Live {
    tasks: JoinSet<(UnitId, Parked)>,
    running: HashMap<UnitId, CancellationToken>,
    timers: Timers,
    stop: CancellationToken,
    /// When the last lease renewal that succeeded started.
    last_renewal: Option<std::time::Instant>,
    /// Since when the store has answered every lease call (`None` while it does not): other
    /// instances' units are taken over only after one lease TTL of this.
    store_answering_since: Option<std::time::Instant>,
}

impl Live {
    /// Nothing runs and nothing waits.
    fn is_idle(&self) -> bool {
        self.tasks.is_empty() && self.timers.is_empty()
    }

    /// Gives every unit this instance holds that has work left and no task a timer entry at its
    /// `next_action_at` (now when it has none). Units nobody holds come in through
    /// [`keep_leases`](Self::keep_leases).
    async fn schedule_from_store(&mut self, env: &Env) -> anyhow::Result<()> {
        let cleanup = env.config.daemon.cleanup;
        let waiting: Vec<(UnitId, i64)> = env
            .store
            .read(move |s| {
                let instance = s.instance().to_owned();
                s.units().map(|rows| {
                    rows.into_iter()
                        .filter(|r| r.owner.as_deref() == Some(instance.as_str()))
                        .filter(|r| has_work(r, cleanup))
                        .map(|r| (r.unit, r.next_action_at.unwrap_or(0)))
                        .collect()
                })
            })
            .await?;
        for (id, at) in waiting {
            if !self.running.contains_key(&id) {
                self.timers.wake_at(id, at);
            }
        }
        Ok(())
    }

    /// Renews this instance's leases when a third of their TTL passed since the last renewal,
    /// and claims units nobody holds (new ones, and those of an instance whose leases expired):
    /// lost units stop at once, claimed ones get a timer entry.
    async fn keep_leases(&mut self, env: &Env, respawn: &mut HashSet<UnitId>) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let ttl = env.leases.ttl();
        let renew = self.last_renewal.is_none_or(|at| at.elapsed() >= env.leases.renew_every());
        // After an outage (or at start) every lease in the store may have expired while their
        // holders live; each gets one TTL to renew before another instance takes its units.
        let scope = match self.store_answering_since {
            Some(since) if since.elapsed() >= ttl => ClaimScope::All,
            _ => ClaimScope::NotOthers,
        };
        let result = env
            .store
            .write(move |s| {
                let lost = if renew { s.renew_leases(ttl)? } else { Vec::new() };
                Ok((lost, s.claim_units(ttl, CLAIM_BATCH, scope)?))
            })
            .await;
        let (lost, claimed) = match result {
            Ok(done) => {
                self.store_answering_since.get_or_insert(started);
                done
            }
            Err(e) => {
                self.store_answering_since = None;
                return Err(e);
            }
        };
        if renew {
            env.leases.renewed(started);
            self.last_renewal = Some(started);
        }
        env.metrics.observe_leases(claimed.len(), lost.len());
        for id in lost {
            let _unit = unit::unit_span(id).entered();
            info!("another instance holds the unit now; this one stops driving it");
            if let Some(cancel) = self.running.get(&id) {
                cancel.cancel();
            }
            respawn.remove(&id);
            self.timers.remove(id);
        }
        if !claimed.is_empty() {
            // Epoch 1 is a unit's first claim; a higher one resumes a unit some instance (maybe
            // this one, before a restart) held before.
            let resumed = claimed.iter().filter(|r| r.epoch > 1).count();
            info!(units = claimed.len(), resumed, "claimed units nobody held");
        }
        let cleanup = env.config.daemon.cleanup;
        for row in claimed.into_iter().filter(|r| has_work(r, cleanup)) {
            if !self.running.contains_key(&row.unit) {
                self.timers.wake_at(row.unit, row.next_action_at.unwrap_or(0));
            }
        }
        Ok(())
    }

    /// Starts tasks for the units whose time has come, earliest first, up to [`MAX_LIVE_UNITS`].
    fn start_due(&mut self, env: &Arc<Env>) {
        let now = now_millis();
        while self.running.len() < MAX_LIVE_UNITS {
            let Some(id) = self.timers.pop_due(now) else { break };
            if self.running.contains_key(&id) {
                continue;
            }
            let cancel = self.stop.child_token();
            self.running.insert(id, cancel.clone());
            let env = env.clone();
            self.tasks.spawn(async move { (id, unit::drive(env, id, cancel).await) });
        }
    }
}

/// Whether a unit's row asks for work: not terminal, and not valid unless records are cleaned up.
fn has_work(row: &UnitRow, cleanup: bool) -> bool {
    !row.state.is_terminal() && (row.state != UnitState::Valid || cleanup)
}

/// Sleeps until the unix-millis time `at` (at once when it has passed).
async fn sleep_until_millis(at: i64) {
    let wait = u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Removes every record the store still lists as published (`dcvd cleanup`), trying each one
/// even when others fail.
pub async fn cleanup_all(config: Config, store: Arc<Store>, metrics: Arc<Metrics>) -> anyhow::Result<CleanupReport> {
    let store = StoreThread::start(store).context("cannot start the state store's thread")?;
    let env = Env::build(Arc::new(config), store, metrics).await?;
    cleanup::remove_every_record(&env).await
}

/// The configured unit for a store id.
pub fn config_unit(config: &Config, id: UnitId) -> Option<&Unit> {
    config.unit(config_key(id))
}

/// The configuration's key of a store id.
fn config_key(id: UnitId) -> UnitKey {
    match id.kind {
        UnitKind::Order => UnitKey::Order(id.id),
        UnitKind::Domain => UnitKey::Domain(id.id),
    }
}
