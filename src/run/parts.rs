//! Which records make which part, and publishing a part once all its records have an outcome.

use std::collections::BTreeSet;

use tokio::sync::watch;

use super::ingest::Progress;
use crate::checkpoint::{PartRow, Status, Store};
use crate::error::Error;
use crate::job::Job;
use crate::s3::{CompletedPart, MULTIPART_CHUNK};
use crate::sink::{
    Layout, LocalPart, Manifest, ManifestChanges, ManifestPart, Published, Sink, Tally,
    manifest_bytes, part_file_name, render_delete, render_rows, render_upserts,
};

// Rows read and rendered at a time while a part is written.
const PAGE_ROWS: u64 = 100;

/// A file or object being written.
struct Out {
    part: OpenPart,
    tally: Tally,
}

/// The part being written: a temporary file beside the output folder, or bytes on their way to S3.
enum OpenPart {
    Local(LocalPart),
    S3 {
        /// Bytes not yet sent.
        buffer: Vec<u8>,
        /// The multipart upload and its pieces, once the output outgrew one piece.
        upload: Option<(String, Vec<CompletedPart>)>,
    },
}

/// The job's parts: part `k` (from 1) holds the records with seq in `[(k-1)·n, k·n)`. While the inputs are
/// read, only the parts the ingest has passed are known; the last one is known once every input was read.
#[derive(Debug)]
pub struct Parts {
    job: Job,
    sink: Sink,
    ingest: watch::Receiver<Progress>,
    published: BTreeSet<u64>,
    /// An incremental job's generation: the change set goes beside the manifest, against this earlier
    /// generation's key (none for the first).
    changes: Option<Option<String>>,
}

impl Parts {
    /// The parts of `job` with the records its ingest stored (and stores), knowing which are already
    /// published. Multipart uploads an earlier run left open are aborted first.
    pub async fn load(
        job: &Job,
        sink: Sink,
        ingest: watch::Receiver<Progress>,
        store: &Store,
    ) -> Result<Parts, Error> {
        if let Sink::S3(s3) = &sink {
            for open in store.open_uploads(&job.name).await? {
                let (key, upload_id) = (open.key, open.upload_id);
                // Cleanup must not hold the output back: an upload that cannot be aborted (it completed just
                // before the crash, or the credentials lack s3:AbortMultipartUpload) is reported and forgotten.
                if let Err(e) = s3.abort_upload(&key, &upload_id).await {
                    crate::say!(
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
            ingest,
            published,
            changes: None,
        })
    }

    /// Writes `changes.jsonl` (against `previous`, a generation's key) before each manifest.
    pub fn write_changes_against(&mut self, previous: Option<String>) {
        self.changes = Some(previous);
    }

    /// Writes `changes.jsonl` from the checkpoint, a page at a time: upserts in input order, then deletes.
    async fn write_changes(
        &self,
        store: &Store,
        previous: Option<&str>,
    ) -> Result<ManifestChanges, Error> {
        let name = "changes.jsonl";
        let key = &self.job.name;
        let mut out = self.begin(name)?;
        let (mut upserts, mut failed) = (0, 0);
        let (mut from, total) = (0, self.ingest.borrow().records);
        while from < total {
            let to = (from + PAGE_ROWS).min(total);
            let rows = store.upserts(key, previous, from..to).await?;
            let done = rows.iter().filter(|r| r.status == Status::Done).count() as u64;
            upserts += done;
            failed += rows.len() as u64 - done;
            self.write(store, &mut out, name, render_upserts(&rows))
                .await?;
            from = to;
        }
        let deleted = match previous {
            Some(p) => store.deletes(key, p).await?,
            None => Vec::new(),
        };
        let deletes = deleted.len() as u64;
        for page in deleted.chunks(PAGE_ROWS as usize) {
            let bytes: Vec<u8> = page
                .iter()
                .flat_map(|d| render_delete(&d.record_id, d.meta.as_deref()))
                .collect();
            self.write(store, &mut out, name, bytes).await?;
        }
        let published = self.finish(store, out, name).await?;
        Ok(ManifestChanges {
            file: name.to_string(),
            against: previous.map(str::to_string),
            upserts,
            failed,
            deletes,
            sha256: published.sha256,
        })
    }

    /// Records in each part (the last may hold fewer).
    pub fn records_per_part(&self) -> u64 {
        self.job.output.records_per_part
    }

    /// How many parts the job has: while its inputs are read, how many it has whole.
    pub fn count(&self) -> u64 {
        let ingest = *self.ingest.borrow();
        match ingest.complete {
            true => ingest.records.div_ceil(self.records_per_part()),
            false => ingest.records / self.records_per_part(),
        }
    }

    fn range(&self, part: u64) -> (u64, u64) {
        let start = (part - 1) * self.records_per_part();
        let total = self.ingest.borrow().records;
        (start, (start + self.records_per_part()).min(total))
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
            if store.finished_among(&self.job.name, start..end).await? < end - start {
                continue;
            }
            let file = part_file_name(part, self.job.output.format);
            // Rendered a page of rows at a time, so memory holds a page, not the part.
            let mut out = self.begin(&file)?;
            let mut from = start;
            while from < end {
                let to = (from + PAGE_ROWS).min(end);
                let rows = store.output_rows(&self.job.name, from..to).await?;
                debug_assert_eq!(rows.len() as u64, to - from);
                let bytes = render_rows(&rows, Layout::of(&self.job), from == start);
                self.write(store, &mut out, &file, bytes).await?;
                from = to;
            }
            let published = self.finish(store, out, &file).await?;
            crate::say::event(
                "part",
                serde_json::json!({
                    "job": self.job.name, "file": file, "records": end - start, "bytes": published.bytes,
                }),
            );
            store
                .record_part(
                    &self.job.name,
                    &PartRow {
                        part,
                        file,
                        records: end - start,
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

    /// Starts publishing `name`.
    fn begin(&self, name: &str) -> Result<Out, Error> {
        let part = match &self.sink {
            Sink::Local(local) => OpenPart::Local(local.begin(name)?),
            Sink::S3(_) => OpenPart::S3 {
                buffer: Vec::new(),
                upload: None,
            },
        };
        Ok(Out {
            part,
            tally: Tally::default(),
        })
    }

    /// Appends `bytes` to `out`. In S3, output beyond one piece starts a multipart upload, whose id is in the
    /// checkpoint before any piece is sent, and goes up a piece at a time.
    async fn write(
        &self,
        store: &Store,
        out: &mut Out,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        out.tally.add(&bytes);
        match (&mut out.part, &self.sink) {
            (OpenPart::Local(file), _) => file.write(&bytes)?,
            (OpenPart::S3 { buffer, upload }, Sink::S3(s3)) => {
                buffer.extend_from_slice(&bytes);
                // A piece goes only once more follows it, so the last piece is never empty.
                while buffer.len() > MULTIPART_CHUNK {
                    if upload.is_none() {
                        let id = s3.begin_upload(name).await?;
                        store
                            .begin_upload(&self.job.name, &s3.uri(name).key, &id)
                            .await?;
                        *upload = Some((id, Vec::new()));
                    }
                    let (id, pieces) = upload.as_mut().expect("started above");
                    let piece: Vec<u8> = buffer.drain(..MULTIPART_CHUNK).collect();
                    let number = pieces.len() as i32 + 1;
                    pieces.push(s3.upload_piece(name, id, number, piece).await?);
                }
            }
            (OpenPart::S3 { .. }, Sink::Local(_)) => unreachable!("an S3 part of a local sink"),
        }
        Ok(())
    }

    /// Makes `out` visible as `name`, whole.
    async fn finish(&self, store: &Store, out: Out, name: &str) -> Result<Published, Error> {
        match (out.part, &self.sink) {
            (OpenPart::Local(file), _) => file.finish()?,
            (
                OpenPart::S3 {
                    buffer,
                    upload: None,
                },
                Sink::S3(s3),
            ) => s3.put(name, buffer).await?,
            (
                OpenPart::S3 {
                    buffer,
                    upload: Some((id, mut pieces)),
                },
                Sink::S3(s3),
            ) => {
                let number = pieces.len() as i32 + 1;
                pieces.push(s3.upload_piece(name, &id, number, buffer).await?);
                s3.complete_upload(name, &id, pieces).await?;
                store.end_upload(&self.job.name, &id).await?;
            }
            (OpenPart::S3 { .. }, Sink::Local(_)) => unreachable!("an S3 part of a local sink"),
        }
        Ok(out.tally.done())
    }

    /// Publishes `bytes` as `name` (the manifest).
    async fn publish(&self, store: &Store, name: &str, bytes: Vec<u8>) -> Result<Published, Error> {
        let mut out = self.begin(name)?;
        self.write(store, &mut out, name, bytes).await?;
        self.finish(store, out, name).await
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
        let changes = match &self.changes {
            Some(previous) => Some(self.write_changes(store, previous.as_deref()).await?),
            None => None,
        };
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
            changes,
        };
        self.publish(store, "manifest.json", manifest_bytes(&manifest))
            .await?;
        Ok(manifest)
    }
}
