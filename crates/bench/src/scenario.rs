//! Scenarios: how many orders, how records propagate, which rate windows apply; and the
//! rate-limit floor that wall time is compared with.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One sliding rate window, applied by the simulator and by the client alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Requests allowed in any window of length `per_ms`.
    pub requests: u32,
    /// Window length in milliseconds.
    pub per_ms: u64,
}

impl Window {
    /// `requests` per `per`.
    pub fn new(requests: u32, per: Duration) -> Self {
        Self { requests, per_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX) }
    }

    /// The window length.
    pub fn per(&self) -> Duration {
        Duration::from_millis(self.per_ms)
    }

    /// Parses `REQUESTS/DURATION` (`100/5s`).
    pub fn parse(s: &str) -> Result<Self, String> {
        certcentral_sim::parse_rate_limit(s).map(|(n, per)| Self::new(n, per))
    }

    /// Parses a comma-separated list (`100/5s,1000/5m`).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        s.split(',').filter(|p| !p.trim().is_empty()).map(|p| Self::parse(p.trim())).collect()
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.requests, humantime::format_duration(self.per()))
    }
}

/// DigiCert's documented limits per API key: 100 requests per 5 seconds and 1000 per 5 minutes.
pub fn digicert_windows() -> Vec<Window> {
    vec![Window::new(100, Duration::from_secs(5)), Window::new(1000, Duration::from_secs(300))]
}

/// What one scenario runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// DV orders, one name each.
    pub orders: usize,
    /// Rate windows of the simulator and of every client.
    pub windows: Vec<Window>,
    /// Per-record propagation lag, drawn uniformly from `lag_min_ms..=lag_max_ms`.
    pub lag_min_ms: u64,
    /// See `lag_min_ms`.
    pub lag_max_ms: u64,
    /// Extra lag of the second (last) name server.
    pub server_lag_ms: u64,
    /// SOA minimum of the zone: the negative TTL the simulator caches "not found" for.
    pub negative_ttl_s: u32,
    /// Seed of the lag draws and of the simulator.
    pub seed: u64,
}

impl Scenario {
    /// The preset for `orders`: DigiCert's real limits up to 100 orders; above, limits scaled
    /// up so the run takes minutes while the rate-limit floor (120 s for 1,000 orders, 240 s
    /// for 10,000) stays well above the 33 s of maximum propagation lag, so that the ratio of
    /// wall time to the floor measures the scheduler, not the lag.
    pub fn preset(orders: usize) -> Self {
        let windows = if orders <= 100 {
            digicert_windows()
        } else if orders <= 1000 {
            vec![Window::new(20, Duration::from_secs(1)), Window::new(1000, Duration::from_secs(60))]
        } else {
            vec![Window::new(100, Duration::from_secs(1)), Window::new(5000, Duration::from_secs(60))]
        };
        Self { orders, windows, lag_min_ms: 0, lag_max_ms: 30_000, server_lag_ms: 3_000, negative_ttl_s: 30, seed: 1 }
    }

    /// The `--quick` scenario: a few orders, lag 0-1 s, a short negative TTL.
    pub fn quick() -> Self {
        Self {
            orders: 5,
            windows: digicert_windows(),
            lag_min_ms: 0,
            lag_max_ms: 1_000,
            server_lag_ms: 300,
            negative_ttl_s: 2,
            seed: 1,
        }
    }

    /// The minimum CertCentral calls: a DV order needs its random value and one successful
    /// check.
    pub fn min_calls(&self) -> u64 {
        2 * self.orders as u64
    }

    /// One line describing the scenario.
    pub fn describe(&self) -> String {
        let windows: Vec<String> = self.windows.iter().map(ToString::to_string).collect();
        format!(
            "{} orders; record lag {:.0}-{:.0} s uniform, +{:.1} s on the last of 2 name servers; negative TTL {} s; rate limits {} (simulator and clients)",
            self.orders,
            self.lag_min_ms as f64 / 1000.0,
            self.lag_max_ms as f64 / 1000.0,
            self.server_lag_ms as f64 / 1000.0,
            self.negative_ttl_s,
            windows.join(", "),
        )
    }
}

/// The time `calls` requests need at the sustained rate the windows allow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    /// Requests counted.
    pub calls: u64,
    /// `calls / rate` of the binding window, in seconds.
    pub seconds: f64,
    /// The binding window: the one with the lowest sustained rate `requests / per`.
    pub window: Window,
}

/// `calls` divided by the lowest sustained rate among `windows`. Bursts are ignored: a sliding
/// window lets its first `requests` calls go at once, so a short run can beat this floor, but
/// over many windows no client can do better than the binding window's rate.
pub fn rate_floor(calls: u64, windows: &[Window]) -> Option<Floor> {
    windows
        .iter()
        .map(|w| Floor {
            calls,
            seconds: calls as f64 * w.per_ms as f64 / 1000.0 / f64::from(w.requests.max(1)),
            window: *w,
        })
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
}

/// A benchmarked strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// dcvd's engine: propagation check on every authoritative server, then one check.
    Dcvd,
    /// Fetch token, publish, call check-dcv every `interval_s` seconds until valid, remove.
    Poll {
        /// Seconds between checks.
        interval_s: u64,
    },
}

impl Strategy {
    /// The defaults: dcvd, then polling every 2 s and every 10 s.
    pub fn defaults() -> Vec<Self> {
        vec![Self::Dcvd, Self::Poll { interval_s: 2 }, Self::Poll { interval_s: 10 }]
    }

    /// Parses `dcvd` or `poll-Ns`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "dcvd" {
            return Ok(Self::Dcvd);
        }
        s.strip_prefix("poll-")
            .and_then(|r| r.strip_suffix('s'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map(|interval_s| Self::Poll { interval_s })
            .ok_or_else(|| format!("strategy {s:?}: expected `dcvd` or `poll-Ns` (e.g. poll-2s)"))
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dcvd => f.write_str("dcvd"),
            Self::Poll { interval_s } => write!(f, "poll-{interval_s}s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_uses_the_binding_window() {
        let w = digicert_windows();
        // 1000 per 5 minutes (3.33/s) binds, not 100 per 5 s (20/s).
        let f = rate_floor(200, &w).unwrap();
        assert_eq!((f.seconds, f.window), (60.0, w[1]));
        let big = Scenario::preset(10_000);
        let f = rate_floor(big.min_calls(), &big.windows).unwrap();
        assert_eq!((f.seconds, f.window.requests), (240.0, 5000));
        let only = [Window::new(20, Duration::from_secs(1))];
        assert_eq!(rate_floor(2000, &only).unwrap().seconds, 100.0);
        assert!(rate_floor(5, &[]).is_none());
    }

    #[test]
    fn parses_windows_and_strategies() {
        assert_eq!(Window::parse_list("100/5s, 1000/5m").unwrap(), digicert_windows());
        assert!(Window::parse_list("100").is_err());
        assert_eq!(Window::new(100, Duration::from_secs(5)).to_string(), "100/5s");
        assert_eq!(Strategy::parse("poll-10s"), Ok(Strategy::Poll { interval_s: 10 }));
        assert_eq!(Strategy::parse("dcvd"), Ok(Strategy::Dcvd));
        assert!(Strategy::parse("poll-0s").is_err());
        assert!(Strategy::parse("fast").is_err());
        assert_eq!(Strategy::Poll { interval_s: 2 }.to_string(), "poll-2s");
    }
}
