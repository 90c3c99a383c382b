//! Request and response bodies of the CertCentral endpoints dcvd uses.
//!
//! Parsing is defensive: unknown fields are ignored, tokens are accepted as JSON strings or
//! numbers, timestamps with `Z` or `+00:00`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A DCV method, as CertCentral spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DcvMethod {
    /// TXT record holding the random value.
    DnsTxtToken,
    /// CNAME record built from the random value.
    DnsCnameToken,
    /// A file on the web server (not published by dcvd).
    HttpToken,
    /// Email (not published by dcvd).
    Email,
    /// Any other method, kept verbatim.
    #[serde(untagged)]
    Other(String),
}

impl DcvMethod {
    /// The method as CertCentral writes it (`dns-txt-token`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            Self::DnsTxtToken => "dns-txt-token",
            Self::DnsCnameToken => "dns-cname-token",
            Self::HttpToken => "http-token",
            Self::Email => "email",
            Self::Other(s) => s,
        }
    }
}

/// `PUT /order/certificate/{id}/dcv-random-value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcvRandomValue {
    /// The order's random value.
    #[serde(deserialize_with = "string_or_number")]
    pub dcv_random_value: String,
    /// When it expires.
    #[serde(default, deserialize_with = "opt_timestamp", skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<DateTime<Utc>>,
}

/// Per-name status in `dns_name_validations` (check-dcv and Order validation status).
///
/// check-dcv answers `{dns_name, status}`; the Order validation status endpoint answers
/// `{domain_id, name_scope, dns_names, status, method, ...}` instead, with ids as strings. Every
/// field is optional here so that both parse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNameValidation {
    /// The domain name (check-dcv; empty when the answer carries `dns_names` instead).
    #[serde(default)]
    pub dns_name: String,
    /// The names this entry covers (Order validation status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// Where DigiCert validates the names of [`Self::dns_names`]: the base domain
    /// (`example.com` for `sub.example.com`) or the name itself (Order validation status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_scope: Option<String>,
    /// The account's domain id (sent as a string by the Order validation status endpoint).
    #[serde(default, deserialize_with = "opt_string_or_number", skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    /// The DCV method of this entry, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<DcvMethod>,
    /// Its DCV status (`valid`, `pending`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Validation date, when present.
    #[serde(default, deserialize_with = "opt_timestamp", skip_serializing_if = "Option::is_none")]
    pub validated_on: Option<DateTime<Utc>>,
}

/// `PUT /order/certificate/{id}/check-dcv` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDcvResponse {
    /// Order status (`pending`, `issued`, ...).
    #[serde(default)]
    pub order_status: Option<String>,
    /// Certificate id.
    #[serde(default)]
    pub certificate_id: Option<u64>,
    /// DCV status after the check (`valid`, `pending`).
    #[serde(default)]
    pub dcv_status: Option<String>,
    /// Per-name progress (newer answers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name_validations: Option<Vec<DnsNameValidation>>,
}

impl CheckDcvResponse {
    /// Whether DigiCert reports the order's DCV as complete.
    pub fn is_valid(&self) -> bool {
        self.dcv_status.as_deref() == Some("valid")
    }
}

/// The certificate part of Order info.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCertificate {
    /// Certificate id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Common name.
    #[serde(default)]
    pub common_name: Option<String>,
    /// Every name on the certificate; some products return `[" "]`: use
    /// [`OrderInfo::dns_names`] which filters blanks.
    #[serde(default)]
    pub dns_names: Vec<String>,
}

/// The product of an order (`product{name_id, name, type}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stable product id, e.g. `ssl_dv_geotrust`, `ssl_plus`, `ssl_ev_basic`. Filter on this
    /// rather than on [`Self::kind`]: the EV value of `type` is not documented.
    #[serde(default)]
    pub name_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `dv_ssl_certificate`, `ssl_certificate`, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// The container (division) an order or a domain belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Container id.
    #[serde(deserialize_with = "u64_from_string_or_number")]
    pub id: u64,
    /// Container name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `GET /order/certificate/{id}` (the fields dcvd uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderInfo {
    /// Order id.
    pub id: u64,
    /// Order status (`pending`, `issued`, `canceled`, `rejected`, `revoked`, `expired`, ...).
    pub status: String,
    /// The order's DCV method, when set.
    #[serde(default)]
    pub dcv_method: Option<DcvMethod>,
    /// Certificate details.
    #[serde(default)]
    pub certificate: OrderCertificate,
    /// The product (`product.name_id` is what discovery filters on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Product>,
    /// The container the order belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

impl OrderInfo {
    /// `product.name_id`, when the answer carries it.
    pub fn product_name_id(&self) -> Option<&str> {
        self.product.as_ref().and_then(|p| p.name_id.as_deref())
    }

    /// `container.id`, when the answer carries it.
    pub fn container_id(&self) -> Option<u64> {
        self.container.as_ref().map(|c| c.id)
    }

    /// The order's DNS names, without blanks (some products return `[" "]`), falling back to the
    /// common name.
    pub fn dns_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.certificate.dns_names.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        if names.is_empty()
            && let Some(cn) = self.certificate.common_name.as_deref().map(str::trim).filter(|c| !c.is_empty())
        {
            names.push(cn.to_string());
        }
        names
    }
}

/// Whether an order status is terminal (no validation will ever be needed again).
pub fn is_terminal_order_status(status: &str) -> bool {
    matches!(status, "issued" | "canceled" | "rejected" | "revoked" | "expired")
}

/// `GET /order/certificate/{id}/validation` (Order validation status). Ids come as strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderValidation {
    /// The order id (a string in DigiCert's answer).
    #[serde(default, deserialize_with = "opt_string_or_number", skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The order status (`pending`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_status: Option<String>,
    /// The order's DCV method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_dcv_method: Option<DcvMethod>,
    /// Where DigiCert validates this order's names: `base_domain` or `fqdn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_name_scope: Option<String>,
    /// Per-name DCV status.
    #[serde(default)]
    pub dns_name_validations: Vec<DnsNameValidation>,
}

/// A validation type to submit a domain for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationType {
    /// `ov`, `ev`, `cs`, `ev_cs`, ...
    #[serde(rename = "type")]
    pub kind: String,
}

/// `POST /domain/{id}/validation` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitValidationRequest {
    /// Validation types.
    pub validations: Vec<ValidationType>,
    /// DCV method to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv_method: Option<DcvMethod>,
    /// For the email method: who gets the emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_array: Option<Vec<String>>,
}

/// Email addresses DigiCert would write to (email method only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationEmails {
    /// Domain scope of the constructed addresses.
    #[serde(default)]
    pub name_scope: Option<String>,
    /// Constructed addresses.
    #[serde(default)]
    pub base_emails: Vec<String>,
    /// Addresses that can be chosen from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_array: Option<Vec<String>>,
}

/// A domain-level DCV token (OV/EV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcvToken {
    /// The random value.
    #[serde(deserialize_with = "string_or_number")]
    pub token: String,
    /// `pending` or `active`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When it expires.
    #[serde(default, deserialize_with = "opt_timestamp", skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<DateTime<Utc>>,
    /// CNAME method: the target suffix (`dcv.digicert.com`); http method: the file URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_value: Option<String>,
    /// http method only: where the file goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_token_url: Option<String>,
}

/// `POST /domain/{id}/validation` (200/201; DigiCert may also answer 204 with no body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitValidationResponse {
    /// Domain id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Email method only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_emails: Option<ValidationEmails>,
    /// Token methods: the token to publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv_token: Option<DcvToken>,
}

/// `PUT /domain/{id}/dcv/validate-token` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateTokenResponse {
    /// The token checked (documented as `int`, sent as string).
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub token: Option<String>,
    /// `active` when validated, `inactive` otherwise.
    #[serde(default)]
    pub status: Option<String>,
}

impl ValidateTokenResponse {
    /// Whether the domain's DCV is complete.
    pub fn is_active(&self) -> bool {
        self.status.as_deref() == Some("active")
    }
}

/// `GET /domain/{id}?include_dcv=true&include_validation=true` (the fields dcvd uses), and one
/// entry of List domains (same shape, without `dcv_token` and with active validations only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Domain id.
    pub id: u64,
    /// Domain name.
    pub name: String,
    /// Deprecated by DigiCert (`pending`, `approved` seen); use [`Self::validations`].
    #[serde(default)]
    pub status: Option<String>,
    /// Whether the domain is active in the account (`None` when the answer left it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_active: Option<bool>,
    /// The container the domain belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// When DCV reuse ends per validation type; absent until DCV was completed once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv_expiration: Option<DcvExpiration>,
    /// The domain's DCV method.
    #[serde(default)]
    pub dcv_method: Option<DcvMethod>,
    /// The current token, with `include_dcv=true`.
    #[serde(default)]
    pub dcv_token: Option<DcvToken>,
    /// Validation types and their status, with `include_validation=true`.
    #[serde(default)]
    pub validations: Vec<DomainValidation>,
}

/// One validation type of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainValidation {
    /// `ov`, `ev`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `active`, `pending`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// When this validation expires.
    #[serde(default, deserialize_with = "opt_timestamp", skip_serializing_if = "Option::is_none")]
    pub validated_until: Option<DateTime<Utc>>,
    /// DCV status of this validation (`complete` seen; `pending` inferred).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcv_status: Option<String>,
}

/// `dcv_expiration{ov, ev}` of a domain: when reusing its DCV ends, per validation type.
///
/// With `include_dcv_expiration_time=true` (what this client sends to List domains) the values
/// are ISO-8601 timestamps in UTC; without it they are `YYYY-MM-DD` dates in Mountain Time. A
/// bare date is read as 00:00 at UTC-6 (06:00 UTC), the earliest instant that date can start in
/// Mountain Time, so a deadline computed from it is never late. (Inference: DigiCert's example
/// pairs `"ev": "2023-03-27"` with `validated_until: "2023-03-27T06:00:00+00:00"`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcvExpiration {
    /// OV DCV reuse ends.
    #[serde(default, deserialize_with = "opt_timestamp_or_date", skip_serializing_if = "Option::is_none")]
    pub ov: Option<DateTime<Utc>>,
    /// EV DCV reuse ends.
    #[serde(default, deserialize_with = "opt_timestamp_or_date", skip_serializing_if = "Option::is_none")]
    pub ev: Option<DateTime<Utc>>,
    /// `expired`, `expiring_soon` (within 60 days) or `valid`; only with the reuse-status filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ov_status: Option<String>,
    /// As [`Self::ov_status`], for EV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ev_status: Option<String>,
}

impl DcvExpiration {
    /// The expiry of validation type `kind` (`ov` or `ev`).
    pub fn of(&self, kind: &str) -> Option<DateTime<Utc>> {
        match kind {
            "ov" => self.ov,
            "ev" => self.ev,
            _ => None,
        }
    }
}

impl DomainInfo {
    /// `container.id`, when the answer carries it.
    pub fn container_id(&self) -> Option<u64> {
        self.container.as_ref().map(|c| c.id)
    }

    /// The validation of type `kind` (`ov`, `ev`), if listed.
    pub fn validation(&self, kind: &str) -> Option<&DomainValidation> {
        self.validations.iter().find(|v| v.kind.eq_ignore_ascii_case(kind))
    }
}

/// `page{total, limit, offset}` of a list answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Entries matching the filters, over all pages.
    #[serde(default)]
    pub total: u64,
    /// The page size applied (DigiCert's own examples show `0`: do not rely on it).
    #[serde(default)]
    pub limit: u64,
    /// Where this page starts.
    #[serde(default)]
    pub offset: u64,
}

/// One entry of List orders (the fields discovery uses). It has no `dcv_method`: ask
/// [`crate::Client::order_info`] for that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    /// Order id.
    pub id: u64,
    /// Order status.
    #[serde(default)]
    pub status: String,
    /// Certificate part (common name, DNS names).
    #[serde(default)]
    pub certificate: OrderCertificate,
    /// The product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Product>,
    /// Top-level copy of `product.name_id` (List orders carries both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name_id: Option<String>,
    /// The container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    /// When the order was placed.
    #[serde(default, deserialize_with = "opt_timestamp", skip_serializing_if = "Option::is_none")]
    pub date_created: Option<DateTime<Utc>>,
}

impl OrderSummary {
    /// The product name id, from `product.name_id` or the top-level copy.
    pub fn product_name_id(&self) -> Option<&str> {
        self.product.as_ref().and_then(|p| p.name_id.as_deref()).or(self.product_name_id.as_deref())
    }

    /// `container.id`, when the answer carries it.
    pub fn container_id(&self) -> Option<u64> {
        self.container.as_ref().map(|c| c.id)
    }
}

/// `GET /order/certificate` (List orders). An empty result has no `orders` key at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderList {
    /// This page's orders.
    #[serde(default)]
    pub orders: Vec<OrderSummary>,
    /// Paging.
    #[serde(default)]
    pub page: Page,
}

/// `GET /domain` (List domains).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainList {
    /// This page's domains (`dcv_token` is never listed; `validations` holds active ones only).
    #[serde(default)]
    pub domains: Vec<DomainInfo>,
    /// Paging.
    #[serde(default)]
    pub page: Page,
}

/// One entry of DigiCert's `{"errors":[{"code","message"}]}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorEntry {
    /// Error code, trimmed of stray whitespace when parsed by the client.
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// DigiCert's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The errors.
    pub errors: Vec<ApiErrorEntry>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sn {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Sn::deserialize(d)? {
        Sn::S(s) => s,
        Sn::N(n) => n.to_string(),
    })
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sn {
        S(String),
        N(serde_json::Number),
    }
    Ok(Option::<Sn>::deserialize(d)?.map(|v| match v {
        Sn::S(s) => s,
        Sn::N(n) => n.to_string(),
    }))
}

fn u64_from_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let raw = string_or_number(d)?;
    raw.trim().parse().map_err(|_| serde::de::Error::custom(format!("invalid id {raw:?}")))
}

/// Parses a timestamp ([`parse_timestamp`]) or a bare `YYYY-MM-DD` date in Mountain Time, read
/// as 06:00 UTC of that date (00:00 at UTC-6, the earliest the date can start there).
pub fn parse_timestamp_or_date(s: &str) -> Option<DateTime<Utc>> {
    parse_timestamp(s).or_else(|| {
        chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(6, 0, 0))
            .map(|n| n.and_utc())
    })
}

fn opt_timestamp_or_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_timestamp_or_date(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid date or timestamp {s:?}"))),
    }
}

/// Parses `2023-02-24T16:25:52+00:00`, `...Z`, and the space-separated `2023-02-24 16:25:52`
/// form some CertCentral endpoints use.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .map(|n| n.and_utc())
}

fn opt_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => {
            parse_timestamp(&s).map(Some).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
        }
    }
}
