//! Builds provider adapters from `[providers.NAME]` sections: one `match`, no registry.
//!
//! The `memory` provider keeps its records in this process and serves them over DNS on its
//! `listen` addresses; its store and server live for the whole process so that a reload does
//! not lose records or re-bind ports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use dns_provider::SharedProvider;
use dns_provider::memory::{MemoryDnsServer, MemoryProvider, MemoryStore};

use crate::config::Provider;

type MemoryEntry = (MemoryStore, Option<Arc<MemoryDnsServer>>);

fn memory_registry() -> &'static Mutex<HashMap<String, MemoryEntry>> {
    static REG: OnceLock<Mutex<HashMap<String, MemoryEntry>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// The store (and DNS server) of the memory provider called `name`, once built.
pub fn memory_store(name: &str) -> Option<(MemoryStore, Option<Arc<MemoryDnsServer>>)> {
    memory_registry().lock().expect("memory registry").get(name).cloned()
}

/// Builds the adapter for one provider section.
pub async fn build(name: &str, provider: &Provider) -> anyhow::Result<SharedProvider> {
    Ok(match provider {
        Provider::Memory { zones, listen, lag } => {
            let existing = memory_store(name);
            let (store, server) = match existing {
                Some(entry) => entry,
                None => {
                    let store = MemoryStore::default();
                    let server = if listen.is_empty() {
                        None
                    } else {
                        let cfg = dns_provider::memory::ServerConfig {
                            zones: zones.clone(),
                            addrs: listen.clone(),
                            lag: dns_provider::memory::LagModel {
                                per_server: listen
                                    .iter()
                                    .enumerate()
                                    .map(|(i, _)| if i + 1 == listen.len() { *lag } else { std::time::Duration::ZERO })
                                    .collect(),
                                ..Default::default()
                            },
                            soa_minimum: 5,
                        };
                        Some(Arc::new(dns_provider::memory::serve(store.clone(), cfg).await?))
                    };
                    memory_registry()
                        .lock()
                        .expect("memory registry")
                        .insert(name.to_string(), (store.clone(), server.clone()));
                    (store, server)
                }
            };
            let _ = server;
            Arc::new(MemoryProvider::new(zones.clone(), store))
        }
        Provider::Exec { zones, command, timeout, env_pass } => Arc::new(
            dns_provider::exec::ExecProvider::new(zones.clone(), command.clone(), *timeout)
                .with_env_pass(env_pass.clone()),
        ),
        Provider::Rfc2136 { zones, server, tsig_key_name, tsig_algorithm, tsig_secret, timeout } => {
            Arc::new(dns_provider::rfc2136::Rfc2136Provider::new(dns_provider::rfc2136::Rfc2136Settings {
                server: *server,
                zones: zones.clone(),
                tsig_key_name: tsig_key_name.clone(),
                tsig_algorithm: tsig_algorithm.as_str().to_string(),
                tsig_secret: tsig_secret.clone(),
                timeout: *timeout,
            })?)
        }
        Provider::Cloudflare { zones, api_token, base_url, zone_ids } => {
            let mut settings = dns_provider::cloudflare::CloudflareSettings::new(zones.clone(), api_token.clone());
            if let Some(url) = base_url {
                settings.base_url = url.clone();
            }
            settings.zone_ids = zone_ids.clone();
            Arc::new(dns_provider::cloudflare::CloudflareProvider::new(settings)?)
        }
        Provider::Azure(azure) => {
            use dns_provider::azure::{AzureProvider, AzureSettings};
            let mut settings = AzureSettings::new(
                azure.zones.clone(),
                &azure.subscription_id,
                &azure.resource_group,
                azure.credential.clone(),
            );
            for (value, field) in [
                (&azure.management_url, &mut settings.management_url),
                (&azure.authority_url, &mut settings.authority_url),
                (&azure.imds_url, &mut settings.imds_url),
            ] {
                if let Some(url) = value {
                    field.clone_from(url);
                }
            }
            Arc::new(AzureProvider::new(settings)?)
        }
        Provider::Gcloud { zones, project, managed_zones, credentials, api_url, metadata_url, token_url } => {
            let mut settings =
                dns_provider::gcloud::GcloudSettings::new(project.clone(), zones.clone(), credentials.clone());
            settings.managed_zones = managed_zones.clone();
            if let Some(url) = api_url {
                settings.api_url = url.clone();
            }
            settings.metadata_url = metadata_url.clone();
            settings.token_url = token_url.clone();
            Arc::new(dns_provider::gcloud::GcloudProvider::new(settings)?)
        }
        Provider::PowerDns { zones, api_url, api_key, server_id, timeout } => {
            let mut settings =
                dns_provider::powerdns::PowerDnsSettings::new(api_url.clone(), api_key.clone(), zones.clone());
            settings.server_id = server_id.clone();
            settings.timeout = *timeout;
            Arc::new(dns_provider::powerdns::PowerDnsProvider::new(settings)?)
        }
        Provider::AcmeDns { zones, api_url, accounts, timeout } => {
            let accounts = accounts
                .iter()
                .map(|(domain, a)| dns_provider::acmedns::AcmeDnsAccount {
                    domain: domain.clone(),
                    username: a.username.clone(),
                    password: a.password.clone(),
                    subdomain: a.subdomain.clone(),
                    fulldomain: a.fulldomain.clone(),
                })
                .collect();
            let mut settings = dns_provider::acmedns::AcmeDnsSettings::new(api_url.clone(), zones.clone(), accounts);
            settings.timeout = *timeout;
            Arc::new(dns_provider::acmedns::AcmeDnsProvider::new(settings)?)
        }
        Provider::Route53 { zones, hosted_zone_id, region, endpoint_url } => {
            let settings = dns_provider::route53::Route53Settings {
                zones: zones.clone(),
                hosted_zone_id: hosted_zone_id.clone(),
                region: region.clone(),
                endpoint_url: endpoint_url.clone(),
                ..Default::default()
            };
            Arc::new(dns_provider::route53::Route53Provider::new(settings).await?)
        }
    })
}
