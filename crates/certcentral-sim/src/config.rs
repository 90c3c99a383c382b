//! Simulator configuration: [`SimConfig`], fault injection rules and the small parsers the binary
//! uses for its options.

use certcentral::ValidationScope;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The endpoint names used as keys in [`FaultConfig::endpoints`] and in [`crate::Stats::calls`].
pub const ENDPOINTS: &[&str] = &[
    "dcv_random_value",
    "check_dcv",
    "order_info",
    "order_validation",
    "order_dcv_method",
    "domain_submit_validation",
    "domain_dcv_token",
    "domain_validate_token",
    "domain_info",
    "list_orders",
    "list_domains",
];

/// Everything the simulator can be told at start.
#[derive(Clone)]
pub struct SimConfig {
    /// The expected `X-DC-DEVKEY`; any other value answers 401.
    pub api_key: String,
    /// Name servers the DCV checks query (one of them per lookup, round-robin).
    pub dns_servers: Vec<SocketAddr>,
    /// Lifetime of DV random values and OV/EV tokens (DigiCert: 30 days).
    pub token_validity: Duration,
    /// Fixed negative-cache TTL; `None` derives it from the SOA of each negative answer
    /// (`min(SOA TTL, SOA minimum)`, RFC 2308), capped by `negative_ttl_cap`.
    pub negative_ttl: Option<Duration>,
    /// Upper bound of a negative-cache entry's lifetime.
    pub negative_ttl_cap: Duration,
    /// Sliding windows `(requests, per)`; every one must have room for a request to pass.
    pub rate_limits: Vec<(u32, Duration)>,
    /// Fault injection rules.
    pub faults: FaultConfig,
    /// Seed of the random generator behind faults and random values (reproducible runs).
    pub seed: u64,
    /// When a DV order's DCV becomes valid: `true` sets its status to `issued`, `false` leaves it
    /// `pending` with `dcv_status: valid`.
    pub issue_on_valid: bool,
    /// Timeout of one DNS query.
    pub dns_timeout: Duration,
    /// The account's domain validation scope at start (CertCentral's default: base domains);
    /// `PUT /_sim/account` changes it, an order's own `validation_scope` overrides it.
    pub validation_scope: ValidationScope,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_key: "sim-devkey".to_string(),
            dns_servers: Vec::new(),
            token_validity: Duration::from_secs(30 * 24 * 3600),
            negative_ttl: None,
            negative_ttl_cap: Duration::from_secs(60),
            rate_limits: vec![(100, Duration::from_secs(5)), (1000, Duration::from_secs(300))],
            faults: FaultConfig::default(),
            seed: 0,
            issue_on_valid: true,
            dns_timeout: Duration::from_secs(2),
            validation_scope: ValidationScope::Base,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the API key is a secret even in a simulator: tests copy real-looking keys around
        f.debug_struct("SimConfig")
            .field("api_key", &"[redacted]")
            .field("dns_servers", &self.dns_servers)
            .field("token_validity", &self.token_validity)
            .field("negative_ttl", &self.negative_ttl)
            .field("negative_ttl_cap", &self.negative_ttl_cap)
            .field("rate_limits", &self.rate_limits)
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .field("issue_on_valid", &self.issue_on_valid)
            .field("validation_scope", &self.validation_scope)
            .field("dns_timeout", &self.dns_timeout)
            .finish()
    }
}

/// Fault injection: a global rule, and per-endpoint rules that *replace* the global one for
/// their endpoint (keys: [`ENDPOINTS`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Rule for every endpoint without its own.
    pub global: FaultRule,
    /// Rules by endpoint name.
    pub endpoints: BTreeMap<String, FaultRule>,
}

impl FaultConfig {
    /// Checks endpoint names and probabilities.
    pub fn validate(&self) -> Result<(), String> {
        self.global.validate().map_err(|e| format!("global: {e}"))?;
        for (name, rule) in &self.endpoints {
            if !ENDPOINTS.contains(&name.as_str()) {
                return Err(format!("unknown endpoint {name:?}: expected one of {}", ENDPOINTS.join(", ")));
            }
            rule.validate().map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// The rule that applies to `endpoint`.
    pub fn rule_for(&self, endpoint: &str) -> &FaultRule {
        self.endpoints.get(endpoint).unwrap_or(&self.global)
    }

    /// Applies one `[ENDPOINT.]FIELD=VALUE` setting (the binary's `--fault`).
    pub fn apply_setting(&mut self, spec: &str) -> Result<(), String> {
        let (key, value) =
            spec.split_once('=').ok_or_else(|| format!("fault {spec:?}: expected [ENDPOINT.]FIELD=VALUE"))?;
        let (endpoint, field) = match key.split_once('.') {
            Some((e, f)) => (Some(e), f),
            None => (None, key),
        };
        let rule = match endpoint {
            None => &mut self.global,
            Some(e) => {
                if !ENDPOINTS.contains(&e) {
                    return Err(format!(
                        "fault {spec:?}: unknown endpoint {e:?}, expected one of {}",
                        ENDPOINTS.join(", ")
                    ));
                }
                let global = self.global.clone();
                self.endpoints.entry(e.to_string()).or_insert(global)
            }
        };
        rule.set(field, value).map_err(|e| format!("fault {spec:?}: {e}"))?;
        self.validate()
    }
}

/// Probabilities (0..=1) of each fault for one request. The exclusive outcomes (`drop`,
/// `html_502`, `error_500`, `error_503`, `burst_429`) are drawn with one number, so their sum
/// must not exceed 1; latency is drawn separately and adds to any outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRule {
    /// Answer 500 with a JSON errors body (`internal_server_error`).
    pub error_500: f64,
    /// Answer 503 with a JSON errors body (`service_unavailable`).
    pub error_503: f64,
    /// Answer 502 with an HTML page, as a load balancer does.
    pub html_502: f64,
    /// Close the connection without any response.
    pub drop: f64,
    /// Start a burst of `burst_len` consecutive 429 answers (every endpoint).
    pub burst_429: f64,
    /// Length of a 429 burst (requests, including the first).
    pub burst_len: u32,
    /// Add latency before answering.
    pub latency: f64,
    /// Minimum added latency in milliseconds.
    pub latency_min_ms: u64,
    /// Maximum added latency in milliseconds.
    pub latency_max_ms: u64,
}

impl Default for FaultRule {
    fn default() -> Self {
        Self {
            error_500: 0.0,
            error_503: 0.0,
            html_502: 0.0,
            drop: 0.0,
            burst_429: 0.0,
            burst_len: 5,
            latency: 0.0,
            latency_min_ms: 100,
            latency_max_ms: 1000,
        }
    }
}

impl FaultRule {
    fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("error_500", self.error_500),
            ("error_503", self.error_503),
            ("html_502", self.html_502),
            ("drop", self.drop),
            ("burst_429", self.burst_429),
            ("latency", self.latency),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} = {p}: a probability must be within 0..=1"));
            }
        }
        let exclusive = self.error_500 + self.error_503 + self.html_502 + self.drop + self.burst_429;
        if exclusive > 1.0 + 1e-9 {
            return Err(format!(
                "error_500 + error_503 + html_502 + drop + burst_429 = {exclusive}: must not exceed 1"
            ));
        }
        if self.latency_min_ms > self.latency_max_ms {
            return Err("latency_min_ms must not exceed latency_max_ms".to_string());
        }
        if self.burst_len == 0 {
            return Err("burst_len must be at least 1".to_string());
        }
        Ok(())
    }

    fn set(&mut self, field: &str, value: &str) -> Result<(), String> {
        fn prob(v: &str) -> Result<f64, String> {
            v.parse::<f64>().map_err(|_| format!("{v:?} is not a number"))
        }
        fn int(v: &str) -> Result<u64, String> {
            v.parse::<u64>().map_err(|_| format!("{v:?} is not a non-negative integer"))
        }
        match field {
            "error_500" => self.error_500 = prob(value)?,
            "error_503" => self.error_503 = prob(value)?,
            "html_502" => self.html_502 = prob(value)?,
            "drop" => self.drop = prob(value)?,
            "burst_429" => self.burst_429 = prob(value)?,
            "burst_len" => {
                self.burst_len = u32::try_from(int(value)?).map_err(|_| "burst_len too large")?;
            }
            "latency" => self.latency = prob(value)?,
            "latency_min_ms" => self.latency_min_ms = int(value)?,
            "latency_max_ms" => self.latency_max_ms = int(value)?,
            other => {
                return Err(format!(
                    "unknown field {other:?}: expected error_500, error_503, html_502, drop, \
                     burst_429, burst_len, latency, latency_min_ms or latency_max_ms"
                ));
            }
        }
        Ok(())
    }
}

/// Parses `REQUESTS/DURATION`, e.g. `100/5s` or `1000/5m`.
pub fn parse_rate_limit(s: &str) -> Result<(u32, Duration), String> {
    let (n, per) =
        s.split_once('/').ok_or_else(|| format!("rate limit {s:?}: expected REQUESTS/DURATION such as 100/5s"))?;
    let n: u32 = n.trim().parse().map_err(|_| format!("rate limit {s:?}: {n:?} is not a request count"))?;
    let per = humantime::parse_duration(per.trim()).map_err(|e| format!("rate limit {s:?}: duration {per:?}: {e}"))?;
    if n == 0 || per.is_zero() {
        return Err(format!("rate limit {s:?}: requests and duration must be positive"));
    }
    Ok((n, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_parses() {
        assert_eq!(parse_rate_limit("100/5s"), Ok((100, Duration::from_secs(5))));
        assert_eq!(parse_rate_limit("1000/5m"), Ok((1000, Duration::from_secs(300))));
        assert!(parse_rate_limit("100").is_err());
        assert!(parse_rate_limit("0/5s").is_err());
    }

    #[test]
    fn fault_settings_apply_and_validate() {
        let mut f = FaultConfig::default();
        f.apply_setting("error_500=0.5").unwrap();
        f.apply_setting("check_dcv.drop=0.25").unwrap();
        assert_eq!(f.global.error_500, 0.5);
        // an endpoint rule starts from the global one
        assert_eq!(f.rule_for("check_dcv").error_500, 0.5);
        assert_eq!(f.rule_for("check_dcv").drop, 0.25);
        assert!(f.apply_setting("html_502=0.6").is_err());
        assert!(f.apply_setting("nope.drop=0.1").is_err());
        assert!(f.apply_setting("drop=2").is_err());
    }
}
