//! `batchrun plan`: reads the job's inputs as `submit` would (nothing is written, no model is called) and
//! gathers the facts the plan is computed from: token counts, reservations, what an earlier run observed, the
//! emulator profile when the job uses one, and the price table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::budget::{LearnedRates, quota};
use crate::catalogue::Catalogue;
use crate::checkpoint::{CheckpointError, OutcomeStats, Store};
use crate::error::Error;
use crate::invoke::Invoker;
use crate::job::Job;
use crate::report::plan::{NeverFit, Plan, PlanFacts, PlanTarget, compute, render};
use crate::run::submit::s3_client;
use crate::run::{Connection, Endpoints, Expected, Unread, fill_budget, read_own};
use crate::source::{self, Item, Record, read_in_batches};

/// What `batchrun plan` was asked.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The job file.
    pub job_file: PathBuf,
    /// The state database (for what an earlier run observed); `None` for the job's default.
    pub state: Option<PathBuf>,
    /// Count input tokens with Bedrock's CountTokens instead of locally.
    pub exact: bool,
    /// Also say what quota finishes the job within this time.
    pub deadline: Option<Duration>,
    /// A model table laid over the built-in one.
    pub models: Option<PathBuf>,
    /// Expected output tokens per record, instead of what is observed or assumed.
    pub output_tokens: Option<u64>,
    /// Expected seconds per request, instead of what is observed or assumed.
    pub latency: Option<Duration>,
    /// How to reach Bedrock (for `exact`), and what a simulated endpoint expects.
    pub endpoints: Arc<dyn Endpoints>,
}

// Records listed by name when they can never fit; the rest are counted.
const NEVER_FIT_LISTED: usize = 10;
// CountTokens calls in flight with --exact.
const COUNT_CONCURRENCY: usize = 8;

/// Reads the job's inputs and returns the plan as text.
pub async fn plan(opts: &PlanOptions) -> Result<String, Error> {
    let (facts, plan) = planned(opts).await?;
    Ok(render(&facts, &plan))
}

/// Reads the job's inputs and returns the facts and the plan computed from them.
pub async fn planned(opts: &PlanOptions) -> Result<(PlanFacts, Plan), Error> {
    planned_on(opts, None).await
}

/// As [`planned`], through `connection` when the caller holds one for the job already (an embedded emulator
/// is then started once).
pub async fn planned_on(
    opts: &PlanOptions,
    connection: Option<&Connection>,
) -> Result<(PlanFacts, Plan), Error> {
    let prices = Catalogue::chosen(opts.models.as_deref())?;
    let job = Job::load_with(&opts.job_file, &prices)?;
    let owned;
    let connection = match connection {
        Some(c) => c,
        None => {
            owned = opts.endpoints.connect(&job).await?;
            &owned
        }
    };
    let (job, account_notes, tpd, targets) = account_quotas(opts, connection, job).await?;
    let s3 = s3_client(&job).await?;
    let files = source::list(&job, s3.as_ref()).await?;
    let (learned, observed) = earlier_run(opts, &job).await?;
    // What a run learned is kept for jobs of one target only.
    let learned = learned.filter(|_| targets.is_empty());
    let ratio = learned.map_or(1.0, |l| l.token_ratio);
    let profile = opts.endpoints.expected(&job)?;
    let counter = if opts.exact {
        let invoker = Invoker::connect(
            &job,
            connection.url.as_deref(),
            connection.static_credentials,
        )
        .await?;
        Some(Arc::new(invoker))
    } else {
        None
    };
    let mut facts = PlanFacts {
        job_file: opts.job_file.display().to_string(),
        job: job.name.clone(),
        model_id: job.model.id.clone(),
        records: 0,
        unreadable: 0,
        input_tokens: 0,
        input_exact: opts.exact,
        max_tokens_total: 0,
        largest_reservation: 0,
        never_fit: Vec::new(),
        never_fit_count: 0,
        output_per_record: 0.0,
        output_source: String::new(),
        latency_s: 0.0,
        latency_source: String::new(),
        burndown: u64::from(job.model.output_burndown),
        rpm: job.budget.rpm,
        tpm: job.budget.tpm,
        learned: (
            learned.and_then(|l| l.rpm_rate),
            learned.and_then(|l| l.tpm_rate),
        ),
        max_concurrency: u64::from(job.budget.max_concurrency),
        price: prices
            .price(&job.model.id)
            .map(|p| (p, prices.currency.clone(), prices.as_of.clone())),
        deadline: opts.deadline,
        model_notes: [crate::report::plan::model_notes(&job.model), account_notes].concat(),
        tpd,
        over_context: (0, job.model.facts.context),
        targets,
        tier: tier_of(&job, &prices),
        batch_price: prices.batch_price(&job.model.id),
        batch_limits: batch_limits(&job),
        mode: None,
    };
    // Every record, read as ingest reads it.
    let batches = read_in_batches(&job, files, s3.as_ref());
    read_all(opts, &job, batches, ratio, counter.as_ref(), &mut facts).await?;
    expect(&mut facts, opts, observed.as_ref(), profile.as_ref());
    drop(counter);
    let plan = compute(&facts);
    facts.mode = (job.mode != crate::job::Mode::OnDemand)
        .then(|| crate::batch::choose(&job, plan.sendable).describe(job.mode));
    Ok((facts, plan))
}

/// Every record, read as ingest reads it, tallied into `facts` (input tokens estimated and scaled by `ratio`, or
/// counted by `counter`'s CountTokens).
async fn read_all(
    opts: &PlanOptions,
    job: &Job,
    (mut rx, reader): (tokio::sync::mpsc::Receiver<Vec<Item>>, source::Reader),
    ratio: f64,
    counter: Option<&Arc<Invoker>>,
    facts: &mut PlanFacts,
) -> Result<(), Error> {
    let limit = Arc::new(Semaphore::new(COUNT_CONCURRENCY));
    while let Some(items) = rx.recv().await {
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Good(r) => records.push(r),
                Item::Bad(_) => facts.unreadable += 1,
            }
        }
        let mut tokens: Vec<u64> = records
            .iter()
            .map(|r| (r.est_tokens as f64 * ratio).ceil() as u64)
            .collect();
        if let Some(invoker) = counter {
            count_exactly(opts, job, invoker, &limit, &records, &mut tokens).await?;
        }
        tally(facts, &records, tokens);
    }
    Error::joined(reader.await, "input reader")??;
    Ok(())
}

/// `job` with the budget values it leaves out taken from the account's applied quotas, as `submit` would;
/// lines saying where each came from (or why none could be read); and the daily token quota, if the account
/// has one for the model.
async fn with_account_quotas(
    connection: &Connection,
    mut job: Job,
) -> (Job, Vec<String>, Option<(u64, String)>) {
    let (region, read) = read_own(&job, connection).await;
    let quotas = match read {
        Ok(q) => q,
        Err(Unread::Denied) => {
            let line = format!(
                "note: no permission to read Service Quotas in {region}: quotas not set in [budget] are unknown \
                 here and learned from throttles by submit"
            );
            return (job, vec![line], None);
        }
        Err(Unread::Failed(why)) => return (job, vec![format!("note: {why}")], None),
    };
    let notes = fill_budget(&mut job, &quotas, "applied")
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    let tpd = quotas
        .into_iter()
        .find(|q| q.measure == "tpd")
        .map(|q| (q.value.round() as u64, q.code));
    (job, notes, tpd)
}

/// What the plan is computed against: the job's quotas (from the job file, else the account: its target's, or
/// each target's), lines saying where they came from, the daily quota (a job of one target), and the targets.
async fn account_quotas(
    opts: &PlanOptions,
    connection: &Connection,
    job: Job,
) -> Result<(Job, Vec<String>, Option<(u64, String)>, Vec<PlanTarget>), Error> {
    Ok(match job.targets.len() {
        1 => {
            let (job, notes, tpd) = with_account_quotas(connection, job).await;
            (job, notes, tpd, Vec::new())
        }
        _ => {
            let (job, notes, targets) = targets_quotas(opts, job).await?;
            (job, notes, None, targets)
        }
    })
}

/// The fewest and most records of a batch job, and the hours it may take: the job's `[batch]`, else Bedrock's
/// defaults.
fn batch_limits(job: &Job) -> (u64, u64, u32) {
    use crate::job::batch::{DEFAULT_MIN_RECORDS, DEFAULT_RECORDS_PER_JOB, DEFAULT_TIMEOUT_HOURS};
    job.batch.as_ref().map_or(
        (
            DEFAULT_MIN_RECORDS,
            DEFAULT_RECORDS_PER_JOB,
            DEFAULT_TIMEOUT_HOURS,
        ),
        |b| (b.min_records, b.records_per_job, b.timeout_hours),
    )
}

/// The service tier the job's calls name, other than the default, and its price in `prices`.
fn tier_of(job: &Job, prices: &Catalogue) -> Option<(String, Option<crate::catalogue::Price>)> {
    let tier = job
        .model
        .service_tier
        .filter(|t| *t != crate::job::ServiceTier::Default)?;
    Some((
        tier.as_str().to_string(),
        prices.tier_price(&job.model.id, tier.as_str()),
    ))
}

/// A job with several targets: each one's quotas (the job file's, else the account's for its model in its
/// region), lines saying where they came from, and the job with their sums as its budget and their concurrency
/// together.
async fn targets_quotas(
    opts: &PlanOptions,
    mut job: Job,
) -> Result<(Job, Vec<String>, Vec<PlanTarget>), Error> {
    let mut notes = Vec::new();
    let mut targets = Vec::new();
    for (i, t) in job.targets.iter().enumerate() {
        let served = job.for_target(i);
        let connection = opts.endpoints.connect(&served).await?;
        let (served, lines, _) = with_account_quotas(&connection, served).await;
        notes.extend(lines.into_iter().map(|l| format!("target {}: {l}", t.name)));
        targets.push(PlanTarget {
            name: t.name.clone(),
            rpm: served.budget.rpm,
            tpm: served.budget.tpm,
        });
    }
    job.budget.rpm = targets.iter().map(|t| t.rpm).sum();
    job.budget.tpm = targets.iter().map(|t| t.tpm).sum();
    job.budget.max_concurrency = job
        .budget
        .max_concurrency
        .saturating_mul(targets.len() as u32);
    Ok((job, notes, targets))
}

/// What an earlier run of this job saw: the rates it learned and its outcomes, if the state database exists
/// (it is not created here).
async fn earlier_run(
    opts: &PlanOptions,
    job: &Job,
) -> Result<(Option<LearnedRates>, Option<OutcomeStats>), Error> {
    let state = opts
        .state
        .clone()
        .unwrap_or_else(|| job.default_state_path());
    if !state.is_file() {
        return Ok((None, None));
    }
    let store = match Store::open_read_only(&state).await {
        Ok(store) => store,
        Err(CheckpointError::Uninitialized { .. }) => return Ok((None, None)),
        Err(e) => return Err(e.into()),
    };
    let key = store.current_key(&job.name).await?;
    let learned = store.learned(&key).await?;
    let stats = store
        .outcome_stats(&key, job.model.max_tokens.map(u64::from))
        .await?;
    store.close().await;
    Ok((learned, (stats.done > 0).then_some(stats)))
}

/// `--exact`: replaces the local estimates in `tokens` with Bedrock's CountTokens, a few calls at a time.
async fn count_exactly(
    opts: &PlanOptions,
    job: &Job,
    invoker: &Arc<Invoker>,
    limit: &Arc<Semaphore>,
    records: &[Record],
    tokens: &mut [u64],
) -> Result<(), Error> {
    let mut set = JoinSet::new();
    for (i, r) in records.iter().enumerate() {
        let (invoker, limit, request) = (invoker.clone(), limit.clone(), r.request.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, invoker.count_tokens(&request).await)
        });
    }
    while let Some(joined) = set.join_next().await {
        let (i, counted) = Error::joined(joined, "token counter")?;
        match counted {
            Ok(n) => tokens[i] = n,
            Err(e) => {
                return Err(Error::Fatal {
                    model: job.model.id.clone(),
                    stop: e.stop(),
                    code: e.code,
                    message: format!("CountTokens failed: {}", e.message),
                    path: opts.job_file.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Adds records with their input tokens to the facts: those whose reservation fits the TPM budget to the
/// averages, the others to the never-fit list.
fn tally(facts: &mut PlanFacts, records: &[Record], tokens: Vec<u64>) {
    for (r, input) in records.iter().zip(tokens) {
        facts.records += 1;
        let reservation = quota::reserved(input, r.max_tokens);
        if facts.over_context.1.is_some_and(|c| reservation > c) {
            facts.over_context.0 += 1;
        }
        if facts.tpm.is_none_or(|t| reservation <= t) {
            // The averages are over what will be sent.
            facts.input_tokens += input;
            facts.max_tokens_total += r.max_tokens;
            facts.largest_reservation = facts.largest_reservation.max(reservation);
        } else {
            facts.never_fit_count += 1;
            if facts.never_fit.len() < NEVER_FIT_LISTED {
                facts.never_fit.push(NeverFit {
                    id: r.id.clone(),
                    location: r.location.clone(),
                    reservation,
                });
            }
        }
    }
}

/// Output tokens and latency to expect, and where each figure comes from: the command line, an earlier run,
/// the emulator profile, or an assumption.
fn expect(
    facts: &mut PlanFacts,
    opts: &PlanOptions,
    observed: Option<&OutcomeStats>,
    profile: Option<&Expected>,
) {
    let max_mean = facts.max_tokens_total as f64 / facts.records.max(1) as f64;
    (facts.output_per_record, facts.output_source) = match (opts.output_tokens, observed, profile) {
        (Some(n), _, _) => (n as f64, "--output-tokens".into()),
        (None, Some(s), _) => (
            s.output_mean,
            format!("mean of {} records an earlier run answered", s.done),
        ),
        (None, None, Some(p)) => (
            (p.output_min + p.output_max) as f64 / 2.0,
            format!(
                "emulator profile: {} to {} tokens",
                p.output_min, p.output_max
            ),
        ),
        (None, None, None) => (
            max_mean / 2.0,
            "assumed half of max-tokens; set --output-tokens N for a better plan".into(),
        ),
    };
    let out = facts.output_per_record.min(max_mean.max(1.0));
    (facts.latency_s, facts.latency_source) = match (opts.latency, observed, profile) {
        (Some(d), _, _) => (d.as_secs_f64(), "--latency".into()),
        (None, Some(s), _) if s.latency_p50_ms > 0 => (
            s.latency_p50_ms as f64 / 1000.0,
            "median of an earlier run".into(),
        ),
        (None, _, Some(p)) => (
            (p.first_token_ms + p.per_token_ms * out) / 1000.0,
            "emulator profile".into(),
        ),
        _ => (
            0.5 + 0.02 * out,
            "assumed 0.5s + 20ms per output token; set --latency for a better plan".into(),
        ),
    };
}
