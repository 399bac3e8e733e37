//! The SQLite store. Writes go through multi-row statements (sqlx costs about 90 µs per statement, so one row
//! per statement would cap a run near 10,000 records a second); the runner funnels them through one writer
//! task.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::budget::{Learned, Second, ThrottleEvent};

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

pub(super) fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> CheckpointError {
    move |source| CheckpointError::Query { what, source }
}

/// Now, in Unix seconds: the clock every stored time is on.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    /// Fingerprint of settings and inputs.
    pub fingerprint: String,
    /// Settings JSON.
    pub settings: String,
    /// Input identities JSON.
    pub inputs: String,
    /// Whether every record was ingested.
    pub ingested: bool,
    /// Records ingested.
    pub total: u64,
    /// A `--fresh` started and has not finished removing the job's earlier output.
    pub clearing: bool,
}

/// A record to ingest.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Position in input order.
    pub seq: u64,
    /// Id.
    pub record_id: String,
    /// `file:line`.
    pub location: String,
    /// Request body, or `None` for a bad line.
    pub request: Option<String>,
    /// Estimated input tokens.
    pub est_tokens: u64,
    /// Reserved output tokens.
    pub max_tokens: u64,
}

/// A record waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    /// Position.
    pub seq: u64,
    /// Id.
    pub record_id: String,
    /// Request body.
    pub request: String,
    /// Estimated input tokens.
    pub est_tokens: u64,
    /// Reserved output tokens.
    pub max_tokens: u64,
}

/// How a record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Succeeded, with a result.
    Done,
    /// Failed for good, with an error.
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

/// A record's final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// Position.
    pub seq: u64,
    /// Done or failed.
    pub status: Status,
    /// Calls made.
    pub attempts: u32,
    /// The reply (`modelOutput`) when done.
    pub result: Option<String>,
    /// Error code when failed (e.g. `ValidationException`, `InvalidInput`).
    pub error_code: Option<String>,
    /// Error message when failed.
    pub error_message: Option<String>,
    /// Input tokens Bedrock reported.
    pub input_tokens: u64,
    /// Output tokens Bedrock reported.
    pub output_tokens: u64,
    /// Latency of the successful call.
    pub latency_ms: u64,
}

impl Finished {
    /// A failed outcome with an error code and message.
    pub fn failed(seq: u64, attempts: u32, code: &str, message: String) -> Finished {
        Finished {
            seq,
            status: Status::Failed,
            attempts,
            result: None,
            error_code: Some(code.to_string()),
            error_message: Some(message),
            input_tokens: 0,
            output_tokens: 0,
            latency_ms: 0,
        }
    }
}

/// One record's line in an output part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRow {
    /// Id.
    pub record_id: String,
    /// Request body, if the line could be read.
    pub request: Option<String>,
    /// Done or failed.
    pub status: Status,
    /// Reply when done.
    pub result: Option<String>,
    /// Error code when failed.
    pub error_code: Option<String>,
    /// Error message when failed.
    pub error_message: Option<String>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// A published part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    /// Part number, from 1.
    pub part: u64,
    /// File name.
    pub file: String,
    /// Records in it.
    pub records: u64,
    /// Size.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// Records by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All records.
    pub total: u64,
    /// Succeeded.
    pub done: u64,
    /// Failed.
    pub failed: u64,
}

impl Counts {
    /// Records without an outcome.
    pub fn pending(&self) -> u64 {
        self.total - self.done - self.failed
    }
}

/// Token sums over finished records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenTotals {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
}

/// The state database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) pool: SqlitePool,
}

// Rows per multi-row statement: well below SQLite's 32,766 bound variables at 11 columns a row.
const ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The stored job named `name`.
    pub async fn job(&self, name: &str) -> Result<Option<StoredJob>, CheckpointError> {
        let row = sqlx::query(
            "SELECT fingerprint, settings, inputs, ingested, total, clearing FROM jobs WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read the job"))?;
        Ok(row.map(|r| StoredJob {
            fingerprint: r.get(0),
            settings: r.get(1),
            inputs: r.get(2),
            ingested: r.get::<i64, _>(3) != 0,
            total: r.get::<i64, _>(4) as u64,
            clearing: r.get::<i64, _>("clearing") != 0,
        }))
    }

    /// Names of every job in the database.
    pub async fn job_names(&self) -> Result<Vec<String>, CheckpointError> {
        sqlx::query_scalar("SELECT name FROM jobs ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(q("list jobs"))
    }

    /// Notes that a fresh start of `job` began removing its earlier output: until [`Store::create_job`] resets
    /// it, every run finishes that removal first. Nothing happens for a job not in the database.
    pub async fn mark_clearing(&self, job: &str) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET clearing = 1, updated_at = ? WHERE name = ?")
            .bind(now())
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(q("note the start of a fresh run"))?;
        Ok(())
    }

    /// Starts a job from nothing: any earlier state under `name` is deleted.
    pub async fn create_job(
        &self,
        name: &str,
        fingerprint: &str,
        settings: &str,
        inputs: &str,
    ) -> Result<(), CheckpointError> {
        let mut tx = self.pool.begin().await.map_err(q("begin a transaction"))?;
        for sql in [
            "DELETE FROM parts WHERE job = ?",
            "DELETE FROM throttles WHERE job = ?",
            "DELETE FROM series WHERE job = ?",
            "DELETE FROM runs WHERE job = ?",
            "DELETE FROM outcomes WHERE job = ?",
            "DELETE FROM records WHERE job = ?",
            "DELETE FROM jobs WHERE name = ?",
        ] {
            sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(q("clear the job's earlier state"))?;
        }
        let t = now();
        sqlx::query(
            "INSERT INTO jobs (name, fingerprint, settings, inputs, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(settings)
        .bind(inputs)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(q("create the job"))?;
        tx.commit().await.map_err(q("commit the new job"))
    }

    /// Removes the records of an ingest that did not finish, so it can start over.
    pub async fn clear_records(&self, job: &str) -> Result<(), CheckpointError> {
        let mut tx = self.pool.begin().await.map_err(q("begin a transaction"))?;
        for sql in [
            "DELETE FROM outcomes WHERE job = ?",
            "DELETE FROM records WHERE job = ?",
        ] {
            sqlx::query(sql)
                .bind(job)
                .execute(&mut *tx)
                .await
                .map_err(q("clear an unfinished ingest"))?;
        }
        tx.commit().await.map_err(q("commit"))
    }

    /// Inserts records; returns those whose id was already taken (by an earlier record of the job), which are
    /// not inserted.
    pub async fn insert_records(
        &self,
        job: &str,
        records: &[NewRecord],
    ) -> Result<Vec<NewRecord>, CheckpointError> {
        let mut duplicates = Vec::new();
        let mut tx = self.pool.begin().await.map_err(q("begin a transaction"))?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO records (job, seq, record_id, location, request, est_tokens, max_tokens) ",
            );
            b.push_values(chunk, |mut row, r| {
                row.push_bind(job.to_string())
                    .push_bind(r.seq as i64)
                    .push_bind(r.record_id.clone())
                    .push_bind(r.location.clone())
                    .push_bind(r.request.clone())
                    .push_bind(r.est_tokens as i64)
                    .push_bind(r.max_tokens as i64);
            });
            b.push(" ON CONFLICT DO NOTHING RETURNING seq");
            let inserted: Vec<i64> = b
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await
                .map_err(q("insert records"))?;
            if inserted.len() < chunk.len() {
                let inserted: std::collections::HashSet<i64> = inserted.into_iter().collect();
                duplicates.extend(
                    chunk
                        .iter()
                        .filter(|r| !inserted.contains(&(r.seq as i64)))
                        .cloned(),
                );
            }
        }
        tx.commit().await.map_err(q("commit records"))?;
        Ok(duplicates)
    }

    /// Where the record with `record_id` was read from.
    pub async fn location_of(
        &self,
        job: &str,
        record_id: &str,
    ) -> Result<Option<String>, CheckpointError> {
        sqlx::query_scalar("SELECT location FROM records WHERE job = ? AND record_id = ?")
            .bind(job)
            .bind(record_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("look up a record"))
    }

    /// Marks the ingest complete with `total` records.
    pub async fn mark_ingested(&self, job: &str, total: u64) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET ingested = 1, total = ?, updated_at = ? WHERE name = ?")
            .bind(total as i64)
            .bind(now())
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(q("mark the ingest complete"))?;
        Ok(())
    }

    /// Up to `limit` pending records after `after_seq` (exclusive), in input order.
    pub async fn pending(
        &self,
        job: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<PendingRecord>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT r.seq, r.record_id, r.request, r.est_tokens, r.max_tokens FROM records r \
             WHERE r.job = ? AND r.seq > ? AND r.request IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job = r.job AND o.seq = r.seq) \
             ORDER BY r.seq LIMIT ?",
        )
        .bind(job)
        .bind(after_seq.map_or(-1, |s| s as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("read pending records"))?;
        Ok(rows
            .into_iter()
            .map(|r| PendingRecord {
                seq: r.get::<i64, _>(0) as u64,
                record_id: r.get(1),
                request: r.get(2),
                est_tokens: r.get::<i64, _>(3) as u64,
                max_tokens: r.get::<i64, _>(4) as u64,
            })
            .collect())
    }

    /// Writes outcomes in one transaction. An outcome already written is kept, never replaced: a part may
    /// already hold it.
    pub async fn write_outcomes(
        &self,
        job: &str,
        outcomes: &[Finished],
    ) -> Result<(), CheckpointError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut tx = self.pool.begin().await.map_err(q("begin a transaction"))?;
        for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO outcomes (job, seq, status, attempts, result, error_code, error_message, \
                 input_tokens, output_tokens, latency_ms, finished_at) ",
            );
            b.push_values(chunk, |mut row, o| {
                row.push_bind(job.to_string())
                    .push_bind(o.seq as i64)
                    .push_bind(o.status.as_str())
                    .push_bind(i64::from(o.attempts))
                    .push_bind(o.result.clone())
                    .push_bind(o.error_code.clone())
                    .push_bind(o.error_message.clone())
                    .push_bind(o.input_tokens as i64)
                    .push_bind(o.output_tokens as i64)
                    .push_bind(o.latency_ms as i64)
                    .push_bind(t);
            });
            b.push(" ON CONFLICT DO NOTHING");
            b.build()
                .execute(&mut *tx)
                .await
                .map_err(q("write outcomes"))?;
        }
        tx.commit().await.map_err(q("commit outcomes"))
    }

    /// Records by state.
    pub async fn counts(&self, job: &str) -> Result<Counts, CheckpointError> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM records WHERE job = ?")
            .bind(job)
            .fetch_one(&self.pool)
            .await
            .map_err(q("count records"))?;
        let row = sqlx::query(
            "SELECT coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'failed'), 0) FROM outcomes WHERE job = ?",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(q("count outcomes"))?;
        Ok(Counts {
            total: total as u64,
            done: row.get::<i64, _>(0) as u64,
            failed: row.get::<i64, _>(1) as u64,
        })
    }

    /// Input and output tokens over the job's outcomes.
    pub async fn token_totals(&self, job: &str) -> Result<TokenTotals, CheckpointError> {
        let row = sqlx::query(
            "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) FROM outcomes WHERE job = ?",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(q("sum tokens"))?;
        Ok(TokenTotals {
            input: row.get::<i64, _>(0) as u64,
            output: row.get::<i64, _>(1) as u64,
        })
    }

    /// Outcomes written for records with seq in `start..end`.
    pub async fn finished_between(
        &self,
        job: &str,
        start: u64,
        end: u64,
    ) -> Result<u64, CheckpointError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outcomes WHERE job = ? AND seq >= ? AND seq < ?",
        )
        .bind(job)
        .bind(start as i64)
        .bind(end as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(q("count finished records"))?;
        Ok(n as u64)
    }

    /// The finished records with seq in `start..end`, in order.
    pub async fn output_rows(
        &self,
        job: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<OutputRow>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT r.record_id, r.request, o.status, o.result, o.error_code, o.error_message, \
             o.input_tokens, o.output_tokens \
             FROM records r JOIN outcomes o ON o.job = r.job AND o.seq = r.seq \
             WHERE r.job = ? AND r.seq >= ? AND r.seq < ? ORDER BY r.seq",
        )
        .bind(job)
        .bind(start as i64)
        .bind(end as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read a part's records"))?;
        Ok(rows
            .into_iter()
            .map(|r| OutputRow {
                record_id: r.get(0),
                request: r.get(1),
                status: if r.get::<String, _>(2) == "done" {
                    Status::Done
                } else {
                    Status::Failed
                },
                result: r.get(3),
                error_code: r.get(4),
                error_message: r.get(5),
                input_tokens: r.get::<i64, _>(6) as u64,
                output_tokens: r.get::<i64, _>(7) as u64,
            })
            .collect())
    }

    /// Parts published so far, in order.
    pub async fn parts(&self, job: &str) -> Result<Vec<PartRow>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT part, file, records, bytes, sha256 FROM parts WHERE job = ? ORDER BY part",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(q("list parts"))?;
        Ok(rows
            .into_iter()
            .map(|r| PartRow {
                part: r.get::<i64, _>(0) as u64,
                file: r.get(1),
                records: r.get::<i64, _>(2) as u64,
                bytes: r.get::<i64, _>(3) as u64,
                sha256: r.get(4),
            })
            .collect())
    }

    /// Records a part as published.
    pub async fn record_part(&self, job: &str, part: &PartRow) -> Result<(), CheckpointError> {
        sqlx::query(
            "INSERT INTO parts (job, part, file, records, bytes, sha256, published_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(job)
        .bind(part.part as i64)
        .bind(&part.file)
        .bind(part.records as i64)
        .bind(part.bytes as i64)
        .bind(&part.sha256)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(q("record a published part"))?;
        Ok(())
    }

    /// Notes a multipart upload as started, before any of its pieces is sent.
    pub async fn begin_upload(
        &self,
        job: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), CheckpointError> {
        sqlx::query("INSERT INTO uploads (job, key, upload_id, started_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(job)
            .bind(key)
            .bind(upload_id)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(q("note a started upload"))?;
        Ok(())
    }

    /// Forgets a multipart upload once it is completed or aborted.
    pub async fn end_upload(&self, job: &str, upload_id: &str) -> Result<(), CheckpointError> {
        sqlx::query("DELETE FROM uploads WHERE job = ? AND upload_id = ?")
            .bind(job)
            .bind(upload_id)
            .execute(&self.pool)
            .await
            .map_err(q("forget an upload"))?;
        Ok(())
    }

    /// Multipart uploads started by earlier runs and never finished: `(key, upload id)`.
    pub async fn open_uploads(&self, job: &str) -> Result<Vec<(String, String)>, CheckpointError> {
        let rows =
            sqlx::query("SELECT key, upload_id FROM uploads WHERE job = ? ORDER BY started_at")
                .bind(job)
                .fetch_all(&self.pool)
                .await
                .map_err(q("read open uploads"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The rates and calibration a run of the job last saved.
    pub async fn learned(&self, job: &str) -> Result<Option<Learned>, CheckpointError> {
        let row = sqlx::query("SELECT rpm_rate, tpm_rate, token_ratio FROM jobs WHERE name = ?")
            .bind(job)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read learned rates"))?;
        Ok(row.and_then(|r| {
            let ratio: Option<f64> = r.get(2);
            ratio.map(|token_ratio| Learned {
                rpm_rate: r.get(0),
                tpm_rate: r.get(1),
                token_ratio,
            })
        }))
    }

    /// Saves what the run learned.
    pub async fn save_learned(&self, job: &str, learned: &Learned) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET rpm_rate = ?, tpm_rate = ?, token_ratio = ? WHERE name = ?")
            .bind(learned.rpm_rate)
            .bind(learned.tpm_rate)
            .bind(learned.token_ratio)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(q("save learned rates"))?;
        Ok(())
    }

    /// Records throttles; `epoch_ms` is the Unix time in milliseconds of the events' zero.
    pub async fn insert_throttles(
        &self,
        job: &str,
        epoch_ms: i64,
        events: &[ThrottleEvent],
    ) -> Result<(), CheckpointError> {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO throttles (job, at_ms, kind, message, cut, rpm_level, tpm_level, rpm_rate, tpm_rate) ",
            );
            b.push_values(chunk, |mut row, e| {
                row.push_bind(job.to_string())
                    .push_bind(epoch_ms + e.at_ms as i64)
                    .push_bind(e.kind.as_str())
                    .push_bind(e.message.clone())
                    .push_bind(e.cut)
                    .push_bind(e.rpm_level)
                    .push_bind(e.tpm_level)
                    .push_bind(e.rpm_rate)
                    .push_bind(e.tpm_rate);
            });
            b.build()
                .execute(&self.pool)
                .await
                .map_err(q("record throttles"))?;
        }
        Ok(())
    }

    /// Records per-second counts; `epoch_s` is the Unix time in seconds of second zero. A second recorded
    /// twice (a resumed run within the same second) keeps the sum.
    pub async fn insert_seconds(
        &self,
        job: &str,
        epoch_s: i64,
        seconds: &[Second],
    ) -> Result<(), CheckpointError> {
        for chunk in seconds.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO series (job, at_s, admitted, reserved_tokens, settled_tokens, succeeded, throttled_rpm, \
                 throttled_tpm, in_flight, rpm_rate, tpm_rate, concurrency_cap) ",
            );
            b.push_values(chunk, |mut row, s| {
                row.push_bind(job.to_string())
                    .push_bind(epoch_s + s.second as i64)
                    .push_bind(s.admitted as i64)
                    .push_bind(s.reserved_tokens as i64)
                    .push_bind(s.settled_tokens as i64)
                    .push_bind(s.succeeded as i64)
                    .push_bind(s.throttled_rpm as i64)
                    .push_bind(s.throttled_tpm as i64)
                    .push_bind(s.in_flight as i64)
                    .push_bind(s.rpm_rate)
                    .push_bind(s.tpm_rate)
                    .push_bind(s.concurrency_cap as i64);
            });
            b.push(
                " ON CONFLICT (job, at_s) DO UPDATE SET admitted = admitted + excluded.admitted, \
                 reserved_tokens = reserved_tokens + excluded.reserved_tokens, \
                 settled_tokens = settled_tokens + excluded.settled_tokens, succeeded = succeeded + excluded.succeeded, \
                 throttled_rpm = throttled_rpm + excluded.throttled_rpm, \
                 throttled_tpm = throttled_tpm + excluded.throttled_tpm, \
                 in_flight = max(in_flight, excluded.in_flight), rpm_rate = excluded.rpm_rate, \
                 tpm_rate = excluded.tpm_rate, concurrency_cap = excluded.concurrency_cap",
            );
            b.build()
                .execute(&self.pool)
                .await
                .map_err(q("record the per-second series"))?;
        }
        Ok(())
    }

    /// Throttles recorded for the job: (Unix ms, kind, message), oldest first.
    pub async fn throttles(
        &self,
        job: &str,
    ) -> Result<Vec<(i64, String, String)>, CheckpointError> {
        let rows =
            sqlx::query("SELECT at_ms, kind, message FROM throttles WHERE job = ? ORDER BY at_ms")
                .bind(job)
                .fetch_all(&self.pool)
                .await
                .map_err(q("read throttles"))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Latencies (first attempt to reply) of the job's succeeded records, in milliseconds, unordered.
    pub async fn latencies(&self, job: &str) -> Result<Vec<u64>, CheckpointError> {
        let rows: Vec<i64> =
            sqlx::query_scalar("SELECT latency_ms FROM outcomes WHERE job = ? AND status = 'done'")
                .bind(job)
                .fetch_all(&self.pool)
                .await
                .map_err(q("read latencies"))?;
        Ok(rows.into_iter().map(|l| l.max(0) as u64).collect())
    }

    /// Marks the job finished.
    pub async fn mark_finished(&self, job: &str) -> Result<(), CheckpointError> {
        let t = now();
        sqlx::query("UPDATE jobs SET finished_at = ?, updated_at = ? WHERE name = ?")
            .bind(t)
            .bind(t)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(q("mark the job finished"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, id: &str) -> NewRecord {
        NewRecord {
            seq,
            record_id: id.into(),
            location: format!("in.jsonl:{}", seq + 1),
            request: Some(format!("{{\"n\":{seq}}}")),
            est_tokens: 10,
            max_tokens: 100,
        }
    }

    fn done(seq: u64) -> Finished {
        Finished {
            seq,
            status: Status::Done,
            attempts: 1,
            result: Some("{}".into()),
            error_code: None,
            error_message: None,
            input_tokens: 3,
            output_tokens: 4,
            latency_ms: 5,
        }
    }

    #[tokio::test]
    async fn records_outcomes_and_parts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/state.db")).await.unwrap();
        assert_eq!(store.job("j").await.unwrap(), None);
        store.create_job("j", "fp", "{}", "[]").await.unwrap();

        let records: Vec<_> = (0..1200).map(|i| rec(i, &format!("r{i}"))).collect();
        assert!(
            store
                .insert_records("j", &records)
                .await
                .unwrap()
                .is_empty()
        );
        // Same ids again (new seqs): all duplicates, none inserted.
        let again: Vec<_> = (0..3).map(|i| rec(5000 + i, &format!("r{i}"))).collect();
        let dups = store.insert_records("j", &again).await.unwrap();
        assert_eq!(dups.len(), 3);
        assert_eq!(
            store.location_of("j", "r2").await.unwrap().as_deref(),
            Some("in.jsonl:3")
        );
        store.mark_ingested("j", 1200).await.unwrap();
        let job = store.job("j").await.unwrap().unwrap();
        assert!(job.ingested);
        assert_eq!(job.total, 1200);

        let first = store.pending("j", None, 10).await.unwrap();
        assert_eq!(
            first.iter().map(|p| p.seq).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        let outcomes: Vec<_> = (0..600).map(done).collect();
        store.write_outcomes("j", &outcomes).await.unwrap();
        // Writing an outcome twice keeps the first.
        let mut failed = done(0);
        failed.status = Status::Failed;
        store.write_outcomes("j", &[failed]).await.unwrap();
        let counts = store.counts("j").await.unwrap();
        assert_eq!(
            (counts.total, counts.done, counts.failed, counts.pending()),
            (1200, 600, 0, 600)
        );
        assert_eq!(store.pending("j", None, 1).await.unwrap()[0].seq, 600);
        assert_eq!(store.finished_between("j", 500, 1000).await.unwrap(), 100);
        assert_eq!(
            store.token_totals("j").await.unwrap(),
            TokenTotals {
                input: 1800,
                output: 2400
            }
        );

        let rows = store.output_rows("j", 0, 3).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].record_id, "r2");
        assert_eq!(rows[0].status, Status::Done);

        let part = PartRow {
            part: 1,
            file: "part-00001.jsonl".into(),
            records: 3,
            bytes: 10,
            sha256: "ab".into(),
        };
        store.record_part("j", &part).await.unwrap();
        assert_eq!(store.parts("j").await.unwrap(), vec![part]);

        let run = crate::checkpoint::RunRow {
            started_at: 0,
            ended_at: None,
            outcome: None,
            model_id: "m".into(),
            max_tokens: Some(10),
            burndown: 1,
            budget_rpm: Some(60),
            budget_tpm: None,
            max_concurrency: 4,
            pending: 3,
        };
        let first = store.start_run("j", &run).await.unwrap();
        let second = store.start_run("j", &run).await.unwrap();
        assert_eq!(
            second,
            first + 1,
            "two runs in one second keep distinct keys"
        );
        store.end_run("j", first, "interrupted").await.unwrap();
        let runs = store.runs("j").await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].outcome.as_deref(), Some("interrupted"));
        assert_eq!(runs[1].ended_at, None);
        store
            .begin_upload("j", "out/part-00001.jsonl", "u1")
            .await
            .unwrap();

        // Starting the job over clears everything under its name but the uploads still to abort.
        store.create_job("j", "fp2", "{}", "[]").await.unwrap();
        assert_eq!(store.counts("j").await.unwrap(), Counts::default());
        assert!(store.parts("j").await.unwrap().is_empty());
        assert!(store.runs("j").await.unwrap().is_empty());
        assert_eq!(
            store.open_uploads("j").await.unwrap(),
            vec![("out/part-00001.jsonl".to_string(), "u1".to_string())]
        );
        store.end_upload("j", "u1").await.unwrap();
        assert!(store.open_uploads("j").await.unwrap().is_empty());
        assert_eq!(store.job_names().await.unwrap(), vec!["j".to_string()]);
    }
}
