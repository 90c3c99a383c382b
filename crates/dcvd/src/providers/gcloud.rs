//! `type = "gcloud"`: Google Cloud DNS (API v1), with a service-account key, a workload identity
//! `external_account` configuration, or the metadata server.
//!
//! The credentials file is read and checked here, so `dcvd check-config` reports a missing,
//! unreadable or malformed file at the key's line and column; its content never reaches an error,
//! a log line or `Debug` (which shows the account and key id only, so a rotated key changes it).
//! The rate-limit account is the project (Cloud DNS meters requests per project).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use dns_provider::gcloud::Credentials;
use secrecy::ExposeSecret as _;
use toml::Spanned;

use super::{BuildContext, ProviderSettings};
use crate::config::section::{BaseUrl, ConfigError, FromConfigStr, P, Section, normalize};

super::section_schema! {
    /// The section as written.
    struct Raw {
        project: Spanned<String>,
        managed_zones: Option<Spanned<BTreeMap<String, String>>>,
        credentials_file: Option<Spanned<String>>,
        auth: Option<Spanned<String>>,
        api_url: Option<P<EndpointUrl>>,
        metadata_url: Option<P<EndpointUrl>>,
        token_url: Option<P<EndpointUrl>>,
    }
}

/// An endpoint override: https, or http to a loopback test server (the rule of `base_url`).
struct EndpointUrl(String);

impl FromConfigStr for EndpointUrl {
    const EXPECTING: &'static str = "an https:// URL (http:// only to a loopback test server)";
    fn from_config_str(s: &str) -> Result<Self, String> {
        BaseUrl::from_config_str(s)
            .map(|u| Self(u.url))
            .map_err(|_| format!("{s:?} must be an https:// URL (plain http:// only to 127.0.0.0/8, ::1 or localhost)"))
    }
}

/// The settings of a Cloud DNS provider. `Debug` shows the credentials' identity, no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Gcloud {
    /// The Google Cloud project holding the managed zones.
    pub project: String,
    /// Managed zone names by zone, to skip the lookup by DNS name.
    pub managed_zones: BTreeMap<String, String>,
    /// Service-account key, workload identity configuration, or the metadata server.
    pub credentials: Credentials,
    /// API root override (fakes).
    pub api_url: Option<String>,
    /// Metadata server override (fakes).
    pub metadata_url: Option<String>,
    /// Token endpoint override (fakes).
    pub token_url: Option<String>,
}

/// Validates a `gcloud` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let name = section.name().to_owned();
    let zones = section.zones();
    let project = raw.project.get_ref().trim();
    if project.is_empty()
        || !project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | ':' | '.'))
    {
        return Err(section.error(
            &raw.project.span(),
            format!("provider `{name}`: `project` must be a Google Cloud project id such as \"my-project-123\""),
        ));
    }
    let credentials = match (&raw.credentials_file, &raw.auth) {
        (Some(_), Some(auth)) => {
            return Err(section.error(
                &auth.span(),
                format!("provider `{name}`: give either `credentials_file` or `auth = \"metadata\"`, not both"),
            ));
        }
        (None, None) => {
            return Err(section.error(
                &section.span(),
                format!(
                    "provider `{name}` needs credentials: set `credentials_file` (a service-account key or a \
                     workload identity configuration; relative paths are read from $CREDENTIALS_DIRECTORY) \
                     or `auth = \"metadata\"` (on Google Cloud, the attached service account)"
                ),
            ));
        }
        (None, Some(auth)) if auth.get_ref() == "metadata" => Credentials::Metadata,
        (None, Some(auth)) => {
            return Err(section.error(
                &auth.span(),
                format!(
                    "provider `{name}`: `auth` must be \"metadata\" (or drop it and set `credentials_file`), not {:?}",
                    auth.get_ref()
                ),
            ));
        }
        (Some(file), None) => {
            // A JSON document, not a single token: whitespace inside is expected.
            let secret = section.secret_document("credentials_file", file)?;
            // `from_json`'s messages name fields, never values
            Credentials::from_json(secret.value.expose_secret()).map_err(|e| {
                let message = e.to_string();
                let message = message.strip_prefix("gcloud: ").unwrap_or(&message);
                section.error(&secret.span, format!("provider `{name}`: {} ({}): {message}", secret.key, secret.origin))
            })?
        }
    };
    let mut managed_zones = BTreeMap::new();
    if let Some(map) = &raw.managed_zones {
        for (zone, managed) in map.get_ref() {
            let zone =
                normalize(zone, false).map_err(|e| section.error(&map.span(), format!("in `managed_zones`: {e}")))?;
            if !zones.contains(&zone) {
                return Err(section.error(
                    &map.span(),
                    format!("`managed_zones` names zone {zone}, which is not in the `zones` of provider `{name}`"),
                ));
            }
            let managed = managed.trim();
            if managed.is_empty() || !managed.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(section.error(
                    &map.span(),
                    format!(
                        "`managed_zones` gives {managed:?} for zone {zone}: expected a managed zone name such as \"example-com\""
                    ),
                ));
            }
            managed_zones.insert(zone, managed.to_owned());
        }
    }
    Ok(Arc::new(Gcloud {
        project: project.to_owned(),
        managed_zones,
        credentials,
        api_url: raw.api_url.map(|u| u.0.0),
        metadata_url: raw.metadata_url.map(|u| u.0.0),
        token_url: raw.token_url.map(|u| u.0.0),
    }))
}

#[async_trait]
impl ProviderSettings for Gcloud {
    fn account(&self) -> Option<String> {
        Some(format!(
            "gcloud:{}:{}",
            self.api_url.as_deref().unwrap_or(dns_provider::gcloud::DEFAULT_API_URL),
            self.project
        ))
    }

    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        let mut settings = dns_provider::gcloud::GcloudSettings::new(
            self.project.clone(),
            cx.zones.to_vec(),
            self.credentials.clone(),
        );
        settings.managed_zones = self.managed_zones.clone();
        if let Some(url) = &self.api_url {
            settings.api_url.clone_from(url);
        }
        settings.metadata_url.clone_from(&self.metadata_url);
        settings.token_url.clone_from(&self.token_url);
        settings.gate = cx.gate.clone();
        Ok(Arc::new(dns_provider::gcloud::GcloudProvider::new(settings)?))
    }
}
