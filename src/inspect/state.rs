//! `batchrun status` and `batchrun report`: read a state database (never write it) and hand the facts to the
//! pure renderers in [`crate::report`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::catalogue::Catalogue;
use crate::checkpoint::{CheckpointError, Store, unix_now};
use crate::error::Error;
use crate::job::Job;
use crate::report::diagnose::{self, ReportFacts};
use crate::report::html;
use crate::report::status::{self, BatchJobStatus, DailyWait, JobStatus, LastError};
use crate::run::lock;

/// Which state database and which job(s).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// A job file or a job name; `None` for every job.
    pub job: Option<String>,
    /// The state database; `None` for the job file's default, or `.batchrun/state.db` here.
    pub state: Option<PathBuf>,
}

/// The state database and the job name `scope` means.
fn locate(scope: &Scope) -> Result<(PathBuf, Option<String>), Error> {
    let (state, name) = match &scope.job {
        Some(t) if t.ends_with(".toml") || Path::new(t).is_file() => {
            let job = Job::load(Path::new(t))?;
            (
                scope
                    .state
                    .clone()
                    .unwrap_or_else(|| job.default_state_path()),
                Some(job.name),
            )
        }
        other => (
            scope
                .state
                .clone()
                .unwrap_or_else(|| Path::new(".batchrun").join("state.db")),
            other.clone(),
        ),
    };
    if !state.is_file() {
        return Err(Error::NoState { path: state });
    }
    Ok((state, name))
}

/// Opens the database read-only. One still being created by a run reads as no jobs (`None`).
async fn open(state: &Path, name: Option<&str>) -> Result<(Option<Store>, Vec<String>), Error> {
    let (store, known) = match Store::open_read_only(state).await {
        Ok(store) => {
            let known = store.job_names().await?;
            (Some(store), known)
        }
        Err(CheckpointError::Uninitialized { .. }) => (None, Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let names = match name {
        Some(n) if known.iter().any(|k| k == n) => vec![n.to_string()],
        Some(n) => {
            return Err(Error::UnknownJob {
                name: n.to_string(),
                path: state.to_path_buf(),
                known,
            });
        }
        None => known,
    };
    Ok((store, names))
}

async fn job_status(store: &Store, name: &str) -> Result<JobStatus, Error> {
    // An incremental job's records are its current generation's.
    let key = store.current_key(name).await?;
    let job = key.as_str();
    let counts = store.counts(job).await?;
    let tokens = store.token_totals(job).await?;
    let runs = store.runs(job).await?;
    let last = runs.last();
    let now = unix_now();
    // A job runs while the process holding its lock lives.
    let me = lock::this_process();
    let holder = store
        .lock_holder(name)
        .await?
        .filter(|h| !lock::is_gone(h, &me, now));
    let alive = holder.is_some();
    let state = match last {
        _ if alive => "running".to_string(),
        None => "new".to_string(),
        Some(r) => match r.outcome.as_deref() {
            Some("finished") => "finished".into(),
            Some("interrupted") => "interrupted".into(),
            Some(_) => "stopped".into(),
            None => "killed".into(),
        },
    };
    let records_per_minute = match last {
        Some(_) if alive => Some(store.finished_during(job, now - 60, now).await? as f64),
        Some(r) => {
            let end = r.ended_at.unwrap_or(now);
            let span = (end - r.started_at).max(1);
            let n = store.finished_during(job, r.started_at, end).await?;
            (n > 0).then(|| n as f64 * 60.0 / span as f64)
        }
        None => None,
    };
    let pending = counts.pending();
    Ok(JobStatus {
        job: name.to_string(),
        state,
        model_id: last.map(|r| r.model_id.clone()),
        total: counts.total,
        succeeded: counts.done,
        failed: counts.failed,
        pending,
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        records_per_minute,
        eta_seconds: records_per_minute
            .filter(|r| *r > 0.0)
            .map(|r| pending as f64 / r * 60.0),
        runs: runs.len() as u64,
        last_run_started: last.map(|r| r.started_at),
        last_run_seconds: last.map(|r| (r.ended_at.unwrap_or(now) - r.started_at).max(0) as u64),
        last_run_outcome: last.and_then(|r| r.outcome.clone()),
        run_by: holder.as_ref().map(lock::describe),
        daily_wait: last.filter(|_| alive).and_then(|r| {
            r.waiting_until.map(|next_try| DailyWait {
                next_try,
                message: r.waiting_reason.clone().unwrap_or_default(),
            })
        }),
        last_errors: store
            .last_errors(job, 5)
            .await?
            .into_iter()
            .map(|e| LastError {
                record_id: e.record_id,
                code: e.code,
                message: e.message,
            })
            .collect(),
        batch_jobs: batch_statuses(store, job).await?,
    })
}

/// The job's batch jobs as the last run read them.
async fn batch_statuses(store: &Store, job: &str) -> Result<Vec<BatchJobStatus>, Error> {
    Ok(store
        .batch_jobs(job)
        .await?
        .into_iter()
        .map(|b| BatchJobStatus {
            shard: b.shard,
            arn: b.arn,
            status: b.status,
            message: b.message,
            records: b.records,
            processed: b.processed,
            succeeded: b.succeeded,
            errored: b.errored,
            collected: b.collected,
            updated_at: b.updated_at,
        })
        .collect())
}

/// `batchrun status`: text, or JSON with `json`.
pub async fn status(scope: &Scope, json: bool) -> Result<String, Error> {
    let (state, name) = locate(scope)?;
    let (store, names) = open(&state, name.as_deref()).await?;
    let mut jobs = Vec::with_capacity(names.len());
    if let Some(store) = store {
        for n in &names {
            jobs.push(job_status(&store, n).await?);
        }
        store.close().await;
    }
    Ok(if json {
        let mut text = if name.is_some() {
            serde_json::to_string_pretty(&jobs[0])
        } else {
            serde_json::to_string_pretty(&jobs)
        }
        .expect("status serializes");
        text.push('\n');
        text
    } else if name.is_some() {
        status::render_one(&jobs[0])
    } else {
        status::render_all(&jobs)
    })
}

/// What `batchrun report` was asked.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// The job and state database.
    pub scope: Scope,
    /// Also write the HTML page here.
    pub html: Option<PathBuf>,
    /// Say what quota finishes the job in this time.
    pub deadline: Option<Duration>,
    /// A model table laid over the built-in one.
    pub models: Option<PathBuf>,
}

/// `batchrun report`: the text; the HTML page is written to `opts.html` when given.
pub async fn report(opts: &ReportOptions) -> Result<String, Error> {
    let (state, name) = locate(&opts.scope)?;
    let Some(name) = name else {
        return Err(Error::NoJobGiven { path: state });
    };
    let (Some(store), _) = open(&state, Some(&name)).await? else {
        unreachable!("a job was found, so the database has a schema");
    };
    let prices = Catalogue::chosen(opts.models.as_deref())?;
    // An incremental job is reported by its current generation.
    let key = store.current_key(&name).await?;
    let runs = store.runs(&key).await?;
    let max_tokens = runs.last().and_then(|r| r.max_tokens);
    let counts = store.counts(&key).await?;
    let tokens = store.token_totals(&key).await?;
    let model_id = runs.last().map(|r| r.model_id.clone()).unwrap_or_default();
    let tiers = store
        .by_tier(&key)
        .await?
        .into_iter()
        .map(|t| {
            let price = match t.tier.as_str() {
                "batch" => prices.batch_price(&model_id),
                tier => prices.tier_price(&model_id, tier),
            };
            (t, price)
        })
        .collect();
    let facts = ReportFacts {
        job: name.clone(),
        job_file: opts
            .scope
            .job
            .clone()
            .filter(|t| t.ends_with(".toml") || Path::new(t).is_file()),
        price: runs.last().and_then(|r| {
            prices
                .price(&r.model_id)
                .map(|p| (p, prices.currency.clone(), prices.as_of.clone()))
        }),
        runs,
        total: counts.total,
        succeeded: counts.done,
        failed: counts.failed,
        input_tokens: tokens.input,
        output_tokens: tokens.output,
        stats: store.outcome_stats(&key, max_tokens).await?,
        throttles: store.throttle_counts(&key).await?,
        series: store.series(&key).await?,
        errors: store.errors_by_code(&key).await?,
        learned: store.learned(&key).await?,
        deadline: opts.deadline,
        targets: store.by_target(&key).await?,
        tiers,
        cache: (
            (tokens.cache_read, tokens.cache_write),
            prices.cache_prices(&model_id),
        ),
    };
    store.close().await;
    let diagnosis = diagnose::diagnose(&facts);
    let text = diagnose::render(&facts, &diagnosis);
    if let Some(path) = &opts.html {
        let page = html::render(&facts, &diagnosis, &text);
        std::fs::write(path, page).map_err(|source| Error::WriteFile {
            path: path.clone(),
            source,
        })?;
    }
    Ok(text)
}
