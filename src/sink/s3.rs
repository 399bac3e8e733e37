//! Publishing to an S3 prefix: one PutObject, or a multipart upload (begun, pieces sent, completed) for output
//! larger than one [`crate::s3::MULTIPART_CHUNK`]; either way S3 shows the object whole or not at all. The
//! caller decides which, and records multipart upload ids (so that a later run can abort an upload a crash left
//! open).

use crate::s3::{CompletedPart, S3, S3Error, S3Uri};

/// An S3 output prefix.
#[derive(Debug, Clone)]
pub struct S3Sink {
    s3: S3,
    prefix: S3Uri,
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".jsonl") {
        "application/x-ndjson"
    } else if name.ends_with(".csv") {
        "text/csv"
    } else {
        "application/json"
    }
}

impl S3Sink {
    /// The sink for `prefix` (`s3://bucket/prefix/`), once the bucket is known to be reachable.
    pub async fn open(s3: S3, prefix: &S3Uri) -> Result<S3Sink, S3Error> {
        s3.check_bucket(prefix).await?;
        Ok(S3Sink {
            s3,
            prefix: prefix.clone(),
        })
    }

    /// The URI of output `name`.
    pub fn uri(&self, name: &str) -> S3Uri {
        self.prefix.with_key(self.prefix.child(name))
    }

    /// Publishes `bytes` as `name` in one request.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), S3Error> {
        self.s3
            .put(&self.uri(name), bytes, content_type(name))
            .await
    }

    /// Starts a multipart upload of `name`; returns its id.
    pub async fn begin_upload(&self, name: &str) -> Result<String, S3Error> {
        self.s3
            .create_upload(&self.uri(name), content_type(name))
            .await
    }

    /// Sends piece `number` (from 1) of the upload; on failure, aborts it (best effort) and returns the error.
    pub async fn upload_piece(
        &self,
        name: &str,
        upload_id: &str,
        number: i32,
        bytes: Vec<u8>,
    ) -> Result<CompletedPart, S3Error> {
        let uri = self.uri(name);
        match self.s3.upload_piece(&uri, upload_id, number, bytes).await {
            Ok(piece) => Ok(piece),
            Err(e) => {
                let _ = self.s3.abort_upload(&uri, upload_id).await;
                Err(e)
            }
        }
    }

    /// Completes the upload; on failure, aborts it (best effort) and returns the error.
    pub async fn complete_upload(
        &self,
        name: &str,
        upload_id: &str,
        pieces: Vec<CompletedPart>,
    ) -> Result<(), S3Error> {
        let uri = self.uri(name);
        match self.s3.complete_upload(&uri, upload_id, pieces).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.s3.abort_upload(&uri, upload_id).await;
                Err(e)
            }
        }
    }

    /// Aborts an upload of the object `key` (as recorded by an earlier run).
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.s3
            .abort_upload(&self.prefix.with_key(key), upload_id)
            .await
    }

    /// Removes what a run of batchrun writes below the prefix (parts and manifest), for a fresh start; the
    /// manifest first, so a removal cut short never leaves a manifest that lists missing parts.
    pub async fn clear(&self) -> Result<(), S3Error> {
        let below = self.prefix.child("");
        let mut ours: Vec<String> = self
            .s3
            .keys(&self.prefix, &below)
            .await?
            .into_iter()
            .filter(|key| super::is_ours(&key[below.len()..]))
            .collect();
        ours.sort_by_key(|key| &key[below.len()..] != "manifest.json");
        for key in ours {
            self.s3.delete(&self.prefix.with_key(key)).await?;
        }
        Ok(())
    }
}
