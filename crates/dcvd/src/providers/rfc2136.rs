//! `type = "rfc2136"`: dynamic DNS updates (RFC 2136) signed with TSIG. The TSIG secret is
//! checked to be base64 here, so a bad secret is reported at load with its position.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use dns_provider::SharedProvider;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use toml::Spanned;

use super::{BuildContext, ProviderSettings};
use crate::config::Secret;
use crate::config::section::{ConfigError, P, Section, ServerAddr, Zone};

/// Default timeout of an update exchange.
const RFC2136_TIMEOUT: Duration = Duration::from_secs(10);

super::section_schema! {
    /// The section as written.
    struct Raw {
        server: P<ServerAddr>,
        tsig_key_name: P<Zone>,
        tsig_algorithm: Option<TsigAlgorithm>,
        tsig_secret_file: Option<Spanned<String>>,
        tsig_secret_env: Option<Spanned<String>>,
        timeout: Option<P<Duration>>,
    }
}

/// `tsig_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TsigAlgorithm {
    /// `hmac-sha256` (default).
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// `hmac-sha384`.
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    /// `hmac-sha512`.
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl TsigAlgorithm {
    /// The configuration spelling, e.g. `hmac-sha256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha384 => "hmac-sha384",
            Self::HmacSha512 => "hmac-sha512",
        }
    }
}

/// The settings of an RFC 2136 provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc2136 {
    /// The primary server accepting updates.
    pub server: SocketAddr,
    /// TSIG key name (normalized).
    pub tsig_key_name: String,
    /// TSIG algorithm (default hmac-sha256).
    pub tsig_algorithm: TsigAlgorithm,
    /// TSIG secret, base64 as `tsig-keygen` prints it (`tsig_secret_file` or `tsig_secret_env`).
    pub tsig_secret: Secret,
    /// Timeout of one update exchange (default 10s).
    pub timeout: Duration,
}

/// Validates an `rfc2136` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let secret = section.secret(
        ("tsig_secret_file", raw.tsig_secret_file.as_ref()),
        ("tsig_secret_env", raw.tsig_secret_env.as_ref()),
        None,
    )?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(secret.value.expose_secret().as_bytes());
    // Never echo the secret or the decoder's message (it quotes a byte of it).
    if !decoded.is_ok_and(|key| !key.is_empty()) {
        return Err(section.error(
            &secret.span,
            format!(
                "the TSIG secret from {} (`{}`) is not valid base64: give the \
                 `secret` of the key as `tsig-keygen` prints it",
                secret.origin, secret.key
            ),
        ));
    }
    Ok(Arc::new(Rfc2136 {
        server: raw.server.0.0,
        tsig_key_name: raw.tsig_key_name.0.0,
        tsig_algorithm: raw.tsig_algorithm.unwrap_or(TsigAlgorithm::HmacSha256),
        tsig_secret: secret.value,
        timeout: raw.timeout.map_or(RFC2136_TIMEOUT, |t| t.0),
    }))
}

#[async_trait]
impl ProviderSettings for Rfc2136 {
    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        Ok(Arc::new(dns_provider::rfc2136::Rfc2136Provider::new(dns_provider::rfc2136::Rfc2136Settings {
            server: self.server,
            zones: cx.zones.to_vec(),
            tsig_key_name: self.tsig_key_name.clone(),
            tsig_algorithm: self.tsig_algorithm.as_str().to_owned(),
            tsig_secret: self.tsig_secret.secret_string(),
            timeout: self.timeout,
        })?))
    }
}
