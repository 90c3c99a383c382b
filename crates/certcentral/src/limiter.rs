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
//! **Counted until it has arrived.** DigiCert counts a request when it arrives, which the limiter
//! cannot see: it lies after the admission and before the answer comes back. So a request holds
//! its place in every window from its admission until its [`Permit`] is dropped (the answer is
//! read, or the caller gave up), but at most [`safety_margin`] (`max(T/50, 250 ms)`) past its
//! admission: an answer slower than that is taken to be slow at the server (`check-dcv` looks
//! the records up), not on its way, and a request still on its way after that long is the case
//! the margin does not cover, as before. From that moment on the request counts for the window's
//! length `T` plus [`COMPLETION_MARGIN`]. A new request is admitted only while fewer than N
//! requests count. A fast answer (a few milliseconds on a good link) thus costs its latency plus
//! 20 ms per window instead of the whole margin (which cost 25 % of a 1 s window), and a request
//! slower on its way than its answer cannot crowd a window (a fixed T/50 let 41 of 20,000 calls
//! through too early on a loaded machine). Server clock skew does not matter: only intervals
//! between requests count.
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
//! The ledger cannot see other processes' answers, so it keeps a fixed margin
//! ([`safety_margin`], `max(T/50, 250 ms)`) on the admission instants it records.
//!
//! The limiter runs on tokio's clock (`tokio::time::Instant`), so it works under
//! `tokio::time::pause()`. Clones share one state. Only the caller whose turn it is is woken (by
//! an admission, an answer, a cancellation or its own timer), so thousands of waiting callers
//! cost no work per admission. A caller dropped while waiting takes nothing
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

/// The margin the shared ledger adds to a window's length, on admission instants (see the
/// module documentation).
pub fn safety_margin(per: Duration) -> Duration {
    (per / 50).max(Duration::from_millis(250))
}

/// Added to each window's length once a request has arrived: timer granularity and the server's
/// reading of its clock (the latency itself is covered by counting until the answer).
pub const COMPLETION_MARGIN: Duration = Duration::from_millis(20);

/// One window: its limit and when the latest `requests` ended requests arrived at the latest.
struct WindowLog {
    requests: usize,
    /// The window's length plus [`COMPLETION_MARGIN`].
    span: Duration,
    /// The longest a request is taken to be on its way: [`safety_margin`].
    on_the_way: Duration,
    /// Latest arrival instants of ended requests, ascending; at most `requests` (older ones
    /// cannot decide anything).
    arrived: VecDeque<Instant>,
}

impl WindowLog {
    /// The earliest instant at which this window admits one more request while the requests
    /// admitted at `in_flight` (ascending) await their answer.
    fn next_free(&self, now: Instant, in_flight: &VecDeque<(u64, Instant)>) -> Instant {
        let first_live = self.arrived.partition_point(|at| *at + self.span <= now);
        // When each request still counting stops counting, ascending per source: for one in
        // flight, the latest (its answer may come later; then it stops earlier, and wakes us).
        let ended = self.arrived.range(first_live..).map(|at| *at + self.span);
        let flying = in_flight.iter().map(|(_, admitted)| *admitted + self.on_the_way + self.span).filter(|e| *e > now);
        let live = ended.len() + flying.clone().count();
        if live < self.requests {
            return now;
        }
        // The (live - N + 1)-th of them to stop counting makes room.
        let mut expiries = merge_ascending(ended, flying);
        expiries.nth(live - self.requests).unwrap_or(now).max(now)
    }

    /// A request admitted at `admitted` ended at `ended`: it counts from when it arrived at the
    /// latest.
    fn record_end(&mut self, admitted: Instant, ended: Instant) {
        let at = ended.min(admitted + self.on_the_way);
        // Requests end nearly in order: the place is found by bisection, inserted near the back.
        let index = self.arrived.partition_point(|a| *a <= at);
        self.arrived.insert(index, at);
        if self.arrived.len() > self.requests {
            self.arrived.pop_front();
        }
    }
}

/// Two ascending sequences as one.
fn merge_ascending(
    a: impl Iterator<Item = Instant>,
    b: impl Iterator<Item = Instant>,
) -> impl Iterator<Item = Instant> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x <= y => a.next(),
        (Some(_), Some(_)) | (None, Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        (None, None) => None,
    })
}

struct State {
    windows: Vec<WindowLog>,
    /// Admitted requests whose [`Permit`] is still alive (their answer has not come back): id
    /// and admission instant, in admission order.
    in_flight: VecDeque<(u64, Instant)>,
    next_request: u64,
    /// Waiting tickets per lane, in arrival order, each with its caller's wake-up.
    queues: [VecDeque<(u64, Arc<Notify>)>; 2],
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
    /// The ticket whose turn it is, with its caller's wake-up.
    fn eligible(&self) -> Option<&(u64, Arc<Notify>)> {
        let check = self.queues[Lane::Check.index()].front();
        let token = self.queues[Lane::Token.index()].front();
        match (check, token) {
            (Some(c), Some(t)) => Some(if self.token_credits > 0 { t } else { c }),
            (c, t) => c.or(t),
        }
    }

    /// Wakes the caller whose turn it is (after an admission, a cancellation, an answer): only
    /// that one can act, so the thousands waiting behind it stay asleep. A wake-up that comes
    /// before the caller waits is kept for it (`notify_one`).
    fn wake_eligible(&self) {
        if let Some((_, wake)) = self.eligible() {
            wake.notify_one();
        }
    }

    /// The earliest instant at which every window admits one more request (and the ledger may
    /// be asked).
    fn next_free(&self, now: Instant) -> Instant {
        self.windows
            .iter()
            .map(|w| w.next_free(now, &self.in_flight))
            .chain(self.ledger.not_before)
            .max()
            .unwrap_or(now)
            .max(now)
    }

    /// The admitted request `id`'s answer came back (or its caller gave up) at `at`.
    fn end(&mut self, id: u64, at: Instant) {
        let Ok(index) = self.in_flight.binary_search_by_key(&id, |(id, _)| *id) else { return };
        let (_, admitted) = self.in_flight.remove(index).expect("found");
        for window in &mut self.windows {
            window.record_end(admitted, at);
        }
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

    /// Admits the head of `lane` at `now`; returns the request's id.
    fn admit(&mut self, lane: Lane, now: Instant) -> u64 {
        self.queues[lane.index()].pop_front();
        let id = self.next_request;
        self.next_request += 1;
        self.in_flight.push_back((id, now));
        match lane {
            Lane::Check if !self.queues[Lane::Token.index()].is_empty() => self.token_credits = TOKENS_PER_CHECK,
            Lane::Check => self.token_credits = 0,
            Lane::Token => self.token_credits = self.token_credits.saturating_sub(1),
        }
        id
    }

    fn remove(&mut self, lane: Lane, ticket: u64) -> bool {
        let queue = &mut self.queues[lane.index()];
        match queue.iter().position(|(t, _)| *t == ticket) {
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
        if !self.admitted {
            let mut state = self.shared.lock();
            if state.remove(self.lane, self.ticket) {
                state.wake_eligible();
            }
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
            let mut state = self.shared.lock();
            state.ledger.asking = false;
            state.wake_eligible();
        }
    }
}

/// One admitted request. It counts in every window until it is dropped, and for the window's
/// length after that: drop it when the request's answer has come back (or the request was given
/// up), not before.
#[must_use = "the request counts in the windows until the permit is dropped"]
pub struct Permit {
    /// The limiter and the request's id; `None` for a limiter without windows.
    request: Option<(Arc<Shared>, u64)>,
    waited: Duration,
}

impl Permit {
    /// How long the caller waited for the admission (zero when admitted at once).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("waited", &self.waited).finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((shared, id)) = self.request.take() {
            let mut state = shared.lock();
            state.end(id, Instant::now());
            state.wake_eligible();
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
                requests: spec.requests as usize,
                span: spec.per + COMPLETION_MARGIN,
                on_the_way: safety_margin(spec.per),
                arrived: VecDeque::with_capacity(spec.requests.min(4096) as usize),
            });
        }
        let spans = windows.iter().map(|w| WindowSpan::of(*w)).collect();
        let state = State {
            windows: logs,
            in_flight: VecDeque::new(),
            next_request: 0,
            queues: Default::default(),
            next_ticket: 0,
            token_credits: 0,
            ledger: LedgerState::default(),
        };
        Ok(Self { shared: Arc::new(Shared { state: Mutex::new(state) }), specs: windows.into(), spans, ledger: None })
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

    /// Waits in [`Lane::Token`] until one request may be sent under every window and admits it,
    /// counting it as answered at once: for callers whose request takes no time (or that do not
    /// send one). Returns how long the caller waited (zero when admitted at once). Dropping the
    /// future while it waits takes no admission.
    pub async fn acquire(&self) -> Duration {
        self.acquire_in(Lane::Token).await
    }

    /// [`acquire`](Self::acquire) in `lane`.
    pub async fn acquire_in(&self, lane: Lane) -> Duration {
        self.admit(lane).await.waited()
    }

    /// Waits in `lane` until one request may be sent under every window and admits it; the
    /// request counts in the windows until the returned [`Permit`] is dropped (see the module
    /// documentation). Dropping the future while it waits takes no admission.
    pub async fn admit(&self, lane: Lane) -> Permit {
        if self.specs.is_empty() {
            return Permit { request: None, waited: Duration::ZERO };
        }
        let started = Instant::now();
        let shared = &*self.shared;
        let wake = Arc::new(Notify::new());
        let ticket = {
            let mut state = shared.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.queues[lane.index()].push_back((ticket, wake.clone()));
            ticket
        };
        let mut waiting = Waiting { shared, lane, ticket, admitted: false };
        let mut waited = false;
        loop {
            // A wake-up sent between reading the state and waiting is kept (`notify_one`).
            let step = {
                let mut state = shared.lock();
                if state.eligible().is_some_and(|(t, _)| *t == ticket) {
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
                        let id = state.admit(lane, now);
                        waiting.admitted = true;
                        state.wake_eligible();
                        drop(state);
                        return self.permit(id, waited.then(|| started.elapsed()));
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
                    // Still at the head of its lane: only heads are admitted or ask.
                    let id = admitted.then(|| state.admit(lane, now));
                    if admitted {
                        waiting.admitted = true;
                    }
                    state.wake_eligible();
                    drop(state);
                    if let Some(id) = id {
                        return self.permit(id, waited.then(|| started.elapsed()));
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
                        () = wake.notified() => {}
                    }
                }
                None => wake.notified().await,
            }
        }
    }
}

impl RateLimiter {
    fn permit(&self, id: u64, waited: Option<Duration>) -> Permit {
        Permit { request: Some((self.shared.clone(), id)), waited: waited.unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(requests: usize, per: Duration) -> WindowLog {
        WindowLog { requests, span: per + COMPLETION_MARGIN, on_the_way: safety_margin(per), arrived: VecDeque::new() }
    }

    /// A request counts from its admission until its answer (at most the margin past the
    /// admission), and for the window after that.
    #[test]
    fn a_full_window_frees_a_window_after_its_earliest_arrival() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = log(2, Duration::from_secs(5));
        let mut flying = VecDeque::from([(0, t0)]);
        assert_eq!(log.next_free(t0, &flying), t0, "room for a second");
        flying.push_back((1, t0 + ms(10)));
        // Both in flight: they count at the latest until 250 ms past their admission.
        assert_eq!(log.next_free(t0 + ms(10), &flying), t0 + ms(5270));
        // The first answer comes back after 100 ms: its slot frees 5.02 s after that.
        flying.pop_front();
        log.record_end(t0, t0 + ms(100));
        assert_eq!(log.next_free(t0 + ms(100), &flying), t0 + ms(5120));
        // An answer after 2 s counts from 250 ms past the admission (slow at the server).
        flying.pop_front();
        log.record_end(t0 + ms(10), t0 + ms(2000));
        assert_eq!(log.arrived, [t0 + ms(100), t0 + ms(260)]);
        assert_eq!(log.next_free(t0 + ms(2000), &flying), t0 + ms(5120), "both still count");
        flying.push_back((2, t0 + ms(5120)));
        assert_eq!(log.next_free(t0 + ms(5120), &flying), t0 + ms(5280));
        // Only the latest `requests` are kept.
        log.record_end(t0 + ms(5120), t0 + ms(5121));
        assert_eq!(log.arrived, [t0 + ms(260), t0 + ms(5121)]);
        assert_eq!(safety_margin(Duration::from_secs(300)), Duration::from_secs(6));
    }
}
