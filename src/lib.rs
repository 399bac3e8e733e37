//! batchrun: a batch inference job runner for Amazon Bedrock.
//!
//! # The stages of `submit`, in order, and what flows between them
//!
//! ```text
//! job.toml ─► job ────────── Job: checked settings, resolved Locations
//!               │
//! local / S3 ─► source ───── Item: a record (id, request body, token estimate)
//!               │            or a bad line and why; read in batches off the runtime
//!               ▼
//!             checkpoint ─── SQLite: jobs, records, outcomes, parts, runs, series ◄──────────┐
//!               │ PendingRecord, a page at a time                                            │
//!               ▼                                                                            │
//!             budget ─────── Admission: RPM/TPM room reserved (input + max-tokens)           │ Finished,
//!               │                                                                            │ by the one
//!               ▼                                                                            │ writer
//!             invoke ─────── one SDK call: Reply, or a CallError classified                  │
//!               │            (throttled, transient, permanent, fatal) ───────────────────────┘
//!               ▼
//!             sink ───────── complete parts rendered from the checkpoint, published
//!                            atomically; then manifest.json
//! ```
//!
//! `run` drives those stages for `submit`: the job lock, the fingerprint (new, resume or refuse), ingest, a
//! feeder, the workers, the one writer, parts, and Ctrl-C. `inspect` gathers facts for the commands that only
//! look — `plan` (reads the inputs as `submit` would), `status` and `report` (read the state database) — and
//! `report` turns facts into text and pages with pure functions (plus live progress). `catalogue` is the model table (burndown, context, prices). `batch` hands a job's records to
//! Bedrock batch inference instead (staged on S3, joined back by record id into the same checkpoint). `s3` is the
//! S3 client for inputs and outputs; `error` folds every module's error into one with a hint and an exit code;
//! `cli` parses the command line and decides how to reach Bedrock (real, a URL, or the embedded `emulator`, a
//! local Bedrock Runtime that tests, benchmarks and the demo reach only through the real SDK — it shares no
//! code with the runner). Dependencies run one way, down this list; `tests/it/structure.rs` holds the table.
//!
//! # Where to start reading
//!
//! - a new input format: `source/reader.rs` (one function per format), its keys in `job/spec.rs` and their
//!   checks in `job/check.rs`;
//! - a new Bedrock API or request shape: `source/request.rs` (the body sent) and `invoke/client.rs` (the call
//!   and what the reply says), then `emulator/wire.rs` so the emulator serves it;
//! - how a run stops, resumes or publishes: `run/submit.rs`, `run/worker.rs`, `run/writer.rs`, `run/parts.rs`;
//! - a new report or a new figure in one: `inspect/state.rs` (or `inspect/plan.rs`) for the facts, `report/`
//!   for the text, `checkpoint/` for what is stored (one module per table);
//! - quota behaviour: `budget/control.rs`, whose opening comment states the model, and `budget/limiter.rs`.

pub mod say;

pub mod batch;
pub mod budget;
pub mod catalogue;
pub mod checkpoint;
pub mod cli;
pub mod emulator;
pub mod error;
pub mod inspect;
pub mod invoke;
pub mod job;
pub mod quotas;
pub mod report;
pub mod run;
pub mod s3;
pub mod sink;
pub mod source;
pub mod tokens;

pub use error::{Error, ExitKind};
