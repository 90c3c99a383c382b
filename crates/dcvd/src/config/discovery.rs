//! `[discovery]`: which pending work of the CertCentral account dcvd takes on without a TOML
//! unit (pending DV orders, OV/EV domains due for revalidation). Parsing and the filters only;
//! the scan itself is `crate::discovery`, which is the only part that talks to CertCentral.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::{ConfigError, Location, Source};
use super::raw::{P, Zone};
use super::{Method, Provider, names};

/// Default `revalidate_before`: 30 days.
pub const DEFAULT_REVALIDATE_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `[discovery]`: scan the account for pending orders and domains due for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Run pending DV orders of the account (`GET /order/certificate?filters[status]=pending`).
    pub orders: bool,
    /// Revalidate OV/EV domains whose validation is pending or ends within
    /// [`Self::revalidate_before`] (`GET /domain`).
    pub domains: bool,
    /// Switch pending orders with another DCV method (email, http) to this DNS method; `None`
    /// (the default) leaves them alone.
    pub set_method: Option<Method>,
    /// A domain is due when an OV or EV validation ends within this.
    pub revalidate_before: Duration,
    /// Zones discovered work may touch (normalized); `None`: every zone of every provider.
    pub zones: Option<Vec<String>>,
    /// Orders whose product name id is in this list only (empty: every product).
    pub products_allow: Vec<String>,
    /// Orders whose product name id is in this list are skipped.
    pub products_deny: Vec<String>,
    /// Orders and domains of these containers only (empty: every container).
    pub containers: Vec<u64>,
    /// Order ids never taken on.
    pub exclude_orders: Vec<u64>,
    /// Domain ids never taken on.
    pub exclude_domains: Vec<u64>,
    /// Where the `[discovery]` table is (the origin of every discovered unit).
    pub origin: Location,
}

impl Discovery {
    /// Whether discovered work may touch `name` (normalized, without `*.`): inside
    /// [`Self::zones`] when set. Whether a provider serves it is asked separately.
    pub fn zone_allowed(&self, name: &str) -> bool {
        self.zones.as_ref().is_none_or(|zones| zones.iter().any(|z| names::in_zone(name, z)))
    }

    /// Whether an order with this product name id passes the product filters (an order whose
    /// product is unknown passes only when no allow-list is set).
    pub fn product_allowed(&self, product: Option<&str>) -> bool {
        match product {
            Some(p) => {
                (self.products_allow.is_empty() || self.products_allow.iter().any(|a| a == p))
                    && !self.products_deny.iter().any(|d| d == p)
            }
            None => self.products_allow.is_empty(),
        }
    }

    /// Whether an entry of this container passes the container filter (an unknown container
    /// passes only when no filter is set).
    pub fn container_allowed(&self, container: Option<u64>) -> bool {
        self.containers.is_empty() || container.is_some_and(|c| self.containers.contains(&c))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscovery {
    orders: Option<bool>,
    domains: Option<bool>,
    set_method: Option<P<Method>>,
    revalidate_before: Option<P<Duration>>,
    zones: Option<Spanned<Vec<Spanned<P<Zone>>>>>,
    products: Option<RawProducts>,
    containers: Option<Vec<Spanned<u64>>>,
    exclude: Option<RawExclude>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProducts {
    allow: Option<Vec<Spanned<String>>>,
    deny: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExclude {
    orders: Option<Vec<Spanned<u64>>>,
    domains: Option<Vec<Spanned<u64>>>,
}

/// Validates `[discovery]` against the providers (every listed zone must be served).
pub(super) fn parse(
    src: &Source<'_>,
    raw: Option<Spanned<RawDiscovery>>,
    providers: &std::collections::BTreeMap<String, Provider>,
    warnings: &mut Vec<String>,
) -> Result<Option<Discovery>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let span = raw.span();
    let raw = raw.into_inner();
    let orders = raw.orders.unwrap_or(false);
    let domains = raw.domains.unwrap_or(false);
    if !orders && !domains {
        warnings.push(src.warning(&span, "[discovery] has neither `orders = true` nor `domains = true`: no scan runs"));
    }
    let zones = match raw.zones {
        None => None,
        Some(list) if list.get_ref().is_empty() => {
            return Err(src.error(
                &list.span(),
                "[discovery] `zones` is empty, so nothing could be discovered: list zones such as \
                 [\"example.com\"], or remove the key to use every zone of every provider",
            ));
        }
        Some(list) => {
            let mut zones = Vec::new();
            for zone in list.into_inner() {
                let span = zone.span();
                let name = zone.into_inner().0.0;
                let served = providers.values().any(|p| p.zones().iter().any(|z| names::in_zone(&name, z)));
                if !served {
                    let all: Vec<&str> = providers.values().flat_map(|p| p.zones()).map(String::as_str).collect();
                    return Err(src.error(
                        &span,
                        format!(
                            "[discovery] zone {name} is served by no provider (provider zones: {}): \
                             add it to the `zones` of a [providers.NAME] section or remove it here",
                            if all.is_empty() { "none".to_string() } else { all.join(", ") }
                        ),
                    ));
                }
                if !zones.contains(&name) {
                    zones.push(name);
                }
            }
            Some(zones)
        }
    };
    let (products_allow, products_deny) = match raw.products {
        None => (Vec::new(), Vec::new()),
        Some(p) => {
            let allow = product_ids(src, "allow", p.allow.unwrap_or_default())?;
            let deny = product_ids(src, "deny", p.deny.unwrap_or_default())?;
            if let Some((id, span)) = deny.iter().find(|(d, _)| allow.iter().any(|(a, _)| a == d)) {
                return Err(src.error(
                    span,
                    format!("[discovery] product {id:?} is both allowed and denied: keep it in one list"),
                ));
            }
            (allow.into_iter().map(|(id, _)| id).collect(), deny.into_iter().map(|(id, _)| id).collect())
        }
    };
    let containers = positive_ids(src, "containers", "container", raw.containers.unwrap_or_default())?;
    let (exclude_orders, exclude_domains) = match raw.exclude {
        None => (Vec::new(), Vec::new()),
        Some(e) => (
            positive_ids(src, "exclude.orders", "order", e.orders.unwrap_or_default())?,
            positive_ids(src, "exclude.domains", "domain", e.domains.unwrap_or_default())?,
        ),
    };
    Ok(Some(Discovery {
        orders,
        domains,
        set_method: raw.set_method.map(|m| m.0),
        revalidate_before: raw.revalidate_before.map_or(DEFAULT_REVALIDATE_BEFORE, |d| d.0),
        zones,
        products_allow,
        products_deny,
        containers,
        exclude_orders,
        exclude_domains,
        origin: src.location(&span),
    }))
}

/// Product name ids as CertCentral writes them (`ssl_dv_geotrust`): lower-case letters, digits,
/// `_` and `-`.
fn product_ids(
    src: &Source<'_>,
    key: &str,
    raw: Vec<Spanned<String>>,
) -> Result<Vec<(String, std::ops::Range<usize>)>, ConfigError> {
    let mut out: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    for value in raw {
        let id = value.get_ref().trim();
        let valid =
            !id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(src.error(
                &value.span(),
                format!(
                    "invalid product name id {:?} in [discovery] products.{key}: expected CertCentral \
                     product ids such as \"ssl_dv_geotrust\" or \"ssl_plus\" (lower case)",
                    value.get_ref()
                ),
            ));
        }
        if !out.iter().any(|(o, _)| o == id) {
            out.push((id.to_string(), value.span()));
        }
    }
    Ok(out)
}

fn positive_ids(src: &Source<'_>, key: &str, what: &str, raw: Vec<Spanned<u64>>) -> Result<Vec<u64>, ConfigError> {
    let mut out = BTreeSet::new();
    for id in raw {
        if *id.get_ref() == 0 {
            return Err(src.error(
                &id.span(),
                format!("[discovery] `{key}`: a {what} id must be a positive integer (the id CertCentral shows)"),
            ));
        }
        out.insert(id.into_inner());
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn discovery() -> Discovery {
        Discovery {
            orders: true,
            domains: true,
            set_method: None,
            revalidate_before: DEFAULT_REVALIDATE_BEFORE,
            zones: Some(vec!["example.com".into()]),
            products_allow: Vec::new(),
            products_deny: vec!["ssl_ev_basic".into()],
            containers: Vec::new(),
            exclude_orders: Vec::new(),
            exclude_domains: Vec::new(),
            origin: Location { file: PathBuf::from("t.toml"), line: 1, col: 1 },
        }
    }

    fn parse(discovery: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text = format!(
            "[certcentral]\napi_key_env = \"KEY\"\n\n[providers.bind]\ntype = \"exec\"\n\
             command = [\"/bin/true\"]\nzones = [\"example.com\", \"example.net\"]\n\n{discovery}"
        );
        let env = crate::config::Environment::isolated().with_var("KEY", "k3y-for-tests");
        crate::config::Config::from_toml_with(&text, std::path::Path::new("dcvd.toml"), &env)
    }

    /// Every key, with its default and its parsed value.
    #[test]
    fn parses_every_key_and_defaults() {
        let c = parse("[discovery]\norders = true\n").unwrap();
        let d = c.discovery.unwrap();
        assert!(d.orders && !d.domains);
        assert_eq!(d.set_method, None, "set_method is off by default");
        assert_eq!(d.revalidate_before, DEFAULT_REVALIDATE_BEFORE);
        assert_eq!(d.zones, None);
        assert_eq!((d.origin.line, d.origin.col), (9, 1));
        assert!(c.warnings.iter().all(|w| !w.contains("nothing to validate")), "{:?}", c.warnings);

        let c = parse(
            "[discovery]\norders = true\ndomains = true\nset_method = \"dns-cname-token\"\n\
             revalidate_before = \"45d\"\nzones = [\"Example.COM.\"]\n\
             products = { allow = [\"ssl_dv_geotrust\"], deny = [\"ssl_ev_basic\"] }\n\
             containers = [7, 7, 3]\nexclude = { orders = [11], domains = [22] }\n",
        )
        .unwrap();
        let d = c.discovery.unwrap();
        assert_eq!(d.set_method, Some(Method::DnsCnameToken));
        assert_eq!(d.revalidate_before, Duration::from_secs(45 * 24 * 3600));
        assert_eq!(d.zones, Some(vec!["example.com".to_string()]));
        assert_eq!((d.products_allow, d.products_deny), (vec!["ssl_dv_geotrust".into()], vec!["ssl_ev_basic".into()]));
        assert_eq!(d.containers, vec![3, 7]);
        assert_eq!((d.exclude_orders, d.exclude_domains), (vec![11], vec![22]));
    }

    /// Malformed sections fail at the right line and column, saying what to write instead.
    #[test]
    fn errors_name_the_position_and_the_fix() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("[discovery]\norders = true\nset_method = \"email\"\n", (11, 14), "dcvd validates by DNS only"),
            ("[discovery]\norders = true\nset_method = \"dns\"\n", (11, 14), "unknown method \"dns\""),
            ("[discovery]\norders = true\nrevalidate_before = \"soon\"\n", (11, 21), "invalid duration \"soon\""),
            (
                "[discovery]\norders = true\nzones = [\"example.com\", \"example.org\"]\n",
                (11, 25),
                "zone example.org is served by no provider",
            ),
            ("[discovery]\norders = true\nzones = []\n", (11, 9), "`zones` is empty"),
            (
                "[discovery]\norders = true\nproducts = { allow = [\"SSL Plus\"] }\n",
                (11, 23),
                "invalid product name id \"SSL Plus\"",
            ),
            (
                "[discovery]\norders = true\nproducts = { allow = [\"a\"], deny = [\"a\"] }\n",
                (11, 37),
                "both allowed and denied",
            ),
            ("[discovery]\norders = true\ncontainers = [0]\n", (11, 15), "must be a positive integer"),
            ("[discovery]\norders = true\nexclude = { orders = [0] }\n", (11, 23), "`exclude.orders`"),
            ("[discovery]\norders = true\nexclude = [1]\n", (11, 12), "invalid type"),
            ("[discovery]\norders = true\nzone = [\"example.com\"]\n", (11, 1), "unknown field `zone`"),
            ("[discovery]\norders = \"yes\"\n", (10, 10), "invalid type"),
        ];
        for (text, (line, col), message) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!((err.line, err.col), (Some(*line), Some(*col)), "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
            assert!(err.to_string().starts_with(&format!("dcvd.toml:{line}:{col}: ")), "{err}");
        }
    }

    /// Discovered units join the configured ones; the TOML wins on a shared id; a second call
    /// replaces the discovered units instead of piling them up.
    #[test]
    fn with_discovered_appends_and_the_toml_wins() {
        use crate::config::{UnitKey, UnitSource};
        let c = parse("[discovery]\norders = true\n\n[[order]]\nid = 5\nmethod = \"dns-cname-token\"\n").unwrap();
        let origin = c.discovery.as_ref().unwrap().origin.clone();
        let found = |id: u64| crate::config::Unit {
            key: UnitKey::Order(id),
            method: Method::DnsTxtToken,
            domains: vec!["www.example.com".into()],
            provider: None,
            submit: Vec::new(),
            txt_name: Default::default(),
            cname_name: Default::default(),
            scope: Default::default(),
            origin: origin.clone(),
            source: UnitSource::Discovered,
        };
        let again: std::collections::HashSet<UnitKey> = [UnitKey::Order(5), UnitKey::Order(6)].into();
        let c = c.with_discovered(vec![found(5), found(6)], again);
        assert_eq!(c.units.len(), 2);
        let five = c.unit(UnitKey::Order(5)).unwrap();
        assert_eq!((five.source, five.method), (UnitSource::Config, Method::DnsCnameToken), "the TOML wins");
        assert_eq!(c.unit(UnitKey::Order(6)).unwrap().source, UnitSource::Discovered);
        assert_eq!(c.rediscovered, [UnitKey::Order(6)].into(), "a configured unit is never 'rediscovered'");
        let c = c.with_discovered(vec![found(7)], Default::default());
        let keys: Vec<UnitKey> = c.units.iter().map(|u| u.key).collect();
        assert_eq!(keys, [UnitKey::Order(5), UnitKey::Order(7)]);
        assert!(c.unit(UnitKey::Order(6)).is_none());
    }

    /// A section that enables nothing is a warning, not an error.
    #[test]
    fn a_section_that_does_nothing_warns() {
        let c = parse("[discovery]\nset_method = \"dns-txt-token\"\n").unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("no scan runs")), "{:?}", c.warnings);
    }

    #[test]
    fn zone_filter_matches_whole_labels() {
        let d = discovery();
        assert!(d.zone_allowed("example.com"));
        assert!(d.zone_allowed("shop.example.com"));
        assert!(!d.zone_allowed("badexample.com"));
        assert!(Discovery { zones: None, ..d }.zone_allowed("anything.org"));
    }

    #[test]
    fn product_filters_allow_and_deny() {
        let mut d = discovery();
        assert!(d.product_allowed(Some("ssl_dv_geotrust")));
        assert!(!d.product_allowed(Some("ssl_ev_basic")));
        assert!(d.product_allowed(None), "no allow-list: an order of unknown product passes");
        d.products_allow = vec!["ssl_dv_geotrust".into()];
        assert!(d.product_allowed(Some("ssl_dv_geotrust")));
        assert!(!d.product_allowed(Some("ssl_plus")));
        assert!(!d.product_allowed(None), "an allow-list admits known products only");
    }

    #[test]
    fn container_filter() {
        let mut d = discovery();
        assert!(d.container_allowed(None));
        assert!(d.container_allowed(Some(7)));
        d.containers = vec![7];
        assert!(d.container_allowed(Some(7)));
        assert!(!d.container_allowed(Some(8)));
        assert!(!d.container_allowed(None));
    }
}
