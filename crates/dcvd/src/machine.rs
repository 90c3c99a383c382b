//! The unit state machine as data: one transition table and a pure decision function.
//!
//! [`next_effect`] says which external effect a unit's row calls for (fetch a token, publish,
//! wait for propagation, ask DigiCert, remove records, or sleep); the engine's executor performs
//! it and reports an [`Outcome`]; [`decide`] turns the row and the outcome into a [`Decision`]:
//! the next state, the fields to change, and when to act again. The store refuses any state
//! change that [`TRANSITIONS`] does not list ([`allowed`]), so a bug in the executor cannot move a
//! unit where the flow has no edge.
//!
//! This module must stay pure: no I/O, no clock, no randomness (the caller passes `now` and the
//! jitter), so every rule is tested without a server.

use std::time::Duration;

use crate::store::{UnitKind, UnitRow, UnitState};

use UnitState::{Checking, CleanedUp, Expired, Failed, Pending, Propagated, Published, Removed, TokenIssued, Valid};

/// Every state change the flow allows (`from`, `to`). Staying in the same state (bookkeeping:
/// attempts, backoff, last error) is always allowed and not listed.
pub const TRANSITIONS: &[(UnitState, UnitState)] = &[
    // Forward through the flow.
    (Pending, TokenIssued),
    (TokenIssued, Published),
    (Published, Propagated),
    (Propagated, Checking),
    (Propagated, Valid),
    (Checking, Valid),
    (Valid, CleanedUp),
    // The order was already issued at DigiCert: nothing to validate.
    (Pending, Valid),
    // Published with nothing live (intents cleaned): publish again.
    (Published, TokenIssued),
    // Token expired: renew (start over) or give up.
    (TokenIssued, Pending),
    (Published, Pending),
    (Propagated, Pending),
    (Checking, Pending),
    (TokenIssued, Expired),
    (Published, Expired),
    (Propagated, Expired),
    (Checking, Expired),
    // A permanent error, from any live state.
    (Pending, Failed),
    (TokenIssued, Failed),
    (Published, Failed),
    (Propagated, Failed),
    (Checking, Failed),
    (Valid, Failed),
    // The unit left the configuration (or the account's pending list).
    (Pending, Removed),
    (TokenIssued, Removed),
    (Published, Removed),
    (Propagated, Removed),
    (Checking, Removed),
    (Valid, Removed),
    // Started over: after an operator's restart or SIGHUP (failed, expired), back in the
    // configuration (removed), or due for revalidation (cleaned up).
    (Failed, Pending),
    (Expired, Pending),
    (Removed, Pending),
    (CleanedUp, Pending),
];

/// Whether the flow has an edge from `from` to `to` (same state: always).
pub fn allowed(from: UnitState, to: UnitState) -> bool {
    from == to || TRANSITIONS.contains(&(from, to))
}

/// What the engine's settings say about retries and endings, for [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `[check] min_interval`: the first wait after DigiCert has not seen the records.
    pub check_min: Duration,
    /// `[check] max_interval`: the longest wait between checks and between retries.
    pub check_max: Duration,
    /// `[daemon] on_expiry = "renew"`.
    pub renew_on_expiry: bool,
    /// `[daemon] max_renewals`.
    pub max_renewals: u32,
    /// `[daemon] cleanup`: remove records once valid.
    pub cleanup: bool,
}

/// The external effect a row calls for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more for this unit in this run.
    Stop,
    /// Nothing until this unix-millis time.
    SleepUntil(i64),
    /// Ask DigiCert for a token (and the order's names when the config omits them).
    FetchToken,
    /// Write intents and publish the unit's records.
    Publish,
    /// Wait until every authoritative name server serves every record.
    AwaitPropagation,
    /// Ask DigiCert to check (check-dcv / validate-token).
    Check,
    /// Remove every live record of the unit, then end or restart it for `reason`.
    RemoveRecords(Removal),
}

/// Why records are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Validated: the records did their job.
    Validated,
    /// The token expired before DigiCert validated it.
    TokenExpired,
    /// The unit left the configuration.
    Retired,
}

/// Which effect `row` calls for at `now` (unix millis).
pub fn next_effect(row: &UnitRow, policy: &Policy, now: i64) -> Effect {
    if row.state.is_terminal() {
        return Effect::Stop;
    }
    if let Some(at) = row.next_action_at.filter(|at| *at > now) {
        return Effect::SleepUntil(at);
    }
    if !row.in_config {
        return Effect::RemoveRecords(Removal::Retired);
    }
    let token_expired = row.token_expires_at.is_some_and(|exp| exp.saturating_mul(1000) <= now);
    match row.state {
        TokenIssued | Published | Propagated | Checking if token_expired => {
            Effect::RemoveRecords(Removal::TokenExpired)
        }
        Pending => Effect::FetchToken,
        TokenIssued => Effect::Publish,
        Published => Effect::AwaitPropagation,
        Propagated | Checking => Effect::Check,
        Valid if policy.cleanup => Effect::RemoveRecords(Removal::Validated),
        Valid | CleanedUp | Expired | Failed | Removed => Effect::Stop,
    }
}

/// A token as DigiCert issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The names the unit validates (from the config or, for an order, from DigiCert).
    pub domains: Vec<String>,
    /// The random value / token.
    pub token: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// CNAME target suffix (OV/EV `dns-cname-token`).
    pub verification_value: Option<String>,
}

/// What came of an effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// [`Effect::FetchToken`]: a token.
    TokenIssued(IssuedToken),
    /// [`Effect::FetchToken`]: the order is already issued at DigiCert.
    AlreadyIssued,
    /// [`Effect::Publish`]: every record is published.
    Published,
    /// [`Effect::AwaitPropagation`]: no record is live (the intents were cleaned): publish again.
    NothingLive,
    /// [`Effect::AwaitPropagation`]: served everywhere; the zones' largest negative TTL.
    Propagated {
        /// The SOA minimum: how long DigiCert's resolvers may cache "not found".
        negative_ttl: Duration,
    },
    /// [`Effect::Check`]: DigiCert says valid.
    Valid,
    /// [`Effect::Check`]: DigiCert has not seen the records yet.
    NotSeenYet {
        /// DigiCert's answer, for `last_error`.
        why: String,
    },
    /// [`Effect::Check`]: the order's method differed; dcvd switched it to the configured one.
    MethodSwitched,
    /// [`Effect::RemoveRecords`]: done.
    Removed(Removal),
    /// The effect failed in a way worth retrying later.
    Transient {
        /// What went wrong.
        why: String,
    },
    /// CertCentral refused the API key while the account gate is active: wait at the gate.
    AccountRefused {
        /// CertCentral's answer.
        why: String,
    },
    /// The effect failed permanently; the executor removed the unit's records (as far as it could).
    Failed {
        /// What went wrong.
        why: String,
    },
}

/// When to act on the unit again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Take the next effect at once.
    Now,
    /// Not before this unix-millis time.
    At(i64),
    /// Nothing more in this run.
    Stop,
}

/// The fields a decision changes, applied by the store in the transition's transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// A new token (and the names it is for).
    pub token: Option<IssuedToken>,
    /// Forget the token (renewal, restart).
    pub clear_token: bool,
    /// New value of `attempts`.
    pub attempts: Option<u32>,
    /// New value of `renewals`.
    pub renewals: Option<u32>,
    /// New value of `transient_failures`.
    pub transient_failures: Option<u32>,
    /// The zones' negative TTL learnt during propagation.
    pub negative_ttl: Option<Duration>,
    /// The order's DCV method was switched to the configured one.
    pub method_switched: bool,
    /// New `last_error` (`None`: cleared).
    pub last_error: Option<String>,
    /// New `next_action_at` (`None`: act when woken).
    pub next_action_at: Option<i64>,
}

impl Changes {
    /// Applies the changes to `row` (the store calls this inside the transition).
    pub fn apply(self, row: &mut UnitRow) {
        if let Some(t) = self.token {
            row.domains = t.domains;
            row.token = Some(t.token);
            row.token_expires_at = t.expires_at;
            row.verification_value = t.verification_value;
        }
        if self.clear_token {
            row.token = None;
            row.token_expires_at = None;
        }
        if let Some(n) = self.attempts {
            row.attempts = n;
        }
        if let Some(n) = self.renewals {
            row.renewals = n;
        }
        if let Some(n) = self.transient_failures {
            row.transient_failures = n;
        }
        if let Some(ttl) = self.negative_ttl {
            row.negative_ttl_ms = Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        }
        if self.method_switched {
            row.method_switched = true;
        }
        row.last_error = self.last_error;
        row.next_action_at = self.next_action_at;
    }
}

/// What the executor does with an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The next state (possibly the same).
    pub to: UnitState,
    /// Field changes, committed with the state.
    pub changes: Changes,
    /// When to act again.
    pub wake: Wake,
    /// What the operator should read about it, when anything beyond the state change.
    pub note: Option<Note>,
}

/// A log line the decision asks for (the executor logs it in the unit's span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A step failed and will be retried (WARN).
    WillRetry {
        /// Consecutive failures.
        attempt: u32,
        /// Wait before the retry.
        retry_in: Duration,
    },
    /// DigiCert has not seen the records; checking again later (WARN).
    Recheck {
        /// Checks so far.
        attempt: u32,
        /// Wait before the next check.
        retry_in: Duration,
    },
    /// The token expired and a new one is fetched (WARN).
    Renewing {
        /// Which renewal this is.
        renewal: u32,
    },
}

/// `min * 2^(attempt-1)` capped at `max`, then shortened by `jitter` (a fraction in `[0, 0.1]`
/// the caller draws) so that many units do not act in lockstep; never below `min`.
pub fn backoff(min: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let nominal = retry::RetryPolicy::new(u32::MAX, min, max).nominal(attempt);
    nominal.mul_f64(1.0 - jitter.clamp(0.0, 0.1)).max(min.min(max))
}

/// The next state, field changes and wake-up for `row` after `outcome`, at `now` (unix millis),
/// with `jitter` in `[0, 0.1]` for backoffs.
pub fn decide(row: &UnitRow, outcome: Outcome, policy: &Policy, now: i64, jitter: f64) -> Decision {
    let reset = Changes { transient_failures: Some(0), ..Changes::default() };
    let go = |to: UnitState, changes: Changes| Decision { to, changes, wake: Wake::Now, note: None };
    let decision = match outcome {
        Outcome::TokenIssued(token) => go(TokenIssued, Changes { token: Some(token), attempts: Some(0), ..reset }),
        Outcome::AlreadyIssued | Outcome::Valid => {
            let attempts = if matches!(row.state, Propagated | Checking) { row.attempts + 1 } else { row.attempts };
            let wake = if policy.cleanup { Wake::Now } else { Wake::Stop };
            Decision { to: Valid, changes: Changes { attempts: Some(attempts), ..reset }, wake, note: None }
        }
        Outcome::Published => go(Published, reset),
        Outcome::NothingLive => go(TokenIssued, reset),
        Outcome::Propagated { negative_ttl } => go(Propagated, Changes { negative_ttl: Some(negative_ttl), ..reset }),
        Outcome::NotSeenYet { why } => {
            let attempts = row.attempts + 1;
            let mut delay = backoff(policy.check_min, policy.check_max, attempts, jitter);
            // DigiCert's resolvers cache the absence for the zone's negative TTL: an earlier
            // second check is wasted.
            if attempts == 1
                && let Some(ms) = row.negative_ttl_ms
            {
                delay = delay.max(Duration::from_millis(ms).min(policy.check_max));
            }
            let at = now.saturating_add(millis(delay));
            Decision {
                to: Checking,
                changes: Changes { attempts: Some(attempts), last_error: Some(why), next_action_at: Some(at), ..reset },
                wake: Wake::At(at),
                note: Some(Note::Recheck { attempt: attempts, retry_in: delay }),
            }
        }
        Outcome::MethodSwitched => {
            Decision { to: row.state, changes: Changes { method_switched: true, ..reset }, wake: Wake::Now, note: None }
        }
        Outcome::Removed(Removal::Validated) => {
            Decision { to: CleanedUp, changes: reset, wake: Wake::Stop, note: None }
        }
        Outcome::Removed(Removal::Retired) => Decision { to: Removed, changes: reset, wake: Wake::Stop, note: None },
        Outcome::Removed(Removal::TokenExpired) => {
            if policy.renew_on_expiry && row.renewals < policy.max_renewals {
                let renewal = row.renewals + 1;
                Decision {
                    to: Pending,
                    changes: Changes { clear_token: true, renewals: Some(renewal), attempts: Some(0), ..reset },
                    wake: Wake::Now,
                    note: Some(Note::Renewing { renewal }),
                }
            } else {
                let why = format!("token expired before DigiCert validated it ({} renewals)", row.renewals);
                Decision {
                    to: Expired,
                    changes: Changes { last_error: Some(why), ..reset },
                    wake: Wake::Stop,
                    note: None,
                }
            }
        }
        Outcome::Transient { why } => {
            let attempt = row.transient_failures + 1;
            let delay = backoff(policy.check_min.min(Duration::from_secs(2)), policy.check_max, attempt, jitter);
            let at = now.saturating_add(millis(delay));
            Decision {
                to: row.state,
                changes: Changes {
                    transient_failures: Some(attempt),
                    last_error: Some(why),
                    next_action_at: Some(at),
                    ..Changes::default()
                },
                wake: Wake::At(at),
                note: Some(Note::WillRetry { attempt, retry_in: delay }),
            }
        }
        Outcome::AccountRefused { why } => Decision {
            to: row.state,
            changes: Changes {
                last_error: Some(why),
                transient_failures: Some(row.transient_failures),
                ..Changes::default()
            },
            // The account gate holds the next step until CertCentral accepts the key.
            wake: Wake::Now,
            note: None,
        },
        Outcome::Failed { why } => {
            Decision { to: Failed, changes: Changes { last_error: Some(why), ..reset }, wake: Wake::Stop, note: None }
        }
    };
    decision.keep_attempts_unless_set(row)
}

impl Decision {
    /// Fields a decision does not mention keep their stored value.
    fn keep_attempts_unless_set(mut self, row: &UnitRow) -> Self {
        if self.changes.attempts.is_none() {
            self.changes.attempts = Some(row.attempts);
        }
        self
    }
}

/// Whether a row in `kind`'s flow calls DigiCert at its next effect (the account gate holds
/// those while CertCentral refuses the key).
pub fn calls_digicert(effect: Effect) -> bool {
    matches!(effect, Effect::FetchToken | Effect::Check)
}

/// Whether DigiCert's answer to a check may be answered by switching the order's method.
pub fn may_switch_method(row: &UnitRow) -> bool {
    row.unit.kind == UnitKind::Order && !row.method_switched
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UnitId;

    fn policy() -> Policy {
        Policy {
            check_min: Duration::from_secs(5),
            check_max: Duration::from_secs(600),
            renew_on_expiry: true,
            max_renewals: 2,
            cleanup: true,
        }
    }

    fn row(state: UnitState) -> UnitRow {
        let mut row = UnitRow::new_pending(UnitId::order(1), "dns-txt-token", &["example.com".into()], None, 0);
        row.state = state;
        row.token = Some("t".into());
        row
    }

    #[test]
    fn every_decision_follows_an_edge_of_the_table() {
        let outcomes = [
            Outcome::TokenIssued(IssuedToken {
                domains: vec![],
                token: "t".into(),
                expires_at: None,
                verification_value: None,
            }),
            Outcome::AlreadyIssued,
            Outcome::Published,
            Outcome::NothingLive,
            Outcome::Propagated { negative_ttl: Duration::ZERO },
            Outcome::Valid,
            Outcome::NotSeenYet { why: "x".into() },
            Outcome::MethodSwitched,
            Outcome::Removed(Removal::Validated),
            Outcome::Removed(Removal::TokenExpired),
            Outcome::Removed(Removal::Retired),
            Outcome::Transient { why: "x".into() },
            Outcome::AccountRefused { why: "x".into() },
            Outcome::Failed { why: "x".into() },
        ];
        // The outcome each effect can produce, per state that calls for the effect.
        for state in UnitState::ALL.into_iter().filter(|s| !s.is_terminal()) {
            for outcome in &outcomes {
                let plausible = matches!(
                    (state, outcome),
                    (Pending, Outcome::TokenIssued(_) | Outcome::AlreadyIssued)
                        | (TokenIssued, Outcome::Published)
                        | (Published, Outcome::NothingLive | Outcome::Propagated { .. })
                        | (
                            Propagated | Checking,
                            Outcome::Valid | Outcome::NotSeenYet { .. } | Outcome::MethodSwitched
                        )
                        | (TokenIssued | Published | Propagated | Checking, Outcome::Removed(Removal::TokenExpired))
                        | (Valid, Outcome::Removed(Removal::Validated))
                        | (_, Outcome::Removed(Removal::Retired))
                        | (_, Outcome::Transient { .. } | Outcome::AccountRefused { .. } | Outcome::Failed { .. })
                );
                if plausible {
                    let d = decide(&row(state), outcome.clone(), &policy(), 0, 0.0);
                    assert!(allowed(state, d.to), "{state} after {outcome:?} -> {} has no edge", d.to);
                }
            }
        }
    }

    #[test]
    fn the_table_has_no_edge_out_of_a_terminal_state_except_starting_over() {
        for (from, to) in TRANSITIONS {
            if from.is_terminal() {
                assert_eq!(*to, Pending, "{from} -> {to}");
            }
        }
        assert!(!allowed(Pending, Checking));
        assert!(!allowed(CleanedUp, Valid));
        assert!(allowed(Checking, Checking));
    }

    #[test]
    fn effects_follow_the_row() {
        let p = policy();
        assert_eq!(next_effect(&row(Pending), &p, 0), Effect::FetchToken);
        assert_eq!(next_effect(&row(TokenIssued), &p, 0), Effect::Publish);
        assert_eq!(next_effect(&row(Published), &p, 0), Effect::AwaitPropagation);
        assert_eq!(next_effect(&row(Checking), &p, 0), Effect::Check);
        assert_eq!(next_effect(&row(Valid), &p, 0), Effect::RemoveRecords(Removal::Validated));
        assert_eq!(next_effect(&row(Valid), &Policy { cleanup: false, ..p }, 0), Effect::Stop);
        assert_eq!(next_effect(&row(Failed), &p, 0), Effect::Stop);
        let mut sleeping = row(Checking);
        sleeping.next_action_at = Some(5_000);
        assert_eq!(next_effect(&sleeping, &p, 1_000), Effect::SleepUntil(5_000));
        assert_eq!(next_effect(&sleeping, &p, 5_000), Effect::Check);
        let mut expired = row(Checking);
        expired.token_expires_at = Some(10);
        assert_eq!(next_effect(&expired, &p, 10_000), Effect::RemoveRecords(Removal::TokenExpired));
        assert_eq!(next_effect(&expired, &p, 9_999), Effect::Check);
        let mut gone = row(Checking);
        gone.in_config = false;
        assert_eq!(next_effect(&gone, &p, 0), Effect::RemoveRecords(Removal::Retired));
    }

    #[test]
    fn first_recheck_waits_for_the_persisted_negative_ttl() {
        let mut r = row(Propagated);
        r.negative_ttl_ms = Some(120_000);
        let d = decide(&r, Outcome::NotSeenYet { why: "invalid_dns_txt".into() }, &policy(), 1_000, 0.0);
        assert_eq!(d.to, Checking);
        assert_eq!(d.wake, Wake::At(121_000));
        assert_eq!(d.changes.attempts, Some(1));
        // The second waits by the backoff alone (10 s), not the negative TTL again.
        r.attempts = 1;
        let d = decide(&r, Outcome::NotSeenYet { why: "x".into() }, &policy(), 1_000, 0.0);
        assert_eq!(d.wake, Wake::At(11_000));
    }

    #[test]
    fn transient_failures_count_and_back_off_and_success_resets_them() {
        let mut r = row(Published);
        r.transient_failures = 2;
        let d = decide(&r, Outcome::Transient { why: "timeout".into() }, &policy(), 0, 0.0);
        assert_eq!((d.to, d.changes.transient_failures), (Published, Some(3)));
        // min(check_min, 2 s) * 2^2
        assert_eq!(d.wake, Wake::At(8_000));
        let d = decide(&r, Outcome::Propagated { negative_ttl: Duration::from_secs(60) }, &policy(), 0, 0.0);
        assert_eq!(d.changes.transient_failures, Some(0));
        assert_eq!(d.changes.negative_ttl, Some(Duration::from_secs(60)));
    }

    #[test]
    fn expiry_renews_until_the_limit_then_ends_expired() {
        let mut r = row(Checking);
        let d = decide(&r, Outcome::Removed(Removal::TokenExpired), &policy(), 0, 0.0);
        assert_eq!((d.to, d.changes.renewals, d.changes.clear_token), (Pending, Some(1), true));
        r.renewals = 2;
        let d = decide(&r, Outcome::Removed(Removal::TokenExpired), &policy(), 0, 0.0);
        assert_eq!((d.to, d.wake), (Expired, Wake::Stop));
        assert!(d.changes.last_error.unwrap().contains("2 renewals"));
    }

    #[test]
    fn valid_stops_without_cleanup_and_counts_the_check() {
        let p = Policy { cleanup: false, ..policy() };
        let mut r = row(Checking);
        r.attempts = 3;
        let d = decide(&r, Outcome::Valid, &p, 0, 0.0);
        assert_eq!((d.to, d.wake, d.changes.attempts), (Valid, Wake::Stop, Some(4)));
        let d = decide(&row(Pending), Outcome::AlreadyIssued, &policy(), 0, 0.0);
        assert_eq!((d.to, d.wake, d.changes.attempts), (Valid, Wake::Now, Some(0)));
    }

    #[test]
    fn method_switch_is_remembered() {
        let r = row(Checking);
        assert!(may_switch_method(&r));
        let mut after = r.clone();
        decide(&r, Outcome::MethodSwitched, &policy(), 0, 0.0).changes.apply(&mut after);
        assert!(after.method_switched);
        assert!(!may_switch_method(&after));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_down_only() {
        let (min, max) = (Duration::from_secs(5), Duration::from_secs(600));
        assert_eq!(backoff(min, max, 1, 0.0), min);
        assert_eq!(backoff(min, max, 3, 0.0), Duration::from_secs(20));
        assert_eq!(backoff(min, max, 3, 0.1), Duration::from_secs(18));
        assert_eq!(backoff(min, max, 20, 0.0), max);
        assert_eq!(backoff(min, max, 1, 0.1), min, "never below min");
    }
}
