//! A local Bedrock Runtime: same HTTP paths, JSON and error framing as Bedrock, with a quota model that
//! reserves and settles tokens as Bedrock does, a latency model and seeded fault injection.
//!
//! Tests, benchmarks and the first-run demo talk to it through the real AWS SDK over HTTP; users run it with
//! `batchrun emulator` to rehearse a job against a simulated quota. It owns its own quota code
//! ([`quota`]), written apart from the runner's budget so that the two check each other.
//!
//! It also serves the control plane's batch inference jobs ([`batch`]), reading and writing S3.
//!
//! It does not own streaming operations (ConverseStream, InvokeModelWithResponseStream), guardrails or async
//! invocation: batchrun does not use them.

pub mod batch;
pub mod config;
pub mod quota;
mod server;
mod servicequotas;
pub mod stats;
pub mod text;
pub mod wire;

pub use config::{
    ConfigError, EmulatorConfig, Fault, FaultRates, LatencyModel, ModelProfile, OutputLength,
};
pub use server::{EmulatorError, EmulatorHandle, STATS_PATH, start};
pub use stats::{Counters, ModelStats, Stats};
