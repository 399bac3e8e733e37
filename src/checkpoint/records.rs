//! Table `records`: every input record of a job in input order (`seq`), with the request body sent for it.
//! A record without an outcome (see `outcomes`) is pending.

use std::collections::HashSet;
use std::ops::Range;

use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::store::{CheckpointError, ROWS_PER_STATEMENT, Store, delete_rows, failed_to};

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
    /// Where a chunk came from in its document (a JSON object), written into its output line.
    pub meta: Option<String>,
    /// A hash of what is sent (model, API, body): an incremental job reuses an earlier answer to the same.
    pub request_hash: Option<String>,
}

/// A record waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
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

impl Store {
    /// Removes what an ingest that did not finish stored from position `from` on (records, their outcomes, and
    /// the spans of input files noted at the end of an ingest), so that it can go on from `from`: 0 starts over.
    pub async fn clear_records_from(&self, job: &str, from: u64) -> Result<(), CheckpointError> {
        let mut tx = self.begin().await?;
        delete_rows(
            &mut tx,
            job,
            &["DELETE FROM input_files WHERE job = ?"],
            "clear an unfinished ingest",
        )
        .await?;
        for sql in [
            "DELETE FROM outcomes WHERE job = ? AND seq >= ?",
            "DELETE FROM records WHERE job = ? AND seq >= ?",
        ] {
            sqlx::query(sql)
                .bind(job)
                .bind(from as i64)
                .execute(&mut *tx)
                .await
                .map_err(failed_to("clear an unfinished ingest"))?;
        }
        tx.commit().await.map_err(failed_to("commit"))
    }

    /// Inserts records; returns those whose id was already taken (by an earlier record of the job), which are
    /// not inserted.
    pub async fn insert_records(
        &self,
        job: &str,
        records: &[NewRecord],
    ) -> Result<Vec<NewRecord>, CheckpointError> {
        let mut duplicates = Vec::new();
        let mut tx = self.begin().await?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO records (job, seq, record_id, location, request, est_tokens, max_tokens, meta, \
                 request_hash) ",
            );
            b.push_values(chunk, |mut row, r| {
                row.push_bind(job.to_string())
                    .push_bind(r.seq as i64)
                    .push_bind(r.record_id.clone())
                    .push_bind(r.location.clone())
                    .push_bind(r.request.clone())
                    .push_bind(r.est_tokens as i64)
                    .push_bind(r.max_tokens as i64)
                    .push_bind(r.meta.clone())
                    .push_bind(r.request_hash.clone());
            });
            b.push(" ON CONFLICT DO NOTHING RETURNING seq");
            let inserted: Vec<i64> = b
                .build_query_scalar()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await
                .map_err(failed_to("insert records"))?;
            if inserted.len() < chunk.len() {
                let inserted: HashSet<i64> = inserted.into_iter().collect();
                duplicates.extend(
                    chunk
                        .iter()
                        .filter(|r| !inserted.contains(&(r.seq as i64)))
                        .cloned(),
                );
            }
        }
        tx.commit().await.map_err(failed_to("commit records"))?;
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
            .map_err(failed_to("look up a record"))
    }

    /// Up to `limit` pending records with positions in `seqs`, in input order. A bad line (no request) is never
    /// pending: it has a failed outcome from the start.
    pub async fn pending(
        &self,
        job: &str,
        seqs: Range<u64>,
        limit: u32,
    ) -> Result<Vec<PendingRecord>, CheckpointError> {
        sqlx::query_as(
            "SELECT r.seq, r.record_id, r.request, r.est_tokens, r.max_tokens FROM records r \
             WHERE r.job = ? AND r.seq >= ? AND r.seq < ? AND r.request IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.job = r.job AND o.seq = r.seq) \
             ORDER BY r.seq LIMIT ?",
        )
        .bind(job)
        .bind(i64::try_from(seqs.start).unwrap_or(i64::MAX))
        .bind(i64::try_from(seqs.end).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read pending records"))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::store::scratch;
    use super::*;

    pub fn rec(seq: u64, id: &str) -> NewRecord {
        NewRecord {
            seq,
            record_id: id.into(),
            location: format!("in.jsonl:{}", seq + 1),
            request: Some(format!("{{\"n\":{seq}}}")),
            est_tokens: 10,
            max_tokens: 100,
            meta: None,
            request_hash: None,
        }
    }

    #[tokio::test]
    async fn duplicate_ids_are_returned_not_inserted_across_statements() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        // More than one statement's worth of rows.
        let records: Vec<_> = (0..1200).map(|i| rec(i, &format!("r{i}"))).collect();
        assert!(
            store
                .insert_records("j", &records)
                .await
                .unwrap()
                .is_empty()
        );
        let again: Vec<_> = (0..3).map(|i| rec(5000 + i, &format!("r{i}"))).collect();
        let dups = store.insert_records("j", &again).await.unwrap();
        assert_eq!(
            dups.iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![5000, 5001, 5002]
        );
        assert_eq!(
            store.location_of("j", "r2").await.unwrap().as_deref(),
            Some("in.jsonl:3")
        );
        assert_eq!(store.location_of("j", "nope").await.unwrap(), None);
        // The same id in another job is no duplicate.
        store.create_job("k", "fp", "{}", "[]").await.unwrap();
        assert!(store.insert_records("k", &again).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn pending_pages_in_order_and_skips_bad_lines() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        let mut records: Vec<_> = (0..10).map(|i| rec(i, &format!("r{i}"))).collect();
        records[3].request = None;
        store.insert_records("j", &records).await.unwrap();
        let first = store.pending("j", 0..u64::MAX, 4).await.unwrap();
        assert_eq!(
            first.iter().map(|p| p.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 4]
        );
        assert_eq!(
            first[0],
            PendingRecord {
                seq: 0,
                record_id: "r0".into(),
                request: "{\"n\":0}".into(),
                est_tokens: 10,
                max_tokens: 100,
            }
        );
        let next = store.pending("j", 5..u64::MAX, 100).await.unwrap();
        assert_eq!(next.len(), 5);
        // Records not yet ingested whole are not handed out.
        let stored = store.pending("j", 5..8, 100).await.unwrap();
        assert_eq!(stored.iter().map(|p| p.seq).collect::<Vec<_>>(), [5, 6, 7]);
        // An unfinished ingest goes on from where it stopped, or starts over from nothing.
        store.clear_records_from("j", 6).await.unwrap();
        let kept = store.pending("j", 0..u64::MAX, 100).await.unwrap();
        assert_eq!(kept.last().map(|p| p.seq), Some(5));
        store.clear_records_from("j", 0).await.unwrap();
        assert!(
            store
                .pending("j", 0..u64::MAX, 100)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
