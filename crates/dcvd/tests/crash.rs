//! Crash suite: `kill -9` of `dcvd run` at random moments (seeded; the seed is printed, rerun one
//! with `DCVD_CRASH_SEED=N`), at least 50 times, across 40 units (32 DV orders, 8 OV/EV domains)
//! published through RFC 2136 into BIND, whose secondary lags until the test releases it
//! periodically. New units join the configuration as the kills go on, so kills land in every
//! phase: start-up, token requests, publication, propagation waits, checks and cleanup.
//!
//! At the end a `dcvd once` finishes the work, then: every unit is valid at the simulator, no
//! record is left in BIND, `dcvd status --json` lists every unit as cleaned up (none lost), no
//! token was requested twice, no check was premature, and a monitor that transferred the zone
//! every ~100 ms during the whole run never saw a name hold two values nor a value come back
//! after it was removed (a value published twice).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use certcentral_sim::{NewDomain, NewOrder};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use test_support::bind::{Bind, ZoneSpec};
use test_support::fleet::ZoneMonitor;
use test_support::harness::{Harness, SimOpts, dcv_records, rfc2136_provider, states};

/// The binaries under test.
const HARNESS: Harness = Harness::new(env!("CARGO_BIN_EXE_dcvd"));

const ZONE: &str = "crash.test";
const KILLS: usize = 55;
const DV_ORDERS: u64 = 32;
const DOMAINS: u64 = 8;

#[derive(Clone)]
enum UnitSpec {
    Order { id: u64, names: Vec<String> },
    Domain { id: u64, name: String, submit: bool },
}

impl UnitSpec {
    fn toml(&self) -> String {
        match self {
            // Exact scope: one owner per order, so a name holding two values at once means a
            // token was fetched twice (under the base scope every order would share the zone's).
            Self::Order { id, names } => format!(
                "{}validation_scope = \"exact\"\n",
                test_support::harness::order_toml(
                    *id,
                    "dns-txt-token",
                    &names.iter().map(String::as_str).collect::<Vec<_>>()
                )
            ),
            Self::Domain { id, name, submit } => format!(
                "[[domain]]\nid = {id}\nname = \"{name}\"\nmethod = \"dns-txt-token\"\n{}",
                if *submit { "submit = [\"ov\"]\n" } else { "" }
            ),
        }
    }

    fn id(&self) -> u64 {
        match self {
            Self::Order { id, .. } | Self::Domain { id, .. } => *id,
        }
    }
}

/// Releases the lagging secondary every 0.5-1.1 s (seeded), like a secondary that catches up
/// now and then.
fn spawn_releaser(bind: Arc<Bind>, stop: Arc<AtomicBool>, seed: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(rng.random_range(500..=1100)));
            bind.refresh_secondary(ZONE);
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let seed: u64 = std::env::var("DCVD_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("crash suite seed: {seed} (rerun with DCVD_CRASH_SEED={seed})");
    eprintln!("crash suite seed: {seed} (rerun with DCVD_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let bind = Arc::new(Bind::builder().zone(ZoneSpec::new(ZONE)).with_lagging_secondary().start());
    let secondary = bind.secondary_addr().expect("secondary");
    let mut units = Vec::new();
    let mut orders = Vec::new();
    let mut domains = Vec::new();
    for i in 0..DV_ORDERS {
        let id = 7000 + i;
        let mut names = vec![format!("o{i}.{ZONE}")];
        if i % 4 == 0 {
            names.push(format!("www.o{i}.{ZONE}"));
        }
        orders.push(NewOrder::new(id, &names.iter().map(String::as_str).collect::<Vec<_>>()));
        units.push(UnitSpec::Order { id, names });
    }
    for j in 0..DOMAINS {
        let id = 7100 + j;
        let name = format!("d{j}.{ZONE}");
        domains.push(NewDomain::new(id, &name));
        units.push(UnitSpec::Domain { id, name, submit: j % 2 == 0 });
    }
    // interleave so domains join early too
    units.sort_by_key(|u| match u {
        UnitSpec::Order { id, .. } => (id - 7000) * 10,
        UnitSpec::Domain { id, .. } => (id - 7100) * 40 + 5,
    });
    let sim = HARNESS.start_sim(SimOpts {
        dns: vec![bind.primary_addr(), secondary],
        orders,
        domains,
        seed,
        extra: vec!["--no-rate-limit".into(), "--validation-scope".into(), "exact".into()],
        ..SimOpts::default()
    });
    let initial_values: BTreeMap<u64, String> = {
        let mut m = BTreeMap::new();
        for u in &units {
            if let UnitSpec::Order { id, .. } = u {
                m.insert(*id, sim.order(*id).await.dcv_random_value);
            }
        }
        m
    };

    let dcvd = HARNESS.dcvd(&sim);
    let provider = rfc2136_provider("bind", &bind, &[ZONE]);
    let write_config = |n: usize| {
        let body: String = units[..n.min(units.len())].iter().map(|u| format!("{}\n", u.toml())).collect();
        dcvd.write_config(&dcvd.config(bind.port(), &format!("{provider}\n{body}")));
    };

    let stop = Arc::new(AtomicBool::new(false));
    let monitor = ZoneMonitor::spawn(bind.primary_addr(), ZONE, stop.clone());
    let releaser = spawn_releaser(bind.clone(), stop.clone(), seed);

    let started = Instant::now();
    let mut kills_while_running = 0;
    for k in 0..KILLS {
        // a unit joins with every restart; the last restarts run the complete set
        write_config(4 + k);
        let mut child = dcvd.spawn(&["run"]);
        let wait_ms =
            if rng.random_range(0..5) == 0 { rng.random_range(1000..=2000) } else { rng.random_range(20..=900) };
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        if child.try_wait().expect("try_wait").is_none() {
            kills_while_running += 1;
        }
        dcvd.append_log(&format!("--- kill -9 #{k} after {wait_ms} ms\n"));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait");
        assert!(
            status.code().is_none() || status.code() == Some(0),
            "dcvd run exited by itself with {status} before kill #{k}; log:\n{}",
            test_support::harness::tail(&dcvd.log(), 80)
        );
    }
    let kill_phase = started.elapsed();

    // finish: the secondary keeps being released while `once` completes the work
    write_config(units.len());
    let status = dcvd.once(Duration::from_secs(120)).await;
    stop.store(true, Ordering::SeqCst);
    let monitor = monitor.join().expect("monitor thread");
    let releases = releaser.join().expect("releaser thread");
    let log = dcvd.assert_success(status, "the final dcvd once");
    // Kills that interrupted work: the run before the kill logged a state change.
    let segments: Vec<&str> = log.split("--- kill -9 #").collect();
    let busy_kills = segments[..segments.len() - 1].iter().filter(|seg| seg.contains("state changed")).count();
    println!(
        "crash suite: {KILLS} kills ({kills_while_running} of a running dcvd, {busy_kills} while units changed state) in \
         {kill_phase:?}, total {:?}, {} zone snapshots, {} secondary releases",
        started.elapsed(),
        monitor.snapshots,
        releases
    );

    for u in &units {
        match u {
            UnitSpec::Order { id, .. } => {
                let o = sim.order(*id).await;
                assert_eq!(o.dcv_status, "valid", "order {id} (seed {seed}): {o:?}");
                assert_eq!(&o.dcv_random_value, &initial_values[id], "order {id}: the random value changed");
            }
            UnitSpec::Domain { id, .. } => {
                let d = sim.domain(*id).await;
                assert!(d.dcv_valid, "domain {id} (seed {seed}): {d:?}");
            }
        }
    }
    let stats = sim.stats().await;
    assert_eq!(stats.premature_checks, 0, "seed {seed}: premature checks");
    assert_eq!(
        stats.tokens_issued, DOMAINS,
        "seed {seed}: one token per OV/EV domain (DV random values are reused); a second token request \
         after a crash invalidates the published one"
    );
    assert!(dcv_records(bind.primary_addr(), ZONE, &[]).is_empty(), "seed {seed}: records left on the primary");
    bind.refresh_secondary(ZONE);
    bind.wait_secondary_synced(ZONE, Duration::from_secs(10));
    assert!(dcv_records(secondary, ZONE, &[]).is_empty(), "seed {seed}: records left on the secondary");

    let rows = dcvd.status_json();
    let got = states(&rows);
    let want: BTreeMap<u64, String> = units.iter().map(|u| (u.id(), "cleaned_up".to_string())).collect();
    assert_eq!(got, want, "seed {seed}: units lost or not cleaned up");

    assert!(monitor.violations.is_empty(), "seed {seed}: {:#?}", monitor.violations);
    let published: BTreeSet<&String> = monitor.seen.iter().map(|(n, _)| n).collect();
    assert!(
        monitor.snapshots > 50 && published.len() >= 20,
        "the monitor saw too little to mean anything: {} snapshots, {} names",
        monitor.snapshots,
        published.len()
    );
    assert!(
        kills_while_running >= KILLS / 2,
        "dcvd kept exiting before the kill: {kills_while_running} of {KILLS}\n{log}"
    );
    let tsig = std::fs::read_to_string(bind.tsig_secret_file()).unwrap();
    dcvd.assert_no_secrets(&[("TSIG secret", &tsig)]);
}
