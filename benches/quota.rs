//! Quota control, side by side: each scenario runs against a fresh emulator for three clients, one after the
//! other, and the emulator's own counts say how much of the quota each client turned into results.
//!
//! ```text
//! cargo bench --bench quota -- [--seconds 60] [--warmup 20] [--scenario NAME]... [--client NAME]... [--json FILE]
//! ```
//!
//! With `BENCH_LOG=1`, each batchrun run prints what batchrun said and the emulator's series, a second a field:
//! `second:succeeded/throttled/most in flight`.
//!
//! Clients:
//! - `fixed-pool`: 16 workers calling Converse through the AWS SDK with its standard retry mode (3 attempts,
//!   full-jitter backoff); a call that still fails is a failed record. What most hand-written loops do.
//! - `sdk-adaptive`: the same pool with the SDK's adaptive retry mode (client-side rate limiting on throttles).
//! - `batchrun`: the release binary, `batchrun submit` on a job file, stopped with Ctrl-C at the deadline.
//!
//! Every quota starts empty (`initial-fill = 0`: the quota is already in steady use), so the limit is the
//! quota's refill rate from the first second: `min(RPM, TPM / charge per record)`, where the charge is what the
//! emulator settles (`input + output × burndown`), less a neighbour's share averaged over the run. Figures:
//! - `bound_ratio` (`bound`): the most any client could have reached in that window, by the quota's own rules
//!   (buckets empty at the first request, nothing succeeds sooner than the shortest latency: see `Bound`);
//! - `goodput_ratio`: records succeeded per minute over the limit, over the whole run (`steady_rpm` in the JSON
//!   gives the rate from `warmup` seconds to the end; a quota's bucket remembers a minute, so a client that
//!   underused it early can exceed the limit there);
//! - `first_call_s`: from the client's start (the process spawned, for batchrun) to its first call;
//! - `throttled_pct`: throttled calls over all calls, whole run;
//! - `failed_records`: records that ended failed;
//! - `p50_latency_s`, `p99_latency_s`: first send to reply, retries included, per succeeded record;
//! - `secs_to_90pct`: seconds until the trailing ten-second success rate first reaches 90 % of the limit.
//!
//! In the scenarios whose quota changes mid-run (`quota-cut`, `quota-raised`, `quota-raised-learned`: the
//! emulator's `quota-changes`, a third of the way in), the limit is averaged over the change, and from the
//! change on: `secs_to_90pct_of_new` (until the trailing five seconds ran at 90 % of the new limit) and
//! `throttled_after_change`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, InferenceConfiguration, Message,
};
use batchrun::checkpoint::Store;
use batchrun::emulator::config::Neighbour;
use batchrun::emulator::{self, EmulatorConfig, EmulatorHandle, OutputLength, text};
use serde_json::{Value, json};

mod common;

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const POOL: usize = 16;

struct Scenario {
    name: &'static str,
    /// Emulator profile for the model (without the table header).
    profile: String,
    /// Top-level emulator tables before the model's (e.g. `[service-quotas]`).
    account: &'static str,
    /// The model id called. For [`MODEL`] the job file states the scenario's burndown; for another it leaves it
    /// to batchrun's model table.
    model: &'static str,
    /// Job `[budget]` lines.
    budget: &'static str,
    max_tokens: u32,
    burndown: u32,
    output: OutputLength,
    rpm: Option<f64>,
    tpm: Option<f64>,
    /// The neighbour's share of the quota (as in the emulator profile): `high` for the first half of each period,
    /// `low` for the second.
    neighbour: Option<Neighbour>,
    prompt: fn(usize) -> String,
    /// Runner ceiling: no quota, a fixed number of records, measured in records per second.
    ceiling_records: Option<usize>,
    /// The quota changes once, mid-run.
    change: Option<Change>,
    /// An embeddings model that takes this many texts a call (InvokeModel with a Cohere body); `None`: Converse.
    embed_texts: Option<usize>,
}

/// At `at` of the run (0 to 1), the emulator's `rpm` and `tpm` quotas are multiplied by `factor`.
#[derive(Clone, Copy)]
struct Change {
    at: f64,
    factor: f64,
}

impl Change {
    /// Seconds after the start when the change lands, in a run of `seconds`.
    fn at_s(&self, seconds: f64) -> f64 {
        (self.at * seconds).round()
    }
}

fn short_prompt(i: usize) -> String {
    format!(
        "Classify support ticket {i}: the export button does nothing after the update. Label: bug, question or request."
    )
}

fn long_prompt(i: usize) -> String {
    let mut s = format!("Document {i}. ");
    for j in 0..180 {
        write!(
            s,
            "Section {j} of the quarterly report covers revenue, churn and hiring plans. "
        )
        .unwrap();
    }
    s
}

const NEIGHBOUR: Neighbour = Neighbour {
    low: 0.3,
    high: 0.5,
    period_s: 20.0,
};

/// The profile line of a neighbour.
fn neighbour_profile(n: &Neighbour) -> String {
    format!(
        "neighbour = {{ low = {}, high = {}, period-s = {} }}",
        n.low, n.high, n.period_s
    )
}

/// The share a neighbour takes on average over the first `seconds` of the quota, by the emulator's own rule.
fn mean_share(n: &Neighbour, seconds: f64) -> f64 {
    let steps = 10_000;
    let dt = seconds / steps as f64;
    (0..steps)
        .map(|i| n.share((i as f64 + 0.5) * dt))
        .sum::<f64>()
        / steps as f64
}

fn tpm_bound() -> Scenario {
    Scenario {
        name: "tpm-bound",
        profile: "tpm = 300000\ninitial-fill = 0.0\noutput-tokens = { min = 100, max = 200 }\n\
                  latency = { first-token-ms = 300, per-token-ms = 3, jitter = 0.2 }\n"
            .to_string(),
        account: "",
        model: MODEL,
        budget: "tpm = 300000",
        max_tokens: 300,
        burndown: 1,
        output: OutputLength { min: 100, max: 200 },
        rpm: None,
        tpm: Some(300_000.0),
        neighbour: None,
        prompt: long_prompt,
        ceiling_records: None,
        change: None,
        embed_texts: None,
    }
}

fn scenarios() -> Vec<Scenario> {
    let tpm_profile = tpm_bound().profile;
    let latency = "latency = { first-token-ms = 200, per-token-ms = 2, jitter = 0.2 }";
    let rpm_profile = format!(
        "rpm = 600\ninitial-fill = 0.0\noutput-tokens = {{ min = 20, max = 60 }}\n{latency}\n"
    );
    let base = |name, budget, profile: String, neighbour| Scenario {
        name,
        profile,
        account: "",
        model: MODEL,
        budget,
        max_tokens: 100,
        burndown: 1,
        output: OutputLength { min: 20, max: 60 },
        rpm: Some(600.0),
        tpm: None,
        neighbour,
        prompt: short_prompt,
        ceiling_records: None,
        change: None,
        embed_texts: None,
    };
    vec![
        base("rpm-bound", "rpm = 600", rpm_profile.clone(), None),
        tpm_bound(),
        Scenario {
            name: "max-tokens-trap",
            profile: format!(
                "tpm = 400000\nburndown = 5\ninitial-fill = 0.0\nmax-output-tokens = 8192\n\
                 output-tokens = {{ min = 180, max = 220 }}\n{latency}\n"
            ),
            account: "",
            model: MODEL,
            budget: "tpm = 400000",
            max_tokens: 4096,
            burndown: 5,
            output: OutputLength { min: 180, max: 220 },
            rpm: None,
            tpm: Some(400_000.0),
            neighbour: None,
            prompt: short_prompt,
            ceiling_records: None,
            change: None,
            embed_texts: None,
        },
        // The tpm-bound job with no [budget]: started at the account's quota read from Service Quotas, and
        // (no permission to read it) learned from throttles.
        Scenario {
            name: "tpm-from-account",
            profile: tpm_profile.clone(),
            account: "",
            model: MODEL,
            budget: "",
            ..tpm_bound()
        },
        Scenario {
            name: "tpm-learned",
            profile: tpm_profile,
            account: "[service-quotas]\naccess-denied = true\n",
            model: MODEL,
            budget: "",
            ..tpm_bound()
        },
        // A model whose output is charged 5× (Claude Sonnet 4.5), no [budget] and no burndown in the job (the
        // account's quota and batchrun's model table say them), and a neighbour taking 30–50 % of the quota.
        Scenario {
            name: "burndown-5-neighbour",
            profile: format!(
                "tpm = 400000\nburndown = 5\ninitial-fill = 0.0\noutput-tokens = {{ min = 180, max = 220 }}\n\
                 {latency}\n{}\n",
                neighbour_profile(&NEIGHBOUR)
            ),
            account: "",
            model: "anthropic.claude-sonnet-4-5-20250929-v1:0",
            budget: "",
            max_tokens: 300,
            burndown: 5,
            output: OutputLength { min: 180, max: 220 },
            rpm: None,
            tpm: Some(400_000.0),
            neighbour: Some(NEIGHBOUR),
            prompt: short_prompt,
            ceiling_records: None,
            change: None,
            embed_texts: None,
        },
        base(
            "noisy-neighbour",
            "rpm = 600",
            format!("{rpm_profile}{}\n", neighbour_profile(&NEIGHBOUR)),
            Some(NEIGHBOUR),
        ),
        base("budget-2x-high", "rpm = 1200", rpm_profile.clone(), None),
        base("no-budget", "", rpm_profile.clone(), None),
        // The quota halves a third of the way in, under a job that states the old one.
        Scenario {
            change: Some(Change {
                at: 1.0 / 3.0,
                factor: 0.5,
            }),
            ..base("quota-cut", "rpm = 600", rpm_profile.clone(), None)
        },
        // The quota doubles a third of the way in (an increase landing) under a job with no [budget]: read
        // again from Service Quotas, and (no permission to read it) found by probing.
        Scenario {
            rpm: Some(300.0),
            change: Some(Change {
                at: 1.0 / 3.0,
                factor: 2.0,
            }),
            ..base(
                "quota-raised",
                "",
                rpm_profile.replace("rpm = 600", "rpm = 300"),
                None,
            )
        },
        Scenario {
            rpm: Some(300.0),
            account: "[service-quotas]\naccess-denied = true\n",
            change: Some(Change {
                at: 1.0 / 3.0,
                factor: 2.0,
            }),
            ..base(
                "quota-raised-learned",
                "",
                rpm_profile.replace("rpm = 600", "rpm = 300"),
                None,
            )
        },
        // Cohere Embed v3 under a requests-per-minute quota: a call may carry up to 96 texts, so the quota allows
        // 96 records a request. The pools send one text a call, as most hand-written loops do.
        Scenario {
            name: "embeddings",
            profile: "rpm = 120\ninitial-fill = 0.0\n\
                      latency = { first-token-ms = 80, per-token-ms = 0, jitter = 0.2 }\n"
                .into(),
            account: "",
            model: "cohere.embed-english-v3",
            budget: "rpm = 120",
            max_tokens: 0,
            burndown: 1,
            output: OutputLength { min: 0, max: 0 },
            rpm: Some(120.0),
            tpm: None,
            neighbour: None,
            prompt: short_prompt,
            ceiling_records: None,
            change: None,
            embed_texts: Some(96),
        },
        Scenario {
            name: "runner-ceiling",
            profile: "output-tokens = { min = 5, max = 10 }\n".into(),
            account: "",
            model: MODEL,
            budget: "max-concurrency = 64",
            max_tokens: 20,
            burndown: 1,
            output: OutputLength { min: 5, max: 10 },
            rpm: None,
            tpm: None,
            neighbour: None,
            prompt: short_prompt,
            ceiling_records: Some(50_000),
            change: None,
            embed_texts: None,
        },
    ]
}

impl Scenario {
    /// What the emulator charges for record `i`: input by its counting rule, output as it will generate.
    fn charge(&self, i: usize) -> f64 {
        let prompt = (self.prompt)(i);
        let input = text::count_tokens(&prompt) + 3;
        let output = text::reply(
            &format!("{prompt}\n"),
            self.output,
            u64::from(self.max_tokens),
        )
        .output_tokens;
        (input + output * u64::from(self.burndown)) as f64
    }

    /// Records per minute the quota allows before any change, over a run of `seconds` (a neighbour's share
    /// averaged over the run: a 30 s run against a 20 s period meets the busy half twice).
    fn first_limit_rpm(&self, records: usize, seconds: f64) -> Option<f64> {
        let mean =
            (0..records.min(2000)).map(|i| self.charge(i)).sum::<f64>() / records.min(2000) as f64;
        let by_tokens = self.tpm.map(|t| t / mean);
        let by_requests = self.rpm.map(|r| r * self.embed_texts.unwrap_or(1) as f64);
        let limit = match (by_requests, by_tokens) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        };
        let share = self.neighbour.map_or(0.0, |n| mean_share(&n, seconds));
        limit.map(|l| l * (1.0 - share))
    }

    /// Records per minute the quota allows over a run of `seconds`, averaged over its change if it has one.
    fn limit_rpm(&self, records: usize, seconds: f64) -> Option<f64> {
        let changed = self.change.map_or(1.0, |c| {
            let before = c.at_s(seconds) / seconds;
            before + (1.0 - before) * c.factor
        });
        self.first_limit_rpm(records, seconds).map(|l| l * changed)
    }

    /// When the quota changes (seconds after the start) and the records per minute it allows from then on.
    fn after_change(&self, records: usize, seconds: f64) -> Option<(f64, f64)> {
        let c = self.change?;
        let limit = self.first_limit_rpm(records, seconds)?;
        Some((c.at_s(seconds), limit * c.factor))
    }

    /// The profile line of the scenario's quota change in a run of `seconds`.
    fn change_profile(&self, seconds: f64) -> String {
        let Some(c) = self.change else {
            return String::new();
        };
        let scaled = |name: &str, q: Option<f64>| {
            q.map(|q| format!(", {name} = {}", (q * c.factor).round()))
                .unwrap_or_default()
        };
        format!(
            "quota-changes = [{{ at-s = {}{}{} }}]\n",
            c.at_s(seconds),
            scaled("rpm", self.rpm),
            scaled("tpm", self.tpm)
        )
    }
}

struct Args {
    seconds: f64,
    warmup: f64,
    only: Vec<String>,
    clients: Vec<String>,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 60.0,
        warmup: 20.0,
        only: Vec::new(),
        clients: Vec::new(),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--warmup" => a.warmup = it.next().and_then(|v| v.parse().ok()).expect("--warmup N"),
            "--scenario" => a.only.push(it.next().expect("--scenario NAME")),
            "--client" => a.clients.push(it.next().expect("--client NAME")),
            "--json" => a.json = Some(it.next().expect("--json FILE")),
            _ => {} // `cargo bench` adds `--bench`.
        }
    }
    a
}

/// What one client did, before it is turned into figures.
struct Run {
    started_s: f64,
    ended_s: f64,
    failed: u64,
    latencies_ms: Vec<u64>,
    /// Records per second while sending, as the client measured it (runner ceiling).
    records_per_s: Option<f64>,
}

/// What a scenario's quota allows a run: records per minute on average, from the change on (its time and the
/// new rate), and at most in the run's own window.
struct Limits {
    limit: Option<f64>,
    after_change: Option<(f64, f64)>,
    bound: Option<Bound>,
}

/// The emulator's configuration for a scenario run of `seconds`.
fn emulator_config(s: &Scenario, seconds: f64) -> EmulatorConfig {
    let profile = format!(
        "seed = 1\n{}[models.\"*\"]\n{}{}",
        s.account,
        s.profile,
        s.change_profile(seconds)
    );
    EmulatorConfig::from_toml(&profile, Path::new("bench.toml")).expect("bench profile")
}

async fn start_emulator(s: &Scenario, seconds: f64) -> EmulatorHandle {
    emulator::start(emulator_config(s, seconds), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The most records any client could have had succeed by a second of the emulator's clock, from the scenario's
/// own quota rules: the reason no client reaches a goodput of 1 on a short run.
///
/// Every quota starts empty at the model's first request. A record that succeeded by `until` was admitted by
/// `until − L`, where `L` is the shortest latency the profile gives any record; by then each record that
/// succeeded had taken its charge or, still in flight, its reservation (no less) from the TPM bucket, and the
/// last one admitted found its whole reservation there; and each took one request from the RPM bucket. So the
/// records are at most as many as the cheapest charges that fit in what the buckets had refilled by `until − L`
/// (less a neighbour's share, with the quota change), times the texts a call carries. Output charged above its
/// reservation (burndown) is a debt the bucket takes at settlement, bounded only by the calls in flight: no
/// bound is given then.
struct Bound {
    profile: emulator::config::ModelProfile,
    /// The charge of each record, cheapest first (empty without a TPM quota).
    costs: Vec<f64>,
    /// The least any record's reservation exceeds its charge: the last call admitted needed that much more.
    last_extra: f64,
    /// Whether every charge is within its reservation (else no bound is given).
    bounded: bool,
    /// The shortest latency of any record, in seconds.
    min_latency_s: f64,
    per_call: f64,
}

impl Bound {
    fn new(s: &Scenario, records: usize, seconds: f64) -> Bound {
        let config = emulator_config(s, seconds);
        let profile = config.models["*"].clone();
        let l = profile.latency;
        let outputs = (0..records).map(|i| {
            let prompt = (s.prompt)(i);
            let input = text::count_tokens(&prompt) + 3;
            let output = text::reply(&format!("{prompt}\n"), s.output, u64::from(s.max_tokens))
                .output_tokens;
            (input, output)
        });
        let mut costs = Vec::new();
        let mut min_latency_s = f64::INFINITY;
        let mut last_extra = f64::INFINITY;
        let mut bounded = true;
        for (input, output) in outputs {
            let latency = (l.first_token_ms + l.per_token_ms * output as f64) * (1.0 - l.jitter);
            min_latency_s = min_latency_s.min(latency / 1000.0);
            if s.tpm.is_some() {
                let reserved = (input + u64::from(s.max_tokens)) as f64;
                let charged = (input + output * u64::from(s.burndown)) as f64;
                // A charge above its reservation is taken at settlement, as a debt: how much the calls in flight
                // can owe depends on how many there are, which the quota does not bound.
                bounded &= charged <= reserved;
                costs.push(charged);
                last_extra = last_extra.min(reserved - charged);
            }
        }
        costs.sort_by(f64::total_cmp);
        Bound {
            profile,
            costs,
            min_latency_s,
            per_call: s.embed_texts.unwrap_or(1) as f64,
            last_extra: if s.tpm.is_some() { last_extra } else { 0.0 },
            bounded,
        }
    }

    /// Units of each per-minute quota (requests, tokens) refilled from `from` to `to` (seconds of the emulator's
    /// clock, which times the quota change; the buckets and the neighbour's phase start at `from`).
    fn refilled(&self, from: f64, to: f64) -> (Option<f64>, Option<f64>) {
        let step: f64 = 0.001;
        let (mut requests, mut tokens) = (0.0, 0.0);
        let mut at = from;
        while at < to {
            let p = self.profile.clone().at(at);
            let free = 1.0 - self.profile.neighbour.map_or(0.0, |n| n.share(at - from));
            let dt = step.min(to - at);
            requests += p.rpm.unwrap_or(0) as f64 / 60.0 * free * dt;
            tokens += p.tpm.unwrap_or(0) as f64 / 60.0 * free * dt;
            at += step;
        }
        let start = |q: Option<u64>| q.map_or(0.0, |q| q as f64 * self.profile.initial_fill);
        (
            self.profile.rpm.map(|_| requests + start(self.profile.rpm)),
            self.profile.tpm.map(|_| tokens + start(self.profile.tpm)),
        )
    }

    /// Records (texts) that could have succeeded before second `until` of the emulator's clock, when the first
    /// request came in second `first` (the emulator creates a model's buckets at its first request).
    fn records(&self, first: f64, until: f64) -> Option<f64> {
        if !self.bounded {
            return None;
        }
        let (requests, tokens) = self.refilled(first, (until - self.min_latency_s).max(first));
        let by_requests = requests.map(|r| r.floor() * self.per_call);
        let by_tokens = tokens.map(|refilled| {
            let mut left = refilled - self.last_extra;
            let fit = self.costs.iter().take_while(|&&c| {
                left -= c;
                left >= 0.0
            });
            fit.count() as f64 * self.per_call
        });
        match (by_requests, by_tokens) {
            (Some(r), Some(t)) => Some(r.min(t)),
            (r, t) => r.or(t),
        }
    }
}

/// One Converse call of `max_tokens`; whether it succeeded.
async fn converse(
    client: &aws_sdk_bedrockruntime::Client,
    model: &str,
    prompt: String,
    max_tokens: i32,
) -> Result<(), ()> {
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(prompt))
        .build()
        .unwrap();
    client
        .converse()
        .model_id(model)
        .messages(message)
        .inference_config(
            InferenceConfiguration::builder()
                .max_tokens(max_tokens)
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|_| ())
}

async fn sdk_pool(
    s: &Scenario,
    emu: &EmulatorHandle,
    adaptive: bool,
    deadline: Duration,
    records: usize,
) -> Run {
    // The pool takes the next record until the deadline (records are unlimited), except in the ceiling
    // scenario, where all clients send the same fixed number.
    let records = if s.ceiling_records.is_some() {
        records
    } else {
        usize::MAX
    };
    let retry = if adaptive {
        RetryConfig::adaptive()
    } else {
        RetryConfig::standard()
    };
    // A partition of its own, so one run's retry quota is not spent by the previous run's.
    let partition = RetryPartition::new(format!("bench-{}-{adaptive}", s.name));
    let conf = emu
        .sdk_config()
        .retry_config(retry)
        .retry_partition(partition)
        .build();
    let client = aws_sdk_bedrockruntime::Client::from_conf(conf);
    let started_s = emu.stats().uptime_s;
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..POOL)
        .map(|_| {
            let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
            let (prompt, model, embed) = (s.prompt, s.model, s.embed_texts.is_some());
            let max_tokens = s.max_tokens as i32;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while t0.elapsed() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= records {
                        break;
                    }
                    let sent = Instant::now();
                    let out = if embed {
                        let body = json!({ "texts": [prompt(i)], "input_type": "search_document" });
                        client
                            .invoke_model()
                            .model_id(model)
                            .body(body.to_string().into_bytes().into())
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|_| ())
                    } else {
                        converse(&client, model, prompt(i), max_tokens).await
                    };
                    match out {
                        Ok(_) => latencies.push(sent.elapsed().as_millis() as u64),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    for w in workers {
        latencies_ms.extend(w.await.unwrap());
    }
    let ended_s = emu.stats().uptime_s;
    let sent = latencies_ms.len() as f64 + failed.load(Ordering::Relaxed) as f64;
    Run {
        started_s,
        ended_s,
        failed: failed.load(Ordering::Relaxed),
        latencies_ms,
        records_per_s: Some(sent / (ended_s - started_s).max(1e-3)),
    }
}

async fn batchrun(s: &Scenario, emu: &EmulatorHandle, deadline: Duration, records: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..records {
        lines.push_str(&json!({ "id": format!("r{i:06}"), "prompt": (s.prompt)(i) }).to_string());
        lines.push('\n');
    }
    std::fs::write(dir.path().join("in.jsonl"), lines).unwrap();
    let model = if s.embed_texts.is_some() {
        "api = \"embed\"\n".to_string()
    } else if s.model == MODEL {
        format!(
            "max-tokens = {}\noutput-burndown = {}\n",
            s.max_tokens, s.burndown
        )
    } else {
        format!("max-tokens = {}\n", s.max_tokens)
    };
    let job = format!(
        "[job]\nname = \"bench\"\n[model]\nid = \"{}\"\n{model}\
         [input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[budget]\n{}\n[output]\npath = \"out\"\nrecords-per-part = 5000\n\
         [endpoint]\nurl = \"{}\"\ntimeout-secs = 30\n",
        s.model,
        s.budget,
        emu.endpoint()
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let started_s = emu.stats().uptime_s;
    let (_, log) = common::submit(dir.path(), deadline).await;
    let store = Store::open(&dir.path().join(".batchrun/state.db"))
        .await
        .expect("the run left its state");
    let counts = store.counts("bench").await.unwrap();
    let latencies_ms = store.latencies("bench").await.unwrap();
    store.close().await;
    if counts.done == 0 {
        eprintln!("batchrun did nothing:\n{log}");
    } else if std::env::var_os("BENCH_LOG").is_some() {
        eprintln!("{log}");
        for (model, stats) in emu.stats().models {
            let seconds: Vec<String> = stats
                .series
                .iter()
                .map(|a| {
                    let c = &a.counts;
                    let throttled = c.throttled_rpm + c.throttled_tpm + c.throttled_tpd;
                    format!("{}:{}/{throttled}/{}", a.second, c.succeeded, a.in_flight)
                })
                .collect();
            eprintln!("{model}: {}", seconds.join(" "));
        }
    }
    // batchrun's own figure for the sending phase: "finished: N records this run in T (R records/s)".
    let records_per_s = log
        .lines()
        .find(|l| l.starts_with("finished:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|r| r.parse().ok());
    Run {
        started_s,
        ended_s: emu.stats().uptime_s,
        failed: counts.failed,
        latencies_ms,
        records_per_s,
    }
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

fn figures(
    s: &Scenario,
    client: &str,
    emu: &EmulatorHandle,
    run: Run,
    args: &Args,
    limits: &Limits,
) -> Value {
    let stats = emu.stats();
    let m = stats.models.get(s.model).cloned().unwrap_or_default();
    let throttled = m.totals.throttled_rpm + m.totals.throttled_tpm + m.totals.throttled_tpd;
    let throttled_pct = 100.0 * throttled as f64 / (m.totals.requests.max(1)) as f64;
    let mut lat = run.latencies_ms;
    lat.sort_unstable();
    let start = run.started_s.floor() as u64;
    let succeeded_between =
        |from: f64, to: f64| succeeded_between(&m, from.max(0.0) as u64, to.max(0.0) as u64);
    let mut out = json!({
        "scenario": s.name,
        "client": client,
        "throttled_pct": (throttled_pct * 100.0).round() / 100.0,
        "failed_records": run.failed,
        "succeeded": m.totals.succeeded,
        "p50_latency_s": percentile(&lat, 0.5),
        "p99_latency_s": percentile(&lat, 0.99),
    });
    match limits.limit {
        Some(limit) => {
            // Over the whole run: the quota's bucket starts empty, so nothing can get more than the limit over
            // it, and a slow start counts against the client. Over the steady part, from `warmup` on, too.
            let to = run.ended_s.min(run.started_s + args.seconds).floor();
            let whole = (to - run.started_s).max(1.0);
            let achieved = succeeded_between(run.started_s.floor(), to) as f64 * 60.0 / whole;
            let from = run.started_s + args.warmup;
            let steady =
                succeeded_between(from.floor(), to) as f64 * 60.0 / (to - from.floor()).max(1.0);
            // First second at which the trailing ten seconds ran at 90 % of the limit.
            let target = 0.9 * limit / 60.0 * 10.0;
            let to_90 = (start + 10..=to as u64)
                .find(|&t| succeeded_between((t - 10) as f64, t as f64) as f64 >= target)
                .map(|t| t as f64 - run.started_s);
            out["steady_rpm"] = json!((steady * 10.0).round() / 10.0);
            out["limit_rpm"] = json!((limit * 10.0).round() / 10.0);
            out["achieved_rpm"] = json!((achieved * 10.0).round() / 10.0);
            out["goodput_ratio"] = json!((achieved / limit * 1000.0).round() / 1000.0);
            out["secs_to_90pct"] = json!(to_90.map(|t| t.round()));
            let first = m.first_request_ms as f64 / 1000.0;
            out["first_call_s"] = json!(((first - run.started_s) * 1000.0).round() / 1000.0);
            if let Some(most) = limits.bound.as_ref().and_then(|b| b.records(first, to)) {
                out["bound_ratio"] = json!((most * 60.0 / whole / limit * 1000.0).round() / 1000.0);
            }
            if let Some((at, new_limit)) = limits.after_change {
                change_figures(&mut out, &m, at, new_limit, to);
            }
        }
        None => {
            out["records_per_s"] = json!(run.records_per_s.map(f64::round));
            out["wall_s"] = json!(((run.ended_s - run.started_s) * 10.0).round() / 10.0);
        }
    }
    out
}

/// Records (texts, for embeddings) that succeeded from second `from` to before second `to`.
fn succeeded_between(m: &emulator::ModelStats, from: u64, to: u64) -> u64 {
    m.series
        .iter()
        .filter(|sec| sec.second >= from && sec.second < to)
        .map(|sec| sec.counts.succeeded_items)
        .sum()
}

/// From the change at `at` s on (to `to`): the first second at which the trailing five seconds (all after the
/// change) ran at 90 % of the new limit, and the calls throttled.
fn change_figures(out: &mut Value, m: &emulator::ModelStats, at: f64, new_limit: f64, to: f64) {
    let target = 0.9 * new_limit / 60.0 * 5.0;
    let at = at.round() as u64;
    let to_90 = (at + 5..=to as u64)
        .find(|&t| succeeded_between(m, t - 5, t) as f64 >= target)
        .map(|t| t - at);
    let throttled_after: u64 = m
        .series
        .iter()
        .filter(|sec| sec.second >= at)
        .map(|sec| sec.counts.throttled_rpm + sec.counts.throttled_tpm)
        .sum();
    out["change_at_s"] = json!(at);
    out["new_limit_rpm"] = json!((new_limit * 10.0).round() / 10.0);
    out["secs_to_90pct_of_new"] = json!(to_90);
    out["throttled_after_change"] = json!(throttled_after);
}

/// The line under a row of a scenario whose quota changes.
fn print_change(row: &Value) {
    if row.get("change_at_s").is_some() {
        println!(
            "{:<16} {:<13} after the change at {} s to {}/min: 90 % of it in {} s, {} calls throttled",
            "",
            "",
            fmt(&row["change_at_s"]),
            fmt(&row["new_limit_rpm"]),
            fmt(&row["secs_to_90pct_of_new"]),
            fmt(&row["throttled_after_change"]),
        );
    }
}

fn fmt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    println!(
        "{:<16} {:<13} {:>9} {:>9} {:>8} {:>6} {:>10} {:>7} {:>7} {:>7} {:>9}",
        "scenario",
        "client",
        "limit/min",
        "got/min",
        "goodput",
        "bound",
        "throttled%",
        "failed",
        "p50 s",
        "p99 s",
        "to 90% s"
    );
    for s in scenarios() {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == s.name) {
            continue;
        }
        let deadline = Duration::from_secs_f64(args.seconds);
        let records = s.ceiling_records.unwrap_or_else(|| {
            // Enough that no client runs out before the deadline.
            let raised = s.change.map_or(1.0, |c| c.factor.max(1.0));
            let per_call = s.embed_texts.unwrap_or(1) as f64;
            let per_s = (s.rpm.unwrap_or(0.0) * per_call).max(s.tpm.unwrap_or(0.0) / 1000.0) / 60.0
                * raised;
            ((per_s * args.seconds * 2.0) as usize).max(500)
        });
        let limits = if s.ceiling_records.is_some() {
            Limits {
                limit: None,
                after_change: None,
                bound: None,
            }
        } else {
            Limits {
                limit: s.limit_rpm(records, args.seconds),
                after_change: s.after_change(records, args.seconds),
                bound: Some(Bound::new(&s, records, args.seconds)),
            }
        };
        for client in ["fixed-pool", "sdk-adaptive", "batchrun"] {
            if !args.clients.is_empty() && !args.clients.iter().any(|c| c == client) {
                continue;
            }
            let row = runtime.block_on(async {
                let emu = start_emulator(&s, args.seconds).await;
                let run = match client {
                    "fixed-pool" => sdk_pool(&s, &emu, false, deadline, records).await,
                    "sdk-adaptive" => sdk_pool(&s, &emu, true, deadline, records).await,
                    _ => batchrun(&s, &emu, deadline, records).await,
                };
                let row = figures(&s, client, &emu, run, &args, &limits);
                emu.shutdown().await;
                row
            });
            let (limit_col, got_col) = if s.ceiling_records.is_some() {
                ("-".to_string(), format!("{}/s", fmt(&row["records_per_s"])))
            } else {
                (fmt(&row["limit_rpm"]), fmt(&row["achieved_rpm"]))
            };
            println!(
                "{:<16} {:<13} {:>9} {:>9} {:>8} {:>6} {:>10} {:>7} {:>7} {:>7} {:>9}",
                s.name,
                client,
                limit_col,
                got_col,
                fmt(&row["goodput_ratio"]),
                fmt(&row["bound_ratio"]),
                fmt(&row["throttled_pct"]),
                fmt(&row["failed_records"]),
                fmt(&row["p50_latency_s"]),
                fmt(&row["p99_latency_s"]),
                fmt(&row["secs_to_90pct"]),
            );
            print_change(&row);
            rows.push(row);
        }
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
        println!("\nwrote {path}");
    }
}
