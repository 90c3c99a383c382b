//! The executor of one unit's state machine: it performs the external effect that
//! [`machine::next_effect`] names for the unit's row (token, publish, propagation, check,
//! removal), reports the [`Outcome`] to [`machine::decide`], and commits the decision (state and
//! fields) in one store transaction.
//!
//! Every effect is idempotent or guarded by an intent written before it: publish and remove
//! intents are in the store before a provider is called, so a crash between any two steps is
//! repaired by taking the same effect again. The executor decides nothing itself: which state
//! follows which outcome is the machine's table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use certcentral::types::{DcvMethod, SubmitValidationRequest, ValidationType, is_terminal_order_status};
use dns_provider::{ProviderError, Record, RecordType};
use propagation::Expected;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, info, warn};

use super::account::Admission;
use super::env::Env;
use crate::config::{Method, Unit};
use crate::machine::{self, Decision, Effect, IssuedToken, Note, Outcome, Policy, Removal, Wake};
use crate::records;
use crate::store::{
    NewRecord, PublishConfirmation, RecordRow, RecordStatus, StoreError, UnitId, UnitKind, UnitRow, UnitState,
    now_millis,
};

/// How long a unit waits before trying again when the store itself failed (disk full, I/O).
const STORE_RETRY: Duration = Duration::from_secs(5);

/// What went wrong in an effect, with its typed source.
#[derive(Debug, thiserror::Error)]
pub(super) enum Cause {
    /// CertCentral answered with an error or could not be reached.
    #[error(transparent)]
    CertCentral(#[from] certcentral::Error),
    /// A DNS provider failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Name-server discovery or a DNS query failed.
    #[error(transparent)]
    Propagation(#[from] propagation::Error),
    /// The CAA records that apply to a name forbid DigiCert to issue.
    #[error("{0}")]
    Caa(String),
    /// No provider serves a name the unit must publish at.
    #[error("{0}")]
    Routing(String),
    /// Anything else, said in words (an order status, a timeout summary).
    #[error("{0}")]
    Other(String),
}

/// Why an effect did not complete, by what the unit should do about it.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    /// Worth trying again later (network, 5xx, throttling, DNS discovery hiccup).
    #[error(transparent)]
    Retry(Cause),
    /// Permanent for this unit: it fails (records are cleaned up).
    #[error(transparent)]
    Fatal(Cause),
    /// CertCentral refused the API key (401/403): a condition of the account, not of the unit.
    #[error(transparent)]
    Account(Cause),
    /// Another instance took the unit over: nothing more is done for it here.
    #[error(transparent)]
    Lost(Cause),
    /// This instance's leases may have lapsed (the store did not answer its renewals): nothing
    /// goes out until a renewal succeeds.
    #[error("{0}")]
    Lapsed(String),
}

/// Why an effect ended without an outcome for the machine.
#[derive(Debug)]
pub(super) enum Interrupted {
    /// Another instance holds the unit.
    Lost(Cause),
    /// This instance may not act until its leases are renewed.
    Lapsed(String),
}

impl From<certcentral::Error> for StepError {
    fn from(e: certcentral::Error) -> Self {
        if let certcentral::Error::Withheld { reason, .. } = e {
            Self::Lapsed(reason)
        } else if e.is_auth() {
            Self::Account(e.into())
        } else if e.is_retryable() {
            Self::Retry(e.into())
        } else {
            Self::Fatal(e.into())
        }
    }
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        if e.is_retryable() { Self::Retry(e.into()) } else { Self::Fatal(e.into()) }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LeaseLost { .. } => Self::Lost(e.into()),
            // The disk or a concurrent reader may recover; a logic error will not.
            StoreError::Sqlite(_) | StoreError::Io { .. } | StoreError::Unavailable { .. } => Self::Retry(e.into()),
            _ => Self::Fatal(e.into()),
        }
    }
}

/// The span every line about `unit` is logged in, from any crate: one log identity.
pub(crate) fn unit_span(unit: UnitId) -> tracing::Span {
    tracing::info_span!(
        "unit",
        instance = crate::logging::instance(),
        unit_kind = unit.kind.as_str(),
        unit_id = unit.id
    )
}

/// Frees the account gate's probe slot when dropped.
struct ReleaseProbe(Arc<super::account::AccountGate>);

impl Drop for ReleaseProbe {
    fn drop(&mut self) {
        self.0.probe_inconclusive();
    }
}

/// Why [`drive`] returned: the scheduler keeps a timer entry for a parked unit, not a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Parked {
    /// Nothing more to do in this run (terminal, or valid without cleanup).
    Done,
    /// Wake the unit again at this unix-millis time.
    Until(i64),
    /// The task was cancelled (shutdown or reload), or this instance no longer holds the unit.
    Cancelled,
}

/// How long a unit waits before looking again while this instance's leases may have lapsed.
const LEASE_WAIT: Duration = Duration::from_secs(1);

/// Drives one unit, inside its span, until it has to wait (a check backoff, a retry), is done,
/// or `cancel` fires.
pub(super) async fn drive(env: Arc<Env>, unit: UnitId, cancel: CancellationToken) -> Parked {
    drive_in_span(env, unit, cancel).instrument(unit_span(unit)).await
}

async fn drive_in_span(env: Arc<Env>, unit: UnitId, cancel: CancellationToken) -> Parked {
    let executor = Executor { env, unit };
    loop {
        let row = match executor.env.store.read(move |s| s.unit(unit)).await {
            Ok(Some(row)) => row,
            Ok(None) => return Parked::Done,
            // The engine's lease renewal reports an unreachable store once, for every unit.
            Err(e @ StoreError::Unavailable { .. }) => {
                tracing::debug!(error = %e, "cannot read the unit's state");
                return Parked::Until(now_millis() + STORE_RETRY.as_millis() as i64);
            }
            Err(e) => {
                error!(error = %e, retry_in_ms = STORE_RETRY.as_millis() as u64, "cannot read the unit's state; check the state directory's disk");
                return Parked::Until(now_millis() + STORE_RETRY.as_millis() as i64);
            }
        };
        if row.owner.as_deref() != Some(executor.env.store.store().instance()) {
            info!(
                owner = row.owner.as_deref().unwrap_or(""),
                "another instance holds the unit now; this one stops driving it"
            );
            return Parked::Cancelled;
        }
        if executor.env.may_act().is_err() {
            return Parked::Until(now_millis() + LEASE_WAIT.as_millis() as i64);
        }
        let policy = executor.policy();
        let effect = match machine::next_effect(&row, &policy, now_millis()) {
            Effect::Stop => return Parked::Done,
            Effect::SleepUntil(at) => return Parked::Until(at),
            effect => effect,
        };
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return Parked::Cancelled,
            // Boxed: a parked unit's future then stays small.
            outcome = Box::pin(executor.perform_gated(&row, effect)) => outcome,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(Interrupted::Lost(lost)) => {
                info!(error = %lost, "this instance no longer holds the unit; it stops driving it");
                return Parked::Cancelled;
            }
            Err(Interrupted::Lapsed(why)) => {
                tracing::debug!(why, "waiting for the next lease renewal");
                return Parked::Until(now_millis() + LEASE_WAIT.as_millis() as i64);
            }
        };
        let decision = machine::decide(&row, outcome, &policy, now_millis(), rand::random::<f64>() * 0.1);
        executor.announce(&row, &decision);
        // Boxed: the commit's state (the decision, the store call, the retry timer) exists only
        // while committing, not in every waiting unit's task.
        let Some(committed) = Box::pin(executor.commit_kept(&row, decision, &cancel)).await else {
            return Parked::Cancelled;
        };
        match committed {
            Ok(Wake::Now) => {}
            Ok(Wake::At(at)) => return Parked::Until(at),
            Ok(Wake::Stop) => return Parked::Done,
            Err(e @ StoreError::LeaseLost { .. }) => {
                info!(error = %e, "this instance no longer holds the unit; it stops driving it");
                return Parked::Cancelled;
            }
            Err(e) => {
                error!(state = row.state.as_str(), error = %e, retry_in_ms = STORE_RETRY.as_millis() as u64,
                    "cannot record the unit's progress; the step runs again");
                return Parked::Until(now_millis() + STORE_RETRY.as_millis() as i64);
            }
        }
    }
}

struct Executor {
    env: Arc<Env>,
    unit: UnitId,
}

impl Executor {
    fn policy(&self) -> Policy {
        let config = &self.env.config;
        Policy {
            check_min: config.check.min_interval,
            check_max: config.check.max_interval,
            renew_on_expiry: config.daemon.on_expiry == crate::config::OnExpiry::Renew,
            max_renewals: config.daemon.max_renewals,
            cleanup: config.daemon.cleanup,
        }
    }

    fn config_unit(&self) -> Option<&Unit> {
        super::config_unit(&self.env.config, self.unit)
    }

    /// Performs `effect`, waiting at the account gate first when it calls DigiCert, and turns
    /// every error into the outcome the machine decides on; `Err` when this instance may not act
    /// for the unit (nothing is decided then).
    async fn perform_gated(&self, row: &UnitRow, effect: Effect) -> Result<Outcome, Interrupted> {
        let gate = self.env.account.clone().filter(|_| machine::calls_digicert(effect));
        // The probe slot is released however the effect ends, cancellation included (a reload
        // cancels units mid-call); after a success or a refusal the release changes nothing.
        let _probe = match &gate {
            // Boxed: the gate's wait exists only while the gate is closed, not in every unit.
            Some(gate) if Box::pin(gate.admit()).await == Admission::Probe => Some(ReleaseProbe(gate.clone())),
            _ => None,
        };
        Ok(match self.perform(row, effect).await {
            Ok(outcome) => outcome,
            Err(StepError::Lost(cause)) => return Err(Interrupted::Lost(cause)),
            Err(StepError::Lapsed(why)) => return Err(Interrupted::Lapsed(why)),
            Err(StepError::Retry(cause)) => Outcome::Transient { why: cause.to_string() },
            Err(StepError::Account(cause)) if gate.is_some() => {
                let why = cause.to_string();
                // One ERROR for the account (the gate logs it), none per unit; the unit keeps its
                // state and waits at the gate.
                if let Some(gate) = &gate {
                    gate.refused(&why);
                }
                Outcome::AccountRefused { why }
            }
            Err(StepError::Fatal(cause) | StepError::Account(cause)) => {
                match self.remove_live_records().await {
                    Err(StepError::Lost(lost)) => return Err(Interrupted::Lost(lost)),
                    Err(StepError::Lapsed(why)) => return Err(Interrupted::Lapsed(why)),
                    // The records stay listed as live; `dcvd cleanup` or the next start removes them.
                    Err(e) => {
                        warn!(error = %e, "cleanup after failure failed; records remain listed in the state store")
                    }
                    Ok(()) => {}
                }
                Outcome::Failed { why: cause.to_string() }
            }
        })
    }

    async fn perform(&self, row: &UnitRow, effect: Effect) -> Result<Outcome, StepError> {
        let spec = match effect {
            Effect::RemoveRecords(reason) => {
                self.remove_live_records().await?;
                if reason == Removal::Retired {
                    info!("unit left the configuration; its records are removed");
                }
                return Ok(Outcome::Removed(reason));
            }
            Effect::Stop | Effect::SleepUntil(_) => unreachable!("the driver handles {effect:?}"),
            // Borrowed from the configuration this unit's environment holds (no copy per step).
            _ => match self.config_unit() {
                Some(spec) => spec,
                // Synced out of the configuration between two reads: retire it.
                None => {
                    self.remove_live_records().await?;
                    return Ok(Outcome::Removed(Removal::Retired));
                }
            },
        };
        // Each effect boxed on its own: a unit waiting for propagation (thousands at once) then
        // holds the wait's state, not the size of the largest effect. Likewise the waits for a
        // permit (thousands of units queue for `max_concurrent` permits) happen between the boxed
        // parts, so a queued unit holds the permit's future, not the call's.
        match effect {
            Effect::FetchToken => {
                // CAA first: a unit whose names CAA forbids to DigiCert fails before any token is
                // spent. Names learnt from DigiCert are not known yet; DigiCert's own check
                // covers those.
                if self.env.config.certcentral.caa_check
                    && !spec.domains.is_empty()
                    && let Some(reason) = Box::pin(super::caa::check_names(&self.env.checker, &spec.domains)).await
                {
                    return Err(StepError::Fatal(Cause::Caa(reason)));
                }
                Box::pin(self.fetch_token(row, spec)).await
            }
            Effect::Publish => {
                let intents = Box::pin(self.record_publish_intents(row, spec)).await?;
                let permit = self.permit().await;
                Box::pin(self.publish(intents, permit)).await
            }
            Effect::AwaitPropagation => Box::pin(self.wait_propagated(row)).await,
            Effect::Check => Box::pin(self.check(row, spec)).await,
            Effect::Stop | Effect::SleepUntil(_) | Effect::RemoveRecords(_) => unreachable!("handled above"),
        }
    }

    /// Logs what `decision` asks the operator to read, once, before it is committed.
    fn announce(&self, row: &UnitRow, decision: &Decision) {
        let changes = &decision.changes;
        match &decision.note {
            Some(Note::WillRetry { attempt, retry_in }) => {
                warn!(
                    state = row.state.as_str(),
                    error = changes.last_error.as_deref().unwrap_or(""),
                    attempt,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "step failed, will retry"
                );
            }
            Some(Note::Recheck { attempt, retry_in }) => {
                warn!(
                    attempt,
                    error = changes.last_error.as_deref().unwrap_or(""),
                    retry_in_ms = retry_in.as_millis() as u64,
                    "digicert has not seen the record yet"
                );
            }
            Some(Note::Renewing { renewal }) => {
                warn!(renewal, max = self.env.config.daemon.max_renewals, "token expired, fetching a new one");
            }
            None => {}
        }
    }

    /// Commits `decision`, keeping it while the store does not answer: performing the step again
    /// after an outage would repeat its calls (a second random value from DigiCert, a second
    /// check). Fencing still applies when the store answers; `None` when `cancel` fired (a lost
    /// lease cancels the wait).
    async fn commit_kept(
        &self,
        row: &UnitRow,
        decision: Decision,
        cancel: &CancellationToken,
    ) -> Option<Result<Wake, StoreError>> {
        loop {
            match self.commit(row, decision.clone()).await {
                // Reported once for the instance by the lease renewal (ERROR, `/healthz`).
                Err(e @ StoreError::Unavailable { .. }) => {
                    tracing::debug!(state = row.state.as_str(), error = %e, "cannot record the unit's progress yet; keeping it");
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return None,
                        () = tokio::time::sleep(LEASE_WAIT) => {}
                    }
                }
                committed => return Some(committed),
            }
        }
    }

    /// Commits `decision` in one store transaction, then logs and notifies.
    async fn commit(&self, row: &UnitRow, decision: Decision) -> Result<Wake, StoreError> {
        let Decision { to, changes, wake, note: _ } = decision;
        let elapsed_ms = u64::try_from(now_millis() - row.state_since).unwrap_or(0);
        let unit = self.unit;
        let new = self.env.store.write(move |s| s.transition(unit, to, move |r| changes.apply(r))).await?;
        if to == UnitState::Valid && row.state != UnitState::Valid {
            let validated_in = Duration::from_millis(u64::try_from(now_millis() - row.created_at).unwrap_or(0));
            self.env.metrics.observe_validation(validated_in);
        }
        if new.state != row.state {
            log_transition(&new, row.state, elapsed_ms);
            let ended = new.state.is_terminal() || (new.state == UnitState::Valid && !self.env.config.daemon.cleanup);
            if ended {
                self.env.notifier.send(crate::notify::Event::unit(
                    new.unit.kind.as_str(),
                    new.unit.id,
                    new.state.as_str(),
                    new.domains.clone(),
                    new.last_error.clone(),
                ));
            }
        }
        Ok(wake)
    }

    async fn records(&self) -> Result<Vec<RecordRow>, StoreError> {
        let unit = self.unit;
        self.env.store.read(move |s| s.records(unit)).await
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.env.permits.acquire().await.expect("semaphore never closed")
    }

    // ---- Pending -> TokenIssued ------------------------------------------------------------

    /// Asks DigiCert for the token (see `perform` for the CAA check before). No permit: DigiCert
    /// calls are paced by the rate limiter, and a unit waiting there must not hold a slot that a
    /// unit with its token needs to publish (with thousands of token requests queued, nothing
    /// would be published before the last token came).
    async fn fetch_token(&self, row: &UnitRow, spec: &Unit) -> Result<Outcome, StepError> {
        match self.unit.kind {
            UnitKind::Order => {
                let mut domains = spec.domains.clone();
                if domains.is_empty() {
                    // Only ask for the order when the config leaves its names out: every call
                    // counts against DigiCert's rate limit.
                    let info = self.env.client.order_info(self.unit.id).await?;
                    if info.status == "issued" {
                        info!(status = %info.status, "order already issued at DigiCert, nothing to validate");
                        return Ok(Outcome::AlreadyIssued);
                    }
                    if is_terminal_order_status(&info.status) {
                        return Err(StepError::Fatal(Cause::Other(format!("order is {} at DigiCert", info.status))));
                    }
                    domains = info.dns_names();
                    if domains.is_empty() {
                        return Err(StepError::Fatal(Cause::Other(
                            "DigiCert returned no dns_names for the order".into(),
                        )));
                    }
                }
                let value = self.env.client.dcv_random_value(self.unit.id).await?;
                Ok(Outcome::TokenIssued(IssuedToken {
                    domains,
                    token: value.dcv_random_value,
                    expires_at: value.expiration_date.map(|t| t.timestamp()),
                    verification_value: None,
                }))
            }
            UnitKind::Domain => {
                let mut token = None;
                if !spec.submit.is_empty() && row.renewals == 0 {
                    let req = SubmitValidationRequest {
                        validations: spec.submit.iter().map(|t| ValidationType { kind: t.clone() }).collect(),
                        dcv_method: Some(dcv_method(spec.method)),
                        email_array: None,
                    };
                    token = self.env.client.submit_domain_validation(self.unit.id, &req).await?.dcv_token;
                }
                let token = match token {
                    Some(t) => t,
                    None => self.env.client.generate_domain_token(self.unit.id).await?,
                };
                Ok(Outcome::TokenIssued(IssuedToken {
                    domains: spec.domains.clone(),
                    token: token.token,
                    expires_at: token.expiration_date.map(|t| t.timestamp()),
                    verification_value: token.verification_value,
                }))
            }
        }
    }

    // ---- TokenIssued -> Published ----------------------------------------------------------

    /// Writes the intents of the unit's records (where the CNAMEs lead, which provider serves
    /// them) before any provider call: if we crash after the call, the restart knows what may
    /// exist. Returns the rows to publish.
    async fn record_publish_intents(&self, row: &UnitRow, spec: &Unit) -> Result<Vec<RecordRow>, StepError> {
        let token = row.token.clone().ok_or_else(|| StepError::Retry(Cause::Other("no token stored".into())))?;
        let wanted = records::records_for(
            spec.method,
            spec.txt_name,
            spec.cname_name,
            spec.scope,
            &row.domains,
            &token,
            row.verification_value.as_deref(),
        );
        let mut intents = Vec::with_capacity(wanted.len());
        for mut record in wanted {
            if record.rtype == RecordType::Txt && record.name.starts_with("_dnsauth.") {
                // Delegated validation: `_dnsauth.<domain>` may be a CNAME into a zone with
                // narrower credentials; the TXT goes where the CNAME points.
                match self.env.checker.target(&record.name, true).await {
                    Ok(target) if target.is_delegated() => {
                        info!(record = %record.name, target = %target.owner, "following CNAME delegation");
                        record.name = target.owner.clone();
                    }
                    Ok(_) => {}
                    // No zone found: nothing to follow. Publishing where configured lets the
                    // routing below, or the propagation wait (bounded by [propagation] timeout),
                    // fail with the cause instead of retrying until the token expires.
                    Err(e) if e.is_no_zone() => {}
                    Err(e) => return Err(StepError::Retry(e.into())),
                }
            }
            let routed = match spec.provider.as_deref() {
                Some(p) => self.env.router.route_via(p, &record.name),
                None => self.env.router.route(&record.name),
            };
            let (provider, _, zone) = routed.map_err(|e| {
                StepError::Fatal(Cause::Routing(match self.unit.kind {
                    // The names may have come from DigiCert, unchecked by check-config.
                    UnitKind::Order => format!(
                        "{e} (validation_scope = \"{}\" puts the record for {} there; serve that name with a \
                         provider or change validation_scope to match the CertCentral account)",
                        spec.scope,
                        row.domains.join(", ")
                    ),
                    UnitKind::Domain => e.to_string(),
                }))
            })?;
            intents.push(NewRecord {
                provider: provider.to_string(),
                zone: zone.to_string(),
                name: record.name.clone(),
                rtype: record.rtype,
                value: record.value.clone(),
                ttl: record.ttl,
            });
        }
        let unit = self.unit;
        Ok(self.env.store.write(move |s| s.record_publish_intent(unit, &intents)).await?)
    }

    /// Publishes the records whose intents `rows` are, holding `_permit`, and records that they
    /// are published.
    async fn publish(
        &self,
        rows: Vec<RecordRow>,
        _permit: tokio::sync::SemaphorePermit<'_>,
    ) -> Result<Outcome, StepError> {
        let mut confirmed: Vec<(i64, dns_provider::Published)> = Vec::with_capacity(rows.len());
        for ((provider, zone), group) in group_by_zone(rows.iter().filter(|r| r.status != RecordStatus::Removed)) {
            let p = self
                .env
                .router
                .provider(&provider)
                .ok_or_else(|| StepError::Fatal(Cause::Other(format!("provider {provider} is no longer configured"))))?
                .clone();
            let recs: Vec<Record> = group.iter().map(|r| to_record(r)).collect();
            self.env.may_act().map_err(StepError::Lapsed)?;
            let started = Instant::now();
            let result = p.publish_batch(&zone, &recs).await;
            self.env.metrics.observe_provider(&provider, "publish", result.is_ok(), started.elapsed());
            let published = result?;
            for (r, pubd) in group.iter().zip(published) {
                info!(record = %r.name, rtype = %r.rtype, provider = %provider, "record published");
                confirmed.push((r.id, pubd));
            }
        }
        // One commit for every record of the step: the intents already cover a crash before it
        // (the step runs again; publishing is idempotent).
        self.env
            .store
            .write(move |s| {
                let confirmations: Vec<PublishConfirmation<'_>> = confirmed
                    .iter()
                    .map(|(id, p)| PublishConfirmation {
                        record_id: *id,
                        provider_id: p.provider_id.as_deref(),
                        change_id: p.change_id.as_deref(),
                    })
                    .collect();
                s.mark_all_published(&confirmations)
            })
            .await?;
        Ok(Outcome::Published)
    }

    // ---- Published -> Propagated -----------------------------------------------------------

    async fn wait_propagated(&self, row: &UnitRow) -> Result<Outcome, StepError> {
        let recs: Vec<RecordRow> =
            self.records().await?.into_iter().filter(|r| r.status == RecordStatus::Published).collect();
        if recs.is_empty() {
            // Nothing live (e.g. the intents were cleaned): publish again.
            return Ok(Outcome::NothingLive);
        }
        let timeout = self.env.config.propagation.timeout;
        let waited = Duration::from_millis(u64::try_from(now_millis() - row.state_since).unwrap_or(0));
        let remaining = timeout.saturating_sub(waited);
        // Provider signals first (Route53 INSYNC); DNS stays the final word.
        for ((provider, _zone), group) in group_by_zone(recs.iter()) {
            let published: Vec<dns_provider::Published> = group
                .iter()
                .filter(|r| r.change_id.is_some())
                .map(|r| dns_provider::Published { provider_id: r.provider_id.clone(), change_id: r.change_id.clone() })
                .collect();
            if let (false, Some(p)) = (published.is_empty(), self.env.router.provider(&provider)) {
                p.wait_until_applied(&published, remaining).await?;
            }
        }
        let deadline = tokio::time::Instant::now() + remaining;
        let started = Instant::now();
        // One entry per record in the checker's shared poller (no task per record); it logs
        // the lagging servers in this unit's span. The first error ends the step and drops the
        // other watches, which cancels them.
        let mut waits: Vec<propagation::Watch> = recs
            .iter()
            .map(|r| {
                let expected = match r.rtype {
                    RecordType::Cname => Expected::Cname(r.value.clone()),
                    RecordType::Txt => Expected::Txt(r.value.clone()),
                };
                self.env.checker.watch(&r.name, &expected, deadline)
            })
            .collect();
        // The poller holds what it polls: thousands of units wait here at once, without their rows.
        drop(recs);
        let mut negative_ttl = Duration::ZERO;
        while !waits.is_empty() {
            let (index, result) = std::future::poll_fn(|cx| {
                waits
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, w)| match std::pin::Pin::new(w).poll(cx) {
                        std::task::Poll::Ready(r) => Some((i, r)),
                        std::task::Poll::Pending => None,
                    })
                    .map_or(std::task::Poll::Pending, std::task::Poll::Ready)
            })
            .await;
            waits.swap_remove(index);
            match result {
                Ok(progress) => negative_ttl = negative_ttl.max(progress.target.negative_ttl),
                Err(propagation::Error::Timeout { name, waited, lagging }) => {
                    return Err(StepError::Fatal(Cause::Other(format!(
                        "{name}: not served by every name server after {}; lagging: {}",
                        humantime::format_duration(Duration::from_secs(waited.as_secs())),
                        lagging.join(", ")
                    ))));
                }
                Err(e) => return Err(StepError::Retry(e.into())),
            }
        }
        self.env.metrics.observe_propagation(started.elapsed());
        Ok(Outcome::Propagated { negative_ttl })
    }

    // ---- Propagated/Checking -> Valid ------------------------------------------------------

    async fn check(&self, row: &UnitRow, spec: &Unit) -> Result<Outcome, StepError> {
        // No permit: a propagated unit's check must not queue behind token requests that hold
        // permits while they wait for the rate limiter; the limiter's check lane orders them.
        let outcome = match self.unit.kind {
            UnitKind::Order => self.env.client.check_dcv(self.unit.id).await.map(|r| {
                if let Some(v) = &r.dns_name_validations {
                    for n in v {
                        info!(domain = %n.dns_name, status = n.status.as_deref().unwrap_or("?"), "digicert name status");
                    }
                }
                let terminal = r.order_status.as_deref().filter(|s| is_terminal_order_status(s) && *s != "issued");
                (r.is_valid() || r.order_status.as_deref() == Some("issued"), terminal.map(str::to_string))
            }),
            UnitKind::Domain => self.env.client.validate_domain_token(self.unit.id).await.map(|r| (r.is_active(), None)),
        };
        match outcome {
            Ok((true, _)) => Ok(Outcome::Valid),
            Ok((false, Some(status))) => Err(StepError::Fatal(Cause::Other(format!("order is {status} at DigiCert")))),
            Ok((false, None)) => Ok(Outcome::NotSeenYet { why: "dcv status not valid yet".into() }),
            Err(e) if e.is_not_found_yet() => {
                method_mismatch_hint(spec.method, e.code().unwrap_or(""), row.attempts + 1);
                Ok(Outcome::NotSeenYet { why: e.to_string() })
            }
            Err(e) if e.is_wrong_method() && machine::may_switch_method(row) => {
                // The order was placed with another DCV method: switch it once (remembered in the
                // store, also across restarts), then check again.
                warn!(code = e.code().unwrap_or(""), method = spec.method.as_str(), "switching the order's DCV method");
                let _permit = self.permit().await;
                self.env.client.change_order_dcv_method(self.unit.id, &dcv_method(spec.method)).await?;
                Ok(Outcome::MethodSwitched)
            }
            Err(e) if e.is_wrong_method() => Err(StepError::Fatal(e.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes every record of this unit that may be live, intent first.
    async fn remove_live_records(&self) -> Result<(), StepError> {
        let live: Vec<RecordRow> =
            self.records().await?.into_iter().filter(|r| r.status != RecordStatus::Removed).collect();
        // Boxed: the calls inside stay out of the waiting unit's future (see `perform`).
        Box::pin(remove_rows(&self.env, &live)).await
    }
}

/// Removes `rows` (records of one unit, logged in its span), writing the intent first.
async fn remove_rows(env: &Env, rows: &[RecordRow]) -> Result<(), StepError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    env.store.write(move |s| s.record_remove_intent(&ids)).await?;
    let _permit = env.permits.acquire().await.expect("semaphore never closed");
    for ((provider, zone), group) in group_by_zone(rows.iter()) {
        let p = env.router.provider(&provider).ok_or_else(|| {
            StepError::Retry(Cause::Other(format!(
                "provider {provider} is no longer configured; cannot remove {}",
                group[0].name
            )))
        })?;
        let recs: Vec<Record> = group.iter().map(|r| to_record(r)).collect();
        env.may_act().map_err(StepError::Lapsed)?;
        let started = Instant::now();
        let result = p.remove_batch(&zone, &recs).await;
        env.metrics.observe_provider(&provider, "remove", result.is_ok(), started.elapsed());
        result?;
        let ids: Vec<i64> = group.iter().map(|r| r.id).collect();
        env.store.write(move |s| s.mark_removed(&ids)).await?;
        for r in &group {
            info!(record = %r.name, rtype = %r.rtype, provider = %provider, "record removed");
        }
    }
    Ok(())
}

fn group_by_zone<'a>(rows: impl Iterator<Item = &'a RecordRow>) -> BTreeMap<(String, String), Vec<&'a RecordRow>> {
    let mut groups: BTreeMap<(String, String), Vec<&RecordRow>> = BTreeMap::new();
    for r in rows {
        groups.entry((r.provider.clone(), r.zone.clone())).or_default().push(r);
    }
    groups
}

fn to_record(r: &RecordRow) -> Record {
    let mut rec = match r.rtype {
        RecordType::Cname => Record::cname(&r.name, &r.value),
        RecordType::Txt => Record::txt(&r.name, &r.value),
    };
    rec.ttl = r.ttl;
    rec
}

/// After this many "not found yet" answers in a row, a code naming the other DNS method says so.
const MISMATCH_HINT_AFTER: u32 = 3;

/// DigiCert names the record it looked for in its "not found" code: `invalid_dns_txt` for a
/// dns-cname-token unit (or the reverse) means the order's method at DigiCert is not the
/// configured one, and checking again will never succeed. Says so once, with the fix.
fn method_mismatch_hint(configured: Method, code: &str, attempts: u32) {
    let at_digicert = match code.trim() {
        "invalid_dns_txt" => Method::DnsTxtToken,
        "invalid_dns_cname" => Method::DnsCnameToken,
        _ => return,
    };
    if at_digicert != configured && attempts == MISMATCH_HINT_AFTER {
        warn!(
            code = code.trim(),
            method = configured.as_str(),
            "DigiCert keeps answering {} for this {configured} unit: the order's DCV method at DigiCert may be \
             {at_digicert}; set method = \"{at_digicert}\" for it, or change its method in CertCentral",
            code.trim()
        );
    }
}

fn dcv_method(m: Method) -> DcvMethod {
    match m {
        Method::DnsTxtToken => DcvMethod::DnsTxtToken,
        Method::DnsCnameToken => DcvMethod::DnsCnameToken,
    }
}

/// One line per state change; a unit that ends failed or expired gets exactly one ERROR: this
/// one, with the reason and what was tried.
fn log_transition(row: &UnitRow, from: UnitState, elapsed_ms: u64) {
    let domain = row.domains.join(",");
    let state = row.state.as_str();
    let from = from.as_str();
    let attempts = row.attempts;
    if matches!(row.state, UnitState::Failed | UnitState::Expired) {
        let error = row.last_error.as_deref().unwrap_or("");
        error!(domain, state, from, elapsed_ms, attempts, error, "state changed");
    } else {
        info!(domain, state, from, elapsed_ms, attempts, "state changed");
    }
}
