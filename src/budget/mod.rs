//! Admission control: a request goes out only when the RPM and TPM budgets have room for it and a concurrency
//! slot is free. TPM is charged the way Bedrock charges it: `input + max_tokens` reserved while the request
//! runs, settled to `input + output × burndown` when it ends.
//!
//! This module sees outcomes and time, never the SDK or SQLite.

mod bucket;
mod limiter;

pub use bucket::Bucket;
pub use limiter::{Admission, Budget};
