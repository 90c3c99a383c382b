//! Discovery: the pending work of the CertCentral account, turned into units (`[discovery]`).
//!
//! A scan lists the account's pending DV orders (`GET /order/certificate?filters[status]=pending`)
//! and its domains (`GET /domain`), 1,000 per call, through the daemon's one CertCentral client
//! (so through the shared rate limiter, in the token lane: DCV checks of running units go first).
//! It keeps:
//! - orders whose DCV method is DNS (with `set_method`, also orders with another method, which the
//!   scan switches with `PUT /order/certificate/{id}/dcv-method`, logged at INFO), whose DCV is
//!   not complete yet, and whose every owner name (after the validation scope) a provider serves
//!   inside `[discovery] zones`;
//! - domains in those zones whose OV or EV validation is pending, expired, or ends within
//!   `revalidate_before`: a domain unit submits them again with a DNS method.
//!
//! List orders carries no DCV method, so a new candidate costs one Order validation status call
//! (`GET /order/certificate/{id}/validation`: method, scope and per-name DCV status, documented);
//! List domains lists active validations only, so a domain without any costs one Domain info
//! call. What a call taught is kept in memory between scans (an answer that made no unit, such
//! as an email order or a domain without a pending validation, for [`INFO_TTL`]), so a scan of
//! an account whose candidates are all known costs the list calls only. Entries outside the filters (zones no provider serves, products, containers,
//! excluded ids, ids a TOML unit has) cost no call at all.
//!
//! A list call that fails keeps the previous scan's units of that kind: a CertCentral outage
//! never drops running units. This module decides which units exist; it publishes nothing and
//! drives no unit (the engine does, through the same machinery as TOML units).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use certcentral::types::{DcvMethod, DomainInfo, OrderSummary, OrderValidation};
use certcentral::{Client, DomainFilter, OrderFilter, ValidationScope};
use dns_provider::normalize_name;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{Config, Discovery, Method, Unit, UnitKey, UnitSource};

/// How long an info answer that made no unit is trusted: an order switched to a DNS method, or a
/// domain submitted for validation, in CertCentral's UI is seen after at most this long.
pub const INFO_TTL: Duration = Duration::from_secs(24 * 3600);

/// Info calls in flight at once during a scan (each still waits for the rate limiter).
const INFO_CONCURRENCY: usize = 8;

/// Info calls one scan may make once the daemon runs (rescan, SIGHUP): one burst of DigiCert's
/// 100-per-5-seconds window. A reload scan runs beside the engine, but its info calls share the
/// token lane with the running units' token requests, so a burst of new orders must not hold it
/// for long; the candidates beyond the budget are asked about at the next scans. The scan at
/// start has no budget (nothing runs yet).
pub const RELOAD_INFO_BUDGET: usize = 100;

/// What one scan did and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// List orders and List domains calls (pages).
    pub list_calls: u32,
    /// Order validation status and Domain info calls.
    pub info_calls: u32,
    /// Orders switched to `set_method`.
    pub method_changes: u32,
    /// Pending orders listed.
    pub pending_orders: usize,
    /// Domains listed.
    pub domains_listed: usize,
    /// Order units the scan produced.
    pub order_units: usize,
    /// Domain units the scan produced.
    pub domain_units: usize,
    /// Whether a list call failed (the previous units of that kind were kept).
    pub failed: bool,
    /// New candidates left for a later scan because the info budget was spent.
    pub deferred: usize,
}

/// What Order validation status said about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderFacts {
    method: Option<DcvMethod>,
    scope: Option<ValidationScope>,
    dcv_done: bool,
    asked_at: Instant,
}

impl OrderFacts {
    /// Whether the answer is still trusted: one that makes a unit (a DNS method, DCV not done)
    /// stays true while the order is pending (dcvd's own switch updates it); others may change
    /// in CertCentral's UI and are asked again after [`INFO_TTL`].
    fn fresh(&self, now: Instant) -> bool {
        (self.method.as_ref().and_then(dns_method).is_some() && !self.dcv_done)
            || now.duration_since(self.asked_at) < INFO_TTL
    }
}

/// What Domain info said about a domain without an active validation.
#[derive(Debug, Clone)]
struct DomainFacts {
    /// Validation types (`ov`, `ev`) pending or expired.
    due: Vec<String>,
    asked_at: Instant,
}

/// The scanner: remembers what earlier scans learnt, so later ones cost the list calls only.
#[derive(Debug, Default)]
pub struct Scanner {
    orders: HashMap<u64, OrderFacts>,
    domains: HashMap<u64, DomainFacts>,
    /// The previous scan's units (`None`: no scan of that kind succeeded yet).
    last_orders: Option<Vec<Unit>>,
    last_domains: Option<Vec<Unit>>,
    /// The last scan's report.
    pub last_report: ScanReport,
    /// Info calls one scan may make (`None`: no limit); see [`RELOAD_INFO_BUDGET`].
    pub info_budget: Option<usize>,
}

impl Scanner {
    /// A scanner that knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `config` with the units of a fresh scan (see [`Config::with_discovered`]); unchanged
    /// when it has no `[discovery]` section.
    pub async fn apply(&mut self, config: Config, client: &Client) -> Config {
        let Some(settings) = config.discovery.clone() else {
            *self = Self { info_budget: self.info_budget, ..Self::default() };
            return config.with_discovered(Vec::new(), HashSet::new());
        };
        let (units, rediscovered) = self.scan(&config, &settings, client).await;
        config.with_discovered(units, rediscovered)
    }

    /// Scans the account: the discovered units, and those of them that were not in the
    /// previous scan's set (a unit of theirs that ended starts over).
    pub async fn scan(
        &mut self,
        config: &Config,
        settings: &Discovery,
        client: &Client,
    ) -> (Vec<Unit>, HashSet<UnitKey>) {
        let started = Instant::now();
        let mut report = ScanReport::default();
        let mut units = Vec::new();
        let mut rediscovered = HashSet::new();
        if settings.orders {
            match self.scan_orders(config, settings, client, &mut report).await {
                Some(found) => self.last_orders = Some(found),
                None => report.failed = true,
            }
            units.extend(self.last_orders.clone().unwrap_or_default());
        } else {
            self.last_orders = None;
            self.orders.clear();
        }
        if settings.domains {
            let before: HashSet<UnitKey> = self.last_domains.iter().flatten().map(|u| u.key).collect();
            match self.scan_domains(config, settings, client, &mut report).await {
                Some(found) => {
                    rediscovered.extend(found.iter().map(|u| u.key).filter(|k| !before.contains(k)));
                    self.last_domains = Some(found);
                }
                None => report.failed = true,
            }
            units.extend(self.last_domains.clone().unwrap_or_default());
        } else {
            self.last_domains = None;
            self.domains.clear();
        }
        report.order_units = units.iter().filter(|u| matches!(u.key, UnitKey::Order(_))).count();
        report.domain_units = units.len() - report.order_units;
        info!(
            orders = report.order_units,
            domains = report.domain_units,
            pending_orders = report.pending_orders,
            domains_listed = report.domains_listed,
            list_calls = report.list_calls,
            info_calls = report.info_calls,
            method_changes = report.method_changes,
            deferred = report.deferred,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "discovery scan"
        );
        self.last_report = report;
        (units, rediscovered)
    }

    async fn scan_orders(
        &mut self,
        config: &Config,
        settings: &Discovery,
        client: &Client,
        report: &mut ScanReport,
    ) -> Option<Vec<Unit>> {
        let listing = match client.list_all_orders(&OrderFilter::pending()).await {
            Ok(listing) => listing,
            Err(e) => {
                warn!(error = %e, "discovery: cannot list pending orders; keeping the orders found before");
                return None;
            }
        };
        report.list_calls += listing.calls;
        report.pending_orders = listing.items.len();
        let configured: HashSet<UnitKey> =
            config.units.iter().filter(|u| u.source == UnitSource::Config).map(|u| u.key).collect();
        let pending: HashSet<u64> = listing.items.iter().map(|o| o.id).collect();
        let now = Instant::now();
        self.orders.retain(|id, f| pending.contains(id) && f.fresh(now));

        // Entries the filters reject cost nothing; the rest need their method once.
        let candidates: Vec<(OrderSummary, Vec<String>)> = listing
            .items
            .into_iter()
            .filter(|o| !configured.contains(&UnitKey::Order(o.id)) && !settings.exclude_orders.contains(&o.id))
            .filter(|o| settings.product_allowed(o.product_name_id()) && settings.container_allowed(o.container_id()))
            .filter_map(|o| {
                let names = order_names(&o);
                let plausible = !names.is_empty()
                    && names.iter().all(|n| {
                        [ValidationScope::Base, ValidationScope::Exact]
                            .iter()
                            .any(|s| managed(config, settings, &s.owner(n)))
                    });
                plausible.then_some((o, names))
            })
            .collect();
        let unknown: Vec<u64> =
            candidates.iter().map(|(o, _)| o.id).filter(|id| !self.orders.contains_key(id)).collect();
        let unknown = self.within_budget(unknown, report);
        let answers = fetch_all(client, unknown, |c, id| async move { c.order_validation(id).await }).await;
        for (id, answer) in answers {
            report.info_calls += 1;
            match answer {
                Ok(v) => {
                    self.orders.insert(id, order_facts(&v));
                }
                Err(e) => warn!(order_id = id, error = %e, "discovery: cannot read the order's validation status"),
            }
        }

        let previous: HashMap<UnitKey, Unit> = self.last_orders.iter().flatten().map(|u| (u.key, u.clone())).collect();
        let mut units = Vec::new();
        for (order, names) in candidates {
            let key = UnitKey::Order(order.id);
            let Some(facts) = self.orders.get(&order.id).cloned() else {
                // Its info call failed: keep what the previous scan decided.
                units.extend(previous.get(&key).cloned());
                continue;
            };
            if facts.dcv_done {
                debug!(order_id = order.id, "discovery: DCV of the order is complete; nothing to do");
                continue;
            }
            let scope = facts.scope.unwrap_or(config.certcentral.validation_scope);
            let owners = crate::records::owner_names(scope, &names);
            if let Some(outside) = owners.iter().find(|o| !managed(config, settings, o)) {
                debug!(order_id = order.id, owner = %outside, scope = scope.as_str(),
                    "discovery: skipping an order validated outside the managed zones");
                continue;
            }
            let method = match facts.method.as_ref().and_then(dns_method) {
                Some(m) => m,
                None => {
                    let Some(wanted) = settings.set_method else {
                        debug!(
                            order_id = order.id,
                            method = facts.method.as_ref().map_or("none", DcvMethod::as_str),
                            "discovery: skipping an order with a non-DNS DCV method (set_method is off)"
                        );
                        continue;
                    };
                    let from = facts.method.as_ref().map_or("none", DcvMethod::as_str).to_string();
                    match client.change_order_dcv_method(order.id, &to_dcv_method(wanted)).await {
                        Ok(()) => {
                            report.method_changes += 1;
                            info!(order_id = order.id, from = %from, to = wanted.as_str(),
                                "discovery: switched the order's DCV method (set_method)");
                            if let Some(f) = self.orders.get_mut(&order.id) {
                                f.method = Some(to_dcv_method(wanted));
                            }
                            wanted
                        }
                        Err(e) => {
                            warn!(order_id = order.id, error = %e, "discovery: cannot switch the order's DCV method");
                            continue;
                        }
                    }
                }
            };
            units.push(Unit {
                key,
                method,
                domains: names,
                provider: None,
                submit: Vec::new(),
                txt_name: Default::default(),
                cname_name: Default::default(),
                scope,
                origin: settings.origin.clone(),
                source: UnitSource::Discovered,
            });
        }
        Some(units)
    }

    async fn scan_domains(
        &mut self,
        config: &Config,
        settings: &Discovery,
        client: &Client,
        report: &mut ScanReport,
    ) -> Option<Vec<Unit>> {
        let listing = match client.list_all_domains(&DomainFilter::active()).await {
            Ok(listing) => listing,
            Err(e) => {
                warn!(error = %e, "discovery: cannot list the account's domains; keeping the domains found before");
                return None;
            }
        };
        report.list_calls += listing.calls;
        report.domains_listed = listing.items.len();
        let configured: HashSet<UnitKey> =
            config.units.iter().filter(|u| u.source == UnitSource::Config).map(|u| u.key).collect();
        let listed: HashSet<u64> = listing.items.iter().map(|d| d.id).collect();
        let now_instant = Instant::now();
        self.domains.retain(|id, f| listed.contains(id) && now_instant.duration_since(f.asked_at) < INFO_TTL);
        let horizon = chrono::Utc::now()
            + chrono::Duration::from_std(settings.revalidate_before).unwrap_or_else(|_| chrono::Duration::days(30));

        let candidates: Vec<(DomainInfo, String)> = listing
            .items
            .into_iter()
            .filter(|d| !configured.contains(&UnitKey::Domain(d.id)) && !settings.exclude_domains.contains(&d.id))
            .filter(|d| d.is_active != Some(false) && settings.container_allowed(d.container_id()))
            .filter_map(|d| {
                let name = normalize_name(&d.name);
                managed(config, settings, &name).then_some((d, name))
            })
            .collect();
        // A domain without an active validation may have a pending one: only Domain info says.
        let unknown: Vec<u64> = candidates
            .iter()
            .filter(|(d, _)| d.validations.is_empty() && !self.domains.contains_key(&d.id))
            .map(|(d, _)| d.id)
            .collect();
        let unknown = self.within_budget(unknown, report);
        let answers = fetch_all(client, unknown, |c, id| async move { c.domain_info(id).await }).await;
        for (id, answer) in answers {
            report.info_calls += 1;
            match answer {
                Ok(info) => {
                    self.domains.insert(id, DomainFacts { due: due_kinds(&info, horizon), asked_at: Instant::now() });
                }
                Err(e) => warn!(domain_id = id, error = %e, "discovery: cannot read the domain's validations"),
            }
        }

        let previous: HashMap<UnitKey, Unit> = self.last_domains.iter().flatten().map(|u| (u.key, u.clone())).collect();
        let mut units = Vec::new();
        for (domain, name) in candidates {
            let key = UnitKey::Domain(domain.id);
            let due = if domain.validations.is_empty() {
                match self.domains.get(&domain.id) {
                    Some(facts) => facts.due.clone(),
                    None => {
                        units.extend(previous.get(&key).cloned());
                        continue;
                    }
                }
            } else {
                due_kinds(&domain, horizon)
            };
            if due.is_empty() {
                continue;
            }
            // Submitting for validation sets the method: the domain's own when it is DNS.
            let method =
                domain.dcv_method.as_ref().and_then(dns_method).or(settings.set_method).unwrap_or(Method::DnsTxtToken);
            units.push(Unit {
                key,
                method,
                domains: vec![name],
                provider: None,
                submit: due,
                txt_name: Default::default(),
                cname_name: Default::default(),
                scope: ValidationScope::Exact,
                origin: settings.origin.clone(),
                source: UnitSource::Discovered,
            });
        }
        Some(units)
    }
}

impl Scanner {
    /// The ids the info budget still allows this scan (the rest are counted as deferred).
    fn within_budget(&self, mut ids: Vec<u64>, report: &mut ScanReport) -> Vec<u64> {
        if let Some(budget) = self.info_budget {
            let left = budget.saturating_sub(report.info_calls as usize);
            if ids.len() > left {
                report.deferred += ids.len() - left;
                ids.truncate(left);
            }
        }
        ids
    }
}

/// Whether discovered work may publish at `owner`: a provider serves it and it lies in the
/// `[discovery] zones`.
fn managed(config: &Config, settings: &Discovery, owner: &str) -> bool {
    let owner = owner.strip_prefix("*.").unwrap_or(owner);
    settings.zone_allowed(owner) && config.provider_for(owner, None).is_some()
}

/// The order's names from List orders: `dns_names` without blanks, else the common name;
/// normalized and deduplicated.
fn order_names(order: &OrderSummary) -> Vec<String> {
    let mut names: Vec<String> = order
        .certificate
        .dns_names
        .iter()
        .chain(order.certificate.common_name.iter())
        .map(|n| normalize_name(n))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Reads Order validation status: the method, the scope DigiCert applies, and whether every
/// name is validated already (statuses seen: `approved` in DigiCert's example, `valid` in
/// check-dcv answers; anything else counts as not done, which at worst costs one DCV cycle).
fn order_facts(v: &OrderValidation) -> OrderFacts {
    let scope = match v.order_name_scope.as_deref() {
        Some("base_domain") => Some(ValidationScope::Base),
        Some("fqdn") => Some(ValidationScope::Exact),
        _ => None,
    };
    let dcv_done = !v.dns_name_validations.is_empty()
        && v.dns_name_validations.iter().all(|n| {
            matches!(
                n.status.as_deref().map(str::to_ascii_lowercase).as_deref(),
                Some("approved" | "valid" | "complete")
            )
        });
    OrderFacts { method: v.order_dcv_method.clone(), scope, dcv_done, asked_at: Instant::now() }
}

/// The OV/EV validation types of `domain` that are pending, expired, or end by `horizon` (the
/// earlier of `validated_until` and the DCV reuse end counts).
fn due_kinds(domain: &DomainInfo, horizon: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let mut due = Vec::new();
    for kind in ["ov", "ev"] {
        let Some(v) = domain.validation(kind) else { continue };
        let status = v.status.as_deref().unwrap_or("").to_ascii_lowercase();
        let ends =
            [v.validated_until, domain.dcv_expiration.as_ref().and_then(|e| e.of(kind))].into_iter().flatten().min();
        let needed = match status.as_str() {
            "pending" | "expired" => true,
            _ => ends.is_none_or(|t| t <= horizon),
        };
        if needed {
            due.push(kind.to_string());
        }
    }
    due
}

fn dns_method(m: &DcvMethod) -> Option<Method> {
    match m {
        DcvMethod::DnsTxtToken => Some(Method::DnsTxtToken),
        DcvMethod::DnsCnameToken => Some(Method::DnsCnameToken),
        _ => None,
    }
}

fn to_dcv_method(m: Method) -> DcvMethod {
    match m {
        Method::DnsTxtToken => DcvMethod::DnsTxtToken,
        Method::DnsCnameToken => DcvMethod::DnsCnameToken,
    }
}

/// Runs `call` for every id, [`INFO_CONCURRENCY`] at a time, answers in id order.
async fn fetch_all<T, F, Fut>(client: &Client, ids: Vec<u64>, call: F) -> Vec<(u64, Result<T, certcentral::Error>)>
where
    T: Send + 'static,
    F: Fn(Client, u64) -> Fut,
    Fut: std::future::Future<Output = Result<T, certcentral::Error>> + Send + 'static,
{
    let mut out = Vec::with_capacity(ids.len());
    let mut tasks = JoinSet::new();
    let mut ids = ids.into_iter();
    loop {
        while tasks.len() < INFO_CONCURRENCY {
            let Some(id) = ids.next() else { break };
            let fut = call(client.clone(), id);
            tasks.spawn(async move { (id, fut.await) });
        }
        match tasks.join_next().await {
            Some(Ok(answer)) => out.push(answer),
            Some(Err(e)) => warn!(error = %e, "discovery: an info call panicked"),
            None => break,
        }
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use certcentral::types::{DcvExpiration, DnsNameValidation, DomainValidation};
    use chrono::{Duration as Days, Utc};

    fn domain(validations: Vec<DomainValidation>, ov_reuse: Option<chrono::DateTime<Utc>>) -> DomainInfo {
        DomainInfo {
            id: 1,
            name: "example.com".into(),
            status: None,
            is_active: Some(true),
            container: None,
            dcv_expiration: ov_reuse.map(|t| DcvExpiration { ov: Some(t), ..Default::default() }),
            dcv_method: None,
            dcv_token: None,
            validations,
        }
    }

    fn validation(kind: &str, status: &str, until: Option<chrono::DateTime<Utc>>) -> DomainValidation {
        DomainValidation { kind: kind.into(), status: Some(status.into()), validated_until: until, dcv_status: None }
    }

    #[test]
    fn a_domain_is_due_when_a_validation_ends_within_the_horizon() {
        let now = Utc::now();
        let horizon = now + Days::days(30);
        let d = domain(
            vec![
                validation("ov", "active", Some(now + Days::days(10))),
                validation("ev", "active", Some(now + Days::days(200))),
            ],
            None,
        );
        assert_eq!(due_kinds(&d, horizon), vec!["ov"]);
        let far = domain(vec![validation("ov", "active", Some(now + Days::days(200)))], None);
        assert!(due_kinds(&far, horizon).is_empty());
        // the DCV reuse end counts when it comes first
        let reuse = domain(vec![validation("ov", "active", Some(now + Days::days(200)))], Some(now + Days::days(5)));
        assert_eq!(due_kinds(&reuse, horizon), vec!["ov"]);
        // pending and expired validations are due whatever their dates
        let pending = domain(vec![validation("ov", "pending", None), validation("ev", "expired", None)], None);
        assert_eq!(due_kinds(&pending, horizon), vec!["ov", "ev"]);
        // other validation types are not dcvd's business
        assert!(due_kinds(&domain(vec![validation("cs", "pending", None)], None), horizon).is_empty());
    }

    /// Answers that made a unit are kept while the order is pending; the others (an email
    /// order, a completed DCV) are asked again after a day.
    #[test]
    fn order_facts_that_made_no_unit_expire() {
        let asked = Instant::now();
        let facts = |method, dcv_done| OrderFacts { method: Some(method), scope: None, dcv_done, asked_at: asked };
        let later = asked + INFO_TTL + Duration::from_secs(1);
        assert!(facts(DcvMethod::DnsTxtToken, false).fresh(later));
        for f in [facts(DcvMethod::Email, false), facts(DcvMethod::DnsCnameToken, true)] {
            assert!(f.fresh(asked + Duration::from_secs(3600)), "{f:?}");
            assert!(!f.fresh(later), "{f:?}");
        }
    }

    #[test]
    fn order_facts_read_method_scope_and_completion() {
        let entry = |status: &str| DnsNameValidation { status: Some(status.into()), ..Default::default() };
        let mut v = OrderValidation {
            order_dcv_method: Some(DcvMethod::Email),
            order_name_scope: Some("fqdn".into()),
            dns_name_validations: vec![entry("approved"), entry("pending")],
            ..Default::default()
        };
        let f = order_facts(&v);
        assert_eq!((f.method, f.scope, f.dcv_done), (Some(DcvMethod::Email), Some(ValidationScope::Exact), false));
        v.dns_name_validations = vec![entry("approved"), entry("Valid")];
        v.order_name_scope = Some("base_domain".into());
        let f = order_facts(&v);
        assert_eq!((f.scope, f.dcv_done), (Some(ValidationScope::Base), true));
        v.dns_name_validations.clear();
        assert!(!order_facts(&v).dcv_done, "no per-name entries: not known to be done");
    }

    /// An in-process simulator, a configuration whose provider serves `example.com`, and a
    /// client that does not retry (a failed list call fails the scan at once).
    async fn account(extra: &str) -> (certcentral_sim::Sim, certcentral_sim::RunningSim, Config, Client) {
        let sim = certcentral_sim::Sim::new(certcentral_sim::SimConfig {
            api_key: "discovery-unit-test".into(),
            ..Default::default()
        });
        let running = sim.clone().spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let text = format!(
            "[certcentral]\nbase_url = \"{}\"\napi_key_env = \"KEY\"\n\n[providers.dns]\ntype = \"memory\"\n\
             zones = [\"example.com\"]\n\n[discovery]\norders = true\ndomains = true\n{extra}",
            running.base_url
        );
        let env = crate::config::Environment::isolated().with_var("KEY", "discovery-unit-test");
        let config = Config::from_toml_with(&text, std::path::Path::new("t.toml"), &env).unwrap();
        let mut cc = certcentral::ClientConfig::new(running.base_url.clone(), "discovery-unit-test".to_string().into());
        cc.allow_insecure_http = true;
        cc.retry = certcentral::RetryPolicy::new(1, Duration::from_millis(10), Duration::from_millis(10));
        (sim, running, config, certcentral::Client::new(cc).unwrap())
    }

    fn keys(config: &Config) -> Vec<UnitKey> {
        let mut k: Vec<UnitKey> =
            config.units.iter().filter(|u| u.source == UnitSource::Discovered).map(|u| u.key).collect();
        k.sort();
        k
    }

    /// A domain that was revalidated leaves the set; when it is due again it comes back as
    /// "rediscovered" (so a unit of it that ended starts over), exactly once.
    #[tokio::test]
    async fn a_domain_due_again_is_rediscovered() {
        let (sim, _running, config, client) = account("").await;
        sim.add_domain(
            certcentral_sim::NewDomain::new(1, "a.example.com").validated("ov", Utc::now() + Days::days(10)),
        );
        let mut scanner = Scanner::new();
        let (units, again) = scanner.scan(&config, config.discovery.as_ref().unwrap(), &client).await;
        assert_eq!(units.iter().map(|u| u.key).collect::<Vec<_>>(), [UnitKey::Domain(1)]);
        assert_eq!(units[0].submit, ["ov"]);
        assert_eq!(again, [UnitKey::Domain(1)].into(), "new to this process");
        let (_, again) = scanner.scan(&config, config.discovery.as_ref().unwrap(), &client).await;
        assert!(again.is_empty(), "still in the set: not rediscovered");
        let revalidated = certcentral_sim::DomainPatch {
            validations: [("ov".to_string(), Some(Utc::now() + Days::days(300)))].into(),
            ..Default::default()
        };
        sim.update_domain(1, revalidated).unwrap();
        let (units, _) = scanner.scan(&config, config.discovery.as_ref().unwrap(), &client).await;
        assert!(units.is_empty(), "validated for 300 days: not due");
        let due = certcentral_sim::DomainPatch {
            validations: [("ov".to_string(), Some(Utc::now() + Days::days(5)))].into(),
            ..Default::default()
        };
        sim.update_domain(1, due).unwrap();
        let (units, again) = scanner.scan(&config, config.discovery.as_ref().unwrap(), &client).await;
        assert_eq!((units.len(), again), (1, [UnitKey::Domain(1)].into()));
        assert_eq!(scanner.last_report.info_calls, 0, "listed validations need no Domain info");
    }

    /// A failed list keeps the previous units of that kind only; the next good scan replaces them.
    /// Known candidates and ids the TOML lists cost no info call.
    #[tokio::test]
    async fn a_failed_list_keeps_the_previous_units_and_known_candidates_cost_nothing() {
        let (sim, _running, config, client) =
            account("\n[[order]]\nid = 3\nmethod = \"dns-txt-token\"\ndomains = [\"c.example.com\"]\n").await;
        sim.add_order(certcentral_sim::NewOrder::new(1, &["a.example.com"]));
        sim.add_order(certcentral_sim::NewOrder::new(2, &["b.example.org"]));
        sim.add_order(certcentral_sim::NewOrder::new(3, &["c.example.com"]));
        sim.add_domain(certcentral_sim::NewDomain::new(9, "d.example.com").pending("ev"));
        let mut scanner = Scanner::new();
        let config = scanner.apply(config, &client).await;
        assert_eq!(keys(&config), [UnitKey::Order(1), UnitKey::Domain(9)]);
        assert_eq!(config.unit(UnitKey::Domain(9)).unwrap().submit, ["ev"]);
        assert_eq!(config.unit(UnitKey::Order(3)).unwrap().source, UnitSource::Config, "the TOML wins");
        let r = scanner.last_report.clone();
        assert_eq!((r.list_calls, r.info_calls), (2, 2), "order 1's validation status, domain 9's info");
        let stats = sim.stats();
        assert!(!stats.order_calls.contains_key(&2) && !stats.order_calls.contains_key(&3), "{:?}", stats.order_calls);

        let mut faults = certcentral_sim::FaultConfig::default();
        faults
            .endpoints
            .insert("list_orders".into(), certcentral_sim::FaultRule { error_503: 1.0, ..Default::default() });
        sim.set_faults(faults);
        sim.add_order(certcentral_sim::NewOrder::new(4, &["e.example.com"]));
        let config = scanner.apply(config, &client).await;
        assert!(scanner.last_report.failed);
        assert_eq!(keys(&config), [UnitKey::Order(1), UnitKey::Domain(9)], "order 1 kept through the outage");

        sim.set_faults(certcentral_sim::FaultConfig::default());
        sim.update_order(1, certcentral_sim::OrderPatch { status: Some("issued".into()), ..Default::default() })
            .unwrap();
        let config = scanner.apply(config, &client).await;
        assert_eq!(keys(&config), [UnitKey::Order(4), UnitKey::Domain(9)], "1 left the pending list, 4 is new");
        let r = scanner.last_report.clone();
        assert_eq!((r.list_calls, r.info_calls, r.failed), (2, 1, false), "only order 4 is new");
    }

    /// With an info budget, new candidates beyond it wait for the next scans; known ones cost
    /// nothing, so every candidate is found after a few scans.
    #[tokio::test]
    async fn the_info_budget_defers_new_candidates_to_later_scans() {
        let (sim, _running, config, client) = account("").await;
        for id in 1..=5 {
            sim.add_order(certcentral_sim::NewOrder::new(id, &[&format!("o{id}.example.com")]));
        }
        sim.add_domain(certcentral_sim::NewDomain::new(9, "d.example.com").pending("ov"));
        let mut scanner = Scanner { info_budget: Some(2), ..Scanner::new() };
        let config = scanner.apply(config, &client).await;
        assert_eq!(keys(&config), [UnitKey::Order(1), UnitKey::Order(2)]);
        assert_eq!((scanner.last_report.info_calls, scanner.last_report.deferred), (2, 4));
        let config = scanner.apply(config, &client).await;
        assert_eq!(keys(&config).len(), 4);
        let config = scanner.apply(config, &client).await;
        assert_eq!(keys(&config).len(), 6, "{:?}", keys(&config));
        assert_eq!((scanner.last_report.info_calls, scanner.last_report.deferred), (2, 0), "order 5, domain 9");
        assert_eq!(sim.stats().calls.get("order_validation"), Some(&5), "each order asked about once");
    }

    /// Product, container and `exclude` filters and the zone filter reject orders and domains
    /// before any info call.
    #[tokio::test]
    async fn filters_reject_before_any_info_call() {
        let (sim, _running, config, client) = account(
            "zones = [\"shop.example.com\"]\nproducts = { deny = [\"ssl_ev_basic\"] }\ncontainers = [5]\n\
             exclude = { orders = [4], domains = [8] }\n",
        )
        .await;
        let order = |id: u64, name: &str| certcentral_sim::NewOrder::new(id, &[name]).with_container(5);
        sim.add_order(order(1, "a.shop.example.com"));
        sim.add_order(certcentral_sim::NewOrder {
            product_name_id: Some("ssl_ev_basic".into()),
            ..order(2, "b.shop.example.com")
        });
        sim.add_order(certcentral_sim::NewOrder::new(3, &["c.shop.example.com"]).with_container(6));
        sim.add_order(order(4, "d.shop.example.com"));
        sim.add_order(order(5, "www.example.com")); // outside `zones`
        let due = || Utc::now() + Days::days(3);
        sim.add_domain(
            certcentral_sim::NewDomain::new(7, "x.shop.example.com").with_container(5).validated("ov", due()),
        );
        sim.add_domain(
            certcentral_sim::NewDomain::new(8, "y.shop.example.com").with_container(5).validated("ov", due()),
        );
        sim.add_domain(certcentral_sim::NewDomain::new(9, "z.shop.example.com").with_container(6).pending("ov"));
        let mut scanner = Scanner::new();
        // exact scope: with base, every name here is validated at example.com, outside `zones`
        sim.set_validation_scope(ValidationScope::Exact);
        let config = scanner.apply(config, &client).await;
        assert_eq!(keys(&config), [UnitKey::Order(1), UnitKey::Domain(7)]);
        let stats = sim.stats();
        assert_eq!(stats.order_calls.keys().collect::<Vec<_>>(), [&1], "{:?}", stats.order_calls);
        assert!(stats.domain_calls.is_empty(), "{:?}", stats.domain_calls);
    }

    #[test]
    fn order_names_drop_blanks_and_fall_back_to_the_common_name() {
        let mut o: OrderSummary = serde_json::from_value(serde_json::json!({
            "id": 5, "status": "pending",
            "certificate": {"common_name": "Example.com.", "dns_names": [" ", "www.example.com", "example.com"]}
        }))
        .unwrap();
        assert_eq!(order_names(&o), vec!["example.com", "www.example.com"]);
        o.certificate.dns_names = vec![" ".into()];
        assert_eq!(order_names(&o), vec!["example.com"]);
    }
}
