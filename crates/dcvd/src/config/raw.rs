//! The TOML schema as written (serde, `deny_unknown_fields`), before cross-field validation.
//!
//! Values that can be checked on their own are parsed while deserializing (through [`P`]), so
//! their errors carry the value's position for free; values checked against others keep their
//! span with [`Spanned`].

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::names;
use super::{CnameName, LogFormat, Method, OnExpiry, PropagationMode, Resolver, TxtName, ValidationScope};

/// A value parsed from a TOML string, with an error message that says what is expected.
pub(crate) trait FromConfigStr: Sized {
    /// Completes "invalid type: integer `3`, expected ..." for values of the wrong type.
    const EXPECTING: &'static str;
    fn from_config_str(s: &str) -> Result<Self, String>;
}

/// A string value parsed into `T` during deserialization.
#[derive(Debug, Clone)]
pub(crate) struct P<T>(pub(crate) T);

impl<'de, T: FromConfigStr> Deserialize<'de> for P<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: FromConfigStr> de::Visitor<'_> for V<T> {
            type Value = P<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::from_config_str(s).map(P).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V(PhantomData))
    }
}

impl FromConfigStr for Duration {
    const EXPECTING: &'static str = "a duration such as \"90s\" or \"5m\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration {s:?}: {e}; write it like \"90s\", \"5m\" or \"1h 30m\""))?;
        if d.is_zero() {
            return Err(format!("duration {s:?} must be greater than zero"));
        }
        Ok(d)
    }
}

impl FromConfigStr for Method {
    const EXPECTING: &'static str = "a DCV method: \"dns-txt-token\" or \"dns-cname-token\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        match s {
            "dns-txt-token" => Ok(Self::DnsTxtToken),
            "dns-cname-token" => Ok(Self::DnsCnameToken),
            "http-token" | "email" => Err(format!(
                "method {s:?} is not supported: dcvd validates by DNS only; use \
                 \"dns-txt-token\" or \"dns-cname-token\""
            )),
            _ => Err(format!(
                "unknown method {s:?}: supported methods are \"dns-txt-token\" and \
                 \"dns-cname-token\""
            )),
        }
    }
}

impl FromConfigStr for Resolver {
    const EXPECTING: &'static str = "\"system\" or a resolver address such as \"192.0.2.1:53\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        if s == "system" {
            return Ok(Self::System);
        }
        parse_addr(s, 53).map(Self::Addr).ok_or_else(|| {
            format!(
                "invalid resolver {s:?}: expected \"system\" or an IP address with optional \
                 port, such as \"192.0.2.1\", \"192.0.2.1:5353\" or \"[2001:db8::1]:53\""
            )
        })
    }
}

/// `ip`, `ip:port`, `[v6]:port` or a bare IPv6 address; `default_port` when none is given.
fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let ip = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}

/// A duration that may be zero (`lag`).
pub(crate) struct Lag(pub(crate) Duration);

impl FromConfigStr for Lag {
    const EXPECTING: &'static str = "a duration such as \"1500ms\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(Self)
            .map_err(|e| format!("invalid duration {s:?}: {e}; write it like \"500ms\", \"2s\" or \"1m\""))
    }
}

/// `metrics_listen`, memory `listen`: an IP address and a port.
pub(crate) struct ListenAddr(pub(crate) SocketAddr);

impl FromConfigStr for ListenAddr {
    const EXPECTING: &'static str = "an address such as \"127.0.0.1:9465\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        s.parse().map(Self).map_err(|_| {
            format!(
                "invalid address {s:?}: expected IP:PORT such as \"127.0.0.1:9465\" or \
                 \"[::1]:9465\""
            )
        })
    }
}

/// An RFC 2136 server: `ip[:port]` or `host[:port]` (resolved once, at load), port 53 by default.
pub(crate) struct ServerAddr(pub(crate) SocketAddr);

impl FromConfigStr for ServerAddr {
    const EXPECTING: &'static str = "a server address such as \"192.0.2.53:53\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        if let Some(addr) = parse_addr(s, 53) {
            return Ok(Self(addr));
        }
        let bad = || {
            format!(
                "invalid server {s:?}: expected HOST:PORT such as \"192.0.2.53:53\" or \
                 \"ns1.example.net:53\" (port 53 when omitted)"
            )
        };
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (s, 53),
        };
        if host.is_empty() || names::normalize(host, false).is_err() {
            return Err(bad());
        }
        let mut addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve server {s:?}: {e}; give an IP address instead"))?;
        addrs.next().map(Self).ok_or_else(|| format!("server {s:?} resolves to no address; give an IP address"))
    }
}

/// A domain name (a `*.` first label allowed), normalized.
pub(super) struct Domain(pub(super) String);

impl FromConfigStr for Domain {
    const EXPECTING: &'static str = "a domain name such as \"www.example.com\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        names::normalize(s, true).map(Self)
    }
}

/// A zone name, normalized.
pub(crate) struct Zone(pub(crate) String);

impl FromConfigStr for Zone {
    const EXPECTING: &'static str = "a zone name such as \"example.com\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        names::normalize(s, false).map(Self)
    }
}

/// `rescan`: a 6-field cron expression as tokio-cron-scheduler parses it, or `"off"`.
pub(super) struct Cron(pub(super) Option<String>);

impl FromConfigStr for Cron {
    const EXPECTING: &'static str = "a cron expression such as \"0 */5 * * * *\" or \"off\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        // The same parser settings as tokio-cron-scheduler's `Job::new`, so what passes here
        // schedules there.
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(s)
            .map_err(|e| {
                format!(
                    "invalid cron expression {s:?} ({e}): expected 6 fields \"SEC MIN HOUR \
                     DAY-OF-MONTH MONTH DAY-OF-WEEK\", such as \"0 */5 * * * *\", or \"off\""
                )
            })?;
        Ok(Self(Some(s.to_owned())))
    }
}

/// A CertCentral `base_url`: https, or http to a loopback host (simulators).
pub(crate) struct BaseUrl {
    pub(crate) url: String,
    pub(crate) insecure_http: bool,
}

impl FromConfigStr for BaseUrl {
    const EXPECTING: &'static str = "a URL such as \"https://www.digicert.com/services/v2\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        let (insecure_http, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (true, rest)
        } else {
            return Err(format!(
                "invalid base_url {s:?}: expected an https:// URL such as \
                 \"https://www.digicert.com/services/v2\" (http:// only to a loopback address)"
            ));
        };
        let host = url_host(rest).ok_or_else(|| format!("invalid base_url {s:?}: no host"))?;
        if insecure_http && !is_loopback(host) {
            return Err(format!(
                "base_url {s:?} uses plain http to {host}, which would send the API key \
                 unencrypted: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 or \
                 localhost)"
            ));
        }
        Ok(Self { url: s.trim_end_matches('/').to_owned(), insecure_http })
    }
}

/// The host of `authority/path...` (after the scheme), without userinfo, port or brackets.
pub(crate) fn url_host(rest: &str) -> Option<&str> {
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host =
        if let Some(v6) = authority.strip_prefix('[') { v6.split_once(']')?.0 } else { authority.split(':').next()? };
    (!host.is_empty()).then_some(host)
}

/// Whether an http(s) URL (already parsed by [`HttpUrl`]) is plain http to a host that is not
/// loopback: the host, for the error.
pub(crate) fn insecure_http_host(url: &str) -> Option<&str> {
    let host = url_host(url.strip_prefix("http://")?)?;
    (!is_loopback(host)).then_some(host)
}

pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A plain http(s) URL (provider endpoints for tests against fakes, webhooks).
pub(crate) struct HttpUrl(pub(crate) String);

impl FromConfigStr for HttpUrl {
    const EXPECTING: &'static str = "a URL such as \"https://api.example.com/v1\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or_else(|| format!("invalid URL {s:?}: expected http:// or https://"))?;
        url_host(rest).ok_or_else(|| format!("invalid URL {s:?}: no host"))?;
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

/// A provider API URL (`api_url`): https, or plain http only to a loopback host, since the
/// requests carry the provider's credentials.
pub(crate) struct ApiUrl(pub(crate) String);

impl FromConfigStr for ApiUrl {
    const EXPECTING: &'static str = "a URL such as \"https://pdns.example.net:8081\"";
    fn from_config_str(s: &str) -> Result<Self, String> {
        let (plain, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (false, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (true, rest)
        } else {
            return Err(format!(
                "invalid api_url {s:?}: expected an https:// URL such as \"https://pdns.example.net:8081\" \
                 (http:// only to a loopback address)"
            ));
        };
        let host = url_host(rest).ok_or_else(|| format!("invalid api_url {s:?}: no host"))?;
        if plain && !is_loopback(host) {
            return Err(format!(
                "api_url {s:?} uses plain http to {host}, which would send the credentials \
                 unencrypted: use https:// (a TLS reverse proxy in front of the API); http:// is \
                 allowed only to 127.0.0.0/8, ::1 or localhost"
            ));
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

/// The main configuration file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMain {
    pub(super) certcentral: Option<Spanned<RawCertCentral>>,
    pub(super) daemon: Option<RawDaemon>,
    pub(super) propagation: Option<RawPropagation>,
    pub(super) check: Option<RawCheck>,
    pub(super) notify: Option<Spanned<super::notify::RawNotify>>,
    pub(super) discovery: Option<Spanned<super::discovery::RawDiscovery>>,
    pub(super) store: Option<Spanned<super::store::RawStore>>,
    /// Parsed separately (see `provider.rs`); declared so unknown-key errors list it.
    #[serde(rename = "providers")]
    pub(super) _providers: Option<IgnoredAny>,
    #[serde(default)]
    pub(super) order: Vec<Spanned<RawOrder>>,
    #[serde(default)]
    pub(super) domain: Vec<Spanned<RawDomain>>,
}

/// An order file: only `[[order]]` and `[[domain]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrderFile {
    #[serde(default)]
    pub(super) order: Vec<Spanned<RawOrder>>,
    #[serde(default)]
    pub(super) domain: Vec<Spanned<RawDomain>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertCentral {
    pub(super) base_url: Option<P<BaseUrl>>,
    pub(super) api_key_file: Option<Spanned<String>>,
    pub(super) api_key_env: Option<Spanned<String>>,
    pub(super) rate_limits: Option<Vec<RawRateLimit>>,
    pub(super) timeout: Option<P<Duration>>,
    pub(super) validation_scope: Option<ValidationScope>,
    pub(super) caa_check: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) requests: Spanned<u32>,
    pub(super) per: P<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) order_files: Option<Vec<Spanned<String>>>,
    pub(super) rescan: Option<P<Cron>>,
    pub(super) max_concurrent: Option<Spanned<usize>>,
    pub(super) cleanup: Option<bool>,
    pub(super) on_expiry: Option<OnExpiry>,
    pub(super) max_renewals: Option<u32>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) metrics_listen: Option<Spanned<P<ListenAddr>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPropagation {
    pub(super) resolvers: Option<Spanned<Vec<P<Resolver>>>>,
    pub(super) check: Option<PropagationMode>,
    pub(super) nameserver_port: Option<Spanned<u16>>,
    pub(super) poll_min: Option<Spanned<P<Duration>>>,
    pub(super) poll_max: Option<Spanned<P<Duration>>>,
    pub(super) timeout: Option<P<Duration>>,
    pub(super) max_queries_per_second: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) min_interval: Option<Spanned<P<Duration>>>,
    pub(super) max_interval: Option<Spanned<P<Duration>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrder {
    pub(super) id: Spanned<u64>,
    pub(super) method: P<Method>,
    pub(super) domains: Option<Vec<Spanned<P<Domain>>>>,
    pub(super) provider: Option<Spanned<String>>,
    pub(super) txt_name: Option<Spanned<TxtName>>,
    pub(super) cname_name: Option<Spanned<CnameName>>,
    pub(super) validation_scope: Option<ValidationScope>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    pub(super) id: Spanned<u64>,
    pub(super) name: Spanned<P<Domain>>,
    pub(super) method: P<Method>,
    pub(super) submit: Option<Vec<Spanned<String>>>,
    pub(super) provider: Option<Spanned<String>>,
    pub(super) txt_name: Option<Spanned<TxtName>>,
    pub(super) cname_name: Option<Spanned<CnameName>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_allows_http_only_to_loopback() {
        for ok in
            ["http://127.0.0.1:8080/services/v2", "http://localhost/x", "http://[::1]:9/", "http://user@127.0.0.2"]
        {
            assert!(BaseUrl::from_config_str(ok).unwrap().insecure_http, "{ok}");
        }
        for bad in ["http://example.com", "http://10.0.0.1:80", "http://127.0.0.1.nip.io"] {
            assert!(BaseUrl::from_config_str(bad).is_err(), "{bad}");
        }
        let https = BaseUrl::from_config_str("https://certcentral.digicert.eu/services/v2/").unwrap();
        assert!(!https.insecure_http);
        assert_eq!(https.url, "https://certcentral.digicert.eu/services/v2");
    }

    #[test]
    fn api_url_allows_http_only_to_loopback() {
        assert_eq!(ApiUrl::from_config_str("http://127.0.0.1:8081/").unwrap().0, "http://127.0.0.1:8081");
        assert!(ApiUrl::from_config_str("https://pdns.example.net:8081").is_ok());
        let err = ApiUrl::from_config_str("http://pdns.example.net:8081").err().unwrap();
        assert!(err.contains("unencrypted"), "{err}");
        assert!(ApiUrl::from_config_str("pdns.example.net").is_err());
    }

    #[test]
    fn resolver_port_defaults_to_53() {
        let Resolver::Addr(a) = Resolver::from_config_str("192.0.2.1").unwrap() else { panic!("not an address") };
        assert_eq!(a, "192.0.2.1:53".parse().unwrap());
        let Resolver::Addr(a) = Resolver::from_config_str("2001:db8::1").unwrap() else { panic!("not an address") };
        assert_eq!(a, "[2001:db8::1]:53".parse().unwrap());
        assert!(Resolver::from_config_str("dns.example").is_err());
    }

    #[test]
    fn cron_accepts_six_fields_and_off() {
        assert_eq!(Cron::from_config_str("0 */5 * * * *").unwrap().0.as_deref(), Some("0 */5 * * * *"));
        assert!(Cron::from_config_str("off").unwrap().0.is_none());
        assert!(Cron::from_config_str("*/5 * * * *").is_err());
        assert!(Cron::from_config_str("0 61 * * * *").is_err());
    }

    #[test]
    fn server_resolves_localhost_and_defaults_port() {
        assert_eq!(ServerAddr::from_config_str("192.0.2.53").unwrap().0, "192.0.2.53:53".parse().unwrap());
        let local = ServerAddr::from_config_str("localhost:5353").unwrap().0;
        assert!(local.ip().is_loopback() && local.port() == 5353, "{local}");
        assert!(ServerAddr::from_config_str("a b:53").is_err());
        assert!(ServerAddr::from_config_str("192.0.2.53:99999").is_err());
    }
}
