//! `dcvd doctor [DOMAIN...]`: checks everything validation depends on, once, and prints a table
//! of what is ok and what failed with what to do: the configuration, the state directory, with
//! `--online` CertCentral (one cheap authenticated call) and each provider's credentials (its
//! read-only preflight); then, for each DOMAIN, the owner dcvd would publish at (scope-aware), the
//! zone and its SOA minimum, what every authoritative server serves there now, the provider that
//! would publish, CAA and DNSSEC; without DOMAINs, the name servers of each configured zone and
//! the CAA records of each configured name.
//!
//! It only reads: no record is published, no token requested, the state store is not opened
//! (the daemon may be running).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use propagation::{Expected, ServerStatus};

use crate::config::Config;
use crate::metrics::Metrics;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`certcentral`, `provider cf`, `zone example.com`, ...).
    pub subject: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found, and for a failure what to do.
    pub detail: String,
}

impl Check {
    fn ok(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { subject: subject.into(), ok: true, detail: detail.into() }
    }
    fn failed(subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { subject: subject.into(), ok: false, detail: detail.into() }
    }
}

/// What to check beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Names to look at in detail (none: every configured zone and name, briefly).
    pub domains: Vec<String>,
    /// Also call CertCentral and each provider with the configured credentials.
    pub online: bool,
}

/// Runs every check for `path`; a configuration that does not load is the only check then.
pub async fn run_checks(path: &Path, scope: &Scope) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut cfg = match Config::load(path) {
        Ok(cfg) => {
            checks.push(Check::ok(
                "configuration",
                format!(
                    "{} ({} units, {} providers, {} files)",
                    path.display(),
                    cfg.units.len(),
                    cfg.providers.len(),
                    cfg.files.len()
                ),
            ));
            cfg
        }
        Err(e) => {
            checks.push(Check::failed("configuration", format!("{e}: fix it (`dcvd check-config` says the same)")));
            return checks;
        }
    };
    let state_dir = cfg.daemon.state_dir.display().to_string();
    match cfg.check_state_dir() {
        Ok(()) => {
            let warnings: Vec<&String> = cfg.warnings.iter().filter(|w| w.contains(&state_dir)).collect();
            match warnings.first() {
                None => checks.push(Check::ok("state directory", format!("{state_dir}: writable by this user"))),
                Some(w) => checks.push(Check::failed("state directory", (*w).clone())),
            }
        }
        Err(e) => checks.push(Check::failed("state directory", e.to_string())),
    }
    if scope.online {
        checks.push(certcentral(&cfg).await);
    }
    for (name, provider) in cfg.providers.iter().filter(|_| scope.online) {
        let subject = format!("provider {name} ({})", provider.kind());
        let result = match crate::providers::build(name, provider).await {
            Ok(built) => built.preflight().await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:#}")),
        };
        checks.push(match result {
            Ok(()) => Check::ok(subject, format!("credentials work for {}", provider.zones().join(", "))),
            Err(e) => Check::failed(subject, format!("{e} (see providers.md for the permissions it needs)")),
        });
    }
    let checker = match propagation::Checker::new(crate::engine::checker_config(&cfg.propagation)) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::failed("propagation", format!("{e}: fix [propagation] resolvers")));
            return checks;
        }
    };
    if !scope.domains.is_empty() {
        for domain in &scope.domains {
            checks.extend(name_checks(&checker, &cfg, domain).await);
        }
        return checks;
    }
    for provider in cfg.providers.values() {
        for zone in provider.zones() {
            checks.push(zone_servers(&checker, zone).await);
        }
    }
    checks.push(caa(&checker, &cfg).await);
    checks
}

/// The checks of one name: where dcvd would publish for it and whether DigiCert could see it.
async fn name_checks(checker: &propagation::Checker, cfg: &Config, domain: &str) -> Vec<Check> {
    let domain = dns_provider::normalize_name(domain);
    let subject = |what: &str| format!("{domain} {what}");
    // The unit that lists the name decides method, scope and provider; else the account's scope.
    let unit = cfg.units.iter().find(|u| u.domains.iter().any(|d| dns_provider::normalize_name(d) == domain));
    let (method, txt_name, cname_name, scope, provider) = match unit {
        Some(u) => (u.method, u.txt_name, u.cname_name, u.scope, u.provider.clone()),
        None => (
            crate::config::Method::DnsTxtToken,
            crate::config::TxtName::default(),
            crate::config::CnameName::default(),
            cfg.certcentral.validation_scope,
            None,
        ),
    };
    let mut checks = Vec::new();
    let records = crate::records::records_for(
        method,
        txt_name,
        cname_name,
        scope,
        std::slice::from_ref(&domain),
        "dcvd-doctor",
        None,
    );
    let from = match unit {
        Some(u) => format!("{} at {}", u.key, u.origin),
        None => "no unit lists it; the account's [certcentral] validation_scope".to_string(),
    };
    for record in records {
        checks.push(Check::ok(
            subject("owner"),
            format!("{} {} (validation_scope = \"{scope}\", method {method}; {from})", record.rtype, record.name),
        ));
        let inspection = match checker.inspect(&record.name).await {
            Ok(i) => i,
            Err(e) => {
                checks.push(Check::failed(
                    subject("zone"),
                    format!(
                        "{e}: the [propagation] resolvers cannot find the zone of {}; check its delegation",
                        record.name
                    ),
                ));
                continue;
            }
        };
        let target = &inspection.target;
        let delegated = if target.is_delegated() {
            format!("; {} is a CNAME to {} (delegated validation)", record.name, target.owner)
        } else {
            String::new()
        };
        checks.push(Check::ok(
            subject("zone"),
            format!(
                "{} (SOA minimum {} s: how long a \"not found\" is cached){delegated}",
                target.zone,
                target.negative_ttl.as_secs()
            ),
        ));
        if inspection.servers.is_empty() {
            checks.push(Check::failed(
                subject("name servers"),
                format!("no address found for the name servers of {}", target.zone),
            ));
        }
        for server in &inspection.servers {
            let row = subject(&format!("ns {} ({})", server.server, server.addr));
            checks.push(match &server.answer {
                Ok(values) if values.is_empty() => Check::ok(row, format!("answers; nothing at {} now", target.owner)),
                Ok(values) => Check::ok(row, format!("serves {} at {}", values.join(", "), target.owner)),
                Err(e) => Check::failed(
                    row,
                    format!("{e}: DigiCert may ask this server; fix it or remove it from the zone's NS set"),
                ),
            });
        }
        checks.push(route_check(cfg, provider.as_deref(), &target.owner, scope, subject("provider")));
        checks.push(match inspection.dnssec {
            propagation::Dnssec::Unsigned => Check::ok(subject("dnssec"), format!("{} is not signed", target.zone)),
            propagation::Dnssec::Validated => {
                Check::ok(subject("dnssec"), format!("{} is signed and the answer validates", target.zone))
            }
            propagation::Dnssec::NotValidated => Check::ok(
                subject("dnssec"),
                format!("{} is signed; the configured resolvers do not validate (DigiCert's do)", target.zone),
            ),
            propagation::Dnssec::Bogus(why) => Check::failed(
                subject("dnssec"),
                format!(
                    "{why}: {} is signed but does not validate, so DigiCert cannot read the record; fix the DS at the \
                     parent zone or the zone's signatures",
                    target.zone
                ),
            ),
        });
    }
    checks.push(match crate::engine::caa_forbids(checker, std::slice::from_ref(&domain)).await {
        None => Check::ok(subject("caa"), "no CAA record forbids DigiCert"),
        Some(reason) => Check::failed(subject("caa"), reason),
    });
    checks
}

/// Which configured provider would publish at `owner` (the unit's own, or the one whose zone
/// holds it, the longest zone winning).
fn route_check(
    cfg: &Config,
    pinned: Option<&str>,
    owner: &str,
    scope: certcentral::ValidationScope,
    row: String,
) -> Check {
    let serving = |zones: &[String]| zones.iter().filter(|z| dns_provider::in_zone(owner, z)).map(String::len).max();
    let found = cfg
        .providers
        .iter()
        .filter(|(name, _)| pinned.is_none_or(|p| p == name.as_str()))
        .filter_map(|(name, p)| serving(p.zones()).map(|len| (len, name, p)))
        .max_by_key(|(len, _, _)| *len);
    match found {
        Some((_, name, p)) => Check::ok(row, format!("provider {name} ({}) publishes {owner}", p.kind())),
        None => Check::failed(
            row,
            format!(
                "no provider{} serves {owner}: add its zone to a provider's zones, or (when the owner is the base \
                 domain) check that validation_scope = \"{scope}\" matches the CertCentral account",
                pinned.map(|p| format!(" named {p}")).unwrap_or_default()
            ),
        ),
    }
}

/// One authenticated call that needs no unit: the first page (one order) of List orders.
async fn certcentral(cfg: &Config) -> Check {
    let subject = format!("certcentral {}", cfg.certcentral.base_url);
    let client = match crate::engine::build_client(&cfg.certcentral, &Arc::new(Metrics::new()), None) {
        Ok(c) => c,
        Err(e) => return Check::failed(subject, format!("{e:#}")),
    };
    match client.list_orders(&certcentral::OrderFilter::default(), 0, 1).await {
        Ok(_) => Check::ok(subject, "reachable; the API key is accepted"),
        Err(e) if e.is_auth() => Check::failed(
            subject,
            format!(
                "{e}: the API key is refused: put a key of this account with API access in [certcentral] api_key_file"
            ),
        ),
        Err(e) if e.is_retryable() => Check::failed(
            subject,
            format!(
                "{e}: CertCentral is not reachable: check DNS, the firewall and any HTTPS proxy on the way to base_url"
            ),
        ),
        Err(e) => Check::failed(subject, e.to_string()),
    }
}

/// Every address of every authoritative name server of `zone` answers a query for a name in it
/// (any answer counts: the record is not expected to exist).
async fn zone_servers(checker: &propagation::Checker, zone: &str) -> Check {
    let subject = format!("zone {zone}");
    let probe = format!("_dnsauth.{zone}");
    match checker.check_once(&probe, &Expected::Txt("dcvd-doctor".into())).await {
        Ok(progress) => {
            let failing: Vec<String> = progress
                .servers
                .iter()
                .filter_map(|(name, addr, status)| match status {
                    ServerStatus::Failing(why) => Some(format!("{name} ({addr}): {why}")),
                    _ => None,
                })
                .collect();
            if progress.servers.is_empty() {
                Check::failed(subject, "no name server address found: check the zone's NS records and their addresses")
            } else if failing.is_empty() {
                let names: Vec<String> = progress.servers.iter().map(|(n, a, _)| format!("{n} ({a})")).collect();
                Check::ok(subject, format!("every name server answers: {}", names.join(", ")))
            } else {
                Check::failed(
                    subject,
                    format!(
                        "{}: these name servers do not answer for the zone; DigiCert may ask any of them, so fix them or \
                         remove them from the zone's NS set",
                        failing.join("; ")
                    ),
                )
            }
        }
        Err(e) => Check::failed(
            subject,
            format!(
                "{e}: the [propagation] resolvers cannot find the zone or its name servers; check that it is delegated"
            ),
        ),
    }
}

/// The CAA records of every configured name allow DigiCert (what the pre-flight checks).
async fn caa(checker: &propagation::Checker, cfg: &Config) -> Check {
    let mut names: Vec<String> = cfg.units.iter().flat_map(|u| u.domains.iter().cloned()).collect();
    names.sort();
    names.dedup();
    let mut forbidden = Vec::new();
    for name in &names {
        if let Some(reason) = crate::engine::caa_forbids(checker, std::slice::from_ref(name)).await {
            forbidden.push(reason);
        }
    }
    if forbidden.is_empty() {
        Check::ok("caa", format!("the CAA records of the {} configured names allow DigiCert", names.len()))
    } else {
        Check::failed("caa", forbidden.join("; "))
    }
}

/// A table of the checks: `CHECK  RESULT  DETAIL`.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.subject.chars().count()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "RESULT");
    for c in checks {
        let result = if c.ok { "ok" } else { "FAILED" };
        out.push_str(&format!("{:<width$}  {result:<6}  {}\n", c.subject, c.detail));
    }
    out
}

/// `dcvd doctor`: prints the table; exit 0 when every check passed, 78 when the configuration
/// does not load, 1 otherwise.
pub async fn main(path: &Path, scope: &Scope) -> ExitCode {
    let checks = run_checks(path, scope).await;
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), render(&checks).as_bytes());
    match checks.first() {
        Some(first) if !first.ok => ExitCode::from(crate::cli::EXIT_CONFIG),
        _ if checks.iter().all(|c| c.ok) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
