//! The process-wide cap on DNS queries per second, on tokio's clock (so paused-time tests see
//! it). A GCRA token bucket: `burst` queries may go at once, then one per `1/rate`; waiting
//! callers hold a reserved slot each, so they leave in arrival order.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next query.
    tat: Mutex<Option<Instant>>,
}

impl Pacer {
    /// At most `per_second * t + burst` queries in any window `t`.
    pub(crate) fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        let interval = Duration::from_secs(1) / per_second;
        // A fifth of a second's worth may go at once: one poll of a zone (a few name servers,
        // UDP + TCP) rarely waits, while 10,000 waits still spread out.
        let burst = (per_second / 5).max(1);
        Self { interval, tolerance: interval * (burst - 1), tat: Mutex::new(None) }
    }

    /// How many queries may go at once.
    #[cfg(test)]
    pub(crate) fn burst(&self) -> u64 {
        (self.tolerance.as_nanos() / self.interval.as_nanos()) as u64 + 1
    }

    /// Takes a slot if one is free now; otherwise says when the next one frees, taking nothing
    /// (the shared poller queues its polls instead of holding a sleeping future for each).
    pub(crate) fn try_acquire(&self) -> Result<(), Instant> {
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = tat.map_or(now, |t| t.max(now));
        match t.checked_sub(self.tolerance).filter(|at| *at > now) {
            Some(at) => Err(at),
            None => {
                *tat = Some(t + self.interval);
                Ok(())
            }
        }
    }

    /// Waits for a slot.
    pub(crate) async fn acquire(&self) {
        let now = Instant::now();
        let at = {
            let mut tat = self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let t = tat.map_or(now, |t| t.max(now));
            *tat = Some(t + self.interval);
            t.checked_sub(self.tolerance).map_or(now, |a| a.max(now))
        };
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst goes at once, then queries leave one per interval.
    #[tokio::test(start_paused = true)]
    async fn burst_then_steady() {
        let p = Pacer::new(50); // interval 20 ms, burst 10
        assert_eq!(p.burst(), 10);
        let start = Instant::now();
        for _ in 0..10 {
            p.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        for _ in 0..50 {
            p.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
    }

    /// `try_acquire` takes the burst, then names the instant the next slot frees and takes
    /// nothing until then; it shares the budget with `acquire`.
    #[tokio::test(start_paused = true)]
    async fn try_acquire_takes_free_slots_only() {
        let p = Pacer::new(50); // interval 20 ms, burst 10
        let start = Instant::now();
        for _ in 0..9 {
            assert_eq!(p.try_acquire(), Ok(()));
        }
        p.acquire().await;
        assert_eq!(p.try_acquire(), Err(start + Duration::from_millis(20)));
        assert_eq!(p.try_acquire(), Err(start + Duration::from_millis(20)), "a refusal takes nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(p.try_acquire(), Ok(()));
        assert_eq!(p.try_acquire(), Err(start + Duration::from_millis(40)));
    }
}
