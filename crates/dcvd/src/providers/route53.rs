//! `type = "route53"`: Amazon Route 53 through the AWS SDK. Credentials come from the standard
//! AWS chain (environment, shared files, web identity, ECS, IMDS), never from the configuration;
//! so every Route 53 section of the process acts as the same AWS account (per endpoint) and
//! shares its rate limit (Route 53: five requests per second per account).

use async_trait::async_trait;
use dns_provider::SharedProvider;
use toml::Spanned;

use super::{BuildContext, ProviderSettings};
use crate::config::section::{ConfigError, HttpUrl, P, Section};

super::section_schema! {
    /// The section as written.
    struct Raw {
        hosted_zone_id: Option<Spanned<String>>,
        region: Option<String>,
        endpoint_url: Option<P<HttpUrl>>,
    }
}

/// The settings of a Route 53 provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route53 {
    /// Skip the hosted zone lookup (only with a single zone).
    pub hosted_zone_id: Option<String>,
    /// AWS region.
    pub region: Option<String>,
    /// Endpoint override (moto in tests).
    pub endpoint_url: Option<String>,
}

/// Validates a `route53` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<std::sync::Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    let zones = section.zones();
    let hosted_zone_id = raw.hosted_zone_id.filter(|s| !s.get_ref().trim().is_empty());
    if let Some(id) = &hosted_zone_id
        && zones.len() != 1
    {
        return Err(section.error(
            &id.span(),
            format!(
                "provider `{}`: `hosted_zone_id` names one hosted zone but `zones` lists {}: \
                 use one provider section per zone, or drop `hosted_zone_id` to look the zones up \
                 by name",
                section.name(),
                zones.len()
            ),
        ));
    }
    Ok(std::sync::Arc::new(Route53 {
        hosted_zone_id: hosted_zone_id.map(Spanned::into_inner),
        region: raw.region.filter(|s| !s.is_empty()),
        endpoint_url: raw.endpoint_url.map(|u| u.0.0),
    }))
}

#[async_trait]
impl ProviderSettings for Route53 {
    fn account(&self) -> Option<String> {
        // The credential chain is the process's: one AWS account per endpoint.
        Some(format!("route53:{}", self.endpoint_url.as_deref().unwrap_or("aws")))
    }

    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        let on_insync = cx.metrics.clone().map(|metrics| {
            let name = cx.name.to_owned();
            dns_provider::route53::ChangeSyncObserver(std::sync::Arc::new(move |_id: &str, took| {
                metrics.observe_change_sync(&name, took);
            }))
        });
        let settings = dns_provider::route53::Route53Settings {
            zones: cx.zones.to_vec(),
            hosted_zone_id: self.hosted_zone_id.clone(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            gate: cx.gate.clone(),
            on_insync,
            ..Default::default()
        };
        Ok(std::sync::Arc::new(dns_provider::route53::Route53Provider::new(settings).await?))
    }
}
