//! `type = "azure"`: Azure DNS through Azure Resource Manager. `auth` says which credential to
//! use, and each credential takes exactly its keys:
//!
//! - `client_secret`: `tenant_id`, `client_id`, `client_secret_file` or `client_secret_env`;
//! - `managed_identity`: optional `client_id` (a user-assigned identity);
//! - `workload_identity`: `tenant_id`, `client_id`, `federated_token_file`, each defaulting to
//!   the variable the Azure Workload Identity webhook injects (`AZURE_TENANT_ID`,
//!   `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`).
//!
//! A key that the chosen credential does not use is an error (it usually means the wrong `auth`).
//! The federated token file is only named here: the adapter reads it on every token exchange.
//! The rate-limit account is the subscription and the identity (ARM throttles per both).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use dns_provider::azure::AzureCredential;
use serde::Deserialize;
use toml::Spanned;

use super::{BuildContext, ProviderSettings};
use crate::config::section::{ConfigError, HttpUrl, P, Section, is_loopback, url_host};

/// The settings of an Azure DNS provider, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Azure {
    /// Subscription id (a GUID).
    pub subscription_id: String,
    /// Resource group of the zones.
    pub resource_group: String,
    /// The credential (its `Debug` redacts the secret; it compares by value).
    pub credential: AzureCredential,
    /// ARM root override (tests, sovereign clouds).
    pub management_url: Option<String>,
    /// Entra ID authority host override (tests, sovereign clouds).
    pub authority_url: Option<String>,
    /// IMDS token endpoint override (tests).
    pub imds_url: Option<String>,
}

/// `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AzureAuth {
    ClientSecret,
    ManagedIdentity,
    WorkloadIdentity,
}

impl AzureAuth {
    fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecret => "client_secret",
            Self::ManagedIdentity => "managed_identity",
            Self::WorkloadIdentity => "workload_identity",
        }
    }
}

super::section_schema! {
    /// The section as written.
    struct Raw {
        subscription_id: Spanned<String>,
        resource_group: Spanned<String>,
        auth: Spanned<AzureAuth>,
        tenant_id: Option<Spanned<String>>,
        client_id: Option<Spanned<String>>,
        client_secret_file: Option<Spanned<String>>,
        client_secret_env: Option<Spanned<String>>,
        federated_token_file: Option<Spanned<String>>,
        management_url: Option<Spanned<P<HttpUrl>>>,
        authority_url: Option<Spanned<P<HttpUrl>>>,
        imds_url: Option<Spanned<P<HttpUrl>>>,
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A non-empty, trimmed string value.
fn text(section: &Section<'_, '_>, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
    let v = value.get_ref().trim();
    if v.is_empty() {
        return Err(section.error(&value.span(), format!("`{key}` must not be empty")));
    }
    Ok(v.to_owned())
}

/// An endpoint override: https, or http to loopback (and, for IMDS, to 169.254.169.254).
fn endpoint(
    section: &Section<'_, '_>,
    key: &str,
    value: Option<Spanned<P<HttpUrl>>>,
    imds: bool,
) -> Result<Option<String>, ConfigError> {
    let Some(value) = value else { return Ok(None) };
    let span = value.span();
    let url = value.into_inner().0.0;
    if let Some(rest) = url.strip_prefix("http://") {
        let host = url_host(rest).unwrap_or_default();
        let allowed = is_loopback(host) || (imds && host == "169.254.169.254");
        if !allowed {
            return Err(section.error(
                &span,
                format!(
                    "`{key}` {url:?} uses plain http to {host}, which would expose credentials or tokens: use \
                     https:// (http:// is allowed only to a loopback test server{})",
                    if imds { " or to IMDS at 169.254.169.254" } else { "" }
                ),
            ));
        }
    }
    Ok(Some(url))
}

/// Refuses keys the chosen credential does not use.
fn refuse_unused(
    section: &Section<'_, '_>,
    auth: AzureAuth,
    keys: &[(&str, Option<Range<usize>>)],
) -> Result<(), ConfigError> {
    for (key, span) in keys {
        if let Some(span) = span {
            return Err(section.error(
                span,
                format!(
                    "`{key}` is not used with auth = \"{}\": remove it, or choose the `auth` that uses it",
                    auth.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Validates a `type = "azure"` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let section_name = section.subject();
    let span = section.span();
    let subscription_id = text(section, "subscription_id", &raw.subscription_id)?;
    if !is_guid(&subscription_id) {
        return Err(section.error(
            &raw.subscription_id.span(),
            format!(
                "`subscription_id` {subscription_id:?} is not a subscription id: give the GUID shown by \
                 `az account show --query id` (such as \"00000000-0000-0000-0000-000000000000\")"
            ),
        ));
    }
    let resource_group = text(section, "resource_group", &raw.resource_group)?;
    if resource_group.contains('/') {
        return Err(
            section.error(&raw.resource_group.span(), "`resource_group` is a name, not a resource id: remove the path")
        );
    }
    let auth = *raw.auth.get_ref();
    let span_of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
    let credential = match auth {
        AzureAuth::ClientSecret => {
            refuse_unused(section, auth, &[("federated_token_file", span_of(&raw.federated_token_file))])?;
            let required = |key: &str, v: &Option<Spanned<String>>| match v {
                Some(v) => text(section, key, v),
                None => Err(section.error(
                    &span,
                    format!(
                        "{section_name} (auth = \"client_secret\") needs `{key}`: the app registration's {}",
                        if key == "tenant_id" { "Directory (tenant) ID" } else { "Application (client) ID" }
                    ),
                )),
            };
            let tenant_id = required("tenant_id", &raw.tenant_id)?;
            let client_id = required("client_id", &raw.client_id)?;
            let secret = section.secret(
                ("client_secret_file", raw.client_secret_file.as_ref()),
                ("client_secret_env", raw.client_secret_env.as_ref()),
                None,
            )?;
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret: secret.value.secret_string() }
        }
        AzureAuth::ManagedIdentity => {
            refuse_unused(
                section,
                auth,
                &[
                    ("tenant_id", span_of(&raw.tenant_id)),
                    ("client_secret_file", span_of(&raw.client_secret_file)),
                    ("client_secret_env", span_of(&raw.client_secret_env)),
                    ("federated_token_file", span_of(&raw.federated_token_file)),
                ],
            )?;
            let client_id = raw.client_id.as_ref().map(|v| text(section, "client_id", v)).transpose()?;
            AzureCredential::ManagedIdentity { client_id }
        }
        AzureAuth::WorkloadIdentity => {
            refuse_unused(
                section,
                auth,
                &[
                    ("client_secret_file", span_of(&raw.client_secret_file)),
                    ("client_secret_env", span_of(&raw.client_secret_env)),
                ],
            )?;
            let from_env = |key: &str, v: &Option<Spanned<String>>, var: &str| match v {
                Some(v) => text(section, key, v),
                None => section.env_var(var).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).ok_or_else(|| {
                    section.error(
                        &span,
                        format!(
                            "{section_name} (auth = \"workload_identity\") needs `{key}`, or the \
                             environment variable {var} (set by the Azure Workload Identity webhook)"
                        ),
                    )
                }),
            };
            let tenant_id = from_env("tenant_id", &raw.tenant_id, "AZURE_TENANT_ID")?;
            let client_id = from_env("client_id", &raw.client_id, "AZURE_CLIENT_ID")?;
            let file = from_env("federated_token_file", &raw.federated_token_file, "AZURE_FEDERATED_TOKEN_FILE")?;
            let token_file: PathBuf = section.relative_path(&file);
            AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file }
        }
    };
    Ok(Arc::new(Azure {
        subscription_id,
        resource_group,
        credential,
        management_url: endpoint(section, "management_url", raw.management_url, false)?,
        authority_url: endpoint(section, "authority_url", raw.authority_url, false)?,
        imds_url: endpoint(section, "imds_url", raw.imds_url, true)?,
    }))
}

#[async_trait]
impl ProviderSettings for Azure {
    fn account(&self) -> Option<String> {
        let identity = match &self.credential {
            AzureCredential::ClientSecret { client_id, .. } | AzureCredential::WorkloadIdentity { client_id, .. } => {
                client_id.clone()
            }
            AzureCredential::ManagedIdentity { client_id } => {
                client_id.clone().unwrap_or_else(|| "system-assigned".to_owned())
            }
        };
        Some(format!(
            "azure:{}:{}:{identity}",
            self.management_url.as_deref().unwrap_or(dns_provider::azure::DEFAULT_MANAGEMENT_URL),
            self.subscription_id
        ))
    }

    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        use dns_provider::azure::{AzureProvider, AzureSettings};
        let mut settings =
            AzureSettings::new(cx.zones.to_vec(), &self.subscription_id, &self.resource_group, self.credential.clone());
        for (value, field) in [
            (&self.management_url, &mut settings.management_url),
            (&self.authority_url, &mut settings.authority_url),
            (&self.imds_url, &mut settings.imds_url),
        ] {
            if let Some(url) = value {
                field.clone_from(url);
            }
        }
        settings.gate = cx.gate.clone();
        Ok(Arc::new(AzureProvider::new(settings)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_are_guids() {
        assert!(is_guid("0b1f6471-1bf0-4dda-aec3-cb9272f09590"));
        assert!(!is_guid("my-subscription"));
        assert!(!is_guid("0b1f6471-1bf0-4dda-aec3-cb9272f0959"));
    }
}
