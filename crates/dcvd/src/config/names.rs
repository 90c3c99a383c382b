//! Domain and zone names for the config: normalization (lower case, no trailing dot) and zone
//! matching, both delegated to `dns_provider`'s [`DnsName`] and [`in_zone`] so the daemon and
//! the adapters agree on what a name is.

use dns_provider::DnsName;

/// Normalizes a domain name: lower case, no trailing dot, ASCII letters/digits/`-`/`_` labels,
/// and (when `wildcard`) an optional leading `*.` label. The rules are [`DnsName`]'s.
pub(crate) fn normalize(name: &str, wildcard: bool) -> Result<String, String> {
    let parsed = if wildcard { DnsName::parse_wildcard(name) } else { DnsName::parse(name) };
    parsed.map(String::from)
}

/// The name whose zone publishes the records of `domain`: `*.example.com` -> `example.com`.
pub(super) fn base(domain: &str) -> &str {
    domain.strip_prefix("*.").unwrap_or(domain)
}

/// Whether `zone` contains `name`, by whole labels (the workspace's one check).
pub(super) use dns_provider::in_zone;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_trailing_dot() {
        assert_eq!(normalize("WWW.Example.COM.", true).unwrap(), "www.example.com");
        assert_eq!(normalize("*.Example.com", true).unwrap(), "*.example.com");
        assert_eq!(normalize("_dnsauth.example.com", false).unwrap(), "_dnsauth.example.com");
    }

    #[test]
    fn rejects_malformed_names() {
        assert!(normalize("", true).is_err());
        assert!(normalize(".", true).is_err());
        assert!(normalize("a..b", true).is_err());
        assert!(normalize("a b.com", true).is_err());
        assert!(normalize("*.example.com", false).is_err());
        assert!(normalize("www.*.example.com", true).is_err());
        assert!(normalize("bücher.de", true).is_err());
        assert!(normalize(&format!("{}.com", "a".repeat(64)), true).is_err());
    }

    #[test]
    fn zone_membership_is_by_label() {
        assert!(in_zone("example.com", "example.com"));
        assert!(in_zone("www.example.com", "example.com"));
        assert!(!in_zone("badexample.com", "example.com"));
        assert!(!in_zone("example.com", "www.example.com"));
        assert_eq!(base("*.example.com"), "example.com");
    }
}
