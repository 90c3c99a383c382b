//! One unit's state machine: token -> publish -> propagation -> check -> cleanup.
//!
//! Every step reads the unit's row, does at most one kind of external side effect, and writes
//! the outcome in one store transaction. Intent is written before a record is published or
//! removed, so a crash between any two steps is repaired by running the step again: publishing
//! and removing are idempotent at every provider.

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
use crate::config::{Method, OnExpiry, Unit};
use crate::records;
use crate::store::{
    NewRecord, PublishConfirmation, RecordRow, RecordStatus, UnitId, UnitKind, UnitRow, UnitState, now_millis,
};

/// How often, at most, a unit waiting for a lagging name server says so at INFO: a minute, or
/// four of the longest poll intervals when polls are faster (tests).
const PROPAGATION_REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the loop does after a step.
#[derive(Debug)]
enum Flow {
    /// Run the next step at once.
    Continue,
    /// Sleep until this unix-millis time, then run the step again.
    SleepUntil(i64),
    /// The unit needs nothing more from this task.
    Done,
}

/// Why a step did not complete.
#[derive(Debug)]
enum StepError {
    /// Worth trying again later (network, 5xx, throttling, DNS discovery hiccup).
    Retry(String),
    /// Permanent for this unit: it fails (records are cleaned up).
    Fatal(String),
    /// CertCentral refused the API key (401/403): a condition of the account, not of the unit.
    Account(String),
}

impl From<certcentral::Error> for StepError {
    fn from(e: certcentral::Error) -> Self {
        if e.is_auth() {
            Self::Account(e.to_string())
        } else if e.is_retryable() {
            Self::Retry(e.to_string())
        } else {
            Self::Fatal(e.to_string())
        }
    }
}

impl From<ProviderError> for StepError {
    fn from(e: ProviderError) -> Self {
        if e.is_retryable() { Self::Retry(e.to_string()) } else { Self::Fatal(e.to_string()) }
    }
}

impl From<crate::store::StoreError> for StepError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as E;
        match e {
            // The disk or a concurrent reader may recover; a logic error will not.
            E::Sqlite(_) | E::Io { .. } | E::Unavailable { .. } => Self::Retry(format!("state store: {e}")),
            _ => Self::Fatal(format!("state store: {e}")),
        }
    }
}

/// The span every line about `unit` is logged in, from any crate: one log identity.
pub(crate) fn unit_span(unit: UnitId) -> tracing::Span {
    tracing::info_span!("unit", unit_kind = unit.kind.as_str(), unit_id = unit.id)
}

/// Frees the account gate's probe slot when dropped.
struct ReleaseProbe(Arc<super::account::AccountGate>);

impl Drop for ReleaseProbe {
    fn drop(&mut self) {
        self.0.probe_inconclusive();
    }
}

/// Drives one unit until it is terminal or `cancel` fires, inside the unit's span.
pub(super) async fn drive(env: Arc<Env>, unit: UnitId, cancel: CancellationToken) {
    drive_in_span(env, unit, cancel).instrument(unit_span(unit)).await;
}

async fn drive_in_span(env: Arc<Env>, unit: UnitId, cancel: CancellationToken) {
    let mut task = UnitTask { env, unit, transient_failures: 0, negative_ttl: None, method_changed: false };
    loop {
        let row = match task.env.store.read(move |s| s.unit(unit)).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                error!(error = %e, "cannot read unit state");
                return;
            }
        };
        let flow = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            // Boxed: a unit that sleeps between steps then holds only this small loop.
            flow = Box::pin(task.step(row)) => flow,
        };
        match flow {
            Flow::Continue => {}
            Flow::Done => return,
            Flow::SleepUntil(at) => {
                let wait = Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0));
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

struct UnitTask {
    env: Arc<Env>,
    unit: UnitId,
    /// Consecutive retryable failures, for the backoff of transient errors.
    transient_failures: u32,
    /// The zones' negative TTL learned during propagation: a "not found" from DigiCert means its
    /// resolver cached the absence for about that long, so checking sooner is wasted.
    negative_ttl: Option<Duration>,
    /// Whether this task already asked DigiCert to switch the order to the configured method.
    method_changed: bool,
}

impl UnitTask {
    fn config_unit(&self) -> Option<Unit> {
        let key = match self.unit.kind {
            UnitKind::Order => crate::config::UnitKey::Order(self.unit.id),
            UnitKind::Domain => crate::config::UnitKey::Domain(self.unit.id),
        };
        self.env.config.unit(key).cloned()
    }

    async fn step(&mut self, row: UnitRow) -> Flow {
        if row.state.is_terminal() {
            return Flow::Done;
        }
        if let Some(at) = row.next_action_at.filter(|at| *at > now_millis()) {
            return Flow::SleepUntil(at);
        }
        // While CertCentral refuses the key, steps that call it wait here (one unit probes).
        let calls_digicert =
            row.in_config && matches!(row.state, UnitState::Pending | UnitState::Propagated | UnitState::Checking);
        let gate = self.env.account.clone().filter(|_| calls_digicert);
        // The probe slot is released however the step ends, cancellation included (a reload
        // cancels units mid-call); after a success or a refusal the release changes nothing.
        let _probe = match &gate {
            Some(gate) if gate.admit().await == Admission::Probe => Some(ReleaseProbe(gate.clone())),
            _ => None,
        };
        let result = if !row.in_config {
            self.retire(&row).await
        } else if let Some(spec) = self.config_unit() {
            self.advance(row.clone(), &spec).await
        } else {
            self.retire(&row).await
        };
        match result {
            Ok(flow) => {
                self.transient_failures = 0;
                flow
            }
            Err(StepError::Retry(msg)) => {
                self.transient_failures += 1;
                let delay = backoff(
                    self.env.config.check.min_interval.min(Duration::from_secs(2)),
                    self.env.config.check.max_interval,
                    self.transient_failures,
                );
                warn!(state = row.state.as_str(), error = %msg, attempt = self.transient_failures,
                    retry_in_ms = delay.as_millis() as u64, "step failed, will retry");
                let at = now_millis() + delay.as_millis() as i64;
                let (unit, state, why) = (self.unit, row.state, msg.clone());
                let _ = self
                    .env
                    .store
                    .write(move |s| {
                        s.transition(unit, state, move |r| {
                            r.last_error = Some(why);
                            r.next_action_at = Some(at);
                        })
                    })
                    .await;
                Flow::SleepUntil(at)
            }
            Err(StepError::Account(msg)) if gate.is_some() => {
                // One ERROR for the account (the gate logs it), none per unit; the unit keeps
                // its state and waits at the gate.
                if let Some(gate) = &gate {
                    gate.refused(&msg);
                }
                let (unit, state) = (self.unit, row.state);
                let _ =
                    self.env.store.write(move |s| s.transition(unit, state, move |r| r.last_error = Some(msg))).await;
                Flow::Continue
            }
            Err(StepError::Fatal(msg) | StepError::Account(msg)) => self.fail(&row, msg).await,
        }
    }

    /// One step of the state machine for a unit that is in the configuration.
    async fn advance(&mut self, row: UnitRow, spec: &Unit) -> Result<Flow, StepError> {
        if matches!(
            row.state,
            UnitState::TokenIssued | UnitState::Published | UnitState::Propagated | UnitState::Checking
        ) && token_expired(&row)
        {
            return self.expire(&row).await;
        }
        match row.state {
            UnitState::Pending => self.fetch_token(&row, spec).await,
            UnitState::TokenIssued => self.publish(&row, spec).await,
            UnitState::Published => self.wait_propagated(&row).await,
            UnitState::Propagated | UnitState::Checking => self.check(&row, spec).await,
            UnitState::Valid => self.finish_valid(&row).await,
            UnitState::CleanedUp | UnitState::Expired | UnitState::Failed | UnitState::Removed => Ok(Flow::Done),
        }
    }

    async fn records(&self) -> Result<Vec<RecordRow>, crate::store::StoreError> {
        let unit = self.unit;
        self.env.store.read(move |s| s.records(unit)).await
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.env.permits.acquire().await.expect("semaphore never closed")
    }

    async fn transition(
        &self,
        row: &UnitRow,
        to: UnitState,
        edit: impl FnOnce(&mut UnitRow) + Send + 'static,
    ) -> Result<UnitRow, StepError> {
        let elapsed_ms = u64::try_from(now_millis() - row.state_since).unwrap_or(0);
        let unit = self.unit;
        let new = self
            .env
            .store
            .write(move |s| {
                s.transition(unit, to, move |r| {
                    r.next_action_at = None;
                    r.last_error = None;
                    edit(r);
                })
            })
            .await?;
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
        Ok(new)
    }

    // ---- Pending -> TokenIssued ------------------------------------------------------------

    async fn fetch_token(&mut self, row: &UnitRow, spec: &Unit) -> Result<Flow, StepError> {
        let _permit = self.permit().await;
        match self.unit.kind {
            UnitKind::Order => {
                let mut domains = spec.domains.clone();
                if domains.is_empty() {
                    // Only ask for the order when the config leaves its names out: every call
                    // counts against DigiCert's rate limit.
                    let info = self.env.client.order_info(self.unit.id).await?;
                    if is_terminal_order_status(&info.status) {
                        return self.order_terminal(row, &info.status).await;
                    }
                    domains = info.dns_names();
                    if domains.is_empty() {
                        return Err(StepError::Fatal("DigiCert returned no dns_names for the order".into()));
                    }
                }
                let value = self.env.client.dcv_random_value(self.unit.id).await?;
                let expires = value.expiration_date.map(|t| t.timestamp());
                let token = value.dcv_random_value;
                self.transition(row, UnitState::TokenIssued, move |r| {
                    r.domains = domains;
                    r.token = Some(token);
                    r.token_expires_at = expires;
                    r.verification_value = None;
                    r.attempts = 0;
                })
                .await?;
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
                let domains = spec.domains.clone();
                self.transition(row, UnitState::TokenIssued, move |r| {
                    r.domains = domains;
                    r.token_expires_at = token.expiration_date.map(|t| t.timestamp());
                    r.verification_value = token.verification_value;
                    r.token = Some(token.token);
                    r.attempts = 0;
                })
                .await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn order_terminal(&self, row: &UnitRow, status: &str) -> Result<Flow, StepError> {
        if status == "issued" {
            info!(status, "order already issued at DigiCert, nothing to validate");
            self.transition(row, UnitState::Valid, |_| {}).await?;
            Ok(Flow::Continue)
        } else {
            Err(StepError::Fatal(format!("order is {status} at DigiCert")))
        }
    }

    // ---- TokenIssued -> Published ----------------------------------------------------------

    async fn publish(&mut self, row: &UnitRow, spec: &Unit) -> Result<Flow, StepError> {
        let token = row.token.clone().ok_or_else(|| StepError::Retry("no token stored".into()))?;
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
                    Err(e) => return Err(StepError::Retry(e.to_string())),
                }
            }
            let routed = match spec.provider.as_deref() {
                Some(p) => self.env.router.route_via(p, &record.name),
                None => self.env.router.route(&record.name),
            };
            let (provider, _, zone) = routed.map_err(|e| {
                StepError::Fatal(match self.unit.kind {
                    // The names may have come from DigiCert, unchecked by check-config.
                    UnitKind::Order => format!(
                        "{e} (validation_scope = \"{}\" puts the record for {} there; serve that name with a \
                         provider or change validation_scope to match the CertCentral account)",
                        spec.scope,
                        row.domains.join(", ")
                    ),
                    UnitKind::Domain => e.to_string(),
                })
            })?;
            intents.push(NewRecord {
                provider: provider.to_string(),
                zone: zone.to_string(),
                name: record.name.clone(),
                rtype: record.rtype.as_str().to_string(),
                value: record.value.clone(),
                ttl: record.ttl,
            });
        }
        // Intent first: if we crash after the provider call, the restart knows what may exist.
        let unit = self.unit;
        let rows = self.env.store.write(move |s| s.record_publish_intent(unit, &intents)).await?;
        let _permit = self.permit().await;
        let mut confirmed: Vec<(i64, dns_provider::Published)> = Vec::with_capacity(rows.len());
        for ((provider, zone), group) in group_by_zone(rows.iter().filter(|r| r.status != RecordStatus::Removed)) {
            let p = self
                .env
                .router
                .provider(&provider)
                .ok_or_else(|| StepError::Fatal(format!("provider {provider} is no longer configured")))?
                .clone();
            let recs: Vec<Record> = group.iter().map(|r| to_record(r)).collect();
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
        self.transition(row, UnitState::Published, |_| {}).await?;
        Ok(Flow::Continue)
    }

    // ---- Published -> Propagated -----------------------------------------------------------

    async fn wait_propagated(&mut self, row: &UnitRow) -> Result<Flow, StepError> {
        let recs: Vec<RecordRow> =
            self.records().await?.into_iter().filter(|r| r.status == RecordStatus::Published).collect();
        if recs.is_empty() {
            // Nothing live (e.g. the intents were cleaned): publish again.
            self.transition(row, UnitState::TokenIssued, |_| {}).await?;
            return Ok(Flow::Continue);
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
        let mut waits = tokio::task::JoinSet::new();
        let cancel = CancellationToken::new();
        let _guard = cancel.clone().drop_guard();
        let poll_max = self.env.config.propagation.poll_max;
        for r in &recs {
            let checker = self.env.checker.clone();
            let expected = match r.rtype.as_str() {
                "CNAME" => Expected::Cname(r.value.clone()),
                _ => Expected::Txt(r.value.clone()),
            };
            let name = r.name.clone();
            let cancel = cancel.clone();
            waits.spawn(tracing::Instrument::in_current_span(async move {
                let mut last_lagging = usize::MAX;
                let mut last_report = tokio::time::Instant::now();
                let report_every = PROPAGATION_REPORT_EVERY.min(poll_max * 4);
                let mut on_progress = |p: &propagation::Progress| {
                    let lagging = p.lagging();
                    if lagging.len() != last_lagging {
                        last_lagging = lagging.len();
                        tracing::debug!(record = %name, lagging = ?lagging, "propagation progress");
                    }
                    // No silence while a name server lags: one line a minute naming the laggards.
                    if !lagging.is_empty() && last_report.elapsed() >= report_every {
                        last_report = tokio::time::Instant::now();
                        info!(record = %name, lagging = %lagging.join(", "), "still waiting for propagation");
                    }
                };
                checker.wait_visible(&name, &expected, deadline, &cancel, &mut on_progress).await
            }));
        }
        let mut negative_ttl = Duration::ZERO;
        while let Some(joined) = waits.join_next().await {
            match joined {
                Ok(Ok(progress)) => negative_ttl = negative_ttl.max(progress.target.negative_ttl),
                Ok(Err(propagation::Error::Timeout { name, waited, lagging })) => {
                    return Err(StepError::Fatal(format!(
                        "{name}: not served by every name server after {}; lagging: {}",
                        humantime::format_duration(Duration::from_secs(waited.as_secs())),
                        lagging.join(", ")
                    )));
                }
                Ok(Err(e)) => return Err(StepError::Retry(e.to_string())),
                Err(e) => return Err(StepError::Retry(format!("propagation task: {e}"))),
            }
        }
        self.negative_ttl = Some(negative_ttl);
        self.env.metrics.observe_propagation(started.elapsed());
        self.transition(row, UnitState::Propagated, |_| {}).await?;
        Ok(Flow::Continue)
    }

    // ---- Propagated/Checking -> Valid ------------------------------------------------------

    async fn check(&mut self, row: &UnitRow, spec: &Unit) -> Result<Flow, StepError> {
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
            Ok((true, _)) => {
                let validated_in = Duration::from_millis(u64::try_from(now_millis() - row.created_at).unwrap_or(0));
                self.env.metrics.observe_validation(validated_in);
                self.transition(row, UnitState::Valid, |r| r.attempts += 1).await?;
                Ok(Flow::Continue)
            }
            Ok((false, Some(status))) => Err(StepError::Fatal(format!("order is {status} at DigiCert"))),
            Ok((false, None)) => self.schedule_recheck(row, "dcv status not valid yet".into()).await,
            Err(e) if e.is_not_found_yet() => {
                method_mismatch_hint(spec.method, e.code().unwrap_or(""), row.attempts + 1);
                self.schedule_recheck(row, e.to_string()).await
            }
            Err(e) if e.is_wrong_method() && self.unit.kind == UnitKind::Order && !self.method_changed => {
                // The order was placed with another DCV method: switch it once, then check again.
                self.method_changed = true;
                warn!(code = e.code().unwrap_or(""), method = spec.method.as_str(), "switching the order's DCV method");
                let _permit = self.permit().await;
                self.env.client.change_order_dcv_method(self.unit.id, &dcv_method(spec.method)).await?;
                Ok(Flow::Continue)
            }
            Err(e) if e.is_wrong_method() => Err(StepError::Fatal(e.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    async fn schedule_recheck(&mut self, row: &UnitRow, why: String) -> Result<Flow, StepError> {
        let attempts = row.attempts + 1;
        let check = &self.env.config.check;
        let mut delay = backoff(check.min_interval, check.max_interval, attempts);
        if attempts == 1
            && let Some(nttl) = self.negative_ttl
        {
            delay = delay.max(nttl.min(check.max_interval));
        }
        let at = now_millis() + delay.as_millis() as i64;
        warn!(attempt = attempts, error = %why, retry_in_ms = delay.as_millis() as u64, "digicert has not seen the record yet");
        self.transition(row, UnitState::Checking, move |r| {
            r.attempts = attempts;
            r.next_action_at = Some(at);
            r.last_error = Some(why);
        })
        .await?;
        Ok(Flow::SleepUntil(at))
    }

    // ---- Valid -> CleanedUp ----------------------------------------------------------------

    async fn finish_valid(&mut self, row: &UnitRow) -> Result<Flow, StepError> {
        if !self.env.config.daemon.cleanup {
            return Ok(Flow::Done);
        }
        self.remove_records().await?;
        self.transition(row, UnitState::CleanedUp, |_| {}).await?;
        Ok(Flow::Done)
    }

    // ---- expiry, failure, retirement -------------------------------------------------------

    async fn expire(&mut self, row: &UnitRow) -> Result<Flow, StepError> {
        self.remove_records().await?;
        let daemon = &self.env.config.daemon;
        if daemon.on_expiry == OnExpiry::Renew && row.renewals < daemon.max_renewals {
            warn!(renewal = row.renewals + 1, max = daemon.max_renewals, "token expired, fetching a new one");
            self.transition(row, UnitState::Pending, |r| {
                r.renewals += 1;
                r.token = None;
                r.token_expires_at = None;
                r.attempts = 0;
            })
            .await?;
            return Ok(Flow::Continue);
        }
        // The transition's ERROR line is the one line about it (with the error).
        let msg = format!("token expired before DigiCert validated it ({} renewals)", row.renewals);
        let why = msg.clone();
        self.transition(row, UnitState::Expired, move |r| r.last_error = Some(why)).await?;
        Ok(Flow::Done)
    }

    async fn fail(&mut self, row: &UnitRow, msg: String) -> Flow {
        // One ERROR per failure: the transition to `failed` logs it, with the error and `from`.
        if let Err(e) = self.remove_records().await {
            // The records stay in the store as live; `dcvd cleanup` or the next start removes them.
            let e = match e {
                StepError::Retry(m) | StepError::Fatal(m) | StepError::Account(m) => m,
            };
            error!(error = %e, "cleanup after failure failed; records remain listed in the state store");
        }
        let why = msg.clone();
        let _ = self.transition(row, UnitState::Failed, move |r| r.last_error = Some(why)).await;
        Flow::Done
    }

    async fn retire(&mut self, row: &UnitRow) -> Result<Flow, StepError> {
        self.remove_records().await?;
        info!("unit left the configuration; its records are removed");
        self.transition(row, UnitState::Removed, |_| {}).await?;
        Ok(Flow::Done)
    }

    /// Removes every record of this unit that may be live, intent first.
    async fn remove_records(&mut self) -> Result<(), StepError> {
        let live: Vec<RecordRow> =
            self.records().await?.into_iter().filter(|r| r.status != RecordStatus::Removed).collect();
        remove_rows(&self.env, &live).await
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
            StepError::Retry(format!("provider {provider} is no longer configured; cannot remove {}", group[0].name))
        })?;
        let recs: Vec<Record> = group.iter().map(|r| to_record(r)).collect();
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

/// Removes every live record in the store (used by `dcvd cleanup`); returns how many.
pub(super) async fn remove_all(env: &Env) -> anyhow::Result<usize> {
    let live = env.store.read(|s| s.live_records()).await?;
    let mut by_unit: BTreeMap<UnitId, Vec<RecordRow>> = BTreeMap::new();
    for r in live {
        by_unit.entry(r.unit).or_default().push(r);
    }
    let mut n = 0;
    for (unit, rows) in by_unit {
        remove_rows(env, &rows).instrument(unit_span(unit)).await.map_err(|e| match e {
            StepError::Retry(m) | StepError::Fatal(m) | StepError::Account(m) => anyhow::anyhow!("{unit}: {m}"),
        })?;
        n += rows.len();
    }
    Ok(n)
}

fn group_by_zone<'a>(rows: impl Iterator<Item = &'a RecordRow>) -> BTreeMap<(String, String), Vec<&'a RecordRow>> {
    let mut groups: BTreeMap<(String, String), Vec<&RecordRow>> = BTreeMap::new();
    for r in rows {
        groups.entry((r.provider.clone(), r.zone.clone())).or_default().push(r);
    }
    groups
}

fn to_record(r: &RecordRow) -> Record {
    let mut rec = match r.rtype.as_str() {
        "CNAME" => Record::cname(&r.name, &r.value),
        _ => Record::txt(&r.name, &r.value),
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

fn token_expired(row: &UnitRow) -> bool {
    row.token_expires_at.is_some_and(|exp| exp * 1000 <= now_millis())
}

/// `min * 2^(attempt-1)`, capped at `max`, with up to 10% jitter subtracted so that many units
/// do not check in lockstep.
pub(crate) fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let nominal = retry::RetryPolicy::new(u32::MAX, min, max).nominal(attempt);
    retry::jittered(nominal, 0.1).max(min.min(max))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let min = Duration::from_secs(5);
        let max = Duration::from_secs(600);
        let b1 = backoff(min, max, 1);
        assert!(b1 >= Duration::from_millis(4500) && b1 <= min, "{b1:?}");
        let b3 = backoff(min, max, 3);
        assert!(b3 >= Duration::from_secs(18) && b3 <= Duration::from_secs(20), "{b3:?}");
        let b20 = backoff(min, max, 20);
        assert!(b20 >= Duration::from_secs(540) && b20 <= max, "{b20:?}");
    }
}
