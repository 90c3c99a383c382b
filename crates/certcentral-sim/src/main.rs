//! `certcentral-sim`: serve the CertCentral simulator over HTTP (a test double; it never talks to
//! the real DigiCert).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use certcentral_sim::{FaultConfig, Fixtures, Sim, SimConfig, parse_rate_limit};
use clap::Parser;
use std::io::Write;

const AFTER_HELP: &str = "\
OUTPUT
  The FIRST line on stdout is exactly
    listening on http://ADDR/services/v2
  (ADDR = the bound ip:port); everything after the last space is the CertCentral base URL. Logs go
  to stderr (filter with RUST_LOG, default info).

API (base URL http://ADDR/services/v2, header X-DC-DEVKEY required)
  PUT  /order/certificate/{id}/dcv-random-value   PUT /order/certificate/{id}/check-dcv
  GET  /order/certificate/{id}                    GET /order/certificate/{id}/validation
  PUT  /order/certificate/{id}/dcv-method         POST /domain/{id}/validation
  POST /domain/{id}/dcv/token                     PUT /domain/{id}/dcv/validate-token
  GET  /domain/{id}?include_dcv=true&include_validation=true
  GET  /order/certificate?filters[status]=pending&filters[product_name_id]=..&filters[container_id]=..
       &offset=N&limit=N   (List orders; the \"orders\" key is left out when nothing matches)
  GET  /domain?filters[status]=active|inactive&filters[container_id]=..&include_dcv_expiration_time=true
       &offset=N&limit=N   (List domains; \"validations\" lists active ones only and is left out
                            when none; \"dcv_expiration\" only once DCV completed)

GUESSES (DigiCert's docs are silent; the simulator picks)
  GUESS: limit > 1000 answers 400 invalid_param; no limit or limit=0 means 1000 (documented for
         List domains; List orders' maximum was not found).
  GUESS: a bad offset/limit/filter value answers 400 invalid_param; a filter the simulator does
         not implement answers 400 unsupported_filter (DigiCert has more filters).
  GUESS: filters[container_id] on List domains; lists sorted by id ascending.
  GUESS: without include_dcv_expiration_time, dcv_expiration dates are Mountain Time at a fixed
         UTC-7 (no daylight saving).
  GUESS: a validation past its validated_until shows status \"expired\" in Domain info.
  GUESS: changing the DCV method of a non-pending order answers 400 invalid_order_status.
  GUESS: submitting a domain again (with a DCV method) opens a new DCV cycle: the next
         validate-token looks at DNS again.
  GUESS: product.type is dv_ssl_certificate when the product id contains \"dv\", else
         ssl_certificate.
  GUESS: how DigiCert treats the PSL's private section is not documented; ignored here.
  GUESS: Order validation status answers dns_name_validations[].status \"valid\" for a validated
         name and \"pending\" before (DigiCert's example shows \"approved\"; dcvd's discovery
         takes either as done).

ADMIN (http://ADDR/_sim, no key)
  POST /_sim/orders   (NewOrder or array: {id, dns_names, dcv_method?, status?, common_name?,
                       certificate_id?, dcv_random_value?, validation_scope?,
                       product_name_id?, container_id?})
  POST /_sim/domains  (NewDomain or array: {id, name, dcv_method?, validations?, token?, status?,
                       validated_until? {\"ov\": TIMESTAMP}, is_active?, container_id?})
  PATCH /_sim/orders/{id}   {status?, product_name_id?, container_id?, dcv_method?}
                            e.g. {\"status\": \"issued\"}; statuses: pending, issued, rejected,
                            revoked, waiting_pickup, reissue_pending, canceled, needs_approval, expired
  PATCH /_sim/domains/{id}  {is_active?, container_id?, validations? {\"ov\": TIMESTAMP|null},
                            dcv_expiration? {\"ev\": TIMESTAMP}}
  POST /_sim/bulk     {\"orders\": 10000, \"pending\": 500, \"domains\": 5000, zones?, first_order_id?,
                       first_domain_id?}: a synthetic account (pending orders spread evenly, OV
                       domains validated until 1..397 days ahead)
  GET  /_sim/orders/{id}   GET /_sim/domains/{id}   GET /_sim/stats   POST /_sim/reset
  POST /_sim/clock/advance {\"seconds\": N}          GET|PUT /_sim/faults (FaultConfig JSON)
  GET|PUT /_sim/account {\"validation_scope\": \"base\"|\"exact\"}

DCV CHECKS
  TXT at _dnsauth.<name> then <name> (a record that contains the value counts); CNAME
  _dnsauth.<name> -> <value>.dcv.digicert.com, or <value>.<name> -> dcv.digicert.com; \"*.\" is
  stripped. <name> follows the domain validation scope (--validation-scope, PUT /_sim/account, or
  an order's own validation_scope): base = the registrable domain by the Public Suffix List's
  ICANN section (CertCentral's default), exact = the name itself; OV/EV domains are always
  validated as named. The PSL's private section is ignored (see GUESSES). Each lookup asks ONE
  --dns server, round-robin. Negative answers are cached like a CA's resolver does
  (--negative-ttl, default the SOA's, capped by --negative-ttl-cap), so a check made too early
  keeps failing for that time. A
  DV order becomes \"issued\" once every name is valid (--keep-pending: stays \"pending\" with
  dcv_status valid). The clock (token expiry, negative cache, rate windows) is real time plus the
  offset of POST /_sim/clock/advance. A rate-limit breach answers 429 request_limit_exceeded
  without Retry-After.

FAULTS
  --fault [ENDPOINT.]FIELD=VALUE, FIELD one of error_500, error_503, html_502, drop, burst_429
  (probabilities 0..1, summing to at most 1), burst_len, latency (probability), latency_min_ms,
  latency_max_ms. An ENDPOINT rule starts as a copy of the global one and replaces it for that
  endpoint. Endpoints: dcv_random_value, check_dcv, order_info, order_validation,
  order_dcv_method, domain_submit_validation, domain_dcv_token, domain_validate_token,
  domain_info, list_orders, list_domains. A dropped connection is closed without any response.

ORDERS FILE
  TOML ([[order]] / [[domain]] tables) or JSON ({\"orders\": [...], \"domains\": [...]}) with the
  fields of POST /_sim/orders and /_sim/domains. They are restored by POST /_sim/reset.";

/// A CertCentral (DigiCert Services API v2) simulator that checks DCV records over real DNS.
#[derive(Debug, Parser)]
#[command(name = "certcentral-sim", version, after_help = AFTER_HELP)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on stdout's first line).
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,

    /// Name server (ip:port) the DCV checks query; repeatable. Each lookup asks one of them,
    /// round-robin. Without any, every DCV check fails.
    #[arg(long = "dns", value_name = "IP:PORT")]
    dns: Vec<SocketAddr>,

    /// Expected X-DC-DEVKEY.
    #[arg(long, env = "CERTCENTRAL_SIM_API_KEY", default_value = "sim-devkey", hide_env_values = true)]
    api_key: String,

    /// Lifetime of DV random values and OV/EV tokens.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
    token_validity: Duration,

    /// Fixed negative-cache TTL (default: from the SOA of each negative answer).
    #[arg(long, value_parser = humantime::parse_duration)]
    negative_ttl: Option<Duration>,

    /// Upper bound of the negative-cache TTL.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    negative_ttl_cap: Duration,

    /// Sliding rate-limit window REQUESTS/DURATION, repeatable; replaces the defaults
    /// (100/5s and 1000/5m).
    #[arg(long = "rate-limit", value_name = "N/DURATION", value_parser = parse_rate_limit)]
    rate_limits: Vec<(u32, Duration)>,

    /// Disable rate limiting.
    #[arg(long, conflicts_with = "rate_limits")]
    no_rate_limit: bool,

    /// Fault setting [ENDPOINT.]FIELD=VALUE, repeatable (see FAULTS below).
    #[arg(long = "fault", value_name = "[ENDPOINT.]FIELD=VALUE")]
    faults: Vec<String>,

    /// Fault configuration file (JSON or TOML FaultConfig: {global: {...}, endpoints: {...}});
    /// --fault settings apply on top.
    #[arg(long, value_name = "FILE")]
    faults_file: Option<PathBuf>,

    /// Seed of the random generator (faults, random values).
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Leave a DV order `pending` (dcv_status valid) instead of `issued` once its DCV is valid.
    #[arg(long)]
    keep_pending: bool,

    /// Timeout of one DNS query.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    dns_timeout: Duration,

    /// The account's domain validation scope: base (CertCentral's default) or exact.
    #[arg(long, default_value = "base", value_parser = parse_scope)]
    validation_scope: certcentral_sim::ValidationScope,

    /// Orders and domains to load at start (TOML or JSON, see ORDERS FILE below).
    #[arg(long, value_name = "FILE")]
    orders: Option<PathBuf>,
}

fn build(args: &Args) -> anyhow::Result<(SimConfig, Fixtures)> {
    let mut faults = match &args.faults_file {
        None => FaultConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the faults file {}", path.display()))?;
            let parsed = if text.trim_start().starts_with('{') {
                serde_json::from_str(&text).map_err(|e| e.to_string())
            } else {
                toml::from_str(&text).map_err(|e| e.to_string())
            };
            parsed.map_err(|e| anyhow::anyhow!("faults file {}: {e}", path.display()))?
        }
    };
    for spec in &args.faults {
        faults.apply_setting(spec).map_err(anyhow::Error::msg)?;
    }
    faults.validate().map_err(|e| anyhow::anyhow!("invalid fault configuration: {e}"))?;
    let fixtures = match &args.orders {
        None => Fixtures::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the orders file {}", path.display()))?;
            Fixtures::parse(&text).map_err(|e| anyhow::anyhow!("orders file {}: {e}", path.display()))?
        }
    };
    if args.api_key.is_empty() {
        bail!("--api-key must not be empty");
    }
    let defaults = SimConfig::default();
    let rate_limits = if args.no_rate_limit {
        Vec::new()
    } else if args.rate_limits.is_empty() {
        defaults.rate_limits
    } else {
        args.rate_limits.clone()
    };
    let config = SimConfig {
        api_key: args.api_key.clone(),
        dns_servers: args.dns.clone(),
        token_validity: args.token_validity,
        negative_ttl: args.negative_ttl,
        negative_ttl_cap: args.negative_ttl_cap,
        rate_limits,
        faults,
        seed: args.seed,
        issue_on_valid: !args.keep_pending,
        dns_timeout: args.dns_timeout,
        validation_scope: args.validation_scope,
    };
    Ok((config, fixtures))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (config, fixtures) = build(&args)?;
    if config.dns_servers.is_empty() {
        tracing::warn!("no --dns servers: every dcv check will fail");
    }
    let sim = Sim::new(config);
    let (orders, domains) = (fixtures.orders.len(), fixtures.domains.len());
    sim.preload(fixtures);
    let running = sim.spawn(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    {
        // the first stdout line is the contract with tests and scripts: write and flush it now
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", running.base_url)?;
        stdout.flush()?;
    }
    tracing::info!(addr = %running.addr, orders, domains, "certcentral simulator ready");

    shutdown_signal().await;
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn parse_scope(s: &str) -> Result<certcentral_sim::ValidationScope, String> {
    match s {
        "base" => Ok(certcentral_sim::ValidationScope::Base),
        "exact" => Ok(certcentral_sim::ValidationScope::Exact),
        other => Err(format!("unknown validation scope {other:?}: expected base or exact")),
    }
}
