//! `[providers.NAME]` with `type = "azure"`: Azure DNS's settings schema and its validation, in
//! one place. `auth` says which credential to use, and each credential takes exactly its keys:
//!
//! - `client_secret`: `tenant_id`, `client_id`, `client_secret_file` or `client_secret_env`;
//! - `managed_identity`: optional `client_id` (a user-assigned identity);
//! - `workload_identity`: `tenant_id`, `client_id`, `federated_token_file`, each defaulting to
//!   the variable the Azure Workload Identity webhook injects (`AZURE_TENANT_ID`,
//!   `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`).
//!
//! A key that the chosen credential does not use is an error (it usually means the wrong `auth`).
//! The federated token file is only named here: the adapter reads it on every token exchange.

use std::ops::Range;
use std::path::PathBuf;

use dns_provider::azure::AzureCredential;
use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use super::env::{Context, SecretKeys};
use super::error::{ConfigError, Source};
use super::raw::{HttpUrl, P, Zone, is_loopback, url_host};

/// The settings of an Azure DNS provider, validated.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// Zones served, all in `resource_group`.
    pub zones: Vec<String>,
    /// Subscription id (a GUID).
    pub subscription_id: String,
    /// Resource group of the zones.
    pub resource_group: String,
    /// The credential (its `Debug` redacts the secret).
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAzure {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    pub(super) zones: Spanned<Vec<Spanned<P<Zone>>>>,
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

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A non-empty, trimmed string value.
fn text(src: &Source<'_>, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
    let v = value.get_ref().trim();
    if v.is_empty() {
        return Err(src.error(&value.span(), format!("`{key}` must not be empty")));
    }
    Ok(v.to_owned())
}

/// An endpoint override: https, or http to loopback (and, for IMDS, to 169.254.169.254).
fn endpoint(
    src: &Source<'_>,
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
            return Err(src.error(
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
fn refuse_unused(src: &Source<'_>, auth: AzureAuth, keys: &[(&str, Option<Range<usize>>)]) -> Result<(), ConfigError> {
    for (key, span) in keys {
        if let Some(span) = span {
            return Err(src.error(
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

/// Validates a `type = "azure"` section (already deserialized) into [`AzureConfig`].
pub(super) fn parse(
    src: &Source<'_>,
    ctx: &Context<'_>,
    name: &str,
    section: &Range<usize>,
    raw: RawAzure,
    zones: Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<AzureConfig, ConfigError> {
    let section_name = format!("provider `{name}`");
    let subscription_id = text(src, "subscription_id", &raw.subscription_id)?;
    if !is_guid(&subscription_id) {
        return Err(src.error(
            &raw.subscription_id.span(),
            format!(
                "`subscription_id` {subscription_id:?} is not a subscription id: give the GUID shown by \
                 `az account show --query id` (such as \"00000000-0000-0000-0000-000000000000\")"
            ),
        ));
    }
    let resource_group = text(src, "resource_group", &raw.resource_group)?;
    if resource_group.contains('/') {
        return Err(
            src.error(&raw.resource_group.span(), "`resource_group` is a name, not a resource id: remove the path")
        );
    }
    let auth = *raw.auth.get_ref();
    let span_of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span);
    let credential = match auth {
        AzureAuth::ClientSecret => {
            refuse_unused(src, auth, &[("federated_token_file", span_of(&raw.federated_token_file))])?;
            let required = |key: &str, v: &Option<Spanned<String>>| match v {
                Some(v) => text(src, key, v),
                None => Err(src.error(
                    section,
                    format!(
                        "{section_name} (auth = \"client_secret\") needs `{key}`: the app registration's {}",
                        if key == "tenant_id" { "Directory (tenant) ID" } else { "Application (client) ID" }
                    ),
                )),
            };
            let tenant_id = required("tenant_id", &raw.tenant_id)?;
            let client_id = required("client_id", &raw.client_id)?;
            let secret = ctx.secret(
                src,
                &SecretKeys {
                    file_key: "client_secret_file",
                    env_key: "client_secret_env",
                    file: raw.client_secret_file.as_ref(),
                    env: raw.client_secret_env.as_ref(),
                    section,
                    section_name: &section_name,
                },
                warnings,
            )?;
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret: secret.value }
        }
        AzureAuth::ManagedIdentity => {
            refuse_unused(
                src,
                auth,
                &[
                    ("tenant_id", span_of(&raw.tenant_id)),
                    ("client_secret_file", span_of(&raw.client_secret_file)),
                    ("client_secret_env", span_of(&raw.client_secret_env)),
                    ("federated_token_file", span_of(&raw.federated_token_file)),
                ],
            )?;
            let client_id = raw.client_id.as_ref().map(|v| text(src, "client_id", v)).transpose()?;
            AzureCredential::ManagedIdentity { client_id }
        }
        AzureAuth::WorkloadIdentity => {
            refuse_unused(
                src,
                auth,
                &[
                    ("client_secret_file", span_of(&raw.client_secret_file)),
                    ("client_secret_env", span_of(&raw.client_secret_env)),
                ],
            )?;
            let from_env = |key: &str, v: &Option<Spanned<String>>, var: &str| match v {
                Some(v) => text(src, key, v),
                None => ctx.env.var(var).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).ok_or_else(|| {
                    src.error(
                        section,
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
            let token_file: PathBuf = ctx.relative_path(&file);
            AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file }
        }
    };
    Ok(AzureConfig {
        zones,
        subscription_id,
        resource_group,
        credential,
        management_url: endpoint(src, "management_url", raw.management_url, false)?,
        authority_url: endpoint(src, "authority_url", raw.authority_url, false)?,
        imds_url: endpoint(src, "imds_url", raw.imds_url, true)?,
    })
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
