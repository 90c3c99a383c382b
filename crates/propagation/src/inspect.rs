//! A one-time look at a record name for `dcvd doctor`: what each authoritative server serves
//! there now, and whether the zone is signed and validates through the configured resolvers.
//!
//! It asks each server once and never waits for a value (waiting is `poll`'s job).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::dns::{self, parse_name, rcode_name, same, show};
use crate::transport::Protocol;
use crate::{Error, Inner, Target};

/// What one authoritative server serves at the record name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAnswer {
    /// The name server's name.
    pub server: String,
    /// The address asked.
    pub addr: SocketAddr,
    /// The records it serves there (`TXT "value"`, `CNAME target`; empty: nothing), or why it
    /// gave no usable answer.
    pub answer: Result<Vec<String>, String>,
}

/// Whether the zone is signed, and what a validating resolver makes of the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dnssec {
    /// The zone apex has no DNSKEY: nothing to validate.
    Unsigned,
    /// Signed, and a resolver validated the answer (AD bit).
    Validated,
    /// Signed, but the resolvers did not set the AD bit (they do not validate): DigiCert's do.
    NotValidated,
    /// Signed, and the validating lookup failed (SERVFAIL): DigiCert's resolvers fail too.
    Bogus(String),
}

/// What [`crate::Checker::inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The record name, the zone it lives in (after CNAMEs) and the zone's name servers.
    pub target: Target,
    /// Every address of every authoritative name server, with what it serves.
    pub servers: Vec<ServerAnswer>,
    /// The zone's DNSSEC state.
    pub dnssec: Dnssec,
}

/// See [`crate::Checker::inspect`].
pub(crate) async fn inspect(inner: &Arc<Inner>, name: &str) -> Result<Inspection, Error> {
    let target = crate::discovery::target(inner, name, true).await?;
    let owner = parse_name(&target.owner).map_err(|message| Error::Resolve { name: target.owner.clone(), message })?;
    let zone = parse_name(&target.zone).map_err(|message| Error::Resolve { name: target.zone.clone(), message })?;
    let mut servers = Vec::new();
    let mut signed = None;
    for ns in &target.nameservers {
        for addr in &ns.addrs {
            let answer =
                inner.query(*addr, &owner, RecordType::TXT, false).await.result.and_then(|m| served(&owner, &m));
            if signed.is_none() && answer.is_ok() {
                // The first server that answers says whether the apex has keys.
                let keys = inner.query(*addr, &zone, RecordType::DNSKEY, false).await.result;
                signed = keys.ok().map(|m| m.answers.iter().any(|r| r.record_type() == RecordType::DNSKEY));
            }
            servers.push(ServerAnswer { server: ns.name.clone(), addr: *addr, answer });
        }
    }
    let dnssec = match signed {
        Some(true) => validating_lookup(inner, &owner).await,
        Some(false) | None => Dnssec::Unsigned,
    };
    Ok(Inspection { target, servers, dnssec })
}

/// The TXT and CNAME records at `owner` in an authoritative answer.
fn served(owner: &Name, resp: &Message) -> Result<Vec<String>, String> {
    let rcode = resp.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return Err(format!("answered {}", rcode_name(rcode)));
    }
    if !resp.metadata.authoritative {
        return Err("not authoritative for the zone (referral or lame delegation)".into());
    }
    Ok(resp
        .answers
        .iter()
        .filter(|r| same(&r.name, owner))
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => {
                let joined: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                Some(format!("TXT \"{}\"", String::from_utf8_lossy(&joined)))
            }
            RData::CNAME(c) => Some(format!("CNAME {}", show(&c.0))),
            _ => None,
        })
        .collect())
}

/// Asks the configured resolvers for the TXT at `owner` with DNSSEC OK and AD set: AD in the
/// answer means validated, SERVFAIL means the validation failed.
async fn validating_lookup(inner: &Arc<Inner>, owner: &Name) -> Dnssec {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.metadata.authentic_data = true;
    query.add_query(Query::query(owner.clone(), RecordType::TXT));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    query.set_edns(edns);
    for resolver in &inner.resolvers {
        match inner.send(*resolver, &query, Protocol::Udp, false).await {
            Ok(m) if m.metadata.response_code == ResponseCode::ServFail => {
                return Dnssec::Bogus(format!(
                    "resolver {resolver} answers SERVFAIL for {} with DNSSEC validation",
                    dns::show(owner)
                ));
            }
            Ok(m) if m.metadata.authentic_data => return Dnssec::Validated,
            Ok(_) => return Dnssec::NotValidated,
            Err(_) => continue,
        }
    }
    Dnssec::NotValidated
}
