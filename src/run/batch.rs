//! The batch phase of a run: when the job goes to Bedrock batch inference (or batch jobs of an earlier run are
//! still open), the inputs are read whole, the batch jobs made, followed and collected, and what is left
//! pending goes on to the on-demand run as any pending record does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::submit::{Held, Reading, read_inputs};
use crate::batch::{Batch, Control, Ended, choose, ended, may_run};
use crate::checkpoint::{BatchJobRow, Counts};
use crate::error::Error;
use crate::job::Mode;
use crate::report::RunStats;
use crate::s3::S3;

/// What the on-demand run goes on with after the batch phase; `None` when the run stopped in it.
pub(super) type AfterBatch<'a> = Option<(Option<Reading<'a>>, Counts)>;

/// Runs the batch phase when the job wants one (or has batch jobs open), else hands `reading` and `counts` on
/// as they are.
pub(super) async fn phase<'a>(
    h: &Held<'_>,
    stop: &tokio_util::sync::CancellationToken,
    stats: &Arc<RunStats>,
    (reading, counts): (Option<Reading<'a>>, Counts),
    s3: Option<&S3>,
) -> Result<AfterBatch<'a>, Error> {
    let (job, store) = (h.job, h.store);
    let open = store
        .batch_jobs(&job.name)
        .await?
        .iter()
        .any(|r| !r.collected);
    let Some(settings) = &job.batch else {
        if open {
            return Err(Error::Batch {
                message: format!(
                    "job `{}` has batch jobs at Bedrock from an earlier run, and no [batch] table now",
                    job.name
                ),
                hint: Some(format!(
                    "put the [batch] table back to collect their results, or stop them with `batchrun cancel {}`",
                    h.opts.job_file.display()
                )),
            });
        }
        return Ok(Some((reading, counts)));
    };
    if job.mode == Mode::OnDemand && !open {
        return Ok(Some((reading, counts)));
    }
    // The staging bucket is reached before the inputs are read, so that a wrong one stops the run at once.
    if let Some(s3) = s3 {
        s3.check_bucket(&settings.staging).await?;
    }
    // A batch job is made of records already stored: every input is read first.
    if let Some(r) = reading
        && !read_inputs(h, r, stop).await?.complete
    {
        return Ok(None);
    }
    let counts = store.counts(&job.name).await?;
    let choice = choose(job, counts.pending());
    if job.mode != Mode::OnDemand {
        crate::say!("{}", choice.describe(job.mode));
    }
    if !choice.batch && !open {
        return Ok(Some((None, counts)));
    }
    let s3 = s3.expect("a job with [batch] has an S3 client for its staging");
    run_batch(h, (settings, s3), choice.batch, stop, stats).await
}

/// Connects to the control plane (as the runtime is reached, through the job's first target) and runs the
/// batch jobs: those open, and new ones for the records in none when `stage_new`.
async fn run_batch<'a>(
    h: &Held<'_>,
    (settings, s3): (&crate::job::BatchSettings, &S3),
    stage_new: bool,
    stop: &tokio_util::sync::CancellationToken,
    stats: &Arc<RunStats>,
) -> Result<AfterBatch<'a>, Error> {
    let (job, store) = (h.job, h.store);
    // Held while the batch jobs are followed: it may keep what serves the control plane alive.
    let (control, _connection) = connect_control(job, h.opts.endpoints.as_ref()).await?;
    let batch = Batch {
        job,
        settings,
        store,
        s3,
        control,
    };
    match batch.run(stage_new, stop).await? {
        Ended::Done(c) => {
            stats.succeeded.fetch_add(c.answered, Ordering::Relaxed);
            stats.failed.fetch_add(c.failed, Ordering::Relaxed);
            stats
                .input_tokens
                .fetch_add(c.input_tokens, Ordering::Relaxed);
            stats
                .output_tokens
                .fetch_add(c.output_tokens, Ordering::Relaxed);
            let counts = store.counts(&job.name).await?;
            if counts.pending() > 0 {
                crate::say!(
                    "batch: done; {} records left to send on demand",
                    counts.pending()
                );
            }
            Ok(Some((None, counts)))
        }
        Ended::Interrupted(running) => {
            say_left_running(&running, &h.opts.job_file);
            Ok(None)
        }
    }
}

/// The control-plane client for the job, reached as its runtime is (through its first target's endpoint, region
/// and credentials), and the connection that serves it.
async fn connect_control(
    job: &crate::job::Job,
    endpoints: &dyn super::Endpoints,
) -> Result<(Control, super::Connection), Error> {
    let target = job.for_target(0);
    let connection = endpoints.connect(&target).await?;
    let sdk = crate::invoke::sdk_config(
        target.model.region.as_deref(),
        connection.url.as_deref(),
        connection.static_credentials,
    )
    .await;
    Ok((Control::new(&sdk), connection))
}

/// What Ctrl-C leaves behind: batch jobs that go on at Bedrock, and how to collect or stop them.
fn say_left_running(running: &[BatchJobRow], job_file: &std::path::Path) {
    let running: Vec<&BatchJobRow> = running.iter().filter(|r| !ended(&r.status)).collect();
    if running.is_empty() {
        return;
    }
    crate::say!(
        "{} batch job{} still running at Bedrock; they are AWS's now and go on without this process:",
        running.len(),
        if running.len() == 1 { " is" } else { "s are" }
    );
    for r in &running {
        crate::say!(
            "  job {}: {} ({}, {} records)",
            r.shard,
            r.arn.as_deref().unwrap_or("?"),
            r.status,
            r.records
        );
    }
    crate::say!(
        "`batchrun submit {0}` collects their results when they end; `batchrun cancel {0}` stops them",
        job_file.display()
    );
}

/// Refuses a fresh start while batch jobs of the job still run at Bedrock: their results would be lost and
/// their records paid for twice.
pub(super) async fn refuse_fresh_while_open(h: &Held<'_>) -> Result<(), Error> {
    let rows = h.store.batch_jobs(&h.job.name).await?;
    let open: Vec<&BatchJobRow> = rows.iter().filter(|r| may_run(r)).collect();
    if open.is_empty() {
        return Ok(());
    }
    Err(Error::Batch {
        message: format!(
            "job `{}` has {} batch job{} running at Bedrock (or being created); starting over now would lose their \
             results and pay for their records twice",
            h.job.name,
            open.len(),
            if open.len() == 1 { "" } else { "s" }
        ),
        hint: Some(format!(
            "stop them with `batchrun cancel {0}`, then run `batchrun submit {0} --fresh`",
            h.opts.job_file.display()
        )),
    })
}

/// `submit --mode`: the job's mode for this run; batch and auto need the job's `[batch]` table.
pub(super) fn set_mode(job: &mut crate::job::Job, mode: Mode) -> Result<(), Error> {
    if mode != Mode::OnDemand && job.batch.is_none() {
        return Err(Error::Batch {
            message: format!(
                "--mode {} needs a [batch] table in {}",
                mode.as_str(),
                job.file.display()
            ),
            hint: Some(
                "add [batch] with role-arn (the IAM role Bedrock assumes) and staging (an S3 prefix, \
                 s3://bucket/prefix/)"
                    .into(),
            ),
        });
    }
    job.mode = mode;
    Ok(())
}

/// `batchrun cancel`: stops the job's batch jobs that run at Bedrock, and gives up those staged and not yet
/// created. Returns a line for each.
pub async fn cancel(
    job_file: &std::path::Path,
    state: Option<std::path::PathBuf>,
    endpoints: &dyn super::Endpoints,
) -> Result<Vec<String>, Error> {
    let job = crate::job::Job::load(job_file)?;
    let state = state.unwrap_or_else(|| job.default_state_path());
    if !state.exists() {
        return Err(Error::NoState { path: state });
    }
    let store = crate::checkpoint::Store::open(&state).await?;
    let result = async {
        let (control, _connection) = connect_control(&job, endpoints).await?;
        let mut said = crate::batch::cancel(&store, &job.name, &control).await?;
        if said.is_empty() {
            said.push(format!("job `{}` has no batch jobs to stop", job.name));
        }
        Ok(said)
    }
    .await;
    store.close().await;
    result
}
