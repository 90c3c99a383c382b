//! The client's error type.

use crate::types::ApiErrorEntry;

/// DigiCert codes meaning "the record or file is not visible yet": check again later.
const NOT_FOUND_YET: &[&str] = &["invalid_dns_txt", "invalid_dns_cname", "file_random_value_not_found"];
/// DigiCert codes meaning "this DCV method cannot be used for this action": permanent.
const WRONG_METHOD: &[&str] = &["invalid_dns_method", "invalid_dcv_method"];
/// DigiCert's code for a breached rate limit (sent with HTTP 429).
const RATE_LIMITED: &str = "request_limit_exceeded";

/// Everything a CertCentral call can fail with.
///
/// Messages never contain the API key. Use the predicates ([`Error::is_not_found_yet`],
/// [`Error::is_retryable`], ...) rather than matching variants.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DigiCert answered with its `{"errors":[{"code","message"}]}` body.
    #[error("certcentral: {code}: {message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The first error's code, trimmed of stray whitespace (unknown codes kept verbatim).
        code: String,
        /// The first error's message.
        message: String,
        /// Every error entry (codes trimmed).
        errors: Vec<ApiErrorEntry>,
    },
    /// A non-success answer without DigiCert's error body (an HTML page from a proxy or load
    /// balancer, an empty body), or a success answer that is not JSON.
    #[error("certcentral: unexpected HTTP {status} answer: {body_excerpt:?}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body, whitespace collapsed.
        body_excerpt: String,
    },
    /// The request did not complete within the configured timeout.
    #[error("certcentral: {endpoint} request timed out; check connectivity or raise the timeout")]
    Timeout {
        /// Which endpoint ([`crate::Endpoint::as_str`]).
        endpoint: &'static str,
    },
    /// The request could not be sent or its answer not read (DNS, TCP, TLS, reset connection).
    #[error("certcentral: cannot reach the API: {message}")]
    Connect {
        /// What went wrong.
        message: String,
    },
    /// A success answer whose JSON does not have the expected shape.
    #[error("certcentral: {endpoint}: cannot parse the answer: {message}")]
    Decode {
        /// Which endpoint ([`crate::Endpoint::as_str`]).
        endpoint: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The call was not sent: the client's send guard refused it (the process no longer holds
    /// the unit it would act for, see [`crate::Client::set_send_guard`]).
    #[error("certcentral: {endpoint} not sent: {reason}")]
    Withheld {
        /// Which endpoint ([`crate::Endpoint::as_str`]).
        endpoint: &'static str,
        /// Why the guard refused.
        reason: String,
    },
    /// The client configuration is invalid (bad base URL, plain http not allowed, ...).
    #[error("certcentral: invalid configuration: {message}")]
    Config {
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Error {
    /// DigiCert's (first) error code, trimmed.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when an answer was received.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Every DigiCert error code of this error (trimmed).
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        let (first, rest): (Option<&str>, &[ApiErrorEntry]) = match self {
            Self::Api { code, errors, .. } => (Some(code.as_str()), errors.as_slice()),
            _ => (None, &[]),
        };
        first.into_iter().chain(rest.iter().map(|e| e.code.as_str()))
    }

    fn has_code(&self, wanted: &[&str]) -> bool {
        self.codes().any(|c| wanted.contains(&c))
    }

    /// DigiCert did not see the TXT/CNAME record (or file) yet: `invalid_dns_txt`,
    /// `invalid_dns_cname`, `file_random_value_not_found`. Check again later.
    pub fn is_not_found_yet(&self) -> bool {
        self.has_code(NOT_FOUND_YET)
    }

    /// The DCV method cannot be used for this action (`invalid_dns_method`,
    /// `invalid_dcv_method`): permanent for this method.
    pub fn is_wrong_method(&self) -> bool {
        self.has_code(WRONG_METHOD)
    }

    /// DigiCert's rate limit was hit (HTTP 429 or `request_limit_exceeded`).
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429) || self.has_code(&[RATE_LIMITED])
    }

    /// The API key was refused (HTTP 401 or 403).
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// The object does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Trying again later may succeed: 429, 5xx, timeouts, connection errors and answers that
    /// are not DigiCert JSON (an HTML 502 page from a proxy), except definitive client errors
    /// (4xx other than 408 and 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Connect { .. } => true,
            Self::Api { status, .. } => *status == 429 || *status >= 500 || self.is_rate_limited(),
            Self::Http { status, .. } => !(400..500).contains(status) || matches!(status, 408 | 429),
            // Withheld: nothing was sent; the caller decides when (and whether) to act again.
            Self::Decode { .. } | Self::Config { .. } | Self::Withheld { .. } => false,
        }
    }

    /// Builds an [`Error::Api`] from DigiCert's error entries, trimming codes.
    pub(crate) fn api(status: u16, entries: Vec<ApiErrorEntry>) -> Self {
        let errors: Vec<ApiErrorEntry> = entries
            .into_iter()
            .map(|e| ApiErrorEntry { code: e.code.trim().to_string(), message: e.message.trim().to_string() })
            .collect();
        let (code, message) = errors.first().map(|e| (e.code.clone(), e.message.clone())).unwrap_or_default();
        Self::Api { status, code, message, errors }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(code: &str) -> ApiErrorEntry {
        ApiErrorEntry { code: code.to_string(), message: "m".to_string() }
    }

    #[test]
    fn predicates() {
        let e = Error::api(400, vec![entry(" invalid_dns_cname ")]);
        assert_eq!(e.code(), Some("invalid_dns_cname"));
        assert!(e.is_not_found_yet() && !e.is_retryable() && !e.is_wrong_method());
        let e = Error::api(400, vec![entry("something_new")]);
        assert_eq!(e.code(), Some("something_new"));
        assert!(!e.is_not_found_yet());
        assert!(Error::api(429, vec![entry("request_limit_exceeded")]).is_retryable());
        assert!(Error::api(503, vec![]).is_retryable());
        assert!(Error::api(403, vec![entry("access_denied")]).is_auth());
        assert!(Error::Http { status: 502, body_excerpt: String::new() }.is_retryable());
        assert!(!Error::Http { status: 404, body_excerpt: String::new() }.is_retryable());
        assert_eq!(Error::Timeout { endpoint: "check_dcv" }.status(), None);
    }
}
