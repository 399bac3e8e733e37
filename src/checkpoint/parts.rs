//! Tables `parts` and `uploads`: the output parts published so far, and the multipart uploads to S3 that were
//! started and not yet completed or aborted (so that a later run can abort what a dead one left).

use sqlx::FromRow;

use super::store::{CheckpointError, Store, failed_to, now};

/// A published part.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
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

/// A multipart upload that was started and not finished.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OpenUpload {
    /// The object key.
    pub key: String,
    /// S3's id of the upload.
    pub upload_id: String,
}

impl Store {
    /// Parts published so far, in order.
    pub async fn parts(&self, job: &str) -> Result<Vec<PartRow>, CheckpointError> {
        sqlx::query_as(
            "SELECT part, file, records, bytes, sha256 FROM parts WHERE job = ? ORDER BY part",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("list parts"))
    }

    /// Records a part as published; a part recorded already is kept as it was.
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
        .map_err(failed_to("record a published part"))?;
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
            .map_err(failed_to("note a started upload"))?;
        Ok(())
    }

    /// Forgets a multipart upload once it is completed or aborted.
    pub async fn end_upload(&self, job: &str, upload_id: &str) -> Result<(), CheckpointError> {
        sqlx::query("DELETE FROM uploads WHERE job = ? AND upload_id = ?")
            .bind(job)
            .bind(upload_id)
            .execute(&self.pool)
            .await
            .map_err(failed_to("forget an upload"))?;
        Ok(())
    }

    /// Multipart uploads started by earlier runs and never finished, oldest first.
    pub async fn open_uploads(&self, job: &str) -> Result<Vec<OpenUpload>, CheckpointError> {
        sqlx::query_as("SELECT key, upload_id FROM uploads WHERE job = ? ORDER BY started_at")
            .bind(job)
            .fetch_all(&self.pool)
            .await
            .map_err(failed_to("read open uploads"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::scratch;
    use super::*;

    #[tokio::test]
    async fn parts_are_kept_in_order_and_uploads_outlive_a_fresh_start() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        let part = |n: u64| PartRow {
            part: n,
            file: format!("part-{n:05}.jsonl"),
            records: 3,
            bytes: 10 * n,
            sha256: "ab".into(),
        };
        store.record_part("j", &part(2)).await.unwrap();
        store.record_part("j", &part(1)).await.unwrap();
        // Recording a part again keeps the first row.
        let mut changed = part(1);
        changed.bytes = 999;
        store.record_part("j", &changed).await.unwrap();
        assert_eq!(store.parts("j").await.unwrap(), vec![part(1), part(2)]);

        store
            .begin_upload("j", "out/part-00003.jsonl", "u1")
            .await
            .unwrap();
        store.create_job("j", "fp2", "{}", "[]").await.unwrap();
        assert!(store.parts("j").await.unwrap().is_empty());
        assert_eq!(
            store.open_uploads("j").await.unwrap(),
            vec![OpenUpload {
                key: "out/part-00003.jsonl".into(),
                upload_id: "u1".into()
            }]
        );
        store.end_upload("j", "u1").await.unwrap();
        assert!(store.open_uploads("j").await.unwrap().is_empty());
    }
}
