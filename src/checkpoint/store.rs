//! The state database as a value: [`Store`], its error, and what every table's module shares. Each table (or
//! group of tables) has its own module with its row types and statements: `jobs`, `records`, `outcomes`,
//! `parts`, `runs`, `observed` (throttles and the per-second series), `lock`. Writes of many rows go through
//! multi-row statements (sqlx costs about 90 µs per statement, so one row per statement would cap a run near
//! 10,000 records a second); the runner funnels them through one writer task.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

/// A store that failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The database could not be opened or created.
    #[error("failed to open the state database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("failed to update the state database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database was written by a newer batchrun.
    #[error("the state database {} was written by a newer batchrun (schema version {found}; this one knows up to {known})", path.display())]
    Newer {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// A reader found a database an older batchrun wrote, which only a run may bring up to date.
    #[error("the state database {} has schema version {found}; this batchrun reads version {known}", path.display())]
    Older {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The version this build reads.
        known: i64,
    },
    /// The database holds no schema yet (a run is creating it, or it is not a state database).
    #[error("the state database {} holds no jobs yet", path.display())]
    Uninitialized {
        /// The database file.
        path: PathBuf,
    },
    /// A statement failed.
    #[error("failed to {what} in the state database")]
    Query {
        /// What was being done, as "failed to …" reads.
        what: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
}

impl CheckpointError {
    /// Whether SQLite failed for want of disk space (SQLITE_FULL).
    pub fn disk_full(&self) -> bool {
        let source = match self {
            CheckpointError::Open { source, .. } | CheckpointError::Query { source, .. } => source,
            _ => return false,
        };
        match source {
            sqlx::Error::Database(db) => db.code().as_deref() == Some("13"),
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

/// The error of a statement that failed while doing `what` ("read the job", "write outcomes"): the message
/// reads "failed to `what` in the state database".
pub(super) fn failed_to(what: &'static str) -> impl FnOnce(sqlx::Error) -> CheckpointError {
    move |source| CheckpointError::Query { what, source }
}

/// Now, in Unix seconds: the clock every stored time is on.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// The state database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) pool: SqlitePool,
}

/// Rows per multi-row statement: well below SQLite's 32,766 bound variables at 12 columns a row.
pub(super) const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction.
    pub(super) async fn begin(&self) -> Result<Transaction<'static, Sqlite>, CheckpointError> {
        self.pool
            .begin()
            .await
            .map_err(failed_to("begin a transaction"))
    }

    /// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`), for one that reads before it
    /// writes: a deferred one would find, at its first write, that another connection wrote since its read, and
    /// SQLite answers that (`SQLITE_BUSY_SNAPSHOT`) without waiting.
    pub(super) async fn begin_immediate(
        &self,
    ) -> Result<Transaction<'static, Sqlite>, CheckpointError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed_to("begin a transaction"))
    }
}

/// The statements that delete a job's state under its key, every table but `uploads` (whose rows outlive a
/// fresh start: the uploads they name are still to be aborted) and `locks`.
pub(super) const JOB_STATE: [&str; 10] = [
    "DELETE FROM batch_records WHERE job = ?",
    "DELETE FROM batch_jobs WHERE job = ?",
    "DELETE FROM parts WHERE job = ?",
    "DELETE FROM input_files WHERE job = ?",
    "DELETE FROM throttles WHERE job = ?",
    "DELETE FROM series WHERE job = ?",
    "DELETE FROM runs WHERE job = ?",
    "DELETE FROM outcomes WHERE job = ?",
    "DELETE FROM records WHERE job = ?",
    "DELETE FROM jobs WHERE name = ?",
];

/// Runs each `DELETE … WHERE job = ?` of `statements` for `job` on `conn` (a transaction's).
pub(super) async fn delete_rows(
    conn: &mut SqliteConnection,
    job: &str,
    statements: &[&'static str],
    what: &'static str,
) -> Result<(), CheckpointError> {
    for &sql in statements {
        sqlx::query(sql)
            .bind(job)
            .execute(&mut *conn)
            .await
            .map_err(failed_to(what))?;
    }
    Ok(())
}

/// An open store in a new temporary folder, for the modules' tests.
#[cfg(test)]
pub(super) async fn scratch() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).await.unwrap();
    (dir, store)
}
