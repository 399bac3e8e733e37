//! Ingest: every input record into the checkpoint, once, in input order, a batch at a time as
//! [`source::read_in_batches`] reads them. Bad lines and duplicate ids are stored as failed records with their
//! reason, so they appear in the output like any other record.

use sha2::{Digest, Sha256};

use crate::checkpoint::{Finished, NewRecord, Store};
use crate::error::Error;
use crate::job::Job;
use crate::s3::S3;
use crate::source::{self, InputFile, Item};

// Bad lines printed as warnings before the rest are only counted.
const WARN_LIMIT: usize = 20;

/// Reads every input into the checkpoint and marks the ingest complete. Returns the record count.
pub async fn ingest(
    job: &Job,
    files: Vec<InputFile>,
    s3: Option<&S3>,
    store: &Store,
) -> Result<u64, Error> {
    store.clear_records(&job.name).await?;
    let (mut rx, reader) = source::read_in_batches(job, files, s3);
    let mut seq = 0u64;
    let mut warnings = Warnings::default();
    while let Some(items) = rx.recv().await {
        let (rows, mut bad) = rows(job, items, &mut seq, &mut warnings);
        let duplicates = store.insert_records(&job.name, &rows).await?;
        if !duplicates.is_empty() {
            keep_duplicates(job, store, duplicates, &mut bad, &mut warnings).await?;
        }
        store.write_outcomes(&job.name, &bad).await?;
    }
    Error::joined(reader.await, "input reader")??;
    warnings.finish();
    store.mark_ingested(&job.name, seq).await?;
    Ok(seq)
}

/// Bad input lines, printed up to [`WARN_LIMIT`] and then only counted.
#[derive(Debug, Default)]
struct Warnings(usize);

impl Warnings {
    fn warn(&mut self, location: &str, message: &str) {
        self.0 += 1;
        if self.0 <= WARN_LIMIT {
            crate::say!("warning: {location}: {message}");
        }
    }

    fn finish(self) {
        if self.0 > WARN_LIMIT {
            crate::say!(
                "warning: … and {} more bad input lines (each is a failed record in the output)",
                self.0 - WARN_LIMIT
            );
        }
    }
}

/// A batch of items as rows numbered from `seq`, and the outcomes of the bad ones (failed at once).
fn rows(
    job: &Job,
    items: Vec<Item>,
    seq: &mut u64,
    warnings: &mut Warnings,
) -> (Vec<NewRecord>, Vec<Finished>) {
    let mut rows = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for item in items {
        match item {
            Item::Good(r) => rows.push(NewRecord {
                request_hash: Some(request_hash(job, &r.request)),
                seq: *seq,
                record_id: r.id,
                location: r.location,
                request: Some(r.request),
                est_tokens: r.est_tokens,
                max_tokens: r.max_tokens,
                meta: r.meta,
            }),
            Item::Bad(b) => {
                warnings.warn(&b.location, &b.message);
                bad.push(Finished::failed(*seq, 0, "InvalidInput", b.message));
                rows.push(NewRecord {
                    seq: *seq,
                    record_id: b.id.unwrap_or_else(|| b.location.clone()),
                    location: b.location,
                    request: None,
                    est_tokens: 0,
                    max_tokens: 0,
                    meta: None,
                    request_hash: None,
                });
            }
        }
        *seq += 1;
    }
    (rows, bad)
}

/// What identifies a request across generations: a SHA-256 of the model, the API and the body sent (which holds
/// every parameter), hex.
fn request_hash(job: &Job, request: &str) -> String {
    let mut h = Sha256::new();
    h.update(job.model.id.as_bytes());
    h.update([0]);
    h.update(format!("{:?}", job.model.api).as_bytes());
    h.update([0]);
    h.update(request.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows whose id was taken by an earlier row: each fails as `DuplicateId` and is stored under its location
/// (or, if that is taken too, its location and sequence number), so that it still appears once in the output.
async fn keep_duplicates(
    job: &Job,
    store: &Store,
    duplicates: Vec<NewRecord>,
    bad: &mut Vec<Finished>,
    warnings: &mut Warnings,
) -> Result<(), Error> {
    let mut renamed = Vec::with_capacity(duplicates.len());
    for d in duplicates {
        let first = store
            .location_of(&job.name, &d.record_id)
            .await?
            .unwrap_or_default();
        let message = format!(
            "duplicate id `{}` (first at {first}); this line is not sent",
            d.record_id
        );
        warnings.warn(&d.location, &message);
        bad.retain(|f| f.seq != d.seq);
        bad.push(Finished::failed(d.seq, 0, "DuplicateId", message));
        renamed.push(NewRecord {
            record_id: d.location.clone(),
            request: None,
            est_tokens: 0,
            max_tokens: 0,
            ..d
        });
    }
    for again in store.insert_records(&job.name, &renamed).await? {
        let id = format!("{}#{}", again.location, again.seq);
        store
            .insert_records(
                &job.name,
                &[NewRecord {
                    record_id: id,
                    ..again
                }],
            )
            .await?;
    }
    Ok(())
}
