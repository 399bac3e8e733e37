//! Bedrock batch inference as a way to run a job: the pending records staged on S3 in shards within the
//! batch limits, a model-invocation job created for each (at most `max-jobs-in-flight` at once), their state
//! polled with backoff, and their results joined back into the checkpoint, from where parts and manifest are
//! written as for an on-demand run.
//!
//! ```text
//!  plan shards ─► checkpoint (shard, token, records) ─► upload JSONL ─► create (token) ─► checkpoint (ARN)
//!      ─► poll … ended ─► read .out lines by recordId ─► outcomes (answered; failed or left for on demand)
//! ```
//!
//! Every step is noted before the next leaves this machine, so a process killed anywhere resumes where it was:
//! a shard without an ARN is uploaded and created again with the same token (Bedrock gives back the job the
//! token made), a job with an ARN is polled again, results already joined are kept (outcomes are written once).
//! The batch jobs are AWS's once created: Ctrl-C leaves them running, and `batchrun cancel` stops them.

pub mod collect;
pub mod control;
pub mod stage;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::checkpoint::{BatchJobRow, BatchProgress, CREATING, CheckpointError, STAGED, Store};
use crate::job::{BatchSettings, Job, Mode};
use crate::s3::{S3, S3Error};

pub use control::{Control, ControlClass, ControlError, ended};

/// Why batch inference could not go on.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The state database failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Staging or reading results on S3 failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A result file could not be read whole.
    #[error("failed to read batch results {uri}: {message}")]
    Read {
        /// The object.
        uri: String,
        /// Why.
        message: String,
    },
    /// Bedrock refused what was asked, and asking again does not help.
    #[error("{message}")]
    Refused {
        /// What was refused, with Bedrock's words.
        message: String,
        /// What to do.
        hint: String,
    },
}

impl BatchError {
    /// A refusal with what to do about it.
    pub fn refused(message: String, hint: String) -> BatchError {
        BatchError::Refused { message, hint }
    }
}

/// How the batch phase of a run ended.
#[derive(Debug)]
pub enum Ended {
    /// Every batch job ended and its results were joined (this run joined these): the records left pending go
    /// on demand.
    Done(collect::Collected),
    /// Stopped (Ctrl-C) with these batch jobs still at Bedrock.
    Interrupted(Vec<BatchJobRow>),
}

/// Which way a run sends its records, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Batch, or on demand.
    pub batch: bool,
    /// Why, in a sentence.
    pub why: String,
}

/// The way `job` sends `pending` records: its mode, and for `auto` the size and deadline rules.
pub fn choose(job: &Job, pending: u64) -> Choice {
    let on_demand = |why: String| Choice { batch: false, why };
    let Some(b) = &job.batch else {
        return on_demand("the job has no [batch] table".into());
    };
    let too_few = || {
        format!(
            "{pending} records are fewer than a batch job takes (batch.min-records = {})",
            b.min_records
        )
    };
    match job.mode {
        Mode::OnDemand => on_demand("job.mode = \"on-demand\"".into()),
        _ if pending < b.min_records => on_demand(too_few()),
        Mode::Batch => Choice {
            batch: true,
            why: format!(
                "{pending} records, at least the {} a batch job takes",
                b.min_records
            ),
        },
        Mode::Auto => match job.deadline {
            Some(d) if d < Duration::from_secs(u64::from(b.timeout_hours) * 3600) => {
                on_demand(format!(
                    "the deadline ({} h) is shorter than the {} h Bedrock may take for a batch job \
                 (batch.timeout-hours)",
                    fmt_hours(d),
                    b.timeout_hours
                ))
            }
            deadline => Choice {
                batch: true,
                why: format!(
                    "{pending} records (at least {}) and {}: the batch price, about half of on demand",
                    b.min_records,
                    match deadline {
                        Some(d) => format!(
                            "a deadline of {} h that a batch job's {} h fits",
                            fmt_hours(d),
                            b.timeout_hours
                        ),
                        None => "no deadline".into(),
                    }
                ),
            },
        },
    }
}

impl Choice {
    /// `mode auto: batch inference — why`, as `submit` and `plan` say it.
    pub fn describe(&self, mode: Mode) -> String {
        format!(
            "mode {}: {} — {}",
            mode.as_str(),
            if self.batch {
                "batch inference"
            } else {
                "on demand"
            },
            self.why
        )
    }
}

fn fmt_hours(d: Duration) -> String {
    let h = d.as_secs_f64() / 3600.0;
    if h.fract() == 0.0 {
        format!("{h:.0}")
    } else {
        format!("{h:.1}")
    }
}

/// The batch phase of one job's run.
pub struct Batch<'a> {
    /// The job (its name keys the checkpoint; its model and API shape the batch jobs).
    pub job: &'a Job,
    /// `[batch]`.
    pub settings: &'a BatchSettings,
    /// The checkpoint.
    pub store: &'a Store,
    /// Staging and results.
    pub s3: &'a S3,
    /// The control plane.
    pub control: Control,
}

/// What a poll round saw.
#[derive(Default)]
struct Round {
    changed: bool,
    /// Results joined this round.
    collected: collect::Collected,
    /// A call that waiting may fix failed; said once a round.
    waiting: Option<ControlError>,
}

impl Batch<'_> {
    /// Stages the records in no batch job yet (when `stage_new`), then creates, polls and collects batch jobs
    /// until every one has ended and been read, or `stop` is cancelled.
    pub async fn run(
        &self,
        stage_new: bool,
        stop: &CancellationToken,
    ) -> Result<Ended, BatchError> {
        let name = &self.job.name;
        if stage_new {
            let after = self
                .store
                .batch_jobs(name)
                .await?
                .last()
                .map_or(0, |r| r.shard);
            let staged = stage::plan(self.store, name, self.settings, after).await?;
            if staged > 0 {
                let rows = self.store.batch_jobs(name).await?;
                crate::say!(
                    "batch: {staged} records in {} batch job{} of at most {} records, staged under {}",
                    rows.len() as u64 - after,
                    if rows.len() as u64 - after == 1 {
                        ""
                    } else {
                        "s"
                    },
                    self.settings.records_per_job,
                    self.settings.staging
                );
            }
        }
        let mut wait = self.settings.poll;
        let mut total = collect::Collected::default();
        loop {
            let mut round = Round::default();
            self.poll(&mut round).await?;
            self.submit(&mut round).await?;
            total.add(round.collected);
            let rows = self.store.batch_jobs(name).await?;
            if rows.iter().all(|r| r.collected) {
                return Ok(Ended::Done(total));
            }
            if let Some(e) = round.waiting {
                crate::say!(
                    "batch: Bedrock's control plane answered {e}; trying again in {:.0?}",
                    wait
                );
            }
            wait = if round.changed {
                self.settings.poll
            } else {
                (wait * 2).min(self.settings.poll_max)
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    return Ok(Ended::Interrupted(rows.into_iter().filter(|r| r.arn.is_some() && !r.collected).collect()));
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reads the state of each batch job not yet collected, and collects those that ended.
    async fn poll(&self, round: &mut Round) -> Result<(), BatchError> {
        let name = &self.job.name;
        let rows = self.store.batch_jobs(name).await?;
        let total = rows.len();
        for row in rows.iter().filter(|r| !r.collected) {
            let Some(arn) = &row.arn else { continue };
            let progress = match self.control.get(arn).await {
                Ok(p) => p,
                Err(e) if e.class == ControlClass::NotFound => BatchProgress {
                    status: "Failed".into(),
                    message: Some(format!(
                        "Bedrock no longer knows this batch job ({})",
                        e.message
                    )),
                    ..BatchProgress::default()
                },
                Err(e) if e.class == ControlClass::Wait => {
                    round.waiting = Some(e);
                    continue;
                }
                Err(e) => {
                    return Err(BatchError::refused(
                        format!("batch: reading batch job {arn} was refused: {e}"),
                        "check that the credentials may call bedrock:GetModelInvocationJob".into(),
                    ));
                }
            };
            let before = (row.status.as_str(), row.processed);
            if before != (progress.status.as_str(), progress.processed) {
                round.changed = true;
                self.store
                    .set_batch_progress(name, row.shard, &progress, false)
                    .await?;
                if before.0 != progress.status {
                    crate::say!(
                        "batch: job {}/{total} {} → {} ({} of {} records processed)",
                        row.shard,
                        row.status,
                        progress.status,
                        progress.processed,
                        row.records
                    );
                }
            }
            if ended(&progress.status) {
                let row = BatchJobRow {
                    message: progress.message.clone(),
                    ..row.clone()
                };
                let c = collect::collect(
                    self.store,
                    self.s3,
                    name,
                    self.settings,
                    (&row, &progress.status),
                )
                .await?;
                self.store
                    .set_batch_progress(name, row.shard, &progress, true)
                    .await?;
                round.changed = true;
                round.collected.add(c);
                crate::say!(
                    "batch: job {}/{total} {}: {} records answered{}",
                    row.shard,
                    progress.status,
                    c.answered,
                    match (c.unanswered, c.failed) {
                        (0, _) => String::new(),
                        (n, 0) => format!(", {n} not (they go on demand)"),
                        (n, _) =>
                            format!(", {n} not (marked failed: batch.on-record-error = \"fail\")"),
                    }
                );
            }
        }
        Ok(())
    }

    /// Uploads and creates staged batch jobs while fewer than `max-jobs-in-flight` run.
    async fn submit(&self, round: &mut Round) -> Result<(), BatchError> {
        let name = &self.job.name;
        let rows = self.store.batch_jobs(name).await?;
        let running = rows
            .iter()
            .filter(|r| r.arn.is_some() && !ended(&r.status))
            .count() as u32;
        let slots = self.settings.max_jobs_in_flight.saturating_sub(running);
        let waiting = rows
            .iter()
            .filter(|r| r.arn.is_none() && (r.status == STAGED || r.status == CREATING));
        for row in waiting.take(slots as usize) {
            stage::upload(self.store, self.s3, name, row).await?;
            // From here the batch job may exist: a kill before its ARN is noted leaves a shard that is created
            // again with its token (Bedrock gives back the same job), and that `cancel` looks up by name.
            self.store.mark_batch_creating(name, row.shard).await?;
            let target = &self.job.targets[0];
            match self
                .control
                .create(row, &target.model, self.job.model.api, self.settings)
                .await
            {
                Ok(arn) => {
                    // Noted before anything else happens: a process killed now polls this job when resumed.
                    self.store.set_batch_arn(name, row.shard, &arn).await?;
                    round.changed = true;
                    crate::say!(
                        "batch: job {}/{} created: {arn} ({} records)",
                        row.shard,
                        rows.len(),
                        row.records
                    );
                }
                Err(e) if e.class == ControlClass::Wait => {
                    round.waiting = Some(e);
                    break;
                }
                Err(e) => {
                    return Err(BatchError::refused(
                        format!("batch: Bedrock refused to create batch job {} of {} ({}): {e}", row.shard, rows.len(), row.name),
                        "check batch.role-arn (the role needs s3:GetObject, s3:ListBucket and s3:PutObject on \
                         batch.staging, and Bedrock must be allowed to assume it), that the model offers batch \
                         inference in this region, and the batch limits; or run on demand with --mode on-demand"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether a shard's batch job may be running at Bedrock: created and not ended, or perhaps created (its ARN
/// not noted yet).
pub fn may_run(row: &BatchJobRow) -> bool {
    !row.collected
        && match &row.arn {
            Some(_) => !ended(&row.status),
            None => row.status == CREATING,
        }
}

/// Stops the job's batch jobs that have not ended (one perhaps created without its ARN noted is looked up by its
/// name), and gives up its staged ones that were never created (their records go on demand at the next run).
/// Returns what was done to each, in a line.
pub async fn cancel(
    store: &Store,
    job: &str,
    control: &Control,
) -> Result<Vec<String>, BatchError> {
    let mut said = Vec::new();
    for mut row in store.batch_jobs(job).await? {
        if row.collected || (row.arn.is_some() && ended(&row.status)) {
            continue;
        }
        if row.arn.is_none() && row.status == CREATING {
            match control.find(&row.name).await {
                Ok(Some((arn, status))) => {
                    store.set_batch_arn(job, row.shard, &arn).await?;
                    row.arn = Some(arn);
                    row.status = status;
                }
                Ok(None) => {}
                Err(e) => {
                    said.push(format!(
                        "job {}: {} could not be looked up: {e}",
                        row.shard, row.name
                    ));
                    continue;
                }
            }
        }
        let Some(arn) = &row.arn else {
            let p = BatchProgress {
                status: "Cancelled".into(),
                message: Some("cancelled before it was created".into()),
                ..BatchProgress::default()
            };
            store.set_batch_progress(job, row.shard, &p, true).await?;
            said.push(format!(
                "job {}: not created; given up ({} records go on demand at the next run)",
                row.shard, row.records
            ));
            continue;
        };
        if ended(&row.status) {
            continue;
        }
        match control.stop(arn).await {
            Ok(()) => {
                let p = BatchProgress {
                    status: "Stopping".into(),
                    message: None,
                    processed: row.processed,
                    succeeded: row.succeeded,
                    errored: row.errored,
                };
                store.set_batch_progress(job, row.shard, &p, false).await?;
                said.push(format!("job {}: {arn} stopping", row.shard));
            }
            Err(e) => said.push(format!(
                "job {}: {arn} could not be stopped: {e}",
                row.shard
            )),
        }
    }
    Ok(said)
}
