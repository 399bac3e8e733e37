//! The budget shared by all workers: concurrency slots, then RPM and TPM buckets, admitted first come, first
//! served. An [`Admission`] is held by the request while it runs; settling it charges the reported usage,
//! dropping it (a throttle, an error, a cancelled call) gives the token reservation back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::bucket::Bucket;
use crate::job::Job;

// Buckets start with ten seconds of quota rather than a full minute, so a cold start does not fire a minute's
// worth of requests into a quota that may already be in use.
const START_FRACTION: f64 = 10.0 / 60.0;
// While waiting for the buckets, re-check at least this often (settlements give tokens back early).
const MAX_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Buckets {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
}

/// The job's quota, as admission control.
#[derive(Debug)]
pub struct Budget {
    buckets: Mutex<Buckets>,
    // Waiters line up here so admission is first come, first served and a large request is not starved.
    turn: tokio::sync::Mutex<()>,
    slots: Arc<Semaphore>,
    burndown: u64,
}

/// A request's hold on the budget while it runs.
#[derive(Debug)]
#[must_use = "an admission is released when dropped"]
pub struct Admission {
    budget: Arc<Budget>,
    reserved: u64,
    _slot: OwnedSemaphorePermit,
    settled: bool,
}

impl Budget {
    /// The budget of `job`.
    pub fn new(job: &Job) -> Arc<Budget> {
        let now = Instant::now();
        Arc::new(Budget {
            buckets: Mutex::new(Buckets {
                rpm: job
                    .budget
                    .rpm
                    .map(|n| Bucket::per_minute(n, START_FRACTION, now)),
                tpm: job
                    .budget
                    .tpm
                    .map(|n| Bucket::per_minute(n, START_FRACTION, now)),
            }),
            turn: tokio::sync::Mutex::new(()),
            slots: Arc::new(Semaphore::new(job.budget.max_concurrency as usize)),
            burndown: u64::from(job.model.output_burndown),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request reserving `tokens` can ever be admitted (no more than the TPM budget holds).
    pub fn can_ever_admit(&self, tokens: u64) -> bool {
        self.lock()
            .tpm
            .as_ref()
            .is_none_or(|b| tokens as f64 <= b.capacity())
    }

    /// The TPM budget, if any.
    pub fn tpm(&self) -> Option<u64> {
        self.lock().tpm.as_ref().map(|b| b.capacity() as u64)
    }

    /// Waits for a concurrency slot and room for one request reserving `tokens`, then takes them.
    ///
    /// # Panics
    /// If `tokens` can never fit; check [`Budget::can_ever_admit`] first.
    pub async fn admit(self: &Arc<Self>, tokens: u64) -> Admission {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let _turn = self.turn.lock().await;
        loop {
            let wait = {
                let now = Instant::now();
                let mut b = self.lock();
                let rpm_wait = b
                    .rpm
                    .as_mut()
                    .map_or(Some(Duration::ZERO), |r| r.wait_for(1, now));
                let tpm_wait = b
                    .tpm
                    .as_mut()
                    .map_or(Some(Duration::ZERO), |t| t.wait_for(tokens, now));
                let wait = rpm_wait
                    .zip(tpm_wait)
                    .map(|(a, b)| a.max(b))
                    .expect("admit is only called for requests that fit");
                if wait.is_zero() {
                    if let Some(r) = b.rpm.as_mut() {
                        r.take(1);
                    }
                    if let Some(t) = b.tpm.as_mut() {
                        t.take(tokens);
                    }
                    None
                } else {
                    Some(wait)
                }
            };
            match wait {
                None => {
                    return Admission {
                        budget: self.clone(),
                        reserved: tokens,
                        _slot: slot,
                        settled: false,
                    };
                }
                Some(w) => tokio::time::sleep(w.min(MAX_WAIT)).await,
            }
        }
    }
}

impl Admission {
    /// The tokens reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Charges what the call used (`input + output × burndown`) and gives the rest of the reservation back.
    pub fn settle(mut self, input_tokens: u64, output_tokens: u64) {
        let charged = input_tokens + output_tokens * self.budget.burndown;
        let refund = self.reserved as i64 - charged as i64;
        if let Some(t) = self.budget.lock().tpm.as_mut() {
            t.adjust(refund, Instant::now());
        }
        self.settled = true;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Not settled: the call was throttled, failed or cancelled, and Bedrock charged no tokens for it.
        if !self.settled
            && let Some(t) = self.budget.lock().tpm.as_mut()
        {
            t.adjust(self.reserved as i64, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn job(budget: &str) -> Job {
        let text = format!(
            "[job]\nname = \"t\"\n[model]\nid = \"m\"\nmax-tokens = 100\noutput-burndown = 5\n\
             [input]\npath = \".\"\nformat = \"documents\"\n[budget]\n{budget}\n[output]\npath = \"o\"\n"
        );
        Job::parse(&text, Path::new("t.toml")).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn admission_waits_for_refill_and_settles_with_burndown() {
        // 6,000 TPM: 100 a second, starting with 1,000 (ten seconds' worth).
        let budget = Budget::new(&job("tpm = 6000\nmax-concurrency = 8"));
        let t0 = Instant::now();
        let a = budget.admit(600).await;
        let b = budget.admit(400).await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // Empty now: the next 300 need three seconds of refill.
        let c = budget.admit(300).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3100),
            "{waited:?}"
        );
        // 600 reserved, 100 + 20 × 5 = 200 charged: 400 come back at once.
        a.settle(100, 20);
        drop(b); // not settled: all 400 back
        let t1 = Instant::now();
        let d = budget.admit(800).await;
        assert_eq!(t1.elapsed(), Duration::ZERO);
        drop((c, d));
        assert!(budget.can_ever_admit(6000));
        assert!(!budget.can_ever_admit(6001));
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_spaces_requests_and_concurrency_caps_them() {
        // 60 RPM: one a second, starting with ten.
        let budget = Budget::new(&job("rpm = 60\nmax-concurrency = 20"));
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..12 {
            held.push(budget.admit(1).await);
        }
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2200),
            "{waited:?}"
        );

        let capped = Budget::new(&job("max-concurrency = 2"));
        let _a = capped.admit(1).await;
        let _b = capped.admit(1).await;
        let third = tokio::time::timeout(Duration::from_secs(5), capped.admit(1)).await;
        assert!(third.is_err(), "a third request must wait for a slot");
    }
}
