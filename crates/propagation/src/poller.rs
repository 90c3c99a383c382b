//! The shared poller: one task polls every record being waited for ([`crate::Checker::watch`]).
//!
//! A wait is an entry in a map and, between polling rounds, in one timer queue (next poll time,
//! wait): no task, no future and no resolver per record. The task starts the rounds that are due,
//! sends their queries only while the process-wide query cap has room (a backlog costs a queue
//! entry, not a sleeping future), runs each query as a short task, and completes a wait's
//! [`Watch`] when every server serves the value, on an error that will not pass, or at its
//! deadline. Discovery is the cached [`crate::discovery::target`]; a cache miss runs as one task,
//! [`MAX_DISCOVERIES`] at most at once.
//!
//! The schedule is the one documented on [`crate::Checker::wait_visible`]. The poller knows
//! names, values, servers and time; it must not decide anything about what a record is for.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::mem::discriminant;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::poll::{Server, ask_one, follows, progress, servers};
use crate::{Error, Expected, Inner, Progress, ServerStatus, Target, dns};

/// How long after the last change the lagging servers are polled every `poll_min`.
const PARTIAL_FAST: Duration = Duration::from_secs(30);

/// Discoveries (cache misses) in flight at once; the other waits that need one queue for it.
/// Every name of a zone misses at once when the zone's cached data expires: 10,000 tasks, each
/// holding its query while it waits for the query cap (which admits them one by one anyway),
/// cost megabytes; a queue entry costs a few bytes. At the default cap (3,000 queries/s) this
/// many discoveries are about a tenth of a second of queries.
const MAX_DISCOVERIES: usize = 256;

/// How often, at most, a wait for a lagging name server says so at INFO: a minute, or four of
/// the longest poll intervals when polls are faster (tests).
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The outcome of a wait: resolves when every required server serves the value, the deadline
/// passed ([`Error::Timeout`]) or the wait failed. Dropping it cancels the wait (the poller
/// forgets it at its next step).
#[derive(Debug)]
pub struct Watch {
    done: oneshot::Receiver<Result<Progress, Error>>,
}

impl Future for Watch {
    type Output = Result<Progress, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The poller drops a wait's sender only when every checker is gone.
        Pin::new(&mut self.done).poll(cx).map(|r| r.unwrap_or(Err(Error::Cancelled)))
    }
}

/// A wait as the caller hands it to the poller.
#[derive(Debug)]
pub(crate) struct Request {
    name: String,
    expected: Expected,
    deadline: Instant,
    done: oneshot::Sender<Result<Progress, Error>>,
    /// Every round's view, for callers that want it ([`crate::Checker::wait_visible`]).
    progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The caller's span: the poller logs about the wait inside it.
    span: tracing::Span,
}

/// Registers a wait with the checker's poller (started on first use) and returns its outcome.
pub(crate) fn watch(
    inner: &Arc<Inner>,
    name: &str,
    expected: &Expected,
    deadline: Instant,
    progress: Option<mpsc::UnboundedSender<Progress>>,
) -> Watch {
    let (done, rx) = oneshot::channel();
    let request = Request {
        name: name.to_string(),
        expected: expected.clone(),
        deadline,
        done,
        progress,
        span: tracing::Span::current(),
    };
    let mut poller = inner.poller.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Started on first use, and again if it ended (a bug made it panic: its waits then resolved
    // as cancelled, which callers retry).
    let tx = match poller.as_ref() {
        Some(tx) if !tx.is_closed() => tx,
        _ => {
            let (tx, requests) = mpsc::unbounded_channel();
            tokio::spawn(run(Arc::downgrade(inner), requests));
            poller.insert(tx)
        }
    };
    // Refused only when the runtime is shutting down: the dropped sender then resolves the
    // watch as cancelled.
    let _ = tx.send(request);
    Watch { done: rx }
}

type WaitId = u64;

/// One record being waited for.
struct Wait {
    request: Request,
    started: Instant,
    interval: Duration,
    last_change: Instant,
    queries: u64,
    /// The last answer of every server asked so far (a server that served is not asked again).
    statuses: HashMap<Server, ServerStatus>,
    /// The round in flight, if any (boxed: most waits are between rounds, and the map holds
    /// every wait).
    round: Option<Box<Round>>,
    last_lagging: usize,
    last_report: Instant,
}

/// One round of questions: where the record lives now and how many answers are still out.
struct Round {
    target: Arc<Target>,
    owner: Name,
    all: Vec<Server>,
    outstanding: usize,
    changed: bool,
}

/// What a short task of the poller reports.
enum Done {
    /// Discovery of a wait's name (a cache miss).
    Target(WaitId, Result<Target, Error>),
    /// One server's answer: `all[index]` of the wait's round.
    Answer(WaitId, usize, ServerStatus, u64),
}

#[derive(Default)]
struct Poller {
    /// Boxed: the table keeps its largest size, which then costs a pointer per slot, not a wait.
    waits: HashMap<WaitId, Box<Wait>>,
    /// Next round of each wait between rounds, earliest first.
    timers: BTreeSet<(Instant, WaitId)>,
    /// Queries of started rounds waiting for room under the query cap: (wait, server index).
    ready: VecDeque<(WaitId, usize)>,
    /// Waits whose round needs a discovery, waiting for one of [`MAX_DISCOVERIES`].
    undiscovered: VecDeque<WaitId>,
    /// Discovery tasks in flight.
    discovering: usize,
    tasks: JoinSet<Done>,
    next_id: WaitId,
}

/// The poller task: runs until every [`crate::Checker`] clone is dropped.
async fn run(inner: Weak<Inner>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut poller = Poller::default();
    loop {
        let cap_frees_at = {
            // Strong only for this step: dropping the last checker closes `requests`.
            let Some(inner) = inner.upgrade() else { return };
            poller.start_due(&inner);
            poller.discover(&inner);
            poller.send_ready(&inner)
        };
        let wake = poller.timers.first().map(|(at, _)| *at).into_iter().chain(cap_frees_at).min();
        tokio::select! {
            request = requests.recv() => match (request, inner.upgrade()) {
                (Some(request), Some(inner)) => poller.add(request, inner.config.poll_min),
                _ => return,
            },
            Some(done) = poller.tasks.join_next(), if !poller.tasks.is_empty() => {
                // A task panics only on a bug: end the poller with it (its waits resolve as
                // cancelled; the next watch starts a new poller). Tasks are never aborted.
                let done = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                let Some(inner) = inner.upgrade() else { return };
                match done {
                    Done::Target(id, found) => {
                        poller.discovering -= 1;
                        poller.on_target(&inner, id, found.map(Arc::new));
                    }
                    Done::Answer(id, index, status, count) => poller.on_answer(&inner, id, index, status, count),
                }
            }
            () = sleep_until(wake), if wake.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Poller {
    fn add(&mut self, request: Request, poll_min: Duration) {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.waits.insert(
            id,
            Box::new(Wait {
                request,
                started: now,
                interval: poll_min,
                last_change: now,
                queries: 0,
                statuses: HashMap::new(),
                round: None,
                last_lagging: usize::MAX,
                last_report: now,
            }),
        );
        self.timers.insert((now, id));
    }

    /// Starts the round of every wait whose time has come.
    fn start_due(&mut self, inner: &Arc<Inner>) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(wait) = self.waits.get(&id) else { continue };
            if wait.request.done.is_closed() {
                self.waits.remove(&id);
                continue;
            }
            let (name, follow) = (&wait.request.name, follows(&wait.request.expected));
            match crate::discovery::cached_target(inner, name, follow) {
                Some(target) => self.on_target(inner, id, Ok(target)),
                None => self.undiscovered.push_back(id),
            }
        }
    }

    /// Starts the queued discoveries while fewer than [`MAX_DISCOVERIES`] run, earliest first.
    fn discover(&mut self, inner: &Arc<Inner>) {
        while self.discovering < MAX_DISCOVERIES {
            let Some(id) = self.undiscovered.pop_front() else { return };
            let Some(wait) = self.waits.get(&id) else { continue };
            if wait.request.done.is_closed() {
                self.waits.remove(&id);
                continue;
            }
            let (inner, name, follow) = (Arc::clone(inner), wait.request.name.clone(), follows(&wait.request.expected));
            self.discovering += 1;
            self.tasks.spawn(async move { Done::Target(id, crate::discovery::target(&inner, &name, follow).await) });
        }
    }

    /// Sends queued queries while the cap has room; returns when it frees next if some wait.
    fn send_ready(&mut self, inner: &Arc<Inner>) -> Option<Instant> {
        while let Some(&(id, index)) = self.ready.front() {
            let Some(wait) = self.waits.get(&id) else {
                self.ready.pop_front();
                continue;
            };
            if wait.request.done.is_closed() {
                self.waits.remove(&id);
                self.ready.pop_front();
                continue;
            }
            if let Err(frees_at) = inner.pacer.try_acquire() {
                return Some(frees_at);
            }
            self.ready.pop_front();
            let round = wait.round.as_ref().expect("a queued query belongs to a round");
            let (inner, server, owner, expected) =
                (Arc::clone(inner), round.all[index].clone(), round.owner.clone(), wait.request.expected.clone());
            self.tasks.spawn(async move {
                let (status, count) = ask_one(&inner, &server, &owner, &expected, true).await;
                Done::Answer(id, index, status, count)
            });
        }
        None
    }

    /// Discovery answered for wait `id`: queue the round's queries, or retry, or end the wait.
    fn on_target(&mut self, inner: &Arc<Inner>, id: WaitId, found: Result<Arc<Target>, Error>) {
        let Some(wait) = self.waits.get_mut(&id) else { return };
        let name = wait.request.name.as_str();
        match found {
            Ok(target) => {
                let owner = match dns::parse_name(&target.owner) {
                    Ok(owner) => owner,
                    Err(message) => {
                        return self.finish(id, Err(Error::Resolve { name: target.owner.clone(), message }));
                    }
                };
                let all = servers(inner, &target);
                // A server that served the value keeps serving it (see the crate docs).
                let todo: Vec<usize> =
                    (0..all.len()).filter(|i| wait.statuses.get(&all[*i]) != Some(&ServerStatus::Serving)).collect();
                wait.round = Some(Box::new(Round { target, owner, all, outstanding: todo.len(), changed: false }));
                if todo.is_empty() {
                    return self.end_round(inner, id);
                }
                self.ready.extend(todo.into_iter().map(|i| (id, i)));
            }
            // No zone (every resolver REFUSED or no SOA up to the root) may be a delegation that
            // is not in place yet: retried like resolver trouble, but only until the deadline,
            // which then ends the wait as a timeout naming the cause, so a caller that gives up
            // on timeouts gives up on this too.
            Err(e @ (Error::Resolve { .. } | Error::NoNameServers { .. } | Error::NoZone { .. })) => {
                if Instant::now() >= wait.request.deadline {
                    let waited = wait.started.elapsed();
                    let name = name.to_string();
                    return self.finish(id, Err(Error::Timeout { name, waited, lagging: vec![e.to_string()] }));
                }
                wait.request.span.in_scope(|| tracing::warn!(name, error = %e, "zone discovery failed, retrying"));
                self.schedule(inner, id, false);
            }
            Err(e) => self.finish(id, Err(e)),
        }
    }

    /// One server answered for wait `id`.
    fn on_answer(&mut self, inner: &Arc<Inner>, id: WaitId, index: usize, status: ServerStatus, count: u64) {
        let Some(wait) = self.waits.get_mut(&id) else { return };
        let Some(round) = wait.round.as_mut() else { return };
        wait.queries += count;
        round.outstanding -= 1;
        let server = round.all[index].clone();
        if let ServerStatus::Failing(why) = &status {
            let name = wait.request.name.as_str();
            wait.request.span.in_scope(|| {
                tracing::debug!(name, server = %server.name, addr = %server.addr, error = %why, "server failing");
            });
        }
        let before = wait.statuses.insert(server, status.clone());
        round.changed |= before.as_ref().map(discriminant) != Some(discriminant(&status));
        if round.outstanding == 0 {
            self.end_round(inner, id);
        }
    }

    /// Every answer of wait `id`'s round is in.
    fn end_round(&mut self, inner: &Arc<Inner>, id: WaitId) {
        let Some(wait) = self.waits.get_mut(&id) else { return };
        let Some(round) = wait.round.take() else { return };
        let Round { target, all, changed, .. } = *round;
        let p = progress(Arc::unwrap_or_clone(target), &all, &wait.statuses, wait.queries);
        self.conclude(inner, id, p, changed);
    }

    /// A round ended with `p`: report it, end the wait when every server serves or the deadline
    /// passed, schedule the next round otherwise.
    fn conclude(&mut self, inner: &Inner, id: WaitId, p: Progress, changed: bool) {
        let Some(wait) = self.waits.get_mut(&id) else { return };
        if wait.request.done.is_closed() {
            self.waits.remove(&id);
            return;
        }
        if let Some(tx) = &wait.request.progress {
            let _ = tx.send(p.clone());
        }
        wait.report(&p, REPORT_EVERY.min(inner.config.poll_max * 4));
        if p.all_serving() {
            let (name, queries) = (wait.request.name.as_str(), wait.queries);
            let elapsed_ms = wait.started.elapsed().as_millis() as u64;
            wait.request.span.in_scope(|| tracing::debug!(name, queries, elapsed_ms, "record visible"));
            return self.finish(id, Ok(p));
        }
        if Instant::now() >= wait.request.deadline {
            let error = Error::Timeout {
                name: wait.request.name.clone(),
                waited: wait.started.elapsed(),
                lagging: p.lagging(),
            };
            return self.finish(id, Err(error));
        }
        self.schedule(inner, id, changed);
    }

    /// Puts wait `id`'s next round in the timer queue.
    ///
    /// Once some servers serve the value, the others usually follow within seconds (NOTIFY and a
    /// zone transfer): for PARTIAL_FAST after the last change the lagging ones are polled every
    /// poll_min, so the moment the last one serves is seen at once (only the lagging servers are
    /// asked); a server that lags longer is polled at most 4 x poll_min apart.
    fn schedule(&mut self, inner: &Inner, id: WaitId, changed: bool) {
        let Some(wait) = self.waits.get_mut(&id) else { return };
        let (poll_min, poll_max) = (inner.config.poll_min, inner.config.poll_max);
        let now = Instant::now();
        if changed {
            wait.last_change = now;
        }
        let some_serving = wait.statuses.values().any(|s| *s == ServerStatus::Serving);
        let cap = match some_serving {
            true if wait.last_change.elapsed() < PARTIAL_FAST => poll_min,
            true => poll_max.min(poll_min.saturating_mul(4)).max(poll_min),
            false => poll_max,
        };
        wait.interval = if changed { poll_min } else { wait.interval.mul_f64(1.5).min(cap) };
        let wake = (now + wait.interval).min(wait.request.deadline);
        self.timers.insert((wake, id));
    }

    fn finish(&mut self, id: WaitId, result: Result<Progress, Error>) {
        if let Some(wait) = self.waits.remove(&id) {
            let _ = wait.request.done.send(result);
        }
    }
}

impl Wait {
    /// Logs, in the caller's span, when the number of lagging servers changes (DEBUG) and, no
    /// more than every `every` while a server lags, which ones (INFO).
    fn report(&mut self, p: &Progress, every: Duration) {
        let lagging = p.servers.iter().filter(|(_, _, s)| *s != ServerStatus::Serving).count();
        let record = self.request.name.as_str();
        let _span = self.request.span.enter();
        if lagging != self.last_lagging {
            self.last_lagging = lagging;
            tracing::debug!(record, lagging = ?p.lagging(), "propagation progress");
        }
        // No silence while a name server lags: one line a minute naming the laggards.
        if lagging > 0 && self.last_report.elapsed() >= every {
            self.last_report = Instant::now();
            tracing::info!(record, lagging = %p.lagging().join(", "), "still waiting for propagation");
        }
    }
}
