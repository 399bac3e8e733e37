//! What `status` and `report` read: runs, the per-second series, throttles, errors, token and attempt
//! statistics. Read-only queries, except the run rows `submit` writes.

use sqlx::Row;

use super::store::{CheckpointError, Store, now, q};

/// A run as `submit` started it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while running or if the process was killed.
    pub ended_at: Option<i64>,
    /// `finished`, `interrupted` or `stopped: …`.
    pub outcome: Option<String>,
    /// The model id.
    pub model_id: String,
    /// `model.max-tokens`.
    pub max_tokens: Option<u64>,
    /// `model.output-burndown`.
    pub burndown: u64,
    /// `budget.rpm`.
    pub budget_rpm: Option<u64>,
    /// `budget.tpm`.
    pub budget_tpm: Option<u64>,
    /// `budget.max-concurrency`.
    pub max_concurrency: u64,
    /// Records pending when it started.
    pub pending: u64,
}

/// One second of a run, as the budget recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeriesRow {
    /// Unix seconds.
    pub at_s: i64,
    /// Requests admitted.
    pub admitted: u64,
    /// Tokens reserved at admission.
    pub reserved_tokens: u64,
    /// Tokens charged at settlement.
    pub settled_tokens: u64,
    /// Requests that succeeded.
    pub succeeded: u64,
    /// RPM throttles.
    pub throttled_rpm: u64,
    /// TPM throttles.
    pub throttled_tpm: u64,
    /// Most requests in flight.
    pub in_flight: u64,
    /// The RPM rate in use.
    pub rpm_rate: Option<f64>,
    /// The TPM rate in use.
    pub tpm_rate: Option<f64>,
    /// The concurrency cap.
    pub concurrency_cap: u64,
}

/// Failed records grouped by error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorGroup {
    /// The code (`ValidationException`, `InvalidInput`, …).
    pub code: String,
    /// Records.
    pub count: u64,
    /// One message, as an example.
    pub example: String,
}

/// A failed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// Its id.
    pub record_id: String,
    /// The code.
    pub code: String,
    /// The message.
    pub message: String,
}

/// Output tokens and attempts of the succeeded records.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OutcomeStats {
    /// Succeeded records.
    pub done: u64,
    /// Mean output tokens.
    pub output_mean: f64,
    /// 95th percentile of output tokens.
    pub output_p95: u64,
    /// Largest output.
    pub output_max: u64,
    /// Mean input tokens (as Bedrock counted them).
    pub input_mean: f64,
    /// Records that stopped at `max_tokens` (the output token count reached the cap).
    pub at_cap: u64,
    /// Attempts over all finished records (1 per record without retries).
    pub attempts: u64,
    /// Finished records.
    pub finished: u64,
    /// Median latency, milliseconds.
    pub latency_p50_ms: u64,
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|x| x.max(0) as u64)
}

impl Store {
    /// Notes the start of a run; returns its key (Unix seconds).
    pub async fn start_run(&self, job: &str, run: &RunRow) -> Result<i64, CheckpointError> {
        // Two runs in one second (a quick resume) keep distinct keys.
        let mut at = now();
        loop {
            let done = sqlx::query(
                "INSERT INTO runs (job, started_at, model_id, max_tokens, burndown, budget_rpm, budget_tpm, \
                 max_concurrency, pending) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(job)
            .bind(at)
            .bind(&run.model_id)
            .bind(run.max_tokens.map(|v| v as i64))
            .bind(run.burndown as i64)
            .bind(run.budget_rpm.map(|v| v as i64))
            .bind(run.budget_tpm.map(|v| v as i64))
            .bind(run.max_concurrency as i64)
            .bind(run.pending as i64)
            .execute(&self.pool)
            .await
            .map_err(q("note a run"))?;
            if done.rows_affected() == 1 {
                return Ok(at);
            }
            at += 1;
        }
    }

    /// Notes how a run ended.
    pub async fn end_run(
        &self,
        job: &str,
        started_at: i64,
        outcome: &str,
    ) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE runs SET ended_at = ?, outcome = ? WHERE job = ? AND started_at = ?")
            .bind(now())
            .bind(outcome)
            .bind(job)
            .bind(started_at)
            .execute(&self.pool)
            .await
            .map_err(q("note the end of a run"))?;
        Ok(())
    }

    /// The job's runs, oldest first.
    pub async fn runs(&self, job: &str) -> Result<Vec<RunRow>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT started_at, ended_at, outcome, model_id, max_tokens, burndown, budget_rpm, budget_tpm, \
             max_concurrency, pending FROM runs WHERE job = ? ORDER BY started_at",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read runs"))?;
        Ok(rows
            .iter()
            .map(|r| RunRow {
                started_at: r.get(0),
                ended_at: r.get(1),
                outcome: r.get(2),
                model_id: r.get(3),
                max_tokens: opt_u64(r.get(4)),
                burndown: r.get::<i64, _>(5).max(0) as u64,
                budget_rpm: opt_u64(r.get(6)),
                budget_tpm: opt_u64(r.get(7)),
                max_concurrency: r.get::<i64, _>(8).max(0) as u64,
                pending: r.get::<i64, _>(9).max(0) as u64,
            })
            .collect())
    }

    /// The per-second series, oldest first.
    pub async fn series(&self, job: &str) -> Result<Vec<SeriesRow>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT at_s, admitted, reserved_tokens, settled_tokens, succeeded, throttled_rpm, throttled_tpm, \
             in_flight, rpm_rate, tpm_rate, concurrency_cap FROM series WHERE job = ? ORDER BY at_s",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read the per-second series"))?;
        let u = |r: &sqlx::sqlite::SqliteRow, i: usize| r.get::<i64, _>(i).max(0) as u64;
        Ok(rows
            .iter()
            .map(|r| SeriesRow {
                at_s: r.get(0),
                admitted: u(r, 1),
                reserved_tokens: u(r, 2),
                settled_tokens: u(r, 3),
                succeeded: u(r, 4),
                throttled_rpm: u(r, 5),
                throttled_tpm: u(r, 6),
                in_flight: u(r, 7),
                rpm_rate: r.get(8),
                tpm_rate: r.get(9),
                concurrency_cap: u(r, 10),
            })
            .collect())
    }

    /// Failed records by error code, most frequent first.
    pub async fn errors_by_code(&self, job: &str) -> Result<Vec<ErrorGroup>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT COALESCE(error_code, '?'), COUNT(*), MIN(COALESCE(error_message, '')) FROM outcomes \
             WHERE job = ? AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(q("group failed records"))?;
        Ok(rows
            .iter()
            .map(|r| ErrorGroup {
                code: r.get(0),
                count: r.get::<i64, _>(1) as u64,
                example: r.get(2),
            })
            .collect())
    }

    /// The last `n` failed records, newest first.
    pub async fn last_errors(
        &self,
        job: &str,
        n: u32,
    ) -> Result<Vec<FailedRecord>, CheckpointError> {
        let rows = sqlx::query(
            "SELECT r.record_id, COALESCE(o.error_code, '?'), COALESCE(o.error_message, '') \
             FROM outcomes o JOIN records r ON r.job = o.job AND r.seq = o.seq \
             WHERE o.job = ? AND o.status = 'failed' ORDER BY o.finished_at DESC, o.seq DESC LIMIT ?",
        )
        .bind(job)
        .bind(n)
        .fetch_all(&self.pool)
        .await
        .map_err(q("read failed records"))?;
        Ok(rows
            .iter()
            .map(|r| FailedRecord {
                record_id: r.get(0),
                code: r.get(1),
                message: r.get(2),
            })
            .collect())
    }

    /// Records finished from `from` to `to` (Unix seconds, both included).
    pub async fn finished_in(&self, job: &str, from: i64, to: i64) -> Result<u64, CheckpointError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outcomes WHERE job = ? AND finished_at >= ? AND finished_at <= ?",
        )
        .bind(job)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(q("count recent outcomes"))?;
        Ok(n as u64)
    }

    /// Output-token, attempt and latency statistics of the job's outcomes. `max_tokens` tells which records
    /// stopped at the cap.
    pub async fn outcome_stats(
        &self,
        job: &str,
        max_tokens: Option<u64>,
    ) -> Result<OutcomeStats, CheckpointError> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(attempts), 0) AS INTEGER), \
             CAST(COALESCE(SUM(status = 'done'), 0) AS INTEGER), \
             CAST(COALESCE(AVG(CASE WHEN status = 'done' THEN output_tokens END), 0) AS REAL), \
             CAST(COALESCE(MAX(CASE WHEN status = 'done' THEN output_tokens END), 0) AS INTEGER), \
             CAST(COALESCE(AVG(CASE WHEN status = 'done' THEN input_tokens END), 0) AS REAL), \
             CAST(COALESCE(SUM(status = 'done' AND output_tokens >= ?), 0) AS INTEGER) \
             FROM outcomes WHERE job = ?",
        )
        .bind(max_tokens.map_or(i64::MAX, |m| m as i64))
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(q("summarize outcomes"))?;
        let done = row.get::<i64, _>(2).max(0) as u64;
        let nth = |column: &'static str, fraction: f64| {
            let offset = ((done as f64 * fraction).ceil() as i64 - 1).max(0);
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT {column} FROM outcomes WHERE job = ? AND status = 'done' ORDER BY {column} LIMIT 1 OFFSET ?"
            )))
            .bind(job.to_string())
            .bind(offset)
            .fetch_optional(&self.pool)
        };
        let p95 = nth("output_tokens", 0.95)
            .await
            .map_err(q("read an output-token percentile"))?;
        let p50_latency = nth("latency_ms", 0.5)
            .await
            .map_err(q("read the median latency"))?;
        Ok(OutcomeStats {
            finished: row.get::<i64, _>(0).max(0) as u64,
            attempts: row.get::<i64, _>(1).max(0) as u64,
            done,
            output_mean: row.get(3),
            output_max: row.get::<i64, _>(4).max(0) as u64,
            input_mean: row.get(5),
            at_cap: row.get::<i64, _>(6).max(0) as u64,
            output_p95: p95.unwrap_or(0).max(0) as u64,
            latency_p50_ms: p50_latency.unwrap_or(0).max(0) as u64,
        })
    }

    /// Throttles by quota: `(rpm, tpm, tpd)`.
    pub async fn throttle_counts(&self, job: &str) -> Result<(u64, u64, u64), CheckpointError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(kind = 'rpm'), 0), COALESCE(SUM(kind = 'tpm'), 0), COALESCE(SUM(kind = 'tpd'), 0) \
             FROM throttles WHERE job = ?",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(q("count throttles"))?;
        let u = |i: usize| row.get::<i64, _>(i).max(0) as u64;
        Ok((u(0), u(1), u(2)))
    }
}
