//! Per-strategy figures from the simulator's statistics and the child's result, and the table
//! printed per scenario.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use certcentral_sim::{CheckOutcome, Stats, UnitKind};
use serde::Serialize;

use std::time::Duration;

use crate::child::ChildResult;
use crate::floor::{self, RollingWindow};
use crate::scenario::{Scenario, Strategy, rate_floor};

/// Nearest-rank percentiles of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pct {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Maximum.
    pub max: f64,
    /// Sample size.
    pub n: usize,
}

/// Percentiles of `values` (any order), `None` when empty.
pub fn percentiles(values: &[f64]) -> Option<Pct> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[idx]
    };
    Some(Pct { p50: rank(0.50), p95: rank(0.95), max: v[v.len() - 1], n: v.len() })
}

/// Everything measured for one strategy in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// `dcvd`, `poll-2s`, ...
    pub strategy: String,
    /// Orders in the scenario.
    pub orders: usize,
    /// Orders the simulator validated.
    pub valid_orders: usize,
    /// CertCentral requests received by the simulator (every answer).
    pub calls: u64,
    /// The same by endpoint.
    pub calls_by_endpoint: BTreeMap<String, u64>,
    /// `calls / valid_orders`.
    pub calls_per_valid_order: Option<f64>,
    /// DCV checks made before the record could be found.
    pub premature_checks: u64,
    /// HTTP 429 answers.
    pub http_429: u64,
    /// Seconds from "the last name server serves the record" to DigiCert's successful check.
    pub detection_s: Option<Pct>,
    /// Validated orders whose visibility instant was not captured.
    pub detection_unmeasured: usize,
    /// Seconds from the strategy's start to each order's successful check.
    pub time_to_valid_s: Option<Pct>,
    /// Seconds from the strategy's start until it returned (records removed).
    pub wall_s: f64,
    /// The rate-limit floor for the minimum calls (2 per order), seconds.
    pub floor_s: f64,
    /// The window that sets the floor.
    pub floor_window: String,
    /// `wall_s / floor_s` (none when the floor is 0).
    pub wall_over_floor: Option<f64>,
    /// Per order, its propagation time (publication until the last name server serves it): the
    /// earliest its check can succeed after its token, seconds.
    pub lag_bound_s: Option<Pct>,
    /// The true floor of this run ([`floor::true_floor`]) under the scenario's windows, seconds.
    pub true_floor_s: f64,
    /// The same with every window widened by the client limiter's fixed margin
    /// (`certcentral::COMPLETION_MARGIN`; each call's latency comes on top), seconds.
    pub true_floor_margin_s: f64,
    /// What no schedule can beat ([`floor::lower_bound`]), seconds.
    pub floor_lower_bound_s: f64,
    /// `wall_s / true_floor_s`.
    pub wall_over_true_floor: Option<f64>,
    /// Time to valid p95 over the lag bound's p95.
    pub ttv_p95_over_lag_p95: Option<f64>,
    /// Child VmRSS before the strategy's work (name servers running), MiB.
    pub rss_start_mib: f64,
    /// Child peak RSS (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Child CPU time (user + system), seconds.
    pub cpu_s: f64,
    /// Queries answered by the name servers, the simulator's excluded, per record.
    pub dns_queries_per_record: f64,
    /// Queries answered by the name servers, all clients.
    pub server_queries: u64,
    /// Queries the simulator sent.
    pub sim_dns_queries: u64,
    /// Provider publish + remove calls per record.
    pub provider_calls_per_record: f64,
    /// Records left in DNS at the end.
    pub records_left: usize,
    /// Why orders did not end valid (first few), from the strategy.
    pub errors: Vec<String>,
}

const MIB: f64 = 1024.0;

/// Computes the figures of one run; `lags`: each order's propagation time in this run.
pub fn figures(
    scenario: &Scenario,
    strategy: Strategy,
    child: &ChildResult,
    stats: &Stats,
    lags: &[Duration],
) -> Figures {
    let mut valid_at: HashMap<u64, i64> = HashMap::new();
    for c in &stats.checks {
        if c.kind == UnitKind::Order && c.outcome == CheckOutcome::Valid {
            let e = valid_at.entry(c.id).or_insert(c.unix_ms);
            *e = (*e).min(c.unix_ms);
        }
    }
    let visible: HashMap<u64, i64> = child.visible.iter().copied().collect();
    let mut detection = Vec::with_capacity(valid_at.len());
    let mut unmeasured = 0;
    let mut ttv = Vec::with_capacity(valid_at.len());
    for (id, at) in &valid_at {
        ttv.push((at - child.started_unix_ms) as f64 / 1000.0);
        match visible.get(id) {
            Some(v) => detection.push((at - v) as f64 / 1000.0),
            None => unmeasured += 1,
        }
    }
    let calls: u64 = stats.calls.values().sum();
    let records = scenario.orders.max(1) as f64;
    let server_queries: u64 = child.server_queries.iter().sum();
    let floor = rate_floor(scenario.min_calls(), &scenario.windows);
    let floor_s = floor.map_or(0.0, |f| f.seconds);
    let wall_s = (child.finished_unix_ms - child.started_unix_ms) as f64 / 1000.0;
    let windows: Vec<RollingWindow> =
        scenario.windows.iter().map(|w| RollingWindow { requests: w.requests, per: w.per() }).collect();
    let true_floor_s = floor::true_floor(lags, &windows).as_secs_f64();
    let true_floor_margin_s =
        floor::true_floor(lags, &floor::widened(&windows, |_| certcentral::COMPLETION_MARGIN)).as_secs_f64();
    let lag_bound_s = percentiles(&lags.iter().map(Duration::as_secs_f64).collect::<Vec<_>>());
    let time_to_valid_s = percentiles(&ttv);
    Figures {
        strategy: strategy.to_string(),
        orders: scenario.orders,
        valid_orders: valid_at.len(),
        calls,
        calls_by_endpoint: stats.calls.clone(),
        calls_per_valid_order: (!valid_at.is_empty()).then(|| calls as f64 / valid_at.len() as f64),
        premature_checks: stats.premature_checks,
        http_429: stats.too_many_requests(),
        detection_s: percentiles(&detection),
        detection_unmeasured: unmeasured,
        time_to_valid_s,
        wall_s,
        floor_s,
        floor_window: floor.map(|f| f.window.to_string()).unwrap_or_default(),
        wall_over_floor: (floor_s > 0.0).then(|| wall_s / floor_s),
        lag_bound_s,
        true_floor_s,
        true_floor_margin_s,
        floor_lower_bound_s: floor::lower_bound(lags, &windows).as_secs_f64(),
        wall_over_true_floor: (true_floor_s > 0.0).then(|| wall_s / true_floor_s),
        ttv_p95_over_lag_p95: time_to_valid_s.zip(lag_bound_s).filter(|(_, l)| l.p95 > 0.0).map(|(t, l)| t.p95 / l.p95),
        rss_start_mib: child.rss_start_kib as f64 / MIB,
        peak_rss_mib: child.peak_rss_kib as f64 / MIB,
        cpu_s: child.cpu_s,
        dns_queries_per_record: server_queries.saturating_sub(stats.dns_queries) as f64 / records,
        server_queries,
        sim_dns_queries: stats.dns_queries,
        provider_calls_per_record: (child.provider_publish + child.provider_remove) as f64 / records,
        records_left: child.records_left,
        errors: child.errors.clone(),
    }
}

/// One strategy's outcome in a scenario: figures, or why the run failed.
pub type RunOutcome = Result<Figures, String>;

fn pct3(p: Option<Pct>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{:.2} / {:.2} / {:.2}", p.p50, p.p95, p.max))
}

fn pct2(p: Option<Pct>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{:.1} / {:.1}", p.p50, p.p95))
}

/// The table of one scenario: one column per strategy.
pub fn table(scenario: &Scenario, runs: &[(Strategy, RunOutcome)]) -> String {
    let floor = rate_floor(scenario.min_calls(), &scenario.windows);
    let mut out = String::new();
    let _ = writeln!(out, "Scenario: {}", scenario.describe());
    if let Some(f) = floor {
        let _ = writeln!(
            out,
            "Rate-limit floor: the minimum {} calls (2 per order) at the sustained rate of {}: {:.1} s",
            f.calls, f.window, f.seconds
        );
    }
    type Row = (&'static str, fn(&Figures) -> String);
    let rows: &[Row] = &[
        ("orders valid (simulator)", |f| format!("{}/{}", f.valid_orders, f.orders)),
        ("CertCentral calls / valid order", |f| f.calls_per_valid_order.map_or("-".into(), |c| format!("{c:.2}"))),
        ("premature checks", |f| f.premature_checks.to_string()),
        ("HTTP 429", |f| f.http_429.to_string()),
        ("detection p50/p95/max (s)", |f| pct3(f.detection_s)),
        ("time to valid p50/p95 (s)", |f| pct2(f.time_to_valid_s)),
        ("wall time (s)", |f| format!("{:.1}", f.wall_s)),
        ("wall / rate-limit floor", |f| f.wall_over_floor.map_or("- (floor 0)".into(), |r| format!("{r:.3}"))),
        ("lag bound p50/p95/max (s)", |f| pct3(f.lag_bound_s)),
        ("true floor / with margin (s)", |f| format!("{:.1} / {:.1}", f.true_floor_s, f.true_floor_margin_s)),
        ("wall / true floor", |f| f.wall_over_true_floor.map_or("-".into(), |r| format!("{r:.3}"))),
        ("time to valid p95 / lag p95", |f| f.ttv_p95_over_lag_p95.map_or("-".into(), |r| format!("{r:.3}"))),
        ("peak RSS (MiB)", |f| format!("{:.1}", f.peak_rss_mib)),
        ("CPU user+sys (s)", |f| format!("{:.2}", f.cpu_s)),
        ("DNS queries / record", |f| format!("{:.1}", f.dns_queries_per_record)),
        ("provider calls / record", |f| format!("{:.2}", f.provider_calls_per_record)),
        ("records left in DNS", |f| f.records_left.to_string()),
    ];
    let width = 24usize.max(runs.iter().map(|(s, _)| s.to_string().len() + 2).max().unwrap_or(0));
    let _ = write!(out, "{:<34}", "metric");
    for (s, _) in runs {
        let _ = write!(out, "{:>width$}", s.to_string());
    }
    out.push('\n');
    for (label, cell) in rows {
        let _ = write!(out, "{label:<34}");
        for (_, run) in runs {
            let v = match run {
                Ok(f) => cell(f),
                Err(_) => "run failed".into(),
            };
            let _ = write!(out, "{v:>width$}");
        }
        out.push('\n');
    }
    for (s, run) in runs {
        match run {
            Err(e) => {
                let _ = writeln!(out, "{s}: run failed: {e}");
            }
            Ok(f) => {
                if f.detection_unmeasured > 0 {
                    let _ = writeln!(out, "{s}: visibility not captured for {} orders", f.detection_unmeasured);
                }
                for e in &f.errors {
                    let _ = writeln!(out, "{s}: {e}");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v).unwrap();
        assert_eq!((p.p50, p.p95, p.max, p.n), (50.0, 95.0, 100.0, 100));
        let p = percentiles(&[3.0]).unwrap();
        assert_eq!((p.p50, p.p95, p.max), (3.0, 3.0, 3.0));
        assert!(percentiles(&[]).is_none());
    }

    #[test]
    fn figures_join_checks_with_visibility() {
        let scenario = Scenario { orders: 2, ..Scenario::quick() };
        let stats: Stats = serde_json::from_value(serde_json::json!({
            "calls": {"dcv_random_value": 2, "check_dcv": 3},
            "order_calls": {}, "domain_calls": {}, "unauthorized": 0, "rate_limited": 0,
            "premature_checks": 1, "successful_validations": 2, "tokens_issued": 0,
            "dns_queries": 10, "negative_cache_hits": 0, "dns_errors": 0,
            "faults": {"error_500":0,"error_503":0,"html_502":0,"dropped":0,"burst_429":0,"latency":0},
            "checks": [
                {"kind":"order","id":1,"at":"2026-01-01T00:00:00Z","unix_ms":1500,"outcome":"not_found","names_valid":0,"names_total":1,"negative_cache_hits":0},
                {"kind":"order","id":1,"at":"2026-01-01T00:00:00Z","unix_ms":3000,"outcome":"valid","names_valid":1,"names_total":1,"negative_cache_hits":0},
                {"kind":"order","id":2,"at":"2026-01-01T00:00:00Z","unix_ms":5000,"outcome":"valid","names_valid":1,"names_total":1,"negative_cache_hits":0}
            ]
        }))
        .expect("stats json");
        let child = ChildResult {
            started_unix_ms: 1000,
            finished_unix_ms: 6000,
            visible: vec![(1, 2500), (2, 4000)],
            valid: 2,
            errors: vec![],
            server_queries: vec![20, 14],
            provider_publish: 2,
            provider_remove: 2,
            records_left: 0,
            rss_start_kib: 1024,
            peak_rss_kib: 4096,
            cpu_s: 0.5,
        };
        // order 1 propagates in 1 s, order 2 in 2.5 s; DigiCert's windows do not bind
        let lags = [Duration::from_secs(1), Duration::from_millis(2500)];
        let f = figures(&scenario, Strategy::Dcvd, &child, &stats, &lags);
        assert_eq!(f.valid_orders, 2);
        assert_eq!(f.calls_per_valid_order, Some(2.5));
        let d = f.detection_s.unwrap();
        assert_eq!((d.p50, d.max), (0.5, 1.0));
        let t = f.time_to_valid_s.unwrap();
        assert_eq!((t.p50, t.max), (2.0, 4.0));
        assert_eq!(f.wall_s, 5.0);
        assert_eq!(f.dns_queries_per_record, 12.0);
        assert_eq!(f.provider_calls_per_record, 2.0);
        assert_eq!(f.peak_rss_mib, 4.0);
        assert_eq!((f.true_floor_s, f.floor_lower_bound_s, f.wall_over_true_floor), (2.5, 2.5, Some(2.0)));
        assert_eq!(f.lag_bound_s.map(|l| l.p95), Some(2.5));
        assert_eq!(f.ttv_p95_over_lag_p95, Some(4.0 / 2.5));
        let t = table(&scenario, &[(Strategy::Dcvd, Ok(f)), (Strategy::Poll { interval_s: 2 }, Err("boom".into()))]);
        assert!(t.contains("2/2") && t.contains("2.50") && t.contains("poll-2s: run failed: boom"), "{t}");
    }
}
