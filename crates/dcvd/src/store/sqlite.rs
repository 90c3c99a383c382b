//! The SQLite backend of the [`Store`](super::Store): one file in `state_dir` (WAL,
//! `synchronous=FULL`, foreign keys on), locked by one process, and every SQL statement the store
//! runs on SQLite. The rules both backends share (transitions, publish intents, fencing) live in
//! the parent module; this one must not decide anything of its own.
//!
//! One process owns a `state_dir` at a time: [`SqliteStore::open`] takes an exclusive lock on
//! `state_dir/dcvd.lock` for the store's lifetime. [`SqliteStore::open_read_only`] (for `dcvd
//! status`) takes no lock and cannot write.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{
    DB_FILE, EVENT_DETAIL_MAX, EVENTS_PER_UNIT, EventRow, Fence, LOCK_FILE, NewRecord, PublishConfirmation, RecordRow,
    RecordStatus, StoreError, StoreInfo, UnitId, UnitRow, UnitSpec, UnitState, apply_spec, check_publishable,
    domains_json, keeps_publish_intent, now_millis, schema, sql_id, status_moves, sync_changes, transitioned, truncate,
};

/// How long a writer waits for another connection's lock (a `dcvd status` reader) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an open waits for the state directory's lock before reporting another process. A
/// process that another thread of this one is spawning holds a copy of the lock's descriptor
/// until its `exec` closes it, so a lock just released can still look held for a moment (seen in
/// CI: a store closed and opened again while other tests started processes).
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// The SQLite store: one connection, serialized.
pub(crate) struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    state_dir: PathBuf,
    read_only: bool,
    // Declared last so it is dropped (unlocked) only after the connection has closed.
    _lock: Option<File>,
}

impl SqliteStore {
    /// See [`Store::open`](super::Store::open).
    pub(crate) fn open(state_dir: &Path) -> Result<Self, StoreError> {
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
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked { dir: state_dir.to_owned(), lock: lock_path });
                }
                Err(TryLockError::Error(source)) => {
                    return Err(StoreError::Io { path: lock_path, source });
                }
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

    /// See [`Store::open_read_only`](super::Store::open_read_only).
    pub(crate) fn open_read_only(state_dir: &Path) -> Result<Self, StoreError> {
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

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn info(&self) -> Result<StoreInfo, StoreError> {
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

    pub(crate) fn sync_units(&self, specs: &[UnitSpec<'_>]) -> Result<Vec<UnitRow>, StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        let rows = specs.iter().map(|spec| sync_one(&tx, spec, now)).collect::<Result<Vec<_>, _>>()?;
        // A transaction that changed nothing writes nothing to the WAL: no fsync.
        tx.commit()?;
        Ok(rows)
    }

    pub(crate) fn mark_missing_from_config(&self, present: &[UnitId]) -> Result<Vec<UnitId>, StoreError> {
        let present: std::collections::HashSet<UnitId> = present.iter().copied().collect();
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

    pub(crate) fn units(&self) -> Result<Vec<UnitRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!("SELECT ", unit_cols!(), " FROM units"))?;
        Ok(stmt.query_map([], unit_from_row)?.collect::<Result<Vec<_>, _>>()?)
    }

    pub(crate) fn unit(&self, unit: UnitId) -> Result<Option<UnitRow>, StoreError> {
        read_unit(&self.conn(), unit)
    }

    pub(crate) fn save_unit(&self, fence: &Fence<'_>, row: &UnitRow) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        check_fence(&tx, fence, row.unit)?.ok_or(StoreError::UnknownUnit { unit: row.unit })?;
        write_unit(&tx, row, now_millis())?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn transition(
        &self,
        fence: &Fence<'_>,
        unit: UnitId,
        to: UnitState,
        edit: impl FnOnce(&mut UnitRow),
    ) -> Result<UnitRow, StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let old = read_unit(&tx, unit)?.ok_or(StoreError::UnknownUnit { unit })?;
        fence.check(unit, old.owner.as_deref(), old.epoch)?;
        let now = now_millis();
        let row = transitioned(&old, to, now, edit)?;
        write_unit(&tx, &row, now)?;
        if to != old.state {
            // The audit line shares the transition's transaction: one fsync, not two.
            insert_event(&tx, unit, to.as_str(), row.last_error.as_deref().unwrap_or(""))?;
        }
        tx.commit()?;
        Ok(row)
    }

    pub(crate) fn records(&self, unit: UnitId) -> Result<Vec<RecordRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            record_cols!(),
            " FROM records WHERE unit_kind = ?1 AND unit_id = ?2 ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![unit.kind, sql_id(unit)?], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn live_records(&self) -> Result<Vec<RecordRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            record_cols!(),
            " FROM records WHERE status <> 'removed' ORDER BY id"
        ))?;
        let rows = stmt.query_map([], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every record of every unit, by id (for moving to PostgreSQL).
    pub(crate) fn all_records(&self) -> Result<Vec<RecordRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(concat!("SELECT ", record_cols!(), " FROM records ORDER BY id"))?;
        let rows = stmt.query_map([], record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every audit event, by sequence (for moving to PostgreSQL).
    pub(crate) fn all_events(&self) -> Result<Vec<EventRow>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT seq, unit_kind, unit_id, at, event, detail FROM events ORDER BY seq")?;
        let rows = stmt.query_map([], |row| {
            Ok(EventRow {
                seq: row.get(0)?,
                unit: UnitId { kind: row.get(1)?, id: get_u64(row, 2)? },
                at: row.get(3)?,
                event: row.get(4)?,
                detail: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn record_publish_intent(
        &self,
        fence: &Fence<'_>,
        unit: UnitId,
        recs: &[NewRecord],
    ) -> Result<Vec<RecordRow>, StoreError> {
        let unit_id = sql_id(unit)?;
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        check_fence(&tx, fence, unit)?.ok_or(StoreError::UnknownUnit { unit })?;
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
                    Some(row) if keeps_publish_intent(&row) => row,
                    Some(row) => revive.query_row(params![row.id, rec.zone, rec.ttl, now], record_from_row)?,
                };
                out.push(row);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn mark_all_published(
        &self,
        fence: &Fence<'_>,
        confirmations: &[PublishConfirmation<'_>],
    ) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        for c in confirmations {
            let status = record_fenced(&tx, fence, c.record_id)?;
            check_publishable(c.record_id, status)?;
            tx.prepare_cached(
                "UPDATE records SET status = 'published', provider_id = coalesce(?2, provider_id), \
                 change_id = coalesce(?3, change_id), updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![c.record_id, c.provider_id, c.change_id, now])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Moves the records to `to` (`Removing` or `Removed`) where [`status_moves`] says so.
    pub(crate) fn set_record_status(
        &self,
        fence: &Fence<'_>,
        record_ids: &[i64],
        to: RecordStatus,
    ) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        {
            let mut stmt = tx.prepare_cached("UPDATE records SET status = ?2, updated_at = ?3 WHERE id = ?1")?;
            for &id in record_ids {
                // Dropping `tx` on an error rolls back the records already updated.
                let status = record_fenced(&tx, fence, id)?.ok_or(StoreError::UnknownRecord { id })?;
                if status_moves(status, to) {
                    stmt.execute(params![id, to, now])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn counts_by_state(&self) -> Result<Vec<(UnitState, u64)>, StoreError> {
        let conn = self.conn();
        // Kept by triggers (schema version 5): a read of a few rows, however many units finished.
        let mut stmt = conn.prepare_cached("SELECT state, n FROM unit_counts WHERE n > 0")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, get_u64(row, 1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn append_event(
        &self,
        fence: &Fence<'_>,
        unit: UnitId,
        event: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        check_fence(&tx, fence, unit)?;
        insert_event(&tx, unit, event, detail)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn events(&self, unit: UnitId) -> Result<Vec<(i64, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, event, detail FROM events WHERE unit_kind = ?1 AND unit_id = ?2 ORDER BY seq",
        )?;
        let rows =
            stmt.query_map(params![unit.kind, sql_id(unit)?], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn claim_units(
        &self,
        fence: &Fence<'_>,
        ttl_ms: i64,
        limit: i64,
        others: bool,
    ) -> Result<Vec<UnitRow>, StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let now = now_millis();
        let mut chosen = Vec::new();
        {
            // One process owns the file: no other transaction can hold a row, nothing to skip.
            // Only the lease columns are read here: most candidates are this store's own. The
            // states with work are listed (not the terminal ones excluded) so that the index on
            // `state` keeps this per-second query from scanning finished units.
            let mut stmt = tx.prepare_cached(
                "SELECT kind, id, owner, epoch, lease_expires_at FROM units \
                 WHERE state IN ('pending', 'token_issued', 'published', 'propagated', 'checking', 'valid') \
                 AND (owner IS NULL OR owner = ?2 OR (?3 AND lease_expires_at <= ?1)) ORDER BY kind, id",
            )?;
            let mut rows = stmt.query(params![now, fence.instance(), others])?;
            while (chosen.len() as i64) < limit
                && let Some(row) = rows.next()?
            {
                let unit = UnitId { kind: row.get(0)?, id: get_u64(row, 1)? };
                let (owner, epoch, expires): (Option<String>, i64, Option<i64>) =
                    (row.get(2)?, row.get(3)?, row.get(4)?);
                let live = expires.is_some_and(|at| at > now);
                if !(live && fence.check(unit, owner.as_deref(), epoch).is_ok()) {
                    chosen.push(unit); // not already held by this store
                }
            }
        }
        let mut claimed = Vec::with_capacity(chosen.len());
        {
            let mut claim = tx.prepare_cached(concat!(
                "UPDATE units SET owner = ?3, epoch = epoch + 1, lease_expires_at = ?4 \
                 WHERE kind = ?1 AND id = ?2 RETURNING ",
                unit_cols!()
            ))?;
            for unit in chosen {
                let params = params![unit.kind, sql_id(unit)?, fence.instance(), now.saturating_add(ttl_ms)];
                claimed.push(claim.query_row(params, unit_from_row)?);
            }
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Extends the held leases still stored as held; returns those units.
    pub(crate) fn renew_leases(&self, fence: &Fence<'_>, ttl_ms: i64) -> Result<Vec<UnitId>, StoreError> {
        self.update_held(
            fence,
            "UPDATE units SET lease_expires_at = ?5 WHERE kind = ?1 AND id = ?2 AND owner = ?3 AND epoch = ?4",
            now_millis().saturating_add(ttl_ms),
        )
    }

    pub(crate) fn release_leases(&self, fence: &Fence<'_>) -> Result<(), StoreError> {
        self.update_held(
            fence,
            "UPDATE units SET owner = NULL, lease_expires_at = NULL \
             WHERE kind = ?1 AND id = ?2 AND owner = ?3 AND epoch = ?4 AND ?5 IS NOT NULL",
            0,
        )?;
        Ok(())
    }

    /// Runs `update` (parameters: kind, id, owner, epoch, `value`) for every held lease in one
    /// transaction; returns the units it changed.
    fn update_held(&self, fence: &Fence<'_>, update: &str, value: i64) -> Result<Vec<UnitId>, StoreError> {
        let mut conn = self.write()?;
        let tx = conn.savepoint()?;
        let mut changed = Vec::new();
        {
            let mut stmt = tx.prepare_cached(update)?;
            for (unit, epoch) in fence.held() {
                if stmt.execute(params![unit.kind, sql_id(unit)?, fence.instance(), epoch, value])? > 0 {
                    changed.push(unit);
                }
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    pub(crate) fn begin_group(&self) -> Result<(), StoreError> {
        self.write()?.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

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

/// Checks the fence on `unit` inside the transaction; `Ok(None)` when the unit is not stored.
fn check_fence(tx: &Connection, fence: &Fence<'_>, unit: UnitId) -> Result<Option<()>, StoreError> {
    let lease: Option<(Option<String>, i64)> = tx
        .prepare_cached("SELECT owner, epoch FROM units WHERE kind = ?1 AND id = ?2")?
        .query_row(params![unit.kind, sql_id(unit)?], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    match lease {
        None => Ok(None),
        Some((owner, epoch)) => fence.check(unit, owner.as_deref(), epoch).map(Some),
    }
}

/// The record's status after checking the fence on its unit; `None` for an unknown record.
fn record_fenced(tx: &Connection, fence: &Fence<'_>, id: i64) -> Result<Option<RecordStatus>, StoreError> {
    let found: Option<(RecordStatus, UnitId, Option<String>, i64)> = tx
        .prepare_cached(
            "SELECT r.status, r.unit_kind, r.unit_id, u.owner, u.epoch FROM records r \
             JOIN units u ON u.kind = r.unit_kind AND u.id = r.unit_id WHERE r.id = ?1",
        )?
        .query_row([id], |row| {
            Ok((row.get(0)?, UnitId { kind: row.get(1)?, id: get_u64(row, 2)? }, row.get(3)?, row.get(4)?))
        })
        .optional()?;
    match found {
        None => Ok(None),
        Some((status, unit, owner, epoch)) => {
            fence.check(unit, owner.as_deref(), epoch)?;
            Ok(Some(status))
        }
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

/// Inserts or updates one unit from the config (see [`Store::sync_unit`](super::Store::sync_unit)).
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
            if sync_changes(&row, spec) {
                apply_spec(&mut row, spec, now);
                // Only the columns config sync owns: never the state or the lease.
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

fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e)))
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
        owner: row.get(21)?,
        epoch: row.get(22)?,
        lease_expires_at: row.get(23)?,
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

fn write_unit(conn: &Connection, row: &UnitRow, now: i64) -> Result<(), StoreError> {
    // SET expressions see the row before the update, so the CASE compares with the stored state.
    let changed = conn
        .prepare_cached(
            "UPDATE units SET state = ?3, method = ?4, domains = ?5, provider = ?6, token = ?7, \
             token_expires_at = ?8, verification_value = ?9, renewals = ?10, attempts = ?11, \
             next_action_at = ?12, last_error = ?13, in_config = ?14, \
             state_since = CASE WHEN state = ?3 THEN state_since ELSE ?15 END, updated_at = ?15, \
             negative_ttl_ms = ?16, method_switched = ?17, transient_failures = ?18, \
             owner = CASE WHEN ?19 THEN NULL ELSE owner END, \
             lease_expires_at = CASE WHEN ?19 THEN NULL ELSE lease_expires_at END \
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
            // A terminal state releases the lease: nothing is left to do, anyone may look.
            row.state.is_terminal(),
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
