//! The job file as written: every table and key, with its default. Unknown keys are refused.
//!
//! ```toml
//! [job]
//! name = "nightly-rag"
//! [model]
//! id = "anthropic.claude-3-5-haiku-20241022-v1:0"
//! max-tokens = 512
//! [input]
//! path = "data/docs/"
//! format = "documents"
//! template = "Summarize:\n\n{{ text }}"
//! [budget]
//! tpm = 200000
//! [output]
//! path = "out/nightly-rag/"
//! ```

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole job file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobFile {
    /// `[job]`: the job's identity.
    pub job: JobTable,
    /// `[model]`: what is called and how requests are shaped.
    pub model: ModelTable,
    /// `[input]`: where the prompts come from.
    pub input: InputTable,
    /// `[budget]`: the account's quota for this model.
    #[serde(default)]
    pub budget: BudgetTable,
    /// `[retry]`: backoff for throttles and transient errors.
    #[serde(default)]
    pub retry: RetryTable,
    /// `[output]`: where results go.
    pub output: OutputTable,
    /// `[endpoint]`: which Bedrock to call.
    #[serde(default)]
    pub endpoint: EndpointTable,
    /// `[s3]`: how S3 inputs and outputs are reached.
    #[serde(default)]
    pub s3: S3Table,
    /// `[chunk]`: split each document into chunks of tokens, one record each.
    pub chunk: Option<ChunkTable>,
    /// `[[target]]`: the quotas that serve the job's records, each a model or inference profile in a region with
    /// a budget of its own. Left out: one, made of `[model]`, `[budget]` and `[endpoint]`.
    #[serde(default)]
    pub target: Vec<TargetTable>,
    /// `[batch]`: how records go to Bedrock batch inference (`job.mode = "batch"` or `"auto"`).
    pub batch: Option<BatchTable>,
}

/// How a job's records reach Bedrock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One call a record, as fast as the on-demand quota allows.
    #[default]
    OnDemand,
    /// Bedrock batch inference: staged on S3, answered within hours, at the batch price.
    Batch,
    /// Batch when the job is large enough and its deadline allows, else on demand.
    Auto,
}

impl Mode {
    /// The name the job file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::OnDemand => "on-demand",
            Mode::Batch => "batch",
            Mode::Auto => "auto",
        }
    }
}

/// `[batch]`: Bedrock batch inference (CreateModelInvocationJob).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BatchTable {
    /// The IAM role Bedrock assumes to read the staged records and write the results
    /// (`arn:aws:iam::ACCOUNT:role/NAME`).
    pub role_arn: Spanned<String>,
    /// Where records are staged and results written: an S3 prefix `s3://bucket/prefix/` in the model's region.
    pub staging: Spanned<String>,
    /// Most records in one batch job [default: 50,000]; more records make more jobs.
    pub records_per_job: Option<Spanned<u64>>,
    /// Fewest records Bedrock takes in one batch job [default: 100]; fewer records go on demand.
    pub min_records: Option<Spanned<u64>>,
    /// Most bytes of staged records in one batch job [default: 1 GB].
    pub bytes_per_job: Option<Spanned<u64>>,
    /// Batch jobs of this job in flight at once [default: 10]; the others wait for a slot.
    pub max_jobs_in_flight: Option<Spanned<u32>>,
    /// Hours Bedrock has to finish a batch job before it expires, 24 to 168 [default: 24].
    pub timeout_hours: Option<Spanned<u32>>,
    /// Seconds between the first status checks; the wait grows to `poll-max-secs` while nothing changes
    /// [default: 30].
    pub poll_secs: Option<Spanned<f64>>,
    /// Longest wait between status checks, in seconds [default: 300].
    pub poll_max_secs: Option<Spanned<f64>>,
    /// A record the batch job failed or left out: `on-demand` (the default) sends it again on demand under the
    /// budget; `fail` marks it failed with the batch job's error.
    #[serde(default)]
    pub on_record_error: OnRecordError,
}

/// `batch.on-record-error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRecordError {
    /// Send it again on demand, under the budget.
    #[default]
    OnDemand,
    /// Mark it failed with the batch job's error.
    Fail,
}

/// `[[target]]`: one quota that can serve the job's records. Requests are shaped by `[model]` whichever target
/// serves them; a target names where they go and how fast. Each request goes to a target with room at that
/// moment; a throttle from one target slows only that target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetTable {
    /// How the target is named in messages, the output and the report [default: its region when the targets
    /// differ by region only, its model when they differ by model only, else `model@region`].
    pub name: Option<Spanned<String>>,
    /// Model id, inference profile id (`us.…`, `eu.…`, `global.…`) or ARN [default: `model.id`].
    pub model: Option<Spanned<String>>,
    /// AWS region [default: `model.region`, else the standard AWS configuration].
    pub region: Option<Spanned<String>>,
    /// Endpoint URL, as `endpoint.url` [default: `endpoint.url`].
    pub url: Option<Spanned<String>>,
    /// With `url = "emulator"`: the emulator profile (TOML), relative to the job file's folder.
    pub emulator_profile: Option<Spanned<String>>,
    /// Allow an `http://` URL on a host other than this machine's loopback (see `endpoint.allow-insecure-http`).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Requests per minute of this target's quota [default: `budget.rpm`, else the account's, else learned].
    pub rpm: Option<Spanned<u64>>,
    /// Tokens per minute of this target's quota [default: `budget.tpm`, else the account's, else learned].
    pub tpm: Option<Spanned<u64>>,
    /// This target's service tier [default: `model.service-tier`].
    pub service_tier: Option<ServiceTier>,
}

/// `[chunk]`: documents split into chunks by tokens (counted with tiktoken `cl100k_base`, as the budget counts).
/// Each chunk is a record with id `<document>#<n>` (from 0) and the template fields `text` (the chunk's),
/// `doc`, `chunk`, `start` and `end` (character offsets into the document) and `tokens`, which are also
/// written into its output line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChunkTable {
    /// Most tokens in a chunk.
    pub tokens: Spanned<u64>,
    /// Tokens a chunk shares with the one before it (less than half of `tokens`); left out, 0.
    pub overlap: Option<Spanned<u64>>,
}

/// `[job]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobTable {
    /// The job's name: its key in the state database. Submitting a job with the same name resumes it.
    pub name: Spanned<String>,
    /// Submitting again after the inputs changed starts a new generation, which reuses the answers of earlier
    /// generations to the same requests and writes a change set beside its snapshot (left out: a changed job
    /// is refused, and `--fresh` starts over).
    #[serde(default)]
    pub incremental: bool,
    /// Generations kept (state and output) with `incremental`; older ones are pruned. Left out: 3.
    pub keep: Option<Spanned<u32>>,
    /// `on-demand` (the default), `batch` (Bedrock batch inference, `[batch]`), or `auto`: batch when the job has
    /// at least `batch.min-records` records and `deadline-hours` allows a batch job's time.
    #[serde(default)]
    pub mode: Mode,
    /// Hours within which the results are wanted; `auto` chooses batch only when a batch job's time
    /// (`batch.timeout-hours`) fits.
    pub deadline_hours: Option<Spanned<f64>>,
}

/// Which Bedrock Runtime operation to call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// Converse: one request shape for every text model.
    #[default]
    Converse,
    /// InvokeModel: the model's native body, sent as is (Bedrock-batch records, or rendered by a body template).
    Invoke,
    /// InvokeModel to an embedding model whose shape batchrun knows (Titan Text Embeddings, Cohere Embed): the
    /// body is built from the text, and the reply holds the vector.
    Embed,
}

/// `[model]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelTable {
    /// Model id, inference profile id (`us.…`, `global.…`) or ARN.
    pub id: Spanned<String>,
    /// AWS region; left out, the standard AWS configuration decides (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// `converse` (default), `invoke` or `embed`.
    #[serde(default)]
    pub api: Api,
    /// `api = "embed"`: the vector length, where the model lets it be chosen (Titan V2: 256, 512, 1024;
    /// Cohere Embed v4: 256, 512, 1024, 1536).
    pub dimensions: Option<Spanned<u32>>,
    /// `api = "embed"`, Titan V2: unit-length vectors (Bedrock's default: true).
    pub normalize: Option<Spanned<bool>>,
    /// `api = "embed"`, Cohere: what the texts are for: `search_document` (the default, for a corpus),
    /// `search_query`, `classification` or `clustering`.
    pub input_type: Option<Spanned<String>>,
    /// Most output tokens per request. Bedrock reserves `input + max-tokens` from the TPM quota while a request
    /// runs, so a value far above real outputs costs throughput.
    pub max_tokens: Option<Spanned<u32>>,
    /// Sampling temperature, 0 to 1.
    pub temperature: Option<Spanned<f64>>,
    /// Nucleus sampling, 0 to 1.
    pub top_p: Option<Spanned<f64>>,
    /// System prompt sent with every Converse request.
    pub system: Option<String>,
    /// Quota tokens charged per output token [default: the model table's value for the model, else 1].
    pub output_burndown: Option<Spanned<u32>>,
    /// Bedrock's service tier for every call: `flex` (a discount, for calls that may wait longer), `priority` (a
    /// premium, for faster replies) or `default`; left out, none is named and Bedrock serves the default. Each
    /// `[[target]]` may name its own.
    pub service_tier: Option<ServiceTier>,
    /// When a model does not offer `service-tier` (Bedrock answers ValidationException): `use-default` (the
    /// default, with a warning: the target's calls go on in the default tier) or `stop` the run, resumably.
    #[serde(default)]
    pub unsupported_tier: UnsupportedTier,
    /// Prompt caching: a cache point after `system`, so that the system prompt every record shares is read from
    /// Bedrock's cache instead of processed again. A prompt template marks its own shared prefix with
    /// `{{ cache_point }}`.
    #[serde(default)]
    pub cache_system: bool,
    /// How long Bedrock keeps a cached prefix: `5m` (Bedrock's default) or `1h`.
    pub cache_ttl: Option<CacheTtl>,
}

/// `model.cache-ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum CacheTtl {
    /// Five minutes.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// An hour.
    #[serde(rename = "1h")]
    OneHour,
}

/// A Bedrock service tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceTier {
    /// Standard inference.
    Default,
    /// Discounted; served after other tiers when demand is high.
    Flex,
    /// At a premium; served before other tiers.
    Priority,
}

impl ServiceTier {
    /// The name Bedrock uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Default => "default",
            ServiceTier::Flex => "flex",
            ServiceTier::Priority => "priority",
        }
    }
}

/// `model.unsupported-tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnsupportedTier {
    /// Go on in the default tier, with a warning.
    #[default]
    UseDefault,
    /// Stop the run, resumably.
    Stop,
}

/// How input records are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// One JSON object per line: `{"recordId", "modelInput"}` (Bedrock batch), `{"id", "prompt"}` or
    /// `{"id", "messages"}`.
    Jsonl,
    /// A header row, an id column, and text columns rendered through `template`.
    Csv,
    /// One record per file of a folder (or glob); the id is the file's relative path.
    Documents,
}

/// `[input]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InputTable {
    /// A file, a folder or a glob, relative to the job file's folder.
    pub path: Spanned<String>,
    /// `jsonl`, `csv` or `documents`.
    pub format: InputFormat,
    /// Prompt template (minijinja): fields of a JSONL line, columns of a CSV row, or `text`, `file_name` and
    /// `path` of a document.
    pub template: Option<Spanned<String>>,
    /// With `api = "invoke"`: a template that renders the whole JSON body from the same fields, for example
    /// `{"inputText": {{ text | tojson }}}` for Titan embeddings.
    pub body_template: Option<Spanned<String>>,
    /// CSV: the column that holds each record's id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Folders: read symbolic links that lead outside the input folder (left out: such links are skipped with a
    /// warning, so a link to, say, a credentials file is never sent as a document).
    #[serde(default)]
    pub follow_links_outside: bool,
}

fn default_id_column() -> String {
    "id".to_string()
}

/// `[budget]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BudgetTable {
    /// Requests per minute; left out, requests are not limited.
    pub rpm: Option<Spanned<u64>>,
    /// Tokens per minute (input and output together, as Bedrock counts them); left out, tokens are not limited.
    pub tpm: Option<Spanned<u64>>,
    /// Most requests in flight at once.
    pub max_concurrency: Option<Spanned<u32>>,
    /// How often, in seconds, a run whose quotas came from Service Quotas reads them again (an increase
    /// approved mid-run takes effect); 0 never.
    pub quota_refresh_secs: Option<Spanned<f64>>,
    /// When Bedrock says the model's tokens per day are used up: `stop` the run, resumably, with exit 69
    /// (the default), or `wait` and try again every `daily-retry-secs`.
    pub on_daily_quota: Option<OnDailyQuota>,
    /// `on-daily-quota = "wait"`: seconds between tries while the daily quota is used up [default: 600].
    pub daily_retry_secs: Option<Spanned<f64>>,
}

/// `budget.on-daily-quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDailyQuota {
    /// Stop the run, resumably, with exit 69.
    #[default]
    Stop,
    /// Stop sending, try one call every `daily-retry-secs`, and go on when one is answered.
    Wait,
}

/// `[retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryTable {
    /// First backoff ceiling, in milliseconds; each retry doubles it up to `max-delay-ms`, and the wait is drawn
    /// uniformly below the ceiling (full jitter).
    pub base_delay_ms: Option<u64>,
    /// Largest backoff ceiling, in milliseconds.
    pub max_delay_ms: Option<u64>,
    /// Attempts before a record that keeps failing with transient errors (5xx, timeouts) is marked failed.
    /// Throttles do not count: a throttled record is retried until it succeeds.
    pub max_attempts: Option<Spanned<u32>>,
}

/// How results are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Bedrock-batch shaped lines: `{"recordId", "modelInput", "modelOutput" | "error"}`.
    #[default]
    Jsonl,
    /// One row per record: id, status, output text, error, tokens.
    Csv,
}

/// `[output]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputTable {
    /// The folder that receives `part-00001.jsonl`, … and `manifest.json`, relative to the job file's folder, or
    /// an S3 prefix `s3://bucket/prefix/`.
    pub path: Spanned<String>,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    pub format: OutputFormat,
    /// Records per part file.
    pub records_per_part: Option<Spanned<u64>>,
}

/// `[endpoint]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EndpointTable {
    /// Left out: real Bedrock, found by the standard AWS configuration. `"emulator"`: batchrun's own emulator,
    /// started in-process (no AWS account needed). A URL: that endpoint (a separately run emulator, a proxy).
    pub url: Option<Spanned<String>>,
    /// With `url = "emulator"`: the emulator profile (TOML), relative to the job file's folder.
    pub emulator_profile: Option<Spanned<String>>,
    /// Seconds one call may take before it is abandoned and retried.
    pub timeout_secs: Option<Spanned<f64>>,
    /// Allow an `http://` URL on a host other than this machine's loopback: requests, signed with real
    /// credentials, and every prompt and reply then cross the network unencrypted.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// `[s3]`. Credentials and the endpoint come from the standard AWS configuration (`AWS_PROFILE`,
/// `AWS_ENDPOINT_URL_S3`, …).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Table {
    /// The buckets' region; left out, the standard AWS configuration, then `model.region`.
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket/key`; left out, on exactly when a custom S3 endpoint is configured.
    pub force_path_style: Option<bool>,
}
