//! `type = "memory"`: records kept in this process and served over DNS on its `listen`
//! addresses (demo, tests). The store and server live for the whole process (a registry by
//! section name), so a reload does not lose records or re-bind ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use dns_provider::SharedProvider;
use dns_provider::memory::{MemoryDnsServer, MemoryProvider, MemoryStore};

use super::{BuildContext, ProviderSettings};
use crate::config::section::{ConfigError, Lag, ListenAddr, P, Section};

super::section_schema! {
    /// The section as written.
    struct Raw {
        listen: Option<Vec<P<ListenAddr>>>,
        lag: Option<P<Lag>>,
    }
}

/// The settings of a memory provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// Addresses of the in-process authoritative servers for the zones (none = no server).
    pub listen: Vec<SocketAddr>,
    /// How late the last of the `listen` servers serves new records (models a lagging
    /// secondary; default zero).
    pub lag: Duration,
}

/// Validates a `memory` section.
pub(crate) fn parse(section: &mut Section<'_, '_>) -> Result<Arc<dyn ProviderSettings>, ConfigError> {
    let raw: Raw = section.schema()?;
    Ok(Arc::new(Memory {
        listen: raw.listen.unwrap_or_default().into_iter().map(|a| a.0.0).collect(),
        lag: raw.lag.map_or(Duration::ZERO, |l| l.0.0),
    }))
}

type MemoryEntry = (MemoryStore, Option<Arc<MemoryDnsServer>>);

fn memory_registry() -> &'static Mutex<HashMap<String, MemoryEntry>> {
    static REG: OnceLock<Mutex<HashMap<String, MemoryEntry>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// The store (and DNS server) of the memory provider called `name`, once built.
pub fn memory_store(name: &str) -> Option<(MemoryStore, Option<Arc<MemoryDnsServer>>)> {
    memory_registry().lock().expect("memory registry").get(name).cloned()
}

#[async_trait]
impl ProviderSettings for Memory {
    async fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<SharedProvider> {
        let (store, _server) = match memory_store(cx.name) {
            Some(entry) => entry,
            None => {
                let store = MemoryStore::default();
                let server = if self.listen.is_empty() {
                    None
                } else {
                    let last = self.listen.len() - 1;
                    let cfg = dns_provider::memory::ServerConfig {
                        zones: cx.zones.to_vec(),
                        addrs: self.listen.clone(),
                        lag: dns_provider::memory::LagModel {
                            per_server: (0..self.listen.len())
                                .map(|i| if i == last { self.lag } else { Duration::ZERO })
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
                    .insert(cx.name.to_owned(), (store.clone(), server.clone()));
                (store, server)
            }
        };
        Ok(Arc::new(MemoryProvider::new(cx.zones.to_vec(), store)))
    }
}
