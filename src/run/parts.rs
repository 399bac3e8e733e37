//! Which records make which part, and publishing a part once all its records have an outcome.

use std::collections::BTreeSet;

use crate::checkpoint::{PartRow, Store};
use crate::error::Error;
use crate::job::Job;
use crate::sink::{
    Manifest, ManifestPart, Published, S3Sink, Sink, manifest_bytes, part_file_name, render_part,
};

/// The job's parts: part `k` (from 1) holds the records with seq in `[(k-1)·n, k·n)`.
#[derive(Debug)]
pub struct Parts {
    job: Job,
    sink: Sink,
    total: u64,
    published: BTreeSet<u64>,
}

impl Parts {
    /// The parts of `job` with `total` records, knowing which are already published. Multipart uploads an
    /// earlier run left open are aborted first.
    pub async fn load(job: &Job, sink: Sink, total: u64, store: &Store) -> Result<Parts, Error> {
        if let Sink::S3(s3) = &sink {
            for (key, upload_id) in store.open_uploads(&job.name).await? {
                // Cleanup must not hold the output back: an upload that cannot be aborted (it completed just
                // before the crash, or the credentials lack s3:AbortMultipartUpload) is reported and forgotten.
                if let Err(e) = s3.abort_upload(&key, &upload_id).await {
                    eprintln!(
                        "warning: could not abort the unfinished upload {upload_id} of {e}; S3 keeps its pieces \
                         until they are aborted or a lifecycle rule removes them"
                    );
                }
                store.end_upload(&job.name, &upload_id).await?;
            }
        }
        let published = store
            .parts(&job.name)
            .await?
            .into_iter()
            .map(|p| p.part)
            .collect();
        Ok(Parts {
            job: job.clone(),
            sink,
            total,
            published,
        })
    }

    /// Records in each part (the last may hold fewer).
    pub fn records_per_part(&self) -> u64 {
        self.job.output.records_per_part
    }

    /// How many parts the job has.
    pub fn count(&self) -> u64 {
        self.total.div_ceil(self.records_per_part())
    }

    fn range(&self, part: u64) -> (u64, u64) {
        let start = (part - 1) * self.records_per_part();
        (start, (start + self.records_per_part()).min(self.total))
    }

    /// Publishes each of `parts` whose records all have an outcome. Returns how many were published.
    pub async fn publish_complete(
        &mut self,
        store: &Store,
        parts: impl IntoIterator<Item = u64>,
    ) -> Result<u64, Error> {
        let mut n = 0;
        for part in parts {
            if self.published.contains(&part) || part == 0 || part > self.count() {
                continue;
            }
            let (start, end) = self.range(part);
            if store.finished_between(&self.job.name, start, end).await? < end - start {
                continue;
            }
            let rows = store.output_rows(&self.job.name, start, end).await?;
            debug_assert_eq!(rows.len() as u64, end - start);
            let file = part_file_name(part, self.job.output.format);
            let published = self
                .publish(store, &file, render_part(&rows, self.job.output.format))
                .await?;
            store
                .record_part(
                    &self.job.name,
                    &PartRow {
                        part,
                        file,
                        records: rows.len() as u64,
                        bytes: published.bytes,
                        sha256: published.sha256,
                    },
                )
                .await?;
            self.published.insert(part);
            n += 1;
        }
        Ok(n)
    }

    /// Publishes `bytes` as `name`: atomically in a local folder; in S3 by one PutObject, or by a multipart
    /// upload whose id is in the checkpoint while it is open.
    async fn publish(&self, store: &Store, name: &str, bytes: Vec<u8>) -> Result<Published, Error> {
        let published = Published::of(&bytes);
        match &self.sink {
            Sink::Local(local) => {
                local.publish(name, &bytes)?;
            }
            Sink::S3(s3) if S3Sink::multipart(&bytes) => {
                let upload_id = s3.begin_upload(name).await?;
                store
                    .begin_upload(&self.job.name, &s3.uri(name).key, &upload_id)
                    .await?;
                s3.finish_upload(name, &upload_id, &bytes).await?;
                store.end_upload(&self.job.name, &upload_id).await?;
            }
            Sink::S3(s3) => s3.put(name, bytes).await?,
        }
        Ok(published)
    }

    /// Publishes every complete part not yet published (after a crash between a commit and a publish).
    pub async fn publish_all_complete(&mut self, store: &Store) -> Result<u64, Error> {
        self.publish_complete(store, 1..=self.count()).await
    }

    /// Parts published.
    pub fn published(&self) -> usize {
        self.published.len()
    }

    /// Writes `manifest.json` from the checkpoint.
    pub async fn write_manifest(&self, store: &Store) -> Result<Manifest, Error> {
        let counts = store.counts(&self.job.name).await?;
        let tokens = store.token_totals(&self.job.name).await?;
        let parts = store
            .parts(&self.job.name)
            .await?
            .into_iter()
            .map(|p| ManifestPart {
                file: p.file,
                records: p.records,
                bytes: p.bytes,
                sha256: p.sha256,
            })
            .collect();
        let manifest = Manifest {
            job: self.job.name.clone(),
            model_id: self.job.model.id.clone(),
            total_record_count: counts.total,
            processed_record_count: counts.done + counts.failed,
            success_record_count: counts.done,
            error_record_count: counts.failed,
            input_token_count: tokens.input,
            output_token_count: tokens.output,
            parts,
        };
        self.publish(store, "manifest.json", manifest_bytes(&manifest))
            .await?;
        Ok(manifest)
    }
}
