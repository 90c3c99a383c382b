//! `type = "powerdns"`: PowerDNS Authoritative's HTTP API with its `api-key`. PowerDNS does not
//! throttle (no default rate limit); the API URL and key are the account when `rate_limit` is
//! set (for a proxy in front of it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use secrecy::ExposeSecret as _;
use toml::Spanned;

use super::{BuildContext, ProviderSettings, fingerprint};
use crate::config::Secret;
use crate::config::section::{ApiUrl, ConfigError, P, Section};

/// Default timeout of one API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

super::section_schema! {
    /// The section as written.
    struct Raw {
        api_url: P<ApiUrl>,
        api_key_file: Option<Spanned<String>>,
        api_key_env: Option<Spanned<String>>,
        server_id: Option<Spanned<String>>,
        timeout: Option<P<Duration>>,
    }
}

/// The settings of a PowerDNS provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerDns {
    /// The webserver URL (https, or http to loopback); `/api/v1` is appended.
    pub api_url: String,
    /// The `api-key` of pdns.conf (`api_key_file` or `api_key_env`).
    pub api_key: Secret,
    /// Server id in API paths (default `localhost`).
    pub server_id: String,
    /// Timeout of one API request (default 30s).
    pub timeout: Duration,
}

/// Validates a `powerdns` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let key =
        section.secret(("api_key_file", raw.api_key_file.as_ref()), ("api_key_env", raw.api_key_env.as_ref()), None)?;
    let server_id = match raw.server_id {
        None => "localhost".to_owned(),
        Some(id) => {
            let value = id.get_ref().trim();
            if value.is_empty() || value.contains('/') {
                return Err(section.error(
                    &id.span(),
                    format!(
                        "provider `{}`: server_id {value:?} is not valid: PowerDNS \
                         Authoritative uses \"localhost\" (the default)",
                        section.name()
                    ),
                ));
            }
            value.to_owned()
        }
    };
    Ok(Arc::new(PowerDns {
        api_url: raw.api_url.0.0,
        api_key: key.value,
        server_id,
        timeout: raw.timeout.map_or(HTTP_TIMEOUT, |t| t.0),
    }))
}

#[async_trait]
impl ProviderSettings for PowerDns {
    fn account(&self) -> Option<String> {
        Some(format!("powerdns:{}:{}", self.api_url, fingerprint(self.api_key.expose_secret())))
    }

    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        let mut settings = dns_provider::powerdns::PowerDnsSettings::new(
            self.api_url.clone(),
            self.api_key.secret_string(),
            cx.zones.to_vec(),
        );
        settings.server_id.clone_from(&self.server_id);
        settings.timeout = self.timeout;
        settings.gate = cx.gate.clone();
        Ok(Arc::new(dns_provider::powerdns::PowerDnsProvider::new(settings)?))
    }
}
