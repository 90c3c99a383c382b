//! The true floor of a run: the shortest time in which any client could validate every order,
//! given each order's propagation time and DigiCert's rolling windows.
//!
//! Model: every order needs two calls, its token (any time from 0) and one successful check
//! (no earlier than its token plus its propagation time, the *lag bound* of the order); calls
//! are instantaneous; at most N calls fall in any interval of length T, for every window (the
//! rule [`certcentral::limiter`] enforces). The floor is the end of the best schedule this module
//! finds: it simulates, call by call, two greedy schedules that fill the windows exactly (tokens
//! in decreasing lag order; checks as soon as released, or only once every token is out) and
//! keeps the shorter. [`lower_bound`] is what no schedule can beat; the tests check that the
//! floor never falls below it. Pure arithmetic: it must not measure or sleep.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// One rolling window: at most `requests` calls in any interval of length `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingWindow {
    /// Calls allowed per interval.
    pub requests: u32,
    /// The interval.
    pub per: Duration,
}

/// Which call a schedule issues when a check is ready and tokens are still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every token before any check.
    TokensFirst,
    /// A released check before the next token.
    ChecksFirst,
}

/// A schedule's call instants (from the common start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Token call per order, in the input order.
    pub tokens: Vec<Duration>,
    /// Check call per order, in the input order.
    pub checks: Vec<Duration>,
    /// The last call: when the last order is valid.
    pub end: Duration,
}

/// Call instants so far, and the earliest instant the windows allow the next one.
struct Calls<'a> {
    windows: &'a [RollingWindow],
    at: Vec<Duration>,
}

impl Calls<'_> {
    /// The earliest instant not before `from` at which every window admits one more call:
    /// at least `per` after the N-th most recent call.
    fn next_free(&self, from: Duration) -> Duration {
        self.windows
            .iter()
            .filter(|w| w.requests > 0)
            .filter_map(|w| self.at.len().checked_sub(w.requests as usize).map(|i| self.at[i] + w.per))
            .fold(from, Duration::max)
    }

    fn push(&mut self, at: Duration) {
        debug_assert!(self.at.last().is_none_or(|last| *last <= at), "calls are scheduled in time order");
        self.at.push(at);
    }
}

/// The greedy schedule of `policy` for orders whose records need `lags` to propagate.
pub fn schedule(lags: &[Duration], windows: &[RollingWindow], policy: Policy) -> Schedule {
    let n = lags.len();
    let mut by_lag: Vec<usize> = (0..n).collect();
    by_lag.sort_by_key(|&i| Reverse(lags[i]));
    let mut next_token = by_lag.into_iter();
    let mut pending_token = next_token.next();
    let mut released: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut calls = Calls { windows, at: Vec::with_capacity(2 * n) };
    let (mut tokens, mut checks) = (vec![Duration::ZERO; n], vec![Duration::ZERO; n]);
    let mut end = Duration::ZERO;
    loop {
        let free = calls.next_free(Duration::ZERO);
        let check_ready = released.peek().is_some_and(|Reverse((at, _))| *at <= free);
        let take_token = match (pending_token, policy) {
            (None, _) => false,
            (Some(_), Policy::TokensFirst) => true,
            (Some(_), Policy::ChecksFirst) => !check_ready,
        };
        if take_token {
            let order = pending_token.take().expect("a pending token");
            tokens[order] = free;
            calls.push(free);
            released.push(Reverse((free + lags[order], order)));
            pending_token = next_token.next();
        } else if let Some(Reverse((release, order))) = released.pop() {
            let at = calls.next_free(release);
            checks[order] = at;
            calls.push(at);
            end = end.max(at);
        } else {
            break;
        }
    }
    Schedule { tokens, checks, end }
}

/// The floor: the shorter of the greedy schedules (see the module documentation).
pub fn true_floor(lags: &[Duration], windows: &[RollingWindow]) -> Duration {
    [Policy::TokensFirst, Policy::ChecksFirst].iter().map(|p| schedule(lags, windows, *p).end).min().unwrap_or_default()
}

/// What no schedule can beat: the k-th call of any schedule is no earlier than the k-th call of
/// a client that calls as soon as the windows allow, so (a) the last of the `2n` calls is no
/// earlier than that client's `2n`-th, and (b) pairing the longest lags with the earliest token
/// instants, some order is checked no earlier than its token's slot plus its lag.
pub fn lower_bound(lags: &[Duration], windows: &[RollingWindow]) -> Duration {
    let n = lags.len();
    if n == 0 {
        return Duration::ZERO;
    }
    let mut calls = Calls { windows, at: Vec::with_capacity(2 * n) };
    for _ in 0..2 * n {
        let at = calls.next_free(Duration::ZERO);
        calls.push(at);
    }
    let mut sorted = lags.to_vec();
    sorted.sort_by_key(|l| Reverse(*l));
    let lag_bound = sorted.iter().zip(&calls.at).map(|(lag, slot)| *slot + *lag).max().unwrap_or_default();
    lag_bound.max(calls.at[2 * n - 1])
}

/// `windows` as the client's limiter enforces them: each one `per + margin(per)` long.
pub fn widened(windows: &[RollingWindow], margin: impl Fn(Duration) -> Duration) -> Vec<RollingWindow> {
    windows.iter().map(|w| RollingWindow { requests: w.requests, per: w.per + margin(w.per) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn window(requests: u32, per: u64) -> RollingWindow {
        RollingWindow { requests, per: s(per) }
    }

    /// 2 calls per 10 s, two orders that propagate at once: both tokens at 0, both checks wait
    /// for the window, at 10 s.
    #[test]
    fn full_window_pushes_the_checks_to_the_next_interval() {
        let w = [window(2, 10)];
        let sched = schedule(&[s(0), s(0)], &w, Policy::TokensFirst);
        assert_eq!((sched.tokens, sched.checks, sched.end), (vec![s(0), s(0)], vec![s(10), s(10)], s(10)));
        // checks first: token A, check A at 0, then token B and check B at 10
        let sched = schedule(&[s(0), s(0)], &w, Policy::ChecksFirst);
        assert_eq!((sched.tokens, sched.checks), (vec![s(0), s(10)], vec![s(0), s(10)]));
        assert_eq!(true_floor(&[s(0), s(0)], &w), s(10));
        assert_eq!(lower_bound(&[s(0), s(0)], &w), s(10));
    }

    /// DigiCert's windows, 100 orders that all need 30 s: the 100 tokens go at once, the 100
    /// checks at 30 s; the floor is the lag bound, not 200 calls at 1000 per 5 minutes (60 s).
    #[test]
    fn digicert_windows_let_100_orders_go_in_one_burst() {
        let w = [window(100, 5), window(1000, 300)];
        let lags = vec![s(30); 100];
        assert_eq!(true_floor(&lags, &w), s(30));
        assert_eq!(lower_bound(&lags, &w), s(30));
        // 101 orders: the 101st token waits for the 5 s window
        let lags = vec![s(30); 101];
        assert_eq!(true_floor(&lags, &w), s(35));
    }

    /// 1 call per second, lags 10, 0, 0 s: the long one gets the first token (0) and is checked
    /// at 10; the short ones' tokens at 1 and 2, checks at 3 and 4.
    #[test]
    fn longest_lag_gets_the_first_token() {
        let w = [window(1, 1)];
        let sched = schedule(&[s(0), s(10), s(0)], &w, Policy::TokensFirst);
        assert_eq!(sched.tokens, vec![s(1), s(0), s(2)]);
        assert_eq!(sched.checks, vec![s(3), s(10), s(4)]);
        assert_eq!(true_floor(&[s(0), s(10), s(0)], &w), s(10));
        assert_eq!(lower_bound(&[s(0), s(10), s(0)], &w), s(10));
    }

    /// When the rate binds: 1 per second, two orders without lag, four calls at 0, 1, 2, 3.
    #[test]
    fn rate_bound_when_lags_are_short() {
        let w = [window(1, 1)];
        assert_eq!(true_floor(&[s(0), s(0)], &w), s(3));
        assert_eq!(lower_bound(&[s(0), s(0)], &w), s(3));
    }

    /// The binding window is the tighter of the two: 3 per 1 s and 4 per 10 s, three orders
    /// without lag: calls at 0, 0, 0, then the 4th at 1 s, then the 10 s window allows the 5th
    /// and 6th only at 10 s.
    #[test]
    fn two_windows_combine() {
        let w = [window(3, 1), window(4, 10)];
        assert_eq!(true_floor(&[s(0); 3], &w), s(10));
        assert_eq!(lower_bound(&[s(0); 3], &w), s(10));
    }

    /// The limiter's margin widens every window: 2 per 10 s + 250 ms pushes the checks to 10.25 s.
    #[test]
    fn margin_widens_the_windows() {
        let w = widened(&[window(2, 10)], |_| Duration::from_millis(250));
        assert_eq!(true_floor(&[s(0), s(0)], &w), Duration::from_millis(10_250));
    }

    #[test]
    fn no_orders_no_time() {
        assert_eq!(true_floor(&[], &[window(1, 1)]), Duration::ZERO);
        assert_eq!(lower_bound(&[], &[window(1, 1)]), Duration::ZERO);
    }

    /// On many random small cases the floor is never below the lower bound, every schedule keeps
    /// every window and checks no order before its lag.
    #[test]
    fn schedules_are_feasible_and_above_the_lower_bound() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..300 {
            let n = 1 + next(12) as usize;
            let lags: Vec<Duration> = (0..n).map(|_| Duration::from_millis(next(20_000))).collect();
            let w = [window(1 + next(4) as u32, 1 + next(3)), window(3 + next(10) as u32, 5 + next(20))];
            for policy in [Policy::TokensFirst, Policy::ChecksFirst] {
                let sched = schedule(&lags, &w, policy);
                let mut all: Vec<Duration> = sched.tokens.iter().chain(&sched.checks).copied().collect();
                all.sort();
                for win in &w {
                    for (i, t) in all.iter().enumerate() {
                        let within = all[i..].iter().take_while(|u| **u < *t + win.per).count();
                        assert!(within <= win.requests as usize, "{win:?} overfilled at {t:?}: {all:?}");
                    }
                }
                for (i, lag) in lags.iter().enumerate() {
                    assert!(sched.checks[i] >= sched.tokens[i] + *lag, "order {i} checked before its lag");
                }
            }
            assert!(true_floor(&lags, &w) >= lower_bound(&lags, &w), "{lags:?} {w:?}");
        }
    }
}
