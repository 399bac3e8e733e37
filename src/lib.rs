//! batchrun: a batch inference job runner for Amazon Bedrock.
//!
//! ```text
//!  job.toml ──► job (validate, fingerprint)
//!                  │
//!  local / s3 ──► source (JSONL | CSV | documents + template) ──► Record{id, request}
//!                  ▼
//!              checkpoint (SQLite)  ◄──────────── results, attempts, usage, errors
//!                  │ pending records                      ▲
//!                  ▼                                      │
//!              budget (RPM + TPM buckets × adaptive multiplier, concurrency cap)
//!                  ▼                                      │
//!              invoke (aws-sdk-bedrockruntime, SDK retries off) ──┘
//!                  ▼
//!              sink (part files + manifest, exactly once) ──► report
//! ```
//!
//! Beside the pipeline, [`emulator`] is a local Bedrock Runtime that tests, benchmarks and the demo talk to
//! through the real SDK. The stages arrive one issue at a time; today the crate holds the emulator and the CLI.

mod say;

pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod emulator;
pub mod error;
pub mod invoke;
pub mod job;
pub mod report;
pub mod run;
pub mod s3;
pub mod sink;
pub mod source;
pub mod tokens;

pub use error::{Error, ExitKind};
