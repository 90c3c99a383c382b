//! Building queries and reading answers: pure functions over hickory-proto messages.

use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::{Expected, ServerStatus};

/// UDP payload size advertised with EDNS(0) (DNS flag day 2020); larger answers come back
/// truncated and are fetched again over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// Parses a name given by a user (trailing dot optional, IDNs allowed) into an absolute name.
pub(crate) fn parse_name(name: &str) -> Result<Name, String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty name".into());
    }
    Name::from_utf8(format!("{trimmed}.")).map_err(|e| format!("not a valid DNS name: {e}"))
}

/// `example.com` (lowercase, no trailing dot; `.` for the root).
pub(crate) fn show(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    name.to_lowercase().to_ascii().trim_end_matches('.').to_string()
}

pub(crate) fn same(a: &Name, b: &Name) -> bool {
    show(a) == show(b)
}

/// Whether `name` is `zone` or below it.
pub(crate) fn within(name: &Name, zone: &Name) -> bool {
    zone.to_lowercase().zone_of(&name.to_lowercase())
}

pub(crate) fn build_query(name: &Name, rtype: RecordType, recursion_desired: bool, edns: bool) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = recursion_desired;
    msg.add_query(Query::query(name.clone(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(e);
    }
    msg
}

/// A short name for an rcode, as operators know them from `dig`.
pub(crate) fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        other => format!("rcode {}", u16::from(other)),
    }
}

/// What an SOA query for a candidate name says about where the zone is.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// The name is a CNAME to `target`.
    Alias { target: Name, ttl: u32 },
    /// The name is a zone apex; RFC 2308 section 5: the negative TTL is the lesser of the
    /// SOA's minimum and its own TTL.
    Apex { negative_ttl: u32 },
    /// NXDOMAIN/NODATA whose authority section names the zone by its SOA. (Its TTL says
    /// nothing: BIND sends 0 there in answers to SOA queries.)
    Negative { zone: Name },
    /// An authoritative-only server delegating `zone` elsewhere.
    Referral { zone: Name },
    /// Nothing usable here (REFUSED, an answer without SOA): try the parent.
    Nothing(String),
}

/// Reads the answer to `SOA? name`.
pub(crate) fn read_probe(name: &Name, resp: &Message) -> Probe {
    let rcode = resp.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return Probe::Nothing(rcode_name(rcode));
    }
    for r in &resp.answers {
        if !same(&r.name, name) {
            continue;
        }
        match &r.data {
            RData::CNAME(c) => {
                return Probe::Alias { target: c.0.clone(), ttl: r.ttl };
            }
            RData::SOA(soa) => {
                return Probe::Apex { negative_ttl: soa.minimum.min(r.ttl) };
            }
            _ => {}
        }
    }
    if resp.answers.is_empty() {
        for r in &resp.authorities {
            if matches!(r.data, RData::SOA(_)) && within(name, &r.name) {
                return Probe::Negative { zone: r.name.clone() };
            }
        }
        if !resp.metadata.authoritative {
            for r in &resp.authorities {
                if matches!(r.data, RData::NS(_)) && within(name, &r.name) {
                    return Probe::Referral { zone: r.name.clone() };
                }
            }
        }
    }
    Probe::Nothing(format!("{} without SOA", rcode_name(rcode)))
}

/// NS names of `zone` in the answer (or, for a referral, the authority section), with the TTL.
pub(crate) fn read_ns(zone: &Name, resp: &Message) -> (Vec<Name>, u32) {
    let mut names = Vec::new();
    let mut ttl = u32::MAX;
    for r in resp.answers.iter().chain(&resp.authorities) {
        if let RData::NS(ns) = &r.data
            && same(&r.name, zone)
            && !names.iter().any(|n| same(n, &ns.0))
        {
            names.push(ns.0.clone());
            ttl = ttl.min(r.ttl);
        }
    }
    (names, ttl)
}

/// A and AAAA addresses in the answer (after any CNAME the resolver followed), with the TTL.
pub(crate) fn read_addrs(resp: &Message) -> (Vec<std::net::IpAddr>, u32) {
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for r in &resp.answers {
        let ip = match &r.data {
            RData::A(a) => std::net::IpAddr::V4(a.0),
            RData::AAAA(a) => std::net::IpAddr::V6(a.0),
            _ => continue,
        };
        addrs.push(ip);
        ttl = ttl.min(r.ttl);
    }
    (addrs, ttl)
}

/// The SOA of `zone` in an answer: `(negative TTL, record TTL)`.
pub(crate) fn read_soa(zone: &Name, resp: &Message) -> Option<(u32, u32)> {
    resp.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if same(&r.name, zone) => Some((soa.minimum.min(r.ttl), r.ttl)),
        _ => None,
    })
}

/// Whether `resp` (to a query for `owner`) serves `expected`. `authoritative` checks demand the
/// AA bit: a referral or a lame server does not count as "not yet" but as failing.
pub(crate) fn judge(owner: &Name, expected: &Expected, resp: &Message, authoritative: bool) -> ServerStatus {
    let rcode = resp.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return ServerStatus::Failing(format!("answered {}", rcode_name(rcode)));
    }
    let found = resp.answers.iter().filter(|r| same(&r.name, owner)).any(|r| match (&r.data, expected) {
        (RData::TXT(txt), Expected::Txt(value)) => {
            let joined: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            joined == value.as_bytes()
        }
        (RData::CNAME(c), Expected::Cname(target)) => show(&c.0) == target.trim_end_matches('.').to_ascii_lowercase(),
        _ => false,
    });
    if found {
        return ServerStatus::Serving;
    }
    if authoritative && !resp.metadata.authoritative {
        return ServerStatus::Failing("not authoritative for the zone (referral or lame delegation)".into());
    }
    ServerStatus::NotYet
}

/// Clamps a cache lifetime taken from TTLs: at least 5 s (no thrashing on TTL 0), at most an hour.
pub(crate) fn cache_for(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl.clamp(5, 3600)))
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::rdata::{CNAME, NS, TXT};
    use hickory_proto::rr::{RData, Record};

    use super::*;

    fn answer(records: Vec<Record>, aa: bool) -> Message {
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.authoritative = aa;
        for r in records {
            m.add_answer(r);
        }
        m
    }

    fn n(s: &str) -> Name {
        parse_name(s).expect("name")
    }

    /// A TXT record split into several strings matches the joined value; a record that only
    /// contains the value does not.
    #[test]
    fn txt_strings_are_joined() {
        let owner = n("_dnsauth.example.com");
        let split = Record::from_rdata(owner.clone(), 60, RData::TXT(TXT::new(vec!["abc".into(), "def".into()])));
        let m = answer(vec![split], true);
        assert_eq!(judge(&owner, &Expected::Txt("abcdef".into()), &m, true), ServerStatus::Serving);
        assert_eq!(judge(&owner, &Expected::Txt("abc".into()), &m, true), ServerStatus::NotYet);
        // The same value at another owner does not count.
        assert_eq!(judge(&n("other.example.com"), &Expected::Txt("abcdef".into()), &m, true), ServerStatus::NotYet);
    }

    /// CNAME targets compare without case and trailing dot.
    #[test]
    fn cname_target_comparison() {
        let owner = n("_dnsauth.Example.com.");
        let r = Record::from_rdata(owner.clone(), 60, RData::CNAME(CNAME(n("ABC.dcv.digicert.com"))));
        let m = answer(vec![r], true);
        assert_eq!(judge(&owner, &Expected::Cname("abc.dcv.digicert.com.".into()), &m, true), ServerStatus::Serving);
        assert_eq!(judge(&owner, &Expected::Cname("abd.dcv.digicert.com".into()), &m, true), ServerStatus::NotYet);
    }

    /// A non-authoritative empty answer from a name server (referral, lame) is a failure.
    #[test]
    fn referral_is_failing_for_authoritative_checks() {
        let owner = n("_dnsauth.sub.example.com");
        let mut m = answer(vec![], false);
        m.add_authority(Record::from_rdata(n("sub.example.com"), 60, RData::NS(NS(n("ns.elsewhere.net")))));
        assert!(matches!(judge(&owner, &Expected::Txt("v".into()), &m, true), ServerStatus::Failing(_)));
        assert_eq!(judge(&owner, &Expected::Txt("v".into()), &m, false), ServerStatus::NotYet);
        assert!(matches!(read_probe(&owner, &m), Probe::Referral { zone } if show(&zone) == "sub.example.com"));
    }

    #[test]
    fn names() {
        assert_eq!(show(&n("WWW.Example.COM.")), "www.example.com");
        assert_eq!(show(&n("bücher.example")), "xn--bcher-kva.example");
        assert!(parse_name("").is_err());
        assert!(within(&n("a.b.example.com"), &n("Example.com")));
        assert!(!within(&n("example.com"), &n("a.example.com")));
    }
}
