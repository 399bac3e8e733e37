//! Ingest: every input record into the checkpoint, once, in input order, a batch at a time as
//! [`source::read_in_batches`] reads them. Bad lines and duplicate ids are stored as failed records with their
//! reason, so they appear in the output like any other record.
//!
//! A run sends while it ingests: each batch is stored whole (its records, its bad lines' outcomes, the answers
//! an incremental job takes from earlier generations) before the checkpoint's mark of how far the ingest got
//! moves past it and the senders are told ([`Progress`]). Only records below the mark are ever sent, so an ingest
//! that stops (Ctrl-C, a crash, an input that cannot be read) goes on from the mark the next time: what it
//! stored beyond it is removed, and the inputs are read again from the start with the first records counted
//! but not stored again (the inputs are the same: the job's fingerprint says so).
//!
//! An incremental job also notes which records each file gave ([`InputSpan`]), and a later generation with the
//! same settings takes the records of a file whose identity did not change (path, size and modification time;
//! for S3, size and ETag) from the generation before instead of reading it: the same items a read would give,
//! through the same checks, without the download and the chunking.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
    /// Records stored, with those an earlier ingest stored.
    pub records: u64,
    /// Input files read.
    pub read: usize,
    /// Input files whose records were taken from an earlier generation.
    pub taken: usize,
    /// Records answered from an earlier generation.
    pub reused: u64,
    /// Every input was read; `false` when the ingest was stopped.
    pub complete: bool,
}

/// How far an ingest got, as the senders see it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Records stored whole: those at positions `0..records` may be sent.
    pub records: u64,
    /// Of the records this ingest stored, those to send (not bad lines, duplicates, or records answered from
    /// an earlier generation).
    pub sendable: u64,
    /// Every input was read: no record comes after `records`.
    pub complete: bool,
}

/// An ingest: where its records go, what it may take and reuse, and who follows it.
pub struct Ingest<'a> {
    /// The job.
    pub job: &'a Job,
    /// The checkpoint.
    pub store: &'a Store,
    /// The S3 client, for S3 inputs.
    pub s3: Option<&'a S3>,
    /// An incremental job: its unchanged files and the generation to take them from.
    pub unchanged: Option<&'a Unchanged>,
    /// An incremental job: the earlier generations whose answers a record takes before it may be sent.
    pub reuse_from: &'a [String],
    /// Records an earlier ingest of the same inputs stored whole: read again, not stored again.
    pub from: u64,
    /// Told after each batch.
    pub progress: watch::Sender<Progress>,
}

impl Ingest<'_> {
    /// Reads every input into the checkpoint and marks the ingest complete, or stops early when `stop` is
    /// cancelled. With `unchanged` (an incremental job), notes each file's records and takes those of
    /// unchanged files from the earlier generation it names.
    pub async fn run(
        self,
        files: Vec<InputFile>,
        stop: &CancellationToken,
    ) -> Result<Ingested, Error> {
        let (job, store, unchanged) = (self.job, self.store, self.unchanged);
        store.clear_records_from(&job.name, self.from).await?;
        let identities: Vec<String> = files.iter().map(identity).collect();
        let earlier = |i: usize| {
            let u = unchanged?;
            let (key, _) = u.from.as_ref()?;
            u.spans
                .get(&identities[i])
                .map(|&span| (key.as_str(), span))
        };
        let mut into = Into::new(&self);
        let (mut done, mut spans) = (Ingested::default(), Vec::new());
        let mut i = 0;
        while i < files.len() {
            if stop.is_cancelled() {
                return Ok(into.stopped());
            }
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
            let Some(counts) = into.read(files[i..end].to_vec(), self.s3, stop).await? else {
                return Ok(into.stopped());
            };
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
        self.progress.send_modify(|p| p.complete = true);
        Ok(Ingested {
            records: into.seq,
            reused: into.reused,
            complete: true,
            ..done
        })
    }
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
    reuse_from: &'a [String],
    progress: &'a watch::Sender<Progress>,
    /// Items before this position were stored whole by an earlier ingest.
    skip: u64,
    /// The next stored record's position.
    seq: u64,
    /// Records taken from an earlier generation, stored a batch at a time (a file gives a few).
    taken: Vec<Item>,
    /// Records answered from an earlier generation.
    reused: u64,
    warnings: Warnings,
}

impl<'a> Into<'a> {
    fn new(ingest: &'a Ingest<'a>) -> Self {
        Into {
            job: ingest.job,
            store: ingest.store,
            reuse_from: ingest.reuse_from,
            progress: &ingest.progress,
            skip: ingest.from,
            seq: 0,
            taken: Vec::new(),
            reused: 0,
            warnings: Warnings::default(),
        }
    }

    /// What an ingest stopped early did.
    fn stopped(self) -> Ingested {
        Ingested {
            records: self.seq.max(self.skip),
            reused: self.reused,
            ..Ingested::default()
        }
    }

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

    /// Reads `files` and stores their items; returns how many items each file gave, or `None` when `stop` was
    /// cancelled first.
    async fn read(
        &mut self,
        files: Vec<InputFile>,
        s3: Option<&S3>,
        stop: &CancellationToken,
    ) -> Result<Option<Vec<u64>>, Error> {
        self.flush().await?;
        let (mut rx, reader) = source::read_in_batches(self.job, files, s3);
        loop {
            let items = tokio::select! {
                // Dropping the receiver stops the reading thread at its next batch.
                _ = stop.cancelled() => return Ok(None),
                items = rx.recv() => items,
            };
            let Some(items) = items else { break };
            self.store(items).await?;
        }
        Ok(Some(Error::joined(reader.await, "input reader")??))
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

    /// Stores a batch of items whole (good ones as records, bad ones and duplicate ids as failed records, the
    /// answers earlier generations got), then moves the mark past it. Items an earlier ingest stored are counted,
    /// not stored again.
    async fn store(&mut self, mut items: Vec<Item>) -> Result<(), Error> {
        let (job, store) = (self.job, self.store);
        let stored = self.skip.saturating_sub(self.seq).min(items.len() as u64);
        self.seq += stored;
        items.drain(..stored as usize);
        if items.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        let (rows, mut bad) = rows(job, items, &mut self.seq, &mut self.warnings);
        let duplicates = store.insert_records(&job.name, &rows).await?;
        let sent = |r: &NewRecord| r.request.is_some();
        let mut sendable =
            rows.iter().filter(|r| sent(r)).count() - duplicates.iter().filter(|r| sent(r)).count();
        if !duplicates.is_empty() {
            keep_duplicates(job, store, duplicates, &mut bad, &mut self.warnings).await?;
        }
        store.write_outcomes(&job.name, &bad).await?;
        let reused = store
            .reuse_answers(&job.name, self.reuse_from, first..self.seq)
            .await?;
        sendable -= reused as usize;
        self.reused += reused;
        store.note_ingested_upto(&job.name, self.seq).await?;
        let records = self.seq;
        self.progress.send_modify(|p| {
            p.records = records;
            p.sendable += sendable as u64;
        });
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

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;

    use super::*;

    fn job(dir: &Path, name: &str) -> Job {
        let text = format!(
            "[job]\nname = \"{name}\"\n[model]\nid = \"m\"\nmax-tokens = 50\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [output]\npath = \"out-{name}\"\n"
        );
        Job::parse(&text, &dir.join("job.toml")).unwrap()
    }

    /// Ingests `job` from `from`; with `stop_early`, stops it once it told of its first batch.
    async fn ingest(job: &Job, store: &Store, from: u64, stop_early: bool) -> Ingested {
        if from == 0 {
            store.create_job(&job.name, "fp", "{}", "[]").await.unwrap();
        }
        let files = source::list(job, None).await.unwrap();
        let (progress, mut following) = watch::channel(Progress::default());
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            if stop_early && following.changed().await.is_ok() {
                stopper.cancel();
            }
        });
        let ingest = Ingest {
            job,
            store,
            s3: None,
            unchanged: None,
            reuse_from: &[],
            from,
            progress,
        };
        ingest
            .run(files, &stop)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_ingest_stopped_midway_goes_on_from_its_mark_and_stores_what_one_whole_ingest_stores()
     {
        let dir = tempfile::tempdir().unwrap();
        let mut input = String::new();
        for i in 0..3000 {
            match i {
                4 => input.push_str("{not json\n"),
                // The same id as line 1, on the far side of where the ingest stops.
                1999 => input.push_str("{\"id\": \"r0\", \"prompt\": \"again\"}\n"),
                _ => writeln!(input, "{{\"id\": \"r{i}\", \"prompt\": \"p{i}\"}}").unwrap(),
            }
        }
        std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let (whole, resumed) = (job(dir.path(), "whole"), job(dir.path(), "resumed"));
        let done = run_stopped_and_resumed(&resumed, &store).await;
        assert_eq!((done.records, done.complete), (3000, true));
        assert_eq!(ingest(&whole, &store, 0, false).await.records, 3000);
        // What a run sends (good records, in order) and what it writes for the rest (failed outcomes).
        let stored = async |name: &str| {
            let pending = store.pending(name, 0..u64::MAX, 10_000).await.unwrap();
            let failed = store.output_rows(name, 0..3000).await.unwrap();
            (pending, failed)
        };
        let (a, b) = (stored(&whole.name).await, stored(&resumed.name).await);
        assert_eq!((a.0.len(), a.1.len()), (2998, 2));
        let first_difference = (
            a.0.iter().zip(&b.0).find(|(x, y)| x != y),
            a.1.iter().zip(&b.1).find(|(x, y)| x != y),
        );
        assert!(
            a == b,
            "the resumed ingest stored other rows than a whole one: {first_difference:?}"
        );
        let codes: Vec<_> = b.1.iter().map(|r| r.error_code.as_deref()).collect();
        assert_eq!(codes, [Some("InvalidInput"), Some("DuplicateId")]);
        let job = store.job(&resumed.name).await.unwrap().unwrap();
        assert!(job.ingested && job.total == 3000, "{job:?}");
    }

    /// Ingests `job`, stopped after its first batch; leaves rows beyond the mark as a crash in the middle of a
    /// batch would; then ingests again from the mark.
    async fn run_stopped_and_resumed(job: &Job, store: &Store) -> Ingested {
        let first = ingest(job, store, 0, true).await;
        let mark = store.job(&job.name).await.unwrap().unwrap();
        assert!(!first.complete && !mark.ingested, "{first:?} {mark:?}");
        assert!(mark.total > 0 && mark.total < 3000, "{mark:?}");
        let leftover = NewRecord {
            seq: mark.total,
            record_id: "half-stored".into(),
            location: "in.jsonl:0".into(),
            request: Some("{}".into()),
            est_tokens: 1,
            max_tokens: 1,
            meta: None,
            request_hash: None,
        };
        store.insert_records(&job.name, &[leftover]).await.unwrap();
        ingest(job, store, mark.total, false).await
    }
}
