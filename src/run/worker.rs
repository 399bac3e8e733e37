//! A worker: takes pending records one at a time and sees each through admission, the call and its retries,
//! then hands the outcome to the writer. Throttles are retried until the record succeeds; transient errors up
//! to `retry.max-attempts`; permanent errors fail the record; a fatal error stops the run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use super::shutdown::Shutdown;
use crate::budget::Budget;
use crate::checkpoint::{Finished, PendingRecord, Status};
use crate::invoke::{CallError, Class, Invoker, Reply, retry};
use crate::job::Job;
use crate::report::RunStats;
use crate::report::progress::ProgressMode;

/// What every worker shares.
#[derive(Debug)]
pub struct Ctx {
    /// The job.
    pub job: Job,
    /// The client.
    pub invoker: Invoker,
    /// The budget.
    pub budget: Arc<Budget>,
    /// Counters.
    pub stats: Arc<RunStats>,
    /// Stop signals.
    pub shutdown: Shutdown,
    /// The first fatal error, which stops the run.
    pub fatal: std::sync::Mutex<Option<CallError>>,
    /// How progress is shown.
    pub progress: ProgressMode,
}

/// Runs one worker until the records run out or the run stops.
pub async fn run(
    ctx: Arc<Ctx>,
    records: Arc<Mutex<mpsc::Receiver<PendingRecord>>>,
    out: mpsc::Sender<Finished>,
) {
    loop {
        let next = {
            let mut rx = records.lock().await;
            tokio::select! {
                _ = ctx.shutdown.stop.cancelled() => None,
                r = rx.recv() => r,
            }
        };
        let Some(record) = next else { return };
        if let Some(finished) = process(&ctx, record).await
            && out.send(finished).await.is_err()
        {
            return;
        }
    }
}

/// One record to its outcome, or `None` when the run stops first (the record stays pending).
async fn process(ctx: &Ctx, record: PendingRecord) -> Option<Finished> {
    if let Some(failed) = never_admitted(ctx, &record) {
        return Some(failed);
    }
    let mut tries = Tries::default();
    let mut first_attempt: Option<Instant> = None;
    loop {
        let admission = tokio::select! {
            _ = ctx.shutdown.stop.cancelled() => return None,
            a = ctx.budget.admit(record.est_tokens, record.max_tokens) => a,
        };
        tries.attempts += 1;
        let started = *first_attempt.get_or_insert_with(Instant::now);
        ctx.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = tokio::select! {
            _ = ctx.shutdown.abort.cancelled() => None,
            r = ctx.invoker.call(&record.request, record.est_tokens) => Some(r),
        };
        ctx.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let error = match result? {
            Ok(reply) => {
                admission.settle(reply.input_tokens, reply.output_tokens);
                return Some(succeeded(ctx, &record, tries.attempts, started, reply));
            }
            Err(e) => e,
        };
        if error.class == Class::Throttled {
            admission.throttled(&error.message);
        } else {
            drop(admission);
        }
        tracing::debug!(record_id = %record.record_id, attempt = tries.attempts, code = %error.code, "call failed");
        let wait = match tries.after(ctx, record.seq, error) {
            Next::Retry(wait) => wait,
            Next::Finished(finished) => return Some(finished),
            Next::Stop => return None,
        };
        tokio::select! {
            _ = ctx.shutdown.stop.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A record whose reservation can never fit the TPM budget fails at once, without a call.
fn never_admitted(ctx: &Ctx, record: &PendingRecord) -> Option<Finished> {
    let reservation = ctx.budget.reservation(record.est_tokens, record.max_tokens);
    if ctx.budget.can_ever_admit(reservation) {
        return None;
    }
    let tpm = ctx.budget.tpm().unwrap_or_default();
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

/// A reply: counted, and the record done.
fn succeeded(
    ctx: &Ctx,
    record: &PendingRecord,
    attempts: u32,
    started: Instant,
    reply: Reply,
) -> Finished {
    ctx.stats
        .input_tokens
        .fetch_add(reply.input_tokens, Ordering::Relaxed);
    ctx.stats
        .output_tokens
        .fetch_add(reply.output_tokens, Ordering::Relaxed);
    Finished {
        seq: record.seq,
        status: Status::Done,
        attempts,
        result: Some(reply.output),
        error_code: None,
        error_message: None,
        input_tokens: reply.input_tokens,
        output_tokens: reply.output_tokens,
        // The record's latency: from its first attempt to the reply, retries included.
        latency_ms: started.elapsed().as_millis() as u64,
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
    /// The record has its outcome.
    Finished(Finished),
    /// The run stops; the record stays pending.
    Stop,
}

impl Tries {
    /// The retry policy: throttles are retried until the record succeeds, transient errors up to
    /// `retry.max-attempts`, permanent errors fail the record, and a fatal error stops the run.
    fn after(&mut self, ctx: &Ctx, seq: u64, error: CallError) -> Next {
        let r = ctx.job.retry;
        match error.class {
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
                if self.transients >= r.max_attempts {
                    let message = format!(
                        "gave up after {} attempts: {}",
                        self.attempts, error.message
                    );
                    return Next::Finished(Finished::failed(
                        seq,
                        self.attempts,
                        &error.code,
                        message,
                    ));
                }
                RunStats::bump(&ctx.stats.transient);
                Next::Retry(retry::backoff(
                    self.transients - 1,
                    r.base_delay,
                    r.max_delay,
                ))
            }
            Class::Permanent => Next::Finished(Finished::failed(
                seq,
                self.attempts,
                &error.code,
                error.message,
            )),
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
