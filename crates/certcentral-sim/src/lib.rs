//! A faithful simulator of the DigiCert CertCentral Services API v2 endpoints that dcvd uses,
//! which really checks DNS. It exists for dcvd's tests, `dcvd demo` and the benchmarks.
//!
//! It is a test double: it must never talk to the real DigiCert, never issue anything real, and
//! never be exposed beyond loopback or a test network. The only network traffic it makes is DNS
//! queries to the name servers it is configured with.
//!
//! # What it simulates
//!
//! Mounted under `/services/v2` (so the base URL is `http://ADDR/services/v2`), every call needs
//! the `X-DC-DEVKEY` header ([`SimConfig::api_key`]; a missing header answers 401
//! `access_denied`, a wrong one 401 `unauthorized`). Errors use DigiCert's body
//! `{"errors":[{"code":..,"message":..}]}`; an unknown order or domain answers 404 `not_found`.
//!
//! | endpoint name | request |
//! |---|---|
//! | `dcv_random_value` | `PUT /order/certificate/{id}/dcv-random-value`: the existing value while valid, a new one once expired |
//! | `check_dcv` | `PUT /order/certificate/{id}/check-dcv`: DNS checks of every name; 200 `{order_status, certificate_id, dcv_status, dns_name_validations}` or 400 `invalid_dns_txt` / `invalid_dns_cname` / `invalid_dns_method` / `file_random_value_not_found` |
//! | `list_orders` | `GET /order/certificate?filters[status]=&filters[product_name_id]=&filters[container_id]=&offset=&limit=`: `{orders: [...], page{total, limit, offset}}`, the `orders` key left out when nothing matches; entries as Order info without `dcv_method` |
//! | `order_info` | `GET /order/certificate/{id}`: `{id, status, dcv_method, date_created, certificate{id, common_name, dns_names}, product{name_id, name, type}, product_name_id, container{id, name}}` |
//! | `order_validation` | `GET /order/certificate/{id}/validation`: `{order_id (string), order_status, order_dcv_method, order_name_scope (base_domain\|fqdn), dns_name_validations: [{dns_name, status, name_scope}]}` |
//! | `order_dcv_method` | `PUT /order/certificate/{id}/dcv-method` `{"dcv_method"}`: 204, or 400 `invalid_dcv_method`, or (not pending) 400 `invalid_order_status` |
//! | `list_domains` | `GET /domain?filters[status]=active\|inactive&filters[container_id]=&include_dcv_expiration_time=&offset=&limit=`: `{domains: [...], page}`; an entry has `id, is_active, name, dcv_method, container, base_domain`, `validations` (active ones only, key left out when none) and `dcv_expiration{ov, ev}` (only once DCV completed) |
//! | `domain_submit_validation` | `POST /domain/{id}/validation` `{validations, dcv_method?, email_array?}`: `{id, dcv_token}` or `{id, validation_emails}` |
//! | `domain_dcv_token` | `POST /domain/{id}/dcv/token`: a new token (the old one stops validating), or 400 `invalid_dcv_method` |
//! | `domain_validate_token` | `PUT /domain/{id}/dcv/validate-token`: `{token, status: "active"}` or 400 `invalid_dns_txt` / `" invalid_dns_cname"` (with DigiCert's leading space) / `invalid_dns_method` |
//! | `domain_info` | `GET /domain/{id}?include_dcv=true&include_validation=true`: `{id, name, status, is_active, dcv_method, container, dcv_token, dcv_expiration, validations[{type, status, dcv_status, validated_until}]}` |
//!
//! Lists are ordered by id; `limit` defaults to 1000 and may not exceed it; every list call
//! counts against the rate limit and in [`Stats::calls`] like any other call.
//!
//! Orders have a product (default [`DEFAULT_PRODUCT`]), a container (default
//! [`DEFAULT_CONTAINER`]) and a status from [`ORDER_STATUSES`]; only a check-dcv that completes
//! DCV moves one (`pending` -> `issued`), the admin API moves them anywhere. Domains have
//! validations per type (`ov`, `ev`) with a `validated_until` (pending: none; `expired` once
//! past), a `dcv_expiration` per type (set with the validation's date when DCV completes, 397
//! days ahead), a container and an `is_active` flag.
//!
//! # Guesses
//!
//! Where DigiCert's docs are silent the simulator picks a behaviour; each is marked GUESS here,
//! in the code and in the binary's `--help`:
//! - GUESS: `limit` above 1000 answers 400 `invalid_param`; `limit=0` or none means 1000 (List
//!   domains documents max and default 1000; List orders' maximum was not found).
//! - GUESS: a bad `offset`/`limit`/filter value answers 400 `invalid_param`; a filter the
//!   simulator does not implement answers 400 `unsupported_filter` (DigiCert has many more).
//! - GUESS: `filters[container_id]` on List domains (not on DigiCert's page; other clients send
//!   a container id).
//! - GUESS: lists are sorted by id ascending (DigiCert's default order is not documented).
//! - GUESS: without `include_dcv_expiration_time`, `dcv_expiration` dates are taken in Mountain
//!   Time at a fixed UTC-7 (daylight saving ignored).
//! - GUESS: a validation past its `validated_until` shows `status: "expired"` in Domain info.
//! - GUESS: changing the DCV method of an order that is not pending answers 400
//!   `invalid_order_status` (documented: pending orders only; the refusal's shape is not).
//! - GUESS: submitting a domain for validation with a DCV method again opens a new DCV cycle
//!   (the next validate-token looks at DNS again; active validations stay active until their
//!   dates).
//! - GUESS: `product.type` is `dv_ssl_certificate` when the product id contains `dv`, else
//!   `ssl_certificate`.
//! - GUESS: Order validation status gives `dns_name_validations[].status` `valid` once a name
//!   validated and `pending` before (DigiCert's example shows `approved`; dcvd's discovery takes
//!   either as done).
//!
//! DNS rules (DigiCert's): TXT at `_dnsauth.<name>` then `<name>`, a record that *contains* the
//! value counts; CNAME `_dnsauth.<name>` -> `<value>.dcv.digicert.com`, or the older
//! `<value>.<name>` -> `dcv.digicert.com`; `*.` is stripped. Which `<name>` a DV order's name is
//! validated at follows the domain validation scope (the order's own, else the account's): with
//! `base` (the default) its registrable domain by the Public Suffix List's ICANN section, with
//! `exact` the name itself. OV/EV domains are always validated at their own name. Each lookup asks ONE of the configured name
//! servers, round-robin, through hickory-resolver with its cache made irrelevant. A lookup that
//! finds nothing is remembered for a negative TTL ([`SimConfig::negative_ttl`], default the SOA's
//! `min(TTL, minimum)` of the negative answer, capped by [`SimConfig::negative_ttl_cap`]), so a
//! check made before every name server serves the record keeps failing for that time, as with a
//! real CA. Positive answers are not cached. A DV order becomes `issued` once every name is valid
//! ([`SimConfig::issue_on_valid`]; `false` leaves it `pending` with `dcv_status: valid`). Names
//! found valid stay valid; later checks only look up the pending ones.
//!
//! Rate limits are sliding windows over the accepted requests of the API key (default 100 per
//! 5 s and 1000 per 5 minutes, DigiCert's documented values): a breach answers 429
//! `request_limit_exceeded` with no `Retry-After`. Requests that get 401 do not count.
//!
//! Request pipeline: count the call -> check the key -> rate limit -> fault injection ->
//! handler. Faults ([`FaultConfig`], seeded by [`SimConfig::seed`]) happen before the handler,
//! so a faulted request changes no state: 500/503 with a JSON errors body, 502 with an HTML page,
//! added latency, 429 bursts, and dropped connections. A dropped connection is real only when
//! served by [`Sim::spawn`] (or the binary): the service returns an error to hyper, which closes
//! the connection without writing a response. Through [`Sim::router`] mounted elsewhere, a drop
//! degrades to a 503.
//!
//! # Clock
//!
//! The simulator's clock is real time plus an offset that `POST /_sim/clock/advance` (or
//! [`Sim::advance_clock`]) increases. Expiry of random values and tokens, the negative cache and
//! the rate-limit windows all follow it, so tests skip hours or a negative TTL without sleeping.
//!
//! # Admin API (`/_sim/`, no key)
//!
//! | request | effect |
//! |---|---|
//! | `POST /_sim/orders` | create DV orders: a [`NewOrder`] or an array of them; answers the [`OrderView`]s |
//! | `POST /_sim/domains` | create OV/EV domains: a [`NewDomain`] or an array |
//! | `GET /_sim/orders/{id}`, `GET /_sim/domains/{id}` | state, incl. the current random value / token and whether it is valid |
//! | `PATCH /_sim/orders/{id}` | an [`OrderPatch`]: `{"status": "issued"}`, product, container, method |
//! | `PATCH /_sim/domains/{id}` | a [`DomainPatch`]: `is_active`, container, `validations {"ov": timestamp\|null}`, `dcv_expiration` |
//! | `POST /_sim/bulk` | a [`SyntheticAccount`] (`{"orders": 10000, "pending": 500, "domains": 5000}`); answers the counts |
//! | `POST /_sim/clock/advance` `{"seconds": N}` | advance the clock; answers `{offset_seconds, now}` |
//! | `GET /_sim/stats` | [`Stats`]: calls per endpoint and per unit, 429s, premature checks, validations, faults, check events |
//! | `POST /_sim/reset` | back to the start state (preloaded fixtures, configured faults, zero offset, empty caches and stats) |
//! | `GET /_sim/faults`, `PUT /_sim/faults` | read / replace the [`FaultConfig`] |
//! | `GET /_sim/account`, `PUT /_sim/account` `{"validation_scope": "base"\|"exact"}` | the account's domain validation scope (default `base`, CertCentral's default) |
//!
//! # Modules
//!
//! - `config`: [`SimConfig`], [`FaultConfig`], option parsers.
//! - `state`: orders, domains, views, [`Stats`].
//! - `dns`: lookups, lookup rules, negative cache.
//! - `api`: the DigiCert endpoints and the request pipeline.
//! - `admin`: the `/_sim/` endpoints.
//! - `server`: the hyper accept loop behind [`Sim::spawn`].

mod admin;
mod api;
mod config;
mod dns;
mod server;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use config::{ENDPOINTS, FaultConfig, FaultRule, SimConfig, parse_rate_limit};
pub use server::RunningSim;
pub use state::{
    CheckEvent, CheckOutcome, DEFAULT_CONTAINER, DEFAULT_PRODUCT, DcvMethod, DomainPatch, DomainView, FaultStats,
    Fixtures, NameValidation, NewDomain, NewOrder, ORDER_STATUSES, OrderPatch, OrderView, Stats, SyntheticAccount,
    UnitKind,
};

pub use certcentral::ValidationScope;
use dns::DnsChecker;
use state::{Domain, Order};

/// The simulator. Cheap to clone: every clone shares one state.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    dns: DnsChecker,
    clock_offset_ms: AtomicU64,
    world: Mutex<World>,
}

struct World {
    orders: BTreeMap<u64, Order>,
    domains: BTreeMap<u64, Domain>,
    stats: Stats,
    rng: StdRng,
    faults: FaultConfig,
    accepted: VecDeque<Instant>,
    burst_remaining: u32,
    fixtures: Fixtures,
    /// The account's domain validation scope (`PUT /_sim/account`).
    validation_scope: ValidationScope,
}

impl Sim {
    /// A simulator with `config` and no orders or domains.
    pub fn new(config: SimConfig) -> Self {
        let dns = DnsChecker::new(&config);
        let world = World {
            orders: BTreeMap::new(),
            domains: BTreeMap::new(),
            stats: Stats::default(),
            rng: StdRng::seed_from_u64(config.seed),
            faults: config.faults.clone(),
            accepted: VecDeque::new(),
            burst_remaining: 0,
            fixtures: Fixtures::default(),
            validation_scope: config.validation_scope,
        };
        Self { inner: Arc::new(Inner { config, dns, clock_offset_ms: AtomicU64::new(0), world: Mutex::new(world) }) }
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The HTTP routes: the DigiCert API under `/services/v2` and the admin API under `/_sim`.
    pub fn router(&self) -> axum::Router {
        api::routes(self.clone()).merge(admin::routes(self.clone()))
    }

    /// Serves the simulator on `listen` (`127.0.0.1:0` picks a free port) until the returned
    /// handle is dropped or shut down.
    pub async fn spawn(self, listen: SocketAddr) -> std::io::Result<RunningSim> {
        server::spawn(self, listen).await
    }

    /// Adds (or replaces) a DV order.
    pub fn add_order(&self, order: NewOrder) {
        let now = self.now();
        let mut w = self.world();
        let random_value = order.dcv_random_value.clone().unwrap_or_else(|| random_token(&mut w.rng));
        let common_name = order.common_name.clone().or_else(|| order.dns_names.first().cloned()).unwrap_or_default();
        let o = Order {
            id: order.id,
            dns_names: order.dns_names,
            common_name,
            dcv_method: order.dcv_method,
            status: order.status.unwrap_or_else(|| "pending".to_string()),
            certificate_id: order.certificate_id.unwrap_or(order.id + 1_000_000),
            random_value,
            random_value_expires: now + self.validity(),
            validated: BTreeMap::new(),
            dcv_valid: false,
            validation_scope: order.validation_scope,
            product_name_id: order.product_name_id.unwrap_or_else(|| state::DEFAULT_PRODUCT.to_string()),
            container_id: order.container_id.unwrap_or(state::DEFAULT_CONTAINER),
            date_created: now,
        };
        w.orders.insert(o.id, o);
    }

    /// Adds (or replaces) an OV/EV domain.
    pub fn add_domain(&self, domain: NewDomain) {
        let now = self.now();
        let expires = now + self.validity();
        let mut w = self.world();
        let mut validations: BTreeMap<String, Option<DateTime<Utc>>> =
            domain.validations.into_iter().map(|v| (v.to_ascii_lowercase(), None)).collect();
        let mut dcv_expiration = BTreeMap::new();
        for (kind, until) in domain.validated_until {
            let kind = kind.to_ascii_lowercase();
            validations.insert(kind.clone(), Some(until));
            dcv_expiration.insert(kind, until);
        }
        let mut d = Domain {
            id: domain.id,
            name: domain.name,
            dcv_method: domain.dcv_method,
            status: domain.status.unwrap_or_else(|| "active".to_string()),
            token: domain.token.map(|t| (t, expires)),
            validations,
            validated_at: None,
            dcv_expiration,
            is_active: domain.is_active.unwrap_or(true),
            container_id: domain.container_id.unwrap_or(state::DEFAULT_CONTAINER),
            date_created: now,
        };
        d.refresh_dcv(now);
        w.domains.insert(d.id, d);
    }

    /// Adds the orders and domains of a [`SyntheticAccount`] (10,000 orders take well under a
    /// second). Not kept for [`Sim::reset`].
    pub fn add_synthetic(&self, account: &SyntheticAccount) -> (usize, usize) {
        let fixtures = Fixtures::synthetic(account, self.now());
        let counts = (fixtures.orders.len(), fixtures.domains.len());
        for o in fixtures.orders {
            self.add_order(o);
        }
        for d in fixtures.domains {
            self.add_domain(d);
        }
        counts
    }

    /// Changes an order at run time (status, product, container, method); `Err` names what is
    /// wrong (unknown order, unknown status).
    pub fn update_order(&self, id: u64, patch: OrderPatch) -> Result<OrderView, String> {
        if let Some(status) = &patch.status
            && !state::ORDER_STATUSES.contains(&status.as_str())
        {
            return Err(format!(
                "unknown order status {status:?}: expected one of {}",
                state::ORDER_STATUSES.join(", ")
            ));
        }
        {
            let mut w = self.world();
            let order = w.orders.get_mut(&id).ok_or_else(|| format!("no order with id {id}"))?;
            if let Some(status) = patch.status {
                tracing::info!(order_id = id, from = order.status, to = status, "order status changed (admin)");
                order.status = status;
            }
            if let Some(product) = patch.product_name_id {
                order.product_name_id = product;
            }
            if let Some(container) = patch.container_id {
                order.container_id = container;
            }
            if let Some(method) = patch.dcv_method {
                order.dcv_method = method;
            }
        }
        self.order(id).ok_or_else(|| format!("no order with id {id}"))
    }

    /// Changes a domain at run time (active flag, container, validation and DCV expiry dates).
    pub fn update_domain(&self, id: u64, patch: DomainPatch) -> Result<DomainView, String> {
        let now = self.now();
        {
            let mut w = self.world();
            let domain = w.domains.get_mut(&id).ok_or_else(|| format!("no domain with id {id}"))?;
            if let Some(active) = patch.is_active {
                domain.is_active = active;
            }
            if let Some(container) = patch.container_id {
                domain.container_id = container;
            }
            for (kind, until) in patch.validations {
                let kind = kind.to_ascii_lowercase();
                if let Some(until) = until {
                    domain.dcv_expiration.insert(kind.clone(), until);
                }
                domain.validations.insert(kind, until);
            }
            for (kind, until) in patch.dcv_expiration {
                domain.dcv_expiration.insert(kind.to_ascii_lowercase(), until);
            }
            domain.refresh_dcv(now);
        }
        self.domain(id).ok_or_else(|| format!("no domain with id {id}"))
    }

    /// Adds every order and domain of `fixtures` and keeps them as the start state that
    /// [`Sim::reset`] restores.
    pub fn preload(&self, fixtures: Fixtures) {
        for o in fixtures.orders.iter().cloned() {
            self.add_order(o);
        }
        for d in fixtures.domains.iter().cloned() {
            self.add_domain(d);
        }
        let mut w = self.world();
        w.fixtures.orders.extend(fixtures.orders);
        w.fixtures.domains.extend(fixtures.domains);
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        self.world().stats.clone()
    }

    /// Moves the simulator's clock forward.
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.inner.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// How far the clock has been advanced.
    pub fn clock_offset(&self) -> Duration {
        Duration::from_millis(self.inner.clock_offset_ms.load(Ordering::SeqCst))
    }

    /// The simulator's wall clock (real time plus the offset).
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.clock_offset()).unwrap_or_default()
    }

    /// Back to the start state: the preloaded fixtures only, the configured faults, a fresh
    /// seeded generator, zero clock offset, empty negative cache, rate windows and stats.
    pub fn reset(&self) {
        self.inner.clock_offset_ms.store(0, Ordering::SeqCst);
        self.inner.dns.clear_negative_cache();
        let fixtures = {
            let mut w = self.world();
            w.orders.clear();
            w.domains.clear();
            w.stats = Stats::default();
            w.rng = StdRng::seed_from_u64(self.inner.config.seed);
            w.faults = self.inner.config.faults.clone();
            w.accepted.clear();
            w.burst_remaining = 0;
            w.validation_scope = self.inner.config.validation_scope;
            std::mem::take(&mut w.fixtures)
        };
        self.preload(fixtures);
    }

    /// A DV order's state.
    pub fn order(&self, id: u64) -> Option<OrderView> {
        let now = self.now();
        self.world().orders.get(&id).map(|o| OrderView {
            id: o.id,
            dns_names: o.dns_names.clone(),
            dcv_method: o.dcv_method,
            status: o.status.clone(),
            dcv_status: if o.dcv_valid { "valid" } else { "pending" }.to_string(),
            certificate_id: o.certificate_id,
            dcv_random_value: o.random_value.clone(),
            expiration_date: o.random_value_expires,
            random_value_valid: o.random_value_expires > now,
            dns_name_validations: o.name_validations(),
            product_name_id: o.product_name_id.clone(),
            container_id: o.container_id,
        })
    }

    /// An OV/EV domain's state.
    pub fn domain(&self, id: u64) -> Option<DomainView> {
        let now = self.now();
        self.world().domains.get(&id).map(|d| DomainView {
            id: d.id,
            name: d.name.clone(),
            dcv_method: d.dcv_method,
            status: d.status.clone(),
            token: d.token.as_ref().map(|(t, _)| t.clone()),
            token_expiration_date: d.token.as_ref().map(|(_, e)| *e),
            token_valid: d.token.as_ref().is_some_and(|(_, e)| *e > now),
            dcv_valid: d.validated_at.is_some(),
            validations: d
                .validations
                .iter()
                .map(|(k, v)| (k.clone(), validation_status(*v, now).to_string()))
                .collect(),
            validated_until: d.validations.iter().filter_map(|(k, v)| v.map(|v| (k.clone(), v))).collect(),
            dcv_expiration: d.dcv_expiration.clone(),
            is_active: d.is_active,
            container_id: d.container_id,
        })
    }

    /// Replaces the fault configuration. Check it with [`FaultConfig::validate`] first (the
    /// admin API does): probabilities outside 0..=1 act as "never" or "always".
    pub fn set_faults(&self, faults: FaultConfig) {
        self.world().faults = faults;
    }

    /// Sets the account's domain validation scope (CertCentral: Settings > Preferences >
    /// Advanced Settings > DCV > Domain validation scope). Orders with their own scope keep it.
    pub fn set_validation_scope(&self, scope: ValidationScope) {
        self.world().validation_scope = scope;
    }

    /// The account's domain validation scope.
    pub fn validation_scope(&self) -> ValidationScope {
        self.world().validation_scope
    }

    /// The current fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.world().faults.clone()
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.inner.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mono_now(&self) -> Instant {
        Instant::now() + self.clock_offset()
    }

    fn validity(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.inner.config.token_validity).unwrap_or_else(|_| chrono::Duration::days(30))
    }
}

/// A validation's status at `now`: `pending` (never validated), `active`, or `expired` (GUESS:
/// DigiCert's word for a lapsed validation in Domain info is not documented).
fn validation_status(until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> &'static str {
    match until {
        None => "pending",
        Some(until) if until > now => "active",
        Some(_) => "expired",
    }
}

/// A 32-character lowercase alphanumeric value, like DigiCert's random values and tokens.
fn random_token(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..32).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// DigiCert's timestamp format: `2023-02-24T16:25:52+00:00`.
fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}
