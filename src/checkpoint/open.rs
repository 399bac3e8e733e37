//! Opening the state database: for writing (`submit`), which creates it private to the user and brings its
//! schema up to date under SQLite's write lock, so two processes never migrate at once; or for reading
//! (`status`, `report`, `plan`), which never writes and never migrates, and says so when the database comes
//! from a newer or older batchrun.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool, Transaction};

use super::store::{CheckpointError, Store, failed_to};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

// How long a statement waits for another process's write transaction before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema version this batchrun writes and reads.
pub fn schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database at `path` for a run and brings its schema up to date. A new
    /// database and any folder created for it are readable by the user alone: they hold every prompt and reply.
    pub async fn open(path: &Path) -> Result<Store, CheckpointError> {
        create_private(path).map_err(|e| open_failed(path)(sqlx::Error::Io(e)))?;
        let options = options(path)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk (the WAL synced) before it returns. Parts are published from commits,
            // and a record answered once must never be paid for again, so a power cut may not take back a
            // commit. The writer batches outcomes, so this is one sync per batch (see the README's figures).
            .synchronous(SqliteSynchronous::Full);
        let pool = connect_when_free(options)
            .await
            .map_err(open_failed(path))?;
        migrate(&pool, path).await?;
        Ok(Store { pool })
    }

    /// Opens the database at `path` to read it: nothing is created, migrated or written, and a run may be
    /// writing it at the same time. A database still being created reads as one with no jobs
    /// ([`CheckpointError::Uninitialized`]); one from another batchrun version is an error that says which.
    pub async fn open_read_only(path: &Path) -> Result<Store, CheckpointError> {
        let options = options(path)?.read_only(true);
        let pool = connect(options).await.map_err(open_failed(path))?;
        let mut conn = pool
            .acquire()
            .await
            .map_err(failed_to("read the schema version"))?;
        let found = applied_version(&mut conn).await?;
        drop(conn);
        let known = schema_version();
        match found {
            None => Err(CheckpointError::Uninitialized {
                path: path.to_path_buf(),
            }),
            Some(v) if v > known => Err(CheckpointError::Newer {
                path: path.to_path_buf(),
                found: v,
                known,
            }),
            Some(v) if v < known => Err(CheckpointError::Older {
                path: path.to_path_buf(),
                found: v,
                known,
            }),
            Some(_) => Ok(Store { pool }),
        }
    }
}

fn open_failed(path: &Path) -> impl FnOnce(sqlx::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn options(path: &Path) -> Result<SqliteConnectOptions, CheckpointError> {
    Ok(SqliteConnectOptions::from_str("sqlite:")
        .map_err(open_failed(path))?
        .filename(path)
        .busy_timeout(BUSY_TIMEOUT))
}

async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
}

/// Connects for writing. Making a new database use WAL takes SQLite's exclusive lock after a shared one; when
/// two processes do it at once, each holds what the other waits for and SQLite answers "database is locked" at
/// once rather than calling the busy handler (it would wait forever). So a busy answer is tried again, a little
/// later each time, for as long as a statement would wait.
async fn connect_when_free(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match connect(options.clone()).await {
            Err(e) if is_busy(&e) && std::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            result => return result,
        }
    }
}

/// SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED`, extended codes included.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// Creates the database's folder (0700) and an empty database file (0600) if they do not exist. SQLite gives
/// its `-wal` and `-shm` files the database file's permissions. An existing folder or file is left as it is.
fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The newest migration applied, or `None` for a database without batchrun's schema (new, or being created).
async fn applied_version(conn: &mut SqliteConnection) -> Result<Option<i64>, CheckpointError> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(failed_to("read the schema version"))?;
    if !has_table {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .map_err(failed_to("read the schema version"))
}

/// Applies the migrations not yet applied, all in one write transaction taken before the schema is read:
/// a second process opening the database at the same moment waits, then finds the schema up to date.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), CheckpointError> {
    let mut tx: Transaction<'_, sqlx::Sqlite> = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(failed_to("lock the database to update its schema"))?;
    let known = schema_version();
    if let Some(found) = applied_version(&mut tx).await?
        && found > known
    {
        return Err(CheckpointError::Newer {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    MIGRATOR
        .run(&mut *tx)
        .await
        .map_err(CheckpointError::Migrate)?;
    tx.commit()
        .await
        .map_err(failed_to("commit the schema update"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_commits_with_full_sync_and_readers_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        // 2 = FULL: the write-ahead log is synced before a commit returns, so a power cut cannot take back a
        // commit that a published part was built from.
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(level, 2);
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        let reader = Store::open_read_only(&path).await.unwrap();
        assert!(reader.job("j").await.unwrap().is_some());
        assert!(reader.mark_clearing("j").await.is_err(), "a reader wrote");
        // A database without the schema (being created) reads as having no jobs.
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            Store::open_read_only(&empty).await,
            Err(CheckpointError::Uninitialized { .. })
        ));
    }

    /// The databases earlier batchruns wrote, kept as files: each is opened by this build (migrated to the
    /// current schema when older) and read back. A new migration is tested against them as they are; when
    /// the schema changes, a file made by the new schema is added here beside the old ones.
    const FIXTURES: [(&str, i64); 1] = [("v5.db", 5)];

    #[tokio::test]
    async fn databases_of_earlier_schemas_open_and_read_back() {
        for (file, version) in FIXTURES {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/state")
                .join(file);
            std::fs::copy(&fixture, &path).unwrap();
            let found = {
                let pool = connect(options(&path).unwrap().read_only(true))
                    .await
                    .unwrap();
                let mut conn = pool.acquire().await.unwrap();
                applied_version(&mut conn).await.unwrap()
            };
            assert_eq!(
                found,
                Some(version),
                "{file}: the fixture's own schema version"
            );

            let store = Store::open(&path).await.unwrap();
            let mut conn = store.pool.acquire().await.unwrap();
            assert_eq!(
                applied_version(&mut conn).await.unwrap(),
                Some(schema_version()),
                "{file}"
            );
            drop(conn);
            // The job the fixture was made from: 5 input lines (one not JSON, one a duplicate id), 3 answered.
            assert_eq!(
                store.job_names().await.unwrap(),
                vec!["fixture".to_string()],
                "{file}"
            );
            let job = store.job("fixture").await.unwrap().unwrap();
            assert!(
                job.ingested && job.total == 5 && !job.clearing,
                "{file}: {job:?}"
            );
            let counts = store.counts("fixture").await.unwrap();
            assert_eq!(
                (counts.total, counts.done, counts.failed),
                (5, 3, 2),
                "{file}"
            );
            let rows = store.output_rows("fixture", 0..5).await.unwrap();
            let ids: Vec<_> = rows.iter().map(|r| r.record_id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "in.jsonl:3", "in.jsonl:4", "c"], "{file}");
            assert!(
                rows[0]
                    .result
                    .as_deref()
                    .is_some_and(|r| r.contains("\"output\"")),
                "{file}"
            );
            let codes: Vec<_> = store
                .errors_by_code("fixture")
                .await
                .unwrap()
                .into_iter()
                .map(|g| (g.code, g.count))
                .collect();
            assert_eq!(
                codes,
                [
                    ("DuplicateId".to_string(), 1),
                    ("InvalidInput".to_string(), 1)
                ],
                "{file}"
            );
            assert_eq!(store.parts("fixture").await.unwrap().len(), 1, "{file}");
            let runs = store.runs("fixture").await.unwrap();
            assert_eq!(runs.len(), 1, "{file}");
            assert_eq!(runs[0].outcome.as_deref(), Some("finished"), "{file}");
            assert_eq!(runs[0].max_tokens, Some(64), "{file}");
            assert!(!store.series("fixture").await.unwrap().is_empty(), "{file}");
            assert!(store.learned("fixture").await.unwrap().is_some(), "{file}");
            assert_eq!(store.lock_holder("fixture").await.unwrap(), None, "{file}");
            store.close().await;
            // Once migrated, readers read it too.
            let reader = Store::open_read_only(&path).await.unwrap();
            assert_eq!(reader.counts("fixture").await.unwrap(), counts, "{file}");
        }
    }
}
