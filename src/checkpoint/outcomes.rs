//! Table `outcomes`: each record's final outcome, written once and never replaced (a published part may
//! already hold it), and what `status`, `report` and `plan` read from them.

use std::ops::Range;

use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::store::{CheckpointError, ROWS_PER_STATEMENT, Store, failed_to, now};

/// How a record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Succeeded, with a result.
    Done,
    /// Failed for good, with an error.
    Failed,
}

impl Status {
    /// As stored in `outcomes.status`.
    fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }
}

impl TryFrom<String> for Status {
    type Error = String;

    fn try_from(s: String) -> Result<Status, String> {
        match s.as_str() {
            "done" => Ok(Status::Done),
            "failed" => Ok(Status::Failed),
            _ => Err(format!("unknown outcome status `{s}`")),
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
    /// How many records the call that answered it carried, for a model that takes many inputs a call.
    pub call_records: Option<u32>,
    /// The target whose call answered it, for a job with several.
    pub target: Option<String>,
    /// The service tier that served its call, when the call named one.
    pub tier: Option<String>,
    /// Input tokens its call read from the prompt cache, and wrote to it.
    pub cached: (u64, u64),
    /// Answered (or failed) by a Bedrock batch job rather than an on-demand call.
    pub via_batch: bool,
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
            call_records: None,
            target: None,
            tier: None,
            cached: (0, 0),
            via_batch: false,
        }
    }
}

/// One record's line in an output part.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OutputRow {
    /// Id.
    pub record_id: String,
    /// Request body, if the line could be read.
    pub request: Option<String>,
    /// Done or failed.
    #[sqlx(try_from = "String")]
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
    /// Where a chunk came from in its document (a JSON object), when the record is one.
    pub meta: Option<String>,
    /// How many records the call that answered it carried, for a model that takes many inputs a call.
    pub call_records: Option<u32>,
    /// The target whose call answered it, for a job with several.
    pub target: Option<String>,
    /// The service tier that served its call, when the call named one.
    pub tier: Option<String>,
}

/// The SELECT of an [`OutputRow`] (records joined to their outcomes, `r` and `o`), for a `WHERE` to follow.
macro_rules! output_row_select {
    () => {
        "SELECT r.record_id, r.request, o.status, CASE WHEN o.status = 'done' THEN coalesce(o.result, \
         (SELECT a.result FROM answers a WHERE a.hash = r.request_hash)) END AS result, o.error_code, o.error_message, \
         o.input_tokens, o.output_tokens, r.meta, o.call_records, o.target, o.tier \
         FROM records r JOIN outcomes o ON o.job = r.job AND o.seq = r.seq "
    };
}
pub(super) use output_row_select;

/// Records by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow)]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromRow)]
pub struct TokenTotals {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache (not in `input`).
    pub cache_read: u64,
    /// Input tokens written to the prompt cache (not in `input`).
    pub cache_write: u64,
}

/// Failed records grouped by error code.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ErrorGroup {
    /// The code (`ValidationException`, `InvalidInput`, …).
    pub code: String,
    /// Records.
    pub count: u64,
    /// One message, as an example.
    pub example: String,
}

/// A failed record.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct FailedRecord {
    /// Its id.
    pub record_id: String,
    /// The code.
    pub code: String,
    /// The message.
    pub message: String,
}

/// Output tokens and attempts of the succeeded records.
#[derive(Debug, Clone, Copy, PartialEq, Default, FromRow)]
pub struct OutcomeStats {
    /// Succeeded records.
    pub done: u64,
    /// Mean output tokens.
    pub output_mean: f64,
    /// 95th percentile of output tokens.
    #[sqlx(default)]
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
    /// Finished records that were sent (at least one call): not bad input lines, not reused answers.
    pub sent: u64,
    /// Median latency, milliseconds.
    #[sqlx(default)]
    pub latency_p50_ms: u64,
    /// Records answered in calls that carried several (a model that takes many inputs a call), this generation.
    pub carried: u64,
    /// The calls that answered them.
    pub carrying_calls: u64,
    /// The most records one call carried.
    pub most_in_call: u64,
    /// Records that took an earlier generation's answer without a call.
    pub reused: u64,
}

impl Store {
    /// Writes outcomes in one transaction. An outcome already written is kept, never replaced: a part may
    /// already hold it. A generation's replies are stored as shared answers (see `answers`).
    pub async fn write_outcomes(
        &self,
        job: &str,
        outcomes: &[Finished],
    ) -> Result<(), CheckpointError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let t = now();
        // Sharing answers reads before it writes.
        let mut tx = self.begin_immediate().await?;
        let replies: Vec<(u64, &str)> = outcomes
            .iter()
            .filter(|o| o.status == Status::Done)
            .filter_map(|o| Some((o.seq, o.result.as_deref()?)))
            .collect();
        let shared = super::answers::share(&mut tx, job, &replies).await?;
        for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO outcomes (job, seq, status, attempts, result, error_code, error_message, \
                 input_tokens, output_tokens, latency_ms, finished_at, call_records, target, tier, cache_read_tokens, \
                 cache_write_tokens, via_batch) ",
            );
            b.push_values(chunk, |mut row, o| {
                row.push_bind(job.to_string())
                    .push_bind(o.seq as i64)
                    .push_bind(o.status.as_str())
                    .push_bind(i64::from(o.attempts))
                    .push_bind(o.result.clone().filter(|_| !shared.contains(&o.seq)))
                    .push_bind(o.error_code.clone())
                    .push_bind(o.error_message.clone())
                    .push_bind(o.input_tokens as i64)
                    .push_bind(o.output_tokens as i64)
                    .push_bind(o.latency_ms as i64)
                    .push_bind(t)
                    .push_bind(o.call_records.map(i64::from))
                    .push_bind(o.target.clone())
                    .push_bind(o.tier.clone())
                    .push_bind(o.cached.0 as i64)
                    .push_bind(o.cached.1 as i64)
                    .push_bind(o.via_batch);
            });
            b.push(" ON CONFLICT DO NOTHING");
            b.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(failed_to("write outcomes"))?;
        }
        tx.commit().await.map_err(failed_to("commit outcomes"))
    }

    /// Records by state.
    pub async fn counts(&self, job: &str) -> Result<Counts, CheckpointError> {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM records WHERE job = ?1) AS total, \
             coalesce(sum(status = 'done'), 0) AS done, coalesce(sum(status = 'failed'), 0) AS failed \
             FROM outcomes WHERE job = ?1",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(failed_to("count records"))
    }

    /// Whether any of the job's outcomes came from a call (not a bad line, a duplicate id, or an answer taken
    /// from an earlier generation): a job with none has nothing paid for to lose by starting over.
    pub async fn any_called(&self, job: &str) -> Result<bool, CheckpointError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outcomes WHERE job = ? AND attempts > 0)")
            .bind(job)
            .fetch_one(&self.pool)
            .await
            .map_err(failed_to("look for answered calls"))
    }

    /// Input and output tokens over the job's outcomes.
    pub async fn token_totals(&self, job: &str) -> Result<TokenTotals, CheckpointError> {
        sqlx::query_as(
            "SELECT coalesce(sum(input_tokens), 0) AS input, coalesce(sum(output_tokens), 0) AS output, \
             coalesce(sum(cache_read_tokens), 0) AS cache_read, coalesce(sum(cache_write_tokens), 0) AS cache_write \
             FROM outcomes WHERE job = ?",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(failed_to("sum tokens"))
    }

    /// How many of the records in `seqs` (positions in input order) have an outcome.
    pub async fn finished_among(
        &self,
        job: &str,
        seqs: Range<u64>,
    ) -> Result<u64, CheckpointError> {
        sqlx::query_scalar("SELECT count(*) FROM outcomes WHERE job = ? AND seq >= ? AND seq < ?")
            .bind(job)
            .bind(seqs.start as i64)
            .bind(seqs.end as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(failed_to("count finished records"))
    }

    /// How many records finished from `from` to `to` (Unix seconds, both included).
    pub async fn finished_during(
        &self,
        job: &str,
        from: i64,
        to: i64,
    ) -> Result<u64, CheckpointError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM outcomes WHERE job = ? AND finished_at >= ? AND finished_at <= ?",
        )
        .bind(job)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(failed_to("count recent outcomes"))
    }

    /// The finished records among `seqs`, in input order, as output lines need them.
    pub async fn output_rows(
        &self,
        job: &str,
        seqs: Range<u64>,
    ) -> Result<Vec<OutputRow>, CheckpointError> {
        sqlx::query_as(concat!(
            output_row_select!(),
            "WHERE r.job = ? AND r.seq >= ? AND r.seq < ? ORDER BY r.seq"
        ))
        .bind(job)
        .bind(seqs.start as i64)
        .bind(seqs.end as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read a part's records"))
    }

    /// Latencies (first attempt to reply) of the job's succeeded records, in milliseconds, unordered.
    pub async fn latencies(&self, job: &str) -> Result<Vec<u64>, CheckpointError> {
        sqlx::query_scalar("SELECT latency_ms FROM outcomes WHERE job = ? AND status = 'done'")
            .bind(job)
            .fetch_all(&self.pool)
            .await
            .map_err(failed_to("read latencies"))
    }

    /// Failed records by error code, most frequent first.
    pub async fn errors_by_code(&self, job: &str) -> Result<Vec<ErrorGroup>, CheckpointError> {
        sqlx::query_as(
            "SELECT coalesce(error_code, '?') AS code, count(*) AS count, \
             min(coalesce(error_message, '')) AS example FROM outcomes \
             WHERE job = ? AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("group failed records"))
    }

    /// The last `n` failed records, newest first.
    pub async fn last_errors(
        &self,
        job: &str,
        n: u32,
    ) -> Result<Vec<FailedRecord>, CheckpointError> {
        sqlx::query_as(
            "SELECT r.record_id, coalesce(o.error_code, '?') AS code, coalesce(o.error_message, '') AS message \
             FROM outcomes o JOIN records r ON r.job = o.job AND r.seq = o.seq \
             WHERE o.job = ? AND o.status = 'failed' ORDER BY o.finished_at DESC, o.seq DESC LIMIT ?",
        )
        .bind(job)
        .bind(n)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read failed records"))
    }

    /// Output-token, attempt and latency statistics of the job's outcomes. `max_tokens` tells which records
    /// stopped at the cap.
    pub async fn outcome_stats(
        &self,
        job: &str,
        max_tokens: Option<u64>,
    ) -> Result<OutcomeStats, CheckpointError> {
        let mut stats: OutcomeStats = sqlx::query_as(
            "SELECT count(*) AS finished, CAST(coalesce(sum(attempts), 0) AS INTEGER) AS attempts, \
             CAST(coalesce(sum(attempts > 0), 0) AS INTEGER) AS sent, \
             CAST(coalesce(sum(status = 'done'), 0) AS INTEGER) AS done, \
             CAST(coalesce(avg(CASE WHEN status = 'done' THEN output_tokens END), 0) AS REAL) AS output_mean, \
             CAST(coalesce(max(CASE WHEN status = 'done' THEN output_tokens END), 0) AS INTEGER) AS output_max, \
             CAST(coalesce(avg(CASE WHEN status = 'done' THEN input_tokens END), 0) AS REAL) AS input_mean, \
             CAST(coalesce(sum(status = 'done' AND output_tokens >= ?), 0) AS INTEGER) AS at_cap, \
             CAST(coalesce(sum(call_records IS NOT NULL AND reused = 0), 0) AS INTEGER) AS carried, \
             CAST(coalesce(round(sum(CASE WHEN reused = 0 THEN 1.0 / call_records END)), 0) AS INTEGER) \
               AS carrying_calls, \
             CAST(coalesce(max(CASE WHEN reused = 0 THEN call_records END), 0) AS INTEGER) AS most_in_call, \
             CAST(coalesce(sum(reused), 0) AS INTEGER) AS reused \
             FROM outcomes WHERE job = ?",
        )
        .bind(max_tokens.map_or(i64::MAX, |m| m as i64))
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(failed_to("summarize outcomes"))?;
        let done = stats.done;
        let nth = |column: &'static str, fraction: f64| {
            let offset = ((done as f64 * fraction).ceil() as i64 - 1).max(0);
            sqlx::query_scalar::<_, u64>(sqlx::AssertSqlSafe(format!(
                "SELECT {column} FROM outcomes WHERE job = ? AND status = 'done' ORDER BY {column} LIMIT 1 OFFSET ?"
            )))
            .bind(job.to_string())
            .bind(offset)
            .fetch_optional(&self.pool)
        };
        stats.output_p95 = nth("output_tokens", 0.95)
            .await
            .map_err(failed_to("read an output-token percentile"))?
            .unwrap_or(0);
        stats.latency_p50_ms = nth("latency_ms", 0.5)
            .await
            .map_err(failed_to("read the median latency"))?
            .unwrap_or(0);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::tests::rec;
    use super::super::store::scratch;
    use super::*;

    fn done(seq: u64, output_tokens: u64, latency_ms: u64) -> Finished {
        Finished {
            seq,
            status: Status::Done,
            attempts: 1,
            result: Some("{}".into()),
            error_code: None,
            error_message: None,
            input_tokens: 3,
            output_tokens,
            latency_ms,
            call_records: None,
            target: None,
            tier: None,
            cached: (0, 0),
            via_batch: false,
        }
    }

    async fn job_of(store: &Store, n: u64) {
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        let records: Vec<_> = (0..n).map(|i| rec(i, &format!("r{i}"))).collect();
        store.insert_records("j", &records).await.unwrap();
    }

    #[tokio::test]
    async fn an_outcome_is_written_once_and_counted() {
        let (_dir, store) = scratch().await;
        job_of(&store, 1200).await;
        assert_eq!(
            store.counts("j").await.unwrap(),
            Counts {
                total: 1200,
                done: 0,
                failed: 0
            }
        );
        let outcomes: Vec<_> = (0..600).map(|s| done(s, 4, 5)).collect();
        store.write_outcomes("j", &outcomes).await.unwrap();
        // Writing an outcome twice keeps the first.
        store
            .write_outcomes("j", &[Finished::failed(0, 2, "X", "no".into())])
            .await
            .unwrap();
        store
            .write_outcomes("j", &[Finished::failed(700, 2, "X", "no".into())])
            .await
            .unwrap();
        let counts = store.counts("j").await.unwrap();
        assert_eq!(
            (counts.done, counts.failed, counts.pending()),
            (600, 1, 599)
        );
        assert_eq!(
            store.pending("j", 0..u64::MAX, 1).await.unwrap()[0].seq,
            600
        );
        assert_eq!(store.finished_among("j", 500..1000).await.unwrap(), 101);
        assert_eq!(
            store.token_totals("j").await.unwrap(),
            TokenTotals {
                input: 1800,
                output: 2400,
                cache_read: 0,
                cache_write: 0,
            }
        );
        let t = now();
        assert_eq!(
            store.finished_during("j", t - 60, t + 1).await.unwrap(),
            601
        );
        assert_eq!(store.finished_during("j", t + 2, t + 60).await.unwrap(), 0);
        let rows = store.output_rows("j", 0..3).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            OutputRow {
                record_id: "r0".into(),
                request: Some("{\"n\":0}".into()),
                status: Status::Done,
                result: Some("{}".into()),
                error_code: None,
                error_message: None,
                input_tokens: 3,
                output_tokens: 4,
                meta: None,
                call_records: None,
                target: None,
                tier: None,
            }
        );
        let rows = store.output_rows("j", 699..702).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, Status::Failed);
    }

    #[tokio::test]
    async fn statistics_and_errors_are_read_from_outcomes() {
        let (_dir, store) = scratch().await;
        job_of(&store, 30).await;
        assert_eq!(
            store.outcome_stats("j", Some(100)).await.unwrap(),
            OutcomeStats::default()
        );
        // Outputs 1..=20 tokens, latencies 10..=200 ms; two records stopped at the cap of 19.
        let outcomes: Vec<_> = (0..20).map(|s| done(s, s + 1, 10 * (s + 1))).collect();
        store.write_outcomes("j", &outcomes).await.unwrap();
        let mut failed = Finished::failed(20, 3, "ValidationException", "too long".into());
        failed.latency_ms = 0;
        store
            .write_outcomes(
                "j",
                &[
                    failed,
                    Finished::failed(21, 1, "InvalidInput", "a".into()),
                    Finished::failed(22, 1, "InvalidInput", "b".into()),
                ],
            )
            .await
            .unwrap();
        let s = store.outcome_stats("j", Some(19)).await.unwrap();
        assert_eq!(
            s,
            OutcomeStats {
                done: 20,
                output_mean: 10.5,
                output_p95: 19,
                output_max: 20,
                input_mean: 3.0,
                at_cap: 2,
                attempts: 25,
                finished: 23,
                sent: 23,
                latency_p50_ms: 100,
                ..OutcomeStats::default()
            }
        );
        assert_eq!(
            store.errors_by_code("j").await.unwrap(),
            vec![
                ErrorGroup {
                    code: "InvalidInput".into(),
                    count: 2,
                    example: "a".into()
                },
                ErrorGroup {
                    code: "ValidationException".into(),
                    count: 1,
                    example: "too long".into()
                },
            ]
        );
        let last = store.last_errors("j", 2).await.unwrap();
        assert_eq!(
            last,
            vec![
                FailedRecord {
                    record_id: "r22".into(),
                    code: "InvalidInput".into(),
                    message: "b".into()
                },
                FailedRecord {
                    record_id: "r21".into(),
                    code: "InvalidInput".into(),
                    message: "a".into()
                },
            ]
        );
    }
}
