//! From the job file as written to a [`Job`] that can run: defaults applied, paths resolved against the job
//! file's folder, ranges and cross-field rules checked. Every error points at the key (line and column, with a
//! caret) and says what to do.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::embed::{EmbedFamily, EmbedSettings, INPUT_TYPES};
use super::error::JobError;
use super::location::Location;
use super::settings::{
    BudgetSettings, BurndownFrom, ChunkSettings, Endpoint, InputSettings, Job, ModelSettings,
    OutputSettings, RetrySettings,
};
use super::spec::{
    Api, BudgetTable, ChunkTable, EndpointTable, InputFormat, InputTable, JobFile, JobTable,
    ModelTable, OutputTable, RetryTable,
};
use crate::catalogue::{Catalogue, MAX_BURNDOWN};
use crate::s3::{S3Settings, S3Uri};

// Defaults, with their reasons.
// 16 in flight is enough to fill a typical on-demand quota at Bedrock latencies without flooding a small one.
const DEFAULT_CONCURRENCY: u32 = 16;
const MAX_CONCURRENCY: u32 = 4096;
// Service Quotas is read again this often while a run's quotas come from it: a quota raised or lowered mid-run
// is in force within 5 s, for one GetServiceQuota call per quota per read (12 a minute each). At 15 s, a quota
// doubled a third into a 60 s run cost 0.1 of the run's goodput (issue 14, `quota-raised`: 0.892).
const DEFAULT_QUOTA_REFRESH_SECS: u64 = 5;
// While the daily quota is used up, one call every ten minutes: cheap, and soon enough for a quota that
// refills over a day.
const DEFAULT_DAILY_RETRY_SECS: u64 = 600;
// The AWS SDK's own backoff defaults: 1 s base would waste a small quota's recovery; 250 ms reacts sooner.
const DEFAULT_BASE_DELAY_MS: u64 = 250;
const DEFAULT_MAX_DELAY_MS: u64 = 20_000;
const DEFAULT_MAX_ATTEMPTS: u32 = 8;
const DEFAULT_RECORDS_PER_PART: u64 = 1000;
// Bounds on numbers, so that no value in a job file can overflow the arithmetic built on it.
/// The largest `maxTokens` Bedrock takes (a 32-bit integer).
pub const MAX_TOKENS: u32 = i32::MAX as u32;
pub(super) const MAX_RATE: u64 = 1_000_000_000_000;
const MAX_DELAY_MS: u64 = 3_600_000;
const MAX_RECORDS_PER_PART: u64 = 1_000_000_000;
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
// Generations an incremental job keeps: the current one and two before it to fall back on.
const DEFAULT_KEEP: u32 = 3;
const MAX_KEEP: u32 = 1000;
/// The fewest tokens `chunk.tokens` may say: a chunk holds at least a few words (and any one character).
pub const MIN_CHUNK_TOKENS: u64 = 16;
// At most what the largest context windows take.
const MAX_CHUNK_TOKENS: u64 = 1_000_000;
// Long replies from large models take minutes; a hung connection should not hold a record for longer.
const DEFAULT_TIMEOUT_SECS: f64 = 300.0;

pub(super) struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Checker<'_> {
    pub(super) fn at(&self, span: Range<usize>, message: impl AsRef<str>) -> JobError {
        JobError::Invalid {
            path: self.path.to_path_buf(),
            message: render_at(self.text, span, message.as_ref()),
        }
    }

    pub(super) fn plain(&self, message: impl Into<String>) -> JobError {
        JobError::Invalid {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Renders `message` under the line holding `span`, with a caret under the span, as the TOML parser does.
fn render_at(text: &str, span: Range<usize>, message: &str) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "at line {line_no}, column {column}\n{gutter} |\n{line_no} | {}\n{gutter} | {}{}\n{message}",
        &text[line_start..line_end],
        " ".repeat(column - 1),
        "^".repeat(width),
    )
}

fn within_unit<T: Into<f64> + Copy>(
    c: &Checker<'_>,
    v: &Option<Spanned<T>>,
    key: &str,
) -> Result<Option<T>, JobError> {
    match v {
        None => Ok(None),
        Some(s) => {
            let x: f64 = (*s.get_ref()).into();
            if (0.0..=1.0).contains(&x) {
                Ok(Some(*s.get_ref()))
            } else {
                Err(c.at(s.span(), format!("{key} must be between 0 and 1, got {x}")))
            }
        }
    }
}

/// Refuses a value above `max`, naming the key and why it has that bound.
pub(super) fn at_most<T: Copy + PartialOrd + std::fmt::Display>(
    c: &Checker<'_>,
    v: Option<&Spanned<T>>,
    max: T,
    key: &str,
    why: &str,
) -> Result<(), JobError> {
    use std::cmp::Ordering;
    // NaN compares as nothing, and is refused with the rest.
    match v {
        Some(s)
            if !matches!(
                s.get_ref().partial_cmp(&max),
                Some(Ordering::Less | Ordering::Equal)
            ) =>
        {
            Err(c.at(
                s.span(),
                format!("{key} must be at most {max}, got {}; {why}", s.get_ref()),
            ))
        }
        _ => Ok(()),
    }
}

pub(super) fn positive<T: Copy + PartialOrd + Default + std::fmt::Display>(
    c: &Checker<'_>,
    v: &Option<Spanned<T>>,
    key: &str,
    hint: &str,
) -> Result<Option<T>, JobError> {
    match v {
        Some(s) if *s.get_ref() <= T::default() => Err(c.at(
            s.span(),
            format!("{key} must be at least 1, got {}; {hint}", s.get_ref()),
        )),
        Some(s) => Ok(Some(*s.get_ref())),
        None => Ok(None),
    }
}

fn compile_template(c: &Checker<'_>, t: &Spanned<String>, key: &str) -> Result<String, JobError> {
    let env = minijinja::Environment::new();
    if let Err(e) = env.template_from_str(t.get_ref()) {
        return Err(c.at(t.span(), format!("{key} is not a valid template: {e}")));
    }
    Ok(t.get_ref().clone())
}

/// `dir/rel` with `.` and `a/..` folded away, without touching the file system (the path may not exist yet).
fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dir.join(rel).components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => match out.components().next_back() {
                Some(std::path::Component::Normal(_)) => {
                    out.pop();
                }
                // Nothing is above the root.
                Some(std::path::Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Whether an `http://` URL names this machine (localhost or a loopback address).
fn loopback(url: &str) -> bool {
    let rest = url.trim_start_matches("http://");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `[model]`, checked.
fn model_table(
    c: &Checker<'_>,
    m: &ModelTable,
    catalogue: &Catalogue,
) -> Result<ModelSettings, JobError> {
    if m.id.get_ref().trim().is_empty() {
        return Err(c.at(
            m.id.span(),
            "model.id must not be empty: give a model id, inference profile id or ARN",
        ));
    }
    let max_tokens = positive(c, &m.max_tokens, "model.max-tokens", "it caps every reply")?;
    at_most(
        c,
        m.max_tokens.as_ref(),
        MAX_TOKENS,
        "model.max-tokens",
        "Bedrock takes maxTokens as a 32-bit integer",
    )?;
    at_most(
        c,
        m.output_burndown.as_ref(),
        MAX_BURNDOWN,
        "model.output-burndown",
        "no model is charged more than a few quota tokens per output token",
    )?;
    if m.api == Api::Converse && max_tokens.is_none() {
        return Err(c.plain(
            "[model] needs `max-tokens`: Bedrock reserves input + max-tokens from the TPM quota for every request \
             (the model's maximum, often 4,096 to 64,000, when it is left out), so set it a little above the \
             longest reply you expect, e.g. `max-tokens = 512`",
        ));
    }
    if let Some(b) = &m.output_burndown
        && *b.get_ref() == 0
    {
        return Err(c.at(
            b.span(),
            "model.output-burndown must be at least 1 (5 for the Claude models AWS lists, 1 elsewhere); leave it \
             out to take the model table's value",
        ));
    }
    let id = m.id.get_ref().trim().to_string();
    let (facts, listed) = catalogue.facts(&id);
    let (output_burndown, burndown_from) = match (&m.output_burndown, facts.burndown) {
        (Some(b), _) => (*b.get_ref(), BurndownFrom::JobFile),
        (None, Some(b)) if listed => (b, BurndownFrom::Table),
        (None, b) => (b.unwrap_or(1), BurndownFrom::Default),
    };
    if m.cache_system && m.system.is_none() {
        return Err(c.plain(
            "model.cache-system = true puts a cache point after the system prompt, and model.system is not set; \
             set model.system, or mark the shared part of input.template with {{ cache_point }}",
        ));
    }
    let model = ModelSettings {
        id,
        region: m.region.clone(),
        api: m.api,
        max_tokens,
        temperature: within_unit(c, &m.temperature, "model.temperature")?,
        top_p: within_unit(c, &m.top_p, "model.top-p")?,
        system: m.system.clone(),
        output_burndown,
        burndown_from,
        facts,
        listed,
        embed: embed_settings(c, m)?,
        service_tier: m.service_tier,
        unsupported_tier: m.unsupported_tier,
        cache_system: m.cache_system,
        cache_ttl: m.cache_ttl,
    };
    Ok(model)
}

/// `api = "embed"`: a model whose shape batchrun knows, and the keys that family takes (refused elsewhere).
fn embed_settings(c: &Checker<'_>, m: &ModelTable) -> Result<Option<EmbedSettings>, JobError> {
    if m.api != Api::Embed {
        let stray = [
            m.dimensions
                .as_ref()
                .map(|d| (d.span(), "model.dimensions")),
            m.normalize.as_ref().map(|n| (n.span(), "model.normalize")),
            m.input_type
                .as_ref()
                .map(|t| (t.span(), "model.input-type")),
        ];
        if let Some((span, key)) = stray.into_iter().flatten().next() {
            return Err(c.at(span, format!("{key} is for `api = \"embed\"`")));
        }
        return Ok(None);
    }
    let Some(family) = EmbedFamily::of(m.id.get_ref()) else {
        return Err(c.at(
            m.id.span(),
            "api = \"embed\" knows Amazon Titan Text Embeddings (amazon.titan-embed-text-v2:0, -v1) and Cohere Embed \
             (cohere.embed-english-v3, cohere.embed-multilingual-v3, cohere.embed-v4:0); for another model use \
             api = \"invoke\" with input.body-template",
        ));
    };
    if let Some(t) = &m.max_tokens {
        return Err(c.at(
            t.span(),
            "embeddings produce no output tokens: remove model.max-tokens (the budget reserves the input alone)",
        ));
    }
    let dimensions = m.dimensions.as_ref().map(|d| (d.span(), *d.get_ref()));
    if let Some((span, d)) = dimensions.clone()
        && !family.dimensions().contains(&d)
    {
        let allowed = family.dimensions();
        let message = if allowed.is_empty() {
            format!(
                "{} has one vector length: remove model.dimensions",
                m.id.get_ref()
            )
        } else {
            let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
            format!(
                "model.dimensions must be one of {} for {}",
                list.join(", "),
                m.id.get_ref()
            )
        };
        return Err(c.at(span, message));
    }
    if let Some(n) = m.normalize.as_ref().filter(|_| !family.normalizes()) {
        return Err(c.at(n.span(), "model.normalize is for Titan Text Embeddings V2"));
    }
    let input_type = match &m.input_type {
        Some(t) if !family.cohere() => {
            return Err(c.at(t.span(), "model.input-type is for Cohere Embed models"));
        }
        Some(t) if !INPUT_TYPES.contains(&t.get_ref().as_str()) => {
            return Err(c.at(
                t.span(),
                format!("model.input-type must be one of {}", INPUT_TYPES.join(", ")),
            ));
        }
        Some(t) => Some(t.get_ref().clone()),
        None => family.cohere().then(|| INPUT_TYPES[0].to_string()),
    };
    Ok(Some(EmbedSettings {
        family,
        dimensions: dimensions.map(|(_, d)| d),
        normalize: m.normalize.as_ref().map(|n| *n.get_ref()),
        input_type,
    }))
}

/// `[input]`, checked; relative paths start at `dir`.
fn input_table(
    c: &Checker<'_>,
    i: &InputTable,
    model: &ModelSettings,
    dir: &Path,
) -> Result<InputSettings, JobError> {
    let template = i
        .template
        .as_ref()
        .map(|t| compile_template(c, t, "input.template"))
        .transpose()?;
    let body_template = i
        .body_template
        .as_ref()
        .map(|t| compile_template(c, t, "input.body-template"))
        .transpose()?;
    if let Some(bt) = &i.body_template
        && model.api != Api::Invoke
    {
        return Err(c.at(
            bt.span(),
            "input.body-template is for `api = \"invoke\"`; with converse or embed use input.template for the text",
        ));
    }
    if model.api == Api::Invoke && i.format != InputFormat::Jsonl && body_template.is_none() {
        return Err(c.at(
            i.path.span(),
            "with `api = \"invoke\"`, csv and documents inputs need input.body-template to render each request \
             body, e.g. body-template = '{\"inputText\": {{ text | tojson }}}'",
        ));
    }
    if i.format == InputFormat::Csv && template.is_none() && body_template.is_none() {
        return Err(c.at(
            i.path.span(),
            "csv input needs input.template to say which columns make the prompt, e.g. template = \"{{ question }}\"",
        ));
    }
    let written = i.path.get_ref().trim();
    if written.is_empty() {
        return Err(c.at(i.path.span(), "input.path must not be empty"));
    }
    let location = if written.starts_with("s3://") {
        let uri =
            S3Uri::parse(written).map_err(|m| c.at(i.path.span(), format!("input.path: {m}")))?;
        uri.selection()
            .map_err(|m| c.at(i.path.span(), format!("input.path: {m}")))?;
        Location::S3(uri)
    } else {
        let resolved = resolve(dir, written);
        if !has_glob(written) && !resolved.exists() {
            return Err(c.at(
                i.path.span(),
                format!(
                    "input.path: no such file or folder {} (relative paths start at the job file's folder {})",
                    resolved.display(),
                    dir.display()
                ),
            ));
        }
        Location::Local(resolved)
    };
    let input = InputSettings {
        path: written.to_string(),
        location,
        format: i.format,
        template,
        body_template,
        id_column: i.id_column.clone(),
        follow_links_outside: i.follow_links_outside,
        chunk: None,
    };
    Ok(input)
}

/// `job.incremental` and `job.keep`, checked: at least one generation kept.
fn incremental(c: &Checker<'_>, j: &JobTable) -> Result<Option<u32>, JobError> {
    match (&j.keep, j.incremental) {
        (Some(k), false) => Err(c.at(k.span(), "job.keep is for `incremental = true` jobs")),
        (Some(k), true) if !(1..=MAX_KEEP).contains(k.get_ref()) => Err(c.at(
            k.span(),
            format!("job.keep must be from 1 to {MAX_KEEP} generations"),
        )),
        (keep, true) => Ok(Some(keep.as_ref().map_or(DEFAULT_KEEP, |k| *k.get_ref()))),
        (None, false) => Ok(None),
    }
}

/// `[chunk]`, checked: documents only, a size that holds a few words, an overlap below half of it.
fn chunk_table(
    c: &Checker<'_>,
    chunk: Option<&ChunkTable>,
    input: &InputTable,
) -> Result<Option<ChunkSettings>, JobError> {
    let Some(t) = chunk else {
        return Ok(None);
    };
    if input.format != InputFormat::Documents {
        return Err(c.at(
            t.tokens.span(),
            "[chunk] splits documents: set input.format = \"documents\" (JSONL and CSV records are sent whole)",
        ));
    }
    let tokens = *t.tokens.get_ref();
    if !(MIN_CHUNK_TOKENS..=MAX_CHUNK_TOKENS).contains(&tokens) {
        return Err(c.at(
            t.tokens.span(),
            format!("chunk.tokens must be from {MIN_CHUNK_TOKENS} to {MAX_CHUNK_TOKENS}"),
        ));
    }
    let overlap = t.overlap.as_ref().map_or(0, |o| *o.get_ref());
    if overlap >= tokens / 2 {
        let span = t.overlap.as_ref().map_or(t.tokens.span(), |o| o.span());
        return Err(c.at(
            span,
            format!(
                "chunk.overlap must be less than half of chunk.tokens ({tokens}), so that each chunk brings new text"
            ),
        ));
    }
    Ok(Some(ChunkSettings { tokens, overlap }))
}

/// `[budget]`, checked against the model's output cap.
fn budget_table(
    c: &Checker<'_>,
    b: &BudgetTable,
    model: &ModelSettings,
) -> Result<BudgetSettings, JobError> {
    let rpm = positive(c, &b.rpm, "budget.rpm", "leave it out for no request limit")?;
    let tpm = positive(c, &b.tpm, "budget.tpm", "leave it out for no token limit")?;
    for (v, key) in [(&b.rpm, "budget.rpm"), (&b.tpm, "budget.tpm")] {
        at_most(c, v.as_ref(), MAX_RATE, key, "leave it out for no limit")?;
    }
    let max_concurrency = positive(
        c,
        &b.max_concurrency,
        "budget.max-concurrency",
        "it caps requests in flight",
    )?
    .unwrap_or(DEFAULT_CONCURRENCY);
    if max_concurrency > MAX_CONCURRENCY {
        let span = b
            .max_concurrency
            .as_ref()
            .map(|s| s.span())
            .unwrap_or_default();
        return Err(c.at(
            span,
            format!("budget.max-concurrency must be at most {MAX_CONCURRENCY}"),
        ));
    }
    if let (Some(tpm_value), Some(max)) = (tpm, model.max_tokens) {
        // The smallest possible request still reserves max-tokens plus at least one input token.
        if tpm_value <= u64::from(max) {
            let span = b.tpm.as_ref().expect("tpm is set").span();
            return Err(c.at(
                span,
                format!(
                    "budget.tpm = {tpm_value} cannot hold a single request: each request reserves its input \
                     tokens + model.max-tokens ({max}) while it runs. Raise budget.tpm to your real quota or \
                     lower model.max-tokens"
                ),
            ));
        }
    }
    let quota_refresh = seconds(
        c,
        &b.quota_refresh_secs,
        "budget.quota-refresh-secs",
        "0 (never)",
    )?
    .map_or(Some(Duration::from_secs(DEFAULT_QUOTA_REFRESH_SECS)), |d| {
        (!d.is_zero()).then_some(d)
    });
    let daily_retry = seconds(c, &b.daily_retry_secs, "budget.daily-retry-secs", "0.1")?
        .unwrap_or(Duration::from_secs(DEFAULT_DAILY_RETRY_SECS));
    if daily_retry < Duration::from_millis(100) {
        let span = b.daily_retry_secs.as_ref().expect("set").span();
        return Err(c.at(span, "budget.daily-retry-secs must be at least 0.1"));
    }
    let budget = BudgetSettings {
        rpm,
        tpm,
        max_concurrency,
        quota_refresh,
        on_daily_quota: b.on_daily_quota.unwrap_or_default(),
        daily_retry,
    };
    Ok(budget)
}

/// A number of seconds from 0 to a day, as a duration; `lowest` says the smallest value that means something.
fn seconds(
    c: &Checker<'_>,
    value: &Option<Spanned<f64>>,
    key: &str,
    lowest: &str,
) -> Result<Option<Duration>, JobError> {
    match value {
        Some(t) if !(*t.get_ref() >= 0.0 && *t.get_ref() <= MAX_TIMEOUT_SECS) => Err(c.at(
            t.span(),
            format!(
                "{key} must be from {lowest} to {MAX_TIMEOUT_SECS} (a day), got {}",
                t.get_ref()
            ),
        )),
        Some(t) => Ok(Some(Duration::from_secs_f64(*t.get_ref()))),
        None => Ok(None),
    }
}

/// `[retry]`, checked.
fn retry_table(c: &Checker<'_>, r: &RetryTable) -> Result<RetrySettings, JobError> {
    let base = r.base_delay_ms.unwrap_or(DEFAULT_BASE_DELAY_MS).max(1);
    let max = r.max_delay_ms.unwrap_or(DEFAULT_MAX_DELAY_MS);
    if max < base {
        return Err(c.plain(format!(
            "[retry] max-delay-ms ({max}) is below base-delay-ms ({base}); raise max-delay-ms"
        )));
    }
    if max > MAX_DELAY_MS {
        return Err(c.plain(format!(
            "[retry] max-delay-ms must be at most {MAX_DELAY_MS} (an hour), got {max}"
        )));
    }
    let retry = RetrySettings {
        base_delay: Duration::from_millis(base),
        max_delay: Duration::from_millis(max),
        max_attempts: positive(c, &r.max_attempts, "retry.max-attempts", "1 means no retry")?
            .unwrap_or(DEFAULT_MAX_ATTEMPTS),
    };
    Ok(retry)
}

/// `[output]`, checked, and kept apart from the input.
fn output_table(
    c: &Checker<'_>,
    o: &OutputTable,
    input: &InputSettings,
    dir: &Path,
    name: &str,
) -> Result<OutputSettings, JobError> {
    let out_written = o.path.get_ref().trim();
    if out_written.is_empty() {
        return Err(c.at(o.path.span(), "output.path must not be empty"));
    }
    let out_location = if out_written.starts_with("s3://") {
        let uri = S3Uri::parse(out_written)
            .map_err(|m| c.at(o.path.span(), format!("output.path: {m}")))?;
        if has_glob(&uri.key) {
            return Err(c.at(
                o.path.span(),
                "output.path is a prefix that receives the parts, not a pattern; write s3://bucket/prefix/",
            ));
        }
        Location::S3(uri)
    } else {
        Location::Local(resolve(dir, out_written))
    };
    if let Some(why) = super::overlap::overlap(&input.location, &out_location) {
        return Err(c.at(
            o.path.span(),
            format!(
                "output.path {why} (input.path = {:?}): parts written there would be read as input by \
                 the next run; write the output to a folder or prefix apart from the input, e.g. \"../out/{name}/\"",
                input.path
            ),
        ));
    }
    let output = OutputSettings {
        path: out_written.to_string(),
        location: out_location,
        format: o.format,
        records_per_part: positive(
            c,
            &o.records_per_part,
            "output.records-per-part",
            "each part holds at least one record",
        )?
        .unwrap_or(DEFAULT_RECORDS_PER_PART),
    };
    at_most(
        c,
        o.records_per_part.as_ref(),
        MAX_RECORDS_PER_PART,
        "output.records-per-part",
        "a part is one file or object",
    )?;
    Ok(output)
}

/// `[endpoint]`, checked: where to call, and how long one call may take.
fn endpoint_table(
    c: &Checker<'_>,
    e: &EndpointTable,
    dir: &Path,
) -> Result<(Endpoint, Duration), JobError> {
    let endpoint = endpoint_url(
        c,
        "endpoint",
        (e.url.as_ref(), e.emulator_profile.as_ref()),
        e.allow_insecure_http,
        dir,
    )?
    .unwrap_or(Endpoint::Aws);
    let timeout = match &e.timeout_secs {
        Some(t) if !(*t.get_ref() > 0.0 && *t.get_ref() <= MAX_TIMEOUT_SECS) => {
            return Err(c.at(
                t.span(),
                format!(
                    "endpoint.timeout-secs must be above 0 and at most {MAX_TIMEOUT_SECS} (a day), got {}",
                    t.get_ref()
                ),
            ));
        }
        Some(t) => Duration::from_secs_f64(*t.get_ref()),
        None => Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
    };
    Ok((endpoint, timeout))
}

/// A table's `url` and `emulator-profile` (of `[endpoint]` or a `[[target]]`, named by `table`), checked;
/// `None` when no URL is given.
pub(super) fn endpoint_url(
    c: &Checker<'_>,
    table: &str,
    (url, profile): (Option<&Spanned<String>>, Option<&Spanned<String>>),
    allow_insecure_http: bool,
    dir: &Path,
) -> Result<Option<Endpoint>, JobError> {
    let endpoint = match url {
        None => None,
        Some(u) if u.get_ref() == "emulator" => Some(Endpoint::Emulator {
            profile: profile.map(|p| resolve(dir, p.get_ref())),
        }),
        Some(u)
            if u.get_ref().starts_with("http://")
                && !allow_insecure_http
                && !loopback(u.get_ref()) =>
        {
            return Err(c.at(
                u.span(),
                format!(
                    "{table}.url is plain http:// to another host: every request (signed with your AWS \
                     credentials) and every prompt and reply would cross the network unencrypted; use https://, \
                     or set {table}.allow-insecure-http = true if the network is yours"
                ),
            ));
        }
        Some(u) if u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://") => {
            Some(Endpoint::Url(u.get_ref().trim_end_matches('/').to_string()))
        }
        Some(u) => {
            return Err(c.at(
                u.span(),
                format!(
                    "{table}.url must be \"emulator\" or an http:// or https:// URL; leave it out for real Bedrock"
                ),
            ));
        }
    };
    if let Some(p) = profile {
        if !matches!(endpoint, Some(Endpoint::Emulator { .. })) {
            return Err(c.at(
                p.span(),
                format!("{table}.emulator-profile needs {table}.url = \"emulator\""),
            ));
        }
        if !dir.join(p.get_ref()).is_file() {
            return Err(c.at(
                p.span(),
                format!(
                    "{table}.emulator-profile: no such file {}",
                    dir.join(p.get_ref()).display()
                ),
            ));
        }
    }
    Ok(endpoint)
}

impl Job {
    /// Reads and checks a job file, with the model table the user chose (`BATCHRUN_MODELS`, else built in).
    pub fn load(path: &Path) -> Result<Job, JobError> {
        Job::load_with(path, &Catalogue::chosen(None)?)
    }

    /// Reads and checks a job file, taking what it leaves out about the model from `catalogue`.
    pub fn load_with(path: &Path, catalogue: &Catalogue) -> Result<Job, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Job::parse_with(&text, path, catalogue)
    }

    /// Checks a job file's text with the built-in model table; `path` names it in errors and anchors relative
    /// paths.
    pub fn parse(text: &str, path: &Path) -> Result<Job, JobError> {
        Job::parse_with(text, path, &Catalogue::built_in())
    }

    /// Checks a job file's text, taking what it leaves out about the model from `catalogue`.
    pub fn parse_with(text: &str, path: &Path, catalogue: &Catalogue) -> Result<Job, JobError> {
        let file: JobFile = toml::from_str(text).map_err(|e| JobError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let c = Checker { text, path };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();

        let name = file.job.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(c.at(file.job.name.span(), "job.name must not be empty"));
        }

        let model = model_table(&c, &file.model, catalogue)?;
        let mut input = input_table(&c, &file.input, &model, &dir)?;
        input.chunk = chunk_table(&c, file.chunk.as_ref(), &file.input)?;
        let budget = budget_table(&c, &file.budget, &model)?;
        let retry = retry_table(&c, &file.retry)?;
        let output = output_table(&c, &file.output, &input, &dir, &name)?;
        let (endpoint, timeout) = endpoint_table(&c, &file.endpoint, &dir)?;
        let targets =
            super::targets::targets(&c, &file.target, &model, (&budget, &endpoint), &dir)?;
        let s3 = S3Settings {
            region: file.s3.region.clone(),
            force_path_style: file.s3.force_path_style,
        };

        let incremental = incremental(&c, &file.job)?;
        let (mode, deadline, batch) =
            super::batch::batch_table(&c, &file.job, file.batch.as_ref(), &model)?;
        Ok(Job {
            incremental,
            mode,
            deadline,
            batch,
            name,
            file: path.to_path_buf(),
            dir,
            model,
            input,
            budget,
            retry,
            output,
            endpoint,
            timeout,
            s3,
            targets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[job]
name = "t"
[model]
id = "m"
max-tokens = 100
[input]
path = "src"
format = "documents"
[budget]
tpm = 1000
[output]
path = "out"
"#;

    fn parse(text: &str) -> Result<Job, JobError> {
        Job::parse(text, Path::new("jobs/t.toml"))
    }

    #[test]
    fn a_minimal_job_gets_its_defaults() {
        let job = Job::parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(job.name, "t");
        assert_eq!(job.model.api, Api::Converse);
        assert_eq!(job.budget.max_concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(job.output.records_per_part, DEFAULT_RECORDS_PER_PART);
        assert_eq!(job.endpoint, Endpoint::Aws);
        assert_eq!(job.output.location, Location::Local(PathBuf::from("out")));
        assert_eq!(
            resolve(Path::new("jobs"), "../out/demo/"),
            Path::new("out/demo")
        );
        assert_eq!(resolve(Path::new("."), "data"), Path::new("data"));
        assert_eq!(resolve(Path::new("/a/b"), "../../.."), Path::new("/"));
        assert_eq!(job.default_state_path(), Path::new("./.batchrun/state.db"));
    }

    #[test]
    fn tpm_below_one_reservation_points_at_the_key() {
        let text = GOOD.replace("tpm = 1000", "tpm = 100");
        let err = Job::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at line 11, column 7"), "{err}");
        assert!(err.contains("11 | tpm = 100\n   |       ^^^"), "{err}");
        assert!(err.contains("lower model.max-tokens"), "{err}");
    }

    #[test]
    fn converse_needs_max_tokens() {
        let err = parse(&GOOD.replace("max-tokens = 100\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs `max-tokens`"), "{err}");
    }

    #[test]
    fn render_at_marks_the_span() {
        let text = "a = 1\nbb = 22\n";
        let rendered = render_at(text, 11..13, "bad");
        assert_eq!(
            rendered,
            "at line 2, column 6\n  |\n2 | bb = 22\n  |      ^^\nbad"
        );
    }

    #[test]
    fn loopback_urls_are_told_from_others() {
        for url in [
            "http://127.0.0.1:8480",
            "http://localhost",
            "http://[::1]:80/x",
            "http://127.9.9.9/",
        ] {
            assert!(loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8480",
            "http://bedrock.example",
            "http://127.0.0.1.evil.example/",
            "http://[fe80::1]/",
        ] {
            assert!(!loopback(url), "{url}");
        }
    }
}
