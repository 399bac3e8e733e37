//! A checked job: the types `run`, `source` and `sink` work from, every default applied and every path
//! resolved. [`Job::parse`](super::Job::parse) in `check.rs` makes them from the job file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::batch::BatchSettings;
use super::embed::EmbedSettings;
use super::location::Location;
use super::spec::{
    Api, CacheTtl, InputFormat, Mode, OnDailyQuota, OutputFormat, ServiceTier, UnsupportedTier,
};
use crate::catalogue::ModelFacts;
use crate::s3::S3Settings;

/// A checked job.
#[derive(Debug, Clone)]
pub struct Job {
    /// `job.name`.
    pub name: String,
    /// The job file, as given.
    pub file: PathBuf,
    /// The folder relative paths are resolved against: the job file's folder.
    pub dir: PathBuf,
    /// Model and request shaping.
    pub model: ModelSettings,
    /// Inputs.
    pub input: InputSettings,
    /// Quota.
    pub budget: BudgetSettings,
    /// Backoff.
    pub retry: RetrySettings,
    /// Outputs.
    pub output: OutputSettings,
    /// Which Bedrock.
    pub endpoint: Endpoint,
    /// Longest a single call may take.
    pub timeout: Duration,
    /// How S3 is reached.
    pub s3: S3Settings,
    /// `job.incremental`: the generations kept; `None` for a one-shot job.
    pub incremental: Option<u32>,
    /// The quotas that serve the records: at least one.
    pub targets: Vec<Target>,
    /// How the records reach Bedrock (`job.mode`, or `submit --mode`).
    pub mode: Mode,
    /// `job.deadline-hours`.
    pub deadline: Option<Duration>,
    /// `[batch]`, when the job has one.
    pub batch: Option<BatchSettings>,
}

/// `[[target]]`, checked (or the one target `[model]`, `[budget]` and `[endpoint]` make).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Unique among the job's targets.
    pub name: String,
    /// Model id, inference profile or ARN.
    pub model: String,
    /// Region, when the job sets one.
    pub region: Option<String>,
    /// Which Bedrock.
    pub endpoint: Endpoint,
    /// Requests per minute, when the job states it.
    pub rpm: Option<u64>,
    /// Tokens per minute, when the job states it.
    pub tpm: Option<u64>,
    /// The service tier its calls name, if any.
    pub service_tier: Option<ServiceTier>,
}

/// `[model]`, checked.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSettings {
    /// Model id, inference profile or ARN.
    pub id: String,
    /// Region, when the job sets one.
    #[serde(skip)]
    pub region: Option<String>,
    /// Converse or InvokeModel.
    pub api: Api,
    /// `maxTokens` for Converse, and the reservation for invoke bodies that do not set their own.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Top-p.
    pub top_p: Option<f64>,
    /// System prompt.
    pub system: Option<String>,
    /// Quota tokens per output token: the job file's, else the model table's. Not part of the fingerprint: it
    /// shapes the budget, not the requests.
    #[serde(skip)]
    pub output_burndown: u32,
    /// Where `output_burndown` came from.
    #[serde(skip)]
    pub burndown_from: BurndownFrom,
    /// What the model table says about the model (its defaults for a model it does not list).
    #[serde(skip)]
    pub facts: ModelFacts,
    /// Whether the model table lists the model.
    #[serde(skip)]
    pub listed: bool,
    /// `api = "embed"`: the family and what is asked of it. Left out of the fingerprint for other APIs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed: Option<EmbedSettings>,
    /// The service tier calls name, if any. Not part of the fingerprint: it changes price and speed, not what is
    /// asked.
    #[serde(skip)]
    pub service_tier: Option<ServiceTier>,
    /// What a run does when a model does not offer `service_tier`.
    #[serde(skip)]
    pub unsupported_tier: UnsupportedTier,
    /// A cache point after the system prompt. Part of the fingerprint when on: the requests change.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cache_system: bool,
    /// The cache points' time to live, when not Bedrock's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<CacheTtl>,
}

/// Where a model's output burndown came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BurndownFrom {
    /// `model.output-burndown`.
    JobFile,
    /// The model table's entry for the model.
    Table,
    /// Neither: the table's default, with a warning.
    #[default]
    Default,
}

/// `[input]`, checked.
#[derive(Debug, Clone, Serialize)]
pub struct InputSettings {
    /// The path as written in the job file.
    pub path: String,
    /// The path resolved against the job file's folder (may hold glob characters), or the S3 URI.
    #[serde(skip)]
    pub location: Location,
    /// Format.
    pub format: InputFormat,
    /// Prompt template.
    pub template: Option<String>,
    /// Body template (invoke).
    pub body_template: Option<String>,
    /// CSV id column.
    pub id_column: String,
    /// Read symbolic links that lead outside the input folder. Left out of the fingerprint when off, so that
    /// jobs started before it existed resume.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub follow_links_outside: bool,
    /// Documents split into chunks. Left out of the fingerprint when not set, so that jobs started before it
    /// existed resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkSettings>,
}

/// `[chunk]`, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChunkSettings {
    /// Most tokens in a chunk.
    pub tokens: u64,
    /// Tokens shared with the chunk before.
    pub overlap: u64,
}

/// `[budget]`, checked.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// Most requests in flight.
    pub max_concurrency: u32,
    /// How often a run whose quotas came from Service Quotas reads them again; `None` never.
    pub quota_refresh: Option<Duration>,
    /// What a run does when the daily token quota is used up.
    pub on_daily_quota: OnDailyQuota,
    /// Between tries while it waits for the daily quota.
    pub daily_retry: Duration,
}

/// `[retry]`, checked.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    /// First backoff ceiling.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
    /// Attempts before transient errors fail a record.
    pub max_attempts: u32,
}

/// `[output]`, checked.
#[derive(Debug, Clone, Serialize)]
pub struct OutputSettings {
    /// The path as written.
    pub path: String,
    /// The folder, resolved, or the S3 prefix.
    #[serde(skip)]
    pub location: Location,
    /// Format.
    pub format: OutputFormat,
    /// Records per part file.
    pub records_per_part: u64,
}

/// Which Bedrock Runtime endpoint to call.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// Real Bedrock, by the standard AWS configuration.
    Aws,
    /// batchrun's emulator, started in-process with this profile (or its defaults).
    Emulator {
        /// The profile file, resolved.
        profile: Option<PathBuf>,
    },
    /// Another endpoint URL.
    Url(String),
}

/// The settings that decide what is sent and what is written: a change to any of them means a different job.
/// Budget, retry, endpoint and region are left out: they change how fast, not what.
#[derive(Debug, Serialize)]
pub struct Settings<'a> {
    /// Model and request shaping.
    pub model: &'a ModelSettings,
    /// Input reading.
    pub input: &'a InputSettings,
    /// Output layout.
    pub output: &'a OutputSettings,
}

impl Job {
    /// The settings a resumed run must share with the first.
    pub fn settings(&self) -> Settings<'_> {
        Settings {
            model: &self.model,
            input: &self.input,
            output: &self.output,
        }
    }

    /// The job as its target `i` serves it: that target's model, region, endpoint and budget, and no other
    /// target. The run gives each target its own client and budget from it.
    pub fn for_target(&self, i: usize) -> Job {
        let t = &self.targets[i];
        let mut job = self.clone();
        job.model.id = t.model.clone();
        job.model.region = t.region.clone();
        job.endpoint = t.endpoint.clone();
        job.budget.rpm = t.rpm;
        job.budget.tpm = t.tpm;
        job.model.service_tier = t.service_tier;
        job.targets = vec![t.clone()];
        job
    }

    /// The default state database: `.batchrun/state.db` in the job file's folder.
    pub fn default_state_path(&self) -> PathBuf {
        self.dir.join(".batchrun").join("state.db")
    }
}
