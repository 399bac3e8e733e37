//! What the user sees: live counters shared by the runner ([`RunStats`]), a progress bar on a terminal or
//! periodic lines elsewhere ([`progress`]), the end-of-run text ([`summary`]), and the texts of `plan`
//! ([`plan`]), `status` ([`status`]) and `report` ([`diagnose`], and [`html`] for its page), all rendered by
//! pure functions; numbers and times are formatted in one place ([`format`](mod@format)).
//!
//! It reads the counters; it never changes what the runner does.

pub mod diagnose;
pub mod format;
pub mod html;
pub mod plan;
pub mod progress;
pub mod status;
pub mod summary;

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters the runner bumps and the reporter reads.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Records to do in this run (pending at its start).
    pub planned: AtomicU64,
    /// Records that succeeded in this run.
    pub succeeded: AtomicU64,
    /// Records that failed in this run.
    pub failed: AtomicU64,
    /// Calls throttled.
    pub throttled: AtomicU64,
    /// Calls that failed with a transient error and were retried.
    pub transient: AtomicU64,
    /// Calls in flight.
    pub in_flight: AtomicU64,
    /// Input tokens reported.
    pub input_tokens: AtomicU64,
    /// Output tokens reported.
    pub output_tokens: AtomicU64,
    /// While sending waits for the daily token quota: when the next try goes, Unix seconds; 0 otherwise.
    pub daily_wait_until: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`RunStats::planned`].
    pub planned: u64,
    /// See [`RunStats::succeeded`].
    pub succeeded: u64,
    /// See [`RunStats::failed`].
    pub failed: u64,
    /// See [`RunStats::throttled`].
    pub throttled: u64,
    /// See [`RunStats::transient`].
    pub transient: u64,
    /// See [`RunStats::in_flight`].
    pub in_flight: u64,
    /// See [`RunStats::input_tokens`].
    pub input_tokens: u64,
    /// See [`RunStats::output_tokens`].
    pub output_tokens: u64,
    /// See [`RunStats::daily_wait_until`].
    pub daily_wait_until: u64,
}

impl RunStats {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            planned: l(&self.planned),
            succeeded: l(&self.succeeded),
            failed: l(&self.failed),
            throttled: l(&self.throttled),
            transient: l(&self.transient),
            in_flight: l(&self.in_flight),
            input_tokens: l(&self.input_tokens),
            output_tokens: l(&self.output_tokens),
            daily_wait_until: l(&self.daily_wait_until),
        }
    }
}

impl Snapshot {
    /// Records finished in this run.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }
}
