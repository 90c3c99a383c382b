//! Tests of the state store against real SQLite files in temporary directories, including real
//! crashes (a child process killed with SIGKILL after writing an intent), and against a real
//! PostgreSQL (one private cluster per test binary, a database per test): every behaviour test
//! runs on both backends (`name::sqlite`, `name::postgres`); leases, fencing, outages and the move
//! from SQLite to PostgreSQL have tests of their own.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use dns_provider::RecordType;

use dcvd::store::{
    ClaimScope, DB_FILE, EVENT_DETAIL_MAX, EVENTS_PER_UNIT, LOCK_FILE, NewRecord, PgSettings, PublishConfirmation,
    RecordStatus, Store, StoreError, StoreThread, UnitId, UnitSource, UnitSpec, UnitState, schema_version,
};
use test_support::postgres::{PASSWORD, PgCluster};

/// Where a behaviour test's store lives: a SQLite state_dir, or a PostgreSQL database of its own
/// on the test binary's shared cluster.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Db {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!("store_{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        PgCluster::shared().create_database(&name);
        Self::Postgres(name)
    }

    /// Opens the store as instance "test".
    fn open(&self) -> Store {
        self.open_as("test")
    }

    fn open_as(&self, instance: &str) -> Store {
        match self {
            Self::Sqlite(dir) => Store::open_sqlite(dir.path(), instance).unwrap(),
            Self::Postgres(name) => Store::open_postgres(&pg_settings(PgCluster::shared(), name), instance).unwrap(),
        }
    }

    /// Runs SQL behind the store's back (to backdate or tamper).
    fn exec(&self, sql: &str) -> Result<(), String> {
        match self {
            Self::Sqlite(dir) => raw(dir.path()).execute_batch(sql).map_err(|e| e.to_string()),
            Self::Postgres(name) => {
                let url = PgCluster::shared().url_with_password(name);
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client.batch_execute(sql).map_err(|e| e.to_string())
            }
        }
    }
}

/// The settings of `database` on `cluster`, the password given apart from the URL.
fn pg_settings(cluster: &PgCluster, database: &str) -> PgSettings {
    PgSettings::new(&cluster.url(database), Some(PASSWORD.into()), None).unwrap()
}

/// Runs each behaviour test (a `fn(&Db)`) on both backends, as `name::sqlite` and `name::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Db::sqlite())
            }
            #[test]
            fn postgres() {
                super::$name(&super::Db::postgres())
            }
        }
    )*};
}

on_both_backends!(
    publish_intent_survives_a_drop_as_publishing,
    remove_intent_survives_a_drop_as_removing,
    publish_intents_are_idempotent_and_revive_removed_records,
    publish_confirmations_of_a_step_are_one_transaction,
    record_status_changes_are_checked_and_atomic,
    publish_intent_validates_its_input,
    transition_refuses_an_edge_the_table_lacks,
    progress_facts_survive_a_reopen,
    transition_sets_state_since_only_on_change,
    transition_failures_write_nothing,
    save_unit_round_trips_every_field,
    sync_unit_inserts_and_updates,
    sync_units_in_one_batch,
    mark_missing_from_config,
    counts_by_state,
    events_are_capped_per_unit,
    data_survives_reopen,
    concurrent_writers_from_threads,
    store_thread_groups_concurrent_writes_into_few_commits,
    unit_source_is_stored_and_follows_the_configuration,
    leases_of_a_single_instance,
);

fn txt(name: &str, value: &str) -> NewRecord {
    NewRecord {
        provider: "bind".to_owned(),
        zone: "example.net".to_owned(),
        name: name.to_owned(),
        rtype: RecordType::Txt,
        value: value.to_owned(),
        ttl: 60,
    }
}

fn domains(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Syncs DV orders 1..=`count` (one domain each) in one batch; returns their ids.
fn sync_orders(store: &Store, count: u64) -> Vec<UnitId> {
    let units: Vec<UnitId> = (1..=count).map(UnitId::order).collect();
    let names = domains(&["example.com"]);
    let specs: Vec<UnitSpec<'_>> = units
        .iter()
        .map(|u| UnitSpec {
            unit: *u,
            method: "dns-txt-token",
            domains: &names,
            provider: None,
            source: UnitSource::Config,
        })
        .collect();
    store.sync_units(&specs).unwrap();
    units
}

/// `store` with one DV order synced into it.
fn with_order(store: Store, id: u64) -> (Store, UnitId) {
    let unit = UnitId::order(id);
    store.sync_unit(unit, "dns-txt-token", &domains(&["example.net"]), Some("bind")).unwrap();
    (store, unit)
}

/// Moves `unit` forward along the flow (pending, token_issued, published, propagated, checking,
/// valid, cleaned_up) until it is in `to`: the store refuses shortcuts.
fn walk(store: &Store, unit: UnitId, to: UnitState) {
    const FLOW: [UnitState; 7] = [
        UnitState::Pending,
        UnitState::TokenIssued,
        UnitState::Published,
        UnitState::Propagated,
        UnitState::Checking,
        UnitState::Valid,
        UnitState::CleanedUp,
    ];
    let from = store.unit(unit).unwrap().unwrap().state;
    let start = FLOW.iter().position(|s| *s == from).expect("walk starts in the flow");
    let end = FLOW.iter().position(|s| *s == to).expect("walk ends in the flow");
    for state in &FLOW[start + 1..=end] {
        store.transition(unit, *state, |_| {}).unwrap();
    }
}

/// A second connection to the database file, to inspect or tamper with it behind the store.
fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(DB_FILE)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Child process: the same test binary, re-run with `--ignored --exact child_process` and an
// environment variable saying what to do. It prints a marker line once the work is committed and
// then blocks until the parent kills it (SIGKILL: a real crash, no destructor runs).

const CHILD_DIR: &str = "DCVD_STORE_TEST_CHILD_DIR";
const CHILD_ACTION: &str = "DCVD_STORE_TEST_CHILD_ACTION";
const CHILD_READY: &str = "dcvd-store-child-ready";
/// When set, the child writes to this PostgreSQL database (password [`PASSWORD`]) instead of the
/// SQLite store in its directory.
const CHILD_PG_URL: &str = "DCVD_STORE_TEST_CHILD_PG_URL";

/// Not a test of its own: the body of the child process used by the crash and lock tests.
#[test]
#[ignore = "helper process started by the crash and lock tests"]
fn child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let action = std::env::var(CHILD_ACTION).unwrap();
    let store = match std::env::var(CHILD_PG_URL) {
        Ok(url) => Store::open_postgres(&PgSettings::new(&url, Some(PASSWORD.into()), None).unwrap(), "child").unwrap(),
        Err(_) => open_when_unlocked(dir),
    };
    let unit = UnitId::order(7);
    match action.as_str() {
        "hold" => {}
        "publish" => {
            store.sync_unit(unit, "dns-txt-token", &domains(&["example.net"]), None).unwrap();
            store.record_publish_intent(unit, &[txt("_dnsauth.example.net", "tok-7")]).unwrap();
        }
        "remove" => {
            let recs = store.records(unit).unwrap();
            store.record_remove_intent(&[recs[0].id]).unwrap();
        }
        "group-commits" => {
            group_commits_until_killed(store);
        }
        other => panic!("unknown child action {other}"),
    }
    println!("{CHILD_READY}");
    // Block until killed (or until the parent closes stdin, if it dies first).
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
    drop(store);
}

/// Opens the store, waiting (up to 10 s) while the lock is held: a process another test thread of
/// the parent forks at the moment the parent closes its store holds a copy of the lock's file
/// descriptor until it execs.
fn open_when_unlocked(dir: &Path) -> Store {
    for _ in 0..100 {
        match Store::open(dir) {
            Err(e) if e.is_locked() => std::thread::sleep(std::time::Duration::from_millis(100)),
            other => return other.unwrap(),
        }
    }
    Store::open(dir).unwrap()
}

/// Units the group-commit child writes to.
const GROUP_UNITS: u64 = 48;

/// The group-commit child: every unit, in its own task, writes round after round through the
/// store thread; round `r` writes a publish intent for value `v{r}` and sets `attempts = r` in one
/// write, and prints `ack <unit> <r>` once the group commit holding it is durable.
fn group_commits_until_killed(store: Store) -> ! {
    let store = std::sync::Arc::new(store);
    let units = sync_orders(&store, GROUP_UNITS);
    println!("{CHILD_READY}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let thread = StoreThread::start(store).unwrap();
        for unit in units {
            let thread = thread.clone();
            tokio::spawn(async move {
                let mut round = thread.read(move |s| Ok(s.unit(unit)?.unwrap().attempts)).await.unwrap();
                loop {
                    round += 1;
                    let r = round;
                    thread
                        .write(move |s| {
                            s.record_publish_intent(
                                unit,
                                &[txt(&format!("_dnsauth.u{}.example.net", unit.id), &format!("v{r}"))],
                            )?;
                            s.transition(unit, UnitState::Pending, |row| row.attempts = r)
                        })
                        .await
                        .unwrap();
                    println!("ack {} {r}", unit.id);
                }
            });
        }
        // The writers loop until the process is killed.
        std::future::pending::<()>().await;
    });
    unreachable!("the writers never stop")
}

/// Starts the child with `action` on `dir` and waits until it has done its work.
fn spawn_child(dir: &Path, action: &str) -> Child {
    spawn_child_with_output(dir, action).0
}

/// The child's output after its ready marker.
type ChildLines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// [`spawn_child`], keeping the child's further output.
fn spawn_child_with_output(dir: &Path, action: &str) -> (Child, ChildLines) {
    spawn_child_on(dir, None, action)
}

/// [`spawn_child_with_output`] writing to the PostgreSQL database at `pg_url` when given.
fn spawn_child_on(dir: &Path, pg_url: Option<&str>, action: &str) -> (Child, ChildLines) {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    if let Some(url) = pg_url {
        command.env(CHILD_PG_URL, url);
    }
    let mut child = command
        .args(["--ignored", "--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_ACTION, action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // libtest may print "test child_process ... " on the same line as the marker.
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|line| line.unwrap().contains(CHILD_READY));
    if !ready {
        let status = child.wait().unwrap();
        panic!("child process ({action}) exited ({status}) before it was ready; see its stderr above");
    }
    (child, lines)
}

/// SIGKILL: the kernel drops the child's lock and file handles; no destructor runs.
fn crash(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGKILL of a process in the middle of group commits (50 times, at random points, seeded):
/// every write the store thread acknowledged is durable, and the writes of one commit are all
/// there or none is (a unit's `attempts` and its records always agree), so a crash during a group
/// commit can neither lose a confirmed step nor leave half of one.
#[test]
fn kills_during_group_commits_lose_no_acknowledged_write() {
    group_commit_crashes(&Db::sqlite(), 50);
}

/// [`kills_during_group_commits_lose_no_acknowledged_write`] on PostgreSQL (20 kills): a client
/// killed inside a group transaction loses nothing it was told was committed.
#[test]
fn kills_during_postgres_group_commits_lose_no_acknowledged_write() {
    group_commit_crashes(&Db::postgres(), 20);
}

fn group_commit_crashes(db: &Db, kills: usize) {
    use rand::{RngExt, SeedableRng};
    let seed: u64 = std::env::var("DCVD_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("group-commit crash seed {seed} (rerun with DCVD_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let child_dir = tempfile::tempdir().unwrap();
    let (dir, pg_url) = match db {
        Db::Sqlite(dir) => (dir.path(), None),
        Db::Postgres(name) => (child_dir.path(), Some(PgCluster::shared().url(name))),
    };
    let mut acked: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut total_acks = 0usize;
    for kill in 0..kills {
        let (child, mut lines) = spawn_child_on(dir, pg_url.as_deref(), "group-commits");
        let wanted = rng.random_range(1..=300usize);
        let mut seen = 0;
        while seen < wanted {
            let Some(Ok(line)) = lines.next() else { break };
            // Anything else (a panic message) is the child's stderr's business; it is not an ack.
            if let Some(ack) = line.strip_prefix("ack ") {
                let mut parts = ack.split_whitespace().map(|p| p.parse::<u64>().unwrap());
                let (id, round) = (parts.next().unwrap(), parts.next().unwrap() as u32);
                let best = acked.entry(id).or_default();
                *best = (*best).max(round);
                seen += 1;
            }
        }
        total_acks += seen;
        assert_eq!(seen, wanted, "kill {kill}: the child stopped writing before it was killed");
        crash(child);
        let store = db.open();
        if pg_url.is_none() {
            let ok: String = raw(dir).query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
            assert_eq!(ok, "ok", "kill {kill}");
        }
        for row in store.units().unwrap() {
            let confirmed = acked.get(&row.unit.id).copied().unwrap_or(0);
            assert!(
                row.attempts >= confirmed,
                "kill {kill}: {} lost acknowledged round {confirmed} (has {})",
                row.unit,
                row.attempts
            );
            let mut values: Vec<u32> =
                store.records(row.unit).unwrap().iter().map(|r| r.value[1..].parse().unwrap()).collect();
            values.sort_unstable();
            let expected: Vec<u32> = (1..=row.attempts).collect();
            assert_eq!(
                values, expected,
                "kill {kill}: {} has attempts {} but other records: half a commit",
                row.unit, row.attempts
            );
        }
    }
    println!("group-commit crash suite: {kills} kills, {total_acks} acknowledged writes checked");
}

// ---------------------------------------------------------------------------------------------
// Lock

/// A second open of the same state_dir fails with Locked and a message naming the directory, the
/// lock file and what to do; it succeeds once the first store is dropped.
#[test]
fn second_open_is_locked_until_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.is_locked(), "{err:?}");
    let d = dir.path().display();
    assert_eq!(
        err.to_string(),
        format!(
            "another dcvd is running with state_dir {d} (lock held on {d}/{LOCK_FILE}); stop it or \
             use a different state_dir"
        )
    );
    drop(first);
    Store::open(dir.path()).unwrap();
}

/// A lock released while an open waits for it is taken (a process being spawned holds a copy of
/// the lock's descriptor until its exec, so a lock just released can look held for a moment).
#[test]
fn an_open_waits_briefly_for_a_lock_being_released() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
    });
    Store::open(dir.path()).expect("the lock released 100 ms later is taken");
    release.join().unwrap();
}

/// The lock holds against another process, and is released when that process dies without
/// cleaning up (the stale lock file does not block a restart).
#[test]
fn lock_is_exclusive_across_processes_and_released_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child(dir.path(), "hold");
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.is_locked(), "{err:?}");
    crash(child);
    assert!(dir.path().join(LOCK_FILE).exists());
    Store::open(dir.path()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Opening, settings, migrations

/// The writer runs in WAL mode with synchronous=FULL and foreign keys on; the mode is persistent
/// in the file (another connection sees it).
#[test]
fn pragmas_are_wal_full_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let info = store.info().unwrap();
    assert_eq!(info.journal_mode, "wal");
    assert_eq!(info.synchronous, 2, "synchronous must be FULL (2)");
    assert!(info.foreign_keys);
    assert_eq!(info.schema_version, schema_version());
    assert!(!info.read_only);
    assert_eq!(info.path, dir.path().join(DB_FILE));
    let mode: String = raw(dir.path()).pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

/// open creates a missing state_dir (nested) with mode 0700 and a private database file.
#[test]
fn creates_private_state_dir_and_files() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("var/lib/dcvd");
    let _store = Store::open(&dir).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
    assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
}

/// A fresh database (also an empty 0-byte file) is migrated to the current schema version, and
/// reopening does not migrate again or lose anything.
#[test]
fn fresh_and_empty_databases_get_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
    let (store, unit) = with_order(Store::open(dir.path()).unwrap(), 1);
    drop(store);
    let version: u32 = raw(dir.path()).pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, schema_version());
    let store = Store::open(dir.path()).unwrap();
    assert!(store.unit(unit).unwrap().is_some());
}

/// A database written by a newer dcvd is refused by both opens with a message naming both
/// versions, and is left untouched.
#[test]
fn database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let newer = schema_version() + 1;
    raw(dir.path()).pragma_update(None, "user_version", newer).unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, supported, .. } if found == newer && supported == schema_version()),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("schema version {newer}")), "{msg}");
    assert!(msg.contains("newer dcvd"), "{msg}");
    assert!(msg.contains(&dir.path().join(DB_FILE).display().to_string()), "{msg}");

    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err:?}");
    let version: u32 = raw(dir.path()).pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, newer);
}

/// A file of garbage at state.sqlite3 gives a Corrupt error naming the file and the way out, and
/// the file is left as it was (evidence for the operator).
#[test]
fn garbage_database_file_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = b"this is not a database, it is a text file that happens to be long enough \
                    to fill the sqlite header and then some more bytes .........."
        .repeat(40);
    std::fs::write(dir.path().join(DB_FILE), &garbage).unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().join(DB_FILE).display().to_string()), "{msg}");
    assert!(msg.contains("not a usable SQLite database"), "{msg}");
    assert!(msg.contains("move it aside"), "{msg}");

    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), garbage);
    // The failed open released the lock: after fixing the file, dcvd starts.
    std::fs::remove_file(dir.path().join(DB_FILE)).unwrap();
    Store::open(dir.path()).unwrap();
}

/// Someone else's SQLite database in the state directory is refused, not "migrated".
#[test]
fn foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    raw(dir.path()).execute_batch("CREATE TABLE certs (pem TEXT)").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not a dcvd state database"), "{err}");
    let tables: i64 =
        raw(dir.path()).query_row("SELECT count(*) FROM sqlite_schema WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1, "the foreign database must not be modified");
}

// ---------------------------------------------------------------------------------------------
// Read-only access

/// `dcvd status` can open the store read-only while the daemon holds the lock, sees committed
/// data (also data committed after it opened), and cannot write.
#[test]
fn read_only_open_works_while_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (store, unit) = with_order(Store::open(dir.path()).unwrap(), 11);
    let ro = Store::open_read_only(dir.path()).unwrap();
    assert!(ro.info().unwrap().read_only);
    assert_eq!(ro.unit(unit).unwrap().unwrap().state, UnitState::Pending);

    store.transition(unit, UnitState::TokenIssued, |_| {}).unwrap();
    assert_eq!(ro.unit(unit).unwrap().unwrap().state, UnitState::TokenIssued);
    assert_eq!(ro.units().unwrap().len(), 1);
    assert_eq!(ro.counts_by_state().unwrap()[&UnitState::TokenIssued], 1);

    let err = ro.transition(unit, UnitState::Failed, |_| {}).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
    let err = ro.append_event(unit, "x", "y").unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
    // The daemon's store still works with the reader open.
    store.append_event(unit, "token", "issued").unwrap();
    let events: Vec<String> = ro.events(unit).unwrap().into_iter().map(|(_, e, _)| e).collect();
    assert_eq!(events, ["token_issued", "token"], "the transition's own line, then the appended one");
}

/// A read-only open of a directory without a database says so instead of creating one.
#[test]
fn read_only_open_of_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("state_dir"), "{err}");
    assert!(!dir.path().join(DB_FILE).exists());

    // A database the daemon has not migrated yet (here: empty) cannot be read by this version.
    std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::TooOld { found: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("dcvd run"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Records and intents

/// Publish intent, then a drop without mark_published: on reopen the record is Publishing, so
/// recovery republishes or cleans it up.
fn publish_intent_survives_a_drop_as_publishing(db: &Db) {
    let (store, unit) = with_order(db.open(), 21);
    let rows = store
        .record_publish_intent(unit, &[txt("_dnsauth.example.net", "v1"), txt("_dnsauth.www.example.net", "v1")])
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == RecordStatus::Publishing && r.unit == unit));
    drop(store);

    let store = db.open();
    let live = store.live_records().unwrap();
    assert_eq!(live, rows);
    assert_eq!(live[0].name, "_dnsauth.example.net");
    assert_eq!(live[1].name, "_dnsauth.www.example.net");
}

/// A real crash (SIGKILL) right after the publish intent leaves a Publishing record; a crash
/// right after a remove intent leaves a Removing one.
#[test]
fn intents_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    crash(spawn_child(dir.path(), "publish"));
    let unit = UnitId::order(7);
    {
        let store = Store::open(dir.path()).unwrap();
        let recs = store.records(unit).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].status, RecordStatus::Publishing);
        assert_eq!((recs[0].name.as_str(), recs[0].value.as_str()), ("_dnsauth.example.net", "tok-7"));
        store.mark_published(recs[0].id, Some("rec-1"), None).unwrap();
    }

    crash(spawn_child(dir.path(), "remove"));
    let store = Store::open(dir.path()).unwrap();
    let live = store.live_records().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].status, RecordStatus::Removing);
    assert_eq!(live[0].provider_id.as_deref(), Some("rec-1"), "the provider id is kept for the removal");
}

/// Remove intent, then a drop without mark_removed: on reopen the record is Removing and still
/// live; mark_removed then takes it out of the live set but keeps it in the unit's history.
fn remove_intent_survives_a_drop_as_removing(db: &Db) {
    let (store, unit) = with_order(db.open(), 22);
    let rec = store.record_publish_intent(unit, &[txt("_dnsauth.example.net", "v")]).unwrap().remove(0);
    store.mark_published(rec.id, Some("cf-123"), Some("C1")).unwrap();
    store.record_remove_intent(&[rec.id]).unwrap();
    drop(store);

    let store = db.open();
    let live = store.live_records().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].status, RecordStatus::Removing);
    assert_eq!(live[0].provider_id.as_deref(), Some("cf-123"));
    assert_eq!(live[0].change_id.as_deref(), Some("C1"));

    store.mark_removed(&[rec.id]).unwrap();
    assert!(store.live_records().unwrap().is_empty());
    let all = store.records(unit).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, RecordStatus::Removed);
}

/// Publish intents are idempotent: the same record is returned as is (with its status and
/// provider id), duplicates in one call collapse; a removed or removing record is revived to
/// Publishing with its provider ids cleared.
fn publish_intents_are_idempotent_and_revive_removed_records(db: &Db) {
    let (store, unit) = with_order(db.open(), 23);
    let a = txt("_dnsauth.example.net", "v");
    let b = txt("_dnsauth.example.net", "w"); // same name, other value: another record
    let first = store.record_publish_intent(unit, &[a.clone(), b.clone(), a.clone()]).unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(first[0], first[2]);
    assert_ne!(first[0].id, first[1].id);
    assert_eq!(store.records(unit).unwrap().len(), 2);

    store.mark_published(first[0].id, Some("id-a"), None).unwrap();
    let again = store.record_publish_intent(unit, std::slice::from_ref(&a)).unwrap();
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].status, RecordStatus::Published);
    assert_eq!(again[0].provider_id.as_deref(), Some("id-a"));

    store.record_remove_intent(&[first[0].id, first[1].id]).unwrap();
    store.mark_removed(&[first[0].id]).unwrap();
    let mut a2 = a.clone();
    a2.ttl = 120;
    let revived = store.record_publish_intent(unit, &[a2, b]).unwrap();
    assert_eq!(revived[0].id, first[0].id, "a removed record is revived, not duplicated");
    assert_eq!(revived[0].status, RecordStatus::Publishing);
    assert_eq!(revived[0].ttl, 120);
    assert_eq!(revived[0].provider_id, None);
    assert_eq!(revived[1].id, first[1].id);
    assert_eq!(revived[1].status, RecordStatus::Publishing, "a removing record is revived too");
    assert_eq!(store.records(unit).unwrap().len(), 2);
}

/// Remove intents and mark_removed are idempotent; an unknown id fails the whole batch without
/// A whole publish step is confirmed in one transaction: every record, or (when one id is
/// unknown) none of them.
fn publish_confirmations_of_a_step_are_one_transaction(db: &Db) {
    let (store, unit) = with_order(db.open(), 25);
    let recs =
        store.record_publish_intent(unit, &[txt("_dnsauth.a.example", "v"), txt("_dnsauth.b.example", "v")]).unwrap();
    let confirm = |id: i64| PublishConfirmation { record_id: id, provider_id: Some("p"), change_id: Some("c") };
    let err = store.mark_all_published(&[confirm(recs[0].id), confirm(9999)]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecord { id: 9999 }), "{err:?}");
    assert!(store.records(unit).unwrap().iter().all(|r| r.status == RecordStatus::Publishing), "rolled back");
    store.mark_all_published(&[confirm(recs[0].id), confirm(recs[1].id)]).unwrap();
    let rows = store.records(unit).unwrap();
    assert!(
        rows.iter().all(|r| r.status == RecordStatus::Published && r.change_id.as_deref() == Some("c")),
        "{rows:?}"
    );
}

/// writing any of it; a publish cannot be confirmed after a remove intent.
fn record_status_changes_are_checked_and_atomic(db: &Db) {
    let (store, unit) = with_order(db.open(), 24);
    let rec = store.record_publish_intent(unit, &[txt("_dnsauth.example.net", "v")]).unwrap().remove(0);

    let err = store.record_remove_intent(&[rec.id, 9999]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecord { id: 9999 }), "{err:?}");
    assert_eq!(store.records(unit).unwrap()[0].status, RecordStatus::Publishing, "batch rolled back");
    let err = store.mark_published(9999, None, None).unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecord { id: 9999 }), "{err:?}");

    store.record_remove_intent(&[rec.id]).unwrap();
    store.record_remove_intent(&[rec.id]).unwrap();
    assert_eq!(store.records(unit).unwrap()[0].status, RecordStatus::Removing);
    let err = store.mark_published(rec.id, Some("x"), None).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("removing"), "{err}");

    store.mark_removed(&[rec.id]).unwrap();
    store.mark_removed(&[rec.id]).unwrap();
    store.record_remove_intent(&[rec.id]).unwrap();
    assert_eq!(store.records(unit).unwrap()[0].status, RecordStatus::Removed, "removed stays removed");
    let err = store.mark_removed(&[rec.id, -1]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecord { id: -1 }), "{err:?}");
}

/// Intents for a unit the store does not know are refused; a record type dcvd never publishes
/// cannot be written (the type is `RecordType`), and one planted in the file is refused on read.
fn publish_intent_validates_its_input(db: &Db) {
    let (store, unit) = with_order(db.open(), 25);
    let err = store.record_publish_intent(UnitId::domain(25), &[txt("a.example.net", "v")]).unwrap_err();
    assert!(matches!(err, StoreError::UnknownUnit { .. }), "{err:?}");
    assert!(err.to_string().contains("domain 25"), "{err}");
    assert!(store.records(unit).unwrap().is_empty(), "nothing of a refused batch is written");
    store.record_publish_intent(unit, &[txt("b.example.net", "v")]).unwrap();
    db.exec("UPDATE records SET rtype = 'A'").unwrap();
    let err = store.records(unit).unwrap_err();
    assert!(err.to_string().contains("unsupported record type \"A\""), "{err}");
}

/// The store refuses a state change the state machine's table has no edge for, and writes
/// nothing of it.
fn transition_refuses_an_edge_the_table_lacks(db: &Db) {
    let (store, unit) = with_order(db.open(), 26);
    let err = store.transition(unit, UnitState::Checking, |r| r.attempts = 9).unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { from: UnitState::Pending, to: UnitState::Checking, .. }));
    assert!(err.to_string().contains("from pending to checking"), "{err}");
    let row = store.unit(unit).unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (UnitState::Pending, 0));
    // Every edge of the table is accepted.
    store.transition(unit, UnitState::TokenIssued, |_| {}).unwrap();
    store.transition(unit, UnitState::Failed, |_| {}).unwrap();
    store.transition(unit, UnitState::Pending, |_| {}).unwrap();
}

/// What a restart must know is persisted: the negative TTL seen, the method switch and the count
/// of transient failures.
fn progress_facts_survive_a_reopen(db: &Db) {
    {
        let (store, unit) = with_order(db.open(), 27);
        store
            .transition(unit, UnitState::Pending, |r| {
                r.negative_ttl_ms = Some(300_000);
                r.method_switched = true;
                r.transient_failures = 4;
            })
            .unwrap();
    }
    let store = db.open();
    let row = store.unit(UnitId::order(27)).unwrap().unwrap();
    assert_eq!((row.negative_ttl_ms, row.method_switched, row.transient_failures), (Some(300_000), true, 4));
}

// ---------------------------------------------------------------------------------------------
// Units

/// transition applies the edit and the new state in one write and moves state_since only when
/// the state changes.
fn transition_sets_state_since_only_on_change(db: &Db) {
    let (store, unit) = with_order(db.open(), 31);
    // Backdate state_since behind the store's back so a change is visible without sleeping.
    db.exec("UPDATE units SET state_since = 1, updated_at = 1").unwrap();

    let row = store
        .transition(unit, UnitState::Pending, |r| {
            r.attempts = 3;
            r.state = UnitState::Failed; // overridden by `to`
            r.state_since = 99; // overridden by the store
        })
        .unwrap();
    assert_eq!(row.state, UnitState::Pending);
    assert_eq!(row.state_since, 1, "same state: state_since kept");
    assert_eq!(row.attempts, 3);
    assert!(row.updated_at > 1);
    assert_eq!(store.unit(unit).unwrap().unwrap(), row, "returned row is what was stored");

    let before = dcvd::store::now_millis();
    let row = store
        .transition(unit, UnitState::TokenIssued, |r| {
            r.token = Some("rv-1".to_owned());
            r.token_expires_at = Some(1_900_000_000);
            r.attempts = 0;
        })
        .unwrap();
    assert_eq!(row.state, UnitState::TokenIssued);
    assert!(row.state_since >= before, "state changed: state_since is now");
    assert_eq!(row.token.as_deref(), Some("rv-1"));
    assert_eq!(store.unit(unit).unwrap().unwrap(), row);
}

/// transition on an unknown unit fails and writes nothing; a panic in the edit rolls back and
/// leaves the store usable.
fn transition_failures_write_nothing(db: &Db) {
    let (store, unit) = with_order(db.open(), 32);
    let err = store.transition(UnitId::order(404), UnitState::Valid, |_| {}).unwrap_err();
    assert!(matches!(err, StoreError::UnknownUnit { unit } if unit == UnitId::order(404)), "{err:?}");
    assert!(store.unit(UnitId::order(404)).unwrap().is_none());

    let before = store.unit(unit).unwrap().unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.transition(unit, UnitState::Valid, |_| panic!("edit failed")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(store.unit(unit).unwrap().unwrap(), before);
    store.transition(unit, UnitState::TokenIssued, |_| {}).unwrap();
}

/// save_unit writes every mutable field, keeps created_at, and maintains state_since itself.
fn save_unit_round_trips_every_field(db: &Db) {
    let (store, unit) = with_order(db.open(), 33);
    db.exec("UPDATE units SET state_since = 5").unwrap();
    let mut row = store.unit(unit).unwrap().unwrap();
    let created = row.created_at;
    row.method = "dns-cname-token".to_owned();
    row.domains = domains(&["a.example.net", "*.b.example.net"]);
    row.provider = None;
    row.token = Some("tok".to_owned());
    row.token_expires_at = Some(1_800_000_000);
    row.verification_value = Some("dcv.digicert.com".to_owned());
    row.renewals = 2;
    row.attempts = 17;
    row.next_action_at = Some(1_800_000_000_123);
    row.last_error = Some("invalid_dns_txt: not found yet".to_owned());
    row.in_config = false;
    row.created_at = 0;
    row.state_since = 0;
    store.save_unit(&row).unwrap();

    let stored = store.unit(unit).unwrap().unwrap();
    assert_eq!(stored.created_at, created);
    assert_eq!(stored.state_since, 5, "same state: state_since kept");
    let expected =
        dcvd::store::UnitRow { created_at: created, state_since: 5, updated_at: stored.updated_at, ..row.clone() };
    assert_eq!(stored, expected);

    row.state = UnitState::Checking;
    store.save_unit(&row).unwrap();
    assert!(store.unit(unit).unwrap().unwrap().state_since > 5, "state changed: state_since is now");

    row.unit = UnitId::domain(33);
    let err = store.save_unit(&row).unwrap_err();
    assert!(matches!(err, StoreError::UnknownUnit { .. }), "{err:?}");
}

/// sync_unit inserts new units as Pending, updates changed config fields, leaves an unchanged
/// unit untouched (no write), and never changes the state.
fn sync_unit_inserts_and_updates(db: &Db) {
    let store = db.open();
    let unit = UnitId::domain(41);
    let row = store.sync_unit(unit, "dns-txt-token", &domains(&["example.org"]), None).unwrap();
    assert_eq!(row.state, UnitState::Pending);
    assert!(row.in_config);
    assert_eq!((row.renewals, row.attempts, row.token.as_ref()), (0, 0, None));
    assert_eq!(store.unit(unit).unwrap().unwrap(), row);

    walk(&store, unit, UnitState::Published);
    db.exec("UPDATE units SET updated_at = 1").unwrap();
    let same = store.sync_unit(unit, "dns-txt-token", &domains(&["example.org"]), None).unwrap();
    assert_eq!(same.updated_at, 1, "unchanged config: nothing written");
    assert_eq!(same.state, UnitState::Published);

    let changed =
        store.sync_unit(unit, "dns-cname-token", &domains(&["example.org", "www.example.org"]), Some("aws")).unwrap();
    assert_eq!(changed.method, "dns-cname-token");
    assert_eq!(changed.domains, domains(&["example.org", "www.example.org"]));
    assert_eq!(changed.provider.as_deref(), Some("aws"));
    assert_eq!(changed.state, UnitState::Published, "sync never changes the state");
    assert!(changed.updated_at > 1);
    assert_eq!(store.unit(unit).unwrap().unwrap(), changed);
}

/// sync_units applies many units in one call with the same rules as sync_unit, returning rows in
/// the order given.
fn sync_units_in_one_batch(db: &Db) {
    let store = db.open();
    let d1 = domains(&["example.com"]);
    let d2 = domains(&["example.org"]);
    store.sync_unit(UnitId::order(2), "dns-txt-token", &d1, None).unwrap();
    walk(&store, UnitId::order(2), UnitState::Checking);
    let specs = [
        UnitSpec {
            unit: UnitId::domain(9),
            method: "dns-cname-token",
            domains: &d2,
            provider: Some("aws"),
            source: UnitSource::Config,
        },
        UnitSpec {
            unit: UnitId::order(2),
            method: "dns-txt-token",
            domains: &d2,
            provider: None,
            source: UnitSource::Config,
        },
        UnitSpec {
            unit: UnitId::order(1),
            method: "dns-txt-token",
            domains: &d1,
            provider: None,
            source: UnitSource::Config,
        },
    ];
    let rows = store.sync_units(&specs).unwrap();
    let got: Vec<_> = rows.iter().map(|r| (r.unit, r.state, r.domains.clone())).collect();
    assert_eq!(
        got,
        vec![
            (UnitId::domain(9), UnitState::Pending, d2.clone()),
            (UnitId::order(2), UnitState::Checking, d2.clone()),
            (UnitId::order(1), UnitState::Pending, d1.clone()),
        ]
    );
    let mut stored = store.units().unwrap();
    stored.sort_by_key(|r| specs.iter().position(|s| s.unit == r.unit));
    assert_eq!(stored, rows);
}

/// Units missing from the config are flagged (terminal ones too, so `status` is right after a
/// reload), reported again on the next scan until terminal, and a unit back in the config is
/// flagged present again.
fn mark_missing_from_config(db: &Db) {
    let store = db.open();
    let d = domains(&["example.com"]);
    let (a, b, c, e) = (UnitId::order(1), UnitId::order(2), UnitId::domain(1), UnitId::domain(2));
    for unit in [a, b, c, e] {
        store.sync_unit(unit, "dns-txt-token", &d, None).unwrap();
    }
    walk(&store, c, UnitState::CleanedUp);
    walk(&store, e, UnitState::Valid);

    assert_eq!(store.mark_missing_from_config(&[a]).unwrap(), vec![b, e]);
    let flags: Vec<(UnitId, bool)> = store.units().unwrap().iter().map(|r| (r.unit, r.in_config)).collect();
    assert_eq!(flags, vec![(a, true), (b, false), (c, false), (e, false)]);
    assert_eq!(store.mark_missing_from_config(&[a]).unwrap(), vec![b, e], "reported until terminal");

    store.transition(e, UnitState::Removed, |_| {}).unwrap();
    store.sync_unit(b, "dns-txt-token", &d, None).unwrap();
    assert!(store.unit(b).unwrap().unwrap().in_config);
    assert_eq!(store.mark_missing_from_config(&[a, b]).unwrap(), vec![]);
}

/// Every state appears in the counts, with the right numbers.
fn counts_by_state(db: &Db) {
    let store = db.open();
    for id in 0..5 {
        store.sync_unit(UnitId::order(id), "dns-txt-token", &domains(&["example.com"]), None).unwrap();
    }
    walk(&store, UnitId::order(0), UnitState::Checking);
    walk(&store, UnitId::order(1), UnitState::Checking);
    store.transition(UnitId::order(2), UnitState::Failed, |_| {}).unwrap();
    let counts = store.counts_by_state().unwrap();
    assert_eq!(counts.len(), UnitState::ALL.len());
    assert_eq!(counts[&UnitState::Pending], 2);
    assert_eq!(counts[&UnitState::Checking], 2);
    assert_eq!(counts[&UnitState::Failed], 1);
    assert_eq!(counts.values().sum::<u64>(), 5);
}

/// The event log keeps the last EVENTS_PER_UNIT events of each unit, oldest first, and cuts long
/// details.
fn events_are_capped_per_unit(db: &Db) {
    let store = db.open();
    let (u, other) = (UnitId::order(51), UnitId::domain(51));
    store.append_event(other, "kept", "other unit").unwrap();
    let total = EVENTS_PER_UNIT + 5;
    for i in 0..total {
        store.append_event(u, "tick", &format!("n={i}")).unwrap();
    }
    let events = store.events(u).unwrap();
    assert_eq!(events.len(), EVENTS_PER_UNIT as usize);
    assert_eq!(events[0].2, "n=5");
    assert_eq!(events.last().unwrap().2, format!("n={}", total - 1));
    assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(store.events(other).unwrap().len(), 1);

    store.append_event(other, "long", &"x".repeat(EVENT_DETAIL_MAX * 2)).unwrap();
    assert_eq!(store.events(other).unwrap()[1].2.len(), EVENT_DETAIL_MAX);
}

/// Everything written survives closing and reopening the store.
fn data_survives_reopen(db: &Db) {
    let (store, unit) = with_order(db.open(), 61);
    walk(&store, unit, UnitState::TokenIssued);
    let row = store
        .transition(unit, UnitState::Published, |r| {
            r.token = Some("abc".to_owned());
            r.token_expires_at = Some(1_900_000_000);
            r.next_action_at = Some(42);
        })
        .unwrap();
    let rec = store.record_publish_intent(unit, &[txt("_dnsauth.example.net", "abc")]).unwrap().remove(0);
    store.mark_published(rec.id, Some("p1"), Some("c1")).unwrap();
    store.append_event(unit, "published", "_dnsauth.example.net").unwrap();
    let records = store.records(unit).unwrap();
    drop(store);

    let store = db.open();
    assert_eq!(store.units().unwrap(), vec![row]);
    assert_eq!(store.records(unit).unwrap(), records);
    assert_eq!(records[0].status, RecordStatus::Published);
    assert_eq!(store.events(unit).unwrap().last().unwrap().1, "published");
}

/// The store is shared between threads; concurrent writers each see their own writes.
fn concurrent_writers_from_threads(db: &Db) {
    let store = std::sync::Arc::new(db.open());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let unit = UnitId::order(100 + t);
                store.sync_unit(unit, "dns-txt-token", &domains(&["example.com"]), None).unwrap();
                walk(&store, unit, UnitState::Propagated);
                for i in 0..25u32 {
                    store.transition(unit, UnitState::Checking, |r| r.attempts = i + 1).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let units = store.units().unwrap();
    assert_eq!(units.len(), 4);
    assert!(units.iter().all(|r| r.attempts == 25 && r.state == UnitState::Checking));
}

/// The store thread group-commits: 200 units writing at once share far fewer commits than 200,
/// each caller gets its own result only after the commit (a failing write in the same group
/// fails alone), and reads see only committed data.
fn store_thread_groups_concurrent_writes_into_few_commits(db: &Db) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(store_thread_groups_concurrent_writes(db));
}

async fn store_thread_groups_concurrent_writes(db: &Db) {
    let store = std::sync::Arc::new(db.open());
    let units = sync_orders(&store, 200);
    let thread = StoreThread::start(store.clone()).unwrap();

    let started = std::time::Instant::now();
    let mut writes = Vec::new();
    for unit in units.iter().copied() {
        let t = thread.clone();
        writes.push(tokio::spawn(async move {
            t.write(move |s| s.transition(unit, UnitState::TokenIssued, |r| r.token = Some("tok".into()))).await
        }));
    }
    // one write in the crowd fails: it must not take the others down
    let bad = thread.write(|s| s.transition(UnitId::order(9999), UnitState::TokenIssued, |_| {})).await;
    assert!(matches!(bad, Err(StoreError::UnknownUnit { .. })), "{bad:?}");
    for w in writes {
        assert_eq!(w.await.unwrap().unwrap().state, UnitState::TokenIssued);
    }
    let (commits, written) = thread.stats().get();
    println!("{}: 201 concurrent writes in {commits} commits, {:?}", store.location(), started.elapsed());
    assert_eq!(written, 201, "every write ran");
    assert!(commits < 100, "200 concurrent writes took {commits} commits: no grouping");
    let rows = thread.read(|s| s.units()).await.unwrap();
    assert!(rows.iter().all(|r| r.state == UnitState::TokenIssued), "all committed");
    drop(thread);
    // durable: a fresh connection sees them
    drop(store);
    let reopened = db.open();
    assert!(
        reopened
            .units()
            .unwrap()
            .iter()
            .all(|r| r.state == UnitState::TokenIssued && r.token.as_deref() == Some("tok"))
    );
}

/// A unit's source is stored and follows the configuration: a discovered unit that the TOML
/// lists later becomes `config`; the database refuses any other value.
fn unit_source_is_stored_and_follows_the_configuration(db: &Db) {
    let store = db.open();
    let names = domains(&["example.com"]);
    let spec =
        |source| UnitSpec { unit: UnitId::order(7), method: "dns-txt-token", domains: &names, provider: None, source };
    let rows = store.sync_units(&[spec(UnitSource::Discovered)]).unwrap();
    assert_eq!(rows[0].source, UnitSource::Discovered);
    assert_eq!(store.unit(UnitId::order(7)).unwrap().unwrap().source, UnitSource::Discovered);
    store.sync_units(&[spec(UnitSource::Config)]).unwrap();
    assert_eq!(store.unit(UnitId::order(7)).unwrap().unwrap().source, UnitSource::Config);
    let err = db.exec("UPDATE units SET source = 'toml' WHERE id = 7");
    assert!(err.is_err(), "the CHECK constraint refuses an unknown source");
}

// ---------------------------------------------------------------------------------------------
// Leases and fencing

/// Five orders, one of them already cleaned up: the units with work left.
fn five_orders(store: &Store) -> Vec<UnitId> {
    let units: Vec<UnitId> = (1..=5).map(UnitId::order).collect();
    for unit in &units {
        store.sync_unit(*unit, "dns-txt-token", &domains(&["example.com"]), None).unwrap();
    }
    walk(store, units[4], UnitState::CleanedUp);
    units[..4].to_vec()
}

const LONG_LEASE: std::time::Duration = std::time::Duration::from_secs(600);

/// One instance (SQLite's only case): claims get every unit with work left, at epoch 1, once;
/// a terminal transition releases the unit; release lets a claim take the others again at the
/// next epoch; writes succeed throughout.
fn leases_of_a_single_instance(db: &Db) {
    let store = db.open_as("solo");
    assert_eq!(store.instance(), "solo");
    let open = five_orders(&store);
    let claimed = store.claim_units(LONG_LEASE, 3, ClaimScope::All).unwrap();
    assert_eq!(claimed.iter().map(|r| r.unit).collect::<Vec<_>>(), open[..3], "limit and unit order");
    assert!(claimed.iter().all(|r| r.owner.as_deref() == Some("solo") && r.epoch == 1 && r.lease_expires_at.is_some()));
    let rest = store.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap();
    assert_eq!(rest.iter().map(|r| r.unit).collect::<Vec<_>>(), open[3..], "held units are not returned again");
    assert!(store.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap().is_empty());
    assert!(store.renew_leases(LONG_LEASE).unwrap().is_empty(), "nothing lost");

    let row = store.transition(open[0], UnitState::Failed, |r| r.last_error = Some("x".into())).unwrap();
    assert_eq!((row.owner, row.epoch, row.lease_expires_at), (None, 1, None), "terminal: released, epoch kept");
    assert_eq!(store.unit(open[0]).unwrap().unwrap().owner, None);
    store.record_publish_intent(open[1], &[txt("_dnsauth.example.com", "v")]).unwrap();
    store.append_event(open[1], "note", "held").unwrap();

    store.release_leases().unwrap();
    assert!(store.held_leases().is_empty());
    assert!(store.units().unwrap().iter().all(|r| r.owner.is_none() && r.lease_expires_at.is_none()));
    let again = store.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap();
    assert_eq!(again.iter().map(|r| (r.unit, r.epoch)).collect::<Vec<_>>(), [(open[1], 2), (open[2], 2), (open[3], 2)]);
}

/// A fresh PostgreSQL database.
fn pg_db() -> Db {
    Db::postgres()
}

/// Three instances claiming the same 300 units at once from their own threads, a few at a time:
/// every unit is claimed exactly once (SKIP LOCKED never hands a row to two instances).
#[test]
fn concurrent_claims_never_overlap() {
    let db = pg_db();
    let setup = db.open_as("setup");
    let units = sync_orders(&setup, 300);
    let instances = ["a", "b", "c"];
    let stores: Vec<Store> = instances.iter().map(|instance| db.open_as(instance)).collect();
    // All three start claiming at the same moment, 3 units at a time.
    let start = std::sync::Barrier::new(instances.len());
    let claims: Vec<Vec<UnitId>> = std::thread::scope(|scope| {
        let workers: Vec<_> = instances
            .iter()
            .zip(&stores)
            .map(|(instance, store)| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let mut mine = Vec::new();
                    loop {
                        let got = store.claim_units(LONG_LEASE, 3, ClaimScope::All).unwrap();
                        if got.is_empty() && store.claim_units(LONG_LEASE, 3, ClaimScope::All).unwrap().is_empty() {
                            break;
                        }
                        assert!(got.iter().all(|r| r.owner.as_deref() == Some(*instance) && r.epoch == 1));
                        mine.extend(got.iter().map(|r| r.unit));
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<UnitId> = claims.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(all, units, "every unit claimed exactly once");
    println!("claims per instance: {:?}", claims.iter().map(Vec::len).collect::<Vec<_>>());
    for (instance, mine) in instances.iter().zip(&claims) {
        for unit in mine {
            assert_eq!(setup.unit(*unit).unwrap().unwrap().owner.as_deref(), Some(*instance));
        }
    }
}

/// After a's lease expires, b claims the unit at epoch + 1; every write a then tries for it is
/// refused with LeaseLost and writes nothing; a's renewal reports the unit lost and forgets it.
#[test]
fn an_expired_lease_is_taken_over_and_fences_the_old_owner() {
    let db = pg_db();
    let a = db.open_as("a");
    let b = db.open_as("b");
    let unit = UnitId::order(1);
    a.sync_unit(unit, "dns-txt-token", &domains(&["example.com"]), None).unwrap();
    assert_eq!(a.claim_units(LONG_LEASE, 10, ClaimScope::All).unwrap()[0].epoch, 1);
    let rec = a.record_publish_intent(unit, &[txt("_dnsauth.example.com", "v1")]).unwrap().remove(0);
    assert!(b.claim_units(LONG_LEASE, 10, ClaimScope::All).unwrap().is_empty(), "a's lease is live");
    // a pauses past its lease (the database's clock decides).
    db.exec("UPDATE units SET lease_expires_at = 0").unwrap();
    assert!(
        b.claim_units(LONG_LEASE, 10, ClaimScope::NotOthers).unwrap().is_empty(),
        "an instance that has just regained the store leaves the others' units to them"
    );
    let taken = b.claim_units(LONG_LEASE, 10, ClaimScope::All).unwrap();
    assert_eq!((taken[0].unit, taken[0].owner.as_deref(), taken[0].epoch), (unit, Some("b"), 2));

    let before = (a.unit(unit).unwrap(), a.records(unit).unwrap(), a.events(unit).unwrap());
    let lost = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::LeaseLost { unit: u, owner }) => {
            assert_eq!((u, owner.as_str()), (unit, "b"), "{what}");
        }
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    };
    lost(a.transition(unit, UnitState::TokenIssued, |r| r.token = Some("stale".into())).map(drop), "transition");
    let mut row = before.0.clone().unwrap();
    row.attempts = 99;
    lost(a.save_unit(&row), "save_unit");
    lost(a.record_publish_intent(unit, &[txt("_dnsauth.example.com", "v2")]).map(drop), "publish intent");
    lost(a.mark_published(rec.id, Some("p"), None), "mark_published");
    lost(a.record_remove_intent(&[rec.id]), "remove intent");
    lost(a.mark_removed(&[rec.id]), "mark_removed");
    lost(a.append_event(unit, "stale", "x"), "append_event");
    let err = a.append_event(unit, "stale", "x").unwrap_err();
    assert!(err.to_string().contains("another instance holds order 1"), "{err}");
    assert_eq!((a.unit(unit).unwrap(), a.records(unit).unwrap(), a.events(unit).unwrap()), before, "nothing written");

    assert_eq!(a.renew_leases(LONG_LEASE).unwrap(), vec![unit], "the renewal reports the lost unit");
    assert!(a.held_leases().is_empty());
    assert!(a.renew_leases(LONG_LEASE).unwrap().is_empty(), "forgotten");
    // b, the holder, writes.
    b.transition(unit, UnitState::TokenIssued, |r| r.token = Some("fresh".into())).unwrap();
    b.mark_published(rec.id, Some("p"), None).unwrap();
    assert_eq!(b.renew_leases(LONG_LEASE).unwrap(), vec![]);
}

/// A graceful shutdown releases the leases: another instance claims them at once; a restarted
/// instance with the same id reclaims its own units at once with a new epoch, and its old
/// handle's epoch no longer writes.
#[test]
fn released_and_restarted_instances_hand_over_at_once() {
    let db = pg_db();
    let a = db.open_as("a");
    let open = five_orders(&a);
    assert_eq!(a.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap().len(), open.len());
    a.release_leases().unwrap();
    let b = db.open_as("b");
    let taken = b.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap();
    assert_eq!(
        taken.iter().map(|r| (r.unit, r.epoch)).collect::<Vec<_>>(),
        open.iter().map(|u| (*u, 2)).collect::<Vec<_>>()
    );

    // b crashes (no release) and restarts under the same id.
    let stale_b = b;
    let b2 = db.open_as("b");
    let reclaimed = b2.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap();
    assert_eq!(reclaimed.len(), open.len());
    assert!(reclaimed.iter().all(|r| r.owner.as_deref() == Some("b") && r.epoch == 3));
    b2.transition(open[0], UnitState::TokenIssued, |_| {}).unwrap();
    let err = stale_b.transition(open[1], UnitState::TokenIssued, |_| {}).unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
}

/// PostgreSQL stopped: calls fail with Unavailable (promptly, figures printed), nothing panics;
/// once it is back, the same store works again without being reopened.
#[test]
fn postgres_outage_gives_unavailable_then_recovers() {
    let cluster = PgCluster::start_new();
    cluster.create_database("outage");
    let store = Store::open_postgres(&pg_settings(&cluster, "outage"), "a").unwrap();
    let unit = UnitId::order(1);
    store.sync_unit(unit, "dns-txt-token", &domains(&["example.com"]), None).unwrap();
    store.claim_units(LONG_LEASE, 10, ClaimScope::All).unwrap();

    cluster.stop();
    for round in 0..3 {
        let started = std::time::Instant::now();
        let read = store.units();
        let write = store.transition(unit, UnitState::TokenIssued, |_| {});
        println!("outage round {round}: a read and a write failed in {:?}", started.elapsed());
        assert!(matches!(read, Err(StoreError::Unavailable { .. })), "{read:?}");
        assert!(matches!(write, Err(StoreError::Unavailable { .. })), "{write:?}");
    }
    let err = store.units().unwrap_err();
    assert!(err.to_string().contains(&cluster.url("outage")), "names the database: {err}");
    assert!(!err.to_string().contains(PASSWORD), "{err}");

    cluster.start();
    // The store waits a moment between connection attempts: retry until it connects.
    let mut result = store.units();
    for _ in 0..50 {
        if result.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        result = store.units();
    }
    assert_eq!(result.unwrap().len(), 1, "reconnected");
    let row = store.transition(unit, UnitState::TokenIssued, |_| {}).unwrap();
    assert_eq!(row.epoch, 1, "the lease survived the outage");
    assert_eq!(store.renew_leases(LONG_LEASE).unwrap(), vec![]);
}

/// The store thread's group commit on PostgreSQL when the server goes away mid-run: every
/// caller gets an error, none an acknowledgement of a lost write, and the thread recovers.
#[test]
fn group_commits_survive_a_postgres_restart() {
    let cluster = PgCluster::start_new();
    cluster.create_database("groups");
    let store = std::sync::Arc::new(Store::open_postgres(&pg_settings(&cluster, "groups"), "a").unwrap());
    let unit = UnitId::order(1);
    store.sync_unit(unit, "dns-txt-token", &domains(&["example.com"]), None).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let thread = StoreThread::start(store.clone()).unwrap();
        thread.write(move |s| s.transition(unit, UnitState::Pending, |r| r.attempts = 1)).await.unwrap();
        cluster.stop();
        let failed = thread.write(move |s| s.transition(unit, UnitState::Pending, |r| r.attempts = 2)).await;
        assert!(matches!(failed, Err(StoreError::Unavailable { .. })), "{failed:?}");
        cluster.start();
        let mut attempts = None;
        for _ in 0..50 {
            match thread.write(move |s| s.transition(unit, UnitState::Pending, |r| r.attempts = 3)).await {
                Ok(row) => {
                    attempts = Some(row.attempts);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        assert_eq!(attempts, Some(3), "the store thread writes again after the restart");
    });
    assert_eq!(store.unit(unit).unwrap().unwrap().attempts, 3);
}

/// A PostgreSQL database migrated by a newer dcvd, or holding someone else's tables, is refused.
#[test]
fn postgres_refuses_newer_and_foreign_databases() {
    let newer = pg_db();
    drop(newer.open());
    newer.exec("UPDATE dcvd_schema SET version = 999").unwrap();
    let Db::Postgres(name) = &newer else { unreachable!() };
    let err = Store::open_postgres(&pg_settings(PgCluster::shared(), name), "a").unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 999, .. }), "{err:?}");
    assert!(err.to_string().contains("newer dcvd"), "{err}");

    let foreign = pg_db();
    foreign.exec("CREATE TABLE invoices (id int)").unwrap();
    let Db::Postgres(name) = &foreign else { unreachable!() };
    let err = Store::open_postgres(&pg_settings(PgCluster::shared(), name), "a").unwrap_err();
    assert!(err.to_string().contains("not a dcvd state database"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Moving from SQLite to PostgreSQL

/// `dcvd store migrate` copies every unit (leases cleared), record and event of a SQLite
/// state_dir into an empty PostgreSQL database exactly, keeps record ids (new ones continue after
/// them), prints the counts, and refuses a database that is not empty.
#[test]
fn migrate_copies_a_sqlite_store_into_an_empty_postgres_database() {
    let dir = tempfile::tempdir().unwrap();
    let (store, unit) = with_order(Store::open_sqlite(dir.path(), "old").unwrap(), 1);
    five_orders(&store);
    walk(&store, unit, UnitState::Published);
    let recs =
        store.record_publish_intent(unit, &[txt("_dnsauth.a.example", "v"), txt("_dnsauth.b.example", "v")]).unwrap();
    store.mark_published(recs[0].id, Some("p-1"), Some("c-1")).unwrap();
    store.record_remove_intent(&[recs[1].id]).unwrap();
    store.mark_removed(&[recs[1].id]).unwrap();
    store.append_event(UnitId::domain(77), "orphan", "an event of a unit not in the store").unwrap();
    store.claim_units(LONG_LEASE, 100, ClaimScope::All).unwrap();
    let units = store.units().unwrap();
    let records: Vec<_> = units.iter().flat_map(|u| store.records(u.unit).unwrap()).collect();
    let events: Vec<_> = units.iter().map(|u| store.events(u.unit).unwrap()).collect();
    let event_count = events.iter().map(Vec::len).sum::<usize>() + 1;
    drop(store);

    let target = pg_db();
    let Db::Postgres(name) = &target else { unreachable!() };
    let password_file = dir.path().join("pgpass");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let migrate = |state_dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_dcvd"))
            .args(["store", "migrate", "--config", "/nonexistent/dcvd.toml", "--to-url"])
            .arg(PgCluster::shared().url(name))
            .arg("--password-file")
            .arg(&password_file)
            .arg("--state-dir")
            .arg(state_dir)
            .output()
            .unwrap()
    };
    let out = migrate(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(&format!("copied {} units, {} records, {event_count} events", units.len(), records.len())),
        "{stdout}"
    );

    let moved = target.open_as("new");
    let expected: Vec<_> =
        units.iter().map(|u| dcvd::store::UnitRow { owner: None, lease_expires_at: None, ..u.clone() }).collect();
    assert_eq!(moved.units().unwrap(), expected, "units copied, leases cleared");
    let moved_records: Vec<_> = units.iter().flat_map(|u| moved.records(u.unit).unwrap()).collect();
    assert_eq!(moved_records, records);
    let moved_events: Vec<_> = units.iter().map(|u| moved.events(u.unit).unwrap()).collect();
    assert_eq!(moved_events, events);
    assert_eq!(moved.events(UnitId::domain(77)).unwrap().len(), 1);
    let fresh = moved.record_publish_intent(unit, &[txt("_dnsauth.c.example", "v")]).unwrap();
    assert!(fresh[0].id > recs[1].id, "new ids continue after the copied ones");

    let again = migrate(dir.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("needs an empty database"), "{again:?}");

    // `dcvd status` reads the PostgreSQL store `[store]` names.
    let config = dir.path().join("dcvd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[store]\nurl = \"{}\"\npassword_file = \"{}\"\n",
            dir.path().join("unused").display(),
            PgCluster::shared().url(name),
            password_file.display()
        ),
    )
    .unwrap();
    let status =
        Command::new(env!("CARGO_BIN_EXE_dcvd")).args(["status", "--json", "--config"]).arg(&config).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(units.len()), "{listed}");
}

// ---------------------------------------------------------------------------------------------
// TLS

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// With `sslmode=require` the store talks TLS and verifies the server against `ca_file`: the
/// right CA connects; another CA, or the system's roots, is refused before any query.
#[test]
fn postgres_tls_verifies_the_server_against_ca_file() {
    let cluster = PgCluster::start_new();
    cluster.create_database("tls");
    let dir = cluster.log_path().parent().unwrap().to_path_buf();
    let ca = |name: &str| {
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    };
    ca("test-ca");
    ca("other-ca");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "test-ca.pem",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // The server (run as `nobody` when the tests run as root) must own its key, mode 0600.
    std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(cluster.log_path()).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    for file in ["server.key", "server.pem"] {
        let out = Command::new("chown").arg(owner.to_string()).arg(dir.join(file)).output().unwrap();
        assert!(out.status.success(), "chown {file}: {out:?}");
    }
    for setting in [
        "ALTER SYSTEM SET ssl_cert_file = 'server.pem'"
            .replace("server.pem", &dir.join("server.pem").to_string_lossy()),
        "ALTER SYSTEM SET ssl_key_file = 'server.key'".replace("server.key", &dir.join("server.key").to_string_lossy()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
    ] {
        cluster.psql("postgres", &setting);
    }
    cluster.psql("postgres", "SELECT pg_reload_conf()");
    let url = format!("{}?sslmode=require", cluster.url("tls"));
    let open = |ca_file: Option<&str>| {
        let settings = PgSettings::new(&url, Some(PASSWORD.into()), ca_file.map(|f| dir.join(f))).unwrap();
        Store::open_postgres(&settings, "a")
    };
    // The reload is asynchronous: wait until the server speaks TLS.
    let mut store = open(Some("test-ca.pem"));
    for _ in 0..50 {
        if store.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        store = open(Some("test-ca.pem"));
    }
    let store = store.expect("TLS with the right CA");
    store.sync_unit(UnitId::order(1), "dns-txt-token", &domains(&["example.com"]), None).unwrap();
    assert_eq!(store.units().unwrap().len(), 1);

    for ca_file in [Some("other-ca.pem"), None] {
        let err = open(ca_file).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("certificate"), "{ca_file:?}: {err}");
    }
}
