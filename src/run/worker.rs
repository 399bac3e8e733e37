//! A worker: takes pending records one at a time (or, for a model that takes many inputs a call, as many as one
//! call carries) and sees each call through admission, the call and its retries, then hands the outcomes to the
//! writer. Throttles are retried until the record succeeds; transient errors up
//! to `retry.max-attempts`; permanent errors fail the record; a fatal error stops the run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use super::daily::{DailyGate, Pass};
use super::route::{Routes, Verdict};
use super::shutdown::Shutdown;
use crate::checkpoint::{Finished, PendingRecord, Status};
use crate::invoke::{CallError, Class, Reply, retry};
use crate::job::{Job, embed};
use crate::report::RunStats;
use crate::report::progress::ProgressMode;

/// How long a call that could carry more records waits for the queue to hold them.
const PACK_LINGER: Duration = Duration::from_millis(50);

/// What every worker shares.
#[derive(Debug)]
pub struct Ctx {
    /// The job.
    pub job: Job,
    /// The targets, each with its client and budget.
    pub routes: Routes,
    /// Counters.
    pub stats: Arc<RunStats>,
    /// Stop signals.
    pub shutdown: Shutdown,
    /// The first fatal error, which stops the run.
    pub fatal: std::sync::Mutex<Option<CallError>>,
    /// Bedrock's message when the daily token quota ran out, which stops the run.
    pub daily: std::sync::Mutex<Option<String>>,
    /// `budget.on-daily-quota = "wait"`: the gate calls wait at while the daily quota is used up.
    pub daily_gate: Option<DailyGate>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// How many records one call may carry: 1, or more for a model that takes many inputs a call.
    pub records_per_call: usize,
}

/// Runs one worker until the records run out or the run stops.
pub async fn run(
    ctx: Arc<Ctx>,
    records: Arc<Mutex<mpsc::Receiver<PendingRecord>>>,
    out: mpsc::Sender<Finished>,
) {
    // A record taken from the queue that did not fit the last call: the first of the next.
    let mut carried = None;
    loop {
        let Some(pack) = take(&ctx, &records, &mut carried).await else {
            return;
        };
        let finished = if pack.len() == 1 {
            let record = pack.into_iter().next().expect("one record");
            process(&ctx, record).await.into_iter().collect()
        } else {
            process_pack(&ctx, pack).await
        };
        for f in finished {
            if out.send(f).await.is_err() {
                return;
            }
        }
    }
}

/// The records of the next call: one, or for a model that takes many inputs a call, as many as are queued up to
/// its limit while the budget could ever admit their tokens together.
async fn take(
    ctx: &Ctx,
    records: &Mutex<mpsc::Receiver<PendingRecord>>,
    carried: &mut Option<PendingRecord>,
) -> Option<Vec<PendingRecord>> {
    let mut rx = records.lock().await;
    let first = match carried.take() {
        Some(r) => r,
        None => tokio::select! {
            _ = ctx.shutdown.stop.cancelled() => None,
            r = rx.recv() => r,
        }?,
    };
    let mut tokens = first.est_tokens;
    let mut pack = vec![first];
    // A call that could carry more waits a moment for the queue to fill: at the start of a run the reader has
    // queued a few records when the first workers take theirs, and under an RPM quota of 120 a minute the 16
    // calls of one record or a few each took the first 8 s (goodput 0.88 in the embeddings benchmark).
    let linger = tokio::time::Instant::now() + PACK_LINGER;
    while pack.len() < ctx.records_per_call {
        let next = match rx.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(linger, rx.recv()).await {
                    Ok(Some(next)) => next,
                    _ => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        if !ctx.routes.can_ever_admit(tokens + next.est_tokens, 0) {
            *carried = Some(next);
            break;
        }
        tokens += next.est_tokens;
        pack.push(next);
    }
    Some(pack)
}

/// One record to its outcome, or `None` when the run stops first (the record stays pending).
async fn process(ctx: &Ctx, record: PendingRecord) -> Option<Finished> {
    if let Some(failed) = never_admitted(ctx, &record) {
        return Some(failed);
    }
    match call(ctx, &record.request, record.est_tokens, record.max_tokens).await {
        Called::Replied {
            reply,
            attempts,
            started,
            target,
        } => {
            count(ctx, &reply);
            // Where calls may carry many records, every outcome says how many its call carried.
            let carried = (ctx.records_per_call > 1).then_some(1);
            Some(done(
                record.seq,
                (attempts, started),
                reply,
                carried,
                target,
            ))
        }
        Called::Failed(failure) => Some(failure.of(record.seq)),
        Called::Stopped => None,
    }
}

/// Several records in one call (Cohere Embed's texts), each answered by its part of the reply. A call refused
/// for its content, or a reply that cannot be split, sends each record on its own, so that the record at fault
/// fails with its own reason and the others succeed. Records left without an outcome (the run stopped) stay
/// pending.
async fn process_pack(ctx: &Ctx, pack: Vec<PendingRecord>) -> Vec<Finished> {
    let n = pack.len();
    let bodies: Vec<&str> = pack.iter().map(|r| r.request.as_str()).collect();
    let Some(body) = embed::pack(&bodies) else {
        return one_by_one(ctx, pack).await;
    };
    let est: u64 = pack.iter().map(|r| r.est_tokens).sum();
    let (reply, attempts, started, target) = match call(ctx, &body, est, 0).await {
        Called::Replied {
            reply,
            attempts,
            started,
            target,
        } => (reply, attempts, started, target),
        Called::Failed(f) if f.permanent => return one_by_one(ctx, pack).await,
        Called::Failed(f) => return pack.iter().map(|r| f.clone().of(r.seq)).collect(),
        Called::Stopped => return Vec::new(),
    };
    let Some(outputs) = embed::unpack(&reply.output, n) else {
        tracing::warn!(
            records = n,
            "a packed reply could not be split; sending its records one by one"
        );
        return one_by_one(ctx, pack).await;
    };
    count(ctx, &reply);
    let shares = shares(reply.input_tokens, &pack);
    pack.iter()
        .zip(outputs)
        .zip(shares)
        .map(|((record, output), input_tokens)| {
            let part = Reply {
                output,
                input_tokens,
                output_tokens: 0,
                latency_ms: reply.latency_ms,
                tier: reply.tier.clone(),
                cache_read: 0,
                cache_write: 0,
            };
            done(
                record.seq,
                (attempts, started),
                part,
                Some(n as u32),
                target.clone(),
            )
        })
        .collect()
}

/// Each record of `pack` in a call of its own, in order, until the run stops.
async fn one_by_one(ctx: &Ctx, pack: Vec<PendingRecord>) -> Vec<Finished> {
    let mut finished = Vec::with_capacity(pack.len());
    for record in pack {
        match process(ctx, record).await {
            Some(f) => finished.push(f),
            None => break,
        }
    }
    finished
}

/// A packed call's input tokens shared among its records in proportion to their estimates (the reply counts
/// the call's), adding up to the call's exactly.
fn shares(total: u64, pack: &[PendingRecord]) -> Vec<u64> {
    let est: u64 = pack.iter().map(|r| r.est_tokens).sum::<u64>().max(1);
    let mut given = 0;
    let mut out: Vec<u64> = pack
        .iter()
        .map(|r| {
            let share = total * r.est_tokens / est;
            given += share;
            share
        })
        .collect();
    if let Some(last) = out.last_mut() {
        *last += total - given;
    }
    out
}

/// How a call's retries ended.
enum Called {
    /// Answered by `target` (named for a job with several), after `attempts` calls, the first at `started`.
    Replied {
        reply: Reply,
        attempts: u32,
        started: Instant,
        target: Option<String>,
    },
    /// Failed for good.
    Failed(Failure),
    /// The run stopped first.
    Stopped,
}

/// Sends `request` through admission, the call and its retries until it is answered, fails for good, or the
/// run stops.
async fn call(ctx: &Ctx, request: &str, est_tokens: u64, max_tokens: u64) -> Called {
    let mut tries = Tries::default();
    let mut first_attempt: Option<Instant> = None;
    loop {
        let pass = match &ctx.daily_gate {
            Some(gate) => match gate.pass(&ctx.shutdown.stop).await {
                Some(pass) => Some(pass),
                None => return Called::Stopped,
            },
            None => None,
        };
        let admitted = tokio::select! {
            // A stop wins over an admission ready at the same moment: no call starts after a stop.
            biased;
            _ = ctx.shutdown.stop.cancelled() => return Called::Stopped,
            a = ctx.routes.admit(est_tokens, max_tokens) => a,
        };
        // No target left: the last one's error stopped the run.
        let Some((target, admission)) = admitted else {
            return Called::Stopped;
        };
        if ctx.shutdown.stop.is_cancelled() {
            return Called::Stopped;
        }
        let route = ctx.routes.get(target);
        tries.attempts += 1;
        let started = *first_attempt.get_or_insert_with(Instant::now);
        ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = tokio::select! {
            _ = ctx.shutdown.abort.cancelled() => None,
            r = route.invoker.call(request, est_tokens) => Some(r),
        };
        ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let error = match result {
            None => return Called::Stopped,
            Some(Ok(reply)) => {
                admission.settle_cached(
                    reply.input_tokens,
                    (reply.cache_read, reply.cache_write),
                    reply.output_tokens,
                );
                route.answered();
                daily_answered(ctx, pass, true);
                return Called::Replied {
                    reply,
                    attempts: tries.attempts,
                    started,
                    target: ctx.routes.several().then(|| route.name.clone()),
                };
            }
            Some(Err(e)) => e,
        };
        if error.class == Class::Throttled {
            admission.throttled(&error.message);
        } else {
            drop(admission);
        }
        let wait = match after_error(ctx, (target, pass), &mut tries, error) {
            Step::Again => continue,
            Step::Wait(wait) => wait,
            Step::Ends(called) => return called,
        };
        tokio::select! {
            _ = ctx.shutdown.stop.cancelled() => return Called::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What a record's call does after an error.
enum Step {
    /// Goes again at once (elsewhere, or in the default tier, or when the daily gate opens).
    Again,
    /// Goes again after this backoff.
    Wait(Duration),
    /// Is over.
    Ends(Called),
}

/// After `error` from target `target` (the call went through the daily gate with `pass`): a refused tier, a
/// target out of use, the daily quota, and else the record's own retry policy.
fn after_error(
    ctx: &Ctx,
    (target, pass): (usize, Option<Pass>),
    tries: &mut Tries,
    error: CallError,
) -> Step {
    // A tier the model does not offer: the record goes again in the default tier, or the run stops.
    match tier_refused(ctx, target, &error) {
        Some(true) => {
            daily_answered(ctx, pass, false);
            return Step::Again;
        }
        Some(false) => return Step::Ends(Called::Stopped),
        None => {}
    }
    // A failure of the target rather than of the record: the record goes to another target.
    if target_failed(ctx, target, &error) {
        daily_answered(ctx, pass, false);
        return Step::Again;
    }
    if let (Some(gate), Some(pass), true) = (&ctx.daily_gate, pass, error.is_daily()) {
        // The gate does the waiting; the record is tried again when it opens.
        RunStats::bump(&ctx.stats.throttled);
        daily_closed(ctx, gate, pass, &error.message);
        return Step::Again;
    }
    daily_answered(ctx, pass, false);
    tracing::debug!(attempt = tries.attempts, code = %error.code, "call failed");
    match tries.after(ctx, error) {
        Next::Retry(wait) => Step::Wait(wait),
        Next::Failed(failure) => Step::Ends(Called::Failed(failure)),
        Next::Stop => Step::Ends(Called::Stopped),
    }
}

/// Whether `error` says target `i`'s model does not offer the service tier its calls name: `Some(true)` when
/// its calls go on in the default tier (`model.unsupported-tier = "use-default"`, said once), `Some(false)` when
/// the run stops on it (`"stop"`), `None` when the error is about something else.
fn tier_refused(ctx: &Ctx, i: usize, error: &CallError) -> Option<bool> {
    let route = ctx.routes.get(i);
    // The tier the job names for the target, not the one its calls name now: a call sent before another's
    // refusal dropped the tier is refused too, and goes again like the first.
    let tier = ctx.job.targets[i].service_tier?;
    let about_tier = error.code == "ValidationException"
        && error.message.to_ascii_lowercase().contains("service tier");
    if !about_tier {
        return None;
    }
    if ctx.job.model.unsupported_tier == crate::job::UnsupportedTier::Stop {
        let stop = CallError {
            class: Class::Fatal,
            message: format!(
                "{} (model.service-tier = \"{}\" and model.unsupported-tier = \"stop\"; choose another tier, or \
                 \"use-default\" to go on in the default tier)",
                error.message,
                tier.as_str()
            ),
            ..error.clone()
        };
        ctx.fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(stop);
        ctx.shutdown.stop.cancel();
        return Some(false);
    }
    if route.invoker.drop_tier() {
        let whose = match ctx.routes.several() {
            true => format!("target {}", route.name),
            false => format!("model {}", ctx.job.model.id),
        };
        crate::say!(
            "warning: {whose} does not offer the {} service tier ({}); its calls go on in the default tier \
             (model.unsupported-tier = \"stop\" stops instead)",
            tier.as_str(),
            error.message
        );
    }
    Some(true)
}

/// Whether `error` from target `i` put the target out of use (dropped for good, or resting) while others serve:
/// says so once.
fn target_failed(ctx: &Ctx, i: usize, error: &CallError) -> bool {
    let route = ctx.routes.get(i);
    let others = ctx.routes.others_in_use(i);
    match route.failed(error, others, tokio::time::Instant::now()) {
        Verdict::Record => false,
        Verdict::Dropped(reason) => {
            let left: Vec<&str> = ctx
                .routes
                .all()
                .iter()
                .filter(|r| !r.is_dropped())
                .map(|r| r.name.as_str())
                .collect();
            crate::say!(
                "warning: target {} is dropped for this run ({reason}); the job goes on with {}",
                route.name,
                left.join(", ")
            );
            true
        }
        Verdict::Rests(rest) => {
            crate::say!(
                "warning: target {} failed {} calls in a row ({}: {}); the other targets serve for the next {}",
                route.name,
                super::route::FAILURES_TO_REST,
                error.code,
                brief(&error.message),
                crate::report::format::duration(rest)
            );
            true
        }
    }
}

/// An error message without the client's debug dump of the error that it may end with (`… (DispatchFailure {
/// … })`), which says nothing more to a reader.
fn brief(message: &str) -> &str {
    let dump = |rest: &str| {
        let name: String = rest
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        name.starts_with(|c: char| c.is_ascii_uppercase())
            && (rest[name.len()..].starts_with('(') || rest[name.len()..].starts_with(" {"))
    };
    message
        .match_indices(" (")
        .find(|(i, _)| dump(&message[i + 2..]))
        .map_or(message, |(i, _)| &message[..i])
}

/// A call met the daily throttle: the gate closes (or stays closed); the first closing says so.
fn daily_closed(ctx: &Ctx, gate: &DailyGate, pass: Pass, message: &str) {
    let closed_now = gate.throttled(pass, message);
    let Some(waiting) = gate.waiting() else {
        return;
    };
    let at = waiting
        .next_try
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ctx.stats.daily_wait_until.store(at, Ordering::Relaxed);
    if closed_now {
        crate::say!(
            "the daily token quota of {} is used up ({message}): sending stops, and one call every {} tries \
             again (budget.on-daily-quota = \"wait\"); next try at {}",
            ctx.job.model.id,
            crate::report::format::duration(ctx.job.budget.daily_retry),
            crate::report::status::utc(at as i64)
        );
    }
}

/// A call that passed the daily gate ended otherwise than with the daily throttle: a probe that was answered
/// opens sending again.
fn daily_answered(ctx: &Ctx, pass: Option<Pass>, answered: bool) {
    let (Some(gate), Some(pass)) = (&ctx.daily_gate, pass) else {
        return;
    };
    let was_waiting = gate.waiting().is_some();
    gate.answered(pass, answered);
    if was_waiting && gate.waiting().is_none() {
        ctx.stats.daily_wait_until.store(0, Ordering::Relaxed);
        crate::say!(
            "the daily token quota of {} has room again: sending resumes",
            ctx.job.model.id
        );
    }
}

/// A record whose reservation can never fit the TPM budget (of any target) fails at once, without a call.
fn never_admitted(ctx: &Ctx, record: &PendingRecord) -> Option<Finished> {
    if ctx
        .routes
        .can_ever_admit(record.est_tokens, record.max_tokens)
    {
        return None;
    }
    let budget = &ctx.routes.get(0).budget;
    let reservation = budget.reservation(record.est_tokens, record.max_tokens);
    let tpm = ctx
        .routes
        .all()
        .iter()
        .filter_map(|r| r.budget.tpm())
        .max()
        .unwrap_or_default();
    Some(Finished::failed(
        record.seq,
        0,
        "ReservationTooLarge",
        format!(
            "this request reserves about {reservation} tokens (input ≈{} + max tokens {}) but budget.tpm is {tpm}, \
             so Bedrock would throttle it every time; lower model.max-tokens or shorten the input",
            record.est_tokens, record.max_tokens
        ),
    ))
}

/// A reply's tokens, counted.
fn count(ctx: &Ctx, reply: &Reply) {
    ctx.stats
        .input_tokens
        .fetch_add(reply.input_tokens, Ordering::Relaxed);
    ctx.stats
        .output_tokens
        .fetch_add(reply.output_tokens, Ordering::Relaxed);
}

/// Record `seq` done with `reply`, after `attempts` calls from `started`, answered by `target`.
fn done(
    seq: u64,
    (attempts, started): (u32, Instant),
    reply: Reply,
    call_records: Option<u32>,
    target: Option<String>,
) -> Finished {
    Finished {
        seq,
        status: Status::Done,
        attempts,
        result: Some(reply.output),
        error_code: None,
        error_message: None,
        input_tokens: reply.input_tokens,
        output_tokens: reply.output_tokens,
        // The record's latency: from its first attempt to the reply, retries included.
        latency_ms: started.elapsed().as_millis() as u64,
        call_records,
        target,
        tier: reply.tier,
        cached: (reply.cache_read, reply.cache_write),
        via_batch: false,
    }
}

/// A call that failed for good: what each of its records fails with.
#[derive(Debug, Clone)]
struct Failure {
    attempts: u32,
    code: String,
    message: String,
    /// Refused for what was sent (the same request would be refused again), not for giving up on retries.
    permanent: bool,
}

impl Failure {
    /// Record `seq` failed so.
    fn of(self, seq: u64) -> Finished {
        Finished::failed(seq, self.attempts, &self.code, self.message)
    }
}

/// What a record's calls have met so far.
#[derive(Debug, Default)]
struct Tries {
    attempts: u32,
    throttles: u32,
    transients: u32,
}

/// What to do after a failed call.
enum Next {
    /// Call again after this wait.
    Retry(Duration),
    /// The call failed for good.
    Failed(Failure),
    /// The run stops; the record stays pending.
    Stop,
}

impl Tries {
    /// The retry policy: throttles are retried until the record succeeds, transient errors up to
    /// `retry.max-attempts`, permanent errors fail the record, and a fatal error stops the run.
    fn after(&mut self, ctx: &Ctx, error: CallError) -> Next {
        let r = ctx.job.retry;
        match error.class {
            // The daily token quota is not met by waiting seconds: the run stops, resumably.
            Class::Throttled if error.is_daily() => {
                RunStats::bump(&ctx.stats.throttled);
                ctx.daily
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(error.message);
                ctx.shutdown.stop.cancel();
                Next::Stop
            }
            Class::Throttled => {
                RunStats::bump(&ctx.stats.throttled);
                self.throttles += 1;
                Next::Retry(retry::backoff(
                    self.throttles - 1,
                    r.base_delay,
                    r.max_delay,
                ))
            }
            Class::Transient => {
                self.transients += 1;
                // Each target may fail a record's call for reasons of its own (a region down): the record gives
                // up only after as many tries on each.
                let targets = ctx.routes.all().len() as u32;
                if self.transients >= r.max_attempts.saturating_mul(targets) {
                    let message = format!(
                        "gave up after {} attempts: {}",
                        self.attempts, error.message
                    );
                    return Next::Failed(Failure {
                        attempts: self.attempts,
                        code: error.code,
                        message,
                        permanent: false,
                    });
                }
                RunStats::bump(&ctx.stats.transient);
                Next::Retry(retry::backoff(
                    self.transients - 1,
                    r.base_delay,
                    r.max_delay,
                ))
            }
            Class::Permanent => Next::Failed(Failure {
                attempts: self.attempts,
                code: error.code,
                message: error.message,
                permanent: true,
            }),
            Class::Fatal => {
                ctx.fatal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(error);
                ctx.shutdown.stop.cancel();
                Next::Stop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_message_is_told_without_the_client_s_debug_dump() {
        let m = "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error \
                 111) (DispatchFailure(DispatchFailure { source: ConnectorError { kind: Io } }))";
        assert_eq!(
            super::brief(m),
            "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
        assert_eq!(
            super::brief("Too many requests (slow down)"),
            "Too many requests (slow down)"
        );
    }
}
