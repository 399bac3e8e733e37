//! What the emulator simulates: per-model quotas, token limits, latency and faults.
//!
//! A configuration comes either from command-line flags (one profile that serves every model id) or from a TOML
//! profile file with a table per model id. Both end up as an [`EmulatorConfig`]; nothing else in the emulator
//! reads flags or files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// The model key that serves any model id not listed by name.
pub const ANY_MODEL: &str = "*";

/// Everything the emulator needs to know to serve requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmulatorConfig {
    /// Seed for fault draws and latency jitter; the same seed and the same request order give the same faults.
    #[serde(default)]
    pub seed: u64,
    /// The models served, keyed by model id (as the client sends it, after percent-decoding). The key `"*"`
    /// serves every id that has no table of its own; without it, unknown ids get `ResourceNotFoundException`.
    pub models: BTreeMap<String, ModelProfile>,
    /// How the Service Quotas API the emulator also serves behaves.
    #[serde(default)]
    pub service_quotas: ServiceQuotasProfile,
    /// How Bedrock batch inference (the control plane's model-invocation jobs) behaves.
    #[serde(default)]
    pub batch: BatchProfile,
}

/// `[batch]`: Bedrock batch inference, as the emulator serves it. Staged records are read from, and results
/// written to, the S3 endpoint of the standard AWS configuration (`AWS_ENDPOINT_URL_S3`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct BatchProfile {
    /// Records a batch job processes each second.
    pub records_per_second: f64,
    /// Seconds a new batch job spends Submitted and Validating before it starts.
    pub start_delay_s: f64,
    /// Share of records, 0 to 1, answered with an `error` instead of a `modelOutput` (drawn per record id).
    pub failure_share: f64,
    /// Share of records, 0 to 1, left out of the output altogether (drawn per record id).
    pub missing_share: f64,
    /// The fewest records a batch job takes; fewer fail validation.
    pub min_records: u64,
    /// The most records a batch job takes; more fail validation.
    pub max_records: u64,
    /// Batch jobs of one model not yet ended, at most; a create beyond answers ServiceQuotaExceededException.
    pub max_jobs_in_flight: u64,
    /// The S3 endpoint batch jobs read and write (`http://127.0.0.1:PORT`); left out, the standard AWS
    /// configuration's (`AWS_ENDPOINT_URL_S3`).
    pub s3_endpoint: Option<String>,
    /// With `s3-endpoint`: the access key to sign with (left out, the standard AWS configuration's credentials).
    pub s3_access_key_id: Option<String>,
    /// With `s3-access-key-id`: its secret.
    pub s3_secret_access_key: Option<String>,
}

impl Default for BatchProfile {
    fn default() -> Self {
        BatchProfile {
            records_per_second: 500.0,
            start_delay_s: 0.2,
            failure_share: 0.0,
            missing_share: 0.0,
            min_records: 100,
            max_records: 50_000,
            max_jobs_in_flight: 10,
            s3_endpoint: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
        }
    }
}

/// `[service-quotas]`: the account's Service Quotas, as the emulator serves them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ServiceQuotasProfile {
    /// Every Service Quotas call answers AccessDeniedException, as for a role without `servicequotas:*`.
    pub access_denied: bool,
    /// Every Service Quotas call answers 500 ServiceException, as during an outage.
    pub unavailable: bool,
    /// An increase request is approved this many seconds after it was made, raising the live quota; left
    /// out, requests stay pending.
    pub approve_after_s: Option<f64>,
}

/// How one model behaves.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ModelProfile {
    /// Requests per minute; left out means no request quota (what Bedrock does for most text models now).
    pub rpm: Option<u64>,
    /// Tokens per minute, input and output together, charged as Bedrock charges them (reserve, then settle).
    pub tpm: Option<u64>,
    /// Tokens per day, charged like `tpm` over a 24 hour window.
    pub tpd: Option<u64>,
    /// How many seconds the `tpd` window lasts [default: 86,400]: shorter in tests, so that a used-up daily
    /// quota refills while a run waits for it.
    pub day_secs: Option<f64>,
    /// How full the quota buckets are at start, 0 to 1: below 1 simulates a quota already in use by other
    /// clients when the run begins.
    pub initial_fill: f64,
    /// Quota tokens charged per output token (5 for the newer Claude Sonnet / Opus models, 1 elsewhere).
    pub burndown: u32,
    /// Largest input, in tokens, the model accepts; above it the request fails validation.
    pub context_window: u64,
    /// Largest `maxTokens` accepted; also the reservation when a request does not set `maxTokens`.
    pub max_output_tokens: u64,
    /// Length of the generated reply before `maxTokens` caps it, drawn per prompt.
    pub output_tokens: OutputLength,
    /// How long a reply takes.
    pub latency: LatencyModel,
    /// Requests served at once for this model; beyond it the emulator answers 503 ServiceUnavailable.
    pub max_concurrency: Option<u32>,
    /// Every call answers 403 AccessDeniedException, as for a model the account has not been granted.
    pub access_denied: bool,
    /// Vector length of embeddings when the request does not ask for one.
    pub embedding_dimensions: usize,
    /// Injected faults, drawn per request.
    pub faults: FaultRates,
    /// Another client sharing this model's quota: it takes a share of every bucket's refill.
    pub neighbour: Option<Neighbour>,
    /// Changes of the `rpm` and `tpm` quotas while the emulator runs, in the order they happen (AWS lowering a
    /// quota, or an increase landing, mid-run).
    pub quota_changes: Vec<QuotaChange>,
    /// The model's name in its Service Quotas quota names ("Anthropic Claude 3 Haiku"); left out, one is made
    /// from the model id.
    pub display_name: Option<String>,
    /// The service tiers the model offers besides `default` (`flex`, `priority`): a request for another answers
    /// ValidationException, as Bedrock does for a model without it. One quota serves every tier (AWS: "Your
    /// on-demand quota for a model is shared across all service tiers").
    pub service_tiers: Vec<String>,
    /// Latency of a Flex reply against a default one: Flex requests wait behind others (AWS: "requests may see
    /// increased latency").
    pub flex_latency: f64,
    /// Latency of a Priority reply against a default one (AWS: "up to 25% better output tokens per second").
    pub priority_latency: f64,
    /// Whether the model caches prompt prefixes at Converse `cachePoint`s (Bedrock lists the Claude and Nova models
    /// that do). Left out, a cache point is accepted and nothing is cached (what Bedrock does with one on a model
    /// without caching is not documented).
    pub prompt_caching: bool,
    /// The fewest tokens a prefix must have to be cached (1,024 for Claude 3.7 Sonnet, 2,048 for Claude 3.5
    /// Haiku, 1,000 for Nova, in AWS's table); a shorter one is neither written nor read.
    pub cache_min_tokens: u64,
}

impl ModelProfile {
    /// Whether the model serves `tier` (`default` always).
    pub fn offers(&self, tier: &str) -> bool {
        tier == "default" || self.service_tiers.iter().any(|t| t == tier)
    }

    /// How much longer than a default reply a reply in `tier` takes.
    pub fn tier_latency(&self, tier: Option<&str>) -> f64 {
        match tier {
            Some("flex") => self.flex_latency,
            Some("priority") => self.priority_latency,
            _ => 1.0,
        }
    }
}

/// A simulated second client on the same quota, taking `high` of the refill for the first half of every
/// period and `low` for the second half.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Neighbour {
    /// Share of the quota taken in the quiet half of each period, 0 to 1.
    pub low: f64,
    /// Share of the quota taken in the busy half of each period, 0 to 1.
    pub high: f64,
    /// Length of one busy + quiet cycle, in seconds.
    pub period_s: f64,
}

impl Neighbour {
    /// The share it takes `elapsed` seconds after the quota was created.
    pub fn share(&self, elapsed: f64) -> f64 {
        if elapsed.rem_euclid(self.period_s) < self.period_s / 2.0 {
            self.high
        } else {
            self.low
        }
    }

    /// The share it takes on average.
    pub fn mean(&self) -> f64 {
        (self.low + self.high) / 2.0
    }
}

/// From `at-s` seconds after the emulator started, the model's quotas are the ones given here (a quota left out
/// keeps its value).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuotaChange {
    /// Seconds after the emulator started.
    pub at_s: f64,
    /// The new requests-per-minute quota.
    pub rpm: Option<u64>,
    /// The new tokens-per-minute quota.
    pub tpm: Option<u64>,
}

impl ModelProfile {
    /// The profile as it stands `elapsed` seconds after the emulator started: its quota changes applied.
    pub fn at(mut self, elapsed: f64) -> ModelProfile {
        for change in &self.quota_changes {
            if change.at_s <= elapsed {
                self.rpm = change.rpm.or(self.rpm);
                self.tpm = change.tpm.or(self.tpm);
            }
        }
        self
    }
}

impl Default for ModelProfile {
    fn default() -> Self {
        ModelProfile {
            rpm: None,
            tpm: None,
            tpd: None,
            day_secs: None,
            initial_fill: 1.0,
            burndown: 1,
            // Claude-sized defaults: a 200k context and 4096 output tokens unless the profile says otherwise.
            context_window: 200_000,
            max_output_tokens: 4096,
            output_tokens: OutputLength { min: 20, max: 200 },
            latency: LatencyModel::default(),
            max_concurrency: None,
            access_denied: false,
            embedding_dimensions: 1024,
            faults: FaultRates::default(),
            neighbour: None,
            quota_changes: Vec::new(),
            display_name: None,
            service_tiers: Vec::new(),
            flex_latency: 2.0,
            priority_latency: 0.8,
            prompt_caching: false,
            cache_min_tokens: 1024,
        }
    }
}

/// Reply length before capping by `maxTokens`: uniform in `min..=max`, chosen from the prompt's hash so that the
/// same prompt always gets the same reply.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputLength {
    /// Fewest output tokens.
    pub min: u64,
    /// Most output tokens.
    pub max: u64,
}

impl FromStr for OutputLength {
    type Err = String;

    /// Parses `MIN..MAX` (inclusive) or a single number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected MIN..MAX or N (whole numbers), got `{s}`"))
        };
        let (min, max) = match s.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b.trim_start_matches('='))?),
            None => {
                let n = parse(s)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("MIN ({min}) is above MAX ({max}) in `{s}`"));
        }
        Ok(OutputLength { min, max })
    }
}

/// Time to answer: `first-token-ms + per-token-ms × output tokens`, scaled by a uniform factor in
/// `1 ± jitter`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LatencyModel {
    /// Fixed part of every reply's latency, in milliseconds.
    pub first_token_ms: f64,
    /// Milliseconds per generated token.
    pub per_token_ms: f64,
    /// Relative jitter in `0..1`: 0.2 spreads latencies uniformly over ±20 %.
    pub jitter: f64,
}

/// Probability per request of each injected fault. They are exclusive: at most one fault per request, and the
/// rates must add up to at most 1.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct FaultRates {
    /// 503 ServiceUnavailableException ("Too many connections…").
    pub service_unavailable: f64,
    /// 500 InternalServerException.
    pub internal: f64,
    /// 408 ModelTimeoutException.
    pub model_timeout: f64,
    /// 424 ModelErrorException.
    pub model_error: f64,
    /// 429 ModelNotReadyException.
    pub model_not_ready: f64,
    /// The connection is closed without a reply.
    pub connection_reset: f64,
    /// No reply for `hang-ms`, then the connection is closed: a client without a timeout waits that long.
    pub hang: f64,
    /// A 200 reply whose JSON body is cut short.
    pub malformed: f64,
    /// How long a hanging request hangs, in milliseconds.
    pub hang_ms: u64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            service_unavailable: 0.0,
            internal: 0.0,
            model_timeout: 0.0,
            model_error: 0.0,
            model_not_ready: 0.0,
            connection_reset: 0.0,
            hang: 0.0,
            malformed: 0.0,
            // Long enough to outlast any sensible client timeout, short enough that a test never waits long
            // for the emulator to let go of a connection.
            hang_ms: 30_000,
        }
    }
}

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// 503 ServiceUnavailableException.
    ServiceUnavailable,
    /// 500 InternalServerException.
    Internal,
    /// 408 ModelTimeoutException.
    ModelTimeout,
    /// 424 ModelErrorException.
    ModelError,
    /// 429 ModelNotReadyException.
    ModelNotReady,
    /// Connection closed without a reply.
    ConnectionReset,
    /// No reply until `hang-ms`, then the connection is closed.
    Hang,
    /// A 200 reply with a truncated JSON body.
    Malformed,
}

impl Fault {
    /// Every fault, in the order rates are laid out when one is drawn.
    pub const ALL: [Fault; 8] = [
        Fault::ServiceUnavailable,
        Fault::Internal,
        Fault::ModelTimeout,
        Fault::ModelError,
        Fault::ModelNotReady,
        Fault::ConnectionReset,
        Fault::Hang,
        Fault::Malformed,
    ];

    /// The kebab-case name used in profiles, flags and stats.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ServiceUnavailable => "service-unavailable",
            Fault::Internal => "internal",
            Fault::ModelTimeout => "model-timeout",
            Fault::ModelError => "model-error",
            Fault::ModelNotReady => "model-not-ready",
            Fault::ConnectionReset => "connection-reset",
            Fault::Hang => "hang",
            Fault::Malformed => "malformed",
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault `{s}`; expected one of: {}", names.join(", "))
            })
    }
}

impl FaultRates {
    /// The rate of one fault.
    pub fn rate(&self, fault: Fault) -> f64 {
        match fault {
            Fault::ServiceUnavailable => self.service_unavailable,
            Fault::Internal => self.internal,
            Fault::ModelTimeout => self.model_timeout,
            Fault::ModelError => self.model_error,
            Fault::ModelNotReady => self.model_not_ready,
            Fault::ConnectionReset => self.connection_reset,
            Fault::Hang => self.hang,
            Fault::Malformed => self.malformed,
        }
    }

    /// Sets the rate of one fault.
    pub fn set_rate(&mut self, fault: Fault, rate: f64) {
        let slot = match fault {
            Fault::ServiceUnavailable => &mut self.service_unavailable,
            Fault::Internal => &mut self.internal,
            Fault::ModelTimeout => &mut self.model_timeout,
            Fault::ModelError => &mut self.model_error,
            Fault::ModelNotReady => &mut self.model_not_ready,
            Fault::ConnectionReset => &mut self.connection_reset,
            Fault::Hang => &mut self.hang,
            Fault::Malformed => &mut self.malformed,
        };
        *slot = rate;
    }

    /// Picks the fault for a request from a uniform draw in `0..1`, or none.
    pub fn pick(&self, draw: f64) -> Option<Fault> {
        let mut edge = 0.0;
        for fault in Fault::ALL {
            edge += self.rate(fault);
            if draw < edge {
                return Some(fault);
            }
        }
        None
    }
}

/// A profile that could not be used. Messages name the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The profile file could not be read.
    #[error("failed to read emulator profile {}", path.display())]
    Read {
        /// The profile's path.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The profile is not valid TOML or does not have the expected shape.
    #[error("invalid emulator profile {}:\n{message}", path.display())]
    Parse {
        /// The profile's path.
        path: PathBuf,
        /// The TOML parser's message, with line, column and caret.
        message: String,
    },
    /// A value is out of range, or two values contradict each other.
    #[error("invalid emulator setting `{key}`: {message}")]
    Invalid {
        /// The setting, as a dotted TOML key or a flag.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl EmulatorConfig {
    /// One profile serving every model id, as the command-line flags describe it.
    pub fn any_model(profile: ModelProfile, seed: u64) -> Self {
        EmulatorConfig {
            seed,
            models: BTreeMap::from([(ANY_MODEL.to_string(), profile)]),
            service_quotas: ServiceQuotasProfile::default(),
            batch: BatchProfile::default(),
        }
    }

    /// Parses and checks a TOML profile.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: EmulatorConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and checks a TOML profile file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks ranges and cross-field rules that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.models.is_empty() {
            return Err(invalid(
                "models",
                "no models are defined; add a `[models.\"*\"]` table to serve every model id",
            ));
        }
        for (id, m) in &self.models {
            let key = |field: &str| format!("models.\"{id}\".{field}");
            check_quota_and_tokens(m, &key)?;
            check_latency_and_faults(m, &key)?;
            check_quota_changes(m, &key)?;
            check_tiers(m, &key)?;
        }
        check_batch(&self.batch)?;
        if let Some(after) = self.service_quotas.approve_after_s
            && !(after.is_finite() && after >= 0.0)
        {
            return Err(invalid(
                "service-quotas.approve-after-s",
                "must be 0 or more seconds; leave it out to keep requests pending",
            ));
        }
        Ok(())
    }

    /// The profile that serves `model_id`: its own table, else the `"*"` table, else none.
    pub fn profile_for(&self, model_id: &str) -> Option<&ModelProfile> {
        self.models
            .get(model_id)
            .or_else(|| self.models.get(ANY_MODEL))
    }
}

/// A profile's quota and token limits.
fn check_quota_and_tokens(
    m: &ModelProfile,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    for (field, value) in [("rpm", m.rpm), ("tpm", m.tpm), ("tpd", m.tpd)] {
        if value == Some(0) || value.is_some_and(|v| v > MAX_QUOTA) {
            return Err(invalid(
                &key(field),
                &format!("must be from 1 to {MAX_QUOTA}; leave it out for no quota"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&m.initial_fill) {
        return Err(invalid(&key("initial-fill"), "must be between 0 and 1"));
    }
    if m.day_secs.is_some_and(|d| !(1.0..=86_400.0).contains(&d)) {
        return Err(invalid(&key("day-secs"), "must be from 1 to 86400 seconds"));
    }
    let bad_neighbour = |n: &Neighbour| {
        !((0.0..1.0).contains(&n.low)
            && (0.0..1.0).contains(&n.high)
            && n.period_s > 0.0
            && n.period_s <= MAX_MS / 1000.0)
    };
    if m.neighbour.as_ref().is_some_and(bad_neighbour) {
        return Err(invalid(
            &key("neighbour"),
            "low and high must be in 0..1 and period-s above 0",
        ));
    }
    if m.burndown == 0 {
        return Err(invalid(&key("burndown"), "must be at least 1"));
    }
    if m.max_output_tokens == 0 || m.context_window == 0 {
        return Err(invalid(
            &key("max-output-tokens"),
            "token limits must be at least 1",
        ));
    }
    if m.output_tokens.min > m.output_tokens.max {
        return Err(invalid(
            &key("output-tokens"),
            &format!(
                "min ({}) is above max ({})",
                m.output_tokens.min, m.output_tokens.max
            ),
        ));
    }
    Ok(())
}

/// A profile's service tiers: names Bedrock has, and latency factors that are positive numbers.
fn check_tiers(m: &ModelProfile, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if let Some(t) = m
        .service_tiers
        .iter()
        .find(|t| !["flex", "priority", "reserved"].contains(&t.as_str()))
    {
        return Err(invalid(
            &key("service-tiers"),
            &format!(
                "{t:?} is not a service tier; list \"flex\", \"priority\" or \"reserved\" (\"default\" is always served)"
            ),
        ));
    }
    for (v, field) in [
        (m.flex_latency, "flex-latency"),
        (m.priority_latency, "priority-latency"),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 1000.0) {
            return Err(invalid(
                &key(field),
                "must be a factor above 0 and at most 1000",
            ));
        }
    }
    Ok(())
}

/// `[batch]`: a positive rate, shares from 0 to 1, and a minimum no larger than the maximum.
fn check_batch(b: &BatchProfile) -> Result<(), ConfigError> {
    if !(b.records_per_second.is_finite() && b.records_per_second > 0.0) {
        return Err(invalid(
            "batch.records-per-second",
            "must be a number above 0",
        ));
    }
    if !(b.start_delay_s.is_finite() && b.start_delay_s >= 0.0) {
        return Err(invalid("batch.start-delay-s", "must be 0 or more seconds"));
    }
    for (v, key) in [
        (b.failure_share, "batch.failure-share"),
        (b.missing_share, "batch.missing-share"),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(key, "must be a share from 0 to 1"));
        }
    }
    if b.s3_access_key_id.is_some() != b.s3_secret_access_key.is_some() {
        return Err(invalid(
            "batch.s3-access-key-id",
            "set it with batch.s3-secret-access-key, or leave both out",
        ));
    }
    if b.min_records > b.max_records || b.max_records == 0 {
        return Err(invalid(
            "batch.min-records",
            "must be at most batch.max-records, which must be at least 1",
        ));
    }
    Ok(())
}

/// A profile's quota changes: in order, each at a time from 0 and setting a quota from 1 to the largest.
fn check_quota_changes(m: &ModelProfile, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let mut last = 0.0;
    for (i, c) in m.quota_changes.iter().enumerate() {
        let field = format!("quota-changes[{i}]");
        if !(c.at_s.is_finite() && c.at_s >= last) {
            return Err(invalid(
                &key(&field),
                "at-s must be 0 or more seconds, and no earlier than the change before it",
            ));
        }
        let quotas = [c.rpm, c.tpm];
        if quotas.iter().all(Option::is_none)
            || quotas.iter().flatten().any(|&v| v == 0 || v > MAX_QUOTA)
        {
            return Err(invalid(
                &key(&field),
                &format!("set rpm or tpm (or both), each from 1 to {MAX_QUOTA}"),
            ));
        }
        last = c.at_s;
    }
    Ok(())
}

/// A profile's latency, concurrency, embeddings and fault rates.
fn check_latency_and_faults(
    m: &ModelProfile,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let l = &m.latency;
    let in_range = |ms: f64| (0.0..=MAX_MS).contains(&ms);
    if !(in_range(l.first_token_ms) && in_range(l.per_token_ms)) {
        return Err(invalid(
            &key("latency"),
            &format!("latencies must be from 0 to {MAX_MS} ms (an hour)"),
        ));
    }
    if m.faults.hang_ms as f64 > MAX_MS {
        return Err(invalid(
            &key("faults.hang-ms"),
            &format!("must be at most {MAX_MS} ms (an hour)"),
        ));
    }
    if !(0.0..1.0).contains(&l.jitter) {
        return Err(invalid(
            &key("latency.jitter"),
            "must be in 0..1 (0.2 means ±20 %)",
        ));
    }
    if m.max_concurrency == Some(0) {
        return Err(invalid(
            &key("max-concurrency"),
            "must be at least 1; leave it out for no cap",
        ));
    }
    if m.embedding_dimensions == 0 {
        return Err(invalid(&key("embedding-dimensions"), "must be at least 1"));
    }
    let mut total = 0.0;
    for fault in Fault::ALL {
        let rate = m.faults.rate(fault);
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(
                &key(&format!("faults.{}", fault.name())),
                &format!("a rate must be in 0..1, got {rate}"),
            ));
        }
        total += rate;
    }
    if total > 1.0 + 1e-9 {
        return Err(invalid(
            &key("faults"),
            &format!("the fault rates add up to {total}, above 1"),
        ));
    }
    Ok(())
}

// Bounds that keep the emulator's arithmetic on times and token counts from overflowing.
const MAX_MS: f64 = 3_600_000.0;
const MAX_QUOTA: u64 = 1_000_000_000_000;

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EmulatorConfig, ConfigError> {
        EmulatorConfig::from_toml(text, Path::new("profile.toml"))
    }

    #[test]
    fn parses_a_profile_with_defaults_filled_in() {
        let config = parse(
            r#"
            seed = 7
            [models."anthropic.claude-3-haiku-20240307-v1:0"]
            tpm = 200000
            burndown = 5
            latency = { first-token-ms = 300, per-token-ms = 10, jitter = 0.2 }
            faults = { service-unavailable = 0.02 }
            [models."*"]
            rpm = 50
            "#,
        )
        .unwrap();
        assert_eq!(config.seed, 7);
        let haiku = config
            .profile_for("anthropic.claude-3-haiku-20240307-v1:0")
            .unwrap();
        assert_eq!(haiku.tpm, Some(200_000));
        assert_eq!(haiku.burndown, 5);
        assert_eq!(haiku.rpm, None);
        assert_eq!(haiku.max_output_tokens, 4096);
        assert_eq!(haiku.faults.service_unavailable, 0.02);
        assert_eq!(haiku.faults.hang_ms, 30_000);
        assert_eq!(config.profile_for("other").unwrap().rpm, Some(50));
    }

    #[test]
    fn unknown_models_have_no_profile_without_a_wildcard() {
        let config = parse("[models.a]\n").unwrap();
        assert!(config.profile_for("a").is_some());
        assert!(config.profile_for("b").is_none());
    }

    #[test]
    fn unknown_key_names_the_line() {
        let err = parse("[models.a]\ntpn = 5\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("tpn"), "{err}");
    }

    #[test]
    fn fault_rates_above_one_are_refused_with_the_key() {
        let err = parse("[models.a.faults]\ninternal = 0.7\nhang = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("models.\"a\".faults"), "{err}");
        assert!(err.contains("above 1"), "{err}");
    }

    #[test]
    fn quota_changes_apply_from_their_time_on() {
        let config = parse(
            "[models.a]\nrpm = 600\ntpm = 1000\n\
             quota-changes = [{ at-s = 10, rpm = 300 }, { at-s = 20, rpm = 900, tpm = 2000 }]\n",
        )
        .unwrap();
        let a = config.profile_for("a").unwrap();
        let at = |s: f64| {
            let p = a.clone().at(s);
            (p.rpm, p.tpm)
        };
        assert_eq!(at(0.0), (Some(600), Some(1000)));
        assert_eq!(at(9.99), (Some(600), Some(1000)));
        assert_eq!(at(10.0), (Some(300), Some(1000)));
        assert_eq!(at(25.0), (Some(900), Some(2000)));
    }

    #[test]
    fn quota_changes_out_of_order_or_empty_are_refused_with_the_key() {
        for (changes, key) in [
            (
                "[{ at-s = 10, rpm = 3 }, { at-s = 5, rpm = 4 }]",
                "quota-changes[1]",
            ),
            ("[{ at-s = 10 }]", "quota-changes[0]"),
            ("[{ at-s = -1, tpm = 5 }]", "quota-changes[0]"),
            ("[{ at-s = 1, tpm = 0 }]", "quota-changes[0]"),
        ] {
            let err = parse(&format!("[models.a]\nquota-changes = {changes}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{changes}: {err}");
        }
    }

    #[test]
    fn inverted_output_range_is_refused() {
        let err = parse("[models.a]\noutput-tokens = { min = 9, max = 3 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("output-tokens"), "{err}");
    }

    #[test]
    fn output_length_parses_ranges_and_single_values() {
        assert_eq!(
            "10..20".parse::<OutputLength>().unwrap(),
            OutputLength { min: 10, max: 20 }
        );
        assert_eq!(
            "10..=20".parse::<OutputLength>().unwrap(),
            OutputLength { min: 10, max: 20 }
        );
        assert_eq!(
            "7".parse::<OutputLength>().unwrap(),
            OutputLength { min: 7, max: 7 }
        );
        assert!("20..10".parse::<OutputLength>().is_err());
        assert!("x".parse::<OutputLength>().is_err());
    }

    #[test]
    fn fault_pick_follows_the_rates() {
        let mut rates = FaultRates::default();
        rates.set_rate(Fault::Internal, 0.25);
        rates.set_rate(Fault::Hang, 0.25);
        assert_eq!(rates.pick(0.1), Some(Fault::Internal));
        assert_eq!(rates.pick(0.3), Some(Fault::Hang));
        assert_eq!(rates.pick(0.6), None);
        assert_eq!(FaultRates::default().pick(0.0), None);
    }
}
