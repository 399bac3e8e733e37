//! Admission control: a request goes out only when the RPM and TPM budgets have room for it and a concurrency
//! slot is free. TPM is charged the way Bedrock charges it: `input + max_tokens` reserved while the request
//! runs, settled to `input + output × burndown` when it ends. The rates adapt: a throttle resyncs a bucket
//! with Bedrock's and cuts its rate to just under the quota it reveals ([`control`]); the input estimate is
//! calibrated against the counts Bedrock reports; the concurrency cap follows rate × latency.
//!
//! This module sees outcomes and time, never the SDK or SQLite.

mod bucket;
pub mod control;
mod limiter;
pub mod quota;

pub use bucket::Bucket;
pub use limiter::{Admission, Budget, LearnedRates, Second, ThrottleEvent, ThrottleKind, Usage};
