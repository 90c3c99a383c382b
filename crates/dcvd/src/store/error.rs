//! The store's error type.

use std::path::PathBuf;

/// Why a store operation failed. Every message says what was wrong and what to do.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the state directory's lock file.
    #[error(
        "another dcvd is running with state_dir {} (lock held on {}); stop it or use a different state_dir",
        dir.display(),
        lock.display()
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The lock file inside it.
        lock: PathBuf,
    },

    /// A file-system operation on the state directory failed.
    #[error("state store: {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A state change the flow has no edge for (`machine::TRANSITIONS`): a bug in the engine,
    /// refused so that it cannot corrupt a unit's progress.
    #[error("state store: refused to move {unit} from {from} to {to}: the state machine has no such transition")]
    IllegalTransition {
        /// The unit.
        unit: super::UnitId,
        /// Its stored state.
        from: super::UnitState,
        /// The state asked for.
        to: super::UnitState,
    },

    /// SQLite reported an error.
    #[error("state store: sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// PostgreSQL refused a statement (a connection that broke is [`StoreError::Unavailable`]).
    #[error("state store: postgresql: {}", error_chain(.0))]
    Postgres(#[from] postgres::Error),

    /// Another instance holds the unit's lease (it took the unit over after this instance's
    /// lease expired): the write was refused and nothing was written. This instance must stop
    /// working on the unit.
    #[error(
        "state store: another instance holds {unit} (instance {owner:?} holds its lease now); this instance \
         lost its lease, wrote nothing, and must stop working on it"
    )]
    LeaseLost {
        /// The unit.
        unit: super::UnitId,
        /// The instance that holds it now.
        owner: String,
    },

    /// The database file is not a dcvd state database, or its contents are inconsistent.
    #[error("state store: {message}")]
    Corrupt {
        /// What is wrong and what to do (includes the path).
        message: String,
    },

    /// The database was written by a newer dcvd whose schema this one does not know.
    #[error(
        "state database {} has schema version {found}, but this dcvd supports at most {supported}; \
         it was written by a newer dcvd: run that version, or start afresh with another database \
         (records it tracks would then have to be removed by hand)",
        path.display()
    )]
    TooNew {
        /// The database's `user_version`.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
        /// The database file (SQLite) or URL without password (PostgreSQL).
        path: PathBuf,
    },

    /// A read-only open found a database the daemon has not yet migrated to this version.
    #[error(
        "state database {} has schema version {found}, older than this dcvd's {supported}; \
         start the daemon (dcvd run) once to upgrade it, then retry",
        path.display()
    )]
    TooOld {
        /// The database's `user_version`.
        found: u32,
        /// The version this build needs.
        supported: u32,
        /// The database file.
        path: PathBuf,
    },

    /// A read-only open found no database in the state directory.
    #[error(
        "no state database at {}; has dcvd run with this state_dir? (check daemon.state_dir)",
        path.display()
    )]
    Missing {
        /// The database file that does not exist.
        path: PathBuf,
    },

    /// The unit is not in the store (call [`sync_unit`](super::Store::sync_unit) first).
    #[error("state store: {unit} is not in the store; sync it from the config first")]
    UnknownUnit {
        /// The unit asked for.
        unit: super::UnitId,
    },

    /// A record id is not in the store.
    #[error("state store: no record with id {id}")]
    UnknownRecord {
        /// The id asked for.
        id: i64,
    },

    /// The caller asked for something the store refuses (a bug in the caller).
    #[error("state store: {message}")]
    Invalid {
        /// What was refused and why.
        message: String,
    },

    /// A write on a store opened with [`open_read_only`](super::Store::open_read_only).
    #[error("state store: opened read-only (for dcvd status); writes go through the daemon")]
    ReadOnly,
    /// The database cannot be reached (PostgreSQL down or unreachable: the next call reconnects),
    /// a group commit failed or the store thread is gone: nothing of the call was kept; worth
    /// trying again.
    #[error("state store: {message}")]
    Unavailable {
        /// What failed.
        message: String,
    },
}

/// `error` and its sources, joined by ": " (the `postgres` crate's errors say what failed, their
/// sources why: "error performing TLS handshake: invalid peer certificate: UnknownIssuer").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl StoreError {
    /// True when another process holds the state directory.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Locked { .. })
    }
}
