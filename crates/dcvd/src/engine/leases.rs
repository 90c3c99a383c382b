//! This instance's right to act for the units it holds, as the process sees it on its own clock.
//!
//! The store grants leases (owner, epoch, expiry on the database's clock) and refuses a write
//! whose epoch is stale; that fences the state. External calls (DigiCert, DNS providers) cannot be
//! fenced by the database, so the process stops making them on its own once its leases may have
//! lapsed: a lease counts as held for two thirds of `lease_ttl` after the start of the last
//! successful renewal, measured on the monotonic clock (which keeps running while the process is
//! stopped by SIGSTOP, a long GC-like stall or a VM pause). Another instance takes a unit over
//! only after the full `lease_ttl` on the database's clock, so the last third is the margin for a
//! call already on its way and for clock-rate differences. Renewals run every third of the TTL,
//! so a healthy instance never reaches the limit.
//!
//! It must not talk to the store: the engine's loop renews and reports here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The local view of this instance's leases.
#[derive(Debug)]
pub struct Leases {
    ttl: Duration,
    /// Until when calls may go out; `None` before the first renewal (no unit is held yet, so
    /// only account-level calls, such as discovery's list calls, can be made).
    valid_until: Mutex<Option<Instant>>,
}

impl Leases {
    /// Leases of `ttl`, not yet held.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, valid_until: Mutex::new(None) }
    }

    /// Leases that never lapse: for commands that run alone against the store (`dcvd cleanup`).
    pub fn unbounded() -> Self {
        let leases = Self::new(Duration::from_secs(u32::MAX.into()));
        leases.renewed(Instant::now());
        leases
    }

    /// The lease length.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often the engine renews.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// A renewal (or claim) that started at `started` succeeded.
    pub fn renewed(&self, started: Instant) {
        let until = started + self.ttl * 2 / 3;
        *self.valid_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    /// Whether calls for held units may go out now; `Err` says why not.
    pub fn check(&self) -> Result<(), String> {
        let until = *self.valid_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match until {
            Some(until) if Instant::now() < until => Ok(()),
            Some(_) => Err(format!(
                "this instance's leases may have lapsed (not renewed within {}); waiting for the state store",
                humantime::format_duration(self.ttl * 2 / 3)
            )),
            None => Ok(()),
        }
    }

    /// [`check`](Self::check) as a boolean.
    pub fn valid(&self) -> bool {
        self.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_for_two_thirds_of_its_ttl_after_a_renewal_started() {
        let leases = Leases::new(Duration::from_millis(300));
        assert!(leases.valid(), "before the first renewal nothing is held, so nothing can lapse");
        leases.renewed(Instant::now());
        assert!(leases.valid());
        std::thread::sleep(Duration::from_millis(250));
        let why = leases.check().unwrap_err();
        assert!(why.contains("may have lapsed"), "{why}");
        // A renewal that started long ago (it took the whole TTL) gives nothing.
        leases.renewed(Instant::now() - Duration::from_millis(300));
        assert!(!leases.valid());
        leases.renewed(Instant::now());
        assert!(leases.valid());
        assert_eq!(leases.renew_every(), Duration::from_millis(100));
    }
}
