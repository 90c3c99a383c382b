//! Domain and zone names: normalization (lower case, no trailing dot) and zone matching.

/// Normalizes a domain name: lower case, no trailing dot, ASCII letters/digits/`-`/`_` labels,
/// and (when `wildcard`) an optional leading `*.` label.
pub(super) fn normalize(name: &str, wildcard: bool) -> Result<String, String> {
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
                format!("invalid zone name {name:?}: a zone cannot be a wildcard")
            });
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!(
                "invalid domain name {name:?}: character {c:?} is not allowed (letters, digits, \
                 '-' and '_' only)"
            ));
        }
    }
    Ok(trimmed.to_owned())
}

/// The name whose zone publishes the records of `domain`: `*.example.com` -> `example.com`.
pub(super) fn base(domain: &str) -> &str {
    domain.strip_prefix("*.").unwrap_or(domain)
}

/// Whether `zone` contains `name` (both normalized).
pub(super) fn in_zone(name: &str, zone: &str) -> bool {
    name == zone
        || (name.len() > zone.len() && name.ends_with(zone) && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

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
