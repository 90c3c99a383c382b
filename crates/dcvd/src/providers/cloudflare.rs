//! `type = "cloudflare"`: Cloudflare's v4 API with a scoped API token (`api_token_file` or
//! `api_token_env`). The token is the account for the rate limit (Cloudflare: 1,200 requests
//! per five minutes per user).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use secrecy::ExposeSecret as _;
use toml::Spanned;

use super::{BuildContext, ProviderSettings, fingerprint};
use crate::config::Secret;
use crate::config::section::{ConfigError, HttpUrl, P, Section, insecure_http_host, normalize};

super::section_schema! {
    /// The section as written.
    struct Raw {
        api_token_file: Option<Spanned<String>>,
        api_token_env: Option<Spanned<String>>,
        base_url: Option<Spanned<P<HttpUrl>>>,
        zone_ids: Option<Spanned<BTreeMap<String, String>>>,
    }
}

/// The settings of a Cloudflare provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloudflare {
    /// API token (`api_token_file` or `api_token_env`).
    pub api_token: Secret,
    /// API base override (`.../client/v4`), for fakes.
    pub base_url: Option<String>,
    /// Zone ids by zone name, to skip the lookup.
    pub zone_ids: BTreeMap<String, String>,
}

/// Validates a `cloudflare` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let name = section.name().to_owned();
    let zones = section.zones();
    if let Some(url) = &raw.base_url
        && let Some(host) = insecure_http_host(&url.get_ref().0.0)
    {
        return Err(section.error(
            &url.span(),
            format!(
                "provider `{name}`: base_url {:?} uses plain http to {host}, which would send the \
                 API token unencrypted: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 \
                 or localhost)",
                url.get_ref().0.0
            ),
        ));
    }
    let token = section.secret(
        ("api_token_file", raw.api_token_file.as_ref()),
        ("api_token_env", raw.api_token_env.as_ref()),
        None,
    )?;
    let mut zone_ids = BTreeMap::new();
    if let Some(ids) = &raw.zone_ids {
        for (zone, id) in ids.get_ref() {
            let zone = normalize(zone, false).map_err(|e| section.error(&ids.span(), format!("in `zone_ids`: {e}")))?;
            if !zones.contains(&zone) {
                return Err(section.error(
                    &ids.span(),
                    format!("`zone_ids` names zone {zone}, which is not in the `zones` of provider `{name}`"),
                ));
            }
            if id.trim().is_empty() {
                return Err(section.error(&ids.span(), format!("`zone_ids` gives an empty id for zone {zone}")));
            }
            zone_ids.insert(zone, id.trim().to_owned());
        }
    }
    Ok(Arc::new(Cloudflare { api_token: token.value, base_url: raw.base_url.map(|u| u.into_inner().0.0), zone_ids }))
}

#[async_trait]
impl ProviderSettings for Cloudflare {
    fn account(&self) -> Option<String> {
        Some(format!(
            "cloudflare:{}:{}",
            self.base_url.as_deref().unwrap_or(dns_provider::cloudflare::DEFAULT_BASE_URL),
            fingerprint(self.api_token.expose_secret())
        ))
    }

    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        let mut settings =
            dns_provider::cloudflare::CloudflareSettings::new(cx.zones.to_vec(), self.api_token.secret_string());
        if let Some(url) = &self.base_url {
            settings.base_url.clone_from(url);
        }
        settings.zone_ids = self.zone_ids.clone();
        settings.gate = cx.gate.clone();
        Ok(Arc::new(dns_provider::cloudflare::CloudflareProvider::new(settings)?))
    }
}
