//! `[providers.NAME]` sections: dispatched on `type`, then deserialized into the type's own
//! schema (so unknown-key errors list that type's keys, with their positions).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::env::{Context, SecretKeys};
use super::error::{ConfigError, Source};
use super::names;
use super::raw::{self, P, RawAcmeDns, RawCloudflare, RawExec, RawMemory, RawPowerDns, RawRfc2136, RawRoute53, Zone};
use super::{AcmeDnsAccount, Provider, TsigAlgorithm};

const TYPES: &str = "`route53`, `cloudflare`, `azure`, `gcloud`, `powerdns`, `acmedns`, `rfc2136`, `exec` or `memory`";

/// Default timeout of an RFC 2136 update exchange.
const RFC2136_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of one HTTP API request (PowerDNS, acme-dns).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout of one exec hook run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

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
    let mut env_pass = Vec::new();
    for (key, value) in entries {
        let name = key.get_ref().to_string();
        if name.trim().is_empty() {
            return Err(src.error(&key.span(), "a provider name cannot be empty"));
        }
        let (provider, zone_spans) = parse_one(src, ctx, &name, value, warnings, &mut env_pass)?;
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
        providers.insert(name, provider);
    }
    check_env_pass(src, ctx, &env_pass)?;
    Ok(providers)
}

/// One `env_pass` entry: provider name, variable, span.
type EnvPassEntry = (String, String, Range<usize>);

/// Refuses an exec hook a variable that holds one of dcvd's own secrets (named by any `*_env`
/// key, in any section): the whole point of the allow-list is that hooks never see them.
fn check_env_pass(src: &Source<'_>, ctx: &Context<'_>, entries: &[EnvPassEntry]) -> Result<(), ConfigError> {
    let secret_envs = ctx.secret_envs.borrow();
    for (provider, var, span) in entries {
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

/// Checks one `env_pass` name: a variable name, and not one of the `DCVD_*` contract.
fn env_pass_name(src: &Source<'_>, provider: &str, var: &Spanned<String>) -> Result<String, ConfigError> {
    let name = var.get_ref();
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(src.error(
            &var.span(),
            format!(
                "provider `{provider}`: {name:?} in `env_pass` is not an environment variable name \
                 (letters, digits and '_', not starting with a digit)"
            ),
        ));
    }
    if name.starts_with("DCVD_") {
        return Err(src.error(
            &var.span(),
            format!("provider `{provider}`: `env_pass` cannot list {name}: dcvd sets the DCVD_* variables itself"),
        ));
    }
    Ok(name.clone())
}

pub(super) type ZoneSpans = Vec<(String, Range<usize>)>;

fn parse_one(
    src: &Source<'_>,
    ctx: &Context<'_>,
    name: &str,
    value: Spanned<DeValue<'_>>,
    warnings: &mut Vec<String>,
    env_pass_entries: &mut Vec<EnvPassEntry>,
) -> Result<(Provider, ZoneSpans), ConfigError> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        return Err(
            src.error(&span, format!("provider `{name}` must be a table: write [providers.{name}] with a `type` key"))
        );
    };
    let kind = match table.get("type") {
        None => {
            return Err(src.error(&span, format!("provider `{name}` has no `type`: set it to one of {TYPES}")));
        }
        Some(t) => match t.get_ref().as_str() {
            Some(kind) => (kind.to_owned(), t.span()),
            None => {
                return Err(
                    src.error(&t.span(), format!("the `type` of provider `{name}` must be a string: one of {TYPES}"))
                );
            }
        },
    };
    let table = Spanned::new(span.clone(), table);
    let section = format!("provider `{name}`");
    match kind.0.as_str() {
        "route53" => {
            let raw: RawRoute53 = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            let hosted_zone_id = raw.hosted_zone_id.filter(|s| !s.get_ref().trim().is_empty());
            if let Some(id) = &hosted_zone_id
                && zones.len() != 1
            {
                return Err(src.error(
                    &id.span(),
                    format!(
                        "provider `{name}`: `hosted_zone_id` names one hosted zone but `zones` lists {}: \
                         use one provider section per zone, or drop `hosted_zone_id` to look the zones up \
                         by name",
                        zones.len()
                    ),
                ));
            }
            let provider = Provider::Route53 {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                hosted_zone_id: hosted_zone_id.map(Spanned::into_inner),
                region: raw.region.filter(|s| !s.is_empty()),
                endpoint_url: raw.endpoint_url.map(|u| u.0.0),
            };
            Ok((provider, zones))
        }
        "cloudflare" => {
            let raw: RawCloudflare = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            if let Some(url) = &raw.base_url
                && let Some(host) = raw::insecure_http_host(&url.get_ref().0.0)
            {
                return Err(src.error(
                    &url.span(),
                    format!(
                        "provider `{name}`: base_url {:?} uses plain http to {host}, which would send the \
                         API token unencrypted: use https:// (http:// is allowed only to 127.0.0.0/8, ::1 \
                         or localhost)",
                        url.get_ref().0.0
                    ),
                ));
            }
            let token = ctx.secret(
                src,
                &SecretKeys {
                    file_key: "api_token_file",
                    env_key: "api_token_env",
                    file: raw.api_token_file.as_ref(),
                    env: raw.api_token_env.as_ref(),
                    section: &span,
                    section_name: &section,
                },
                warnings,
            )?;
            let mut zone_ids = BTreeMap::new();
            if let Some(ids) = &raw.zone_ids {
                for (zone, id) in ids.get_ref() {
                    let zone = names::normalize(zone, false)
                        .map_err(|e| src.error(&ids.span(), format!("in `zone_ids`: {e}")))?;
                    if !zones.iter().any(|(z, _)| *z == zone) {
                        return Err(src.error(
                            &ids.span(),
                            format!(
                                "`zone_ids` names zone {zone}, which is not in the `zones` of \
                                 provider `{name}`"
                            ),
                        ));
                    }
                    if id.trim().is_empty() {
                        return Err(src.error(&ids.span(), format!("`zone_ids` gives an empty id for zone {zone}")));
                    }
                    zone_ids.insert(zone, id.trim().to_owned());
                }
            }
            let provider = Provider::Cloudflare {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                api_token: token.value,
                base_url: raw.base_url.map(|u| u.into_inner().0.0),
                zone_ids,
            };
            Ok((provider, zones))
        }
        "azure" => {
            let raw: super::azure::RawAzure = de(src, table)?;
            let zone_spans = zones(src, name, &raw.zones)?;
            let zone_names = zone_spans.iter().map(|(z, _)| z.clone()).collect();
            let azure = super::azure::parse(src, ctx, name, &span, raw, zone_names, warnings)?;
            Ok((Provider::Azure(azure), zone_spans))
        }
        "gcloud" => super::gcloud::parse(src, ctx, name, table, warnings),
        "powerdns" => {
            let raw: RawPowerDns = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            let key = ctx.secret(
                src,
                &SecretKeys {
                    file_key: "api_key_file",
                    env_key: "api_key_env",
                    file: raw.api_key_file.as_ref(),
                    env: raw.api_key_env.as_ref(),
                    section: &span,
                    section_name: &section,
                },
                warnings,
            )?;
            let server_id = match raw.server_id {
                None => "localhost".to_owned(),
                Some(id) => {
                    let value = id.get_ref().trim();
                    if value.is_empty() || value.contains('/') {
                        return Err(src.error(
                            &id.span(),
                            format!(
                                "provider `{name}`: server_id {value:?} is not valid: PowerDNS \
                                 Authoritative uses \"localhost\" (the default)"
                            ),
                        ));
                    }
                    value.to_owned()
                }
            };
            let provider = Provider::PowerDns {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                api_url: raw.api_url.0.0,
                api_key: key.value,
                server_id,
                timeout: raw.timeout.map_or(HTTP_TIMEOUT, |t| t.0),
            };
            Ok((provider, zones))
        }
        "acmedns" => {
            let raw: RawAcmeDns = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            if raw.accounts.get_ref().is_empty() {
                return Err(src.error(
                    &raw.accounts.span(),
                    format!(
                        "provider `{name}` has no accounts: add one [providers.{name}.accounts.\"<domain>\"] \
                         per validated domain, with what acme-dns's /register returned"
                    ),
                ));
            }
            let mut accounts = BTreeMap::new();
            let mut fulldomains: BTreeMap<String, String> = BTreeMap::new();
            for (domain, account) in raw.accounts.into_inner() {
                let domain_name = names::normalize(domain.get_ref(), false)
                    .map_err(|e| src.error(&domain.span(), format!("acme-dns account key: {e}")))?;
                let account_span = account.span();
                let account = account.into_inner();
                let section = format!("account {domain_name:?} of provider `{name}`");
                let password = ctx.secret(
                    src,
                    &SecretKeys {
                        file_key: "password_file",
                        env_key: "password_env",
                        file: account.password_file.as_ref(),
                        env: account.password_env.as_ref(),
                        section: &account_span,
                        section_name: &section,
                    },
                    warnings,
                )?;
                let fulldomain = account.fulldomain.get_ref().0.0.clone();
                if !zones.iter().any(|(z, _)| dns_provider::below_zone(&fulldomain, z)) {
                    return Err(src.error(
                        &account.fulldomain.span(),
                        format!(
                            "fulldomain {fulldomain} of the {section} is not inside its zones \
                             ({}): list the acme-dns server's domain in `zones`",
                            zones.iter().map(|(z, _)| z.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                let subdomain = account.subdomain.get_ref().trim().to_ascii_lowercase();
                if subdomain.is_empty() || !fulldomain.starts_with(&format!("{subdomain}.")) {
                    return Err(src.error(
                        &account.subdomain.span(),
                        format!(
                            "subdomain {subdomain:?} of the {section} does not match its fulldomain \
                             {fulldomain}: copy both exactly as acme-dns's /register returned them"
                        ),
                    ));
                }
                if account.username.get_ref().trim().is_empty() {
                    return Err(src.error(&account.username.span(), format!("the {section} has an empty username")));
                }
                if let Some(other) = fulldomains.insert(fulldomain.clone(), domain_name.clone()) {
                    return Err(src.error(
                        &account.fulldomain.span(),
                        format!(
                            "fulldomain {fulldomain} is already used by account {other:?}: each account has its own"
                        ),
                    ));
                }
                accounts.insert(
                    domain_name,
                    AcmeDnsAccount {
                        username: account.username.get_ref().trim().to_owned(),
                        password: password.value,
                        subdomain,
                        fulldomain,
                    },
                );
            }
            let provider = Provider::AcmeDns {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                api_url: raw.api_url.0.0,
                accounts,
                timeout: raw.timeout.map_or(HTTP_TIMEOUT, |t| t.0),
            };
            Ok((provider, zones))
        }
        "rfc2136" => {
            let raw: RawRfc2136 = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            let secret = ctx.secret(
                src,
                &SecretKeys {
                    file_key: "tsig_secret_file",
                    env_key: "tsig_secret_env",
                    file: raw.tsig_secret_file.as_ref(),
                    env: raw.tsig_secret_env.as_ref(),
                    section: &span,
                    section_name: &section,
                },
                warnings,
            )?;
            {
                use secrecy::ExposeSecret as _;
                let decoded = base64::engine::general_purpose::STANDARD.decode(secret.value.expose_secret().as_bytes());
                // Never echo the secret or the decoder's message (it quotes a byte of it).
                if !decoded.is_ok_and(|key| !key.is_empty()) {
                    return Err(src.error(
                        &secret.span,
                        format!(
                            "the TSIG secret from {} (`{}`) is not valid base64: give the \
                             `secret` of the key as `tsig-keygen` prints it",
                            secret.origin, secret.key
                        ),
                    ));
                }
            }
            let provider = Provider::Rfc2136 {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                server: raw.server.0.0,
                tsig_key_name: raw.tsig_key_name.0.0,
                tsig_algorithm: raw.tsig_algorithm.unwrap_or(TsigAlgorithm::HmacSha256),
                tsig_secret: secret.value,
                timeout: raw.timeout.map_or(RFC2136_TIMEOUT, |t| t.0),
            };
            Ok((provider, zones))
        }
        "exec" => {
            let raw: RawExec = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            if raw.command.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
                return Err(src.error(
                    &raw.command.span(),
                    format!(
                        "provider `{name}`: `command` must list the program and its \
                         arguments, such as [\"/usr/local/libexec/dns-hook\"]"
                    ),
                ));
            }
            let mut env_pass = Vec::new();
            for var in raw.env_pass.unwrap_or_default() {
                let var_name = env_pass_name(src, name, &var)?;
                if !env_pass.contains(&var_name) {
                    env_pass_entries.push((name.to_owned(), var_name.clone(), var.span()));
                    env_pass.push(var_name);
                }
            }
            let provider = Provider::Exec {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                command: raw.command.into_inner(),
                timeout: raw.timeout.map_or(EXEC_TIMEOUT, |t| t.0),
                env_pass,
            };
            Ok((provider, zones))
        }
        "memory" => {
            let raw: RawMemory = de(src, table)?;
            let zones = zones(src, name, &raw.zones)?;
            let provider = Provider::Memory {
                zones: zones.iter().map(|(z, _)| z.clone()).collect(),
                listen: raw.listen.unwrap_or_default().into_iter().map(|a| a.0.0).collect(),
                lag: raw.lag.map_or(Duration::ZERO, |l| l.0.0),
            };
            Ok((provider, zones))
        }
        other => {
            Err(src.error(&kind.1, format!("unknown provider type {other:?} for provider `{name}`: expected {TYPES}")))
        }
    }
}

pub(super) fn de<'i, T: Deserialize<'i>>(src: &Source<'_>, table: Spanned<DeTable<'i>>) -> Result<T, ConfigError> {
    T::deserialize(toml::de::Deserializer::from(table)).map_err(|e| src.toml_error(&e))
}

pub(super) fn zones(
    src: &Source<'_>,
    name: &str,
    zones: &Spanned<Vec<Spanned<P<Zone>>>>,
) -> Result<ZoneSpans, ConfigError> {
    if zones.get_ref().is_empty() {
        return Err(src.error(
            &zones.span(),
            format!(
                "provider `{name}` has an empty `zones` list: list the zones it serves, such as \
                 [\"example.com\"]"
            ),
        ));
    }
    Ok(zones.get_ref().iter().map(|z| (z.get_ref().0.0.clone(), z.span())).collect())
}
