//! The `[providers.NAME]` envelope: the section's name, its `type` (looked up in
//! [`crate::providers::TYPES`]), its `zones` (each zone belongs to one provider) and its
//! `rate_limit`. Everything else in the section belongs to the provider type's own home
//! (`crate::providers::<type>`), which gets the table through [`Section`] and returns its settings.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::env::Context;
use super::error::{ConfigError, Source};
use super::raw::RawRateLimit;
use super::section::{ForwardedEnv, Section};
use super::{Provider, RateLimit};
use crate::providers::{self, RateLimitRule};

/// `route53`, `cloudflare`, ... as error messages list them.
fn type_list() -> String {
    let names: Vec<String> = providers::TYPES.iter().map(|t| format!("`{}`", t.name)).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// Parses the `providers` value of the main file (absent = no providers).
pub(super) fn parse(
    src: &Source<'_>,
    ctx: &Context<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, Provider>, ConfigError> {
    let Some(value) = value else {
        return Ok(BTreeMap::new());
    };
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        return Err(src.error(&span, "`providers` must be a table: write one [providers.NAME] section per provider"));
    };
    // Document order, so "already served" errors point at the later occurrence.
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, value)| (value.span().start, key.span().start));

    let mut providers = BTreeMap::new();
    // zone -> (provider name) of the providers parsed so far.
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    // account -> (provider name, its limit) of the rate-limited providers parsed so far.
    let mut accounts: BTreeMap<String, (String, Option<RateLimit>)> = BTreeMap::new();
    let mut forwarded_env = Vec::new();
    for (key, value) in entries {
        let name = key.get_ref().to_string();
        if name.trim().is_empty() {
            return Err(src.error(&key.span(), "a provider name cannot be empty"));
        }
        let section_span = value.span();
        let (provider, zone_spans) = parse_one(src, ctx, &name, value, warnings, &mut forwarded_env)?;
        for (zone, span) in zone_spans {
            if let Some(owner) = owners.get(&zone) {
                return Err(src.error(
                    &span,
                    if *owner == name {
                        format!("zone {zone} is listed twice in provider `{name}`")
                    } else {
                        format!(
                            "zone {zone} is already served by provider `{owner}`: a zone \
                             belongs to exactly one provider"
                        )
                    },
                ));
            }
            owners.insert(zone, name.clone());
        }
        if let Some(account) = provider.settings.account() {
            if let Some((other, limit)) = accounts.get(&account)
                && *limit != provider.rate_limit
            {
                return Err(src.error(
                    &section_span,
                    format!(
                        "providers `{other}` and `{name}` use the same {} account, which has one \
                         client-side rate limit: give both the same `rate_limit` (or none)",
                        provider.kind
                    ),
                ));
            }
            accounts.insert(account, (name.clone(), provider.rate_limit));
        }
        providers.insert(name, provider);
    }
    check_forwarded_env(src, ctx, &forwarded_env)?;
    Ok(providers)
}

/// Refuses a child process a variable that holds one of dcvd's own secrets (named by any `*_env`
/// key, in any section): the whole point of the allow-list is that hooks never see them.
fn check_forwarded_env(src: &Source<'_>, ctx: &Context<'_>, entries: &[ForwardedEnv]) -> Result<(), ConfigError> {
    let secret_envs = ctx.secret_envs.borrow();
    for ForwardedEnv { provider, var, span } in entries {
        if let Some((_, key, secret_span)) = secret_envs.iter().find(|(name, _, _)| name == var) {
            return Err(src.error(
                span,
                format!(
                    "provider `{provider}`: `env_pass` lists {var}, which holds one of dcvd's secrets \
                     (`{key}` at {}): a hook never gets dcvd's own secrets; give the hook its own \
                     credential (a file in $CREDENTIALS_DIRECTORY or another variable)",
                    src.location(secret_span)
                ),
            ));
        }
    }
    Ok(())
}

pub(super) type ZoneSpans = Vec<(String, Range<usize>)>;

fn parse_one(
    src: &Source<'_>,
    ctx: &Context<'_>,
    name: &str,
    value: Spanned<DeValue<'_>>,
    warnings: &mut Vec<String>,
    forwarded_env: &mut Vec<ForwardedEnv>,
) -> Result<(Provider, ZoneSpans), ConfigError> {
    let span = value.span();
    let DeValue::Table(mut table) = value.into_inner() else {
        return Err(
            src.error(&span, format!("provider `{name}` must be a table: write [providers.{name}] with a `type` key"))
        );
    };
    let (kind, kind_span) = match table.get("type") {
        None => {
            return Err(src.error(&span, format!("provider `{name}` has no `type`: set it to one of {}", type_list())));
        }
        Some(t) => match t.get_ref().as_str() {
            Some(kind) => (kind.to_owned(), t.span()),
            None => {
                return Err(src.error(
                    &t.span(),
                    format!("the `type` of provider `{name}` must be a string: one of {}", type_list()),
                ));
            }
        },
    };
    let Some(provider_type) = providers::provider_type(&kind) else {
        return Err(src.error(
            &kind_span,
            format!("unknown provider type {kind:?} for provider `{name}`: expected {}", type_list()),
        ));
    };
    let rate_limit = rate_limit(src, name, provider_type, table.remove("rate_limit"))?;
    let mut section = Section::new(src, ctx, name, Spanned::new(span, table), warnings, forwarded_env);
    let settings = (provider_type.parse)(&mut section)?;
    let zone_spans = section.zone_spans().to_vec();
    let provider = Provider {
        kind: provider_type.name,
        zones: zone_spans.iter().map(|(z, _)| z.clone()).collect(),
        rate_limit,
        settings,
    };
    Ok((provider, zone_spans))
}

/// `rate_limit = { requests = N, per = "1s" }`, or the type's default.
fn rate_limit(
    src: &Source<'_>,
    name: &str,
    provider_type: &providers::ProviderType,
    value: Option<Spanned<DeValue<'_>>>,
) -> Result<Option<RateLimit>, ConfigError> {
    let default = match provider_type.rate_limit {
        RateLimitRule::Default(default) => default,
        RateLimitRule::NotApplicable => {
            return match value {
                None => Ok(None),
                Some(value) => Err(src.error(
                    &value.span(),
                    format!(
                        "provider `{name}`: type `{}` has no HTTP API to rate limit: remove `rate_limit`",
                        provider_type.name
                    ),
                )),
            };
        }
    };
    let Some(value) = value else { return Ok(default) };
    let raw = RawRateLimit::deserialize(toml::de::ValueDeserializer::from(value)).map_err(|e| src.toml_error(&e))?;
    if *raw.requests.get_ref() == 0 {
        return Err(src
            .error(&raw.requests.span(), format!("provider `{name}`: `requests` of `rate_limit` must be at least 1")));
    }
    Ok(Some(RateLimit { requests: *raw.requests.get_ref(), per: raw.per.0 }))
}
