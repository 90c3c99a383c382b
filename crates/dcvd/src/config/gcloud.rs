//! `[providers.NAME]` with `type = "gcloud"` (Google Cloud DNS): its schema and validation.
//!
//! The credentials file (a service-account key or a workload identity `external_account`
//! configuration) is read and checked here, so `dcvd check-config` reports a missing, unreadable
//! or malformed file at the key's line and column; its content never reaches an error, a log line
//! or `Debug` (which shows the account and key id only, so a rotated key changes it).

use std::collections::BTreeMap;
use std::ops::Range;

use dns_provider::gcloud::Credentials;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;
use toml::de::DeTable;

use super::Provider;
use super::env::Context;
use super::error::{ConfigError, Source};
use super::names;
use super::provider::{ZoneSpans, de, zones};
use super::raw::{BaseUrl, FromConfigStr, P, Zone};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGcloud {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    zones: Spanned<Vec<Spanned<P<Zone>>>>,
    project: Spanned<String>,
    managed_zones: Option<Spanned<BTreeMap<String, String>>>,
    credentials_file: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    api_url: Option<P<EndpointUrl>>,
    metadata_url: Option<P<EndpointUrl>>,
    token_url: Option<P<EndpointUrl>>,
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

/// Parses one `gcloud` provider section.
pub(super) fn parse(
    src: &Source<'_>,
    ctx: &Context<'_>,
    name: &str,
    table: Spanned<DeTable<'_>>,
    warnings: &mut Vec<String>,
) -> Result<(Provider, ZoneSpans), ConfigError> {
    let span: Range<usize> = table.span();
    let raw: RawGcloud = de(src, table)?;
    let zone_spans = zones(src, name, &raw.zones)?;
    let project = raw.project.get_ref().trim();
    if project.is_empty()
        || !project.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | ':' | '.'))
    {
        return Err(src.error(
            &raw.project.span(),
            format!("provider `{name}`: `project` must be a Google Cloud project id such as \"my-project-123\""),
        ));
    }
    let credentials = match (&raw.credentials_file, &raw.auth) {
        (Some(_), Some(auth)) => {
            return Err(src.error(
                &auth.span(),
                format!("provider `{name}`: give either `credentials_file` or `auth = \"metadata\"`, not both"),
            ));
        }
        (None, None) => {
            return Err(src.error(
                &span,
                format!(
                    "provider `{name}` needs credentials: set `credentials_file` (a service-account key or a \
                     workload identity configuration; relative paths are read from $CREDENTIALS_DIRECTORY) \
                     or `auth = \"metadata\"` (on Google Cloud, the attached service account)"
                ),
            ));
        }
        (None, Some(auth)) if auth.get_ref() == "metadata" => Credentials::Metadata,
        (None, Some(auth)) => {
            return Err(src.error(
                &auth.span(),
                format!(
                    "provider `{name}`: `auth` must be \"metadata\" (or drop it and set `credentials_file`), not {:?}",
                    auth.get_ref()
                ),
            ));
        }
        (Some(file), None) => {
            // A JSON document, not a single token: whitespace inside is expected.
            let secret = ctx.secret_document(src, "credentials_file", file, warnings)?;
            // `from_json`'s messages name fields, never values
            Credentials::from_json(secret.value.expose_secret()).map_err(|e| {
                let message = e.to_string();
                let message = message.strip_prefix("gcloud: ").unwrap_or(&message);
                src.error(&secret.span, format!("provider `{name}`: {} ({}): {message}", secret.key, secret.origin))
            })?
        }
    };
    let mut managed_zones = BTreeMap::new();
    if let Some(map) = &raw.managed_zones {
        for (zone, managed) in map.get_ref() {
            let zone = names::normalize(zone, false)
                .map_err(|e| src.error(&map.span(), format!("in `managed_zones`: {e}")))?;
            if !zone_spans.iter().any(|(z, _)| *z == zone) {
                return Err(src.error(
                    &map.span(),
                    format!("`managed_zones` names zone {zone}, which is not in the `zones` of provider `{name}`"),
                ));
            }
            let managed = managed.trim();
            if managed.is_empty() || !managed.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(src.error(
                    &map.span(),
                    format!("`managed_zones` gives {managed:?} for zone {zone}: expected a managed zone name such as \"example-com\""),
                ));
            }
            managed_zones.insert(zone, managed.to_owned());
        }
    }
    let provider = Provider::Gcloud {
        zones: zone_spans.iter().map(|(z, _)| z.clone()).collect(),
        project: project.to_owned(),
        managed_zones,
        credentials,
        api_url: raw.api_url.map(|u| u.0.0),
        metadata_url: raw.metadata_url.map(|u| u.0.0),
        token_url: raw.token_url.map(|u| u.0.0),
    };
    Ok((provider, zone_spans))
}
