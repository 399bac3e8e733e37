//! Calling Bedrock: the SDK client built from the job (standard AWS configuration, the SDK's own retries off,
//! timeouts set), one call per attempt, and each failure classified once ([`Class`]).
//!
//! The backoff curve lives in [`retry`]; when to retry is decided per record in `run/worker.rs`, and reacting
//! to throttles belongs to the budget. This module keeps no state
//! between calls.

mod classify;
mod client;
pub mod retry;

pub use classify::{CallError, Class, Stop};
pub use client::{InvokeError, Invoker, Reply, sdk_config, usage_of};
