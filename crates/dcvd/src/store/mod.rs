//! The daemon's crash-safe state store: units of work, their states and tokens, every DNS record
//! dcvd published, and which instance holds which unit (leases).
//!
//! Its one job is never to lose track of a published record: the orchestrator writes an intent
//! ([`Store::record_publish_intent`], [`Store::record_remove_intent`]) *before* calling a DNS
//! provider and confirms it afterwards, so after a crash at any point the records in
//! [`RecordStatus::Publishing`] / [`RecordStatus::Removing`] say which calls to repeat. Every
//! commit is durable before the call returns.
//!
//! It does not decide anything: the state machine, retries and provider calls belong to the
//! orchestrator; the store only records them atomically.
//!
//! Two backends behind the one [`Store`] type, chosen at open:
//! - SQLite (module `sqlite`, the default): one file in `state_dir` (WAL, `synchronous=FULL`),
//!   locked by one process ([`Store::open`]); [`Store::open_read_only`] serves `dcvd status`.
//! - PostgreSQL (module `pg`, `[store] url`): several dcvd instances share one database
//!   ([`Store::open_postgres`]); a lost connection is retried on the next call, and calls during
//!   an outage fail promptly with [`StoreError::Unavailable`].
//!
//! Both keep their schema as ordered migration steps with the version recorded in the database,
//! and refuse a database written by a newer dcvd ([`StoreError::TooNew`]).
//!
//! **Leases and fencing.** Each store writes as one instance ([`Store::instance`]). An instance
//! claims units ([`Store::claim_units`]: owner, epoch + 1, expiry), renews its leases while it
//! lives ([`Store::renew_leases`]) and releases them on shutdown ([`Store::release_leases`]); the
//! store remembers the epoch of each unit it holds. Every write that concerns a unit succeeds only
//! when, inside its transaction, the unit is unowned or owned by this instance at the held epoch;
//! otherwise it writes nothing and fails with [`StoreError::LeaseLost`]: an instance that was
//! paused past its lease cannot undo the work of the one that took over. On SQLite one process
//! owns the file, so it always gets every unit.
//!
//! [`Store`] is synchronous and serializes calls on one connection; each write method is one
//! savepoint, so it is atomic on its own and nests in a larger transaction. The daemon never calls
//! it from a tokio worker: [`StoreThread`] (module `thread`) owns it on a thread of its own, runs
//! the engine's calls there, and group-commits: the writes of every unit that queued while the
//! previous commit was being made durable share one transaction, and each caller continues only
//! once that commit is durable. A read takes microseconds (SQLite) or a round trip (PostgreSQL);
//! `examples/store_bench.rs` measures commits.

// The column lists as macros so `concat!` can build each statement as one `&'static str`, which
// both backends key their statement caches on. Defined before the backend modules so they see them.
macro_rules! unit_cols {
    () => {
        "kind, id, state, method, domains, provider, token, token_expires_at, verification_value, \
         renewals, attempts, next_action_at, last_error, in_config, state_since, created_at, \
         updated_at, negative_ttl_ms, method_switched, transient_failures, source, owner, epoch, \
         lease_expires_at"
    };
}

macro_rules! record_cols {
    () => {
        "id, unit_kind, unit_id, provider, zone, name, rtype, value, ttl, provider_id, change_id, \
         status, created_at, updated_at"
    };
}

mod error;
mod pg;
mod schema;
mod sqlite;
mod thread;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::StoreError;
pub use pg::PgSettings;
pub use thread::{GroupStats, StoreThread};
pub use types::{
    NewRecord, ParseError, RecordRow, RecordStatus, StoreInfo, UnitId, UnitKind, UnitRow, UnitSource, UnitSpec,
    UnitState,
};

/// File name of the SQLite database inside `state_dir`.
pub const DB_FILE: &str = "state.sqlite3";
/// File name of the lock file inside `state_dir`.
pub const LOCK_FILE: &str = "dcvd.lock";
/// How many events [`Store::append_event`] keeps per unit (older ones are dropped).
pub const EVENTS_PER_UNIT: u32 = 200;
/// Longest event detail kept, in bytes (provider error bodies can be large).
pub const EVENT_DETAIL_MAX: usize = 2000;

/// The schema version this build reads and writes on SQLite (`PRAGMA user_version`).
pub fn schema_version() -> u32 {
    schema::current_version()
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the store except
/// `token_expires_at` (seconds).
pub fn now_millis() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// This machine's host name, the default instance id (`[store] instance`); `"dcvd"` when the
/// kernel does not say.
pub fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "dcvd".to_owned())
}

/// The state store. `Send + Sync`: share it in an `Arc`; calls serialize on one connection.
pub struct Store {
    backend: Backend,
    instance: String,
    leases: Mutex<Leases>,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<pg::PgStore>),
}

/// The units this store holds a lease on, with the epoch it claimed them at.
#[derive(Default)]
struct Leases {
    held: HashMap<UnitId, i64>,
    /// `held` as it was when the open group transaction began: restored when it fails to commit,
    /// since the claims and releases made inside it were rolled back.
    before_group: Option<HashMap<UnitId, i64>>,
}

/// Which units [`Store::claim_units`] may take besides those nobody holds and this instance's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// Also other instances' units whose lease expired: take over a dead instance's work.
    All,
    /// Not other instances' units. After the store was unreachable every lease has expired,
    /// though their holders live and keep outcomes they could not record yet; an instance that
    /// has just (re)gained the store gives them one lease TTL to renew first.
    NotOthers,
}

/// Who may write a unit, as the backends check it inside each write's transaction.
pub(crate) struct Fence<'a> {
    instance: &'a str,
    held: &'a HashMap<UnitId, i64>,
}

impl Fence<'_> {
    /// Ok when the stored lease (`owner`, `epoch`) lets this instance write `unit`: nobody holds
    /// it, or this instance does at the epoch it claimed.
    pub(crate) fn check(&self, unit: UnitId, owner: Option<&str>, epoch: i64) -> Result<(), StoreError> {
        match owner {
            None => Ok(()),
            Some(owner) if owner == self.instance && self.held.get(&unit) == Some(&epoch) => Ok(()),
            Some(owner) => Err(StoreError::LeaseLost { unit, owner: owner.to_owned() }),
        }
    }

    pub(crate) fn instance(&self) -> &str {
        self.instance
    }

    /// The held leases as `(unit, epoch)`, ordered by unit.
    pub(crate) fn held(&self) -> Vec<(UnitId, i64)> {
        let mut held: Vec<_> = self.held.iter().map(|(unit, epoch)| (*unit, *epoch)).collect();
        held.sort();
        held
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("Store");
        match &self.backend {
            Backend::Sqlite(b) => s.field("path", &b.path()).field("read_only", &b.read_only()),
            Backend::Postgres(b) => s.field("postgres", &b.location()),
        };
        s.field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// Runs the same call on whichever backend the store has.
macro_rules! on_backend {
    ($self:expr, $b:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($b) => $call,
            Backend::Postgres($b) => $call,
        }
    };
}

impl Store {
    /// Opens (creating it if needed) the SQLite store in `state_dir` for the daemon, writing as
    /// [`default_instance`]: creates the directory (mode 0700), takes the exclusive lock on
    /// `state_dir/dcvd.lock` (held until the store is dropped), opens `state_dir/state.sqlite3` in
    /// WAL mode with `synchronous=FULL` and foreign keys on, and runs pending migrations.
    ///
    /// Fails with [`StoreError::Locked`] when another process holds the lock,
    /// [`StoreError::Corrupt`] when the file is not a dcvd database, and
    /// [`StoreError::TooNew`] when a newer dcvd wrote it.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        Self::open_sqlite(state_dir, &default_instance())
    }

    /// [`open`](Self::open), writing as `instance`.
    pub fn open_sqlite(state_dir: &Path, instance: &str) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Sqlite(sqlite::SqliteStore::open(state_dir)?), instance))
    }

    /// Opens the SQLite store read-only without taking the lock, for `dcvd status` while the
    /// daemon runs. Fails with [`StoreError::Missing`] when there is no database yet and
    /// [`StoreError::TooOld`] / [`StoreError::TooNew`] when its schema is not this build's.
    pub fn open_read_only(state_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Sqlite(sqlite::SqliteStore::open_read_only(state_dir)?), &default_instance()))
    }

    /// Opens the PostgreSQL store of `settings` as `instance` and runs pending migrations (under
    /// an advisory lock, so instances starting together migrate once). Fails with
    /// [`StoreError::Unavailable`] when the server cannot be reached (within about 3 s),
    /// [`StoreError::Corrupt`] when the database holds tables that are not dcvd's, and
    /// [`StoreError::TooNew`] when a newer dcvd migrated it. Safe to call inside a tokio runtime.
    pub fn open_postgres(settings: &PgSettings, instance: &str) -> Result<Self, StoreError> {
        Ok(Self::with(Backend::Postgres(Box::new(pg::PgStore::open(settings)?)), instance))
    }

    fn with(backend: Backend, instance: &str) -> Self {
        Self { backend, instance: instance.to_owned(), leases: Mutex::default() }
    }

    /// This store's instance id (the lease owner it writes as).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Path of the SQLite database; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(b) => Some(b.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// The state directory of a SQLite store; `None` on PostgreSQL.
    pub fn state_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(b) => Some(b.state_dir()),
            Backend::Postgres(_) => None,
        }
    }

    /// Where the data lives, for messages: the SQLite file, or the PostgreSQL URL without its
    /// password.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Sqlite(b) => b.path().display().to_string(),
            Backend::Postgres(b) => b.location().to_owned(),
        }
    }

    /// The connection's settings as SQLite reports them. Fails with [`StoreError::Invalid`] on
    /// PostgreSQL (see [`location`](Self::location)).
    pub fn info(&self) -> Result<StoreInfo, StoreError> {
        match &self.backend {
            Backend::Sqlite(b) => b.info(),
            Backend::Postgres(b) => {
                Err(StoreError::Invalid { message: format!("{} is PostgreSQL: no SQLite settings", b.location()) })
            }
        }
    }

    /// Makes the store agree with the config for one unit: inserts it as [`UnitState::Pending`]
    /// when new; otherwise updates `method`, `domains` and `provider` when they changed. Either
    /// way `in_config` becomes true. The state is never changed here (a unit in a terminal state
    /// stays there: reviving it is the orchestrator's decision), nor the lease.
    pub fn sync_unit(
        &self,
        unit: UnitId,
        method: &str,
        domains: &[String],
        provider: Option<&str>,
    ) -> Result<UnitRow, StoreError> {
        let mut rows = self.sync_units(&[UnitSpec { unit, method, domains, provider, source: UnitSource::Config }])?;
        Ok(rows.remove(0))
    }

    /// [`sync_unit`](Self::sync_unit) for many units in one transaction (one commit): a daemon
    /// start with 10,000 new units costs one commit instead of 10,000. Returns the rows in the
    /// order of `specs`. Not fenced; safe when several instances sync the same config at once.
    pub fn sync_units(&self, specs: &[UnitSpec<'_>]) -> Result<Vec<UnitRow>, StoreError> {
        on_backend!(self, b => b.sync_units(specs))
    }

    /// Sets `in_config = false` on every unit not in `present` (terminal ones too, so `dcvd
    /// status` says which units the running configuration still lists) and returns the
    /// non-terminal ones (also those already marked by an earlier call, so a restarted daemon
    /// learns again which units still need cleaning up), ordered by unit. Not fenced.
    pub fn mark_missing_from_config(&self, present: &[UnitId]) -> Result<Vec<UnitId>, StoreError> {
        on_backend!(self, b => b.mark_missing_from_config(present))
    }

    /// Every unit, ordered by unit (orders first, then domains, by id).
    pub fn units(&self) -> Result<Vec<UnitRow>, StoreError> {
        let mut units = on_backend!(self, b => b.units())?;
        units.sort_by_key(|row| row.unit);
        Ok(units)
    }

    /// One unit, or `None` when the store does not know it.
    pub fn unit(&self, unit: UnitId) -> Result<Option<UnitRow>, StoreError> {
        on_backend!(self, b => b.unit(unit))
    }

    /// Writes every mutable field of `row` (all but `unit`, `created_at` and the lease fields)
    /// and sets `updated_at` to now. `state_since` is maintained by the store: it becomes now when
    /// `state` differs from the stored state and is kept otherwise. A terminal state releases the
    /// lease. Fails with [`StoreError::UnknownUnit`] when the unit is not in the store and
    /// [`StoreError::LeaseLost`] when another instance holds it.
    pub fn save_unit(&self, row: &UnitRow) -> Result<(), StoreError> {
        let mut leases = self.leases();
        on_backend!(self, b => b.save_unit(&self.fence(&leases), row))?;
        if row.state.is_terminal() {
            leases.held.remove(&row.unit);
        }
        Ok(())
    }

    /// In one transaction: reads the unit, applies `edit`, sets its state to `to` (and
    /// `state_since` to now when the state changes), writes it and returns the new row. `edit`
    /// may change any mutable field; changes it makes to `unit`, `state`, `state_since`,
    /// `created_at`, `updated_at` or the lease fields are overridden. A terminal `to` releases
    /// the lease (owner cleared, epoch kept). `edit` runs with the connection held: it must not
    /// call the store (that would deadlock). Fails with [`StoreError::UnknownUnit`] when the unit
    /// is not in the store and [`StoreError::LeaseLost`] when another instance holds it; then
    /// nothing is written (likewise when `edit` panics).
    pub fn transition(
        &self,
        unit: UnitId,
        to: UnitState,
        edit: impl FnOnce(&mut UnitRow),
    ) -> Result<UnitRow, StoreError> {
        let mut leases = self.leases();
        let row = on_backend!(self, b => b.transition(&self.fence(&leases), unit, to, edit))?;
        if to.is_terminal() {
            leases.held.remove(&unit);
        }
        Ok(row)
    }

    /// The unit's records in every status, oldest first.
    pub fn records(&self, unit: UnitId) -> Result<Vec<RecordRow>, StoreError> {
        on_backend!(self, b => b.records(unit))
    }

    /// Every record not yet [`RecordStatus::Removed`], of every unit, oldest first: what recovery
    /// must republish or remove and what `dcvd cleanup` removes.
    pub fn live_records(&self) -> Result<Vec<RecordRow>, StoreError> {
        on_backend!(self, b => b.live_records())
    }

    /// Writes the intent to publish `recs` for `unit`, in one transaction, before the provider is
    /// called; returns the rows in the order of `recs`. Idempotent: a record with the same
    /// (unit, provider, name, rtype, value) that is [`RecordStatus::Publishing`] or
    /// [`RecordStatus::Published`] is returned as is; one that is [`RecordStatus::Removing`] or
    /// [`RecordStatus::Removed`] is revived to `Publishing` (with the new zone and ttl, and its
    /// provider ids cleared), since the latest intent is to have it published. Fenced.
    pub fn record_publish_intent(&self, unit: UnitId, recs: &[NewRecord]) -> Result<Vec<RecordRow>, StoreError> {
        let leases = self.leases();
        on_backend!(self, b => b.record_publish_intent(&self.fence(&leases), unit, recs))
    }

    /// Confirms that the provider accepted the record. `None` ids keep what is stored. Fails with
    /// [`StoreError::Invalid`] when a remove intent was written since (write a new publish intent
    /// first), [`StoreError::UnknownRecord`] for an unknown id and [`StoreError::LeaseLost`] when
    /// another instance holds the record's unit.
    pub fn mark_published(
        &self,
        record_id: i64,
        provider_id: Option<&str>,
        change_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.mark_all_published(&[PublishConfirmation { record_id, provider_id, change_id }])
    }

    /// [`mark_published`](Self::mark_published) for several records in one transaction (one
    /// commit for a whole publish step); writes nothing when one of them fails.
    pub fn mark_all_published(&self, confirmations: &[PublishConfirmation<'_>]) -> Result<(), StoreError> {
        let leases = self.leases();
        on_backend!(self, b => b.mark_all_published(&self.fence(&leases), confirmations))
    }

    /// Writes the intent to remove the records, in one transaction, before the provider is
    /// called. Records already `Removing` or `Removed` are left as they are. Fails (writing
    /// nothing) with [`StoreError::UnknownRecord`] for an unknown id and
    /// [`StoreError::LeaseLost`] when another instance holds a record's unit.
    pub fn record_remove_intent(&self, record_ids: &[i64]) -> Result<(), StoreError> {
        let leases = self.leases();
        on_backend!(self, b => b.set_record_status(&self.fence(&leases), record_ids, RecordStatus::Removing))
    }

    /// Confirms that the provider removed the records (from any status: a publish that failed
    /// for good left nothing behind), in one transaction. Fails (writing nothing) with
    /// [`StoreError::UnknownRecord`] for an unknown id and [`StoreError::LeaseLost`] when another
    /// instance holds a record's unit.
    pub fn mark_removed(&self, record_ids: &[i64]) -> Result<(), StoreError> {
        let leases = self.leases();
        on_backend!(self, b => b.set_record_status(&self.fence(&leases), record_ids, RecordStatus::Removed))
    }

    /// How many units are in each state; every state is present (0 when none), so metrics
    /// gauges drop to zero.
    pub fn counts_by_state(&self) -> Result<BTreeMap<UnitState, u64>, StoreError> {
        let mut counts: BTreeMap<UnitState, u64> = UnitState::ALL.into_iter().map(|state| (state, 0)).collect();
        for (state, count) in on_backend!(self, b => b.counts_by_state())? {
            counts.insert(state, count);
        }
        Ok(counts)
    }

    /// Appends to the unit's audit log (kept to the last [`EVENTS_PER_UNIT`] events; `detail` cut
    /// to [`EVENT_DETAIL_MAX`] bytes). The unit need not be in the store; when it is, the write is
    /// fenced.
    pub fn append_event(&self, unit: UnitId, event: &str, detail: &str) -> Result<(), StoreError> {
        let leases = self.leases();
        on_backend!(self, b => b.append_event(&self.fence(&leases), unit, event, detail))
    }

    /// The unit's audit log, oldest first: `(unix millis, event, detail)`.
    pub fn events(&self, unit: UnitId) -> Result<Vec<(i64, String, String)>, StoreError> {
        on_backend!(self, b => b.events(unit))
    }

    /// Claims for this instance up to `limit` units that have work left and no live lease:
    /// state not terminal (`UnitState::is_terminal`), and (owner IS NULL, or owner = this
    /// instance, or, with [`ClaimScope::All`], lease_expires_at <= now). Each claim sets owner = me, epoch = epoch + 1,
    /// lease_expires_at = now + ttl. Rows another transaction holds are skipped (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`), so two instances claiming at once never both get a unit.
    /// Returns the claimed rows (with the new epoch). Units this instance already holds with a
    /// live lease are not returned again.
    ///
    /// "now" is the database's clock on PostgreSQL (one clock for every instance), the local
    /// clock on SQLite.
    pub fn claim_units(&self, ttl: Duration, limit: usize, scope: ClaimScope) -> Result<Vec<UnitRow>, StoreError> {
        let mut leases = self.leases();
        let ttl_ms = duration_ms(ttl);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // On SQLite one process owns the file: whoever else is named in it is not running.
        let others = scope == ClaimScope::All || matches!(self.backend, Backend::Sqlite(_));
        let claimed = on_backend!(self, b => b.claim_units(&self.fence(&leases), ttl_ms, limit, others))?;
        for row in &claimed {
            leases.held.insert(row.unit, row.epoch);
        }
        Ok(claimed)
    }

    /// Extends every lease this instance holds (owner = me AND epoch = the held epoch) to
    /// now + ttl, in one statement; returns the units it held but no longer holds (another
    /// instance took them over), and forgets them.
    pub fn renew_leases(&self, ttl: Duration) -> Result<Vec<UnitId>, StoreError> {
        let mut leases = self.leases();
        if leases.held.is_empty() {
            return Ok(Vec::new());
        }
        let kept = on_backend!(self, b => b.renew_leases(&self.fence(&leases), duration_ms(ttl)))?;
        let mut lost: Vec<UnitId> = leases.held.keys().filter(|unit| !kept.contains(unit)).copied().collect();
        lost.sort();
        for unit in &lost {
            leases.held.remove(unit);
        }
        Ok(lost)
    }

    /// Releases every lease this instance holds (graceful shutdown: others take over at once).
    pub fn release_leases(&self) -> Result<(), StoreError> {
        let mut leases = self.leases();
        if leases.held.is_empty() {
            return Ok(());
        }
        on_backend!(self, b => b.release_leases(&self.fence(&leases)))?;
        leases.held.clear();
        Ok(())
    }

    /// The units this store holds a lease on, with their epochs, ordered by unit.
    pub fn held_leases(&self) -> Vec<(UnitId, i64)> {
        self.fence(&self.leases()).held()
    }

    /// Opens a group transaction: the write methods called until
    /// [`commit_group`](Self::commit_group) become savepoints inside it and share its one commit.
    /// Only [`StoreThread`] groups writes; it calls nothing else on this store meanwhile.
    pub(crate) fn begin_group(&self) -> Result<(), StoreError> {
        let mut leases = self.leases();
        on_backend!(self, b => b.begin_group())?;
        leases.before_group = Some(leases.held.clone());
        Ok(())
    }

    /// Commits the group transaction; on failure it is rolled back whole (and so are the leases
    /// claimed or released inside it).
    pub(crate) fn commit_group(&self) -> Result<(), StoreError> {
        let mut leases = self.leases();
        let before = leases.before_group.take();
        let result = on_backend!(self, b => b.commit_group());
        if let (Err(_), Some(before)) = (&result, before) {
            leases.held = before;
        }
        result
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        // The map is only changed after a backend call succeeded: a panic left it consistent.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fence<'a>(&'a self, leases: &'a Leases) -> Fence<'a> {
        Fence { instance: &self.instance, held: &leases.held }
    }
}

/// Moves [`Store::open`]'s SQLite data into an empty PostgreSQL database: every unit (with its
/// lease columns cleared), record and event, in one transaction. Returns the counts copied.
/// `state_dir`'s lock is held meanwhile, so the daemon must be stopped; a PostgreSQL database
/// that already holds units, records or events is refused.
pub fn migrate_sqlite_to_postgres(state_dir: &Path, settings: &PgSettings) -> Result<MigrationCounts, StoreError> {
    let source = sqlite::SqliteStore::open(state_dir)?;
    let target = pg::PgStore::open(settings)?;
    let units = source.units()?;
    let records = source.all_records()?;
    let events = source.all_events()?;
    target.import(&units, &records, &events)?;
    Ok(MigrationCounts { units: units.len(), records: records.len(), events: events.len() })
}

/// What [`migrate_sqlite_to_postgres`] copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationCounts {
    /// Units copied.
    pub units: usize,
    /// Records copied (every status).
    pub records: usize,
    /// Audit events copied.
    pub events: usize,
}

/// One audit event as both backends store it, for [`migrate_sqlite_to_postgres`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventRow {
    seq: i64,
    unit: UnitId,
    at: i64,
    event: String,
    detail: String,
}

/// The provider's answer for one published record: what [`Store::mark_all_published`] stores.
#[derive(Debug, Clone, Copy)]
pub struct PublishConfirmation<'a> {
    /// The record row's id.
    pub record_id: i64,
    /// The provider's id of the record, when it has one (`None` keeps what is stored).
    pub provider_id: Option<&'a str>,
    /// The provider's change id to wait for (Route53, Cloud DNS), if any.
    pub change_id: Option<&'a str>,
}

// Rules both backends apply, so they cannot drift apart.

/// The row [`Store::transition`] writes: `old` edited, with the fields the store maintains
/// restored. Fails when the state machine has no edge from `old.state` to `to`.
pub(crate) fn transitioned(
    old: &UnitRow,
    to: UnitState,
    now: i64,
    edit: impl FnOnce(&mut UnitRow),
) -> Result<UnitRow, StoreError> {
    if !crate::machine::allowed(old.state, to) {
        return Err(StoreError::IllegalTransition { unit: old.unit, from: old.state, to });
    }
    let mut row = old.clone();
    edit(&mut row);
    row.unit = old.unit;
    row.state = to;
    row.state_since = if to == old.state { old.state_since } else { now };
    row.created_at = old.created_at;
    row.updated_at = now;
    row.owner.clone_from(&old.owner);
    row.epoch = old.epoch;
    row.lease_expires_at = old.lease_expires_at;
    if to.is_terminal() {
        row.owner = None;
        row.lease_expires_at = None;
    }
    Ok(row)
}

/// What [`Store::record_publish_intent`] does with an existing record of the same identity.
pub(crate) fn keeps_publish_intent(existing: &RecordRow) -> bool {
    matches!(existing.status, RecordStatus::Publishing | RecordStatus::Published)
}

/// Refuses to confirm a publish after a remove intent.
pub(crate) fn check_publishable(record_id: i64, status: Option<RecordStatus>) -> Result<(), StoreError> {
    match status {
        None => Err(StoreError::UnknownRecord { id: record_id }),
        Some(status @ (RecordStatus::Removing | RecordStatus::Removed)) => Err(StoreError::Invalid {
            message: format!(
                "record {record_id} is {status}: a publish cannot be confirmed after a remove intent; \
                 write a new publish intent first"
            ),
        }),
        Some(RecordStatus::Publishing | RecordStatus::Published) => Ok(()),
    }
}

/// Whether [`Store::record_remove_intent`] / [`Store::mark_removed`] change a record in `status`.
pub(crate) fn status_moves(status: RecordStatus, to: RecordStatus) -> bool {
    match to {
        RecordStatus::Removing => matches!(status, RecordStatus::Publishing | RecordStatus::Published),
        _ => status != to,
    }
}

/// Whether [`Store::sync_units`] must update a stored unit for `spec`.
pub(crate) fn sync_changes(row: &UnitRow, spec: &UnitSpec<'_>) -> bool {
    row.method != spec.method
        || row.domains != spec.domains
        || row.provider.as_deref() != spec.provider
        || !row.in_config
        || row.source != spec.source
}

/// Applies `spec` to `row` (the fields config sync owns).
pub(crate) fn apply_spec(row: &mut UnitRow, spec: &UnitSpec<'_>, now: i64) {
    row.method = spec.method.to_owned();
    row.domains = spec.domains.to_vec();
    row.provider = spec.provider.map(str::to_owned);
    row.in_config = true;
    row.source = spec.source;
    row.updated_at = now;
}

pub(crate) fn sql_id(unit: UnitId) -> Result<i64, StoreError> {
    i64::try_from(unit.id).map_err(|_| StoreError::Invalid {
        message: format!("{unit}: id too large for the store (at most {})", i64::MAX),
    })
}

pub(crate) fn domains_json(domains: &[String]) -> String {
    serde_json::to_string(domains).expect("a list of strings always serializes")
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names round-trip and are the documented lowercase snake case.
    #[test]
    fn state_names_round_trip() {
        for state in UnitState::ALL {
            assert_eq!(state.as_str().parse::<UnitState>().unwrap(), state);
        }
        assert_eq!(UnitState::TokenIssued.as_str(), "token_issued");
        assert_eq!(UnitState::CleanedUp.to_string(), "cleaned_up");
        let err = "tokenissued".parse::<UnitState>().unwrap_err();
        assert!(err.to_string().contains("token_issued"), "{err}");
        for status in [RecordStatus::Publishing, RecordStatus::Published, RecordStatus::Removing, RecordStatus::Removed]
        {
            assert_eq!(status.as_str().parse::<RecordStatus>().unwrap(), status);
        }
        assert_eq!("domain".parse::<UnitKind>().unwrap(), UnitKind::Domain);
        assert!("Order".parse::<UnitKind>().is_err());
    }

    /// Exactly the four documented states are terminal; Valid still has records to remove.
    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = UnitState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [UnitState::CleanedUp, UnitState::Expired, UnitState::Failed, UnitState::Removed]);
    }

    #[test]
    fn unit_id_display() {
        assert_eq!(UnitId::order(123).to_string(), "order 123");
        assert_eq!(UnitId::domain(45).to_string(), "domain 45");
    }

    /// Truncation never splits a UTF-8 character.
    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }

    /// The store can be shared between threads.
    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }

    /// The fence lets a write through only for an unowned unit or one held at the stored epoch.
    #[test]
    fn fence_rules() {
        let unit = UnitId::order(1);
        let held = HashMap::from([(unit, 4)]);
        let fence = Fence { instance: "a", held: &held };
        fence.check(unit, None, 9).unwrap();
        fence.check(unit, Some("a"), 4).unwrap();
        assert!(matches!(fence.check(unit, Some("a"), 5), Err(StoreError::LeaseLost { .. })));
        let err = fence.check(unit, Some("b"), 4).unwrap_err();
        assert!(err.to_string().contains("instance \"b\" holds"), "{err}");
        assert!(fence.check(UnitId::order(2), Some("a"), 1).is_err(), "a unit not held is not ours");
    }
}
