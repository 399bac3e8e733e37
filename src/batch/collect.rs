//! Collecting: a batch job that ended, read back from S3 into the checkpoint. Each `.out` line is joined to its
//! record by `recordId` (Bedrock does not keep the input's order); a record answered becomes a done outcome, one
//! with an `error` or with no line at all is failed or left pending for an on-demand call, as the job says.

use std::collections::HashSet;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::checkpoint::{BatchJobRow, Finished, Status, Store};
use crate::job::{BatchSettings, OnRecordError};
use crate::s3::{S3, S3ErrorKind, S3Uri};

use super::BatchError;
use super::stage::seq_of;

const PAGE: u32 = 1000;
const WRITE_EVERY: usize = 500;

/// What a batch job's results came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Records answered.
    pub answered: u64,
    /// Records with an `error`, or left out of the output.
    pub unanswered: u64,
    /// Of those, how many were marked failed (the rest stay pending, for on-demand calls).
    pub failed: u64,
    /// Input tokens of the records answered.
    pub input_tokens: u64,
    /// Output tokens of the records answered.
    pub output_tokens: u64,
}

impl Collected {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: Collected) {
        self.answered += other.answered;
        self.unanswered += other.unanswered;
        self.failed += other.failed;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// The records of a shard that have no outcome yet.
async fn open_records(store: &Store, job: &str, shard: u64) -> Result<HashSet<u64>, BatchError> {
    let (mut seqs, mut from) = (HashSet::new(), 0);
    loop {
        let page = store.shard_records(job, shard, from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        seqs.extend(page.iter().map(|r| r.seq));
    }
    Ok(seqs)
}

/// Reads the results of shard `row`'s batch job (ended with `status`) into outcomes.
pub async fn collect(
    store: &Store,
    s3: &S3,
    job: &str,
    settings: &BatchSettings,
    (row, status): (&BatchJobRow, &str),
) -> Result<Collected, BatchError> {
    let mut open = open_records(store, job, row.shard).await?;
    let mut c = Collected::default();
    let fail = settings.on_record_error == OnRecordError::Fail;
    if let Some(arn) = &row.arn {
        let job_id = arn.rsplit('/').next().unwrap_or(arn);
        let base = S3Uri::parse(&row.output_uri).map_err(|e| {
            BatchError::refused(
                format!("batch job {} has a bad output URI: {e}", row.shard),
                "start the job over with --fresh".into(),
            )
        })?;
        let prefix = format!("{}{job_id}/", base.key);
        let keys = match s3.keys(&base, &prefix).await {
            Ok(k) => k,
            Err(e) if e.kind == S3ErrorKind::NoSuchKey => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for key in keys
            .iter()
            .filter(|k| k.ends_with(".out") && !k.ends_with("manifest.json.out"))
        {
            read_file(
                store,
                s3,
                job,
                (&base.with_key(key.clone()), fail),
                &mut open,
                &mut c,
            )
            .await?;
        }
    }
    // A record with no line at all: the job failed, was stopped or expired before it, or left it out.
    let reason = format!(
        "batch job {} ended {status}{} without a result for this record",
        row.arn.as_deref().unwrap_or(&row.name),
        row.message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    c.unanswered += open.len() as u64;
    if fail {
        let mut missing: Vec<u64> = open.into_iter().collect();
        missing.sort_unstable();
        let outcomes: Vec<Finished> = missing
            .into_iter()
            .map(|seq| batch_failure(seq, "BatchRecordMissing", reason.clone()))
            .collect();
        c.failed += outcomes.len() as u64;
        for chunk in outcomes.chunks(WRITE_EVERY) {
            store.write_outcomes(job, chunk).await?;
        }
    }
    Ok(c)
}

fn batch_failure(seq: u64, code: &str, message: String) -> Finished {
    Finished {
        via_batch: true,
        ..Finished::failed(seq, 1, code, message)
    }
}

/// One `.out` file's lines, joined to the open records and written as outcomes as they come.
async fn read_file(
    store: &Store,
    s3: &S3,
    job: &str,
    (uri, fail): (&S3Uri, bool),
    open: &mut HashSet<u64>,
    c: &mut Collected,
) -> Result<(), BatchError> {
    let body = s3.get(uri, "").await?;
    let mut lines = tokio::io::BufReader::new(body.into_async_read()).lines();
    let mut outcomes = Vec::new();
    while let Some(line) = lines.next_line().await.map_err(|e| BatchError::Read {
        uri: uri.to_string(),
        message: e.to_string(),
    })? {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(seq) = v["recordId"]
            .as_str()
            .and_then(seq_of)
            .filter(|s| open.remove(s))
        else {
            continue;
        };
        if let Some(out) = v.get("modelOutput") {
            let (input, output) = crate::invoke::usage_of(out).unwrap_or((0, 0));
            c.answered += 1;
            c.input_tokens += input;
            c.output_tokens += output;
            outcomes.push(Finished {
                seq,
                status: Status::Done,
                attempts: 1,
                result: Some(out.to_string()),
                error_code: None,
                error_message: None,
                input_tokens: input,
                output_tokens: output,
                latency_ms: 0,
                call_records: None,
                target: None,
                tier: None,
                cached: (0, 0),
                via_batch: true,
            });
        } else {
            c.unanswered += 1;
            let e = &v["error"];
            let message = format!(
                "the batch job answered error {}: {}",
                e["errorCode"],
                e["errorMessage"].as_str().unwrap_or("(no message)")
            );
            if fail {
                c.failed += 1;
                outcomes.push(batch_failure(seq, "BatchRecordError", message));
            }
        }
        if outcomes.len() >= WRITE_EVERY {
            store
                .write_outcomes(job, &std::mem::take(&mut outcomes))
                .await?;
        }
    }
    store.write_outcomes(job, &outcomes).await?;
    Ok(())
}
