//! `type = "acmedns"`: joohoi/acme-dns's `/update` API, for `_dnsauth` CNAME delegation. One
//! `[providers.NAME.accounts."<domain>"]` table per validated domain, as `/register` returned it.
//! acme-dns does not throttle (no default rate limit); with `rate_limit`, the API URL is the
//! account.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use serde::Deserialize;
use toml::Spanned;

use super::{BuildContext, ProviderSettings};
use crate::config::Secret;
use crate::config::section::{ApiUrl, ConfigError, P, Section, Zone, normalize};

/// Default timeout of one API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

super::section_schema! {
    /// The section as written.
    struct Raw {
        api_url: P<ApiUrl>,
        accounts: Spanned<BTreeMap<Spanned<String>, Spanned<RawAccount>>>,
        timeout: Option<P<Duration>>,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    username: Spanned<String>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    subdomain: Spanned<String>,
    fulldomain: Spanned<P<Zone>>,
}

/// The settings of an acme-dns provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDns {
    /// The acme-dns API (https, or http to loopback).
    pub api_url: String,
    /// Accounts by the domain they validate (normalized).
    pub accounts: BTreeMap<String, AcmeDnsAccount>,
    /// Timeout of one API request (default 30s).
    pub timeout: Duration,
}

/// One acme-dns account (`[providers.NAME.accounts."<domain>"]`), as acme-dns's `/register`
/// returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeDnsAccount {
    /// `username` (`X-Api-User`).
    pub username: String,
    /// `password` (`X-Api-Key`; `password_file` or `password_env`).
    pub password: Secret,
    /// `subdomain`.
    pub subdomain: String,
    /// `fulldomain` (normalized): the CNAME target of `_dnsauth.<domain>`.
    pub fulldomain: String,
}

/// Validates an `acmedns` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let name = section.name().to_owned();
    let zones = section.zones();
    if raw.accounts.get_ref().is_empty() {
        return Err(section.error(
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
        let domain_name = normalize(domain.get_ref(), false)
            .map_err(|e| section.error(&domain.span(), format!("acme-dns account key: {e}")))?;
        let account_span = account.span();
        let account = account.into_inner();
        let subject = format!("account {domain_name:?} of provider `{name}`");
        let password = section.secret(
            ("password_file", account.password_file.as_ref()),
            ("password_env", account.password_env.as_ref()),
            Some((&account_span, &subject)),
        )?;
        let fulldomain = account.fulldomain.get_ref().0.0.clone();
        if !zones.iter().any(|z| dns_provider::below_zone(&fulldomain, z)) {
            return Err(section.error(
                &account.fulldomain.span(),
                format!(
                    "fulldomain {fulldomain} of the {subject} is not inside its zones \
                     ({}): list the acme-dns server's domain in `zones`",
                    zones.join(", ")
                ),
            ));
        }
        let subdomain = account.subdomain.get_ref().trim().to_ascii_lowercase();
        if subdomain.is_empty() || !fulldomain.starts_with(&format!("{subdomain}.")) {
            return Err(section.error(
                &account.subdomain.span(),
                format!(
                    "subdomain {subdomain:?} of the {subject} does not match its fulldomain \
                     {fulldomain}: copy both exactly as acme-dns's /register returned them"
                ),
            ));
        }
        if account.username.get_ref().trim().is_empty() {
            return Err(section.error(&account.username.span(), format!("the {subject} has an empty username")));
        }
        if let Some(other) = fulldomains.insert(fulldomain.clone(), domain_name.clone()) {
            return Err(section.error(
                &account.fulldomain.span(),
                format!("fulldomain {fulldomain} is already used by account {other:?}: each account has its own"),
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
    Ok(Arc::new(AcmeDns { api_url: raw.api_url.0.0, accounts, timeout: raw.timeout.map_or(HTTP_TIMEOUT, |t| t.0) }))
}

#[async_trait]
impl ProviderSettings for AcmeDns {
    fn account(&self) -> Option<String> {
        Some(format!("acmedns:{}", self.api_url))
    }

    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        let accounts = self
            .accounts
            .iter()
            .map(|(domain, a)| dns_provider::acmedns::AcmeDnsAccount {
                domain: domain.clone(),
                username: a.username.clone(),
                password: a.password.secret_string(),
                subdomain: a.subdomain.clone(),
                fulldomain: a.fulldomain.clone(),
            })
            .collect();
        let mut settings =
            dns_provider::acmedns::AcmeDnsSettings::new(self.api_url.clone(), cx.zones.to_vec(), accounts);
        settings.timeout = self.timeout;
        settings.gate = cx.gate.clone();
        Ok(Arc::new(dns_provider::acmedns::AcmeDnsProvider::new(settings)?))
    }
}
