//! Tables `batch_jobs` and `batch_records`: the Bedrock batch jobs a job's records were handed to (a shard each),
//! their state as last read, and which records each holds.

use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::records::PendingRecord;
use super::store::{CheckpointError, ROWS_PER_STATEMENT, Store, failed_to, now};

/// A shard's status before its batch job was asked for.
pub const STAGED: &str = "Staged";
/// A shard's status from just before CreateModelInvocationJob is sent until Bedrock's ARN is noted: its batch
/// job may exist.
pub const CREATING: &str = "Creating";

/// One batch job of a job, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BatchJobRow {
    /// Its number in the job, from 1.
    pub shard: u64,
    /// The idempotency token its create sends.
    pub token: String,
    /// Its `jobName`.
    pub name: String,
    /// The staged records (`s3://…/records.jsonl`).
    pub input_uri: String,
    /// Where Bedrock writes its results (a prefix).
    pub output_uri: String,
    /// Records it holds.
    pub records: u64,
    /// Its ARN, once created.
    pub arn: Option<String>,
    /// [`STAGED`], then Bedrock's status as last read.
    pub status: String,
    /// Bedrock's message, if any.
    pub message: Option<String>,
    /// Records Bedrock processed, answered and failed, as last read.
    pub processed: u64,
    /// Answered.
    pub succeeded: u64,
    /// Failed.
    pub errored: u64,
    /// Its results were read into outcomes.
    pub collected: bool,
    /// When it was staged, Unix seconds.
    pub created_at: i64,
    /// When its row last changed.
    pub updated_at: i64,
}

/// A new shard: everything but what Bedrock says later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewShard {
    /// Its number in the job.
    pub shard: u64,
    /// The idempotency token.
    pub token: String,
    /// The `jobName`.
    pub name: String,
    /// The staged records.
    pub input_uri: String,
    /// The results' prefix.
    pub output_uri: String,
}

/// What Bedrock last said of a batch job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchProgress {
    /// Its status.
    pub status: String,
    /// Its message.
    pub message: Option<String>,
    /// Records processed.
    pub processed: u64,
    /// Answered.
    pub succeeded: u64,
    /// Failed.
    pub errored: u64,
}

impl Store {
    /// The job's batch jobs, by shard.
    pub async fn batch_jobs(&self, job: &str) -> Result<Vec<BatchJobRow>, CheckpointError> {
        sqlx::query_as(
            "SELECT shard, token, name, input_uri, output_uri, records, arn, status, message, processed, succeeded, \
             errored, collected, created_at, updated_at FROM batch_jobs WHERE job = ? ORDER BY shard",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read the job's batch jobs"))
    }

    /// Pending records in no batch job yet, in input order, from position `from` on.
    pub async fn unbatched(
        &self,
        job: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<PendingRecord>, CheckpointError> {
        sqlx::query_as(
            "SELECT r.seq, r.record_id, r.request, r.est_tokens, r.max_tokens FROM records r \
             WHERE r.job = ?1 AND r.seq >= ?2 AND r.request IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job = r.job AND o.seq = r.seq) \
             AND NOT EXISTS (SELECT 1 FROM batch_records b WHERE b.job = r.job AND b.seq = r.seq) \
             ORDER BY r.seq LIMIT ?3",
        )
        .bind(job)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read records for batch jobs"))
    }

    /// How many pending records are in no batch job yet.
    pub async fn count_unbatched(&self, job: &str) -> Result<u64, CheckpointError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM records r WHERE r.job = ?1 AND r.request IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job = r.job AND o.seq = r.seq) \
             AND NOT EXISTS (SELECT 1 FROM batch_records b WHERE b.job = r.job AND b.seq = r.seq)",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(failed_to("count records for batch jobs"))
    }

    /// Notes a shard and its records in one transaction, before anything of it leaves this machine.
    pub async fn stage_shard(
        &self,
        job: &str,
        shard: &NewShard,
        seqs: &[u64],
    ) -> Result<(), CheckpointError> {
        let mut tx = self.begin().await?;
        let t = now();
        sqlx::query(
            "INSERT INTO batch_jobs (job, shard, token, name, input_uri, output_uri, records, status, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job)
        .bind(shard.shard as i64)
        .bind(&shard.token)
        .bind(&shard.name)
        .bind(&shard.input_uri)
        .bind(&shard.output_uri)
        .bind(seqs.len() as i64)
        .bind(STAGED)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(failed_to("note a batch job"))?;
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new("INSERT INTO batch_records (job, seq, shard) ");
            b.push_values(chunk, |mut row, seq| {
                row.push_bind(job.to_string())
                    .push_bind(*seq as i64)
                    .push_bind(shard.shard as i64);
            });
            b.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(failed_to("note a batch job's records"))?;
        }
        tx.commit().await.map_err(failed_to("commit a batch job"))
    }

    /// The records of shard `shard` that have no outcome, in input order, from position `from` on.
    pub async fn shard_records(
        &self,
        job: &str,
        shard: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<PendingRecord>, CheckpointError> {
        sqlx::query_as(
            "SELECT r.seq, r.record_id, r.request, r.est_tokens, r.max_tokens FROM batch_records b \
             JOIN records r ON r.job = b.job AND r.seq = b.seq \
             WHERE b.job = ?1 AND b.shard = ?2 AND b.seq >= ?3 AND r.request IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job = r.job AND o.seq = r.seq) \
             ORDER BY b.seq LIMIT ?4",
        )
        .bind(job)
        .bind(shard as i64)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read a batch job's records"))
    }

    /// Notes that shard `shard`'s batch job is about to be created (it may exist from here on).
    pub async fn mark_batch_creating(&self, job: &str, shard: u64) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE batch_jobs SET status = ?, updated_at = ? WHERE job = ? AND shard = ?")
            .bind(CREATING)
            .bind(now())
            .bind(job)
            .bind(shard as i64)
            .execute(&self.pool)
            .await
            .map_err(failed_to("note a batch job being created"))?;
        Ok(())
    }

    /// Notes the ARN Bedrock gave shard `shard`'s batch job.
    pub async fn set_batch_arn(
        &self,
        job: &str,
        shard: u64,
        arn: &str,
    ) -> Result<(), CheckpointError> {
        sqlx::query(
            "UPDATE batch_jobs SET arn = ?, status = 'Submitted', updated_at = ? WHERE job = ? AND shard = ?",
        )
        .bind(arn)
        .bind(now())
        .bind(job)
        .bind(shard as i64)
        .execute(&self.pool)
        .await
        .map_err(failed_to("note a batch job's ARN"))?;
        Ok(())
    }

    /// Notes what Bedrock last said of shard `shard`'s batch job; `collected` once its results are outcomes.
    pub async fn set_batch_progress(
        &self,
        job: &str,
        shard: u64,
        p: &BatchProgress,
        collected: bool,
    ) -> Result<(), CheckpointError> {
        sqlx::query(
            "UPDATE batch_jobs SET status = ?, message = ?, processed = ?, succeeded = ?, errored = ?, \
             collected = ?, updated_at = ? WHERE job = ? AND shard = ?",
        )
        .bind(&p.status)
        .bind(&p.message)
        .bind(p.processed as i64)
        .bind(p.succeeded as i64)
        .bind(p.errored as i64)
        .bind(collected)
        .bind(now())
        .bind(job)
        .bind(shard as i64)
        .execute(&self.pool)
        .await
        .map_err(failed_to("note a batch job's status"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::tests::rec;
    use super::super::store::scratch;
    use super::*;

    fn shard(n: u64) -> NewShard {
        NewShard {
            shard: n,
            token: format!("tok{n}"),
            name: format!("job-{n}"),
            input_uri: format!("s3://b/s/{n}/records.jsonl"),
            output_uri: format!("s3://b/s/{n}/out/"),
        }
    }

    #[tokio::test]
    async fn staged_records_leave_the_unbatched_and_come_back_by_shard() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "f", "{}", "[]").await.unwrap();
        let records: Vec<_> = (0..10).map(|i| rec(i, &format!("r{i}"))).collect();
        store.insert_records("j", &records).await.unwrap();
        assert_eq!(store.count_unbatched("j").await.unwrap(), 10);
        store
            .stage_shard("j", &shard(1), &[0, 1, 2, 3])
            .await
            .unwrap();
        assert_eq!(store.count_unbatched("j").await.unwrap(), 6);
        let rest: Vec<u64> = store
            .unbatched("j", 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(rest, vec![4, 5, 6, 7, 8, 9]);
        let held: Vec<u64> = store
            .shard_records("j", 1, 2, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(held, vec![2, 3]);
        store.set_batch_arn("j", 1, "arn:x").await.unwrap();
        let p = BatchProgress {
            status: "Completed".into(),
            processed: 4,
            succeeded: 3,
            errored: 1,
            message: None,
        };
        store.set_batch_progress("j", 1, &p, true).await.unwrap();
        let rows = store.batch_jobs("j").await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].arn.as_deref(),
                rows[0].status.as_str(),
                rows[0].succeeded,
                rows[0].collected
            ),
            (Some("arn:x"), "Completed", 3, true)
        );
        // A fresh start forgets them.
        store.create_job("j", "f", "{}", "[]").await.unwrap();
        assert!(store.batch_jobs("j").await.unwrap().is_empty());
    }
}
