//! The state machine driven in-process (engine + store + memory provider) against the simulator:
//! check backoff, token expiry with both policies, DigiCert's terminal order statuses, and units
//! that leave the configuration. Durations are short real ones: the simulator, the name servers
//! and the store are real, so tokio's paused clock cannot drive them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use certcentral_sim::{FaultConfig, FaultRule, NewOrder, Sim, SimConfig};
use dcvd::config::Config;
use dcvd::engine::{self, Control, Mode, NoObserver, Summary};
use dcvd::metrics::Metrics;
use dcvd::store::{Store, UnitState};
use test_support::harness::{Harness, LocalSim, eventually_sync};
use tokio::sync::mpsc;

/// The binaries under test.
const HARNESS: Harness = Harness::new(env!("CARGO_BIN_EXE_dcvd"));

fn parse(_h: &LocalSim, text: &str) -> Config {
    Config::from_toml_named(text, Path::new("engine-test.toml")).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

fn order(id: u64, domains: &str) -> String {
    format!("\n[[order]]\nid = {id}\nmethod = \"dns-txt-token\"\ndomains = [{domains}]\n")
}

/// Runs the engine in a task; returns the control sender, the store and the join handle.
fn start(
    config: Config,
    mode: Mode,
) -> (mpsc::Sender<Control>, Arc<Store>, tokio::task::JoinHandle<anyhow::Result<Summary>>) {
    let store = Arc::new(Store::open(&config.daemon.state_dir).expect("store"));
    let (tx, rx) = mpsc::channel(4);
    let s = store.clone();
    let handle = tokio::spawn(async move {
        engine::run(config, s, Arc::new(Metrics::new()), mode, rx, Arc::new(NoObserver), std::future::pending()).await
    });
    (tx, store, handle)
}

async fn finish(handle: tokio::task::JoinHandle<anyhow::Result<Summary>>) -> Summary {
    tokio::time::timeout(Duration::from_secs(60), handle).await.expect("engine finished in time").unwrap().unwrap()
}

/// The unit's state; `Pending` until the engine has synced the configuration into the store.
/// Adds orders 1 to `count` to the simulator, each for one name under `zone` (`oN.zone`), and
/// returns their configuration.
fn orders_under(h: &LocalSim, count: u64, zone: &str) -> String {
    let mut orders = String::new();
    for id in 1..=count {
        let name = format!("o{id}.{zone}");
        h.sim().add_order(NewOrder::new(id, &[name.as_str()]));
        orders.push_str(&order(id, &format!("\"{name}\"")));
    }
    orders
}

fn state(store: &Store, id: u64) -> UnitState {
    store.units().unwrap().into_iter().find(|u| u.unit.id == id).map_or(UnitState::Pending, |u| u.state)
}

fn endpoint_calls(sim: &Sim, id: u64, endpoint: &str) -> u64 {
    sim.stats().order_calls.get(&id).and_then(|m| m.get(endpoint)).copied().unwrap_or(0)
}

/// "Not found yet" answers are retried with a doubling interval: the gaps between DigiCert
/// checks never shrink below the schedule (lower bounds only: sleeps never end early).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_backoff_doubles() {
    // The simulator looks at a name server of the zone that never gets the record.
    let empty = dns_provider::memory::serve(
        dns_provider::memory::MemoryStore::default(),
        dns_provider::memory::ServerConfig::new(vec!["backoff.test".into()], vec!["127.0.0.1:0".parse().unwrap()]),
    )
    .await
    .unwrap();
    let h = HARNESS.start_local(Some(empty.addrs().to_vec())).await;
    h.sim().add_order(NewOrder::new(11, &["a.backoff.test"]));
    let text =
        h.config(h.dns_port, &format!("{}{}", mem(&h, "b1", &["backoff.test"]), order(11, "\"a.backoff.test\"")));
    let text = text
        .replace("min_interval = \"200ms\"", "min_interval = \"300ms\"")
        .replace("max_interval = \"2s\"", "max_interval = \"1200ms\"");
    let (tx, store, handle) = start(parse(&h, &text), Mode::Daemon);
    eventually_sync(Duration::from_secs(30), "six checks", || endpoint_calls(h.sim(), 11, "check_dcv") >= 6).await;
    tx.send(Control::Stop).await.unwrap();
    finish(handle).await;
    let checks: Vec<i64> = h.sim().stats().checks.iter().filter(|c| c.id == 11).map(|c| c.unix_ms).collect();
    let gaps: Vec<i64> = checks.windows(2).map(|w| w[1] - w[0]).collect();
    // attempt n waits min*2^(n-1) capped at max, minus at most 10% jitter
    let expected = [300.0, 600.0, 1200.0, 1200.0, 1200.0];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(*gap as f64 >= want * 0.88, "gaps {gaps:?} below schedule {expected:?}");
    }
    assert_eq!(state(&store, 11), UnitState::Checking);
    let row = store.unit(engine::unit_id(dcvd::config::UnitKey::Order(11))).unwrap().unwrap();
    assert!(row.last_error.as_deref().unwrap_or("").contains("invalid_dns_txt"), "{row:?}");
}

/// Units waiting for their next check cost a timer entry, not a task: with 40 orders whose
/// records DigiCert never sees and a long check interval, no unit runs and all 40 wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_units_hold_a_timer_not_a_task() {
    let empty = dns_provider::memory::serve(
        dns_provider::memory::MemoryStore::default(),
        dns_provider::memory::ServerConfig::new(vec!["park.test".into()], vec!["127.0.0.1:0".parse().unwrap()]),
    )
    .await
    .unwrap();
    let h = HARNESS.start_local(Some(empty.addrs().to_vec())).await;
    let orders = orders_under(&h, 40, "park.test");
    let text = h.config(h.dns_port, &format!("{}{orders}", mem(&h, "p1", &["park.test"])));
    let text = text
        .replace("min_interval = \"200ms\"", "min_interval = \"60s\"")
        .replace("max_interval = \"2s\"", "max_interval = \"120s\"");
    let config = parse(&h, &text);
    let store = Arc::new(Store::open(&config.daemon.state_dir).expect("store"));
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(4);
    let (s, m) = (store.clone(), metrics.clone());
    let handle = tokio::spawn(async move {
        engine::run(config, s, m, Mode::Daemon, rx, Arc::new(NoObserver), std::future::pending()).await
    });
    let gauge = |place: &str| -> i64 {
        let text = metrics.encode();
        let prefix = format!("dcvd_scheduler_units{{place=\"{place}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(-1, |v| v.trim().parse().unwrap())
    };
    eventually_sync(Duration::from_secs(30), "every unit checked once", || {
        (1..=40).all(|id| endpoint_calls(h.sim(), id, "check_dcv") >= 1)
    })
    .await;
    eventually_sync(Duration::from_secs(10), "all 40 waiting, none running", || {
        gauge("waiting") == 40 && gauge("running") == 0
    })
    .await;
    assert!((1..=40).all(|id| state(&store, id) == UnitState::Checking));
    tx.send(Control::Stop).await.unwrap();
    finish(handle).await;
}

/// A unit that has its token publishes at once, although many token requests wait for
/// DigiCert's rate limit and `max_concurrent` is small: with 2 tokens a second for 30 orders, the
/// first order is valid while most tokens are still to come (a token request waiting for the
/// limiter holds no slot that publishing needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_with_a_token_publish_while_token_requests_wait_for_the_rate_limit() {
    let h = HARNESS.start_local(None).await;
    let orders = orders_under(&h, 30, "slots.test");
    let text = h.config(h.dns_port, &format!("{}{orders}", mem(&h, "s1", &["slots.test"])));
    let text = text
        .replace("[certcentral]\n", "[certcentral]\nrate_limits = [{ requests = 2, per = \"1s\" }]\n")
        .replace("[daemon]\n", "[daemon]\nmax_concurrent = 2\n");
    let (tx, store, handle) = start(parse(&h, &text), Mode::Daemon);
    let tokens = || (1..=30).map(|id| endpoint_calls(h.sim(), id, "dcv_random_value")).sum::<u64>();
    let first_valid = |id| matches!(state(&store, id), UnitState::Valid | UnitState::CleanedUp);
    eventually_sync(Duration::from_secs(30), "a first order valid", || (1..=30).any(first_valid)).await;
    let fetched = tokens();
    assert!(fetched <= 15, "the first order became valid only after {fetched} of 30 token requests");
    tx.send(Control::Stop).await.unwrap();
    finish(handle).await;
}

fn mem(h: &LocalSim, name: &str, zones: &[&str]) -> String {
    h.memory_provider(zones, 0).replace("[providers.mem]", &format!("[providers.{name}]"))
}

/// A token that expires while DigiCert cannot check (503s) is renewed: records replaced, a new
/// value fetched, and the order ends valid with the second value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_renews_then_validates() {
    let h = HARNESS.start_local(None).await;
    let text = h.config(h.dns_port, &format!("{}{}", mem(&h, "r1", &["renew.test"]), order(21, "\"renew.test\"")));
    // The simulator's random values live 2 s here.
    let sim2 = restart_sim_with_validity(&h, Duration::from_secs(2)).await;
    sim2.sim().add_order(NewOrder::new(21, &["renew.test"]));
    sim2.sim().set_faults(broken_checks());
    let text = text.replace(&h.sim.base_url, &sim2.base_url);
    let (_tx, store, handle) = start(parse(&h, &text), Mode::Once);
    eventually_sync(Duration::from_secs(30), "a second random value", || {
        endpoint_calls(sim2.sim(), 21, "dcv_random_value") >= 2
    })
    .await;
    sim2.sim().set_faults(FaultConfig::default());
    let summary = finish(handle).await;
    assert!(summary.all_valid(), "{:?}", summary.units);
    let row = &summary.units[0];
    assert!(row.renewals >= 1, "{row:?}");
    assert_eq!(sim2.sim().order(21).unwrap().dcv_status, "valid");
    assert_eq!(state(&store, 21), UnitState::CleanedUp);
    let (mem_store, _) = dcvd::providers::memory_store("r1").unwrap();
    assert!(mem_store.snapshot().is_empty(), "records left: {:?}", mem_store.snapshot());
}

/// With `on_expiry = "fail"` an expired token ends the unit `expired`, records removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_fails_with_fail_policy() {
    let h = HARNESS.start_local(None).await;
    let sim2 = restart_sim_with_validity(&h, Duration::from_secs(2)).await;
    sim2.sim().add_order(NewOrder::new(31, &["expire.test"]));
    sim2.sim().set_faults(broken_checks());
    let text = h
        .config(h.dns_port, &format!("{}{}", mem(&h, "e1", &["expire.test"]), order(31, "\"expire.test\"")))
        .replace(&h.sim.base_url, &sim2.base_url)
        .replace("log_format = \"text\"", "log_format = \"text\"\non_expiry = \"fail\"");
    let (_tx, store, handle) = start(parse(&h, &text), Mode::Once);
    let summary = finish(handle).await;
    assert!(!summary.all_valid());
    assert_eq!(state(&store, 31), UnitState::Expired);
    assert!(summary.units[0].last_error.as_deref().unwrap_or("").contains("expired"), "{:?}", summary.units[0]);
    assert_eq!(endpoint_calls(sim2.sim(), 31, "dcv_random_value"), 1, "no renewal under the fail policy");
    let (mem_store, _) = dcvd::providers::memory_store("e1").unwrap();
    assert!(mem_store.snapshot().is_empty());
}

/// DigiCert's terminal statuses: an issued order needs nothing, a canceled one fails; neither
/// gets a token or a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_order_statuses_are_honoured() {
    let h = HARNESS.start_local(None).await;
    let mut issued = NewOrder::new(41, &["issued.test"]);
    issued.status = Some("issued".into());
    let mut canceled = NewOrder::new(42, &["canceled.test"]);
    canceled.status = Some("canceled".into());
    h.sim().add_order(issued);
    h.sim().add_order(canceled);
    let units = "\n[[order]]\nid = 41\nmethod = \"dns-txt-token\"\n\n[[order]]\nid = 42\nmethod = \"dns-txt-token\"\n";
    let text = h.config(h.dns_port, &format!("{}{}", mem(&h, "t1", &["issued.test", "canceled.test"]), units));
    let (_tx, store, handle) = start(parse(&h, &text), Mode::Once);
    finish(handle).await;
    assert_eq!(state(&store, 41), UnitState::CleanedUp);
    assert_eq!(state(&store, 42), UnitState::Failed);
    for id in [41, 42] {
        assert_eq!(endpoint_calls(h.sim(), id, "dcv_random_value"), 0, "order {id} must not get a token");
    }
    let row = store.unit(engine::unit_id(dcvd::config::UnitKey::Order(42))).unwrap().unwrap();
    assert!(row.last_error.as_deref().unwrap_or("").contains("canceled"), "{row:?}");
}

/// A unit removed from the configuration (reload) has its records removed and ends `removed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_removed_from_config_is_cleaned_up() {
    let h = HARNESS.start_local(None).await;
    h.sim().add_order(NewOrder::new(51, &["gone.test"]));
    // The second name server lags an hour: the unit waits in `published`.
    let provider = h.memory_provider(&["gone.test"], 3_600_000).replace("[providers.mem]", "[providers.g1]");
    let with = h.config(h.dns_port, &format!("{provider}{}", order(51, "\"gone.test\"")));
    let without = h.config(h.dns_port, &provider);
    let (tx, store, handle) = start(parse(&h, &with), Mode::Daemon);
    eventually_sync(Duration::from_secs(20), "published", || state(&store, 51) == UnitState::Published).await;
    let (mem_store, _) = dcvd::providers::memory_store("g1").unwrap();
    assert_eq!(mem_store.snapshot().len(), 1);
    tx.send(Control::Reload { config: Box::new(parse(&h, &without)), retry_failed: true }).await.unwrap();
    eventually_sync(Duration::from_secs(20), "removed", || state(&store, 51) == UnitState::Removed).await;
    assert!(mem_store.snapshot().is_empty(), "records left: {:?}", mem_store.snapshot());
    assert_eq!(endpoint_calls(h.sim(), 51, "check_dcv"), 0, "never checked before propagation");
    tx.send(Control::Stop).await.unwrap();
    finish(handle).await;
}

fn broken_checks() -> FaultConfig {
    let mut faults = FaultConfig::default();
    faults.endpoints.insert("check_dcv".into(), FaultRule { error_503: 1.0, ..FaultRule::default() });
    faults
}

async fn restart_sim_with_validity(h: &LocalSim, validity: Duration) -> certcentral_sim::RunningSim {
    let cfg = h.sim().config().clone();
    Sim::new(SimConfig { token_validity: validity, ..cfg }).spawn("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// A reload keeps the one CertCentral rate limiter, query cap, permits and unchanged providers
/// of the process (running tasks and new ones share them); a changed section gets new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_shared_limits() {
    let h = HARNESS.start_local(None).await;
    let text = h.config(h.dns_port, &mem(&h, "k1", &["keep.test"]));
    let config = Arc::new(parse(&h, &text));
    let store = Arc::new(Store::open(&config.daemon.state_dir).unwrap());
    let store = dcvd::store::StoreThread::start(store).unwrap();
    let env = engine::Env::build(config, store, Arc::new(Metrics::new())).await.unwrap();
    let same = env.rebuild(Arc::new(parse(&h, &text))).await.unwrap();
    assert!(std::ptr::eq(env.client.rate_limiter(), same.client.rate_limiter()), "the limiter must survive a reload");
    assert!(Arc::ptr_eq(&env.permits, &same.permits));
    assert!(Arc::ptr_eq(env.router.provider("k1").unwrap(), same.router.provider("k1").unwrap()));
    let changed = text
        .replace("timeout = \"120s\"", "timeout = \"121s\"")
        .replace("[certcentral]", "[certcentral]\ntimeout = \"9s\"");
    let other = env.rebuild(Arc::new(parse(&h, &changed))).await.unwrap();
    assert!(
        !std::ptr::eq(env.client.rate_limiter(), other.client.rate_limiter()),
        "a changed [certcentral] gets a new client"
    );
}
