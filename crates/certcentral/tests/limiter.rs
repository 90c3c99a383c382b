//! The client-side rate limiter, driven directly under paused tokio time: no window of length T
//! ever holds more than N admissions, across clones; bursts go out at once (the rolling-window
//! floor, not a smoothed rate); checks go before token requests without starving them; limiters
//! that are not clones share the windows through a ledger, one ledger request in flight each.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certcentral::{
    Admission, COMPLETION_MARGIN, Lane, RateLimiter, RateWindow, SharedWindows, SharedWindowsError, TOKENS_PER_CHECK,
    WindowSpan, safety_margin,
};
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

/// The least time `calls` admissions can take under all `windows` together: each call at the
/// earliest instant at which every window (with its margin, for requests answered at once) has
/// room, computed without the limiter. Any valid schedule is at least this long.
fn rolling_floor(windows: &[RateWindow], calls: usize) -> Duration {
    rolling_floor_with(windows, calls, |_| COMPLETION_MARGIN)
}

/// [`rolling_floor`] with `margin` added to each window.
fn rolling_floor_with(windows: &[RateWindow], calls: usize, margin: fn(Duration) -> Duration) -> Duration {
    let mut sent: Vec<Duration> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let at = windows
            .iter()
            .filter(|w| sent.len() >= w.requests as usize)
            .map(|w| sent[sent.len() - w.requests as usize] + w.per + margin(w.per))
            .chain(sent.last().copied())
            .max()
            .unwrap_or_default();
        sent.push(at);
    }
    sent.last().copied().unwrap_or_default()
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
    let floor = rolling_floor(&windows, 300);
    assert!(total <= floor + Duration::from_millis(10), "took {total:?}, rolling-window floor {floor:?}");
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
    // DigiCert allows the first 100 at once: a rolling window, not a smoothed rate.
    assert_eq!(times[99], start, "the first 100 calls must not wait");
    assert!(times[100] > start, "the 101st must wait for the 5 s window");
    let total = *times.last().unwrap() - start;
    assert!(total >= Duration::from_secs(10), "300 calls at 100 per 5 s need at least 10 s: {total:?}");
    let floor = rolling_floor(&windows, 300);
    assert!(total <= floor + Duration::from_millis(10), "took {total:?}, rolling-window floor {floor:?}");
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
    assert!(total >= Duration::from_secs(120), "{total:?}");
    let floor = rolling_floor(&windows, 300);
    assert!(total <= floor + Duration::from_millis(10), "took {total:?}, rolling-window floor {floor:?}");
}

/// A window of 1 request admits one call per period, and `acquire` reports the time waited.
#[tokio::test(start_paused = true)]
async fn single_request_window_and_reported_wait() {
    let limiter = RateLimiter::new(&[RateWindow::new(1, Duration::from_secs(2))]).unwrap();
    assert_eq!(limiter.acquire().await, Duration::ZERO);
    let waited = limiter.acquire().await;
    let span = Duration::from_secs(2) + COMPLETION_MARGIN;
    assert!(waited >= span && waited <= span + Duration::from_millis(2), "{waited:?}");
}

/// Queues `checks` check calls and `tokens` token calls behind an exhausted 1-per-second window
/// and returns the lanes in admission order.
async fn admission_order(checks: usize, tokens: usize) -> Vec<Lane> {
    let limiter = RateLimiter::new(&[RateWindow::new(1, Duration::from_secs(1))]).unwrap();
    limiter.acquire().await; // the window is now full
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let lanes = std::iter::repeat_n(Lane::Token, tokens).chain(std::iter::repeat_n(Lane::Check, checks));
    for lane in lanes {
        let (limiter, order) = (limiter.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            limiter.acquire_in(lane).await;
            order.lock().unwrap().push(lane);
        }));
        tokio::task::yield_now().await; // queued in this order
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(order).unwrap().into_inner().unwrap()
}

/// A check queued behind token requests goes first, then the token requests it owes, and so on:
/// checks wait behind at most two token calls, token calls get two thirds of the rate.
#[tokio::test(start_paused = true)]
async fn checks_go_first_and_token_requests_keep_their_share() {
    use Lane::{Check as C, Token as T};
    let order = admission_order(3, 6).await;
    assert_eq!(order, [C, T, T, C, T, T, C, T, T]);
    assert_eq!(TOKENS_PER_CHECK, 2);
}

/// Under a constant stream of checks, token requests are not starved: 10 token calls queued
/// with 100 checks are all admitted within the first 15 admissions.
#[tokio::test(start_paused = true)]
async fn token_requests_are_not_starved_by_checks() {
    let order = admission_order(100, 10).await;
    let last_token = order.iter().rposition(|l| *l == Lane::Token).unwrap();
    assert!(last_token < 15, "last token admitted at position {last_token}: {order:?}");
    assert_eq!(order.iter().filter(|l| **l == Lane::Token).count(), 10);
}

/// A check that arrives while a token call already sleeps until the window frees takes its turn
/// (only the caller whose turn it is is woken, so the token call must be woken again after the
/// check): the check goes when the window frees, the token call one window later.
#[tokio::test(start_paused = true)]
async fn a_check_arriving_while_a_token_call_sleeps_goes_first_and_the_token_call_follows() {
    let per = Duration::from_secs(1);
    let limiter = RateLimiter::new(&[RateWindow::new(1, per)]).unwrap();
    let start = Instant::now();
    limiter.acquire().await;
    let token = tokio::spawn({
        let limiter = limiter.clone();
        async move { (limiter.acquire_in(Lane::Token).await, Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the token call sleeps for the window
    let check = tokio::spawn({
        let limiter = limiter.clone();
        async move { (limiter.acquire_in(Lane::Check).await, Instant::now()) }
    });
    let (_, check_at) = check.await.unwrap();
    let (_, token_at) = tokio::time::timeout(per * 5, token).await.expect("the token call was never woken").unwrap();
    let span = per + COMPLETION_MARGIN;
    assert_eq!(check_at - start, span, "the check goes when the window frees");
    assert_eq!(token_at - start, span * 2, "the token call one window later");
}

/// A caller that gives up while it waits (its future is dropped) leaves no hole: the next one in
/// line is admitted as soon as the window allows.
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_does_not_block_the_queue() {
    let limiter = RateLimiter::new(&[RateWindow::new(1, Duration::from_secs(1))]).unwrap();
    limiter.acquire().await;
    let first = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire_in(Lane::Check).await }
    });
    tokio::task::yield_now().await;
    first.abort();
    let start = Instant::now();
    limiter.acquire().await;
    let waited = Instant::now() - start;
    let span = Duration::from_secs(1) + COMPLETION_MARGIN;
    assert!(waited <= span + Duration::from_millis(5), "the aborted waiter held the queue: {waited:?}");
}

/// Requests take up to 250 ms (the margin) to reach the server, each a different time (a loaded
/// host, a slow connection set-up), and up to 2 s more until their answer (the server looks
/// records up). Whatever each one's delay, no window of T at the server ever holds more than N
/// arrivals: a request counts from its admission until its answer, at most the margin past its
/// admission. Arrivals are taken at the worst point each request allows, and the check is
/// against the windows exactly. Counting admissions alone (with the 20 ms margin) fails this;
/// and the slow answers cost no more time than the fixed margin (plus 20 ms per window).
#[tokio::test(start_paused = true)]
async fn requests_count_until_they_arrived_so_slow_ones_cannot_crowd_a_window() {
    let windows = [RateWindow::new(10, Duration::from_secs(1)), RateWindow::new(30, Duration::from_secs(5))];
    let limiter = RateLimiter::new(&windows).unwrap();
    let start = Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut seed = 0x5eed_u64;
    let mut next = move |bound: u64| {
        // A small LCG: the test is the same every run.
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    for i in 0..200u64 {
        let delivery = Duration::from_millis(next(250));
        let processing = Duration::from_millis(next(2000));
        let (limiter, log) = (limiter.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3) * i as u32).await;
            let permit = limiter.admit(if i % 3 == 0 { Lane::Check } else { Lane::Token }).await;
            let admitted = Instant::now();
            tokio::time::sleep(delivery + processing).await; // there, looked at, and the answer back
            drop(permit);
            log.lock().unwrap().push((admitted, delivery));
        }));
    }
    for task in tasks {
        task.await.expect("task ran");
    }
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 200);
    for window in &windows {
        // For each request j arriving at once (at its admission), the requests before it that
        // arrive as late as they can: any of them arriving within T before j crowds j's window.
        for &(admitted_j, _) in log.iter() {
            let crowd = log
                .iter()
                .filter(|(admitted, delivery)| {
                    *admitted <= admitted_j && *admitted + *delivery + window.per > admitted_j
                })
                .count();
            assert!(
                crowd <= window.requests as usize,
                "{crowd} arrivals within {:?} at {:?} (limit {})",
                window.per,
                admitted_j - start,
                window.requests
            );
        }
    }
    let last = log.iter().map(|(admitted, _)| *admitted).max().unwrap() - start;
    // At worst a request counts for the margin, then the window and 20 ms.
    let worst = rolling_floor_with(&windows, 200, |per| safety_margin(per) + COMPLETION_MARGIN);
    assert!(last <= worst + Duration::from_millis(50), "last admission {last:?}, floor at the full margin {worst:?}");
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
    let span = Duration::from_millis(1500) + COMPLETION_MARGIN;
    assert!(records[1].rate_limit_wait <= span + Duration::from_millis(100), "{:?}", records[1]);
}

/// A ledger in this process's memory (the same rule as the PostgreSQL one in dcvd). Each limiter
/// gets its own handle ([`MemoryLedger::sharing`]: one record, counters of its own) as separate
/// instances have their own connection; a handle counts its requests in flight and can be made
/// to fail until an instant.
#[derive(Debug, Default)]
struct MemoryLedger {
    admitted: Arc<Mutex<Vec<Instant>>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    requests: AtomicUsize,
    fail_until: Option<Instant>,
}

impl MemoryLedger {
    /// Another handle on the same record.
    fn sharing(&self) -> Self {
        Self { admitted: self.admitted.clone(), ..Self::default() }
    }
}

#[async_trait::async_trait]
impl SharedWindows for MemoryLedger {
    async fn try_admit(&self, windows: &[WindowSpan]) -> Result<Admission, SharedWindowsError> {
        let now_in_flight = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most_in_flight.fetch_max(now_in_flight, SeqCst);
        self.requests.fetch_add(1, SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await; // a round trip
        self.in_flight.fetch_sub(1, SeqCst);
        let now = Instant::now();
        if self.fail_until.is_some_and(|until| now < until) {
            return Err("ledger down".into());
        }
        let mut admitted = self.admitted.lock().unwrap();
        let free_at = windows
            .iter()
            .filter_map(|w| admitted.iter().rev().nth(w.requests as usize - 1).map(|nth| *nth + w.span))
            .filter(|free| *free > now)
            .max();
        Ok(match free_at {
            Some(free) => Admission::RetryIn(free - now),
            None => {
                admitted.push(now);
                Admission::Admitted
            }
        })
    }
}

/// Two independent limiters (not clones: each keeps its own local logs and lanes) with one
/// shared ledger hold the windows together, and each has at most one ledger request in flight
/// although 100 callers wait on it.
#[tokio::test(start_paused = true)]
async fn independent_limiters_share_the_windows_through_a_ledger() {
    let windows = [RateWindow::new(10, Duration::from_secs(1)), RateWindow::new(30, Duration::from_secs(5))];
    let first = Arc::new(MemoryLedger::default());
    let second = Arc::new(first.sharing());
    let limiters = [
        RateLimiter::with_shared_windows(&windows, first.clone()).unwrap(),
        RateLimiter::with_shared_windows(&windows, second.clone()).unwrap(),
    ];
    // Callers of both lanes arrive every 7 ms, so checks arrive while a token call asks.
    let start = Instant::now();
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (limiter, admitted) = (limiters[i as usize % 2].clone(), admitted.clone());
        let lane = if i % 3 == 0 { Lane::Check } else { Lane::Token };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(7) * i).await;
            limiter.acquire_in(lane).await;
            admitted.lock().unwrap().push(Instant::now());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut times = admitted.lock().unwrap().clone();
    times.sort();
    for window in windows {
        let worst = max_in_window(&times, window.per);
        assert!(worst <= window.requests as usize, "{worst} admissions within {:?}", window.per);
    }
    assert_eq!(first.admitted.lock().unwrap().len(), 200);
    assert_eq!((first.most_in_flight.load(SeqCst), second.most_in_flight.load(SeqCst)), (1, 1));
    assert!(first.requests.load(SeqCst) > 0 && second.requests.load(SeqCst) > 0, "one limiter did all the work");
    // Together at the pace of one limiter alone: the floor with the ledger's margin, plus round
    // trips.
    let total = *times.last().unwrap() - start;
    let floor = rolling_floor_with(&windows, 200, safety_margin);
    assert!(total <= floor + Duration::from_millis(500), "took {total:?}, rolling-window floor {floor:?}");
}

/// While the ledger fails nobody is admitted (the limit is never bypassed) and the head asks
/// again with backoff, not in a loop; once it answers, the calls resume.
#[tokio::test(start_paused = true)]
async fn a_failing_ledger_admits_nothing_until_it_answers() {
    let start = Instant::now();
    let outage_ends = start + Duration::from_secs(10);
    let ledger = Arc::new(MemoryLedger { fail_until: Some(outage_ends), ..MemoryLedger::default() });
    let limiter =
        RateLimiter::with_shared_windows(&[RateWindow::new(10, Duration::from_secs(1))], ledger.clone()).unwrap();
    let (_, times) = burst(std::slice::from_ref(&limiter), 5).await;
    assert!(times[0] >= outage_ends, "admitted during the outage, at {:?}", times[0] - start);
    // The backoff is at most 5 s.
    assert!(times[4] <= outage_ends + Duration::from_secs(6), "resumed late, at {:?}", times[4] - start);
    // 100 ms doubling to 5 s: a handful of requests over 10 s, not one per millisecond.
    let requests = ledger.requests.load(SeqCst);
    assert!(requests < 20, "{requests} ledger requests");
    assert_eq!(ledger.admitted.lock().unwrap().len(), 5);
}
