//! The SQLite schema as a list of migrations, tracked by `PRAGMA user_version` (PostgreSQL's are
//! in module `pg`).
//!
//! Migration `i` (0-based) takes the database from version `i` to `i + 1`. Append new steps; never
//! edit a released one (databases in the field already ran it).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// `PRAGMA application_id` of a dcvd state database ("dcvd" in ASCII), so a foreign SQLite file
/// in the state directory is refused instead of being "migrated".
pub(crate) const APPLICATION_ID: i32 = 0x6463_7664;

/// The migrations, oldest first.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: units, records, events.
    r#"
    CREATE TABLE units (
        kind               TEXT    NOT NULL CHECK (kind IN ('order', 'domain')),
        id                 INTEGER NOT NULL CHECK (id >= 0),
        state              TEXT    NOT NULL,
        method             TEXT    NOT NULL,
        domains            TEXT    NOT NULL,          -- JSON array of strings
        provider           TEXT,
        token              TEXT,
        token_expires_at   INTEGER,                   -- unix seconds
        verification_value TEXT,
        renewals           INTEGER NOT NULL DEFAULT 0,
        attempts           INTEGER NOT NULL DEFAULT 0,
        next_action_at     INTEGER,                   -- unix millis
        last_error         TEXT,
        in_config          INTEGER NOT NULL DEFAULT 1,
        state_since        INTEGER NOT NULL,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;
    -- counts_by_state (metrics) and scans for unfinished units.
    CREATE INDEX units_by_state ON units (state);

    CREATE TABLE records (
        id          INTEGER PRIMARY KEY,
        unit_kind   TEXT    NOT NULL,
        unit_id     INTEGER NOT NULL,
        provider    TEXT    NOT NULL,
        zone        TEXT    NOT NULL,
        name        TEXT    NOT NULL,
        rtype       TEXT    NOT NULL,
        value       TEXT    NOT NULL,
        ttl         INTEGER NOT NULL,
        provider_id TEXT,
        change_id   TEXT,
        status      TEXT    NOT NULL
                    CHECK (status IN ('publishing', 'published', 'removing', 'removed')),
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        FOREIGN KEY (unit_kind, unit_id) REFERENCES units (kind, id),
        UNIQUE (unit_kind, unit_id, provider, name, rtype, value)
    );
    -- Recovery and `dcvd cleanup` scan the live records of every unit.
    CREATE INDEX records_live ON records (status) WHERE status <> 'removed';

    -- A small audit log per unit, capped by the store.
    CREATE TABLE events (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        unit_kind TEXT    NOT NULL,
        unit_id   INTEGER NOT NULL,
        at        INTEGER NOT NULL,                   -- unix millis
        event     TEXT    NOT NULL,
        detail    TEXT    NOT NULL
    );
    CREATE INDEX events_by_unit ON events (unit_kind, unit_id, seq);
    "#,
    // 2: what a restart must know about a unit's progress.
    r#"
    ALTER TABLE units ADD COLUMN negative_ttl_ms INTEGER CHECK (negative_ttl_ms >= 0);
    ALTER TABLE units ADD COLUMN method_switched INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE units ADD COLUMN transient_failures INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: where a unit comes from (`[discovery]` scans add units the TOML does not list).
    r#"
    ALTER TABLE units ADD COLUMN source TEXT NOT NULL DEFAULT 'config'
        CHECK (source IN ('config', 'discovered'));
    "#,
    // 4: leases (which instance works on a unit, the claim's epoch for fencing, its expiry).
    r#"
    ALTER TABLE units ADD COLUMN owner TEXT;
    ALTER TABLE units ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE units ADD COLUMN lease_expires_at INTEGER;          -- unix millis
    "#,
    // 5: units per state, kept by triggers: the status line and the metrics read them every 5 s,
    // and counting the units themselves grows with the account's history (100,000 finished
    // units cost a scan of the index each time).
    r#"
    CREATE TABLE unit_counts (
        state TEXT    NOT NULL PRIMARY KEY,
        n     INTEGER NOT NULL CHECK (n >= 0)
    ) WITHOUT ROWID;
    INSERT INTO unit_counts (state, n) SELECT state, count(*) FROM units GROUP BY state;
    CREATE TRIGGER unit_counts_insert AFTER INSERT ON units BEGIN
        INSERT INTO unit_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER unit_counts_update AFTER UPDATE OF state ON units WHEN OLD.state <> NEW.state BEGIN
        UPDATE unit_counts SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO unit_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER unit_counts_delete AFTER DELETE ON units BEGIN
        UPDATE unit_counts SET n = n - 1 WHERE state = OLD.state;
    END;
    "#,
];

/// The schema version this build writes.
pub(crate) fn current_version() -> u32 {
    u32::try_from(MIGRATIONS.len()).expect("fewer than 2^32 migrations")
}

/// The database's `user_version`.
pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Refuses a database that is not dcvd's: another application id, or tables without a version.
pub(crate) fn check_identity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version = user_version(conn)?;
    let foreign = if app_id != 0 && app_id != APPLICATION_ID {
        true
    } else if version == 0 {
        // A fresh database has no tables; one with tables but no version is someone else's.
        conn.query_row("SELECT 1 FROM sqlite_schema LIMIT 1", [], |_| Ok(())).optional()?.is_some()
    } else {
        false
    };
    if foreign {
        return Err(StoreError::Corrupt {
            message: format!(
                "{} is a SQLite database but not a dcvd state database (application_id {app_id:#x}, \
                 user_version {version}); point daemon.state_dir at a directory of its own or move \
                 the file aside",
                path.display()
            ),
        });
    }
    Ok(())
}

/// Applies every step of `steps` the database has not run yet, each in its own transaction
/// together with the new `user_version`, so a crash leaves the database at a whole version.
/// Returns the version before and after.
pub(crate) fn migrate(conn: &mut Connection, steps: &[&str], path: &Path) -> Result<(u32, u32), StoreError> {
    let supported = u32::try_from(steps.len()).expect("fewer than 2^32 migrations");
    let found = user_version(conn)?;
    if found > supported {
        return Err(StoreError::TooNew { found, supported, path: path.to_owned() });
    }
    for (index, step) in steps.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        // IMMEDIATE: take the write lock up front so a concurrent reader cannot make it fail midway.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version, "state store migrated");
    }
    Ok((found, supported))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    /// Every migration runs on a fresh database and leaves user_version at the step count.
    #[test]
    fn migrations_apply_on_a_fresh_database() {
        let mut conn = memory();
        let (from, to) = migrate(&mut conn, MIGRATIONS, Path::new(":memory:")).unwrap();
        assert_eq!((from, to), (0, current_version()));
        assert_eq!(user_version(&conn).unwrap(), current_version());
        check_identity(&conn, Path::new(":memory:")).unwrap();
        // Running again is a no-op.
        assert_eq!(
            migrate(&mut conn, MIGRATIONS, Path::new(":memory:")).unwrap(),
            (current_version(), current_version())
        );
    }

    /// A database at version N-1 gets only the last step; the data of earlier steps survives.
    #[test]
    fn upgrade_from_previous_version_runs_only_new_steps() {
        let steps = [
            "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (7);",
            "ALTER TABLE a ADD COLUMN y TEXT NOT NULL DEFAULT 'new';",
        ];
        let mut conn = memory();
        migrate(&mut conn, &steps[..1], Path::new("t")).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 1);
        assert_eq!(migrate(&mut conn, &steps, Path::new("t")).unwrap(), (1, 2));
        let row: (i64, String) = conn.query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(row, (7, "new".to_owned()));
    }

    /// The counts per state (version 5) start from the units already stored and follow every
    /// insertion, change of state and deletion.
    #[test]
    fn unit_counts_follow_the_units() {
        let mut conn = memory();
        migrate(&mut conn, &MIGRATIONS[..4], Path::new("t")).unwrap();
        let insert = |conn: &Connection, id: i64, state: &str| {
            conn.execute(
                "INSERT INTO units (kind, id, state, method, domains, state_since, created_at, updated_at) \
                 VALUES ('order', ?1, ?2, 'dns-txt-token', '[]', 0, 0, 0)",
                rusqlite::params![id, state],
            )
            .unwrap();
        };
        for id in 1..=3 {
            insert(&conn, id, "cleaned_up");
        }
        insert(&conn, 4, "pending");
        migrate(&mut conn, MIGRATIONS, Path::new("t")).unwrap();
        let counts = |conn: &Connection| -> Vec<(String, i64)> {
            let mut stmt = conn.prepare("SELECT state, n FROM unit_counts WHERE n > 0 ORDER BY state").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
        };
        let counted = |conn: &Connection| -> Vec<(String, i64)> {
            let mut stmt = conn.prepare("SELECT state, count(*) FROM units GROUP BY state ORDER BY state").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
        };
        assert_eq!(counts(&conn), [("cleaned_up".to_owned(), 3), ("pending".to_owned(), 1)]);
        insert(&conn, 5, "pending");
        conn.execute("UPDATE units SET state = 'token_issued' WHERE id = 4", []).unwrap();
        // A write that keeps the state moves nothing.
        conn.execute("UPDATE units SET state = 'pending', attempts = 1 WHERE id = 5", []).unwrap();
        conn.execute("DELETE FROM units WHERE id = 1", []).unwrap();
        assert_eq!(
            counts(&conn),
            [("cleaned_up".to_owned(), 2), ("pending".to_owned(), 1), ("token_issued".to_owned(), 1)]
        );
        assert_eq!(counts(&conn), counted(&conn));
    }

    /// Units stored before the `source` column existed (schema version 1) read as `config`.
    #[test]
    fn units_of_version_1_get_source_config() {
        let mut conn = memory();
        migrate(&mut conn, &MIGRATIONS[..1], Path::new("t")).unwrap();
        conn.execute(
            "INSERT INTO units (kind, id, state, method, domains, state_since, created_at, updated_at) \
             VALUES ('order', 1, 'pending', 'dns-txt-token', '[]', 0, 0, 0)",
            [],
        )
        .unwrap();
        assert_eq!(migrate(&mut conn, MIGRATIONS, Path::new("t")).unwrap(), (1, current_version()));
        let source: String = conn.query_row("SELECT source FROM units WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(source, "config");
    }

    /// A failing step rolls back completely: neither its tables nor the version bump remain.
    #[test]
    fn failing_step_leaves_previous_version() {
        let steps = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (x INTEGER); SELECT * FROM nope;"];
        let mut conn = memory();
        let err = migrate(&mut conn, &steps, Path::new("t")).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
        assert_eq!(user_version(&conn).unwrap(), 1);
        let b_exists =
            conn.query_row("SELECT 1 FROM sqlite_schema WHERE name = 'b'", [], |_| Ok(())).optional().unwrap();
        assert!(b_exists.is_none(), "table of the failed step must be rolled back");
    }

    /// A database from a newer dcvd is refused, naming both versions.
    #[test]
    fn newer_database_is_refused() {
        let mut conn = memory();
        conn.pragma_update(None, "user_version", current_version() + 1).unwrap();
        let err = migrate(&mut conn, MIGRATIONS, Path::new("/s/state.sqlite3")).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found, supported, .. }
                if found == current_version() + 1 && supported == current_version()),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer dcvd"), "{err}");
    }

    /// Someone else's SQLite file is not taken for an empty dcvd database.
    #[test]
    fn foreign_database_is_refused() {
        let conn = memory();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        let err = check_identity(&conn, Path::new("/s/state.sqlite3")).unwrap_err();
        assert!(err.to_string().contains("not a dcvd state database"), "{err}");

        let conn = memory();
        conn.pragma_update(None, "application_id", 42).unwrap();
        assert!(check_identity(&conn, Path::new("x")).is_err());
    }
}
