//! Ingest: every input record into the checkpoint, once, in input order, a batch at a time as
//! [`source::read_in_batches`] reads them. Bad lines and duplicate ids are stored as failed records with their
//! reason, so they appear in the output like any other record.
//!
//! An incremental job also notes which records each file gave ([`InputSpan`]), and a later generation with the
//! same settings takes the records of a file whose identity did not change (path, size and modification time;
//! for S3, size and ETag) from the generation before instead of reading it: the same items a read would give,
//! through the same checks, without the download and the chunking.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::checkpoint::{Finished, InputSpan, NewRecord, Store};
use crate::error::Error;
use crate::job::Job;
use crate::s3::S3;
use crate::source::{self, BATCH, InputFile, Item, Record};

// Bad lines printed as warnings before the rest are only counted.
const WARN_LIMIT: usize = 20;

/// What an incremental job's ingest notes and may take from an earlier generation.
#[derive(Debug, Default)]
pub struct Unchanged {
    /// The generation taken from: its key and its number.
    pub from: Option<(String, u64)>,
    /// The spans of its clean input files, by identity: `(first_seq, records)`.
    pub spans: HashMap<String, (u64, u64)>,
}

/// What an ingest did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// Records stored.
    pub records: u64,
    /// Input files read.
    pub read: usize,
    /// Input files whose records were taken from an earlier generation.
    pub taken: usize,
}

/// Reads every input into the checkpoint and marks the ingest complete. With `unchanged` (an incremental job),
/// notes each file's records and takes those of unchanged files from the earlier generation it names.
pub async fn ingest(
    job: &Job,
    files: Vec<InputFile>,
    s3: Option<&S3>,
    store: &Store,
    unchanged: Option<&Unchanged>,
) -> Result<Ingested, Error> {
    store.clear_records(&job.name).await?;
    let identities: Vec<String> = files.iter().map(identity).collect();
    let earlier = |i: usize| {
        let u = unchanged?;
        let (key, _) = u.from.as_ref()?;
        u.spans
            .get(&identities[i])
            .map(|&span| (key.as_str(), span))
    };
    let mut into = Into {
        job,
        store,
        seq: 0,
        taken: Vec::new(),
        warnings: Warnings::default(),
    };
    let (mut done, mut spans) = (Ingested::default(), Vec::new());
    let mut i = 0;
    while i < files.len() {
        let first = into.next_seq();
        if let Some((key, (from, count))) = earlier(i) {
            into.take(key, from, count).await?;
            spans.push(span(&identities[i], first, into.next_seq() - first));
            done.taken += 1;
            i += 1;
            continue;
        }
        // The files up to the next one that can be taken are read.
        let end = (i + 1..files.len())
            .find(|&j| earlier(j).is_some())
            .unwrap_or(files.len());
        let counts = into.read(files[i..end].to_vec(), s3).await?;
        let mut at = first;
        for (k, n) in counts.into_iter().enumerate() {
            spans.push(span(&identities[i + k], at, n));
            at += n;
        }
        done.read += end - i;
        i = end;
    }
    into.flush().await?;
    into.warnings.finish();
    if unchanged.is_some() {
        store.write_input_spans(&job.name, &spans).await?;
    }
    store.mark_ingested(&job.name, into.seq).await?;
    done.records = into.seq;
    Ok(done)
}

/// A file's identity as the fingerprint holds it.
fn identity(file: &InputFile) -> String {
    serde_json::to_string(file).expect("an input identity serializes")
}

fn span(identity: &str, first_seq: u64, records: u64) -> InputSpan {
    InputSpan {
        identity: identity.to_string(),
        first_seq,
        records,
    }
}

/// Items on their way into the checkpoint, numbered in input order.
struct Into<'a> {
    job: &'a Job,
    store: &'a Store,
    /// The next stored record's position.
    seq: u64,
    /// Records taken from an earlier generation, stored a batch at a time (a file gives a few).
    taken: Vec<Item>,
    warnings: Warnings,
}

impl Into<'_> {
    /// The position of the next record given.
    fn next_seq(&self) -> u64 {
        self.seq + self.taken.len() as u64
    }

    /// Stores the records taken and not yet stored.
    async fn flush(&mut self) -> Result<(), Error> {
        if !self.taken.is_empty() {
            let items = std::mem::take(&mut self.taken);
            self.store(items).await?;
        }
        Ok(())
    }

    /// Reads `files` and stores their items; returns how many items each file gave.
    async fn read(&mut self, files: Vec<InputFile>, s3: Option<&S3>) -> Result<Vec<u64>, Error> {
        self.flush().await?;
        let (mut rx, reader) = source::read_in_batches(self.job, files, s3);
        while let Some(items) = rx.recv().await {
            self.store(items).await?;
        }
        Ok(Error::joined(reader.await, "input reader")??)
    }

    /// Stores again the `count` records from `first_seq` on that generation `key` read from an unchanged file.
    async fn take(&mut self, key: &str, first_seq: u64, count: u64) -> Result<(), Error> {
        let mut taken = 0;
        while taken < count {
            let page = (count - taken).min(BATCH as u64);
            let records = self
                .store
                .records_from(key, first_seq + taken, page)
                .await?;
            taken += page;
            self.taken.extend(records.into_iter().map(|r| {
                Item::Good(Record {
                    id: r.record_id,
                    location: r.location,
                    request: r.request,
                    est_tokens: r.est_tokens,
                    max_tokens: r.max_tokens,
                    meta: r.meta,
                })
            }));
            if self.taken.len() >= BATCH {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Stores a batch of items: good ones as records, bad ones and duplicate ids as failed records.
    async fn store(&mut self, items: Vec<Item>) -> Result<(), Error> {
        let (job, store) = (self.job, self.store);
        let (rows, mut bad) = rows(job, items, &mut self.seq, &mut self.warnings);
        let duplicates = store.insert_records(&job.name, &rows).await?;
        if !duplicates.is_empty() {
            keep_duplicates(job, store, duplicates, &mut bad, &mut self.warnings).await?;
        }
        store.write_outcomes(&job.name, &bad).await?;
        Ok(())
    }
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
/// every parameter), its first 128 bits in hex (migration 0014 says why).
fn request_hash(job: &Job, request: &str) -> String {
    let mut h = Sha256::new();
    h.update(job.model.id.as_bytes());
    h.update([0]);
    h.update(format!("{:?}", job.model.api).as_bytes());
    h.update([0]);
    h.update(request.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
