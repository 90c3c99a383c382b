//! From text to a validated [`Config`]: sections, cross-field checks, order files, units.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::env::{Context, Environment, SecretKeys};
use super::error::{ConfigError, Location, Source};
use super::raw::{P, RawCertCentral, RawCheck, RawDaemon, RawDomain, RawMain, RawOrder, RawOrderFile, RawPropagation};
use super::{
    CertCentral, Check, CnameName, Config, DEFAULT_BASE_URL, DEFAULT_STATE_DIR, Daemon, Method, Propagation, Provider,
    ProviderMatch, RateLimit, TxtName, Unit, UnitKey, ValidationScope, default_rate_limits, names, provider,
};

pub(super) fn build(text: &str, file: &Path, env: &Environment) -> Result<Config, ConfigError> {
    let src = Source::new(file, text);
    let ctx = Context::new(env, file.parent().unwrap_or(Path::new("")));
    let mut warnings = Vec::new();

    let mut root = DeTable::parse(text).map_err(|e| src.toml_error(&e))?;
    // Providers are dispatched on `type` with their own schema (see provider.rs).
    let providers_value = root.get_mut().remove("providers");
    let raw = RawMain::deserialize(toml::de::Deserializer::from(root)).map_err(|e| src.toml_error(&e))?;

    let certcentral = certcentral(&src, &ctx, raw.certcentral, &mut warnings)?;
    // Before the providers: exec hooks' `env_pass` is checked against its secret variable too.
    let notify = super::notify::parse(&src, &ctx, raw.notify, &mut warnings)?;
    let (daemon, order_globs, state_dir_origin) = daemon(&src, &ctx, raw.daemon, &mut warnings)?;
    let propagation = propagation(&src, raw.propagation)?;
    let check = check(&src, raw.check)?;
    let providers = provider::parse(&src, &ctx, providers_value, &mut warnings)?;
    let discovery = super::discovery::parse(&src, raw.discovery, &providers, &mut warnings)?;
    let store = super::store::parse(&src, &ctx, raw.store, &mut warnings)?;

    let mut units = Units::new(&providers, certcentral.validation_scope);
    units.add(&src, raw.order, raw.domain)?;
    let mut files = vec![file.to_path_buf()];
    for path in order_files(&src, &ctx, file, &order_globs)? {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::new(&path, format!("cannot read order file: {e}")))?;
        let osrc = Source::new(&path, &text);
        let raw: RawOrderFile = toml::from_str(&text).map_err(|e| osrc.toml_error(&e))?;
        units.add(&osrc, raw.order, raw.domain)?;
        files.push(path);
    }
    warnings.append(&mut units.warnings);
    let units = units.units;
    if units.is_empty() && discovery.as_ref().is_none_or(|d| !d.orders && !d.domains) {
        warnings.push(format!(
            "{}: no [[order]] or [[domain]] is configured: dcvd has nothing to validate",
            file.display()
        ));
    }
    let unit_index = units.iter().enumerate().map(|(i, u)| (u.key, i)).collect();
    Ok(Config {
        certcentral,
        daemon,
        propagation,
        check,
        providers,
        notify,
        discovery,
        store,
        units,
        warnings,
        files,
        state_dir_origin,
        unit_index,
        rediscovered: std::collections::HashSet::new(),
    })
}

/// Only `[daemon]` of a main file (the whole file's schema still checked), reading no secret
/// and no order file: what `dcvd status` needs to find the state directory.
pub(super) fn build_daemon(text: &str, file: &Path, env: &Environment) -> Result<Daemon, ConfigError> {
    let src = Source::new(file, text);
    let ctx = Context::new(env, file.parent().unwrap_or(Path::new("")));
    let mut root = DeTable::parse(text).map_err(|e| src.toml_error(&e))?;
    root.get_mut().remove("providers");
    let raw = RawMain::deserialize(toml::de::Deserializer::from(root)).map_err(|e| src.toml_error(&e))?;
    Ok(daemon(&src, &ctx, raw.daemon, &mut Vec::new())?.0)
}

/// `[daemon]` and `[store]` of a main file (the whole file's schema still checked), reading only
/// the store's password and no order file: what `dcvd status` needs to find the store.
pub(super) fn build_daemon_and_store(
    text: &str,
    file: &Path,
    env: &Environment,
) -> Result<(Daemon, super::StoreSettings), ConfigError> {
    let src = Source::new(file, text);
    let ctx = Context::new(env, file.parent().unwrap_or(Path::new("")));
    let mut root = DeTable::parse(text).map_err(|e| src.toml_error(&e))?;
    root.get_mut().remove("providers");
    let raw = RawMain::deserialize(toml::de::Deserializer::from(root)).map_err(|e| src.toml_error(&e))?;
    let daemon = daemon(&src, &ctx, raw.daemon, &mut Vec::new())?.0;
    let store = super::store::parse(&src, &ctx, raw.store, &mut Vec::new())?;
    Ok((daemon, store))
}

fn certcentral(
    src: &Source<'_>,
    ctx: &Context<'_>,
    raw: Option<Spanned<RawCertCentral>>,
    warnings: &mut Vec<String>,
) -> Result<CertCentral, ConfigError> {
    let Some(raw) = raw else {
        return Err(src.error_here("missing [certcentral] section: it needs at least `api_key_file` or `api_key_env`"));
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let api_key = ctx.secret(
        src,
        &SecretKeys {
            file_key: "api_key_file",
            env_key: "api_key_env",
            file: raw.api_key_file.as_ref(),
            env: raw.api_key_env.as_ref(),
            section: &span,
            section_name: "[certcentral]",
        },
        warnings,
    )?;
    let (base_url, allow_insecure_http) = match raw.base_url {
        Some(P(url)) => (url.url, url.insecure_http),
        None => (DEFAULT_BASE_URL.to_owned(), false),
    };
    let rate_limits = match raw.rate_limits {
        None => default_rate_limits(),
        Some(limits) => {
            let mut out = Vec::with_capacity(limits.len());
            for limit in limits {
                if *limit.requests.get_ref() == 0 {
                    return Err(src.error(
                        &limit.requests.span(),
                        "`requests` of a rate limit must be at least 1 (remove the entry to \
                         lift the limit)",
                    ));
                }
                out.push(RateLimit { requests: limit.requests.into_inner(), per: limit.per.0 });
            }
            out
        }
    };
    Ok(CertCentral {
        base_url,
        api_key: api_key.value,
        rate_limits,
        timeout: raw.timeout.map_or(Duration::from_secs(30), |t| t.0),
        allow_insecure_http,
        validation_scope: raw.validation_scope.unwrap_or_default(),
        caa_check: raw.caa_check.unwrap_or(true),
    })
}

type DaemonParts = (Daemon, Vec<Spanned<String>>, Option<Location>);

fn daemon(
    src: &Source<'_>,
    ctx: &Context<'_>,
    raw: Option<RawDaemon>,
    warnings: &mut Vec<String>,
) -> Result<DaemonParts, ConfigError> {
    let Some(raw) = raw else {
        let mut daemon = Daemon::default();
        if let Some(dir) = ctx.env.state_dir() {
            daemon.state_dir = dir;
        }
        return Ok((daemon, Vec::new(), None));
    };
    let defaults = Daemon::default();
    let state_dir_origin = raw.state_dir.as_ref().map(|d| src.location(&d.span()));
    if let Some(listen) = &raw.metrics_listen
        && !listen.get_ref().0.0.ip().is_loopback()
    {
        warnings.push(src.warning(
            &listen.span(),
            format_args!(
                "metrics_listen {} is not a loopback address: /metrics and /healthz have no \
                 authentication, so anyone who reaches the port reads them; listen on 127.0.0.1 or \
                 [::1] (behind an authenticating proxy if it is scraped from elsewhere) or firewall \
                 the port",
                listen.get_ref().0.0
            ),
        ));
    }
    let state_dir = match raw.state_dir {
        Some(dir) if dir.get_ref().trim().is_empty() => {
            return Err(src.error(&dir.span(), "`state_dir` must not be empty"));
        }
        Some(dir) => ctx.relative_path(dir.get_ref()),
        None => ctx.env.state_dir().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
    };
    let max_concurrent = match raw.max_concurrent {
        Some(n) if *n.get_ref() == 0 => {
            return Err(src.error(&n.span(), "`max_concurrent` must be at least 1"));
        }
        Some(n) => n.into_inner(),
        None => defaults.max_concurrent,
    };
    let order_globs = raw.order_files.unwrap_or_default();
    let daemon = Daemon {
        state_dir,
        order_files: order_globs.iter().map(|g| g.get_ref().clone()).collect(),
        rescan: raw.rescan.map_or(defaults.rescan, |c| c.0.0),
        max_concurrent,
        cleanup: raw.cleanup.unwrap_or(defaults.cleanup),
        on_expiry: raw.on_expiry.unwrap_or(defaults.on_expiry),
        max_renewals: raw.max_renewals.unwrap_or(defaults.max_renewals),
        log_format: raw.log_format.unwrap_or(defaults.log_format),
        metrics_listen: raw.metrics_listen.map(|a| a.into_inner().0.0),
    };
    Ok((daemon, order_globs, state_dir_origin))
}

fn propagation(src: &Source<'_>, raw: Option<RawPropagation>) -> Result<Propagation, ConfigError> {
    let defaults = Propagation::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let resolvers = match raw.resolvers {
        Some(list) if list.get_ref().is_empty() => {
            return Err(
                src.error(&list.span(), "`resolvers` must list at least one resolver: \"system\" or \"IP:PORT\"")
            );
        }
        Some(list) => list.into_inner().into_iter().map(|r| r.0).collect(),
        None => defaults.resolvers,
    };
    let nameserver_port = match raw.nameserver_port {
        Some(port) if *port.get_ref() == 0 => {
            return Err(src.error(&port.span(), "`nameserver_port` must be between 1 and 65535"));
        }
        Some(port) => port.into_inner(),
        None => defaults.nameserver_port,
    };
    let max_queries_per_second = match raw.max_queries_per_second {
        Some(n) if *n.get_ref() == 0 => {
            return Err(src.error(&n.span(), "`max_queries_per_second` must be at least 1"));
        }
        Some(n) => n.into_inner(),
        None => defaults.max_queries_per_second,
    };
    let (poll_min, poll_max) = ordered_pair(
        src,
        ("poll_min", raw.poll_min, defaults.poll_min),
        ("poll_max", raw.poll_max, defaults.poll_max),
    )?;
    Ok(Propagation {
        resolvers,
        check: raw.check.unwrap_or(defaults.check),
        nameserver_port,
        poll_min,
        poll_max,
        timeout: raw.timeout.map_or(defaults.timeout, |t| t.0),
        max_queries_per_second,
    })
}

fn check(src: &Source<'_>, raw: Option<RawCheck>) -> Result<Check, ConfigError> {
    let defaults = Check::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let (min_interval, max_interval) = ordered_pair(
        src,
        ("min_interval", raw.min_interval, defaults.min_interval),
        ("max_interval", raw.max_interval, defaults.max_interval),
    )?;
    Ok(Check { min_interval, max_interval })
}

type DurationKey = (&'static str, Option<Spanned<P<Duration>>>, Duration);

/// A (min, max) pair of durations (each defaulted on its own) that must satisfy min <= max.
fn ordered_pair(
    src: &Source<'_>,
    (min_key, min, min_default): DurationKey,
    (max_key, max, max_default): DurationKey,
) -> Result<(Duration, Duration), ConfigError> {
    let span = min.as_ref().or(max.as_ref()).map(Spanned::span);
    let lo = min.map_or(min_default, |d| d.into_inner().0);
    let hi = max.map_or(max_default, |d| d.into_inner().0);
    if let (true, Some(span)) = (lo > hi, span) {
        return Err(src.error(
            &span,
            format!(
                "`{min_key}` ({}) is greater than `{max_key}` ({})",
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ),
        ));
    }
    Ok((lo, hi))
}

/// The order files matched by the globs, sorted per glob, without duplicates or the main file.
fn order_files(
    src: &Source<'_>,
    ctx: &Context<'_>,
    main: &Path,
    globs: &[Spanned<String>],
) -> Result<Vec<PathBuf>, ConfigError> {
    let main_id = std::fs::canonicalize(main).ok();
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    for glob in globs {
        let span = glob.span();
        let written = glob.get_ref();
        let pattern = if Path::new(written).is_absolute() || ctx.base_dir.as_os_str().is_empty() {
            written.clone()
        } else {
            let dir = glob::Pattern::escape(&ctx.base_dir.to_string_lossy());
            format!("{}/{written}", dir.trim_end_matches('/'))
        };
        let paths = glob::glob(&pattern)
            .map_err(|e| src.error(&span, format!("invalid glob {written:?} in `order_files`: {e}")))?;
        let mut matched = false;
        for path in paths {
            let path = path.map_err(|e| {
                src.error(&span, format!("cannot read {:?} (matched by {written:?}): {}", e.path(), e.error()))
            })?;
            if !path.is_file() {
                continue;
            }
            matched = true;
            let id = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if main_id.as_ref() == Some(&id) || !seen.insert(id) {
                continue;
            }
            files.push(path);
        }
        let literal = !written.contains(['*', '?', '[']);
        if literal && !matched {
            return Err(src.error(&span, format!("order file {pattern:?} does not exist (listed in `order_files`)")));
        }
    }
    Ok(files)
}

/// Longest-suffix provider lookup for a normalized name without `*.`.
pub(super) fn find_provider<'a>(
    providers: &'a BTreeMap<String, Provider>,
    name: &str,
    explicit: Option<&str>,
) -> Result<ProviderMatch<'a>, String> {
    let best = |candidates: &mut dyn Iterator<Item = (&'a String, &'a Provider)>| {
        candidates
            .flat_map(|(pname, p)| p.zones().iter().map(move |z| (pname, p, z)))
            .filter(|(_, _, zone)| names::in_zone(name, zone))
            .max_by_key(|(_, _, zone)| zone.len())
            .map(|(pname, provider, zone)| ProviderMatch { name: pname, provider, zone })
    };
    match explicit {
        Some(wanted) => {
            let Some((pname, p)) = providers.get_key_value(wanted) else {
                return Err(unknown_provider(providers, wanted));
            };
            best(&mut std::iter::once((pname, p))).ok_or_else(|| {
                format!(
                    "provider `{wanted}` does not serve {name}: its zones are {}; add the zone \
                     to its `zones` or drop `provider` to choose by zone",
                    p.zones().join(", ")
                )
            })
        }
        None => best(&mut providers.iter()).ok_or_else(|| {
            format!(
                "no provider serves {name}: add its zone to the `zones` of a [providers.NAME] \
                 section"
            )
        }),
    }
}

fn unknown_provider(providers: &BTreeMap<String, Provider>, wanted: &str) -> String {
    if providers.is_empty() {
        format!("unknown provider `{wanted}`: no [providers.NAME] section is configured")
    } else {
        let names: Vec<_> = providers.keys().map(|k| format!("`{k}`")).collect();
        format!("unknown provider `{wanted}`: configured providers are {}", names.join(", "))
    }
}

/// Units of all files, with duplicate detection across files.
struct Units<'p> {
    providers: &'p BTreeMap<String, Provider>,
    /// The account's validation scope, for orders that do not set their own.
    account_scope: ValidationScope,
    units: Vec<Unit>,
    origins: HashMap<UnitKey, Location>,
    warnings: Vec<String>,
}

/// The fields `[[order]]` and `[[domain]]` share.
struct Common {
    id: Spanned<u64>,
    method: Method,
    provider: Option<Spanned<String>>,
    txt_name: Option<Spanned<TxtName>>,
    cname_name: Option<Spanned<CnameName>>,
    /// Where DigiCert validates the names (resolved: the order's, the account's, or exact for
    /// domains) and whether the order set it itself.
    scope: (ValidationScope, bool),
}

impl<'p> Units<'p> {
    fn new(providers: &'p BTreeMap<String, Provider>, account_scope: ValidationScope) -> Self {
        Self { providers, account_scope, units: Vec::new(), origins: HashMap::new(), warnings: Vec::new() }
    }

    fn add(
        &mut self,
        src: &Source<'_>,
        orders: Vec<Spanned<RawOrder>>,
        domains: Vec<Spanned<RawDomain>>,
    ) -> Result<(), ConfigError> {
        enum Raw {
            Order(RawOrder),
            Domain(RawDomain),
        }
        let mut all: Vec<(Range<usize>, Raw)> = orders
            .into_iter()
            .map(|o| (o.span(), Raw::Order(o.into_inner())))
            .chain(domains.into_iter().map(|d| (d.span(), Raw::Domain(d.into_inner()))))
            .collect();
        // Document order, so duplicates are reported at the later table.
        all.sort_by_key(|(span, _)| span.start);
        for (span, raw) in all {
            let origin = src.location(&span);
            match raw {
                Raw::Order(o) => {
                    let common = Common {
                        id: o.id,
                        method: o.method.0,
                        provider: o.provider,
                        txt_name: o.txt_name,
                        cname_name: o.cname_name,
                        scope: match o.validation_scope {
                            Some(scope) => (scope, true),
                            None => (self.account_scope, false),
                        },
                    };
                    let domains: Vec<_> = o
                        .domains
                        .unwrap_or_default()
                        .into_iter()
                        .map(|d| (d.get_ref().0.0.clone(), d.span()))
                        .collect();
                    self.unit(src, origin, common, true, domains, Vec::new())?;
                }
                Raw::Domain(d) => {
                    let common = Common {
                        id: d.id,
                        method: d.method.0,
                        provider: d.provider,
                        txt_name: d.txt_name,
                        cname_name: d.cname_name,
                        scope: (ValidationScope::Exact, false),
                    };
                    let domains = vec![(d.name.get_ref().0.0.clone(), d.name.span())];
                    let submit = submit(src, d.submit.unwrap_or_default())?;
                    self.unit(src, origin, common, false, domains, submit)?;
                }
            }
        }
        Ok(())
    }

    fn unit(
        &mut self,
        src: &Source<'_>,
        origin: Location,
        c: Common,
        is_order: bool,
        domains: Vec<(String, Range<usize>)>,
        submit: Vec<String>,
    ) -> Result<(), ConfigError> {
        let kind = if is_order { "order" } else { "domain" };
        let id = *c.id.get_ref();
        if id == 0 {
            return Err(
                src.error(&c.id.span(), format!("{kind} id must be a positive integer (the id CertCentral shows)"))
            );
        }
        let key = if is_order { UnitKey::Order(id) } else { UnitKey::Domain(id) };
        if let Some(first) = self.origins.get(&key) {
            return Err(src.error(&c.id.span(), format!("duplicate {kind} id {id}: already defined at {first}")));
        }
        if let Some(t) = &c.txt_name
            && c.method != Method::DnsTxtToken
        {
            return Err(src.error(
                &t.span(),
                format!(
                    "`txt_name` applies to method \"dns-txt-token\" only; this {kind} uses {:?}",
                    c.method.as_str()
                ),
            ));
        }
        if let Some(t) = &c.cname_name
            && c.method != Method::DnsCnameToken
        {
            return Err(src.error(
                &t.span(),
                format!(
                    "`cname_name` applies to method \"dns-cname-token\" only; this {kind} uses \
                     {:?}",
                    c.method.as_str()
                ),
            ));
        }
        let explicit = c.provider.as_ref().map(|p| p.get_ref().as_str());
        if let Some(p) = &c.provider
            && !self.providers.contains_key(p.get_ref())
        {
            return Err(src.error(&p.span(), unknown_provider(self.providers, p.get_ref())));
        }
        let (scope, own_scope) = c.scope;
        let mut listed: BTreeSet<&str> = BTreeSet::new();
        let mut owners_checked: BTreeSet<String> = BTreeSet::new();
        for (domain, span) in &domains {
            if !listed.insert(domain) {
                return Err(src.error(span, format!("domain {domain} is listed twice in {kind} {id}")));
            }
            // Records go where DigiCert looks: the validation scope decides the owner.
            let owner = scope.owner(domain);
            if !owners_checked.insert(owner.clone()) {
                continue;
            }
            let found = find_provider(self.providers, &owner, explicit);
            let txt_at_dnsauth =
                c.method == Method::DnsTxtToken && c.txt_name.as_ref().is_none_or(|t| *t.get_ref() == TxtName::Dnsauth);
            match (found, explicit) {
                (Ok(_), _) => {}
                // Delegated validation: `_dnsauth.<owner>` is a CNAME into a zone of the named
                // provider (narrow credentials), so the owner's own zone is served by no one.
                // Whether the CNAME exists is only known at publish time.
                (Err(_), Some(p)) if txt_at_dnsauth => self.warnings.push(src.error(span, format!(
                    "provider `{p}` does not serve {owner}: dcvd expects _dnsauth.{owner} to be a CNAME into one of its \
                     zones (delegated validation) and fails the {kind} if it is not"
                )).to_string()),
                // Say so when the scope is what put the record out of reach: base moved it to a
                // parent no one serves, or exact kept it at a name whose base domain is served.
                (Err(message), _)
                    if is_order
                        && (owner != names::base(domain)
                            || find_provider(self.providers, &ValidationScope::Base.owner(domain), explicit)
                                .is_ok()) =>
                {
                    return Err(src.error(span, scope_hint(&message, scope, domain, &owner, own_scope)));
                }
                (Err(message), _) => return Err(src.error(span, message)),
            }
        }
        self.origins.insert(key, origin.clone());
        self.units.push(Unit {
            key,
            method: c.method,
            domains: domains.into_iter().map(|(d, _)| d).collect(),
            provider: c.provider.map(Spanned::into_inner),
            submit,
            txt_name: c.txt_name.map(Spanned::into_inner).unwrap_or_default(),
            cname_name: c.cname_name.map(Spanned::into_inner).unwrap_or_default(),
            scope,
            origin,
            source: super::UnitSource::Config,
        });
        Ok(())
    }
}

/// Says which validation scope put an order's record where no provider serves it.
fn scope_hint(message: &str, scope: ValidationScope, domain: &str, owner: &str, own_scope: bool) -> String {
    let set_by = if own_scope { "this order's `validation_scope`" } else { "[certcentral] `validation_scope`" };
    let (rule, other) = match scope {
        ValidationScope::Base => (format!("at its base domain {owner}"), "exact"),
        ValidationScope::Exact => (format!("as named ({owner})"), "base"),
    };
    format!(
        "{message}. With validation_scope = \"{scope}\" (from {set_by}) DigiCert validates {domain} {rule}: \
         serve {owner} with a provider, or set validation_scope = \"{other}\" if that is what your CertCentral \
         account does (Settings > Preferences > Advanced Settings > Domain validation scope)"
    )
}

/// `submit`: CertCentral validation type identifiers (`ov`, `ev`, ...), lower case, deduplicated.
fn submit(src: &Source<'_>, raw: Vec<Spanned<String>>) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for value in raw {
        let ty = value.get_ref().to_ascii_lowercase();
        if ty.is_empty() || !ty.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(src.error(
                &value.span(),
                format!(
                    "invalid validation type {:?} in `submit`: expected CertCentral validation \
                     types such as [\"ov\", \"ev\"]",
                    value.get_ref()
                ),
            ));
        }
        if !out.contains(&ty) {
            out.push(ty);
        }
    }
    Ok(out)
}
