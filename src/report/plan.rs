//! `batchrun plan`: what a job will cost in quota, time and money before anything is sent. The facts are
//! gathered elsewhere ([`crate::inspect::plan()`]); here they become numbers and text, by pure functions.
//!
//! The quota model is Bedrock's: a request reserves `input + max_tokens` while it runs and is charged
//! `input + output × burndown` when it ends. The TPM bucket holds one minute of quota and refills at the TPM
//! rate, so at `r` requests per minute with latency `L` minutes two things must hold: the charges fit the
//! refill (`r × charge ≤ TPM`) and the reservations held in flight fit the bucket (`r × L × reservation ≤ TPM`).

use std::fmt::Write;
use std::time::Duration;

use super::format::{duration, int, money, round_up};
use crate::budget::quota;
use crate::catalogue::Price;
use crate::job::{Api, BurndownFrom, ModelSettings};

/// A record whose reservation can never fit the TPM budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeverFit {
    /// Its id.
    pub id: String,
    /// `file:line` or the document.
    pub location: String,
    /// Tokens it would reserve.
    pub reservation: u64,
}

/// What `plan` found out, before any arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFacts {
    /// The job's name.
    pub job: String,
    /// The job file as the user named it.
    pub job_file: String,
    /// The model id.
    pub model_id: String,
    /// Records that can be sent.
    pub records: u64,
    /// Input lines that cannot become requests (they fail at once).
    pub unreadable: u64,
    /// Input tokens of the records that can be sent, in total.
    pub input_tokens: u64,
    /// Whether `input_tokens` was counted by Bedrock's CountTokens (else estimated locally).
    pub input_exact: bool,
    /// `max_tokens` of the records that can be sent, in total.
    pub max_tokens_total: u64,
    /// The largest reservation that fits.
    pub largest_reservation: u64,
    /// The first records that can never fit.
    pub never_fit: Vec<NeverFit>,
    /// How many can never fit.
    pub never_fit_count: u64,
    /// Output tokens expected per record.
    pub output_per_record: f64,
    /// Where that figure comes from.
    pub output_source: String,
    /// Seconds per request expected.
    pub latency_s: f64,
    /// Where that figure comes from.
    pub latency_source: String,
    /// Quota tokens per output token.
    pub burndown: u64,
    /// `budget.rpm`.
    pub rpm: Option<u64>,
    /// `budget.tpm`.
    pub tpm: Option<u64>,
    /// Rates an earlier run of the job measured (RPM, TPM), when lower than the budget.
    pub learned: (Option<f64>, Option<f64>),
    /// `budget.max-concurrency`.
    pub max_concurrency: u64,
    /// The model's price, the currency and the table's date.
    pub price: Option<(Price, String, String)>,
    /// `--deadline`.
    pub deadline: Option<Duration>,
    /// What the model table adds ([`model_notes`]), and where budget values came from.
    pub model_notes: Vec<String>,
    /// The account's daily token quota for the model, and its quota code.
    pub tpd: Option<(u64, String)>,
    /// Records whose input and `max-tokens` together exceed the model's context window, and that window.
    pub over_context: (u64, Option<u64>),
    /// The service tier the job's calls name, other than the default, and its price when the model table gives
    /// one.
    pub tier: Option<(String, Option<Price>)>,
    /// The model's batch-inference price, when the model table gives one.
    pub batch_price: Option<Price>,
    /// The batch limits of the job's `[batch]` (else Bedrock's defaults): the fewest and most records of a
    /// batch job, and the hours it may take.
    pub batch_limits: (u64, u64, u32),
    /// How `submit` will send the records, for a job whose mode is batch or auto: which way, and why.
    pub mode: Option<String>,
    /// A job with several targets: each one's name and quotas (`rpm` and `tpm` above are their sums, and
    /// `max_concurrency` is theirs together). Empty for a job of one target.
    pub targets: Vec<PlanTarget>,
}

/// One target of a job with several, as the plan sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTarget {
    /// Its name.
    pub name: String,
    /// Its requests per minute, from the job file or the account.
    pub rpm: Option<u64>,
    /// Its tokens per minute, likewise.
    pub tpm: Option<u64>,
}

/// What the model table adds to the job file, as lines to show before a run or in a plan: warnings first (a
/// model the table does not know, a `max-tokens` above what the model can write), then where a burndown other
/// than 1 came from.
pub fn model_notes(m: &ModelSettings) -> Vec<String> {
    let mut lines = Vec::new();
    let name = m.facts.name.as_deref().unwrap_or(&m.id);
    let tell_burndown = m.api != Api::Embed;
    match m.burndown_from {
        BurndownFrom::Default if tell_burndown => lines.push(format!(
            "warning: model `{}` is not in the model table: output burndown {} assumed and no price known; set \
             model.output-burndown (5 for the Claude models AWS lists, 1 elsewhere), or describe the model in a \
             file given with BATCHRUN_MODELS (format: jobs/models.toml)",
            m.id, m.output_burndown
        )),
        BurndownFrom::Default => lines.push(format!(
            "warning: model `{}` is not in the model table: no price known; describe it in a file given with \
             BATCHRUN_MODELS (format: jobs/models.toml)",
            m.id
        )),
        BurndownFrom::JobFile if m.listed && m.facts.burndown != Some(m.output_burndown) => {
            lines.push(format!(
                "note: model.output-burndown {} differs from the model table's {} for {name}; the job file's is used",
                m.output_burndown,
                m.facts.burndown.unwrap_or(1)
            ));
        }
        _ => {}
    }
    if let (Some(asked), Some(most)) = (m.max_tokens, m.facts.max_output)
        && u64::from(asked) > most
    {
        lines.push(format!(
            "warning: model.max-tokens {} is more than the {} output tokens {name} can write (model table): \
             Bedrock is likely to refuse every request; lower it",
            int(u64::from(asked)),
            int(most)
        ));
    }
    if m.burndown_from == BurndownFrom::Table && m.output_burndown != 1 && tell_burndown {
        lines.push(format!(
            "output burndown {} from the model table ({name}): each output token counts {} tokens against TPM",
            m.output_burndown, m.output_burndown
        ));
    }
    lines
}

/// Which limit sets the pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute, through the charges.
    TpmCharges,
    /// Tokens per minute, through the reservations held in flight (`max-tokens` is the cause).
    TpmReservations,
    /// Requests in flight.
    Concurrency,
}

impl Bound {
    /// In a few words: `RPM-bound`, `TPM-bound (by tokens charged)` …
    pub fn describe(self) -> &'static str {
        match self {
            Bound::Rpm => "RPM-bound",
            Bound::TpmCharges => "TPM-bound (by tokens charged)",
            Bound::TpmReservations => {
                "TPM-bound (by tokens reserved for max-tokens while requests run)"
            }
            Bound::Concurrency => "concurrency-bound",
        }
    }
}

/// The numbers of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Records that will be sent (those that can never fit are left out).
    pub sendable: u64,
    /// Mean input tokens per record.
    pub input_mean: f64,
    /// Mean `max_tokens`.
    pub max_tokens_mean: f64,
    /// Tokens a request reserves.
    pub reservation: f64,
    /// Tokens a request is charged.
    pub charge: f64,
    /// Requests per minute each limit allows (`None`: unlimited).
    pub rpm_allows: Option<f64>,
    /// See `rpm_allows`.
    pub tpm_allows: Option<f64>,
    /// See `rpm_allows`.
    pub concurrency_allows: f64,
    /// The binding limit and the rate it allows.
    pub bound: Bound,
    /// Requests per minute expected.
    pub rate: f64,
    /// Expected wall time.
    pub wall: Duration,
    /// Expected cost: input, output.
    pub cost: Option<(f64, f64)>,
    /// Output tokens expected in all.
    pub output_total: f64,
    /// With `max-tokens` lowered to twice the expected output: that value and the requests per minute TPM would
    /// then allow (only when reservations bind).
    pub lower_max_tokens: Option<(u64, f64)>,
    /// What the deadline needs: RPM, TPM, concurrency.
    pub needed: Option<(u64, u64, u64)>,
    /// A job with several targets: what binds each and the requests per minute it allows, in the order of
    /// [`PlanFacts::targets`]; `rate` is their sum.
    pub targets: Vec<(Bound, f64)>,
}

/// The limit that allows the fewest requests a minute, and how many, of what `rpm`, `tpm` (as requests a
/// minute) and concurrency allow, for requests charged `charge` and reserving `reservation` tokens for
/// `l_min` minutes.
fn binding(
    (charge, reservation, l_min): (f64, f64, f64),
    (rpm, tpm_allows, concurrency_allows): (Option<f64>, Option<f64>, f64),
) -> (Bound, f64) {
    let tpm_bound = if l_min * reservation > charge {
        Bound::TpmReservations
    } else {
        Bound::TpmCharges
    };
    [
        (Bound::Concurrency, Some(concurrency_allows)),
        (Bound::Rpm, rpm),
        (tpm_bound, tpm_allows),
    ]
    .into_iter()
    .filter_map(|(b, allows)| Some((b, allows?)))
    .min_by(|a, b| a.1.total_cmp(&b.1))
    .expect("concurrency is always a candidate")
}

/// A job with several targets: what binds each, with its own quotas and its share of the concurrency.
fn per_target(
    f: &PlanFacts,
    per_request: (f64, f64, f64),
    concurrency_allows: f64,
) -> Vec<(Bound, f64)> {
    let (charge, reservation, l_min) = per_request;
    let share = concurrency_allows / f.targets.len().max(1) as f64;
    f.targets
        .iter()
        .map(|t| {
            let by_tokens = t
                .tpm
                .map(|t| t as f64 / charge.max(l_min * reservation).max(1.0));
            binding(per_request, (t.rpm.map(|r| r as f64), by_tokens, share))
        })
        .collect()
}

/// The kind of limit that binds the targets which together allow the most of the job's requests a minute.
fn most_binding(targets: &[(Bound, f64)]) -> Bound {
    let share = |k: Bound| -> f64 {
        targets
            .iter()
            .filter(|(b, _)| *b == k)
            .map(|(_, r)| r)
            .sum()
    };
    [
        Bound::Rpm,
        Bound::TpmCharges,
        Bound::TpmReservations,
        Bound::Concurrency,
    ]
    .into_iter()
    .max_by(|a, b| share(*a).total_cmp(&share(*b)))
    .expect("four kinds")
}

/// The arithmetic.
pub fn compute(f: &PlanFacts) -> Plan {
    let n = f.records.saturating_sub(f.never_fit_count).max(1) as f64;
    let input_mean = f.input_tokens as f64 / n;
    let max_tokens_mean = f.max_tokens_total as f64 / n;
    let out = f.output_per_record.min(max_tokens_mean.max(1.0));
    let reservation = quota::reserved(input_mean, max_tokens_mean);
    let charge = quota::charged(input_mean, out, f.burndown as f64);
    let l_min = (f.latency_s / 60.0).max(1e-6);
    let effective = |budget: Option<u64>, learned: Option<f64>| match (budget, learned) {
        (Some(b), Some(l)) => Some((b as f64).min(l)),
        (Some(b), None) => Some(b as f64),
        (None, l) => l,
    };
    let rpm = effective(f.rpm, f.learned.0);
    let tpm = effective(f.tpm, f.learned.1);
    let rpm_allows = rpm;
    let tpm_allows = tpm.map(|t| t / charge.max(l_min * reservation).max(1.0));
    let concurrency_allows = f.max_concurrency as f64 / l_min;
    let per_request = (charge, reservation, l_min);
    let (mut bound, mut rate) = binding(per_request, (rpm_allows, tpm_allows, concurrency_allows));
    // Several targets: each is bound by its own limits, and the job gets what they allow together.
    let targets = per_target(f, per_request, concurrency_allows);
    if !targets.is_empty() {
        rate = targets.iter().map(|(_, a)| a).sum();
        bound = most_binding(&targets);
    }
    let sendable = f.records.saturating_sub(f.never_fit_count);
    let wall = Duration::from_secs_f64(sendable as f64 / rate.max(1e-9) * 60.0);
    let cost = f.price.as_ref().map(|(p, _, _)| {
        (
            f.input_tokens as f64 * p.input / 1e6,
            out * sendable as f64 * p.output / 1e6,
        )
    });
    let lower_max_tokens = match (bound, tpm) {
        (Bound::TpmReservations, Some(t)) => {
            lower(t, input_mean, max_tokens_mean, out, charge, l_min)
        }
        _ => None,
    };
    let needed = f.deadline.map(|d| {
        let r_need = sendable as f64 / (d.as_secs_f64() / 60.0).max(1e-9);
        (
            r_need.ceil() as u64,
            (r_need * charge.max(l_min * reservation)).ceil() as u64,
            (r_need * l_min).ceil() as u64 + 1,
        )
    });
    Plan {
        sendable,
        input_mean,
        max_tokens_mean,
        reservation,
        charge,
        rpm_allows,
        tpm_allows,
        concurrency_allows,
        bound,
        rate,
        wall,
        cost,
        output_total: out * sendable as f64,
        lower_max_tokens,
        needed,
        targets,
    }
}

/// With reservations binding on TPM `t`: a `max-tokens` of about twice the expected output, and the requests
/// per minute TPM would then allow; `None` when that is no lower than today's.
fn lower(
    t: f64,
    input: f64,
    max_tokens: f64,
    out: f64,
    charge: f64,
    l_min: f64,
) -> Option<(u64, f64)> {
    let m = round_up(out * 2.0);
    ((m as f64) < max_tokens).then(|| (m, t / charge.max(l_min * (input + m as f64))))
}

/// A rate per minute, rounded.
fn per_min(r: f64) -> String {
    int(r.round() as u64)
}

/// The plan as text.
pub fn render(f: &PlanFacts, p: &Plan) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "plan for job `{}` (model {}); no model calls were made\n",
        f.job, f.model_id
    );
    for line in &f.model_notes {
        let _ = writeln!(t, "{line}");
    }
    if !f.model_notes.is_empty() {
        t.push('\n');
    }
    request_lines(&mut t, f, p);
    match f.targets.is_empty() {
        true => limit_lines(&mut t, f, p),
        false => target_lines(&mut t, f, p),
    }
    let _ = writeln!(
        t,
        "\nexpected time    {} at {} requests/min",
        duration(p.wall),
        per_min(p.rate)
    );
    match (&p.cost, &f.price) {
        (Some((i, o)), Some((_, currency, as_of))) => {
            let _ = writeln!(
                t,
                "expected cost    {} (input {} + output {}; on-demand prices as of {as_of})",
                money(i + o, currency),
                money(*i, currency),
                money(*o, currency)
            );
        }
        _ => {
            let _ = writeln!(
                t,
                "expected cost    unknown: {} has no price in the model table (add one with --models FILE)",
                f.model_id
            );
        }
    }
    tier_lines(&mut t, f, p);
    batch_lines(&mut t, f, p);
    never_fit_lines(&mut t, f);
    daily_lines(&mut t, f, p);
    if let (Some((rpm, tpm, conc)), Some(d)) = (p.needed, f.deadline) {
        let _ = writeln!(
            t,
            "\nto finish within {}: RPM ≥ {}, TPM ≥ {} and max-concurrency ≥ {} — request the quotas in Service \
             Quotas (Amazon Bedrock, requests / tokens per minute for {}): `{}`",
            duration(d),
            int(rpm),
            int(tpm),
            conc,
            f.model_id,
            super::diagnose::request_command(Some(&f.job_file), rpm, tpm)
        );
    }
    t
}

/// What Bedrock's batch inference would cost and take for the job, beside the on-demand run: the batch price
/// (from the model table), how many batch jobs the records make, and the time AWS allows a job.
fn batch_lines(t: &mut String, f: &PlanFacts, p: &Plan) {
    let currency = f.price.as_ref().map(|(_, c, _)| c.as_str());
    let cost = match (f.batch_price, p.cost, currency) {
        (Some(b), Some((i, o)), Some(c)) => {
            let batch = (f.input_tokens as f64 * b.input + p.output_total * b.output) / 1e6;
            format!(
                "{} (on demand {}, {:.0} % of it)",
                money(batch, c),
                money(i + o, c),
                100.0 * batch / (i + o).max(1e-12)
            )
        }
        _ => format!(
            "price unknown (the model table gives no batch price for {})",
            f.model_id
        ),
    };
    let (min, max, hours) = f.batch_limits;
    let jobs = p.sendable.div_ceil(max).max(1);
    let fits = if p.sendable < min {
        format!(
            "; {} records are fewer than the {min} a batch job takes at least",
            int(p.sendable)
        )
    } else {
        format!(
            "; {} record{} in {jobs} job{} of at most {}",
            int(p.sendable),
            if p.sendable == 1 { "" } else { "s" },
            if jobs == 1 { "" } else { "s" },
            int(max)
        )
    };
    let _ = writeln!(
        t,
        "batch inference  {cost}{fits}; no on-demand quota used, and each job has up to {hours} h to finish \
         (batch.timeout-hours; AWS's default 24, up to 168) against {} on demand",
        duration(p.wall)
    );
    if let Some(mode) = &f.mode {
        let _ = writeln!(t, "submit sends     {mode}");
    }
}

/// A job in the Flex or Priority tier: its cost at the tier's price against the default tier's, or why it is
/// not known.
fn tier_lines(t: &mut String, f: &PlanFacts, p: &Plan) {
    let (Some((tier, tier_price)), Some((i, o)), Some((_, currency, _))) =
        (&f.tier, p.cost, &f.price)
    else {
        return;
    };
    match tier_price {
        Some(tp) => {
            let cost = (f.input_tokens as f64 * tp.input + p.output_total * tp.output) / 1e6;
            let default = i + o;
            let (word, by) = if cost <= default {
                ("saves", default - cost)
            } else {
                ("costs", cost - default)
            };
            let _ = writeln!(
                t,
                "in {tier}         {} ({word} {} against the default tier's {}); the same quota serves every tier",
                money(cost, currency),
                money(by, currency),
                money(default, currency)
            );
        }
        None => {
            let _ = writeln!(
                t,
                "in {tier}         price unknown: the model table gives no {tier} price for {} (the cost above is the \
                 default tier's; add {tier}-input and {tier}-output with --models FILE)",
                f.model_id
            );
        }
    }
}

/// Records, tokens, what one request reserves and is charged, latency.
fn request_lines(t: &mut String, f: &PlanFacts, p: &Plan) {
    let _ = writeln!(
        t,
        "records          {} to send{}{}",
        int(p.sendable),
        if f.never_fit_count > 0 {
            format!(", {} that never fit (below)", int(f.never_fit_count))
        } else {
            String::new()
        },
        if f.unreadable > 0 {
            format!(", {} unreadable (they fail at once)", int(f.unreadable))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        t,
        "input tokens     {} {}, mean {:.0} per record",
        int(f.input_tokens),
        if f.input_exact {
            "counted by Bedrock's CountTokens"
        } else {
            "estimated locally with tiktoken cl100k"
        },
        p.input_mean
    );
    let _ = writeln!(
        t,
        "output tokens    {:.0} per record expected ({})",
        f.output_per_record.min(p.max_tokens_mean.max(1.0)),
        f.output_source
    );
    let _ = writeln!(
        t,
        "per request      reserves {} tokens while it runs (input {} + max-tokens {}); charged {} when it ends \
         (input + output × burndown {})",
        int(p.reservation.round() as u64),
        int(p.input_mean.round() as u64),
        int(p.max_tokens_mean.round() as u64),
        int(p.charge.round() as u64),
        f.burndown
    );
    let _ = writeln!(
        t,
        "                 max-tokens makes the reservation {:.1}× the charge",
        p.reservation / p.charge.max(1.0)
    );
    let _ = writeln!(
        t,
        "latency          {:.1}s per request ({})",
        f.latency_s, f.latency_source
    );
}

/// The job's tokens against the account's daily token quota: the share of a day, or the days it takes.
fn daily_lines(t: &mut String, f: &PlanFacts, p: &Plan) {
    let Some((tpd, code)) = &f.tpd else { return };
    let needed = (p.charge * p.sendable as f64).ceil() as u64;
    let share = needed as f64 / (*tpd).max(1) as f64;
    if share <= 1.0 {
        let _ = writeln!(
            t,
            "daily quota      {} tokens a day (Service Quotas {code}); the job charges about {}, {:.0} % of it",
            int(*tpd),
            int(needed),
            share * 100.0
        );
    } else {
        let _ = writeln!(
            t,
            "daily quota      warning: the job charges about {} tokens, more than the {} a day the account allows \
             (Service Quotas {code}): it takes at least {} days. Each day's run stops when the quota is used up \
             (exit 69, resumable), or waits for it with budget.on-daily-quota = \"wait\"",
            int(needed),
            int(*tpd),
            share.ceil() as u64
        );
    }
}

/// A job with several targets: what each allows and what binds it, and what they allow together.
fn target_lines(t: &mut String, f: &PlanFacts, p: &Plan) {
    let _ = writeln!(
        t,
        "\nrequests per minute each target allows (each request goes to one with room; concurrency {} a target at \
         {:.1}s each):",
        f.max_concurrency / f.targets.len().max(1) as u64,
        f.latency_s
    );
    let quota = |q: Option<u64>| q.map_or("not set".to_string(), int);
    for (target, (bound, allows)) in f.targets.iter().zip(&p.targets) {
        let _ = writeln!(
            t,
            "  {:<24} RPM {:<10} TPM {:<12} {:>10}  {}",
            target.name,
            quota(target.rpm),
            quota(target.tpm),
            per_min(*allows),
            bound.describe()
        );
    }
    let _ = writeln!(
        t,
        "  → together: {} requests/min, mostly {}",
        per_min(p.rate),
        p.bound.describe()
    );
}

/// Requests per minute each limit allows, and which one binds.
fn limit_lines(t: &mut String, f: &PlanFacts, p: &Plan) {
    let _ = writeln!(t, "\nrequests per minute each limit allows:");
    let limit_line = |name: String, allows: Option<f64>| match allows {
        Some(a) => format!("  {name:<40} {:>10}", per_min(a)),
        None => format!("  {name:<40} {:>10}", "no limit"),
    };
    let learned_note = |learned: Option<f64>, budget: Option<u64>| match (learned, budget) {
        (Some(l), Some(b)) if l < b as f64 => {
            format!(" (an earlier run measured {})", per_min(l))
        }
        (Some(l), None) => format!(" (none set; an earlier run measured {})", per_min(l)),
        _ => String::new(),
    };
    let quota = |name: &str, budget: Option<u64>, learned: Option<f64>| {
        format!(
            "{name} {}{}",
            budget.map_or("not set".into(), int),
            learned_note(learned, budget)
        )
    };
    for (name, allows) in [
        (quota("RPM", f.rpm, f.learned.0), p.rpm_allows),
        (quota("TPM", f.tpm, f.learned.1), p.tpm_allows),
        (
            format!(
                "concurrency {} at {:.1}s each",
                f.max_concurrency, f.latency_s
            ),
            Some(p.concurrency_allows),
        ),
    ] {
        let _ = writeln!(t, "{}", limit_line(name, allows));
    }
    let mut others: Vec<f64> = [p.rpm_allows, p.tpm_allows, Some(p.concurrency_allows)]
        .into_iter()
        .flatten()
        .filter(|a| *a > p.rate * 1.000_001)
        .collect();
    others.sort_by(f64::total_cmp);
    let _ = writeln!(
        t,
        "  → {}: {} requests/min{}",
        p.bound.describe(),
        per_min(p.rate),
        match others.first() {
            Some(next) => format!("; the next limit allows {:.1}× more", next / p.rate),
            None => String::new(),
        }
    );
    if let Some((m, allows)) = p.lower_max_tokens {
        let _ = writeln!(
            t,
            "  → with max-tokens = {m} (about twice the expected output), TPM would allow {} requests/min ({:.1}× \
             faster)",
            per_min(allows),
            allows / p.rate
        );
    }
}

/// The records whose reservation can never fit the TPM budget.
fn never_fit_lines(t: &mut String, f: &PlanFacts) {
    if f.never_fit_count == 0 {
        let _ = writeln!(
            t,
            "never fit        none (largest reservation {} tokens)",
            int(f.largest_reservation)
        );
    } else {
        let _ = writeln!(
            t,
            "never fit        {} records reserve more than the TPM budget of {}; they would fail at once — \
             shorten them or lower max-tokens:",
            int(f.never_fit_count),
            f.tpm.map_or("?".into(), int)
        );
        for nf in &f.never_fit {
            let _ = writeln!(
                t,
                "                   {} ({}): {} tokens",
                nf.id,
                nf.location,
                int(nf.reservation)
            );
        }
        if f.never_fit_count > f.never_fit.len() as u64 {
            let _ = writeln!(
                t,
                "                   … and {} more",
                int(f.never_fit_count - f.never_fit.len() as u64)
            );
        }
    }
    if let (n @ 1.., Some(window)) = f.over_context {
        let _ = writeln!(
            t,
            "too long         {} records need more than the model's context window of {} tokens (input + \
             max-tokens, model table); Bedrock will refuse them",
            int(n),
            int(window)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PlanFacts {
        PlanFacts {
            job_file: "j.toml".into(),
            job: "j".into(),
            model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
            records: 1000,
            unreadable: 0,
            input_tokens: 500_000,
            input_exact: false,
            max_tokens_total: 4_096_000,
            largest_reservation: 5_000,
            never_fit: vec![],
            never_fit_count: 0,
            output_per_record: 100.0,
            output_source: "assumed".into(),
            latency_s: 30.0,
            latency_source: "assumed".into(),
            burndown: 1,
            rpm: Some(1000),
            tpm: Some(200_000),
            learned: (None, None),
            max_concurrency: 64,
            price: Some((
                Price {
                    input: 0.8,
                    output: 4.0,
                },
                "USD".into(),
                "2025-11".into(),
            )),
            deadline: Some(Duration::from_secs(600)),
            model_notes: Vec::new(),
            tpd: None,
            over_context: (0, Some(200_000)),
            targets: Vec::new(),
            tier: None,
            batch_price: None,
            batch_limits: (100, 50_000, 24),
            mode: None,
        }
    }

    #[test]
    fn a_large_max_tokens_makes_reservations_bind() {
        let p = compute(&facts());
        // Reservation 500 + 4096, charge 600; held in flight: 0.5 min × 4596 = 2298 tokens per request/min.
        assert_eq!(p.bound, Bound::TpmReservations);
        assert!((p.rate - 200_000.0 / 2298.0).abs() < 0.01, "{}", p.rate);
        let (m, allows) = p.lower_max_tokens.unwrap();
        assert_eq!(m, 256);
        assert!((allows - 200_000.0 / 600.0).abs() < 0.5, "{allows}");
        let (rpm, tpm, _) = p.needed.unwrap();
        assert_eq!(rpm, 100);
        assert_eq!(tpm, 229_800);
        let (i, o) = p.cost.unwrap();
        assert!((i - 0.4).abs() < 1e-9 && (o - 0.4).abs() < 1e-9);
    }

    #[test]
    fn small_requests_are_rpm_bound() {
        let mut f = facts();
        f.max_tokens_total = 200_000;
        f.latency_s = 1.0;
        f.tpm = Some(2_000_000);
        let p = compute(&f);
        assert_eq!(p.bound, Bound::Rpm);
        assert_eq!(p.rate, 1000.0);
        assert_eq!(p.wall, Duration::from_secs(60));
        assert_eq!(p.lower_max_tokens, None);
    }

    #[test]
    fn learned_rates_below_the_budget_are_used() {
        let mut f = facts();
        f.max_tokens_total = 200_000;
        f.latency_s = 1.0;
        f.tpm = Some(2_000_000);
        f.learned = (Some(500.0), None);
        assert_eq!(compute(&f).rate, 500.0);
    }

    #[test]
    fn text() {
        let mut f = facts();
        f.never_fit = vec![NeverFit {
            id: "doc-17".into(),
            location: "in.jsonl:17".into(),
            reservation: 204_100,
        }];
        f.never_fit_count = 3;
        f.records = 1003;
        f.batch_price = Some(Price {
            input: 0.4,
            output: 2.0,
        });
        insta::assert_snapshot!(render(&f, &compute(&f)), @r"
            plan for job `j` (model anthropic.claude-3-5-haiku-20241022-v1:0); no model calls were made

            records          1,000 to send, 3 that never fit (below)
            input tokens     500,000 estimated locally with tiktoken cl100k, mean 500 per record
            output tokens    100 per record expected (assumed)
            per request      reserves 4,596 tokens while it runs (input 500 + max-tokens 4,096); charged 600 when it ends (input + output × burndown 1)
                             max-tokens makes the reservation 7.7× the charge
            latency          30.0s per request (assumed)

            requests per minute each limit allows:
              RPM 1,000                                     1,000
              TPM 200,000                                      87
              concurrency 64 at 30.0s each                    128
              → TPM-bound (by tokens reserved for max-tokens while requests run): 87 requests/min; the next limit allows 1.5× more
              → with max-tokens = 256 (about twice the expected output), TPM would allow 333 requests/min (3.8× faster)

            expected time    11m29s at 87 requests/min
            expected cost    $0.80 (input $0.40 + output $0.40; on-demand prices as of 2025-11)
            batch inference  $0.40 (on demand $0.80, 50 % of it); 1,000 records in 1 job of at most 50,000; no on-demand quota used, and each job has up to 24 h to finish (batch.timeout-hours; AWS's default 24, up to 168) against 11m29s on demand
            never fit        3 records reserve more than the TPM budget of 200,000; they would fail at once — shorten them or lower max-tokens:
                               doc-17 (in.jsonl:17): 204,100 tokens
                               … and 2 more

            to finish within 10m00s: RPM ≥ 100, TPM ≥ 229,800 and max-concurrency ≥ 51 — request the quotas in Service Quotas (Amazon Bedrock, requests / tokens per minute for anthropic.claude-3-5-haiku-20241022-v1:0): `batchrun quotas request j.toml --rpm 100 --tpm 229800 --submit`
        ");
    }

    #[test]
    fn int_groups_thousands() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(1_234_567), "1,234,567");
    }
}
