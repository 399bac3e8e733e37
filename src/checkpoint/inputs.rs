//! Table `input_files`: which records each input file gave an incremental job (a span of consecutive `seq`), so
//! that the next generation takes an unchanged file's records from here instead of reading (and, for S3,
//! downloading and chunking) it again.

use std::collections::HashMap;

use sqlx::{FromRow, QueryBuilder, Sqlite};

use super::store::{CheckpointError, ROWS_PER_STATEMENT, Store, failed_to};

/// The records one input file gave: `records` consecutive records from `first_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpan {
    /// The file's identity (its serialized [`InputFile`](crate::source::InputFile)).
    pub identity: String,
    /// Its first record's position.
    pub first_seq: u64,
    /// How many records it gave.
    pub records: u64,
}

/// A record as stored, to be ingested again by a later generation.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StoredRecord {
    /// Id.
    pub record_id: String,
    /// `file:line` or the document's path.
    pub location: String,
    /// Request body.
    pub request: String,
    /// Estimated input tokens.
    pub est_tokens: u64,
    /// Reserved output tokens.
    pub max_tokens: u64,
    /// A chunk's place in its document.
    pub meta: Option<String>,
}

impl Store {
    /// Stores which records each file gave `job`, and marks the files all of whose records can be sent (no
    /// bad line, no duplicate id: those have no request) as clean.
    pub async fn write_input_spans(
        &self,
        job: &str,
        spans: &[InputSpan],
    ) -> Result<(), CheckpointError> {
        let mut tx = self.begin().await?;
        for chunk in spans.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO input_files (job, identity, first_seq, records) ",
            );
            b.push_values(chunk, |mut row, s| {
                row.push_bind(job.to_string())
                    .push_bind(s.identity.clone())
                    .push_bind(s.first_seq as i64)
                    .push_bind(s.records as i64);
            });
            b.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(failed_to("store the input files' records"))?;
        }
        sqlx::query(
            "UPDATE input_files SET clean = NOT EXISTS (SELECT 1 FROM records r WHERE r.job = input_files.job \
             AND r.seq >= input_files.first_seq AND r.seq < input_files.first_seq + input_files.records \
             AND r.request IS NULL) WHERE job = ?",
        )
        .bind(job)
        .execute(&mut *tx)
        .await
        .map_err(failed_to("mark clean input files"))?;
        tx.commit().await.map_err(failed_to("commit"))
    }

    /// The spans of `job`'s clean input files, by identity: `(first_seq, records)`.
    pub async fn clean_input_spans(
        &self,
        job: &str,
    ) -> Result<HashMap<String, (u64, u64)>, CheckpointError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT identity, first_seq, records FROM input_files WHERE job = ? AND clean = 1",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read the input files' records"))?;
        Ok(rows
            .into_iter()
            .map(|(identity, first, n)| (identity, (first as u64, n as u64)))
            .collect())
    }

    /// The `count` records of `job` from `first_seq` on, in order, all with a request (a clean span's): fewer
    /// is an error.
    pub async fn records_from(
        &self,
        job: &str,
        first_seq: u64,
        count: u64,
    ) -> Result<Vec<StoredRecord>, CheckpointError> {
        const WHAT: &str = "read an earlier generation's records";
        let records: Vec<StoredRecord> = sqlx::query_as(
            "SELECT record_id, location, request, est_tokens, max_tokens, meta FROM records \
             WHERE job = ? AND seq >= ? AND seq < ? AND request IS NOT NULL ORDER BY seq",
        )
        .bind(job)
        .bind(first_seq as i64)
        .bind((first_seq + count) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to(WHAT))?;
        if records.len() as u64 != count {
            return Err(failed_to(WHAT)(sqlx::Error::RowNotFound));
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::super::records::tests::rec;
    use super::super::store::scratch;
    use super::*;

    #[tokio::test]
    async fn only_files_whose_records_all_have_a_request_are_clean() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        let mut records: Vec<_> = (0..6).map(|i| rec(i, &format!("r{i}"))).collect();
        records[4].request = None;
        store.insert_records("j", &records).await.unwrap();
        let span = |identity: &str, first_seq, n| InputSpan {
            identity: identity.into(),
            first_seq,
            records: n,
        };
        let spans = [span("a", 0, 3), span("b", 3, 3), span("empty", 6, 0)];
        store.write_input_spans("j", &spans).await.unwrap();
        let clean = store.clean_input_spans("j").await.unwrap();
        assert_eq!(clean.len(), 2, "{clean:?}");
        assert_eq!(clean["a"], (0, 3));
        assert_eq!(clean["empty"], (6, 0));
        let taken = store.records_from("j", 1, 2).await.unwrap();
        assert!(
            store.records_from("j", 3, 2).await.is_err(),
            "seq 4 has no request"
        );
        assert_eq!(
            taken
                .iter()
                .map(|r| r.record_id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(taken[0].request, "{\"n\":1}");
        // Gone with the job's state, and with an ingest that starts over.
        store.clear_records_from("j", 0).await.unwrap();
        assert!(store.clean_input_spans("j").await.unwrap().is_empty());
    }
}
