//! The workspace's one retry policy: bounded attempts, exponential backoff with jitter, a
//! server's `Retry-After` honoured up to a cap, a retryable predicate supplied by the caller and
//! a hook that sees every retry (for the caller's log line).
//!
//! Used by the CertCentral client, every DNS provider adapter and the engine's check interval,
//! so that "how long until the next try" is computed in one place.
//!
//! # Jitter
//! *Equal jitter*: the delay before retry `n` is drawn uniformly from `[d/2, d]` with
//! `d = min(max_delay, base_delay * 2^(n-1))`. Compared with full jitter (`[0, d]`), a retry
//! never comes sooner than half the nominal backoff, so a struggling server still sees the
//! backoff grow, while clients that failed together are spread apart. [`jittered`] offers other
//! spreads (the engine subtracts at most 10%).
//!
//! # What it must not do
//! It knows no HTTP, no DNS and no error type: deciding what is retryable, reading headers and
//! wording log lines belong to the caller. It never logs by itself and holds no state between
//! calls (no circuit breaker, no rate limiter: those live with the clients that need them).
//!
//! [`poll_until`] is its sibling for waiting on a result (a DNS change applied): doubling
//! intervals up to a deadline.

use std::future::Future;
use std::time::Duration;

/// A `Retry-After` longer than this is cut to it, so a garbage date cannot park a task for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// Bounded attempts with jittered exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (at least 1; 1 = no retries).
    pub max_attempts: u32,
    /// Nominal backoff before the first retry, doubled for each further one.
    pub base_delay: Duration,
    /// Cap of the nominal backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 500 ms doubling up to 30 s.
    fn default() -> Self {
        Self::new(5, Duration::from_millis(500), Duration::from_secs(30))
    }
}

/// What the caller's predicate says about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not retryable: return the error now.
    Stop,
    /// Retryable, after the policy's backoff.
    Retry,
    /// Retryable, after this long (the server's `Retry-After`; cut to [`RETRY_AFTER_CAP`]).
    RetryAfter(Duration),
}

impl Verdict {
    /// [`Verdict::RetryAfter`] when the server said how long, else [`Verdict::Retry`].
    pub fn retry_after(after: Option<Duration>) -> Self {
        after.map_or(Self::Retry, Self::RetryAfter)
    }
}

/// One retry about to happen, as shown to the caller's hook (which logs it).
#[derive(Debug)]
pub struct RetryEvent<'a, E> {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// The policy's bound.
    pub max_attempts: u32,
    /// How long until the next attempt.
    pub delay: Duration,
    /// Why the attempt failed.
    pub error: &'a E,
}

impl<E> RetryEvent<'_, E> {
    /// The delay in whole milliseconds, for log fields.
    pub fn delay_ms(&self) -> u64 {
        u64::try_from(self.delay.as_millis()).unwrap_or(u64::MAX)
    }
}

impl RetryPolicy {
    /// A policy (a `const` so callers can name their defaults).
    pub const fn new(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        Self { max_attempts, base_delay, max_delay }
    }

    /// The nominal (unjittered) backoff after failed attempt `attempt` (1-based):
    /// `min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The jittered delay after failed attempt `attempt` (1-based): uniform in `[d/2, d]`,
    /// `d` = [`RetryPolicy::nominal`].
    pub fn backoff(&self, attempt: u32) -> Duration {
        jittered(self.nominal(attempt), 0.5)
    }

    /// Runs `op` (given the 1-based attempt number) until it succeeds, `is_retryable` says
    /// [`Verdict::Stop`], or `max_attempts` attempts have failed; returns the last error then.
    /// Before each retry `on_retry` sees the failure and the delay, then the task sleeps (on
    /// tokio's clock, so paused-time tests run instantly).
    ///
    /// `op` is a closure returning a future (not an async closure) so that the whole call stays
    /// `Send` inside `async_trait` methods and spawned tasks.
    pub async fn run<T, E, Fut>(
        &self,
        mut op: impl FnMut(u32) -> Fut,
        is_retryable: impl Fn(&E) -> Verdict,
        mut on_retry: impl FnMut(&RetryEvent<'_, E>),
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            let error = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let delay = match is_retryable(&error) {
                Verdict::Stop => return Err(error),
                _ if attempt >= self.max_attempts => return Err(error),
                Verdict::Retry => self.backoff(attempt),
                Verdict::RetryAfter(after) => after.min(RETRY_AFTER_CAP),
            };
            on_retry(&RetryEvent { attempt, max_attempts: self.max_attempts, delay, error: &error });
            drop(error);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Polls `check` until it says done (`Ok(Ok(value))`), sleeping `first` between checks, doubled
/// each time up to `max` (no jitter: this waits for a result, it does not retry a failure).
/// When the next sleep would end after `deadline`, returns `Ok(Err(pending))` with the last
/// pending status; an error of `check` is returned at once (it does its own retries).
pub async fn poll_until<T, P, E, Fut>(
    first: Duration,
    max: Duration,
    deadline: tokio::time::Instant,
    mut check: impl FnMut() -> Fut,
) -> Result<Result<T, P>, E>
where
    Fut: Future<Output = Result<Result<T, P>, E>>,
{
    let mut delay = first;
    loop {
        let pending = match check().await? {
            Ok(done) => return Ok(Ok(done)),
            Err(pending) => pending,
        };
        if tokio::time::Instant::now() + delay > deadline {
            return Ok(Err(pending));
        }
        tokio::time::sleep(delay).await;
        delay = delay.saturating_mul(2).min(max);
    }
}

/// `delay` less a uniformly drawn share of at most `spread` (0.0 to 1.0) of it: 0.5 is equal
/// jitter, 1.0 full jitter, 0.1 "at most 10% sooner".
pub fn jittered(delay: Duration, spread: f64) -> Duration {
    let spread = spread.clamp(0.0, 1.0);
    delay.saturating_sub(delay.mul_f64(spread * rand::random::<f64>()))
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (a past date is zero).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn backoff_is_equal_jitter_doubling_to_the_cap() {
        let policy = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..200 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400), "{third:?}");
            let capped = policy.backoff(40);
            assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_secs(1), "{capped:?}");
        }
        assert_eq!(policy.nominal(0), Duration::from_millis(100));
        assert_eq!(policy.nominal(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_stay_in_range() {
        let d = Duration::from_secs(10);
        for _ in 0..200 {
            let small = jittered(d, 0.1);
            assert!(small >= Duration::from_secs(9) && small <= d, "{small:?}");
            let full = jittered(d, 7.0);
            assert!(full <= d, "{full:?}");
        }
        assert_eq!(jittered(d, 0.0), d);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(120)).to_rfc2822().replace("+0000", "GMT");
        let wait = parse_retry_after(&soon).expect("HTTP date parses");
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_until_success_and_reports_each_retry() {
        let policy = RetryPolicy::new(5, Duration::from_secs(1), Duration::from_secs(8));
        let mut seen = Vec::new();
        let started = tokio::time::Instant::now();
        let result: Result<u32, &str> = policy
            .run(
                |attempt| async move { if attempt < 3 { Err("busy") } else { Ok(attempt) } },
                |_| Verdict::Retry,
                |e| seen.push((e.attempt, e.max_attempts, e.delay, *e.error)),
            )
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].0, seen[0].1, seen[0].3), (1, 5, "busy"));
        assert!(seen[1].2 >= Duration::from_secs(1) && seen[1].2 <= Duration::from_secs(2), "{:?}", seen[1].2);
        // tokio's paused clock sleeps in whole milliseconds
        let slept = seen[0].2 + seen[1].2;
        assert!(started.elapsed().abs_diff(slept) <= Duration::from_millis(2), "{:?} vs {slept:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn run_stops_on_the_predicate_and_at_the_bound() {
        let policy = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_millis(10));
        let calls = Cell::new(0);
        let fatal: Result<(), &str> = policy
            .run(
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err("denied") }
                },
                |_| Verdict::Stop,
                |_| panic!("no retry expected"),
            )
            .await;
        assert_eq!((fatal, calls.get()), (Err("denied"), 1));

        calls.set(0);
        let mut retries = 0;
        let exhausted: Result<(), &str> = policy
            .run(
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err("busy") }
                },
                |_| Verdict::Retry,
                |_| retries += 1,
            )
            .await;
        assert_eq!((exhausted, calls.get(), retries), (Err("busy"), 3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_doubles_until_done_or_deadline() {
        let started = tokio::time::Instant::now();
        let checks = Cell::new(0);
        let done: Result<Result<u32, &str>, ()> =
            poll_until(Duration::from_secs(1), Duration::from_secs(3), started + Duration::from_secs(60), || {
                checks.set(checks.get() + 1);
                let n = checks.get();
                async move { Ok(if n == 4 { Ok(4) } else { Err("pending") }) }
            })
            .await;
        assert_eq!(done, Ok(Ok(4)));
        assert_eq!(started.elapsed(), Duration::from_secs(1 + 2 + 3));

        let late: Result<Result<(), &str>, ()> = poll_until(
            Duration::from_secs(1),
            Duration::from_secs(3),
            tokio::time::Instant::now() + Duration::from_secs(5),
            || async { Ok(Err("still pending")) },
        )
        .await;
        assert_eq!(late, Ok(Err("still pending")));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_wins_over_backoff_and_is_capped() {
        let policy = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(2));
        let mut delays = Vec::new();
        let _: Result<(), Duration> = policy
            .run(
                |attempt| async move {
                    Err(if attempt == 1 { Duration::from_secs(7) } else { Duration::from_secs(86_400) })
                },
                |after| Verdict::RetryAfter(*after),
                |e| delays.push(e.delay),
            )
            .await;
        assert_eq!(delays, vec![Duration::from_secs(7), RETRY_AFTER_CAP]);
    }
}
