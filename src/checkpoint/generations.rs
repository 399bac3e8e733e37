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

/// Records whose earlier answers are copied in one statement.
const REUSE_SLICE: u64 = 2_000;

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
        super::answers::forget_unused(&mut tx).await?;
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

    /// Gives each record of `key` among `seqs` without an outcome the answer an earlier generation (`from`) got
    /// for the same request, without a call. Returns how many were answered so. Idempotent: run it again and
    /// nothing changes.
    ///
    /// One statement a slice of [`REUSE_SLICE`] records: each is a short write, so that the job lock's heartbeat
    /// (another connection's write) is not held back for the whole copy. Each answer is copied from one earlier
    /// generation, the first found, even when several hold it.
    pub async fn reuse_answers(
        &self,
        key: &str,
        from: &[String],
        seqs: Range<u64>,
    ) -> Result<u64, CheckpointError> {
        if from.is_empty() {
            return Ok(0);
        }
        let (mut reused, mut start) = (0, seqs.start);
        while start < seqs.end {
            let slice = start..(start + REUSE_SLICE).min(seqs.end);
            reused += self.reuse_slice(key, from, slice.clone()).await?;
            start = slice.end;
        }
        Ok(reused)
    }

    async fn reuse_slice(
        &self,
        key: &str,
        from: &[String],
        seqs: Range<u64>,
    ) -> Result<u64, CheckpointError> {
        let mut b = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outcomes (job, seq, status, attempts, result, error_code, error_message, input_tokens, \
             output_tokens, latency_ms, finished_at, reused, call_records) SELECT r.job, r.seq, 'done', 0, o.result, \
             NULL, NULL, o.input_tokens, o.output_tokens, o.latency_ms, ",
        );
        b.push_bind(now());
        b.push(
            ", 1, o.call_records FROM records r JOIN outcomes o ON (o.job, o.seq) = (SELECT p.job, p.seq FROM records p \
             JOIN outcomes q ON q.job = p.job AND q.seq = p.seq \
             WHERE p.request_hash = r.request_hash AND q.status = 'done' AND p.job IN (",
        );
        let mut keys = b.separated(", ");
        for k in from {
            keys.push_bind(k.clone());
        }
        b.push(") LIMIT 1) WHERE r.job = ");
        b.push_bind(key.to_string());
        b.push(" AND r.seq >= ");
        b.push_bind(seqs.start as i64);
        b.push(" AND r.seq < ");
        b.push_bind(seqs.end as i64);
        b.push(
            " AND r.request_hash IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM outcomes x WHERE x.job = r.job AND x.seq = r.seq) \
             ON CONFLICT DO NOTHING",
        );
        let done = b
            .build()
            .persistent(false)
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

#[cfg(test)]
mod tests {
    use super::super::outcomes::{Finished, Status};
    use super::super::records::NewRecord;
    use super::super::records::tests::rec;
    use super::super::store::scratch;
    use super::*;

    fn done(seq: u64, result: &str) -> Finished {
        Finished {
            seq,
            status: Status::Done,
            attempts: 1,
            result: Some(result.into()),
            error_code: None,
            error_message: None,
            input_tokens: 7,
            output_tokens: 0,
            latency_ms: 5,
            call_records: None,
            target: None,
            tier: None,
            cached: (0, 0),
            via_batch: false,
        }
    }

    /// Records 0..n of `job`, record i asking request `i`.
    async fn generation(store: &Store, job: &str, n: u64) {
        store.create_job(job, "fp", "{}", "[]").await.unwrap();
        let records: Vec<_> = (0..n)
            .map(|i| NewRecord {
                request_hash: Some(format!("h{i}")),
                ..rec(i, &format!("r{i}"))
            })
            .collect();
        store.insert_records(job, &records).await.unwrap();
    }

    #[tokio::test]
    async fn answers_are_reused_once_each_across_slices_and_only_when_done() {
        let (_dir, store) = scratch().await;
        let n = REUSE_SLICE * 2 + 5;
        generation(&store, "j@1", n).await;
        generation(&store, "j@2", n).await;
        generation(&store, "j@3", n + 3).await;
        // Generation 1 answered everything but record 4 (failed); generation 2 answered the even ones again.
        let mut one: Vec<Finished> = (0..n).map(|i| done(i, &format!("a{i}"))).collect();
        one[4] = Finished::failed(4, 1, "ValidationException", "no".into());
        store.write_outcomes("j@1", &one).await.unwrap();
        let two: Vec<Finished> = (0..n)
            .step_by(2)
            .map(|i| done(i, &format!("b{i}")))
            .collect();
        store.write_outcomes("j@2", &two).await.unwrap();

        let from = ["j@1".to_string(), "j@2".to_string()];
        let reused = store.reuse_answers("j@3", &from, 0..n + 3).await.unwrap();
        // Record 4 is answered by generation 2; the three new requests (h{n}..) by nobody.
        assert_eq!(reused, n);
        assert_eq!(
            store.reuse_answers("j@3", &from, 0..n + 3).await.unwrap(),
            0
        );
        let counts = store.counts("j@3").await.unwrap();
        assert_eq!((counts.done, counts.pending()), (n, 3));
        let rows = store.output_rows("j@3", 0..n + 3).await.unwrap();
        assert_eq!(rows.len() as u64, n);
        let result = |seq: usize| rows[seq].result.clone().unwrap();
        assert_eq!(result(4), "b4");
        assert!(result(3) == "a3" && result(n as usize - 1).ends_with(&(n - 1).to_string()));
        assert_eq!(
            rows[2 * REUSE_SLICE as usize + 1].record_id,
            format!("r{}", 2 * REUSE_SLICE + 1)
        );
    }

    #[tokio::test]
    async fn hashes_stored_before_they_were_cut_to_128_bits_still_match_the_next_generation() {
        let (_dir, store) = scratch().await;
        let full = |i: u64| format!("{i:016x}{}", "e".repeat(48));
        // Generation 1 checkpointed with 256-bit hashes, as before migration 0014; its replies are answers.
        store.create_job("j@1", "fp", "{}", "[]").await.unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| NewRecord {
                request_hash: Some(full(i)),
                ..rec(i, &format!("r{i}"))
            })
            .collect();
        store.insert_records("j@1", &records).await.unwrap();
        let replies: Vec<Finished> = (0..3).map(|i| done(i, &format!("a{i}"))).collect();
        store.write_outcomes("j@1", &replies).await.unwrap();
        sqlx::raw_sql(include_str!("../../migrations/0014_short_request_hash.sql"))
            .execute(&store.pool)
            .await
            .unwrap();
        // Generation 2 hashes the same requests to their first 128 bits: all three answers are reused.
        store.create_job("j@2", "fp", "{}", "[]").await.unwrap();
        let records: Vec<_> = (0..3)
            .map(|i| NewRecord {
                request_hash: Some(full(i)[..32].to_string()),
                ..rec(i, &format!("r{i}"))
            })
            .collect();
        store.insert_records("j@2", &records).await.unwrap();
        assert_eq!(
            store
                .reuse_answers("j@2", &["j@1".into()], 0..3)
                .await
                .unwrap(),
            3
        );
        let rows = store.output_rows("j@2", 0..3).await.unwrap();
        let results: Vec<_> = rows.iter().map(|r| r.result.clone().unwrap()).collect();
        assert_eq!(results, ["a0", "a1", "a2"]);
    }

    /// The bytes of the `outcomes.result` column of `job` and the rows in `answers`.
    async fn stored(store: &Store, job: &str) -> (i64, i64) {
        let own: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(length(result)), 0) FROM outcomes WHERE job = ?",
        )
        .bind(job)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        let answers: i64 = sqlx::query_scalar("SELECT count(*) FROM answers")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        (own, answers)
    }

    #[tokio::test]
    async fn generations_share_each_reply_once_until_no_record_asks_for_it() {
        let (_dir, store) = scratch().await;
        for n in 1..=2 {
            store
                .start_generation("j", n, &format!("j@{n}"), "fp")
                .await
                .unwrap();
        }
        generation(&store, "j@1", 4).await;
        // Records 2 and 3 send the same request: the second reply keeps its own row.
        sqlx::query("UPDATE records SET request_hash = 'h2' WHERE job = 'j@1' AND seq = 3")
            .execute(&store.pool)
            .await
            .unwrap();
        let replies: Vec<Finished> = (0..4).map(|i| done(i, &format!("a{i}"))).collect();
        store.write_outcomes("j@1", &replies).await.unwrap();
        assert_eq!(
            stored(&store, "j@1").await,
            (2, 3),
            "a3 kept in its row, three answers"
        );
        let rows = store.output_rows("j@1", 0..4).await.unwrap();
        let results: Vec<_> = rows.iter().map(|r| r.result.clone().unwrap()).collect();
        assert_eq!(results, ["a0", "a1", "a2", "a3"]);

        // Generation 2 asks h0 and h1 again and h9 anew: reusing copies no reply.
        store.create_job("j@2", "fp", "{}", "[]").await.unwrap();
        let again: Vec<_> = [0, 1, 9]
            .iter()
            .enumerate()
            .map(|(seq, h)| NewRecord {
                request_hash: Some(format!("h{h}")),
                ..rec(seq as u64, &format!("s{seq}"))
            })
            .collect();
        store.insert_records("j@2", &again).await.unwrap();
        assert_eq!(
            store
                .reuse_answers("j@2", &["j@1".into()], 0..3)
                .await
                .unwrap(),
            2
        );
        store.write_outcomes("j@2", &[done(2, "b9")]).await.unwrap();
        assert_eq!(stored(&store, "j@2").await, (0, 4));
        let rows = store.output_rows("j@2", 0..3).await.unwrap();
        let results: Vec<_> = rows.iter().map(|r| r.result.clone().unwrap()).collect();
        assert_eq!(results, ["a0", "a1", "b9"]);

        // Generation 1 pruned: h2's answer goes, the ones generation 2 reads stay.
        let generations = store.generations("j").await.unwrap();
        store.forget_generation("j", &generations[0]).await.unwrap();
        assert_eq!(stored(&store, "j@2").await, (0, 3));
        let rows = store.output_rows("j@2", 0..3).await.unwrap();
        assert_eq!(rows[1].result.as_deref(), Some("a1"));
    }
}
