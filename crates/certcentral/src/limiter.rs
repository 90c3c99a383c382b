//! Multi-window client-side rate limiter with priority lanes.
//!
//! DigiCert limits each API key with rolling windows (100 requests per 5 s and 1000 per 3 or 5
//! minutes): at most N requests in ANY interval of length T, bursts allowed. [`RateLimiter`]
//! enforces exactly that rule with a log of the last N admission instants per window: a request
//! is admitted when, in every window, fewer than N admissions fall within the last T. So a burst
//! of N goes out at once and the window then refills as the oldest admissions age out; nothing is
//! smoothed away (the earlier GCRA limiter spread 200 calls over a minute that DigiCert allowed
//! at once).
//!
//! **Safety margin.** DigiCert counts a request when it arrives, we count it when we send it;
//! latency differs from request to request (a busy host, a slow connection set-up), so two
//! requests sent exactly T apart may arrive less than T apart. Each window is therefore enforced
//! as `T + max(T/50, 250 ms)` (5.25 s for 5 s, 5 min 6 s for 5 minutes). A margin of T/50 alone
//! (20 ms on a 1 s window) let 41 of 20,000 calls through too early in the 10,000-order benchmark
//! on a loaded 2-core machine; 250 ms covers such jitter and costs 5 % of a 5 s window's
//! throughput. Server clock skew does not matter: only intervals between requests count.
//!
//! **Lanes.** A call in [`Lane::Check`] (`check-dcv`, `validate-token`: the unit's records
//! already propagated, so DigiCert's answer ends the unit) goes before calls in [`Lane::Token`]
//! (token requests and every other call). Strict priority would starve token requests under a
//! constant stream of checks, so the lanes share the rate by credits: every check admitted while
//! token calls wait owes [`TOKENS_PER_CHECK`] token admissions, which go first. While both lanes
//! wait, token calls therefore get at least two thirds of the rate and a check waits behind at
//! most two token calls. Within a lane, callers are served in arrival order.
//!
//! **Shared windows.** DigiCert's limits belong to the API key, so several processes using one
//! key (dcvd instances sharing a database) must share the windows too. A limiter built with
//! [`RateLimiter::with_shared_windows`] asks a [`SharedWindows`] ledger before every admission:
//! the ledger records the admission where every process using the key sees it, or answers when to
//! ask again. The local lanes, credits and window logs stay as they are (the local logs only
//! hold this process's admissions, a subset of the ledger's, so they never admit what the ledger
//! would refuse and save a round trip when this process alone fills a window). Only the caller at
//! the head of the lanes asks, and only while no other request of this limiter is in flight (a
//! flag in the state, set under the lock before the request and cleared after its answer or its
//! cancellation), so one process issues at most one ledger request at a time per limiter. The
//! ledger's "ask again in" holds for every lane, so nobody asks before then. A ledger that fails
//! (database unreachable) is asked again after a backoff (100 ms doubling to 5 s); meanwhile
//! nobody is admitted: the limit is never bypassed. One WARN per outage, one INFO when it ends.
//!
//! The limiter runs on tokio's clock (`tokio::time::Instant`), so it works under
//! `tokio::time::pause()`. Clones share one state. A caller dropped while waiting takes nothing
//! (dropped while its ledger request is in flight, it may leave one admission recorded in the
//! ledger unused: the error is on the safe side).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use retry::RetryPolicy;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Error;
use crate::client::RateWindow;

/// Backoff while the shared ledger fails: 100 ms doubling to 5 s, for as long as it takes.
const LEDGER_BACKOFF: RetryPolicy = RetryPolicy::new(u32::MAX, Duration::from_millis(100), Duration::from_secs(5));

/// One window as enforced: at most `requests` admissions within any `span` (the window's length
/// plus the [`safety_margin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSpan {
    /// Admissions allowed within `span`.
    pub requests: u32,
    /// The window's length plus the safety margin.
    pub span: Duration,
}

impl WindowSpan {
    /// `window` with its safety margin.
    pub fn of(window: RateWindow) -> Self {
        Self { requests: window.requests, span: window.per + safety_margin(window.per) }
    }
}

/// A shared ledger's answer to one admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted and recorded: the caller may send its request now.
    Admitted,
    /// Some window is full; ask again after this long (when its oldest blocking admission ages
    /// out).
    RetryIn(Duration),
}

/// Why a shared ledger could not answer (database unreachable, ...); shown in a WARN log line,
/// so it must not contain secrets.
pub type SharedWindowsError = Box<dyn std::error::Error + Send + Sync>;

/// A ledger of admissions shared by every process using one API key (see the module
/// documentation): the rolling windows are enforced over all of them together.
///
/// The limiter calls it for one caller ready to go, at most one call at a time per limiter.
#[async_trait::async_trait]
pub trait SharedWindows: Send + Sync + std::fmt::Debug {
    /// Admits one request when every window of `windows` has room in the shared record
    /// (recording the admission durably before answering), else says when to ask again.
    ///
    /// An error means the ledger could not decide; nothing is admitted and the limiter asks
    /// again after a backoff.
    async fn try_admit(&self, windows: &[WindowSpan]) -> Result<Admission, SharedWindowsError>;
}

/// Token-lane admissions owed for each check admitted while token calls wait.
pub const TOKENS_PER_CHECK: u32 = 2;

/// Which queue a call waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// DCV checks of units whose records every name server serves: served first.
    Check,
    /// Token requests and every other call: guaranteed [`TOKENS_PER_CHECK`] admissions per check.
    Token,
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Self::Check => 0,
            Self::Token => 1,
        }
    }
}

/// The safety margin added to a window's length (see the module documentation).
pub fn safety_margin(per: Duration) -> Duration {
    (per / 50).max(Duration::from_millis(250))
}

/// One window: its limit and the instants of its last `requests` admissions, oldest first.
struct WindowLog {
    window: WindowSpan,
    admitted: VecDeque<Instant>,
}

impl WindowLog {
    /// The earliest instant at which this window admits one more request.
    fn next_free(&self, now: Instant) -> Instant {
        if self.admitted.len() < self.window.requests as usize {
            return now;
        }
        // Full: the oldest of the last N must age out of the span.
        self.admitted.front().map_or(now, |oldest| (*oldest + self.window.span).max(now))
    }

    fn record(&mut self, at: Instant) {
        if self.admitted.len() == self.window.requests as usize {
            self.admitted.pop_front();
        }
        self.admitted.push_back(at);
    }
}

struct State {
    windows: Vec<WindowLog>,
    /// Waiting tickets per lane, in arrival order.
    queues: [VecDeque<u64>; 2],
    next_ticket: u64,
    /// Token-lane admissions still owed to waiting token calls.
    token_credits: u32,
    /// The shared ledger's side (unused without one).
    ledger: LedgerState,
}

#[derive(Default)]
struct LedgerState {
    /// A ledger request of this limiter is in flight: nobody else asks until it is answered.
    asking: bool,
    /// Nobody asks before this instant (the ledger's "retry in", or the backoff after a failure).
    not_before: Option<Instant>,
    /// Consecutive failed requests (backoff; the first one logs the outage).
    failures: u32,
}

impl State {
    /// The ticket whose turn it is.
    fn eligible(&self) -> Option<u64> {
        let check = self.queues[Lane::Check.index()].front().copied();
        let token = self.queues[Lane::Token.index()].front().copied();
        match (check, token) {
            (Some(c), Some(t)) => Some(if self.token_credits > 0 { t } else { c }),
            (c, t) => c.or(t),
        }
    }

    /// The earliest instant at which every window admits one more request (and the ledger may
    /// be asked).
    fn next_free(&self, now: Instant) -> Instant {
        self.windows.iter().map(|w| w.next_free(now)).chain(self.ledger.not_before).max().unwrap_or(now).max(now)
    }

    /// Takes the ledger's answer (the request is no longer in flight); returns whether it
    /// admitted.
    fn ledger_answered(&mut self, answer: Result<Admission, SharedWindowsError>, now: Instant) -> bool {
        self.ledger.asking = false;
        let retry_in = match answer {
            Ok(admission) => {
                if self.ledger.failures > 0 {
                    info!(failed_requests = self.ledger.failures, "rate-limit ledger reachable again");
                    self.ledger.failures = 0;
                }
                match admission {
                    Admission::Admitted => {
                        self.ledger.not_before = None;
                        return true;
                    }
                    Admission::RetryIn(after) => after,
                }
            }
            Err(error) => {
                self.ledger.failures = self.ledger.failures.saturating_add(1);
                if self.ledger.failures == 1 {
                    warn!(
                        error = %error,
                        "rate-limit ledger unreachable: no CertCentral call goes out until it answers; retrying"
                    );
                }
                LEDGER_BACKOFF.backoff(self.ledger.failures)
            }
        };
        // At least 1 ms, so a ledger answering "retry in 0" cannot make this a busy loop.
        self.ledger.not_before = Some(now + retry_in.max(Duration::from_millis(1)));
        false
    }

    fn admit(&mut self, lane: Lane, now: Instant) {
        self.queues[lane.index()].pop_front();
        for window in &mut self.windows {
            window.record(now);
        }
        match lane {
            Lane::Check if !self.queues[Lane::Token.index()].is_empty() => self.token_credits = TOKENS_PER_CHECK,
            Lane::Check => self.token_credits = 0,
            Lane::Token => self.token_credits = self.token_credits.saturating_sub(1),
        }
    }

    fn remove(&mut self, lane: Lane, ticket: u64) -> bool {
        let queue = &mut self.queues[lane.index()];
        match queue.iter().position(|t| *t == ticket) {
            Some(i) => {
                queue.remove(i);
                true
            }
            None => false,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Woken after every admission and cancellation: the next caller may be eligible.
    turn: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes a waiting ticket out of its queue when the caller gives up (its future is dropped).
struct Waiting<'a> {
    shared: &'a Shared,
    lane: Lane,
    ticket: u64,
    admitted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.admitted && self.shared.lock().remove(self.lane, self.ticket) {
            self.shared.turn.notify_waiters();
        }
    }
}

/// Clears the in-flight flag when a caller gives up while its ledger request is in flight.
struct Asking<'a> {
    shared: &'a Shared,
    answered: bool,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.lock().ledger.asking = false;
            self.shared.turn.notify_waiters();
        }
    }
}

/// What the caller at the head does next.
enum Step<'a> {
    /// Wait for a wake-up (an admission, a cancellation, an answer), or until this instant.
    Wait(Option<Instant>),
    /// Ask the shared ledger (the in-flight flag is set).
    AskLedger(&'a dyn SharedWindows),
}

/// A rate limiter enforcing several rolling windows at once, with priority lanes; clones share
/// the same state.
///
/// [`RateLimiter::acquire`] waits (on tokio's clock) until a request may be sent under every
/// window, so no interval of length `per` ever sees more than `requests` admissions.
#[derive(Clone)]
pub struct RateLimiter {
    shared: Arc<Shared>,
    specs: Arc<[RateWindow]>,
    spans: Arc<[WindowSpan]>,
    ledger: Option<Arc<dyn SharedWindows>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("windows", &self.specs).field("shared_windows", &self.ledger).finish()
    }
}

impl RateLimiter {
    /// A limiter enforcing every window of `windows` at once (an empty list admits everything).
    ///
    /// Fails with [`Error::Config`] when a window has zero requests or a zero duration.
    pub fn new(windows: &[RateWindow]) -> Result<Self, Error> {
        let mut logs = Vec::with_capacity(windows.len());
        for &spec in windows {
            if spec.requests == 0 || spec.per.is_zero() {
                return Err(Error::Config {
                    message: format!(
                        "rate limit window {} per {:?} is invalid: requests and duration must be \
                         greater than zero",
                        spec.requests, spec.per
                    ),
                });
            }
            logs.push(WindowLog {
                window: WindowSpan::of(spec),
                admitted: VecDeque::with_capacity(spec.requests.min(4096) as usize),
            });
        }
        let spans = logs.iter().map(|log| log.window).collect();
        let state = State {
            windows: logs,
            queues: Default::default(),
            next_ticket: 0,
            token_credits: 0,
            ledger: LedgerState::default(),
        };
        Ok(Self {
            shared: Arc::new(Shared { state: Mutex::new(state), turn: Notify::new() }),
            specs: windows.into(),
            spans,
            ledger: None,
        })
    }

    /// A limiter enforcing `windows` over every process that shares `ledger` (see the module
    /// documentation), with this process's lanes in front.
    ///
    /// Fails like [`RateLimiter::new`].
    pub fn with_shared_windows(windows: &[RateWindow], ledger: Arc<dyn SharedWindows>) -> Result<Self, Error> {
        Ok(Self { ledger: Some(ledger), ..Self::new(windows)? })
    }

    /// The windows this limiter enforces.
    pub fn windows(&self) -> Vec<RateWindow> {
        self.specs.to_vec()
    }

    /// Waits in [`Lane::Token`] until one request may be sent under every window and admits it.
    ///
    /// Returns how long the caller waited (zero when admitted at once), for metrics. Dropping
    /// the future while it waits takes no admission.
    pub async fn acquire(&self) -> Duration {
        self.acquire_in(Lane::Token).await
    }

    /// [`acquire`](Self::acquire) in `lane`.
    pub async fn acquire_in(&self, lane: Lane) -> Duration {
        if self.specs.is_empty() {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let shared = &*self.shared;
        let ticket = {
            let mut state = shared.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.queues[lane.index()].push_back(ticket);
            ticket
        };
        let mut waiting = Waiting { shared, lane, ticket, admitted: false };
        let mut waited = false;
        loop {
            // Registered before the state is read, so an admission in between still wakes us.
            let turn = shared.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            let step = {
                let mut state = shared.lock();
                if state.eligible() == Some(ticket) {
                    let now = Instant::now();
                    let free = state.next_free(now);
                    if free > now {
                        Step::Wait(Some(free))
                    } else if let Some(ledger) = self.ledger.as_deref() {
                        if state.ledger.asking {
                            // A caller that was at the head before this one (a token call before
                            // this check arrived) is being answered.
                            Step::Wait(None)
                        } else {
                            state.ledger.asking = true;
                            Step::AskLedger(ledger)
                        }
                    } else {
                        state.admit(lane, now);
                        waiting.admitted = true;
                        drop(state);
                        shared.turn.notify_waiters();
                        return if waited { started.elapsed() } else { Duration::ZERO };
                    }
                } else {
                    Step::Wait(None)
                }
            };
            let sleep_until = match step {
                Step::Wait(until) => until,
                Step::AskLedger(ledger) => {
                    let mut asking = Asking { shared, answered: false };
                    let answer = ledger.try_admit(&self.spans).await;
                    let mut state = shared.lock();
                    asking.answered = true;
                    let now = Instant::now();
                    let admitted = state.ledger_answered(answer, now);
                    if admitted {
                        // Still at the head of its lane: only heads are admitted or ask.
                        state.admit(lane, now);
                        waiting.admitted = true;
                    }
                    drop(state);
                    shared.turn.notify_waiters();
                    if admitted {
                        return if waited { started.elapsed() } else { Duration::ZERO };
                    }
                    waited = true;
                    continue;
                }
            };
            waited = true;
            match sleep_until {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut turn => {}
                    }
                }
                None => turn.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_frees_when_its_oldest_admission_ages_out() {
        let now = Instant::now();
        let mut log =
            WindowLog { window: WindowSpan::of(RateWindow::new(2, Duration::from_secs(5))), admitted: VecDeque::new() };
        log.record(now);
        assert_eq!(log.next_free(now), now, "room for a second");
        log.record(now + Duration::from_secs(1));
        assert_eq!(log.next_free(now + Duration::from_secs(1)), now + Duration::from_millis(5250));
        assert_eq!(safety_margin(Duration::from_secs(300)), Duration::from_secs(6));
    }
}
