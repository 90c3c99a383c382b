//! Where DigiCert looks for a DV order's DCV record: CertCentral's *domain validation scope*.
//!
//! An account setting (Settings > Preferences > Advanced Settings > DCV), overridable per order:
//! - "Submit base domains for validation" (CertCentral's default): every name is validated at
//!   its base domain, the registrable domain by the Public Suffix List, so `shop.example.com` and
//!   `mail.example.co.uk` are validated at `example.com` and `example.co.uk`.
//! - "Submit exact domain names for validation": every name exactly as named; a validated parent
//!   does not stand for a child.
//!
//! Domain prevalidation (OV/EV domains) ignores the setting: it validates the domain's own name.
//!
//! The base domain uses the ICANN section of the Public Suffix List only. Private entries
//! (`github.io`, `cloudfront.net`) are registries of a company's customers, not places a CA
//! treats as public suffixes for validation; DigiCert documents nothing about them, so dcvd
//! validates `user.github.io` at `github.io` like any other name under an ICANN suffix. A TLD
//! missing from the list (`.test`, `.internal`) counts as a one-label suffix (the PSL's `*` rule).

use psl::{List, Psl, Type};
use serde::{Deserialize, Serialize};

/// CertCentral's domain validation scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationScope {
    /// "Submit base domains for validation" (CertCentral's default).
    #[default]
    Base,
    /// "Submit exact domain names for validation".
    Exact,
}

impl ValidationScope {
    /// The configuration spelling: `base` or `exact`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Exact => "exact",
        }
    }

    /// The name DigiCert validates for `name` (lower case, without `*.` and trailing dot): its
    /// base domain, or the name itself. A name that has no base domain (a public suffix, a
    /// single label) is validated as named.
    pub fn owner(self, name: &str) -> String {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = name.strip_prefix("*.").unwrap_or(&name);
        match self {
            Self::Exact => name.to_owned(),
            Self::Base => base_domain(name).unwrap_or(name).to_owned(),
        }
    }
}

impl std::fmt::Display for ValidationScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The registrable domain of a normalized `name` by the ICANN section of the Public Suffix List:
/// `a.b.example.co.uk` -> `example.co.uk`; `None` when `name` is itself a public suffix.
pub fn base_domain(name: &str) -> Option<&str> {
    let labels: Vec<&str> = name.split('.').collect();
    let reversed: Vec<&[u8]> = labels.iter().rev().map(|l| l.as_bytes()).collect();
    // The longest matching rule may be a private one; then look again with fewer labels until
    // the match is an ICANN rule (or the implicit `*` rule, whose type is None).
    let mut considered = reversed.len();
    let suffix_labels = loop {
        let info = List.find(reversed[..considered].iter().copied());
        let matched = labels_in(&labels[labels.len() - considered..], info.len);
        if info.typ != Some(Type::Private) || matched <= 1 {
            break matched.max(1);
        }
        considered = matched - 1;
    };
    if labels.len() <= suffix_labels {
        return None;
    }
    let keep = suffix_labels + 1;
    let start: usize = labels[..labels.len() - keep].iter().map(|l| l.len() + 1).sum();
    Some(&name[start..])
}

/// How many labels the last `bytes` bytes of `labels` joined with dots span.
fn labels_in(labels: &[&str], bytes: usize) -> usize {
    let mut total = 0;
    for (i, label) in labels.iter().rev().enumerate() {
        total += label.len() + usize::from(i > 0);
        if total >= bytes {
            return i + 1;
        }
    }
    labels.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_domains_follow_the_icann_section() {
        assert_eq!(base_domain("sub.subdomain.example.com"), Some("example.com"));
        assert_eq!(base_domain("example.com"), Some("example.com"));
        assert_eq!(base_domain("www.example.co.uk"), Some("example.co.uk"));
        // a wildcard rule (`*.kawasaki.jp`) and its exception (`!city.kawasaki.jp`)
        assert_eq!(base_domain("a.b.foo.kawasaki.jp"), Some("b.foo.kawasaki.jp"));
        assert_eq!(base_domain("a.b.city.kawasaki.jp"), Some("city.kawasaki.jp"));
        assert_eq!(base_domain("co.uk"), None);
        assert_eq!(base_domain("com"), None);
        // private section ignored
        assert_eq!(base_domain("user.github.io"), Some("github.io"));
        assert_eq!(base_domain("a.b.s3.amazonaws.com"), Some("amazonaws.com"));
        // unknown TLD: the `*` rule
        assert_eq!(base_domain("demo.shop.test"), Some("shop.test"));
        assert_eq!(base_domain("localhost"), None);
    }

    #[test]
    fn owners_by_scope() {
        assert_eq!(ValidationScope::Base.owner("*.Shop.Example.com."), "example.com");
        assert_eq!(ValidationScope::Exact.owner("*.Shop.Example.com."), "shop.example.com");
        assert_eq!(ValidationScope::Base.owner("localhost"), "localhost");
        assert_eq!(ValidationScope::default(), ValidationScope::Base);
    }
}
