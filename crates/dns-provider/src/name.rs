//! DNS names: the one normaliser ([`normalize_name`]), the one zone-membership check
//! ([`in_zone`], by whole labels) and [`DnsName`], a validated name (lower case, no trailing dot,
//! ASCII only, RFC 1035 lengths, letters/digits/`-`/`_` labels).
//!
//! A newtype over `String` rather than hickory's `Name`: the workspace passes names as plain
//! presentation-form strings (config, store, records, provider APIs all want `www.example.com`
//! without a trailing dot), and hickory's `Name` keeps the case it was given, separates FQDNs
//! from relative names and would need a conversion at every boundary. What is needed here is
//! three rules, written once.
//!
//! It must not resolve, route or know about providers: [`Router`](crate::Router) and the
//! adapters build on these checks.

use std::fmt;

/// Lower-cases a DNS name and strips surrounding white space and trailing dots.
pub fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `zone` contains `name` by whole labels: `example.com` contains `example.com` and
/// `www.example.com`, not `badexample.com`. Case and a trailing dot on either side do not matter.
pub fn in_zone(name: &str, zone: &str) -> bool {
    let name = name.trim().trim_end_matches('.');
    let zone = zone.trim().trim_end_matches('.');
    if name.len() == zone.len() {
        return name.eq_ignore_ascii_case(zone);
    }
    name.len() > zone.len()
        && name.as_bytes()[name.len() - zone.len() - 1] == b'.'
        && name[name.len() - zone.len()..].eq_ignore_ascii_case(zone)
}

/// Whether `name` is strictly below `zone` (in it, and not the apex).
pub fn below_zone(name: &str, zone: &str) -> bool {
    in_zone(name, zone) && name.trim().trim_end_matches('.').len() > zone.trim().trim_end_matches('.').len()
}

/// `name` relative to `zone` (`_dnsauth.www` for `_dnsauth.www.example.com` in `example.com`),
/// `""` for the apex, `None` when `name` is not in `zone`. Both normalized.
pub fn relative_name<'a>(name: &'a str, zone: &str) -> Option<&'a str> {
    if !in_zone(name, zone) {
        return None;
    }
    let name = name.trim().trim_end_matches('.');
    let zone = zone.trim().trim_end_matches('.');
    Some(name[..name.len() - zone.len()].trim_end_matches('.'))
}

/// A validated, normalized DNS name (see the module doc for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Validates and normalizes `name`; a `*` label is refused.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::parse_inner(name, false)
    }

    /// Like [`DnsName::parse`], but a leading `*.` label is allowed (`*.example.com`).
    pub fn parse_wildcard(name: &str) -> Result<Self, String> {
        Self::parse_inner(name, true)
    }

    fn parse_inner(name: &str, wildcard: bool) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.is_empty() {
            return Err("empty domain name".to_owned());
        }
        if !trimmed.is_ascii() {
            return Err(format!("domain name {name:?} is not ASCII: write its punycode (xn--) form"));
        }
        if trimmed.len() > 253 {
            return Err(format!("domain name {name:?} is longer than 253 characters"));
        }
        let body = match trimmed.strip_prefix("*.") {
            Some(rest) if wildcard => rest,
            _ => trimmed,
        };
        for label in body.split('.') {
            if label.is_empty() {
                return Err(format!("invalid domain name {name:?}: empty label"));
            }
            if label.len() > 63 {
                return Err(format!("invalid domain name {name:?}: label {label:?} is longer than 63 characters"));
            }
            if label == "*" {
                return Err(if wildcard {
                    format!(
                        "invalid domain name {name:?}: a wildcard is only allowed as the first \
                         label, as in \"*.example.com\""
                    )
                } else {
                    format!("invalid name {name:?}: a wildcard is not allowed here")
                });
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                return Err(format!(
                    "invalid domain name {name:?}: character {c:?} is not allowed (letters, digits, \
                     '-' and '_' only)"
                ));
            }
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name: lower case, no trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name (a zone) contains `name`, by whole labels.
    pub fn contains(&self, name: &str) -> bool {
        in_zone(name, &self.0)
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<DnsName> for String {
    fn from(name: DnsName) -> Self {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_membership_is_by_label() {
        assert!(in_zone("example.com", "example.com"));
        assert!(in_zone("www.example.com", "example.com"));
        assert!(in_zone("WWW.Example.COM.", "example.com."));
        assert!(!in_zone("badexample.com", "example.com"));
        assert!(!in_zone("example.com", "www.example.com"));
        assert!(!in_zone("com", "example.com"));
        assert!(below_zone("www.example.com", "example.com"));
        assert!(!below_zone("example.com", "example.com."));
        assert!(!below_zone("xexample.com", "example.com"));
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative_name("_dnsauth.www.example.com", "example.com"), Some("_dnsauth.www"));
        assert_eq!(relative_name("example.com", "example.com"), Some(""));
        assert_eq!(relative_name("badexample.com", "example.com"), None);
    }

    #[test]
    fn parse_normalizes_and_validates() {
        assert_eq!(DnsName::parse("WWW.Example.COM.").unwrap().as_str(), "www.example.com");
        assert_eq!(DnsName::parse_wildcard("*.Example.com").unwrap().to_string(), "*.example.com");
        assert!(DnsName::parse("").is_err());
        assert!(DnsName::parse(".").is_err());
        assert!(DnsName::parse("a..b").is_err());
        assert!(DnsName::parse("a b.com").is_err());
        assert!(DnsName::parse("*.example.com").is_err());
        assert!(DnsName::parse_wildcard("www.*.example.com").is_err());
        assert!(DnsName::parse("bücher.de").unwrap_err().contains("punycode"));
        assert!(DnsName::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(DnsName::parse("example.com").unwrap().contains("www.example.com"));
        assert!(!DnsName::parse("example.com").unwrap().contains("badexample.com"));
    }
}
