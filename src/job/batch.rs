//! `job.mode`, `job.deadline-hours` and `[batch]`, checked: how a job's records reach Bedrock.

use std::time::Duration;

use super::check::{Checker, at_most, positive};
use super::error::JobError;
use super::settings::ModelSettings;
use super::spec::{Api, BatchTable, JobTable, Mode, OnRecordError};
use crate::s3::S3Uri;

/// Bedrock's defaults for a batch job's size: AWS's bedrock-batch-orchestrator sample uses 50,000 records a job
/// at most; current third-party code (and the quota some accounts show) takes 100 at least.
pub const DEFAULT_RECORDS_PER_JOB: u64 = 50_000;
/// The fewest records of a batch job, as above.
pub const DEFAULT_MIN_RECORDS: u64 = 100;
/// A batch job's input size, as the user guide's quota table has it (1 GB a file).
pub const DEFAULT_BYTES_PER_JOB: u64 = 1_000_000_000;
/// Batch jobs in flight per model (an AWS blog's figure, 10).
pub const DEFAULT_JOBS_IN_FLIGHT: u32 = 10;
/// CreateModelInvocationJob's `timeoutDurationInHours`: 24 to 168, 24 by default.
pub const DEFAULT_TIMEOUT_HOURS: u32 = 24;
const MIN_TIMEOUT_HOURS: u32 = 24;
const MAX_TIMEOUT_HOURS: u32 = 168;
const DEFAULT_POLL_SECS: f64 = 30.0;
const DEFAULT_POLL_MAX_SECS: f64 = 300.0;

/// `[batch]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    /// The role Bedrock assumes.
    pub role_arn: String,
    /// The staging prefix: inputs under `input/`, results under `output/`.
    pub staging: S3Uri,
    /// Most records a batch job.
    pub records_per_job: u64,
    /// Fewest records a batch job.
    pub min_records: u64,
    /// Most staged bytes a batch job.
    pub bytes_per_job: u64,
    /// Batch jobs in flight at once.
    pub max_jobs_in_flight: u32,
    /// `timeoutDurationInHours`.
    pub timeout_hours: u32,
    /// First wait between status checks.
    pub poll: Duration,
    /// Longest wait between status checks.
    pub poll_max: Duration,
    /// What becomes of a record the batch job did not answer.
    pub on_record_error: OnRecordError,
}

/// `job.mode` and `job.deadline-hours`, and `[batch]` when the job has one.
pub(super) fn batch_table(
    c: &Checker<'_>,
    j: &JobTable,
    b: Option<&BatchTable>,
    model: &ModelSettings,
) -> Result<(Mode, Option<Duration>, Option<BatchSettings>), JobError> {
    let deadline = match &j.deadline_hours {
        Some(h) if !(h.get_ref().is_finite() && *h.get_ref() > 0.0) => {
            return Err(c.at(
                h.span(),
                "job.deadline-hours must be a number of hours above 0",
            ));
        }
        Some(h) => Some(Duration::from_secs_f64(h.get_ref() * 3600.0)),
        None => None,
    };
    let Some(b) = b else {
        if j.mode != Mode::OnDemand {
            return Err(c.plain(format!(
                "job.mode = \"{}\" needs a [batch] table: role-arn (the IAM role Bedrock assumes to read and write \
                 the staged records) and staging (an S3 prefix, s3://bucket/prefix/)",
                j.mode.as_str()
            )));
        }
        return Ok((j.mode, deadline, None));
    };
    if model.api == Api::Embed {
        return Err(c.at(
            b.role_arn.span(),
            "[batch] takes one model input a record, and model.api = \"embed\" packs records into calls: use \
             api = \"invoke\" with input.body-template for an embedding model in batch",
        ));
    }
    Ok((j.mode, deadline, Some(settings(c, b)?)))
}

fn settings(c: &Checker<'_>, b: &BatchTable) -> Result<BatchSettings, JobError> {
    let role = b.role_arn.get_ref().trim();
    if !(role.starts_with("arn:") && role.contains(":iam::") && role.contains(":role/")) {
        return Err(c.at(
            b.role_arn.span(),
            format!(
                "batch.role-arn must be an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME, got `{role}`; the role \
                 needs s3:GetObject and s3:ListBucket on the staging prefix and s3:PutObject on it"
            ),
        ));
    }
    let staging = S3Uri::parse(b.staging.get_ref()).map_err(|e| {
        c.at(
            b.staging.span(),
            format!("batch.staging must be an S3 prefix, s3://bucket/prefix/: {e}"),
        )
    })?;
    let staging = if staging.key.is_empty() || staging.key.ends_with('/') {
        staging
    } else {
        let key = format!("{}/", staging.key);
        staging.with_key(key)
    };
    let (records_per_job, min_records, bytes_per_job) = sizes(c, b)?;
    let max_jobs_in_flight = positive(
        c,
        &b.max_jobs_in_flight,
        "batch.max-jobs-in-flight",
        "it caps the batch jobs running at once",
    )?
    .unwrap_or(DEFAULT_JOBS_IN_FLIGHT);
    let timeout_hours = match &b.timeout_hours {
        Some(h) if !(MIN_TIMEOUT_HOURS..=MAX_TIMEOUT_HOURS).contains(h.get_ref()) => {
            return Err(c.at(
                h.span(),
                format!(
                    "batch.timeout-hours must be from {MIN_TIMEOUT_HOURS} to {MAX_TIMEOUT_HOURS} (Bedrock's range), \
                     got {}",
                    h.get_ref()
                ),
            ));
        }
        Some(h) => *h.get_ref(),
        None => DEFAULT_TIMEOUT_HOURS,
    };
    let poll = poll_secs(c, &b.poll_secs, "batch.poll-secs", DEFAULT_POLL_SECS)?;
    let poll_max = poll_secs(
        c,
        &b.poll_max_secs,
        "batch.poll-max-secs",
        DEFAULT_POLL_MAX_SECS,
    )?
    .max(poll);
    Ok(BatchSettings {
        role_arn: role.to_string(),
        staging,
        records_per_job,
        min_records,
        bytes_per_job,
        max_jobs_in_flight,
        timeout_hours,
        poll,
        poll_max,
        on_record_error: b.on_record_error,
    })
}

/// `records-per-job`, `min-records` and `bytes-per-job`: each at least 1, the minimum no more than the most.
fn sizes(c: &Checker<'_>, b: &BatchTable) -> Result<(u64, u64, u64), JobError> {
    let records_per_job = positive(
        c,
        &b.records_per_job,
        "batch.records-per-job",
        "it caps the records of one batch job",
    )?
    .unwrap_or(DEFAULT_RECORDS_PER_JOB);
    let min_records = positive(
        c,
        &b.min_records,
        "batch.min-records",
        "it is the fewest records Bedrock takes in a batch job",
    )?
    .unwrap_or(DEFAULT_MIN_RECORDS);
    if min_records > records_per_job {
        let span = b
            .min_records
            .as_ref()
            .or(b.records_per_job.as_ref())
            .map(|s| s.span())
            .unwrap_or_default();
        return Err(c.at(
            span,
            format!(
                "batch.min-records ({min_records}) is more than batch.records-per-job ({records_per_job}): no batch \
                 job could be made"
            ),
        ));
    }
    let bytes_per_job = positive(
        c,
        &b.bytes_per_job,
        "batch.bytes-per-job",
        "it caps the staged size of one batch job",
    )?
    .unwrap_or(DEFAULT_BYTES_PER_JOB);
    Ok((records_per_job, min_records, bytes_per_job))
}

fn poll_secs(
    c: &Checker<'_>,
    v: &Option<toml::Spanned<f64>>,
    key: &str,
    default: f64,
) -> Result<Duration, JobError> {
    at_most(c, v.as_ref(), 3600.0, key, "poll at least once an hour")?;
    match v {
        Some(s) if s.get_ref().is_nan() || *s.get_ref() < 0.05 => {
            Err(c.at(s.span(), format!("{key} must be at least 0.05 seconds")))
        }
        Some(s) => Ok(Duration::from_secs_f64(*s.get_ref())),
        None => Ok(Duration::from_secs_f64(default)),
    }
}
