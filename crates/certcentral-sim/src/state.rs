//! The simulator's world: DV orders, OV/EV domains, the statistics, and what the admin API shows.

use certcentral::ValidationScope;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A DCV method, spelled as DigiCert spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DcvMethod {
    /// `dns-txt-token`
    #[serde(rename = "dns-txt-token")]
    DnsTxtToken,
    /// `dns-cname-token`
    #[serde(rename = "dns-cname-token")]
    DnsCnameToken,
    /// `http-token` (never validates here: the simulator does no HTTP checks)
    #[serde(rename = "http-token")]
    HttpToken,
    /// `email` (never validates here)
    #[serde(rename = "email")]
    Email,
}

impl DcvMethod {
    /// DigiCert's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsTxtToken => "dns-txt-token",
            Self::DnsCnameToken => "dns-cname-token",
            Self::HttpToken => "http-token",
            Self::Email => "email",
        }
    }

    /// Parses DigiCert's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dns-txt-token" => Some(Self::DnsTxtToken),
            "dns-cname-token" => Some(Self::DnsCnameToken),
            "http-token" => Some(Self::HttpToken),
            "email" => Some(Self::Email),
            _ => None,
        }
    }

    pub(crate) fn uses_token(self) -> bool {
        !matches!(self, Self::Email)
    }
}

fn default_method() -> DcvMethod {
    DcvMethod::DnsTxtToken
}

/// A DV order to create (admin API, `--orders` file, [`crate::Sim::add_order`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Order id.
    pub id: u64,
    /// Names on the certificate (`*.` wildcards allowed).
    pub dns_names: Vec<String>,
    /// DCV method (default `dns-txt-token`).
    #[serde(default = "default_method")]
    pub dcv_method: DcvMethod,
    /// Order status (default `pending`).
    #[serde(default)]
    pub status: Option<String>,
    /// Common name (default: the first DNS name).
    #[serde(default)]
    pub common_name: Option<String>,
    /// Certificate id (default: the order id + 1_000_000).
    #[serde(default)]
    pub certificate_id: Option<u64>,
    /// A fixed initial random value (default: a generated one).
    #[serde(default)]
    pub dcv_random_value: Option<String>,
    /// The order's own domain validation scope (CertCentral lets a requester choose it per
    /// order); default: the account's.
    #[serde(default)]
    pub validation_scope: Option<ValidationScope>,
    /// Product name id (default [`DEFAULT_PRODUCT`]).
    #[serde(default)]
    pub product_name_id: Option<String>,
    /// Container id (default [`DEFAULT_CONTAINER`]).
    #[serde(default)]
    pub container_id: Option<u64>,
}

/// The product of orders created without one (GeoTrust Standard DV).
pub const DEFAULT_PRODUCT: &str = "ssl_dv_geotrust";
/// The container of orders and domains created without one.
pub const DEFAULT_CONTAINER: u64 = 1;

/// Order statuses the simulator accepts: DigiCert's List orders filter values, plus
/// `needs_approval` and `expired` (seen in Order info's docs). `pending` is the only one in which
/// DCV runs.
pub const ORDER_STATUSES: &[&str] = &[
    "pending",
    "issued",
    "rejected",
    "revoked",
    "waiting_pickup",
    "reissue_pending",
    "canceled",
    "needs_approval",
    "expired",
];

impl NewOrder {
    /// A pending `dns-txt-token` order for `dns_names`.
    pub fn new(id: u64, dns_names: &[&str]) -> Self {
        Self {
            id,
            dns_names: dns_names.iter().map(|s| (*s).to_string()).collect(),
            dcv_method: DcvMethod::DnsTxtToken,
            status: None,
            common_name: None,
            certificate_id: None,
            dcv_random_value: None,
            validation_scope: None,
            product_name_id: None,
            container_id: None,
        }
    }

    /// Sets the status (`pending`, `issued`, ...).
    pub fn with_status(mut self, status: &str) -> Self {
        self.status = Some(status.to_string());
        self
    }

    /// Sets the product name id.
    pub fn with_product(mut self, product_name_id: &str) -> Self {
        self.product_name_id = Some(product_name_id.to_string());
        self
    }

    /// Sets the container id.
    pub fn with_container(mut self, container_id: u64) -> Self {
        self.container_id = Some(container_id);
        self
    }

    /// Sets the DCV method.
    pub fn with_method(mut self, method: DcvMethod) -> Self {
        self.dcv_method = method;
        self
    }
}

/// An OV/EV domain to create.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// Domain id.
    pub id: u64,
    /// Domain name.
    pub name: String,
    /// DCV method (default `dns-txt-token`).
    #[serde(default = "default_method")]
    pub dcv_method: DcvMethod,
    /// Validation types already submitted (`ov`, `ev`), pending.
    #[serde(default)]
    pub validations: Vec<String>,
    /// A current token (default: none until one is requested).
    #[serde(default)]
    pub token: Option<String>,
    /// Domain status (default `active`; deprecated by DigiCert, shown as `status`).
    #[serde(default)]
    pub status: Option<String>,
    /// Validation types already validated, and until when (an instant in the past makes an
    /// expired validation). Each also sets `dcv_expiration` of that type to the same instant,
    /// and the domain counts as DCV-complete when one of them lies in the future.
    #[serde(default)]
    pub validated_until: BTreeMap<String, DateTime<Utc>>,
    /// Whether the domain is active in the account (default `true`).
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Container id (default [`DEFAULT_CONTAINER`]).
    #[serde(default)]
    pub container_id: Option<u64>,
}

impl NewDomain {
    /// An active `dns-txt-token` domain without validations or token.
    pub fn new(id: u64, name: &str) -> Self {
        Self {
            id,
            name: name.to_string(),
            dcv_method: DcvMethod::DnsTxtToken,
            validations: Vec::new(),
            token: None,
            status: None,
            validated_until: BTreeMap::new(),
            is_active: None,
            container_id: None,
        }
    }

    /// Marks validation type `kind` (`ov`, `ev`) validated until `until`.
    pub fn validated(mut self, kind: &str, until: DateTime<Utc>) -> Self {
        self.validated_until.insert(kind.to_string(), until);
        self
    }

    /// Adds validation type `kind` as submitted and pending.
    pub fn pending(mut self, kind: &str) -> Self {
        self.validations.push(kind.to_string());
        self
    }

    /// Sets the container id.
    pub fn with_container(mut self, container_id: u64) -> Self {
        self.container_id = Some(container_id);
        self
    }

    /// Sets the DCV method.
    pub fn with_method(mut self, method: DcvMethod) -> Self {
        self.dcv_method = method;
        self
    }
}

/// Orders and domains to load at start (`--orders FILE`, TOML `[[order]]`/`[[domain]]` or JSON
/// `{"orders": [...], "domains": [...]}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// DV orders.
    #[serde(default, alias = "order")]
    pub orders: Vec<NewOrder>,
    /// OV/EV domains.
    #[serde(default, alias = "domain")]
    pub domains: Vec<NewDomain>,
}

impl Fixtures {
    /// The orders and domains of `account`, domain validations counted from `now`.
    pub fn synthetic(account: &SyntheticAccount, now: DateTime<Utc>) -> Self {
        let zones = if account.zones.is_empty() { default_zones() } else { account.zones.clone() };
        let zone = |i: u64| &zones[usize::try_from(i).unwrap_or(0) % zones.len()];
        let pending = account.pending.min(account.orders);
        let orders = (0..account.orders)
            .map(|i| {
                let id = account.first_order_id + i;
                // pending orders spread evenly: order i is pending when floor((i+1)p/n) grows
                let is_pending = (i + 1) * pending / account.orders.max(1) > i * pending / account.orders.max(1);
                let status = if is_pending {
                    "pending"
                } else if i % 10 == 9 {
                    "canceled"
                } else {
                    "issued"
                };
                let name = format!("o{id}.{}", zone(i));
                NewOrder::new(id, &[&name, &format!("www.{name}")]).with_status(status)
            })
            .collect();
        let domains = (0..account.domains)
            .map(|i| {
                let id = account.first_domain_id + i;
                let until = now + chrono::Duration::days(i64::try_from(i % 397).unwrap_or(0) + 1);
                NewDomain::new(id, &format!("d{id}.{}", zone(i))).validated("ov", until)
            })
            .collect();
        Self { orders, domains }
    }

    /// Parses a fixtures file: JSON when the text starts with `{`, TOML otherwise.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON fixtures: {e}"))
        } else {
            toml::from_str(text).map_err(|e| format!("invalid TOML fixtures: {e}"))
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub(crate) id: u64,
    pub(crate) dns_names: Vec<String>,
    pub(crate) common_name: String,
    pub(crate) dcv_method: DcvMethod,
    pub(crate) status: String,
    pub(crate) certificate_id: u64,
    pub(crate) random_value: String,
    pub(crate) random_value_expires: DateTime<Utc>,
    /// When each name was found valid (names never found are absent).
    pub(crate) validated: BTreeMap<String, DateTime<Utc>>,
    pub(crate) dcv_valid: bool,
    /// The order's own validation scope, if it has one.
    pub(crate) validation_scope: Option<ValidationScope>,
    pub(crate) product_name_id: String,
    pub(crate) container_id: u64,
    pub(crate) date_created: DateTime<Utc>,
}

impl Order {
    pub(crate) fn name_validations(&self) -> Vec<NameValidation> {
        self.dns_names
            .iter()
            .map(|n| NameValidation {
                dns_name: n.clone(),
                status: if self.validated.contains_key(n) { "valid" } else { "pending" }.to_string(),
            })
            .collect()
    }

    /// The scope DigiCert applies to this order: its own, else the account's.
    pub(crate) fn scope(&self, account: ValidationScope) -> ValidationScope {
        self.validation_scope.unwrap_or(account)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Domain {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) dcv_method: DcvMethod,
    pub(crate) status: String,
    pub(crate) token: Option<(String, DateTime<Utc>)>,
    /// Validation type -> validated until (None: pending; in the past: expired).
    pub(crate) validations: BTreeMap<String, Option<DateTime<Utc>>>,
    /// When DCV last completed; `None` while a DCV cycle is open (never done, or resubmitted).
    pub(crate) validated_at: Option<DateTime<Utc>>,
    /// Validation type -> when DCV reuse for it ends (absent until DCV completed once).
    pub(crate) dcv_expiration: BTreeMap<String, DateTime<Utc>>,
    pub(crate) is_active: bool,
    pub(crate) container_id: u64,
    pub(crate) date_created: DateTime<Utc>,
}

impl Domain {
    /// Keeps `validated_at` in line with the dates: DCV counts as complete while some
    /// validation or DCV reuse lies in the future, and not once every one lapsed.
    pub(crate) fn refresh_dcv(&mut self, now: DateTime<Utc>) {
        let mut dates = self.validations.values().flatten().chain(self.dcv_expiration.values()).peekable();
        if dates.peek().is_none() {
            // nothing dated (validated without any validation type): leave it as it is
            return;
        }
        let live = dates.any(|t| *t > now);
        if !live {
            self.validated_at = None;
        } else if self.validated_at.is_none() {
            self.validated_at = Some(now);
        }
    }
}

/// Per-name DCV status of a DV order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValidation {
    /// The name as ordered.
    pub dns_name: String,
    /// `valid` or `pending`.
    pub status: String,
}

/// What the admin API shows of a DV order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderView {
    /// Order id.
    pub id: u64,
    /// Names on the certificate.
    pub dns_names: Vec<String>,
    /// DCV method.
    pub dcv_method: DcvMethod,
    /// `pending`, `issued`, ...
    pub status: String,
    /// `valid` once every name validated, else `pending`.
    pub dcv_status: String,
    /// Certificate id.
    pub certificate_id: u64,
    /// The current random value.
    pub dcv_random_value: String,
    /// Its expiry.
    pub expiration_date: DateTime<Utc>,
    /// Whether the random value is still valid at the simulator's clock.
    pub random_value_valid: bool,
    /// Per-name status.
    pub dns_name_validations: Vec<NameValidation>,
    /// Product name id.
    #[serde(default)]
    pub product_name_id: String,
    /// Container id.
    #[serde(default)]
    pub container_id: u64,
}

/// What the admin API shows of an OV/EV domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainView {
    /// Domain id.
    pub id: u64,
    /// Domain name.
    pub name: String,
    /// DCV method.
    pub dcv_method: DcvMethod,
    /// Domain status (`active`, ...).
    pub status: String,
    /// The current token, if any.
    pub token: Option<String>,
    /// Its expiry.
    pub token_expiration_date: Option<DateTime<Utc>>,
    /// Whether the token is still valid at the simulator's clock.
    pub token_valid: bool,
    /// Whether DCV completed.
    pub dcv_valid: bool,
    /// Validation type -> `active`, `pending` or `expired`.
    pub validations: BTreeMap<String, String>,
    /// Validation type -> validated until (types validated at least once).
    #[serde(default)]
    pub validated_until: BTreeMap<String, DateTime<Utc>>,
    /// Validation type -> DCV reuse end (absent until DCV completed once).
    #[serde(default)]
    pub dcv_expiration: BTreeMap<String, DateTime<Utc>>,
    /// Whether the domain is active in the account.
    #[serde(default)]
    pub is_active: bool,
    /// Container id.
    #[serde(default)]
    pub container_id: u64,
}

/// Run-time changes to an order (`PATCH /_sim/orders/{id}`, [`crate::Sim::update_order`]);
/// absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPatch {
    /// New status, one of [`ORDER_STATUSES`].
    #[serde(default)]
    pub status: Option<String>,
    /// New product name id.
    #[serde(default)]
    pub product_name_id: Option<String>,
    /// New container id.
    #[serde(default)]
    pub container_id: Option<u64>,
    /// New DCV method.
    #[serde(default)]
    pub dcv_method: Option<DcvMethod>,
}

/// Run-time changes to a domain (`PATCH /_sim/domains/{id}`, [`crate::Sim::update_domain`]);
/// absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainPatch {
    /// Active in the account or not.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// New container id.
    #[serde(default)]
    pub container_id: Option<u64>,
    /// Validation type -> validated until (`null`: pending). A date sets the type's
    /// `dcv_expiration` too. The domain counts as DCV-complete while one validation lies in
    /// the future.
    #[serde(default)]
    pub validations: BTreeMap<String, Option<DateTime<Utc>>>,
    /// Validation type -> DCV reuse end, set on its own (after `validations`).
    #[serde(default)]
    pub dcv_expiration: BTreeMap<String, DateTime<Utc>>,
}

/// A synthetic account for tests and benchmarks ([`Fixtures::synthetic`], `POST /_sim/bulk`):
/// `orders` DV orders of which `pending` are pending (spread evenly, the rest issued or, every
/// tenth, canceled), and `domains` OV domains validated until 1..=397 days from `now` (so about
/// 30 in 397 fall due within 30 days).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticAccount {
    /// DV orders in total.
    #[serde(default)]
    pub orders: u64,
    /// Of which pending.
    #[serde(default)]
    pub pending: u64,
    /// OV domains.
    #[serde(default)]
    pub domains: u64,
    /// Zones the names are in, used in turn (default `["example.com"]`).
    #[serde(default = "default_zones")]
    pub zones: Vec<String>,
    /// First order id (default 1); ids are consecutive.
    #[serde(default = "default_first_id")]
    pub first_order_id: u64,
    /// First domain id (default 1); ids are consecutive.
    #[serde(default = "default_first_id")]
    pub first_domain_id: u64,
}

fn default_zones() -> Vec<String> {
    vec!["example.com".to_string()]
}

fn default_first_id() -> u64 {
    1
}

impl Default for SyntheticAccount {
    fn default() -> Self {
        Self { orders: 0, pending: 0, domains: 0, zones: default_zones(), first_order_id: 1, first_domain_id: 1 }
    }
}

/// A unit a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// A DV order.
    Order,
    /// An OV/EV domain.
    Domain,
}

/// The outcome of one DCV check call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    /// Every name validated by this check.
    Valid,
    /// Already valid before; no DNS lookups made.
    AlreadyValid,
    /// Some name not found (a premature check).
    NotFound,
    /// The random value / token expired (or none was issued): nothing can validate.
    Expired,
    /// The unit's method cannot be checked (email, http-token).
    WrongMethod,
}

/// One DCV check call, for benchmarks that measure detection latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckEvent {
    /// Order or domain.
    pub kind: UnitKind,
    /// Its id.
    pub id: u64,
    /// The simulator's clock at the check (real time plus the admin offset).
    pub at: DateTime<Utc>,
    /// Real wall-clock time of the check, milliseconds since the Unix epoch.
    pub unix_ms: i64,
    /// What the check answered.
    pub outcome: CheckOutcome,
    /// Names valid after the check.
    pub names_valid: usize,
    /// Names of the unit.
    pub names_total: usize,
    /// Lookups answered from the negative cache during this check.
    pub negative_cache_hits: u64,
}

/// Faults injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// 500 answers.
    pub error_500: u64,
    /// 503 answers.
    pub error_503: u64,
    /// HTML 502 answers.
    pub html_502: u64,
    /// Connections dropped.
    pub dropped: u64,
    /// 429 answers from injected bursts.
    pub burst_429: u64,
    /// Requests delayed.
    pub latency: u64,
}

/// Everything counted since start (or the last reset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests by endpoint name (every request, whatever its answer).
    pub calls: BTreeMap<String, u64>,
    /// Requests by order id, then endpoint.
    pub order_calls: BTreeMap<u64, BTreeMap<String, u64>>,
    /// Requests by domain id, then endpoint.
    pub domain_calls: BTreeMap<u64, BTreeMap<String, u64>>,
    /// 401 answers.
    pub unauthorized: u64,
    /// 429 answers from the rate-limit windows.
    pub rate_limited: u64,
    /// DCV checks that did not find the record on every name (negative-cache hits included).
    pub premature_checks: u64,
    /// DCV checks that completed a validation.
    pub successful_validations: u64,
    /// Random values / tokens generated (DV renewals and OV/EV token requests).
    pub tokens_issued: u64,
    /// DNS queries sent.
    pub dns_queries: u64,
    /// Lookups answered from the negative cache.
    pub negative_cache_hits: u64,
    /// DNS lookups that failed (timeout, SERVFAIL, ...).
    pub dns_errors: u64,
    /// Injected faults.
    pub faults: FaultStats,
    /// Every DCV check call, in order.
    pub checks: Vec<CheckEvent>,
}

impl Stats {
    /// Total 429 answers (windows and injected bursts).
    pub fn too_many_requests(&self) -> u64 {
        self.rate_limited + self.faults.burst_429
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_parse_from_toml_and_json() {
        let toml = Fixtures::parse(
            "[[order]]\nid = 1\ndns_names = [\"example.com\"]\n\n[[domain]]\nid = 2\nname = \"example.org\"\ndcv_method = \"dns-cname-token\"\n",
        )
        .unwrap();
        let json = Fixtures::parse(
            r#"{"orders": [{"id": 1, "dns_names": ["example.com"]}],
                "domains": [{"id": 2, "name": "example.org", "dcv_method": "dns-cname-token"}]}"#,
        )
        .unwrap();
        assert_eq!(toml, json);
        assert_eq!(json.orders[0].dcv_method, DcvMethod::DnsTxtToken);
        assert_eq!(json.domains[0].dcv_method, DcvMethod::DnsCnameToken);
        let err = Fixtures::parse("[[order]]\nid = 1\n").unwrap_err();
        assert!(err.contains("dns_names"), "{err}");
        assert!(Fixtures::parse(r#"{"orders": [{"id": 1, "dns_names": [], "bogus": 1}]}"#).is_err());
    }
}
