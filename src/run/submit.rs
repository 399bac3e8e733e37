//! The run itself: decide new, resume or refuse; ingest; send; publish; summarize.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connect::Endpoints;
use super::fingerprint::{Fingerprint, describe_changes};
use super::generation;
use super::ingest::{Ingest, Ingested, Progress, Unchanged};
use super::lock::{JobLock, NotLocked};
use super::parts::Parts;
use super::route::{Route, Routes};
use super::shutdown::Shutdown;
use super::{worker, writer};
use crate::budget::{Budget, LearnedRates, Second, ThrottleEvent, ThrottleKind};
use crate::checkpoint::{Counts, PendingRecord, RunRow, Store};
use crate::error::Error;
use crate::invoke::Invoker;
use crate::job::Job;
use crate::report::progress::{self, ProgressMode};
use crate::report::{RunStats, summary};
use crate::s3::S3;
use crate::sink::Sink;
use crate::source;

/// What `batchrun submit` was asked to do.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// The job file.
    pub job_file: PathBuf,
    /// The state database; `None` for the job's default (`.batchrun/state.db` beside the job file).
    pub state: Option<PathBuf>,
    /// Discard earlier state and output of this job and start over.
    pub fresh: bool,
    /// How long calls in flight may take to finish after the first Ctrl-C.
    pub grace: Duration,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// When another process runs the job, wait for it instead of exiting.
    pub wait: bool,
    /// How to reach Bedrock for the job.
    pub endpoints: Arc<dyn Endpoints>,
    /// `--mode`: how the records reach Bedrock, instead of the job file's `job.mode`.
    pub mode: Option<crate::job::Mode>,
}

/// How a run ended, when it did not end in an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every record has an outcome; `failed` of them failed.
    Finished {
        /// Failed records in the whole job.
        failed: u64,
    },
    /// Stopped early; records are pending and a resume continues.
    Interrupted,
}

// Records queued ahead of the workers: enough to keep them busy, few enough to stay small.
const QUEUE_PER_WORKER: usize = 2;
// At most this many records queued (a few megabytes of request bodies).
const MAX_QUEUE: usize = 8192;
const PAGE: u32 = 256;

/// Runs (or resumes) the job in `opts`, stopping early when `shutdown` says so.
pub async fn submit(opts: &SubmitOptions, shutdown: Shutdown) -> Result<RunOutcome, Error> {
    source::prepare();
    let mut job = Job::load(&opts.job_file)?;
    if let Some(mode) = opts.mode {
        super::batch::set_mode(&mut job, mode)?;
    }
    // S3 locations are checked (listed, the output bucket reached) before anything is sent.
    let s3 = s3_client(&job).await?;
    let files = source::list(&job, s3.as_ref()).await?;
    let state = opts
        .state
        .clone()
        .unwrap_or_else(|| job.default_state_path());
    let sink = generation::open_sink(&job.output.location, s3.as_ref()).await?;
    let store = Store::open(&state).await?;
    let lock = match JobLock::acquire(&store, &job.name, opts.wait, &shutdown).await? {
        Ok(lock) => lock,
        Err(NotLocked::Busy(holder)) => {
            store.close().await;
            return Err(Error::AlreadyRunning {
                name: job.name.clone(),
                path: opts.job_file.clone(),
                holder,
            });
        }
        Err(NotLocked::Stopped) => {
            store.close().await;
            return Ok(RunOutcome::Interrupted);
        }
    };
    let result = async {
        // Another run may have changed the inputs while this one waited for it.
        let files = if lock.waited() {
            source::list(&job, s3.as_ref()).await?
        } else {
            files
        };
        let Some(keep) = job.incremental else {
            let held = Held {
                job: &job,
                store: &store,
                opts,
                generation: None,
            };
            return locked(&held, files, s3.as_ref(), sink, &state, shutdown).await;
        };
        // An incremental job runs its current generation: a job of its own, with its own output folder.
        let hash = Fingerprint::of(&job, &files).hash;
        let current = generation::choose(&store, &job, &hash).await?;
        let gen_job = generation::job_for(&job, &current);
        let sink = generation::open_sink(&gen_job.output.location, s3.as_ref()).await?;
        let held = Held {
            job: &gen_job,
            store: &store,
            opts,
            generation: Some(&current),
        };
        let outcome = locked(&held, files, s3.as_ref(), sink, &state, shutdown).await?;
        if matches!(outcome, RunOutcome::Finished { .. }) {
            generation::conclude(&store, &job, &current, keep, s3.as_ref()).await?;
        }
        Ok(outcome)
    }
    .await;
    lock.release().await;
    store.close().await;
    result
}

/// What the run works with while this process holds the job's lock.
pub(super) struct Held<'a> {
    pub(super) job: &'a Job,
    pub(super) store: &'a Store,
    pub(super) opts: &'a SubmitOptions,
    /// An incremental job's generation.
    pub(super) generation: Option<&'a generation::Current>,
}

/// The run, once this process holds the job's lock.
async fn locked(
    h: &Held<'_>,
    files: Vec<source::InputFile>,
    s3: Option<&S3>,
    sink: Sink,
    state: &std::path::Path,
    shutdown: Shutdown,
) -> Result<RunOutcome, Error> {
    let (job, store) = (h.job, h.store);
    let fingerprint = Fingerprint::of(job, &files);
    reconcile(h, &fingerprint, &sink, state).await?;
    let stored = store.job(&job.name).await?.expect("the job row exists");
    let (progress, following) = watch::channel(Progress {
        records: stored.total,
        sendable: 0,
        complete: stored.ingested,
    });
    let mut parts = Parts::load(job, sink, following.clone(), store).await?;
    if let Some(g) = h.generation {
        parts.write_changes_against(g.previous.clone());
    }
    parts.publish_all_complete(store).await?;
    let counts = store.counts(&job.name).await?;
    if counts.pending() == 0 && stored.ingested && parts.published() as u64 == parts.count() {
        parts.write_manifest(store).await?;
        crate::say!(
            "job `{}` is already finished: {} succeeded, {} failed; output in {}",
            job.name,
            counts.done,
            counts.failed,
            job.output.location
        );
        return Ok(RunOutcome::Finished {
            failed: counts.failed,
        });
    }
    // Inputs not all read yet are read while the records already stored are sent.
    let reading = (!stored.ingested).then(|| Reading {
        files,
        s3,
        settings: fingerprint.settings,
        from: stored.total,
        progress,
    });

    let started = Instant::now();
    let stats = Arc::new(RunStats::default());
    stats.planned.store(counts.pending(), Ordering::Relaxed);
    let run_key = if counts.pending() > 0 || reading.is_some() {
        Some(store.start_run(&job.name, &run_row(job, &counts)).await?)
    } else {
        None
    };
    let result = async {
        let Some((reading, counts)) =
            super::batch::phase(h, &shutdown.stop, &stats, (reading, counts), s3).await?
        else {
            return Ok(RunOutcome::Interrupted);
        };
        let sending = Sending {
            counts,
            parts,
            reading,
            following,
        };
        run(h, shutdown, &stats, (started, run_key), sending).await
    }
    .await;
    if let Some(key) = run_key {
        note_end(h, (key, started), &stats, &result).await;
    }
    result
}

/// Notes how run `key` ended in the checkpoint, and says so in a `finish` event for a JSON log.
async fn note_end(
    h: &Held<'_>,
    (key, started): (i64, Instant),
    stats: &RunStats,
    result: &Result<RunOutcome, Error>,
) {
    let job = h.job;
    let outcome = match result {
        Ok(RunOutcome::Finished { .. }) => "finished".to_string(),
        Ok(RunOutcome::Interrupted) => "interrupted".to_string(),
        Err(e) => format!("stopped: {e}"),
    };
    // The run's own error is the one to report; failing to note its end (on a full disk, say) is not.
    if let Err(e) = h.store.end_run(&job.name, key, &outcome).await {
        crate::say!("warning: could not note the end of the run in the state database: {e}");
    }
    let s = stats.snapshot();
    crate::say::event(
        "finish",
        serde_json::json!({
            "job": job.name, "outcome": outcome, "seconds": started.elapsed().as_secs_f64(),
            "succeeded": s.succeeded, "failed": s.failed, "throttled": s.throttled,
            "transient": s.transient, "input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
        }),
    );
}

/// Inputs to read while the run sends.
pub(super) struct Reading<'a> {
    files: Vec<source::InputFile>,
    s3: Option<&'a S3>,
    /// The job's settings as its fingerprint holds them.
    settings: String,
    /// Records an earlier run stored whole before it stopped.
    from: u64,
    progress: watch::Sender<Progress>,
}

/// What a run starts from: the records stored, the parts, the inputs still to read.
struct Sending<'a> {
    /// Before this run.
    counts: Counts,
    parts: Parts,
    reading: Option<Reading<'a>>,
    /// How far the ingest got.
    following: watch::Receiver<Progress>,
}

/// New, resume or refuse: brings the stored job in line with the job file, or says why it cannot.
async fn reconcile(
    h: &Held<'_>,
    fingerprint: &Fingerprint,
    sink: &Sink,
    state: &std::path::Path,
) -> Result<(), Error> {
    let (job, store, opts) = (h.job, h.store, h.opts);
    let stored = store.job(&job.name).await?;
    // A run sends what it stored while it reads: a job whose inputs were not all read has paid for nothing when
    // no outcome came from a call, and then starts over with its new settings.
    let kept = match &stored {
        Some(s) if !s.ingested => store.any_called(&job.name).await?,
        Some(_) => true,
        None => false,
    };
    match stored {
        Some(stored) if stored.clearing => {
            crate::say!(
                "job `{}`: finishing a fresh start that was interrupted: earlier output removed, results discarded",
                job.name
            );
            start_over(job, fingerprint, sink, store).await?;
        }
        Some(stored) if !opts.fresh && fingerprint.matches(&stored_fingerprint(&stored)) => {
            crate::say!("resuming job `{}` (state {})", job.name, state.display());
        }
        Some(stored) if !opts.fresh && kept => {
            return Err(Error::JobChanged {
                name: job.name.clone(),
                path: opts.job_file.clone(),
                changes: describe_changes(&stored_fingerprint(&stored), fingerprint),
            });
        }
        _ => {
            if opts.fresh {
                super::batch::refuse_fresh_while_open(h).await?;
            }
            if kept {
                crate::say!(
                    "starting job `{}` over (--fresh): earlier results discarded",
                    job.name
                );
            }
            start_over(job, fingerprint, sink, store).await?;
        }
    }
    Ok(())
}

fn stored_fingerprint(stored: &crate::checkpoint::StoredJob) -> Fingerprint {
    Fingerprint {
        hash: stored.fingerprint.clone(),
        settings: stored.settings.clone(),
        inputs: stored.inputs.clone(),
    }
}

/// The run as the state database keeps it: the settings it ran with.
fn run_row(job: &Job, counts: &Counts) -> RunRow {
    RunRow {
        started_at: 0,
        ended_at: None,
        outcome: None,
        model_id: job.model.id.clone(),
        max_tokens: job.model.max_tokens.map(u64::from),
        burndown: u64::from(job.model.output_burndown),
        budget_rpm: job.budget.rpm,
        budget_tpm: job.budget.tpm,
        max_concurrency: u64::from(job.budget.max_concurrency),
        pending: counts.pending(),
        budget_from: None,
        waiting_until: None,
        waiting_reason: None,
    }
}

/// Discards the job's earlier output and state, so that whatever stops this midway, the next run finishes
/// it first: the job is marked as clearing, its output removed, then its state reset in one transaction.
async fn start_over(
    job: &Job,
    fingerprint: &Fingerprint,
    sink: &Sink,
    store: &Store,
) -> Result<(), Error> {
    store.mark_clearing(&job.name).await?;
    match sink {
        Sink::Local(local) => local.clear()?,
        Sink::S3(s3) => s3.clear().await?,
    }
    store
        .create_job(
            &job.name,
            &fingerprint.hash,
            &fingerprint.settings,
            &fingerprint.inputs,
        )
        .await?;
    Ok(())
}

/// Sends the pending records (if any) while the inputs not yet read are read, then publishes what is complete
/// and the manifest.
async fn run(
    h: &Held<'_>,
    shutdown: Shutdown,
    stats: &Arc<RunStats>,
    (started, run_key): (Instant, Option<i64>),
    sending: Sending<'_>,
) -> Result<RunOutcome, Error> {
    let (job, store, opts) = (h.job, h.store, h.opts);
    let job_file = opts.job_file.display().to_string();
    let following = sending.following.clone();
    let mut parts = match sending.counts.pending() > 0 || sending.reading.is_some() {
        true => read_and_send(h, shutdown, stats, run_key, sending).await?,
        false => sending.parts,
    };

    let counts = store.counts(&job.name).await?;
    let all_read = following.borrow().complete;
    if counts.pending() > 0 || !all_read {
        crate::say!(
            "{}",
            summary::interrupted(
                counts.done + counts.failed,
                counts.pending(),
                all_read,
                &job_file
            )
        );
        return Ok(RunOutcome::Interrupted);
    }
    parts.publish_all_complete(store).await?;
    parts.write_manifest(store).await?;
    store.mark_finished(&job.name).await?;
    crate::say!(
        "{}",
        summary::finished(
            &stats.snapshot(),
            started.elapsed(),
            counts.done,
            counts.failed
        )
    );
    crate::say!(
        "output: {} ({} part{}, manifest.json)",
        job.output.location,
        parts.published(),
        if parts.published() == 1 { "" } else { "s" }
    );
    Ok(RunOutcome::Finished {
        failed: counts.failed,
    })
}

/// Reads the inputs not yet read while the records stored are sent: the first call goes as soon as the first
/// records are stored. An input that cannot be read stops the sending (calls in flight finish); sending that
/// stops (Ctrl-C, a fatal error) stops the reading, which the next run goes on with.
async fn read_and_send(
    h: &Held<'_>,
    shutdown: Shutdown,
    stats: &Arc<RunStats>,
    run_key: Option<i64>,
    sending: Sending<'_>,
) -> Result<Parts, Error> {
    let Sending {
        counts,
        parts,
        reading,
        following,
    } = sending;
    let Some(reading) = reading else {
        return send_pending(
            h,
            shutdown,
            stats,
            run_key,
            (&counts, false),
            parts,
            following,
        )
        .await;
    };
    let halt = shutdown.stop.child_token();
    let ingesting = async {
        let read = read_inputs(h, reading, &halt).await;
        if read.is_err() {
            shutdown.stop.cancel();
        }
        read
    };
    let sent = async {
        let sent = send_pending(
            h,
            shutdown.clone(),
            stats,
            run_key,
            (&counts, true),
            parts,
            following,
        )
        .await;
        halt.cancel();
        sent
    };
    let (read, sent) = tokio::join!(ingesting, sent);
    read?;
    sent
}

/// Sends the pending records, and those the ingest stores while it runs: connects, sets the budget (quotas the
/// job file leaves out from the account), runs the workers, and returns the parts; a fatal error from Bedrock is
/// returned as one.
async fn send_pending(
    h: &Held<'_>,
    shutdown: Shutdown,
    stats: &Arc<RunStats>,
    run_key: Option<i64>,
    (counts, reading): (&Counts, bool),
    parts: Parts,
    following: watch::Receiver<Progress>,
) -> Result<Parts, Error> {
    let (job, store, opts) = (h.job, h.store, h.opts);
    for line in crate::report::plan::model_notes(&job.model) {
        crate::say!("{line}");
    }
    // Each target's connection is held until the calls are done: it may keep what serves them alive.
    let mut targets = Vec::with_capacity(job.targets.len());
    for i in 0..job.targets.len() {
        targets.push(connect_target(h, i).await?);
    }
    if let Some(key) = run_key {
        note_run_budget(h, key, &targets).await?;
    }
    let routes = targets
        .iter_mut()
        .map(|t| t.route.take().expect("each target's route is taken once"))
        .collect();
    let ctx = Arc::new(worker::Ctx {
        routes: Routes::new(routes),
        stats: stats.clone(),
        shutdown,
        fatal: std::sync::Mutex::new(None),
        daily: std::sync::Mutex::new(None),
        daily_gate: (job.budget.on_daily_quota == crate::job::OnDailyQuota::Wait)
            .then(|| super::daily::DailyGate::new(job.budget.daily_retry)),
        progress: opts.progress,
        records_per_call: job.model.embed.as_ref().map_or(1, |e| e.records_per_call()),
        job: job.clone(),
    });
    let ingest = *following.borrow();
    say_start(job, counts, reading, ingest);
    // Quotas taken from the account are read again while the run sends.
    let refreshing = CancellationToken::new();
    for (i, t) in targets.iter().enumerate() {
        if let (false, Some(every)) = (t.sourced.is_empty(), job.budget.quota_refresh) {
            tokio::spawn(super::account::refresh(
                ctx.routes.get(i).budget.clone(),
                t.budgeted.clone(),
                (t.connection.url.clone(), t.connection.static_credentials),
                t.sourced.clone(),
                every,
                refreshing.clone(),
            ));
        }
    }
    if let (Some(key), Some(_)) = (run_key, &ctx.daily_gate) {
        tokio::spawn(note_daily_waits(
            ctx.clone(),
            store.clone(),
            key,
            refreshing.clone(),
        ));
    }
    let sent = send(&ctx, store.clone(), parts, following).await;
    refreshing.cancel();
    let parts = sent?;
    stopped_by(&ctx, &opts.job_file)?;
    Ok(parts)
}

/// One target, connected: its route (until the run takes it), its connection (held while the run sends), and
/// the job as it serves it, with the quotas the job file leaves out taken from the account.
struct ConnectedTarget {
    route: Option<Route>,
    connection: super::Connection,
    budgeted: Job,
    sourced: super::account::Sourced,
}

/// Connects target `i` of the job: its client, and its budget from the job file, else from the account's
/// applied quotas for its model in its region, starting from what an earlier run learned (a job of one target).
async fn connect_target(h: &Held<'_>, i: usize) -> Result<ConnectedTarget, Error> {
    let (job, store, opts) = (h.job, h.store, h.opts);
    let target = job.for_target(i);
    let connection = opts.endpoints.connect(&target).await?;
    let invoker = Invoker::connect(
        &target,
        connection.url.as_deref(),
        connection.static_credentials,
    )
    .await?;
    let label = (job.targets.len() > 1).then_some(job.targets[i].name.as_str());
    let (budgeted, sourced) =
        super::account::with_account_quotas(&target, (&connection, label), store).await?;
    // What a run learned is kept for the job as a whole: it fits a job of one target only.
    let learned = match job.targets.len() {
        1 => learned(h).await?,
        _ => None,
    };
    let route = Route::new(
        job.targets[i].name.clone(),
        invoker,
        Budget::new(&budgeted, learned),
    );
    Ok(ConnectedTarget {
        route: Some(route),
        connection,
        budgeted,
        sourced,
    })
}

/// Notes in the run's row the quotas it ran with: the targets' together, and which came from the account.
async fn note_run_budget(h: &Held<'_>, key: i64, targets: &[ConnectedTarget]) -> Result<(), Error> {
    let sum = |get: fn(&Job) -> Option<u64>| -> Option<u64> {
        targets.iter().map(|t| get(&t.budgeted)).sum()
    };
    let (rpm, tpm) = (sum(|j| j.budget.rpm), sum(|j| j.budget.tpm));
    let mut keys: Vec<&str> = targets
        .iter()
        .flat_map(|t| t.sourced.iter().map(|(key, _)| *key))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let from = (!keys.is_empty()).then(|| keys.join(","));
    h.store
        .note_run_budget(&h.job.name, key, rpm, tpm, from.as_deref())
        .await?;
    Ok(())
}

/// What stopped the run, if Bedrock did: a fatal error, or the daily token quota.
fn stopped_by(ctx: &worker::Ctx, job_file: &std::path::Path) -> Result<(), Error> {
    // With several targets, the one still in use is the one whose error stopped the run: named with its model.
    let model = match ctx.routes.all().iter().position(|r| !r.is_dropped()) {
        Some(i) if ctx.routes.several() => {
            let t = &ctx.job.targets[i];
            format!("{} (target {})", t.model, t.name)
        }
        _ => ctx.job.model.id.clone(),
    };
    if let Some(e) = ctx.fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(Error::Fatal {
            model,
            stop: e.stop(),
            code: e.code,
            message: e.message,
            path: job_file.to_path_buf(),
        });
    }
    if let Some(message) = ctx.daily.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(Error::DailyQuota {
            model,
            message,
            path: job_file.to_path_buf(),
        });
    }
    Ok(())
}

/// Keeps the run's row saying whether it waits for the daily token quota (and until when), for `status`,
/// until `stop`.
async fn note_daily_waits(ctx: Arc<worker::Ctx>, store: Store, key: i64, stop: CancellationToken) {
    let Some(gate) = &ctx.daily_gate else { return };
    let mut noted = None;
    loop {
        let now = gate.waiting().map(|w| {
            let at = w.next_try.duration_since(std::time::UNIX_EPOCH);
            (at.map_or(0, |d| d.as_secs() as i64), w.message)
        });
        if now != noted {
            let waiting = now.as_ref().map(|(at, m)| (*at, m.as_str()));
            if let Err(e) = store.note_run_waiting(&ctx.job.name, key, waiting).await {
                tracing::warn!("could not note the daily-quota wait: {e}");
            }
            noted = now;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    if noted.is_some() {
        let _ = store.note_run_waiting(&ctx.job.name, key, None).await;
    }
}

/// Where the records go: the model, or the targets by name.
fn destination(job: &Job) -> String {
    match &job.targets[..] {
        [one] => one.model.clone(),
        several => {
            let names: Vec<&str> = several.iter().map(|t| t.name.as_str()).collect();
            format!("{} targets ({})", several.len(), names.join(", "))
        }
    }
}

/// Says what this run sends: a line, and a `start` event for a JSON log. While the inputs are still read, the
/// records to send are not all known yet; `ingest` says how far the reading got.
fn say_start(job: &Job, counts: &Counts, reading: bool, ingest: Progress) {
    let (done, failed) = (counts.done, counts.failed);
    let pending = counts.pending() + ingest.sendable;
    let reading = reading && !ingest.complete;
    match reading {
        true => crate::say!(
            "sending records to {} as they are read from {} ({pending} read and pending so far, {done} done, \
             {failed} failed before this run)",
            destination(job),
            job.input.path,
        ),
        false => crate::say!(
            "sending {pending} records to {} ({done} done, {failed} failed before this run)",
            destination(job),
        ),
    }
    crate::say::event(
        "start",
        serde_json::json!({
            "job": job.name, "model": job.model.id, "pending": pending,
            "done": counts.done, "failed": counts.failed, "reading": reading,
        }),
    );
}

/// Reads the inputs (an incremental job's unchanged files from an earlier generation; its records answered
/// from earlier generations where they can be) into the checkpoint, until `stop`, and says what it read.
pub(super) async fn read_inputs(
    h: &Held<'_>,
    r: Reading<'_>,
    stop: &CancellationToken,
) -> Result<Ingested, Error> {
    // `--fresh` reads every input again.
    let unchanged = match h.generation {
        Some(_) if h.opts.fresh => Some(Unchanged::default()),
        Some(g) => Some(generation::unchanged(h.store, g, &r.settings).await?),
        None => None,
    };
    let ingest = Ingest {
        job: h.job,
        store: h.store,
        s3: r.s3,
        unchanged: unchanged.as_ref(),
        reuse_from: h.generation.map_or(&[], |g| &g.reuse_from),
        from: r.from,
        progress: r.progress,
    };
    let done = ingest.run(r.files, stop).await?;
    if done.complete {
        say_ingested(h.job, &done, unchanged.as_ref());
    }
    if done.reused > 0 {
        crate::say!(
            "reused {} answers from earlier generations (no call made for them)",
            done.reused
        );
    }
    Ok(done)
}

/// Says how many records were read, and for an incremental job how many files were taken unread.
fn say_ingested(job: &Job, done: &Ingested, unchanged: Option<&Unchanged>) {
    let n = done.records;
    match unchanged.and_then(|u| u.from.as_ref()) {
        Some((_, number)) if done.taken > 0 => crate::say!(
            "read {n} records from {}: {} of {} input files unchanged since generation {number}, their \
             records taken from it without reading them",
            job.input.path,
            done.taken,
            done.taken + done.read
        ),
        _ => crate::say!("read {n} records from {}", job.input.path),
    }
}

/// The rates the job starts from: what its last run learned, or for a new generation of an incremental job,
/// what the latest generation before it learned.
async fn learned(h: &Held<'_>) -> Result<Option<LearnedRates>, Error> {
    if let Some(l) = h.store.learned(&h.job.name).await? {
        return Ok(Some(l));
    }
    for key in h.generation.iter().flat_map(|g| g.reuse_from.iter().rev()) {
        if let Some(l) = h.store.learned(key).await? {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

/// The S3 client, when the job reads or writes S3.
pub(crate) async fn s3_client(job: &Job) -> Result<Option<S3>, Error> {
    let staging = job.batch.as_ref().map(|b| &b.staging);
    let Some(first) = job
        .input
        .location
        .s3()
        .or(job.output.location.s3())
        .or(staging)
    else {
        return Ok(None);
    };
    Ok(Some(
        S3::connect(&job.s3, job.model.region.as_deref(), first).await?,
    ))
}

/// Feeds pending records to the workers and collects their outcomes until all are done or the run stops.
async fn send(
    ctx: &Arc<worker::Ctx>,
    store: Store,
    parts: Parts,
    following: watch::Receiver<Progress>,
) -> Result<Parts, Error> {
    // budget.max-concurrency is each target's: the workers are enough to fill them all.
    let workers = ctx.job.budget.max_concurrency as usize * ctx.routes.all().len();
    // Where a call carries many records, enough are queued for each worker to fill its calls.
    let queue = (workers * QUEUE_PER_WORKER * ctx.records_per_call).min(MAX_QUEUE);
    let (record_tx, record_rx) = mpsc::channel::<PendingRecord>(queue.max(QUEUE_PER_WORKER));
    let (outcome_tx, outcome_rx) = mpsc::channel(4096);
    let writer = tokio::spawn(writer::run(
        ctx.job.name.clone(),
        store.clone(),
        parts,
        outcome_rx,
        ctx.stats.clone(),
        ctx.shutdown.clone(),
    ));
    let feeder = tokio::spawn(feed(ctx.clone(), store.clone(), record_tx, following));
    let record_rx = Arc::new(Mutex::new(record_rx));
    let mut pool = JoinSet::new();
    for _ in 0..workers {
        pool.spawn(worker::run(
            ctx.clone(),
            record_rx.clone(),
            outcome_tx.clone(),
        ));
    }
    drop(outcome_tx);
    let progress_done = CancellationToken::new();
    let reporter = progress::spawn(
        ctx.stats.clone(),
        ctx.routes.all().iter().map(|r| r.budget.clone()).collect(),
        ctx.progress,
        progress_done.clone(),
    );
    let recorder = tokio::spawn(record(ctx.clone(), store.clone(), progress_done.clone()));
    // A worker that panicked stops the run (the others abandon their calls; their records stay pending); its
    // error is returned once the writer has committed what came in.
    let mut panicked = None;
    while let Some(joined) = pool.join_next().await {
        if let Err(e) = Error::joined(joined, "worker") {
            ctx.shutdown.stop.cancel();
            ctx.shutdown.abort.cancel();
            panicked.get_or_insert(e);
        }
    }
    // Workers are gone: the feeder is either done or blocked on a full queue nobody reads.
    feeder.abort();
    let fed = feeder.await;
    let parts = Error::joined(writer.await, "writer")??;
    progress_done.cancel();
    let _ = reporter.await;
    Error::joined(recorder.await, "recorder")??;
    if let Some(e) = panicked {
        return Err(e);
    }
    if let Ok(Err(e)) = fed {
        return Err(e);
    }
    Ok(parts)
}

// How often throttles, the per-second series and the learned rates are written to the checkpoint.
const RECORD_EVERY: Duration = Duration::from_secs(2);

/// Stores what the budget observed (throttles, per-second counts) and what it learned (rates, calibration),
/// every few seconds and once more at the end.
async fn record(ctx: Arc<worker::Ctx>, store: Store, done: CancellationToken) -> Result<(), Error> {
    let mut tick = tokio::time::interval(RECORD_EVERY);
    loop {
        let last = tokio::select! {
            _ = done.cancelled() => true,
            _ = tick.tick() => false,
        };
        let job = &ctx.job.name;
        let budgets: Vec<&Arc<Budget>> = ctx.routes.all().iter().map(|r| &r.budget).collect();
        for route in ctx.routes.all() {
            let throttles = route.budget.take_throttles();
            let target = ctx.routes.several().then_some(route.name.as_str());
            say_throttles((job, target), &throttles, &route.budget.learned());
            store.insert_throttles((job, target), &throttles).await?;
        }
        let seconds = Second::merged(budgets.iter().flat_map(|b| b.take_seconds(last)));
        store.insert_seconds(job, &seconds).await?;
        // What a run learned is kept for the job as a whole: it fits a job of one target only.
        if let [only] = budgets[..] {
            store.save_learned(job, &only.learned()).await?;
        }
        if last {
            return Ok(());
        }
    }
}

/// The `throttles` event of a JSON log: the throttles since the last one (every few seconds while there are
/// any), by quota, and the rates the budget holds after them.
fn say_throttles(
    (job, target): (&str, Option<&str>),
    throttles: &[ThrottleEvent],
    learned: &LearnedRates,
) {
    if throttles.is_empty() {
        return;
    }
    let of = |kind: ThrottleKind| throttles.iter().filter(|t| t.kind == kind).count();
    crate::say::event(
        "throttles",
        serde_json::json!({
            "job": job, "target": target, "rpm": of(ThrottleKind::Rpm), "tpm": of(ThrottleKind::Tpm), "tpd": of(ThrottleKind::Tpd),
            "cuts": throttles.iter().filter(|t| t.cut).count(),
            "rpm_rate": learned.rpm_rate, "tpm_rate": learned.tpm_rate,
            "last_message": throttles.last().map(|t| t.message.as_str()),
        }),
    );
}

/// Hands the pending records to the workers in input order, those the ingest stores as it stores them, until
/// the last is handed over, the ingest stops, or the run does.
async fn feed(
    ctx: Arc<worker::Ctx>,
    store: Store,
    tx: mpsc::Sender<PendingRecord>,
    mut following: watch::Receiver<Progress>,
) -> Result<(), Error> {
    let (job, stop) = (&ctx.job.name, &ctx.shutdown.stop);
    // Pending before this run's ingest stored anything.
    let before = ctx.stats.planned.load(Ordering::Relaxed);
    let mut from = 0;
    loop {
        let ingest = *following.borrow_and_update();
        ctx.stats
            .planned
            .store(before + ingest.sendable, Ordering::Relaxed);
        let page = store.pending(job, from..ingest.records, PAGE).await?;
        let Some(last) = page.last() else {
            if ingest.complete {
                return Ok(());
            }
            // Wait for the ingest to store more; a finished ingest (stopped, or failed) stores nothing more.
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                more = following.changed() => if more.is_err() && !following.borrow().complete { return Ok(()) },
            }
            continue;
        };
        from = last.seq + 1;
        for record in page {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                sent = tx.send(record) => if sent.is_err() { return Ok(()) },
            }
        }
    }
}
