//! Staging: the pending records cut into shards within the batch limits, each noted in the checkpoint (with the
//! token its create will send) before it is written to S3 as Bedrock's JSONL, `{"recordId", "modelInput"}`.

use crate::checkpoint::{BatchJobRow, NewShard, Store};
use crate::job::BatchSettings;
use crate::s3::{MULTIPART_CHUNK, S3, S3Uri};

use super::BatchError;

const PAGE: u32 = 1000;
// What a line adds to its request body: `{"recordId":"00000000001","modelInput":…}` and the newline.
const LINE_OVERHEAD: u64 = 44;

/// A record's `recordId` in the staged file: its position, 11 digits (the user guide's example ids are 11
/// alphanumeric characters), so that results are joined back by position.
pub fn record_id(seq: u64) -> String {
    format!("{seq:011}")
}

/// The position a `recordId` names, if it is one of ours.
pub fn seq_of(record_id: &str) -> Option<u64> {
    record_id.parse().ok()
}

/// How many shards of what size `n` records make: as few as `records_per_job` allows, of equal size, so that
/// no last shard is left under the minimum.
pub fn shard_size(n: u64, settings: &BatchSettings) -> Option<u64> {
    if n < settings.min_records {
        return None;
    }
    let shards = n.div_ceil(settings.records_per_job);
    Some(n.div_ceil(shards))
}

/// A name Bedrock takes (`[a-zA-Z0-9]` then letters, digits, `-`, `+` and `.`, at most 63 characters).
fn job_name(job: &str, shard: u64, token: &str) -> String {
    let base: String = job
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(36)
        .collect();
    format!(
        "batchrun-{}-{shard:04}-{}",
        base.trim_matches('-'),
        &token[..8]
    )
}

/// Notes shards for the pending records in no batch job yet, numbered after `after`; records too few for a
/// batch job stay unbatched (they go on demand). Returns how many records were staged.
pub async fn plan(
    store: &Store,
    job: &str,
    settings: &BatchSettings,
    after: u64,
) -> Result<u64, BatchError> {
    let n = store.count_unbatched(job).await?;
    let Some(size) = shard_size(n, settings) else {
        return Ok(0);
    };
    let (mut shard, mut staged) = (after, 0);
    let (mut seqs, mut bytes, mut from) = (Vec::new(), 0u64, 0);
    loop {
        let page = store.unbatched(job, from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for r in page {
            let line = r.request.len() as u64 + LINE_OVERHEAD;
            if !seqs.is_empty() && bytes + line > settings.bytes_per_job {
                staged += note(store, job, settings, &mut shard, &mut seqs).await?;
                bytes = 0;
            }
            seqs.push(r.seq);
            bytes += line;
            if seqs.len() as u64 == size {
                staged += note(store, job, settings, &mut shard, &mut seqs).await?;
                bytes = 0;
            }
        }
    }
    if seqs.len() as u64 >= settings.min_records {
        staged += note(store, job, settings, &mut shard, &mut seqs).await?;
    }
    Ok(staged)
}

async fn note(
    store: &Store,
    job: &str,
    settings: &BatchSettings,
    shard: &mut u64,
    seqs: &mut Vec<u64>,
) -> Result<u64, BatchError> {
    *shard += 1;
    // Unique to this staging, not only to the shard's number: a token Bedrock still remembers from a job
    // started over with --fresh would give back that old job.
    let token = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let name = job_name(job, *shard, &token);
    let dir = format!("{}{name}/", settings.staging.key);
    let new = NewShard {
        shard: *shard,
        name,
        input_uri: settings
            .staging
            .with_key(format!("{dir}records.jsonl"))
            .to_string(),
        output_uri: settings.staging.with_key(format!("{dir}out/")).to_string(),
        token,
    };
    store.stage_shard(job, &new, seqs).await?;
    let n = seqs.len() as u64;
    seqs.clear();
    Ok(n)
}

/// Writes a shard's records to its input URI (again, after a crash: the same records, the same bytes), in one
/// request or, above a piece's size, as a multipart upload.
pub async fn upload(
    store: &Store,
    s3: &S3,
    job: &str,
    row: &BatchJobRow,
) -> Result<(), BatchError> {
    let uri = S3Uri::parse(&row.input_uri).map_err(|e| {
        BatchError::refused(
            format!(
                "batch job {} has a bad input URI {}: {e}",
                row.shard, row.input_uri
            ),
            "start the job over with --fresh".into(),
        )
    })?;
    let (mut body, mut from) = (Vec::new(), 0);
    let mut multipart: Option<(String, Vec<crate::s3::CompletedPart>)> = None;
    loop {
        let page = store.shard_records(job, row.shard, from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for r in page {
            body.extend_from_slice(b"{\"recordId\":\"");
            body.extend_from_slice(record_id(r.seq).as_bytes());
            body.extend_from_slice(b"\",\"modelInput\":");
            body.extend_from_slice(r.request.as_bytes());
            body.extend_from_slice(b"}\n");
        }
        if body.len() >= MULTIPART_CHUNK {
            let (id, pieces) = match &mut multipart {
                Some(m) => m,
                None => multipart.insert((
                    s3.create_upload(&uri, "application/jsonl").await?,
                    Vec::new(),
                )),
            };
            let number = pieces.len() as i32 + 1;
            pieces.push(
                s3.upload_piece(&uri, id, number, std::mem::take(&mut body))
                    .await?,
            );
        }
    }
    match multipart {
        None => s3.put(&uri, body, "application/jsonl").await?,
        Some((id, mut pieces)) => {
            if !body.is_empty() {
                let number = pieces.len() as i32 + 1;
                pieces.push(s3.upload_piece(&uri, &id, number, body).await?);
            }
            s3.complete_upload(&uri, &id, pieces).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_job: u64, min: u64) -> BatchSettings {
        BatchSettings {
            role_arn: "arn:aws:iam::1:role/r".into(),
            staging: S3Uri::parse("s3://bkt/s/").unwrap(),
            records_per_job: per_job,
            min_records: min,
            bytes_per_job: u64::MAX,
            max_jobs_in_flight: 2,
            timeout_hours: 24,
            poll: std::time::Duration::from_secs(1),
            poll_max: std::time::Duration::from_secs(2),
            on_record_error: crate::job::OnRecordError::OnDemand,
        }
    }

    #[test]
    fn shards_are_even_and_never_under_the_minimum() {
        assert_eq!(shard_size(99, &settings(1000, 100)), None);
        assert_eq!(shard_size(100, &settings(1000, 100)), Some(100));
        // 1,050 records, 1,000 a job: two of 525, not 1,000 and 50.
        assert_eq!(shard_size(1050, &settings(1000, 100)), Some(525));
        assert_eq!(shard_size(3000, &settings(1000, 100)), Some(1000));
        assert_eq!(shard_size(3001, &settings(1000, 100)), Some(751));
    }

    #[test]
    fn record_ids_round_trip_and_names_fit_bedrock() {
        assert_eq!(record_id(42), "00000000042");
        assert_eq!(seq_of(&record_id(42)), Some(42));
        assert_eq!(seq_of("abc"), None);
        let name = job_name("nightly rag/über", 3, "0123456789abcdef");
        assert_eq!(name, "batchrun-nightly-rag--ber-0003-01234567");
        assert!(name.len() <= 63);
    }
}
