//! Checking servers: one round ([`check_once`]) and the adaptive polling loop ([`wait_visible`]).

use std::collections::HashMap;
use std::mem::discriminant;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Error, Expected, Inner, Mode, Progress, ServerStatus, Target, dns};

/// One address to ask: authoritative (RD=0, AA required) or a recursive resolver (RD=1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Server {
    name: String,
    addr: SocketAddr,
    recursive: bool,
}

fn servers(inner: &Inner, target: &Target) -> Vec<Server> {
    let authoritative = || {
        target
            .nameservers
            .iter()
            .flat_map(|ns| ns.addrs.iter().map(|a| Server { name: ns.name.clone(), addr: *a, recursive: false }))
    };
    let resolvers = || inner.resolvers.iter().map(|a| Server { name: "resolver".into(), addr: *a, recursive: true });
    match inner.config.mode {
        Mode::Authoritative => authoritative().collect(),
        Mode::Resolvers => resolvers().collect(),
        Mode::Both => authoritative().chain(resolvers()).collect(),
    }
}

fn follows(expected: &Expected) -> bool {
    matches!(expected, Expected::Txt(_))
}

/// Asks every server in `todo` once, concurrently; returns each one's status and the number of
/// queries sent.
async fn ask(
    inner: &Arc<Inner>,
    owner: &Name,
    expected: &Expected,
    todo: Vec<Server>,
) -> (HashMap<Server, ServerStatus>, u64) {
    let rtype = match expected {
        Expected::Txt(_) => RecordType::TXT,
        Expected::Cname(_) => RecordType::CNAME,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for server in todo {
        let (inner, owner, expected) = (Arc::clone(inner), owner.clone(), expected.clone());
        tasks.spawn(async move {
            let sent = inner.query(server.addr, &owner, rtype, server.recursive).await;
            let status = match sent.result {
                Ok(m) => dns::judge(&owner, &expected, &m, !server.recursive),
                Err(e) => ServerStatus::Failing(e),
            };
            (server, status, sent.count)
        });
    }
    let mut out = HashMap::new();
    let mut count = 0;
    while let Some(joined) = tasks.join_next().await {
        // A panicking query task is a bug; a cancelled one cannot happen (the set is ours).
        let (server, status, n) = joined.expect("query task panicked");
        count += n;
        out.insert(server, status);
    }
    (out, count)
}

fn progress(target: Target, all: &[Server], statuses: &HashMap<Server, ServerStatus>, queries: u64) -> Progress {
    Progress {
        servers: all
            .iter()
            .map(|s| (s.name.clone(), s.addr, statuses.get(s).cloned().unwrap_or(ServerStatus::Unknown)))
            .collect(),
        target,
        queries,
    }
}

/// See [`crate::Checker::check_once`].
pub(crate) async fn check_once(inner: &Arc<Inner>, name: &str, expected: &Expected) -> Result<Progress, Error> {
    let target = crate::discovery::target(inner, name, follows(expected)).await?;
    let owner =
        dns::parse_name(&target.owner).map_err(|message| Error::Resolve { name: target.owner.clone(), message })?;
    let all = servers(inner, &target);
    let (statuses, queries) = ask(inner, &owner, expected, all.clone()).await;
    Ok(progress(target, &all, &statuses, queries))
}

/// See [`crate::Checker::wait_visible`].
pub(crate) async fn wait_visible(
    inner: &Arc<Inner>,
    name: &str,
    expected: &Expected,
    deadline: Instant,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Progress, Error> {
    /// How long after the last change the lagging servers are polled every `poll_min`.
    const PARTIAL_FAST: std::time::Duration = std::time::Duration::from_secs(30);
    let (poll_min, poll_max) = (inner.config.poll_min, inner.config.poll_max);
    let started = Instant::now();
    let mut interval = poll_min;
    let mut last_change = Instant::now();
    let mut statuses: HashMap<Server, ServerStatus> = HashMap::new();
    let mut queries = 0u64;
    loop {
        let found = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Error::Cancelled),
            t = crate::discovery::target(inner, name, follows(expected)) => t,
        };
        let changed = match found {
            Ok(target) => {
                let owner = dns::parse_name(&target.owner)
                    .map_err(|message| Error::Resolve { name: target.owner.clone(), message })?;
                let all = servers(inner, &target);
                // A server that served the value keeps serving it (see the crate docs).
                let todo: Vec<Server> =
                    all.iter().filter(|s| statuses.get(*s) != Some(&ServerStatus::Serving)).cloned().collect();
                let (fresh, n) = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(Error::Cancelled),
                    r = ask(inner, &owner, expected, todo) => r,
                };
                queries += n;
                let mut changed = false;
                for (server, status) in fresh {
                    let before = statuses.get(&server).map(discriminant);
                    changed |= before != Some(discriminant(&status));
                    if let ServerStatus::Failing(why) = &status {
                        tracing::debug!(name, server = %server.name, addr = %server.addr, error = %why, "server failing");
                    }
                    statuses.insert(server, status);
                }
                let p = progress(target, &all, &statuses, queries);
                on_progress(&p);
                if p.all_serving() {
                    tracing::debug!(name, queries, elapsed_ms = started.elapsed().as_millis() as u64, "record visible");
                    return Ok(p);
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        name: name.to_string(),
                        waited: started.elapsed(),
                        lagging: p.lagging(),
                    });
                }
                changed
            }
            // No zone (every resolver REFUSED or no SOA up to the root) may be a delegation
            // that is not in place yet: retried like resolver trouble, but only until the
            // deadline, which then ends the wait as a timeout naming the cause, so a caller
            // that gives up on timeouts gives up on this too.
            Err(e @ (Error::Resolve { .. } | Error::NoNameServers { .. } | Error::NoZone { .. })) => {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        name: name.to_string(),
                        waited: started.elapsed(),
                        lagging: vec![e.to_string()],
                    });
                }
                tracing::warn!(name, error = %e, "zone discovery failed, retrying");
                false
            }
            Err(e) => return Err(e),
        };
        // Once some servers serve the value, the others usually follow within seconds (NOTIFY
        // and a zone transfer): for PARTIAL_FAST after the last change the lagging ones are
        // polled every poll_min, so the moment the last one serves is seen at once (only the
        // lagging servers are asked); a server that lags longer is polled at most 4 x poll_min
        // apart.
        if changed {
            last_change = Instant::now();
        }
        let some_serving = statuses.values().any(|s| *s == ServerStatus::Serving);
        let cap = match some_serving {
            true if last_change.elapsed() < PARTIAL_FAST => poll_min,
            true => poll_max.min(poll_min.saturating_mul(4)).max(poll_min),
            false => poll_max,
        };
        interval = if changed { poll_min } else { interval.mul_f64(1.5).min(cap) };
        let wake = (Instant::now() + interval).min(deadline);
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Error::Cancelled),
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
