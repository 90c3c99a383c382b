//! The client-side rate limiter, driven directly under paused tokio time: no window of length T
//! ever holds more than N admissions, across clones, and bursts are not slowed needlessly.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use certcentral::{RateLimiter, RateWindow};
use tokio::time::Instant;

/// Runs `calls` concurrent acquisitions spread over the given limiter clones; returns the
/// admission instants (sorted) and the start instant.
async fn burst(limiters: &[RateLimiter], calls: usize) -> (Instant, Vec<Instant>) {
    let start = Instant::now();
    let admitted = Arc::new(Mutex::new(Vec::with_capacity(calls)));
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        let limiter = limiters[i % limiters.len()].clone();
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            limiter.acquire().await;
            admitted.lock().unwrap().push(Instant::now());
        }));
    }
    for task in tasks {
        task.await.expect("task ran");
    }
    let mut times = Arc::try_unwrap(admitted).unwrap().into_inner().unwrap();
    times.sort();
    (start, times)
}

/// The largest number of admissions in any closed window `[t, t + per]` (a closed window is
/// stricter than the half-open windows servers use).
fn max_in_window(times: &[Instant], per: Duration) -> usize {
    let mut best = 0;
    let mut end = 0;
    for (begin, &t) in times.iter().enumerate() {
        while end < times.len() && times[end] <= t + per {
            end += 1;
        }
        best = best.max(end - begin);
    }
    best
}

/// The time GCRA needs for `calls` admissions under `window` (burst `max(1, N/50)` at once,
/// then one per `T/(N-b)`): the slowest window sets the pace.
fn gcra_floor(window: RateWindow, calls: u32) -> Duration {
    let burst = (window.requests / 50).max(1);
    window.per.mul_f64(f64::from(calls.saturating_sub(burst)) / f64::from(window.requests - burst))
}

/// 300 calls at once under two small windows (10 per 1 s, 50 per 10 s): no sliding window
/// holds more than its N, and the burst completes close to the floor (not absurdly slow).
#[tokio::test(start_paused = true)]
async fn burst_of_300_respects_both_windows() {
    let windows = [RateWindow::new(10, Duration::from_secs(1)), RateWindow::new(50, Duration::from_secs(10))];
    let limiter = RateLimiter::new(&windows).unwrap();
    let (start, times) = burst(std::slice::from_ref(&limiter), 300).await;
    assert_eq!(times.len(), 300);
    for window in windows {
        let worst = max_in_window(&times, window.per);
        assert!(worst <= window.requests as usize, "{worst} admissions within {:?}", window.per);
    }
    let total = *times.last().unwrap() - start;
    // No limiter can do better than 50 per 10 s allows: 300 calls need more than 50 s.
    assert!(total > Duration::from_secs(50), "{total:?}");
    let floor = windows.iter().map(|w| gcra_floor(*w, 300)).max().unwrap();
    assert!(total <= floor.mul_f64(1.05), "took {total:?}, GCRA floor {floor:?}");
}

/// The default windows (100 per 5 s, 1000 per 5 min) hold for 300 calls made through several
/// clones (they share one state), and the first admissions are immediate.
#[tokio::test(start_paused = true)]
async fn default_windows_shared_by_clones() {
    let windows = RateWindow::defaults();
    let limiter = RateLimiter::new(&windows).unwrap();
    let clones = [limiter.clone(), limiter.clone(), limiter];
    let (start, times) = burst(&clones, 300).await;
    for window in &windows {
        let worst = max_in_window(&times, window.per);
        assert!(worst <= window.requests as usize, "{worst} admissions within {:?}", window.per);
    }
    assert_eq!(times[0], start, "the first call must not wait");
    let total = *times.last().unwrap() - start;
    assert!(total > Duration::from_secs(10), "300 calls at 100 per 5 s need more than 10 s: {total:?}");
    let floor = windows.iter().map(|w| gcra_floor(*w, 300)).max().unwrap();
    assert!(total <= floor.mul_f64(1.05), "took {total:?}, GCRA floor {floor:?}");
}

/// When the long window is the tight one (60 per 1 s but 100 per 60 s), it governs.
#[tokio::test(start_paused = true)]
async fn long_window_governs_after_its_budget() {
    let windows = [RateWindow::new(60, Duration::from_secs(1)), RateWindow::new(100, Duration::from_secs(60))];
    let limiter = RateLimiter::new(&windows).unwrap();
    let (start, times) = burst(std::slice::from_ref(&limiter), 300).await;
    for window in windows {
        assert!(max_in_window(&times, window.per) <= window.requests as usize);
    }
    let total = *times.last().unwrap() - start;
    assert!(total > Duration::from_secs(120), "{total:?}");
    let floor = windows.iter().map(|w| gcra_floor(*w, 300)).max().unwrap();
    assert!(total <= floor.mul_f64(1.05), "took {total:?}, GCRA floor {floor:?}");
}

/// A window of 1 request admits one call per period, and `acquire` reports the time waited.
#[tokio::test(start_paused = true)]
async fn single_request_window_and_reported_wait() {
    let limiter = RateLimiter::new(&[RateWindow::new(1, Duration::from_secs(2))]).unwrap();
    assert_eq!(limiter.acquire().await, Duration::ZERO);
    let waited = limiter.acquire().await;
    assert!(waited >= Duration::from_secs(2) && waited <= Duration::from_millis(2002), "{waited:?}");
}

/// No windows: everything is admitted at once.
#[tokio::test(start_paused = true)]
async fn no_windows_no_waiting() {
    let limiter = RateLimiter::new(&[]).unwrap();
    let (start, times) = burst(std::slice::from_ref(&limiter), 50).await;
    assert!(times.iter().all(|t| *t == start));
}

/// The client reports rate-limit waits per call through its observer.
#[tokio::test]
async fn client_reports_rate_limit_wait() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(common::json(200, r#"{"dns_name_validations":[]}"#))
        .expect(2)
        .mount(&server)
        .await;
    let mut config = common::config(&server);
    config.rate_limits = vec![RateWindow::new(1, Duration::from_millis(1500))];
    let (client, records) = common::observed_client(config);
    client.order_validation(1).await.unwrap();
    client.clone().order_validation(1).await.unwrap();
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].rate_limit_wait, Duration::ZERO);
    assert!(records[1].rate_limit_wait > Duration::ZERO, "{:?}", records[1]);
    assert!(records[1].rate_limit_wait <= Duration::from_millis(1600), "{:?}", records[1]);
}
