//! batchrun: a batch inference job runner for Amazon Bedrock.
//!
//! ```text
//!  job.toml ──► job (validate: keys, bounds, paths; Location)
//!                  │
//!  local / s3 ──► source (list files; JSONL | CSV | documents + template) ──► Item: record or failed record
//!                  │ (streamed; tokens estimates each request)
//!                  ▼
//!              checkpoint (SQLite: jobs, locks, records, outcomes, parts, runs, series)  ◄───────┐
//!                  │ pending records                                                        │ outcomes
//!                  ▼                                                                        │ (writer)
//!              budget (RPM + TPM buckets that reserve and settle, adaptive rates, concurrency)    │
//!                  ▼                                                                        │
//!              invoke (aws-sdk-bedrockruntime, SDK retries off, each failure classified) ───┘
//!                  ▼
//!              sink (parts rendered from the checkpoint, published atomically; manifest)
//!
//!  run: drives the stages for `submit` (lock, fingerprint, ingest, feeder, workers, writer, parts,
//!       shutdown) and gathers the facts for `plan`, `status` and `report`;
//!  report: the text and pages those commands print (pure functions), live progress, prices;
//!  s3: the S3 client for inputs and outputs; emulator: a local Bedrock Runtime that tests, benchmarks
//!  and the demo reach only through the real SDK (it shares no code with the runner).
//! ```
//!
//! Where to start reading: a new input format → `source/reader.rs` (and `job/spec.rs` for its keys); a new
//! Bedrock API or request shape → `source/request.rs` and `invoke/client.rs`; how a run stops, resumes or
//! publishes → `run/submit.rs`, `run/writer.rs`, `run/parts.rs`; a new report → `run/inspect.rs` for the facts
//! and `report/` for the text; quota behaviour → `budget/control.rs`, whose opening comment states the model.

mod say;

pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod emulator;
pub mod error;
pub mod inspect;
pub mod invoke;
pub mod job;
pub mod report;
pub mod run;
pub mod s3;
pub mod sink;
pub mod source;
pub mod tokens;

pub use error::{Error, ExitKind};
