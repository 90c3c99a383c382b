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

/// Per-name status in `dns_name_validations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNameValidation {
    /// The domain name.
    pub dns_name: String,
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
}

impl OrderInfo {
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

/// `GET /order/certificate/{id}/validation`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderValidation {
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

/// `GET /domain/{id}?include_dcv=true&include_validation=true` (the fields dcvd uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Domain id.
    pub id: u64,
    /// Domain name.
    pub name: String,
    /// `active`, `inactive`, ...
    #[serde(default)]
    pub status: Option<String>,
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
