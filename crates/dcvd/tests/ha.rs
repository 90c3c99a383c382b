//! High availability: several `dcvd run` processes on one PostgreSQL database (a private cluster
//! the test starts), one CertCentral simulator process with DigiCert's rate windows, and BIND
//! with RFC 2136 updates. Each instance has its own directory, configuration file and log; they
//! share the store (`[store] url`), the API key and the zone.
//!
//! What is asserted comes from outside dcvd: the simulator's per-order call counts, 429s and token
//! counts, the zone's contents (a monitor transfers it every ~100 ms and flags a name holding two
//! values or a value published again after its removal), and each instance's log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use certcentral_sim::NewOrder;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use test_support::bind::{Bind, ZoneSpec};
use test_support::fleet::{Instance, ZoneMonitor};
use test_support::harness::{Harness, SimOpts, SimProc, dcv_records, rfc2136_provider};
use test_support::postgres::{PASSWORD, PgCluster};

const HARNESS: Harness = Harness::new(env!("CARGO_BIN_EXE_dcvd"));
const ZONE: &str = "ha.test";

/// `n` DV orders from `first_id`, one name each, exact scope (one owner name per order, so a
/// name holding two values means a token was used twice).
fn orders(first_id: u64, n: u64) -> (Vec<NewOrder>, String) {
    let mut fixtures = Vec::new();
    let mut toml = String::new();
    for i in 0..n {
        let id = first_id + i;
        let name = format!("o{i}.{ZONE}");
        fixtures.push(NewOrder::new(id, &[name.as_str()]));
        toml.push_str(&test_support::harness::order_toml(id, "dns-txt-token", &[name.as_str()]));
        toml.push_str("validation_scope = \"exact\"\n\n");
    }
    (fixtures, toml)
}

/// The shared set-up: PostgreSQL with one database, BIND, the simulator with DigiCert's default
/// windows, and the units' configuration.
struct World {
    pg: PgCluster,
    bind: Bind,
    sim: SimProc,
    body: String,
    ids: Vec<u64>,
}

fn world(db: &str, n: u64, lagging: bool) -> World {
    world_with_faults(db, n, lagging, Vec::new())
}

/// [`world`] with `--fault` settings for the simulator.
fn world_with_faults(db: &str, n: u64, lagging: bool, faults: Vec<String>) -> World {
    let pg = PgCluster::start_new();
    pg.create_database(db);
    let mut builder = Bind::builder().zone(ZoneSpec::new(ZONE));
    if lagging {
        builder = builder.with_lagging_secondary();
    }
    let bind = builder.start();
    let (fixtures, units) = orders(9000, n);
    let mut dns = vec![bind.primary_addr()];
    dns.extend(bind.secondary_addr());
    let sim = HARNESS.start_sim(SimOpts {
        dns,
        orders: fixtures,
        extra: vec!["--validation-scope".into(), "exact".into()],
        faults,
        ..SimOpts::default()
    });
    let body = format!("{}\n{units}", rfc2136_provider("bind", &bind, &[ZONE]));
    World { pg, bind, sim, body, ids: (9000..9000 + n).collect() }
}

impl World {
    fn instance(&self, name: &str, db: &str, lease_ttl: &str) -> Instance {
        let instance = Instance::new(&HARNESS, &self.sim, name, &self.pg, db, lease_ttl);
        instance.write_config(self.bind.port(), &self.body);
        instance
    }

    async fn valid_count(&self) -> usize {
        let mut valid = 0;
        for id in &self.ids {
            if self.sim.order(*id).await.dcv_status == "valid" {
                valid += 1;
            }
        }
        valid
    }

    /// Waits until every order is valid at the simulator and no record is left in the zone.
    async fn wait_all_done(&self, limit: Duration, instances: &[&Instance]) {
        let started = Instant::now();
        loop {
            let valid = self.valid_count().await;
            let left = dcv_records(self.bind.primary_addr(), ZONE, &[]).len();
            if valid == self.ids.len() && left == 0 {
                return;
            }
            if started.elapsed() > limit {
                let logs: String = instances.iter().map(|i| format!("--- {}\n{}\n", i.name, i.log_tail(60))).collect();
                panic!(
                    "after {limit:?}: {valid} of {} orders valid, {left} records left; logs:\n{logs}",
                    self.ids.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every order cost exactly its two calls (random value, check), in all instances together.
    async fn assert_two_calls_per_order(&self) {
        let stats = self.sim.stats().await;
        let mut wrong = Vec::new();
        for id in &self.ids {
            let calls: u64 = stats.order_calls.get(id).map(|m| m.values().sum()).unwrap_or(0);
            if calls != 2 {
                wrong.push(format!("order {id}: {calls} calls {:?}", stats.order_calls.get(id)));
            }
        }
        assert!(wrong.is_empty(), "orders with other than 2 CertCentral calls:\n{}", wrong.join("\n"));
        assert_eq!(stats.too_many_requests(), 0, "429s from the simulator");
        assert_eq!(stats.premature_checks, 0, "premature checks");
    }
}

/// Lines of `log` that say a unit changed state.
fn state_changes(log: &str) -> usize {
    log.lines().filter(|l| l.contains("state changed")).count()
}

/// Two instances on one database and one API key validate 200 orders: every order valid, exactly
/// two CertCentral calls each (so no unit was driven by both), no 429, no name holding two values,
/// no record left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_validate_200_orders_once_each() {
    let world = world("two_instances", 200, false);
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = ZoneMonitor::spawn(world.bind.primary_addr(), ZONE, stop.clone());
    let mut a = world.instance("a", "two_instances", "6s");
    let mut b = world.instance("b", "two_instances", "6s");
    a.start();
    b.start();
    world.wait_all_done(Duration::from_secs(240), &[&a, &b]).await;
    a.stop().await;
    b.stop().await;
    stop.store(true, Ordering::SeqCst);
    let monitor = monitor.join().expect("monitor");
    world.assert_two_calls_per_order().await;
    assert!(monitor.violations.is_empty(), "{:#?}", monitor.violations);
    assert!(monitor.seen.len() >= 150, "the monitor saw only {} records", monitor.seen.len());
    let (a_log, b_log) = (a.dcvd.log(), b.dcvd.log());
    println!("state changes: a {}, b {}", state_changes(&a_log), state_changes(&b_log));
    for (name, log) in [("a", &a_log), ("b", &b_log)] {
        assert!(log.contains(&format!("instance={name} ")), "{name}'s start-up line does not name its instance");
        assert!(!log.contains(PASSWORD), "{name} logged the database password");
    }
}

/// An instance stopped (SIGSTOP) past its lease loses its units to the other one; once woken
/// (SIGCONT) it performs no write and no external call for them: exactly two CertCentral calls per
/// order in all, no value published again after its removal, and the woken instance's log shows
/// no state change, publication or removal after it woke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_cannot_act_for_units_taken_over() {
    let world = world("paused", 20, true);
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = ZoneMonitor::spawn(world.bind.primary_addr(), ZONE, stop.clone());
    let mut a = world.instance("a", "paused", "3s");
    let mut b = world.instance("b", "paused", "3s");
    a.start();
    // a publishes; the lagging secondary keeps its units waiting for propagation
    test_support::harness::eventually(Duration::from_secs(60), "a publishes records", || async {
        dcv_records(world.bind.primary_addr(), ZONE, &[]).len() == 20
    })
    .await;
    a.signal("STOP");
    let paused_at = Instant::now();
    b.start();
    // b takes over once a's leases expired, the secondary catches up, b validates and cleans up
    let started = Instant::now();
    loop {
        world.bind.refresh_secondary(ZONE);
        if world.valid_count().await == 20 && dcv_records(world.bind.primary_addr(), ZONE, &[]).is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "b did not finish; b's log:\n{}", b.log_tail(80));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(paused_at.elapsed() > Duration::from_secs(3), "b finished before a's lease could expire");
    a.dcvd.append_log("--- SIGCONT\n");
    a.signal("CONT");
    // a wakes, finds its leases lapsed and lost; give it time to do anything it would do
    tokio::time::sleep(Duration::from_secs(8)).await;
    a.stop().await;
    b.stop().await;
    stop.store(true, Ordering::SeqCst);
    let monitor = monitor.join().expect("monitor");
    world.assert_two_calls_per_order().await;
    assert!(monitor.violations.is_empty(), "{:#?}", monitor.violations);
    let a_log = a.dcvd.log();
    let after_wake = a_log.split("--- SIGCONT\n").nth(1).expect("marker");
    for forbidden in ["state changed", "record published", "record removed"] {
        assert!(!after_wake.contains(forbidden), "a acted after it woke ({forbidden}):\n{after_wake}");
    }
    assert!(
        after_wake.contains("another instance holds the unit now"),
        "a did not notice it lost its units:\n{after_wake}"
    );
}

/// kill -9 of one of two instances at random moments, 30 times (seeded; rerun one with
/// `DCVD_HA_SEED=N`), while 60 orders validate: every order valid, no token fetched twice (the
/// orders' random values never replaced), no 429, no record left, no name with two values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_instance_loses_nothing() {
    const KILLS: usize = 30;
    let seed: u64 = std::env::var("DCVD_HA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("ha kill suite seed: {seed} (rerun with DCVD_HA_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let world = world("kills", 60, true);
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = ZoneMonitor::spawn(world.bind.primary_addr(), ZONE, stop.clone());
    let mut instances = [world.instance("a", "kills", "3s"), world.instance("b", "kills", "3s")];
    for i in &mut instances {
        i.start();
    }
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..=1500))).await;
        if rng.random_range(0..3) == 0 {
            world.bind.refresh_secondary(ZONE);
        }
        let victim = &mut instances[rng.random_range(0..2)];
        victim.dcvd.append_log(&format!("--- kill -9 #{k}\n"));
        victim.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..=500))).await;
        victim.start();
    }
    let started = Instant::now();
    loop {
        world.bind.refresh_secondary(ZONE);
        if world.valid_count().await == world.ids.len() && dcv_records(world.bind.primary_addr(), ZONE, &[]).is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "seed {seed}: not finished; logs:\n--- a\n{}\n--- b\n{}",
            instances[0].log_tail(60),
            instances[1].log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    for i in &mut instances {
        i.stop().await;
    }
    stop.store(true, Ordering::SeqCst);
    let monitor = monitor.join().expect("monitor");
    // A kill between a call and its commit repeats that call (as after any crash), so calls are
    // not counted here; a token fetched twice would replace the order's random value.
    let stats = world.sim.stats().await;
    assert_eq!(stats.tokens_issued, 0, "seed {seed}: a random value was replaced");
    assert_eq!(stats.too_many_requests(), 0, "seed {seed}: 429s");
    assert_eq!(stats.premature_checks, 0, "seed {seed}: premature checks");
    assert!(monitor.violations.is_empty(), "seed {seed}: {:#?}", monitor.violations);
}

/// PostgreSQL stopped for 30 s while two instances work: each logs exactly one ERROR about the
/// store and fails `/healthz`, then both resume once it is back and every order validates. A
/// SIGHUP during the outage is postponed (no second ERROR) and runs once the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_instances_pause_while_postgres_is_down_and_resume() {
    let world = world("outage", 30, true);
    let mut a = world.instance("a", "outage", "6s");
    let mut b = world.instance("b", "outage", "6s");
    a.start();
    b.start();
    test_support::harness::eventually(Duration::from_secs(60), "records published", || async {
        !dcv_records(world.bind.primary_addr(), ZONE, &[]).is_empty()
    })
    .await;
    for i in [&a, &b] {
        i.dcvd.append_log("--- postgres stopped\n");
    }
    world.pg.stop();
    tokio::time::sleep(Duration::from_secs(15)).await;
    for i in [&a, &b] {
        assert_eq!(i.healthz().await, Some(503), "{}'s /healthz while the store is down", i.name);
    }
    // An operator reloads meanwhile: the reload waits for the store instead of failing.
    a.signal("HUP");
    tokio::time::sleep(Duration::from_secs(15)).await;
    world.pg.start();
    for i in [&a, &b] {
        i.dcvd.append_log("--- postgres started\n");
    }
    let started = Instant::now();
    loop {
        world.bind.refresh_secondary(ZONE);
        if world.valid_count().await == world.ids.len() && dcv_records(world.bind.primary_addr(), ZONE, &[]).is_empty()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not finished after the outage; logs:\n--- a\n{}\n--- b\n{}",
            a.log_tail(60),
            b.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    for i in [&a, &b] {
        assert_eq!(i.healthz().await, Some(200), "{}'s /healthz after the outage", i.name);
    }
    a.stop().await;
    b.stop().await;
    world.assert_two_calls_per_order().await;
    for i in [&a, &b] {
        let log = i.dcvd.log();
        let outage = log.split("--- postgres stopped\n").nth(1).expect("marker");
        let outage = outage.split("--- postgres started\n").next().expect("marker");
        let errors: Vec<&str> = outage.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert_eq!(errors.len(), 1, "{}: one ERROR for the outage, got:\n{}", i.name, errors.join("\n"));
        assert!(errors[0].contains("state store"), "{}: {}", i.name, errors[0]);
    }
    let log = a.dcvd.log();
    let (outage, after) = log.split_once("--- postgres started\n").expect("marker");
    assert!(outage.contains("reload postponed"), "a's log during the outage:\n{}", a.log_tail(40));
    assert!(
        after.lines().any(|l| l.contains("configuration reloaded") && l.contains("sighup")),
        "the postponed reload did not run after the outage:\n{after}"
    );
}

/// DigiCert answers the random-value requests 3 s late, and PostgreSQL stops while they are on
/// their way: the answers arrive when the store cannot record them. The instance keeps them and
/// records them once the store is back, and neither instance asks again (each order still costs
/// exactly two calls). Every lease expired during the outage, yet the standby instance leaves the
/// holder's units to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_that_arrive_during_an_outage_are_recorded_afterwards_not_fetched_again() {
    let faults = ["latency=1", "latency_max_ms=3000", "latency_min_ms=3000"];
    let faults = faults.iter().map(|f| format!("dcv_random_value.{f}")).collect();
    let world = world_with_faults("inflight", 10, false, faults);
    let mut a = world.instance("a", "inflight", "6s");
    let mut b = world.instance("b", "inflight", "6s");
    a.start();
    b.start();
    test_support::harness::eventually(Duration::from_secs(60), "random-value requests sent", || async {
        world.sim.stats().await.calls.get("dcv_random_value").copied().unwrap_or(0) == world.ids.len() as u64
    })
    .await;
    world.pg.stop();
    // Past the answers (3 s) and past every lease (6 s) on the database's clock.
    tokio::time::sleep(Duration::from_secs(12)).await;
    world.pg.start();
    world.wait_all_done(Duration::from_secs(120), &[&a, &b]).await;
    a.stop().await;
    b.stop().await;
    world.assert_two_calls_per_order().await;
    // The holder renewed before the other took anything over: a unit changes hands only when its
    // holder is gone, not because the store was.
    for i in [&a, &b] {
        let log = i.dcvd.log();
        let moved: Vec<&str> = log.lines().filter(|l| l.contains("another instance holds the unit")).collect();
        assert!(moved.is_empty(), "{}: units changed hands after the outage:\n{}", i.name, moved.join("\n"));
    }
}
