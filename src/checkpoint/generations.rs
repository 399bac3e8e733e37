//! Table `generations`: the generations of an incremental job, each stored under its own job key, and the two
//! things generations are for: answers reused across them (by the hash of what is sent) and the change set
//! between one and the next.

use std::ops::Range;

use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::outcomes::{OutputRow, output_row_select};
use super::store::{CheckpointError, JOB_STATE, Store, delete_rows, failed_to, now};

/// One generation of an incremental job.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Generation {
    /// 1, 2, …
    #[sqlx(rename = "generation")]
    pub number: u64,
    /// The job key its records are stored under.
    pub key: String,
    /// The inputs and settings it was started with.
    pub fingerprint: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, once its output is complete.
    pub finished_at: Option<i64>,
}

/// A record of the previous generation that is gone from this one.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Deleted {
    /// Its id.
    pub record_id: String,
    /// Its chunk's place, when it was a chunk.
    pub meta: Option<String>,
}

impl Store {
    /// The generations of `job`, oldest first.
    pub async fn generations(&self, job: &str) -> Result<Vec<Generation>, CheckpointError> {
        sqlx::query_as(
            "SELECT generation, key, fingerprint, started_at, finished_at FROM generations WHERE job = ? \
             ORDER BY generation",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read the job's generations"))
    }

    /// Notes generation `number` of `job` as started under `key`.
    pub async fn start_generation(
        &self,
        job: &str,
        number: u64,
        key: &str,
        fingerprint: &str,
    ) -> Result<(), CheckpointError> {
        sqlx::query(
            "INSERT INTO generations (job, generation, key, fingerprint, started_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(job)
        .bind(number as i64)
        .bind(key)
        .bind(fingerprint)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(failed_to("start a generation"))?;
        Ok(())
    }

    /// Notes generation `number` of `job` as finished: its output is complete.
    pub async fn finish_generation(&self, job: &str, number: u64) -> Result<(), CheckpointError> {
        sqlx::query(
            "UPDATE generations SET finished_at = coalesce(finished_at, ?) WHERE job = ? AND generation = ?",
        )
        .bind(now())
        .bind(job)
        .bind(number as i64)
        .execute(&self.pool)
        .await
        .map_err(failed_to("finish a generation"))?;
        Ok(())
    }

    /// Deletes everything stored for a generation, in one transaction.
    pub async fn forget_generation(
        &self,
        job: &str,
        g: &Generation,
    ) -> Result<(), CheckpointError> {
        let mut tx = self.begin().await?;
        delete_rows(&mut tx, &g.key, &JOB_STATE, "forget a generation").await?;
        let uploads = ["DELETE FROM uploads WHERE job = ?"];
        delete_rows(&mut tx, &g.key, &uploads, "forget a generation").await?;
        sqlx::query("DELETE FROM generations WHERE job = ? AND generation = ?")
            .bind(job)
            .bind(g.number as i64)
            .execute(&mut *tx)
            .await
            .map_err(failed_to("forget a generation"))?;
        tx.commit().await.map_err(failed_to("commit"))
    }

    /// The key `name`'s records are stored under now: its latest generation's, or the name itself.
    pub async fn current_key(&self, name: &str) -> Result<String, CheckpointError> {
        let key: Option<String> = sqlx::query_scalar(
            "SELECT key FROM generations WHERE job = ? ORDER BY generation DESC LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed_to("read the job's generations"))?;
        Ok(key.unwrap_or_else(|| name.to_string()))
    }

    /// Gives each record of `key` without an outcome the answer an earlier generation (`from`) got for the same
    /// request, without a call. Returns how many were answered so. Idempotent: run it again and nothing changes.
    pub async fn reuse_answers(&self, key: &str, from: &[String]) -> Result<u64, CheckpointError> {
        if from.is_empty() {
            return Ok(0);
        }
        let mut b = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outcomes (job, seq, status, attempts, result, error_code, error_message, input_tokens, \
             output_tokens, latency_ms, finished_at, reused) SELECT r.job, r.seq, 'done', 0, o.result, NULL, NULL, \
             o.input_tokens, o.output_tokens, o.latency_ms, ",
        );
        b.push_bind(now());
        b.push(
            ", 1 FROM records r JOIN records p ON p.request_hash = r.request_hash \
             JOIN outcomes o ON o.job = p.job AND o.seq = p.seq AND o.status = 'done' \
             WHERE r.job = ",
        );
        b.push_bind(key.to_string());
        b.push(" AND r.request_hash IS NOT NULL AND p.job IN (");
        let mut keys = b.separated(", ");
        for k in from {
            keys.push_bind(k.clone());
        }
        b.push(
            ") AND NOT EXISTS (SELECT 1 FROM outcomes x WHERE x.job = r.job AND x.seq = r.seq) \
             ON CONFLICT DO NOTHING",
        );
        let done = b
            .build()
            .execute(&self.pool)
            .await
            .map_err(failed_to("reuse earlier answers"))?;
        Ok(done.rows_affected())
    }

    /// The records of `key` among `seqs`, in order, that a vector store must upsert: new, changed (another
    /// request under the same id, or the same chunk text at other offsets) or not answered in `previous`.
    pub async fn upserts(
        &self,
        key: &str,
        previous: Option<&str>,
        seqs: Range<u64>,
    ) -> Result<Vec<OutputRow>, CheckpointError> {
        sqlx::query_as(
            concat!(
                output_row_select!(),
                "WHERE r.job = ?1 AND r.seq >= ?2 AND r.seq < ?3 AND NOT (o.status = 'done' AND EXISTS ( \
               SELECT 1 FROM records p JOIN outcomes q ON q.job = p.job AND q.seq = p.seq \
               WHERE p.job = ?4 AND p.record_id = r.record_id AND p.request_hash = r.request_hash \
               AND p.meta IS r.meta AND q.status = 'done')) \
             ORDER BY r.seq"
            ),
        )
        .bind(key)
        .bind(seqs.start as i64)
        .bind(seqs.end as i64)
        .bind(previous.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read a generation's changes"))
    }

    /// The records of `previous` whose ids are gone from `key`, in their order.
    pub async fn deletes(
        &self,
        key: &str,
        previous: &str,
    ) -> Result<Vec<Deleted>, CheckpointError> {
        sqlx::query_as(
            "SELECT p.record_id, p.meta FROM records p WHERE p.job = ?1 AND NOT EXISTS \
             (SELECT 1 FROM records r WHERE r.job = ?2 AND r.record_id = p.record_id) ORDER BY p.seq",
        )
        .bind(previous)
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read a generation's deletions"))
    }
}
