//! Zone routing: the longest configured zone suffix picks the provider and zone for a name.

use crate::{SharedProvider, in_zone, normalize_name};

/// A name no configured provider serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no provider serves {name}: add its zone to the `zones` of a [providers.NAME] section")]
pub struct RouteError {
    /// The name that could not be routed.
    pub name: String,
}

/// Maps record names to `(provider name, provider, zone)` by longest zone suffix.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// `(zone, provider name, provider)`, longest zone first.
    entries: Vec<(String, String, SharedProvider)>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider instance under its config name; it serves [`DnsProvider::zones`](crate::DnsProvider::zones).
    pub fn add(&mut self, name: impl Into<String>, provider: SharedProvider) {
        let name = name.into();
        for zone in provider.zones() {
            self.entries.push((normalize_name(zone), name.clone(), provider.clone()));
        }
        self.entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    /// The provider instance called `name`, if configured.
    pub fn provider(&self, name: &str) -> Option<&SharedProvider> {
        self.entries.iter().find(|(_, n, _)| n == name).map(|(_, _, p)| p)
    }

    /// Picks `(provider name, provider, zone)` for an absolute record name.
    pub fn route(&self, name: &str) -> Result<(&str, &SharedProvider, &str), RouteError> {
        let name = normalize_name(name);
        self.entries
            .iter()
            .find(|(zone, _, _)| in_zone(&name, zone))
            .map(|(zone, n, p)| (n.as_str(), p, zone.as_str()))
            .ok_or(RouteError { name })
    }

    /// Like [`route`](Self::route) but restricted to the provider called `provider`.
    pub fn route_via(&self, provider: &str, name: &str) -> Result<(&str, &SharedProvider, &str), RouteError> {
        let name = normalize_name(name);
        self.entries
            .iter()
            .filter(|(_, n, _)| n == provider)
            .find(|(zone, _, _)| in_zone(&name, zone))
            .map(|(zone, n, p)| (n.as_str(), p, zone.as_str()))
            .ok_or(RouteError { name })
    }
}
