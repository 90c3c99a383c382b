//! CAA pre-flight: before a unit requests a token, the CAA records that apply to each of its
//! names (RFC 8659, through the propagation checker's resolvers) must allow DigiCert to issue;
//! when they do not, the unit fails at once with the record in the message, and no token (nor
//! DigiCert's rate limit) is spent on a certificate DigiCert would refuse.
//!
//! It decides only whether CAA forbids DigiCert; a lookup that fails says nothing (DigiCert does
//! its own check), and it never changes DNS.

use propagation::CaaSet;

/// The issuer domains DigiCert accepts in CAA for its certificates (DigiCert's CAA guide:
/// its own and its brands').
pub(super) const DIGICERT_ISSUERS: &[&str] = &[
    "digicert.com",
    "www.digicert.com",
    "digicert.ne.jp",
    "cybertrust.ne.jp",
    "symantec.com",
    "thawte.com",
    "geotrust.com",
    "rapidssl.com",
    "digitalcertvalidation.com",
];

/// Tags RFC 8659 and its extensions define; an unknown tag marked critical forbids issuance.
const KNOWN_TAGS: &[&str] = &["issue", "issuewild", "iodef", "issuemail", "issuevmc", "contactemail", "contactphone"];

/// Why `set` forbids DigiCert to issue for `name` (`*.` for a wildcard), naming the records; `None`
/// when it allows it.
pub(super) fn forbids(name: &str, set: &CaaSet) -> Option<String> {
    let show = |tags: &[&str]| {
        set.records
            .iter()
            .filter(|r| tags.is_empty() || tags.contains(&r.tag.as_str()))
            .map(|r| format!("{} CAA {} {} \"{}\"", set.owner, if r.critical { 128 } else { 0 }, r.tag, r.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(r) = set.records.iter().find(|r| r.critical && !KNOWN_TAGS.contains(&r.tag.as_str())) {
        return Some(format!(
            "CAA forbids issuance for {name}: {} CAA 128 {} \"{}\" is a critical property no CA may ignore",
            set.owner, r.tag, r.value
        ));
    }
    let wildcard = name.starts_with("*.");
    // For a wildcard, `issuewild` decides when present; otherwise (and for other names) `issue`.
    let tag = if wildcard && set.records.iter().any(|r| r.tag == "issuewild") { "issuewild" } else { "issue" };
    let relevant: Vec<&propagation::Caa> = set.records.iter().filter(|r| r.tag == tag).collect();
    if relevant.is_empty() {
        return None;
    }
    let allowed = relevant.iter().any(|r| {
        let issuer = r.value.split(';').next().unwrap_or("").trim().trim_end_matches('.').to_ascii_lowercase();
        DIGICERT_ISSUERS.contains(&issuer.as_str())
    });
    (!allowed).then(|| {
        format!(
            "CAA forbids DigiCert to issue for {name}: {} (add `{} CAA 0 {tag} \"digicert.com\"`, or set [certcentral] \
             caa_check = false if DigiCert's own CAA check sees other records)",
            show(&[tag]),
            set.owner
        )
    })
}

/// The first of `names` whose CAA forbids DigiCert, with the reason; lookups that fail are
/// skipped (and logged at WARN by the caller's span).
pub async fn check_names(checker: &propagation::Checker, names: &[String]) -> Option<String> {
    for name in names {
        let lookup = name.strip_prefix("*.").unwrap_or(name);
        match checker.caa(lookup).await {
            Ok(Some(set)) => {
                if let Some(reason) = forbids(name, &set) {
                    return Some(reason);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(domain = %name, error = %e, "CAA lookup failed; DigiCert will check CAA itself"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use propagation::Caa;

    use super::*;

    fn set(records: &[(bool, &str, &str)]) -> CaaSet {
        CaaSet {
            owner: "example.com".into(),
            records: records
                .iter()
                .map(|(critical, tag, value)| Caa { critical: *critical, tag: (*tag).into(), value: (*value).into() })
                .collect(),
        }
    }

    #[test]
    fn issue_and_issuewild_decide_for_their_names() {
        let le = set(&[(false, "issue", "letsencrypt.org")]);
        let reason = forbids("www.example.com", &le).expect("forbidden");
        assert!(reason.contains("example.com CAA 0 issue \"letsencrypt.org\""), "{reason}");
        assert!(forbids("*.example.com", &le).is_some(), "issue applies to wildcards without issuewild");
        let both = set(&[(false, "issue", "letsencrypt.org"), (false, "issuewild", "digicert.com; x=y")]);
        assert!(forbids("*.example.com", &both).is_none());
        assert!(forbids("example.com", &both).is_some());
        assert!(forbids("example.com", &set(&[(false, "issue", "DigiCert.com.")])).is_none());
        let nobody = set(&[(false, "issue", ";")]);
        assert!(forbids("example.com", &nobody).is_some(), "an empty issuer forbids every CA");
        assert!(forbids("example.com", &set(&[(false, "iodef", "mailto:a@example.com")])).is_none());
        let critical = forbids("example.com", &set(&[(true, "future", "x"), (false, "issue", "digicert.com")]));
        assert!(critical.is_some_and(|r| r.contains("critical")));
    }
}
