//! Checking servers: which servers to ask, one round of questions ([`check_once`]) and the
//! [`Progress`] a round shows. Waiting (polling until every server serves) is `poller`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};

use crate::{Error, Expected, Inner, Mode, Progress, ServerStatus, Target, dns};

/// One address to ask: authoritative (RD=0, AA required) or a recursive resolver (RD=1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) recursive: bool,
}

pub(crate) fn servers(inner: &Inner, target: &Target) -> Vec<Server> {
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

/// Whether CNAMEs at the name are followed to find where the value must be served.
pub(crate) fn follows(expected: &Expected) -> bool {
    matches!(expected, Expected::Txt(_))
}

/// The type of the record that serves `expected`.
pub(crate) fn record_type(expected: &Expected) -> RecordType {
    match expected {
        Expected::Txt(_) => RecordType::TXT,
        Expected::Cname(_) => RecordType::CNAME,
    }
}

/// Asks `server` once whether it serves `expected` at `owner`; returns its status and the number
/// of queries sent. `slot_taken`: the caller took the first query's slot of the cap already.
pub(crate) async fn ask_one(
    inner: &Inner,
    server: &Server,
    owner: &Name,
    expected: &Expected,
    slot_taken: bool,
) -> (ServerStatus, u64) {
    let sent = inner.query_in_slot(server.addr, owner, record_type(expected), server.recursive, slot_taken).await;
    let status = match sent.result {
        Ok(m) => dns::judge(owner, expected, &m, !server.recursive),
        Err(e) => ServerStatus::Failing(e),
    };
    (status, sent.count)
}

/// Asks every server in `todo` once, concurrently; returns each one's status and the number of
/// queries sent.
async fn ask(
    inner: &Arc<Inner>,
    owner: &Name,
    expected: &Expected,
    todo: Vec<Server>,
) -> (HashMap<Server, ServerStatus>, u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for server in todo {
        let (inner, owner, expected) = (Arc::clone(inner), owner.clone(), expected.clone());
        tasks.spawn(async move {
            let (status, count) = ask_one(&inner, &server, &owner, &expected, false).await;
            (server, status, count)
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

/// The view of a wait after a round: `statuses` of the servers asked so far.
pub(crate) fn progress(
    target: Target,
    all: &[Server],
    statuses: &HashMap<Server, ServerStatus>,
    queries: u64,
) -> Progress {
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
