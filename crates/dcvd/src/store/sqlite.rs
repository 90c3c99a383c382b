//! The daemon's crash-safe state store: units of work, their states and tokens, and every DNS
//! record dcvd published, in SQLite (WAL, `synchronous=FULL`) under `state_dir`.
//!
//! Its one job is never to lose track of a published record: the orchestrator writes an intent
//! ([`Store::record_publish_intent`], [`Store::record_remove_intent`]) *before* calling a DNS
//! provider and confirms it afterwards, so after a crash at any point the records in
//! [`RecordStatus::Publishing`] / [`RecordStatus::Removing`] say which calls to repeat. Every
//! commit is fsynced before the call returns.
//!
//! It does not decide anything: the state machine, retries and provider calls belong to the
//! orchestrator; the store only records them atomically.
//!
//! [`Store`] is synchronous and serializes calls on one connection; each write method is one
//! SQLite savepoint, so it is atomic on its own and nests in a larger transaction. The daemon
//! never calls it from a tokio worker: [`StoreThread`] (module `thread`) owns it on a thread of
//! its own, runs the engine's calls there, and group-commits: the writes of every unit that
//! queued while the previous commit was being fsynced share one `BEGIN IMMEDIATE ... COMMIT`,
//! and each caller continues only once that commit is durable. A read takes microseconds; a
//! commit waits for one fsync (about 0.1 ms on a quiet SSD, several ms on a busy disk;
//! `examples/store_bench.rs` measures it).
//!
//! One process owns a `state_dir` at a time: [`Store::open`] takes an exclusive lock on
//! `state_dir/dcvd.lock` for the store's lifetime. [`Store::open_read_only`] (for `dcvd status`)
//! takes no lock and cannot write.

mod error;
mod schema;
mod thread;
mod types;

use std::collections::{BTreeMap, HashSet};
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

pub use error::StoreError;
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
/// How long a writer waits for another connection's lock (a `dcvd status` reader) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build reads and writes (`PRAGMA user_version`).
pub fn schema_version() -> u32 {
    schema::current_version()
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the store except
/// `token_expires_at` (seconds).
pub fn now_millis() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The state store. `Send + Sync`: share it in an `Arc`; calls serialize on one connection.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    state_dir: PathBuf,
    read_only: bool,
    // Declared last so it is dropped (unlocked) only after the connection has closed.
    _lock: Option<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("read_only", &self.read_only).finish_non_exhaustive()
    }
}

// The column lists as macros so `concat!` can build each statement as one `&'static str`, which
// `prepare_cached` keys its cache on.
macro_rules! unit_cols {
    () => {
        "kind, id, state, method, domains, provider, token, token_expires_at, verification_value, \
         renewals, attempts, next_action_at, last_error, in_config, state_since, created_at, \
         updated_at, negative_ttl_ms, method_switched, transient_failures, source"
    };
}

macro_rules! record_cols {
    () => {
        "id, unit_kind, unit_id, provider, zone, name, rtype, value, ttl, provider_id, change_id, \
         status, created_at, updated_at"
    };
}

impl Store {
    /// Opens (creating it if needed) the store in `state_dir` for the daemon: creates the
    /// directory (mode 0700), takes the exclusive lock on `state_dir/dcvd.lock` (held until the
    /// store is dropped), opens `state_dir/state.sqlite3` in WAL mode with `synchronous=FULL` and
    /// foreign keys on, and runs pending migrations.
    ///
    /// Fails with [`StoreError::Locked`] when another process holds the lock,
    /// [`StoreError::Corrupt`] when the file is not a dcvd database, and
    /// [`StoreError::TooNew`] when a newer dcvd wrote it.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Io { path: state_dir.to_owned(), source })?;

        let lock_path = state_dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| StoreError::Io { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { dir: state_dir.to_owned(), lock: lock_path });
            }
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::Io { path: lock_path, source });
            }
        }

        let path = state_dir.join(DB_FILE);
        // Create the file ourselves so it (and the -wal/-shm files SQLite derives from it) is
        // private to the service user whatever the umask.
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        let mut conn = Connection::open(&path).map_err(|e| open_error(e, &path))?;
        configure_writer(&mut conn, &path).map_err(|e| store_to_corrupt(e, &path))?;

        Ok(Self { conn: Mutex::new(conn), path, state_dir: state_dir.to_owned(), read_only: false, _lock: Some(lock) })
    }

    /// Opens the store read-only without taking the lock, for `dcvd status` while the daemon
    /// runs. Fails with [`StoreError::Missing`] when there is no database yet and
    /// [`StoreError::TooOld`] / [`StoreError::TooNew`] when its schema is not this build's.
    pub fn open_read_only(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path });
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| open_error(e, &path))?;
        let configure = |conn: &Connection| -> Result<(), StoreError> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.set_prepared_statement_cache_capacity(64);
            schema::check_identity(conn, &path)?;
            let found = schema::user_version(conn)?;
            let supported = schema::current_version();
            if found > supported {
                return Err(StoreError::TooNew { found, supported, path: path.clone() });
            }
            if found < supported {
                return Err(StoreError::TooOld { found, supported, path: path.clone() });
            }
            Ok(())
        };
        configure(&conn).map_err(|e| store_to_corrupt(e, &path))?;
        Ok(Self { conn: Mutex::new(conn), path, state_dir: state_dir.to_owned(), read_only: true, _lock: None })
    }

    /// Path of the SQLite database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The connection's settings as SQLite reports them.
    pub fn info(&self) -> Result<StoreInfo, StoreError> {
        let conn = self.conn();
        Ok(StoreInfo {
            path: self.path.clone(),
            schema_version: schema::user_version(&conn)?,
            journal_mode: conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
            synchronous: conn.pragma_query_value(None, "synchronous", |r| r.get(0))?,
            foreign_keys: conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?,
            read_only: self.read_only,
        })
    }

    /// Makes the store agree with the config for one unit: inserts it as [`UnitState::Pending`]
    /// when new; otherwise updates `method`, `domains` and `provider` when they changed. Either
    /// way `in_config` becomes true. The state is never changed here (a unit in a terminal state
    /// stays there: reviving it is the orchestrator's decision).
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

    /// [`sync_unit`](Self::sync_unit) for many units in one transaction (one fsync): a daemon
    /// start with 10,000 new units costs one commit instead of 10,000. Returns the rows in the
    /// order of `specs`.
    pub fn sync_units(&self, specs: &[UnitSpec<'_>]) -> Result<Vec<UnitRow>, StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        let rows = specs.iter().map(|spec| sync_one(&tx, spec, now)).collect::<Result<Vec<_>, _>>()?;
        // A transaction that changed nothing writes nothing to the WAL: no fsync.
        tx.commit()?;
        Ok(rows)
    }

    /// Sets `in_config = false` on every unit not in `present` (terminal ones too, so `dcvd
    /// status` says which units the running configuration still lists) and returns the
    /// non-terminal ones (also those already marked by an earlier call, so a restarted daemon
    /// learns again which units still need cleaning up), ordered by unit.
    pub fn mark_missing_from_config(&self, present: &[UnitId]) -> Result<Vec<UnitId>, StoreError> {
        let present: HashSet<UnitId> = present.iter().copied().collect();
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let mut missing = Vec::new();
        let mut to_mark = Vec::new();
        {
            let mut stmt = tx.prepare_cached("SELECT kind, id, state, in_config FROM units")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let unit = UnitId { kind: row.get(0)?, id: get_u64(row, 1)? };
                let state: UnitState = row.get(2)?;
                let in_config: bool = row.get(3)?;
                if present.contains(&unit) {
                    continue;
                }
                if !state.is_terminal() {
                    missing.push(unit);
                }
                if in_config {
                    to_mark.push(unit);
                }
            }
        }
        {
            let now = now_millis();
            let mut stmt =
                tx.prepare_cached("UPDATE units SET in_config = 0, updated_at = ?3 WHERE kind = ?1 AND id = ?2")?;
            for unit in &to_mark {
                stmt.execute(params![unit.kind, sql_id(*unit)?, now])?;
            }
        }
        tx.commit()?;
        missing.sort();
        Ok(missing)
    }

    /// Every unit, ordered by unit (orders first, then domains, by id).
    pub fn units(&self) -> Result<Vec<UnitRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!("SELECT ", unit_cols!(), " FROM units"))?;
        let mut units = stmt.query_map([], unit_from_row)?.collect::<Result<Vec<_>, _>>()?;
        units.sort_by_key(|row| row.unit);
        Ok(units)
    }

    /// One unit, or `None` when the store does not know it.
    pub fn unit(&self, unit: UnitId) -> Result<Option<UnitRow>, StoreError> {
        read_unit(&self.conn(), unit)
    }

    /// Writes every mutable field of `row` (all but `unit` and `created_at`) and sets
    /// `updated_at` to now. `state_since` is maintained by the store: it becomes now when `state`
    /// differs from the stored state and is kept otherwise. Fails with
    /// [`StoreError::UnknownUnit`] when the unit is not in the store.
    pub fn save_unit(&self, row: &UnitRow) -> Result<(), StoreError> {
        let conn = self.write()?;
        write_unit(&conn, row, now_millis())
    }

    /// In one transaction: reads the unit, applies `edit`, sets its state to `to` (and
    /// `state_since` to now when the state changes), writes it and returns the new row. `edit`
    /// may change any mutable field; changes it makes to `unit`, `state`, `state_since`,
    /// `created_at` or `updated_at` are overridden. `edit` runs with the connection held: it must
    /// not call the store (that would deadlock). Fails with [`StoreError::UnknownUnit`] when the
    /// unit is not in the store; then nothing is written (likewise when `edit` panics).
    pub fn transition(
        &self,
        unit: UnitId,
        to: UnitState,
        edit: impl FnOnce(&mut UnitRow),
    ) -> Result<UnitRow, StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let old = read_unit(&tx, unit)?.ok_or(StoreError::UnknownUnit { unit })?;
        if !crate::machine::allowed(old.state, to) {
            return Err(StoreError::IllegalTransition { unit, from: old.state, to });
        }
        let now = now_millis();
        let mut row = old.clone();
        edit(&mut row);
        row.unit = unit;
        row.state = to;
        row.state_since = if to == old.state { old.state_since } else { now };
        row.created_at = old.created_at;
        row.updated_at = now;
        write_unit(&tx, &row, now)?;
        if to != old.state {
            // The audit line shares the transition's transaction: one fsync, not two.
            insert_event(&tx, unit, to.as_str(), row.last_error.as_deref().unwrap_or(""))?;
        }
        tx.commit()?;
        Ok(row)
    }

    /// The unit's records in every status, oldest first.
    pub fn records(&self, unit: UnitId) -> Result<Vec<RecordRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            record_cols!(),
            " FROM records WHERE unit_kind = ?1 AND unit_id = ?2 ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![unit.kind, sql_id(unit)?], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every record not yet [`RecordStatus::Removed`], of every unit, oldest first: what recovery
    /// must republish or remove and what `dcvd cleanup` removes.
    pub fn live_records(&self) -> Result<Vec<RecordRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            record_cols!(),
            " FROM records WHERE status <> 'removed' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes the intent to publish `recs` for `unit`, in one transaction, before the provider is
    /// called; returns the rows in the order of `recs`. Idempotent: a record with the same
    /// (unit, provider, name, rtype, value) that is [`RecordStatus::Publishing`] or
    /// [`RecordStatus::Published`] is returned as is; one that is [`RecordStatus::Removing`] or
    /// [`RecordStatus::Removed`] is revived to `Publishing` (with the new zone and ttl, and its
    /// provider ids cleared), since the latest intent is to have it published.
    pub fn record_publish_intent(&self, unit: UnitId, recs: &[NewRecord]) -> Result<Vec<RecordRow>, StoreError> {
        let unit_id = sql_id(unit)?;
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        if read_unit(&tx, unit)?.is_none() {
            return Err(StoreError::UnknownUnit { unit });
        }
        let now = now_millis();
        let mut out = Vec::with_capacity(recs.len());
        {
            let mut find = tx.prepare_cached(concat!(
                "SELECT ",
                record_cols!(),
                " FROM records WHERE unit_kind = ?1 AND unit_id = ?2 AND provider = ?3 \
                 AND name = ?4 AND rtype = ?5 AND value = ?6"
            ))?;
            let mut insert = tx.prepare_cached(concat!(
                "INSERT INTO records (unit_kind, unit_id, provider, zone, name, rtype, value, ttl, \
                 status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'publishing', ?9, ?9) RETURNING ",
                record_cols!()
            ))?;
            let mut revive = tx.prepare_cached(concat!(
                "UPDATE records SET status = 'publishing', zone = ?2, ttl = ?3, provider_id = NULL, \
                 change_id = NULL, updated_at = ?4 WHERE id = ?1 RETURNING ",
                record_cols!()
            ))?;
            for rec in recs {
                let existing = find
                    .query_row(
                        params![unit.kind, unit_id, rec.provider, rec.name, rec.rtype.as_str(), rec.value],
                        record_from_row,
                    )
                    .optional()?;
                let row = match existing {
                    None => insert.query_row(
                        params![
                            unit.kind,
                            unit_id,
                            rec.provider,
                            rec.zone,
                            rec.name,
                            rec.rtype.as_str(),
                            rec.value,
                            rec.ttl,
                            now
                        ],
                        record_from_row,
                    )?,
                    Some(row) if matches!(row.status, RecordStatus::Publishing | RecordStatus::Published) => row,
                    Some(row) => revive.query_row(params![row.id, rec.zone, rec.ttl, now], record_from_row)?,
                };
                out.push(row);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Confirms that the provider accepted the record. `None` ids keep what is stored. Fails with
    /// [`StoreError::Invalid`] when a remove intent was written since (write a new publish intent
    /// first) and [`StoreError::UnknownRecord`] for an unknown id.
    pub fn mark_published(
        &self,
        record_id: i64,
        provider_id: Option<&str>,
        change_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.mark_all_published(&[PublishConfirmation { record_id, provider_id, change_id }])
    }

    /// [`mark_published`](Self::mark_published) for several records in one transaction (one
    /// fsync for a whole publish step); writes nothing when one of them fails.
    pub fn mark_all_published(&self, confirmations: &[PublishConfirmation<'_>]) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        for c in confirmations {
            let record_id = c.record_id;
            match record_status(&tx, record_id)? {
                None => return Err(StoreError::UnknownRecord { id: record_id }),
                Some(status @ (RecordStatus::Removing | RecordStatus::Removed)) => {
                    return Err(StoreError::Invalid {
                        message: format!(
                            "record {record_id} is {status}: a publish cannot be confirmed after a \
                             remove intent; write a new publish intent first"
                        ),
                    });
                }
                Some(RecordStatus::Publishing | RecordStatus::Published) => {}
            }
            tx.prepare_cached(
                "UPDATE records SET status = 'published', provider_id = coalesce(?2, provider_id), \
                 change_id = coalesce(?3, change_id), updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![record_id, c.provider_id, c.change_id, now])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes the intent to remove the records, in one transaction, before the provider is
    /// called. Records already `Removing` or `Removed` are left as they are. Fails (writing
    /// nothing) with [`StoreError::UnknownRecord`] for an unknown id.
    pub fn record_remove_intent(&self, record_ids: &[i64]) -> Result<(), StoreError> {
        self.set_record_status(
            record_ids,
            "UPDATE records SET status = 'removing', updated_at = ?2 \
             WHERE id = ?1 AND status IN ('publishing', 'published')",
        )
    }

    /// Confirms that the provider removed the records (from any status: a publish that failed
    /// for good left nothing behind), in one transaction. Fails (writing nothing) with
    /// [`StoreError::UnknownRecord`] for an unknown id.
    pub fn mark_removed(&self, record_ids: &[i64]) -> Result<(), StoreError> {
        self.set_record_status(
            record_ids,
            "UPDATE records SET status = 'removed', updated_at = ?2 \
             WHERE id = ?1 AND status <> 'removed'",
        )
    }

    /// How many units are in each state; every state is present (0 when none), so metrics
    /// gauges drop to zero.
    pub fn counts_by_state(&self) -> Result<BTreeMap<UnitState, u64>, StoreError> {
        let mut counts: BTreeMap<UnitState, u64> = UnitState::ALL.into_iter().map(|state| (state, 0)).collect();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM units GROUP BY state")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let state: UnitState = row.get(0)?;
            counts.insert(state, get_u64(row, 1)?);
        }
        Ok(counts)
    }

    /// Appends to the unit's audit log (kept to the last [`EVENTS_PER_UNIT`] events; `detail` cut
    /// to [`EVENT_DETAIL_MAX`] bytes). The unit need not be in the store.
    pub fn append_event(&self, unit: UnitId, event: &str, detail: &str) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        insert_event(&tx, unit, event, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// The unit's audit log, oldest first: `(unix millis, event, detail)`.
    pub fn events(&self, unit: UnitId) -> Result<Vec<(i64, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, event, detail FROM events WHERE unit_kind = ?1 AND unit_id = ?2 ORDER BY seq",
        )?;
        let rows =
            stmt.query_map(params![unit.kind, sql_id(unit)?], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_record_status(&self, record_ids: &[i64], update: &str) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        {
            let mut stmt = tx.prepare_cached(update)?;
            for &id in record_ids {
                if stmt.execute(params![id, now])? == 0 && record_status(&tx, id)?.is_none() {
                    // Dropping `tx` rolls back the records already updated.
                    return Err(StoreError::UnknownRecord { id });
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Opens a group transaction (`BEGIN IMMEDIATE`): the write methods called until
    /// [`commit_group`](Self::commit_group) become savepoints inside it and share its one commit.
    /// Only [`StoreThread`] groups writes; it calls nothing else on this store meanwhile.
    pub(crate) fn begin_group(&self) -> Result<(), StoreError> {
        self.write()?.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the group transaction (one fsync); on failure it is rolled back whole.
    pub(crate) fn commit_group(&self) -> Result<(), StoreError> {
        let conn = self.write()?;
        match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(()),
            Err(e) => {
                // Still inside the transaction when COMMIT itself failed (e.g. SQLITE_FULL).
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(e.into())
            }
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held (in a caller's `transition` edit) dropped the open
        // transaction, which rolled back: the connection itself is consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(self.conn())
    }
}

/// Sets the writer's pragmas and brings the schema up to date.
fn configure_writer(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The first statement reads the file header: a file that is not SQLite fails here.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Still crash-safe (rollback journal), but `dcvd status` readers then block writers.
        tracing::warn!(path = %path.display(), journal_mode = %mode, "state store could not enable wal mode");
    }
    // FULL: in WAL mode, NORMAL may lose the last commits on power loss, and a lost
    // "publishing" intent is a record nobody will ever remove.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    schema::check_identity(conn, path)?;
    schema::migrate(conn, schema::MIGRATIONS, path)?;
    Ok(())
}

/// Inserts or updates one unit from the config (see [`Store::sync_unit`]).
fn sync_one(conn: &Connection, spec: &UnitSpec<'_>, now: i64) -> Result<UnitRow, StoreError> {
    let UnitSpec { unit, method, domains, provider, source } = *spec;
    let row = match read_unit(conn, unit)? {
        None => {
            let mut row = UnitRow::new_pending(unit, method, domains, provider, now);
            row.source = source;
            // The progress columns start at their defaults.
            conn.prepare_cached(
                "INSERT INTO units (kind, id, state, method, domains, provider, token, token_expires_at, \
                 verification_value, renewals, attempts, next_action_at, last_error, in_config, state_since, \
                 created_at, updated_at, source) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?
            .execute(params![
                row.unit.kind,
                sql_id(unit)?,
                row.state,
                row.method,
                domains_json(&row.domains),
                row.provider,
                row.token,
                row.token_expires_at,
                row.verification_value,
                row.renewals,
                row.attempts,
                row.next_action_at,
                row.last_error,
                row.in_config,
                row.state_since,
                row.created_at,
                row.updated_at,
                row.source,
            ])?;
            row
        }
        Some(mut row) => {
            let changed = row.method != method
                || row.domains != domains
                || row.provider.as_deref() != provider
                || !row.in_config
                || row.source != source;
            if changed {
                row.method = method.to_owned();
                row.domains = domains.to_vec();
                row.provider = provider.map(str::to_owned);
                row.in_config = true;
                row.source = source;
                row.updated_at = now;
                conn.prepare_cached(
                    "UPDATE units SET method = ?3, domains = ?4, provider = ?5, in_config = 1, \
                     updated_at = ?6, source = ?7 WHERE kind = ?1 AND id = ?2",
                )?
                .execute(params![
                    unit.kind,
                    sql_id(unit)?,
                    row.method,
                    domains_json(&row.domains),
                    row.provider,
                    now,
                    row.source
                ])?;
            }
            row
        }
    };
    Ok(row)
}

fn open_error(error: rusqlite::Error, path: &Path) -> StoreError {
    store_to_corrupt(StoreError::Sqlite(error), path)
}

/// Turns SQLite's "not a database" / "malformed" into a message that names the file and the way
/// out; other errors pass through.
fn store_to_corrupt(error: StoreError, path: &Path) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match &error {
        StoreError::Sqlite(e) if matches!(e.sqlite_error_code(), Some(NotADatabase | DatabaseCorrupt)) => {
            StoreError::Corrupt {
                message: format!(
                    "{} is not a usable SQLite database ({e}); restore it from a backup, or move it \
                     aside to start with an empty store (records it tracked would then have to be \
                     removed by hand)",
                    path.display()
                ),
            }
        }
        _ => error,
    }
}

fn sql_id(unit: UnitId) -> Result<i64, StoreError> {
    i64::try_from(unit.id).map_err(|_| StoreError::Invalid {
        message: format!("{unit}: id too large for the store (at most {})", i64::MAX),
    })
}

fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e)))
}

fn domains_json(domains: &[String]) -> String {
    serde_json::to_string(domains).expect("a list of strings always serializes")
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn unit_from_row(row: &Row<'_>) -> rusqlite::Result<UnitRow> {
    let domains: String = row.get(4)?;
    let domains = serde_json::from_str(&domains)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, Type::Text, Box::new(e)))?;
    Ok(UnitRow {
        unit: UnitId { kind: row.get(0)?, id: get_u64(row, 1)? },
        state: row.get(2)?,
        method: row.get(3)?,
        domains,
        provider: row.get(5)?,
        token: row.get(6)?,
        token_expires_at: row.get(7)?,
        verification_value: row.get(8)?,
        renewals: row.get(9)?,
        attempts: row.get(10)?,
        next_action_at: row.get(11)?,
        last_error: row.get(12)?,
        in_config: row.get(13)?,
        state_since: row.get(14)?,
        created_at: row.get(15)?,
        updated_at: row.get(16)?,
        negative_ttl_ms: row.get::<_, Option<i64>>(17)?.map(|ms| u64::try_from(ms).unwrap_or(0)),
        method_switched: row.get(18)?,
        transient_failures: row.get(19)?,
        source: row.get(20)?,
    })
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow {
        id: row.get(0)?,
        unit: UnitId { kind: row.get(1)?, id: get_u64(row, 2)? },
        provider: row.get(3)?,
        zone: row.get(4)?,
        name: row.get(5)?,
        rtype: {
            let text: String = row.get(6)?;
            text.parse().map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(6, Type::Text, e.into()))?
        },
        value: row.get(7)?,
        ttl: row.get(8)?,
        provider_id: row.get(9)?,
        change_id: row.get(10)?,
        status: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

fn read_unit(conn: &Connection, unit: UnitId) -> Result<Option<UnitRow>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!("SELECT ", unit_cols!(), " FROM units WHERE kind = ?1 AND id = ?2"))?;
    Ok(stmt.query_row(params![unit.kind, sql_id(unit)?], unit_from_row).optional()?)
}

fn record_status(conn: &Connection, id: i64) -> Result<Option<RecordStatus>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT status FROM records WHERE id = ?1")?;
    Ok(stmt.query_row([id], |row| row.get(0)).optional()?)
}

fn write_unit(conn: &Connection, row: &UnitRow, now: i64) -> Result<(), StoreError> {
    // SET expressions see the row before the update, so the CASE compares with the stored state.
    let changed = conn
        .prepare_cached(
            "UPDATE units SET state = ?3, method = ?4, domains = ?5, provider = ?6, token = ?7, \
             token_expires_at = ?8, verification_value = ?9, renewals = ?10, attempts = ?11, \
             next_action_at = ?12, last_error = ?13, in_config = ?14, \
             state_since = CASE WHEN state = ?3 THEN state_since ELSE ?15 END, updated_at = ?15, \
             negative_ttl_ms = ?16, method_switched = ?17, transient_failures = ?18 \
             WHERE kind = ?1 AND id = ?2",
        )?
        .execute(params![
            row.unit.kind,
            sql_id(row.unit)?,
            row.state,
            row.method,
            domains_json(&row.domains),
            row.provider,
            row.token,
            row.token_expires_at,
            row.verification_value,
            row.renewals,
            row.attempts,
            row.next_action_at,
            row.last_error,
            row.in_config,
            now,
            row.negative_ttl_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            row.method_switched,
            row.transient_failures,
        ])?;
    if changed == 0 {
        return Err(StoreError::UnknownUnit { unit: row.unit });
    }
    Ok(())
}

/// Appends one audit line for `unit` inside `tx`, keeping the last [`EVENTS_PER_UNIT`].
fn insert_event(tx: &Connection, unit: UnitId, event: &str, detail: &str) -> Result<(), StoreError> {
    let unit_id = sql_id(unit)?;
    let detail = truncate(detail, EVENT_DETAIL_MAX);
    tx.prepare_cached("INSERT INTO events (unit_kind, unit_id, at, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![unit.kind, unit_id, now_millis(), event, detail])?;
    tx.prepare_cached(
        "DELETE FROM events WHERE unit_kind = ?1 AND unit_id = ?2 AND seq <= (\
         SELECT seq FROM events WHERE unit_kind = ?1 AND unit_id = ?2 \
         ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
    )?
    .execute(params![unit.kind, unit_id, EVENTS_PER_UNIT])?;
    Ok(())
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
}
