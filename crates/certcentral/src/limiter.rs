//! Multi-window client-side rate limiter.
//!
//! DigiCert limits each API key to several windows at once (100 requests per 5 s and 1000 per
//! 3 or 5 minutes). One [`RateLimiter`] holds one GCRA limiter ([`governor`]) per window and
//! admits a request only when every window admits it in the same instant. It runs on tokio's
//! clock, so it waits with `tokio::time::sleep` and works under `tokio::time::pause()`.
//!
//! governor has no "peek": a plain `check()` takes a cell even when another window then refuses,
//! and a cell taken at one time for a request sent later lets requests bunch up. So each window
//! keeps its GCRA state in a [`WindowState`] that can run a check as a dry run: the limiter
//! first asks every window how long to wait without taking anything, sleeps for the longest
//! wait, and takes one cell from every window only when all admit in the same instant.

use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter as Gcra};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::Error;
use crate::client::RateWindow;

/// A point on tokio's clock, as governor wants it (a newtype: the orphan rule forbids
/// implementing governor's traits on `tokio::time::Instant` directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TokioInstant(Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// governor clock reading `tokio::time::Instant::now()` (paused time aware).
#[derive(Debug, Clone, Copy, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

/// GCRA state of one window (its theoretical arrival time) that can also answer a dry run.
struct WindowState {
    tat: std::sync::Mutex<Option<Nanos>>,
    /// Shared by the windows of one limiter; only set while the limiter's turn is held.
    dry_run: Arc<AtomicBool>,
}

impl StateStore for WindowState {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut tat = self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (outcome, next) = f(*tat)?;
        if !self.dry_run.load(Ordering::Acquire) {
            *tat = Some(next);
        }
        Ok(outcome)
    }
}

type WindowLimiter = Gcra<NotKeyed, WindowState, TokioClock, NoOpMiddleware<TokioInstant>>;

struct Window {
    spec: RateWindow,
    gcra: WindowLimiter,
}

/// A rate limiter enforcing several windows at once; clones share the same state.
///
/// Cheap to clone. [`RateLimiter::acquire`] waits (on tokio's clock) until a request may be sent
/// under every window, so no sliding or fixed window of length `per` ever sees more than
/// `requests` admissions.
#[derive(Clone)]
pub struct RateLimiter {
    windows: Arc<[Window]>,
    dry_run: Arc<AtomicBool>,
    /// Serialises admissions: waiters are served in FIFO order (tokio's mutex is fair) and the
    /// one waiting does not let later callers overtake it.
    turn: Arc<Mutex<()>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("windows", &self.windows.iter().map(|w| w.spec).collect::<Vec<_>>())
            .finish()
    }
}

/// GCRA parameters for one window: `(burst, replenish one cell every)`.
///
/// GCRA with burst `b` and rate `r` admits up to `b + r*T` requests in ANY window of length `T`
/// (the burst at the start of the window plus everything replenished during it). A plain
/// "N per T" quota (burst N, rate N/T) therefore lets through nearly 2N in one window, which
/// DigiCert would answer with 429. To never exceed N per T against a sliding or fixed window
/// server we pick a small burst `b = max(1, N/50)` and a replenish rate `(N - b)/T`, so that
/// `b + r*T = N`. The period is rounded up to the nanosecond so rounding never admits one more.
/// With N = 1 no positive rate fits (`b` is already 1): one cell per `T` plus 1 ns.
fn gcra_parameters(window: RateWindow) -> (NonZeroU32, Duration) {
    let n = window.requests;
    let burst = (n / 50).max(1);
    let per_ns = window.per.as_nanos();
    let period_ns = if n > burst { per_ns.div_ceil(u128::from(n - burst)) } else { per_ns + 1 };
    let period = Duration::from_nanos(u64::try_from(period_ns).unwrap_or(u64::MAX));
    (NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN), period)
}

impl RateLimiter {
    /// A limiter enforcing every window of `windows` at once (an empty list admits everything).
    ///
    /// Fails with [`Error::Config`] when a window has zero requests or a zero duration.
    pub fn new(windows: &[RateWindow]) -> Result<Self, Error> {
        let dry_run = Arc::new(AtomicBool::new(false));
        let mut built = Vec::with_capacity(windows.len());
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
            let (burst, period) = gcra_parameters(spec);
            let quota = Quota::with_period(period)
                .ok_or_else(|| Error::Config {
                    message: format!("rate limit window {} per {:?} is too fine", spec.requests, spec.per),
                })?
                .allow_burst(burst);
            built.push(Window {
                spec,
                gcra: Gcra::new(
                    quota,
                    WindowState { tat: std::sync::Mutex::new(None), dry_run: dry_run.clone() },
                    TokioClock,
                ),
            });
        }
        Ok(Self { windows: built.into(), dry_run, turn: Arc::new(Mutex::new(())) })
    }

    /// The windows this limiter enforces.
    pub fn windows(&self) -> Vec<RateWindow> {
        self.windows.iter().map(|w| w.spec).collect()
    }

    /// Waits until one request may be sent under every window and admits it.
    ///
    /// Returns how long the caller waited (queueing and sleeps; zero when admitted at once), for
    /// metrics. Dropping the future while it waits takes no cell.
    pub async fn acquire(&self) -> Duration {
        let started = Instant::now();
        if self.windows.is_empty() {
            return Duration::ZERO;
        }
        let (_turn, mut waited) = match self.turn.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => (self.turn.lock().await, true),
        };
        loop {
            let wait = self.longest_wait();
            if wait.is_zero() {
                // Every window admits now and nothing ran since the probe (no await, the turn
                // is ours): take the cells, all stamped with this same instant.
                let mut all = true;
                for window in self.windows.iter() {
                    all &= window.gcra.check().is_ok();
                }
                if all {
                    break;
                }
                // Unreachable in practice; a cell taken in vain only makes the limiter stricter.
                continue;
            }
            waited = true;
            tokio::time::sleep(wait).await;
        }
        if waited { started.elapsed() } else { Duration::ZERO }
    }

    /// How long until every window admits one request (zero: now), taking no cell.
    fn longest_wait(&self) -> Duration {
        self.dry_run.store(true, Ordering::Release);
        let now = TokioClock.now();
        let wait = self
            .windows
            .iter()
            .filter_map(|w| w.gcra.check().err())
            // A refusal always means a positive wait; the floor guards against a busy loop.
            .map(|not_until| not_until.wait_time_from(now).max(Duration::from_nanos(1)))
            .max()
            .unwrap_or(Duration::ZERO);
        self.dry_run.store(false, Ordering::Release);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GCRA parameters never admit more than N in a window of T.
    #[test]
    fn parameters_bound_every_window() {
        for (n, secs) in [(1u32, 1u64), (2, 1), (49, 5), (50, 5), (100, 5), (1000, 180), (7, 3)] {
            let window = RateWindow::new(n, Duration::from_secs(secs));
            let (burst, period) = gcra_parameters(window);
            let per_ns = window.per.as_nanos();
            let admitted = u128::from(burst.get()) + per_ns / period.as_nanos();
            assert!(admitted <= u128::from(n), "{n} per {secs}s admits {admitted}");
            assert!(admitted + 1 >= u128::from(n), "{n} per {secs}s admits only {admitted}");
        }
        assert_eq!(gcra_parameters(RateWindow::new(100, Duration::from_secs(5))).0.get(), 2);
        assert_eq!(gcra_parameters(RateWindow::new(1000, Duration::from_secs(180))).0.get(), 20);
    }
}
