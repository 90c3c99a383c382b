//! Which DNS records a unit needs: DigiCert's record formats, applied to a unit's names.
//!
//! - `dns-txt-token`: TXT `_dnsauth.<domain>` (or `<domain>` with `txt_name = "apex"`) holding
//!   the random value.
//! - `dns-cname-token`: CNAME `_dnsauth.<domain>` -> `<value>.<verification_value>` (DigiCert's
//!   preferred form), or with `cname_name = "token"` the older `<value>.<domain>` ->
//!   `<verification_value>`.
//!
//! `<domain>` is the name DigiCert validates, which the validation scope decides
//! ([`ValidationScope::owner`]): the base (registrable) domain by default, so `shop.example.com`
//! and `*.mail.example.com` share one record at `example.com`; with `exact`, each name as named
//! (`*.x` at `x`), and a parent's record no longer stands for a listed subdomain. Records are
//! deduplicated per owner and value.

use dns_provider::{Record, normalize_name};

use crate::config::{CnameName, Method, TxtName, ValidationScope};

/// DigiCert's default CNAME target suffix.
pub const DEFAULT_VERIFICATION_VALUE: &str = "dcv.digicert.com";

/// The names DigiCert validates for `domains` under `scope`: lower-cased, deduplicated, in a
/// stable order.
pub fn owner_names(scope: ValidationScope, domains: &[String]) -> Vec<String> {
    let mut owners: Vec<String> =
        domains.iter().map(|d| scope.owner(&normalize_name(d))).filter(|d| !d.is_empty()).collect();
    owners.sort();
    owners.dedup();
    owners
}

/// The records a unit publishes for `token`.
pub fn records_for(
    method: Method,
    txt_name: TxtName,
    cname_name: CnameName,
    scope: ValidationScope,
    domains: &[String],
    token: &str,
    verification_value: Option<&str>,
) -> Vec<Record> {
    let token = token.trim();
    let suffix = normalize_name(verification_value.unwrap_or(DEFAULT_VERIFICATION_VALUE));
    let suffix = if suffix.is_empty() { DEFAULT_VERIFICATION_VALUE.to_string() } else { suffix };
    owner_names(scope, domains)
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
    fn base_scope_validates_each_registrable_domain_once() {
        let names =
            s(&["www.Example.com", "*.example.com", "example.com.", "sub.subdomain.example.com", "example.domain.com"]);
        assert_eq!(owner_names(ValidationScope::Base, &names), s(&["domain.com", "example.com"]));
        assert_eq!(owner_names(ValidationScope::Base, &s(&["shop.example.co.uk"])), s(&["example.co.uk"]));
    }

    #[test]
    fn exact_scope_validates_every_name_and_no_parent_covers_a_child() {
        let names = s(&["www.Example.com", "*.example.com", "example.com.", "a.example.com"]);
        assert_eq!(
            owner_names(ValidationScope::Exact, &names),
            s(&["a.example.com", "example.com", "www.example.com"])
        );
        // a look-alike suffix is another name
        assert_eq!(
            owner_names(ValidationScope::Exact, &s(&["example.com", "myexample.com"])),
            s(&["example.com", "myexample.com"])
        );
    }

    #[test]
    fn txt_records_have_exact_owner_names_and_values() {
        let r = records_for(
            Method::DnsTxtToken,
            TxtName::Dnsauth,
            CnameName::Dnsauth,
            ValidationScope::Exact,
            &s(&["*.example.com"]),
            "abc",
            None,
        );
        assert_eq!(r, vec![Record::txt("_dnsauth.example.com", "abc")]);
        let r = records_for(
            Method::DnsTxtToken,
            TxtName::Apex,
            CnameName::Dnsauth,
            ValidationScope::Exact,
            &s(&["example.com"]),
            "abc",
            None,
        );
        assert_eq!(r[0].name, "example.com");
    }

    #[test]
    fn cname_records_in_both_forms() {
        let r = records_for(
            Method::DnsCnameToken,
            TxtName::Dnsauth,
            CnameName::Dnsauth,
            ValidationScope::Base,
            &s(&["www.example.com"]),
            "RnD1",
            Some("dcv.digicert.com."),
        );
        assert_eq!(r[0].rtype, RecordType::Cname);
        assert_eq!(r[0].name, "_dnsauth.example.com");
        assert_eq!(r[0].value, "rnd1.dcv.digicert.com");
        let r = records_for(
            Method::DnsCnameToken,
            TxtName::Dnsauth,
            CnameName::Token,
            ValidationScope::Exact,
            &s(&["example.com"]),
            "rnd1",
            None,
        );
        assert_eq!((r[0].name.as_str(), r[0].value.as_str()), ("rnd1.example.com", "dcv.digicert.com"));
    }
}
