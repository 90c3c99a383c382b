//! Which DNS records a unit needs: DigiCert's record formats, applied to a unit's names.
//!
//! - `dns-txt-token`: TXT `_dnsauth.<domain>` (or `<domain>` with `txt_name = "apex"`) holding
//!   the random value.
//! - `dns-cname-token`: CNAME `_dnsauth.<domain>` -> `<value>.<verification_value>` (DigiCert's
//!   preferred form), or with `cname_name = "token"` the older `<value>.<domain>` ->
//!   `<verification_value>`.
//!
//! Wildcards are validated at their base name, and a name whose parent is also in the unit is
//! covered by the parent's record (DigiCert: validating a parent domain covers its subdomains),
//! so `example.com`, `*.example.com` and `www.example.com` need one record.

use dns_provider::{Record, normalize_name};

use crate::config::{CnameName, Method, TxtName};

/// DigiCert's default CNAME target suffix.
pub const DEFAULT_VERIFICATION_VALUE: &str = "dcv.digicert.com";

/// The base names that must be validated: wildcards stripped, lower-cased, duplicates and names
/// covered by a parent in the same set removed, in a stable order.
pub fn base_names(domains: &[String]) -> Vec<String> {
    let mut names: Vec<String> =
        domains.iter().map(|d| normalize_name(d.trim().trim_start_matches("*."))).filter(|d| !d.is_empty()).collect();
    names.sort();
    names.dedup();
    let covered = |n: &str| names.iter().any(|p| p != n && n.ends_with(&format!(".{p}")));
    names.iter().filter(|n| !covered(n)).cloned().collect()
}

/// The records a unit publishes for `token`.
pub fn records_for(
    method: Method,
    txt_name: TxtName,
    cname_name: CnameName,
    domains: &[String],
    token: &str,
    verification_value: Option<&str>,
) -> Vec<Record> {
    let token = token.trim();
    let suffix = normalize_name(verification_value.unwrap_or(DEFAULT_VERIFICATION_VALUE));
    let suffix = if suffix.is_empty() { DEFAULT_VERIFICATION_VALUE.to_string() } else { suffix };
    base_names(domains)
        .into_iter()
        .map(|d| match (method, txt_name, cname_name) {
            (Method::DnsTxtToken, TxtName::Dnsauth, _) => Record::txt(format!("_dnsauth.{d}"), token),
            (Method::DnsTxtToken, TxtName::Apex, _) => Record::txt(d, token),
            (Method::DnsCnameToken, _, CnameName::Dnsauth) => {
                Record::cname(format!("_dnsauth.{d}"), format!("{}.{suffix}", token.to_ascii_lowercase()))
            }
            (Method::DnsCnameToken, _, CnameName::Token) => {
                Record::cname(format!("{}.{d}", token.to_ascii_lowercase()), suffix.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns_provider::RecordType;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn apex_wildcard_and_subdomain_share_one_record() {
        assert_eq!(base_names(&s(&["www.Example.com", "*.example.com", "example.com."])), s(&["example.com"]));
        assert_eq!(base_names(&s(&["a.example.com", "b.example.com"])), s(&["a.example.com", "b.example.com"]));
        // a look-alike suffix is not a parent
        assert_eq!(base_names(&s(&["example.com", "myexample.com"])), s(&["example.com", "myexample.com"]));
    }

    #[test]
    fn txt_records_have_exact_owner_names_and_values() {
        let r =
            records_for(Method::DnsTxtToken, TxtName::Dnsauth, CnameName::Dnsauth, &s(&["*.example.com"]), "abc", None);
        assert_eq!(r, vec![Record::txt("_dnsauth.example.com", "abc")]);
        let r = records_for(Method::DnsTxtToken, TxtName::Apex, CnameName::Dnsauth, &s(&["example.com"]), "abc", None);
        assert_eq!(r[0].name, "example.com");
    }

    #[test]
    fn cname_records_in_both_forms() {
        let r = records_for(
            Method::DnsCnameToken,
            TxtName::Dnsauth,
            CnameName::Dnsauth,
            &s(&["example.com"]),
            "RnD1",
            Some("dcv.digicert.com."),
        );
        assert_eq!(r[0].rtype, RecordType::Cname);
        assert_eq!(r[0].name, "_dnsauth.example.com");
        assert_eq!(r[0].value, "rnd1.dcv.digicert.com");
        let r =
            records_for(Method::DnsCnameToken, TxtName::Dnsauth, CnameName::Token, &s(&["example.com"]), "rnd1", None);
        assert_eq!((r[0].name.as_str(), r[0].value.as_str()), ("rnd1.example.com", "dcv.digicert.com"));
    }
}
