//! `batchrun report`: a job's runs summarized, and a diagnosis — which quota ran out, whether the budget was
//! set above the real quota, what `max-tokens` cost, what failed — with recommendations in numbers. Pure
//! functions over [`ReportFacts`], which [`crate::inspect::state`] reads from the checkpoint.

use std::fmt::Write;
use std::time::Duration;

use super::format::duration;
use super::format::{int, money, round_up};
use crate::budget::LearnedRates;
use crate::budget::Second;
use crate::catalogue::Price;
use crate::checkpoint::{ErrorGroup, OutcomeStats, RunRow, TargetStats, TierStats};

/// Everything the report is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFacts {
    /// The job's name.
    pub job: String,
    /// The job file as the user named it (for the command that asks for more quota), when they did.
    pub job_file: Option<String>,
    /// Its runs, oldest first.
    pub runs: Vec<RunRow>,
    /// Records.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Input tokens Bedrock counted.
    pub input_tokens: u64,
    /// Output tokens Bedrock counted.
    pub output_tokens: u64,
    /// Output-token, attempt and latency statistics.
    pub stats: OutcomeStats,
    /// Throttles: RPM, TPM, TPD.
    pub throttles: (u64, u64, u64),
    /// The per-second series of all runs.
    pub series: Vec<Second>,
    /// Failed records by error code.
    pub errors: Vec<ErrorGroup>,
    /// The rates the last run ended with.
    pub learned: Option<LearnedRates>,
    /// The model's price, the currency and the table's date.
    pub price: Option<(Price, String, String)>,
    /// `--deadline`: what quota finishes the job in this time.
    pub deadline: Option<Duration>,
    /// A job with several targets: what each answered (empty for a job of one).
    pub targets: Vec<TargetStats>,
    /// What each service tier served (records whose calls named one), with the tier's price when the model
    /// table gives it.
    pub tiers: Vec<(TierStats, Option<Price>)>,
    /// Input tokens read from the prompt cache and written to it (neither in `input_tokens`), and their prices
    /// per million when the model table gives them.
    pub cache: ((u64, u64), Option<(f64, f64)>),
}

/// The numbers the diagnosis rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnosis {
    /// Seconds spent sending, over all runs.
    pub sending: Duration,
    /// Most requests admitted in any 60 seconds.
    pub peak_rpm: u64,
    /// Most tokens charged in any 60 seconds.
    pub peak_tpm: u64,
    /// Tokens reserved at admission, in total.
    pub reserved: u64,
    /// Tokens charged at settlement, in total.
    pub charged: u64,
    /// Requests admitted.
    pub admitted: u64,
    /// Requests settled with a charge (succeeded).
    pub settled: u64,
    /// The cause, in one sentence.
    pub verdict: String,
    /// Recommendations, each with its numbers.
    pub recommendations: Vec<String>,
    /// A lower `max-tokens` worth setting.
    pub lower_max_tokens: Option<u64>,
}

/// The largest sum over any `window` consecutive seconds; a shorter series is scaled up to a full window.
fn peak(series: &[Second], window: i64, value: impl Fn(&Second) -> u64) -> u64 {
    let Some(first) = series.first() else {
        return 0;
    };
    let mut best = 0.0f64;
    let mut sum = 0;
    let mut start = 0;
    for row in series {
        sum += value(row);
        while series[start].at_s <= row.at_s - window {
            sum -= value(&series[start]);
            start += 1;
        }
        let span = (row.at_s - first.at_s + 1).min(window);
        // Only a series shorter than the window is scaled; its first seconds are not extrapolated alone.
        let covered = if row.at_s - first.at_s + 1 >= window {
            window
        } else {
            span
        };
        if covered == window || row.at_s == series[series.len() - 1].at_s {
            best = best.max(sum as f64 * window as f64 / covered as f64);
        }
    }
    best.round() as u64
}

/// Seconds spent sending, over all runs; a killed run ends at its last recorded second.
fn sending_time(f: &ReportFacts) -> Duration {
    f.runs
        .iter()
        .map(|r| {
            let end = r.ended_at.unwrap_or_else(|| {
                f.series
                    .iter()
                    .filter(|s| s.at_s >= r.started_at)
                    .map(|s| s.at_s + 1)
                    .max()
                    .unwrap_or(r.started_at)
            });
            Duration::from_secs((end - r.started_at).max(0) as u64)
        })
        .sum::<Duration>()
}

/// Calls in flight over the concurrency cap, over the seconds in which something was in flight or admitted.
fn in_flight_share(series: &[Second]) -> Option<f64> {
    let busy = series
        .iter()
        .filter(|s| s.concurrency_cap > 0 && (s.in_flight > 0 || s.admitted > 0));
    let (used, cap) = busy.fold((0, 0), |(u, c), s| (u + s.in_flight, c + s.concurrency_cap));
    (cap > 0).then(|| used as f64 / cap as f64)
}

/// The figures every finding is judged on, gathered once from the facts.
struct Signals {
    sending: Duration,
    reserved: u64,
    charged: u64,
    admitted: u64,
    settled: u64,
    peak_rpm: u64,
    peak_tpm: u64,
    /// Throttles by quota: RPM, and tokens (TPM and TPD together).
    t_rpm: u64,
    t_tokens: u64,
    max_tokens: Option<u64>,
    budget_rpm: Option<u64>,
    budget_tpm: Option<u64>,
    /// Reserved over charged, in total.
    ratio: f64,
    /// More than 2 % of replies stopped at max-tokens.
    truncated: bool,
    /// The configured budget and the measured quota, when Bedrock throttled below the budget.
    rpm_above: Option<(u64, f64)>,
    tpm_above: Option<(u64, f64)>,
    /// Median latency in minutes.
    l_min: f64,
    /// Calls in flight over the concurrency cap in force, averaged over the seconds that sent; low means
    /// calls waited for the budget, not for a free slot.
    in_flight_share: Option<f64>,
}

impl Signals {
    fn gather(f: &ReportFacts) -> Signals {
        let last = f.runs.last();
        let sum = |v: fn(&Second) -> u64| f.series.iter().map(v).sum::<u64>();
        let (t_rpm, t_tpm, t_tpd) = f.throttles;
        let t_tokens = t_tpm + t_tpd;
        let budget_rpm = last.and_then(|r| r.budget_rpm);
        let budget_tpm = last.and_then(|r| r.budget_tpm);
        let below =
            |budget: Option<u64>, learned: Option<f64>, throttled: u64| match (budget, learned) {
                (Some(b), Some(l)) if throttled > 0 && l < 0.9 * b as f64 => Some((b, l)),
                _ => None,
            };
        let (reserved, charged) = (sum(|s| s.reserved_tokens), sum(|s| s.settled_tokens));
        let s = &f.stats;
        Signals {
            sending: sending_time(f),
            reserved,
            charged,
            admitted: sum(|s| s.admitted),
            settled: sum(|s| s.succeeded),
            peak_rpm: peak(&f.series, 60, |s| s.admitted),
            peak_tpm: peak(&f.series, 60, |s| s.settled_tokens),
            t_rpm,
            t_tokens,
            max_tokens: last.and_then(|r| r.max_tokens),
            budget_rpm,
            budget_tpm,
            ratio: reserved as f64 / charged.max(1) as f64,
            truncated: s.done > 0 && s.at_cap as f64 > 0.02 * s.done as f64,
            rpm_above: below(budget_rpm, f.learned.and_then(|l| l.rpm_rate), t_rpm),
            tpm_above: below(budget_tpm, f.learned.and_then(|l| l.tpm_rate), t_tokens),
            l_min: s.latency_p50_ms as f64 / 60_000.0,
            in_flight_share: in_flight_share(&f.series),
        }
    }

    fn throttled(&self) -> u64 {
        self.t_rpm + self.t_tokens
    }
}

/// The diagnosis of `f`.
pub fn diagnose(f: &ReportFacts) -> Diagnosis {
    let g = Signals::gather(f);
    let mut recommendations = budget_advice(&g);
    let (advice, lower_max_tokens) = max_tokens_advice(f, &g);
    recommendations.extend(advice);
    recommendations.extend(quota_advice(f, &g, lower_max_tokens));
    Diagnosis {
        sending: g.sending,
        peak_rpm: g.peak_rpm,
        peak_tpm: g.peak_tpm,
        reserved: g.reserved,
        charged: g.charged,
        admitted: g.admitted,
        settled: g.settled,
        verdict: verdict(f, &g),
        recommendations,
        lower_max_tokens,
    }
}

/// A budget set above the real quota: set it to what was measured.
fn budget_advice(g: &Signals) -> Vec<String> {
    [("rpm", "an RPM", g.rpm_above), ("tpm", "a TPM", g.tpm_above)]
        .into_iter()
        .filter_map(|(key, name, above)| {
            let (b, l) = above?;
            Some(format!(
                "set budget.{key} = {} (the real quota, as measured; {} was configured), or request {name} increase",
                int((l * 0.98).floor() as u64),
                int(b)
            ))
        })
        .collect()
}

/// Replies cut short (raise max-tokens), or a max-tokens far above the replies (lower it, to the returned value).
fn max_tokens_advice(f: &ReportFacts, g: &Signals) -> (Option<String>, Option<u64>) {
    let s = &f.stats;
    if g.truncated {
        let advice = format!(
            "{} replies ({:.0} %) stopped at max-tokens {}: they are cut short; raise model.max-tokens",
            int(s.at_cap),
            100.0 * s.at_cap as f64 / s.done as f64,
            g.max_tokens.map_or("?".into(), int)
        );
        return (Some(advice), None);
    }
    let Some(m) = g.max_tokens.filter(|_| g.ratio >= 1.5 && s.done > 0) else {
        return (None, None);
    };
    let suggested = round_up((s.output_p95 as f64 * 1.5).max(s.output_max as f64 * 1.2));
    if (suggested as f64) > 0.75 * m as f64 {
        return (None, None);
    }
    let advice = format!(
        "lower model.max-tokens from {} to {} (replies: mean {:.0}, p95 {}, max {} tokens): each request \
         would reserve {} fewer tokens of TPM while it runs",
        int(m),
        int(suggested),
        s.output_mean,
        int(s.output_p95),
        int(s.output_max),
        int(m - suggested)
    );
    (Some(advice), Some(suggested))
}

/// What quota finishes the job in the deadline, or twice as fast as it went.
/// The command that asks Service Quotas for `rpm` and `tpm` for the job in `job_file`.
pub fn request_command(job_file: Option<&str>, rpm: u64, tpm: u64) -> String {
    format!(
        "batchrun quotas request {} --rpm {rpm} --tpm {tpm} --submit",
        job_file.unwrap_or("JOB.toml")
    )
}

fn quota_advice(f: &ReportFacts, g: &Signals, lower_max_tokens: Option<u64>) -> Option<String> {
    let z = f
        .deadline
        .or_else(|| (g.sending.as_secs() >= 2).then(|| g.sending / 2))?;
    if g.settled == 0 || g.admitted == 0 {
        return None;
    }
    let minutes = z.as_secs_f64() / 60.0;
    let r = f.total as f64 / minutes.max(1e-9);
    let charge = g.charged as f64 / g.settled as f64;
    let reservation = g.reserved as f64 / g.admitted as f64;
    let tpm_need = |res: f64| (r * charge.max(g.l_min * res)).ceil() as u64;
    let with_lower = match (lower_max_tokens, g.max_tokens) {
        (Some(new), Some(old))
            if tpm_need(reservation - old as f64 + new as f64) < tpm_need(reservation) =>
        {
            format!(
                " ({} with max-tokens {})",
                int(tpm_need(reservation - old as f64 + new as f64)),
                int(new)
            )
        }
        _ => String::new(),
    };
    let (rpm, tpm) = (r.ceil() as u64, tpm_need(reservation));
    Some(format!(
        "to finish all {} records in {}: request RPM ≥ {} and TPM ≥ {}{}; ask with `{}`",
        int(f.total),
        duration(z),
        int(rpm),
        int(tpm),
        with_lower,
        request_command(f.job_file.as_deref(), rpm, tpm)
    ))
}

/// The cause, in one sentence.
fn verdict(f: &ReportFacts, g: &Signals) -> String {
    // Pressure on each budget at the busiest minute: requests against RPM; for TPM, the tokens charged plus
    // the reservations held in flight (reserved per minute × latency, Little's law), as Bedrock's bucket sees.
    let held = peak(&f.series, 60, |s| s.reserved_tokens) as f64 * g.l_min;
    let rpm_pressure = g.budget_rpm.map(|b| g.peak_rpm as f64 / b as f64);
    let tpm_pressure = g.budget_tpm.map(|b| (g.peak_tpm as f64 + held) / b as f64);
    // Reservations held in flight against charges, per request: above 1, max-tokens is what fills TPM.
    let held_vs_charged = if g.admitted > 0 && g.settled > 0 {
        (g.reserved as f64 / g.admitted as f64) * g.l_min / (g.charged as f64 / g.settled as f64)
    } else {
        0.0
    };
    let throttled = g.throttled();
    let tokens_throttled = g.t_tokens > g.t_rpm;
    let tpm_binding = if throttled > 0 {
        tokens_throttled
    } else {
        tpm_pressure.is_some_and(|p| p >= 0.9 && p >= rpm_pressure.unwrap_or(0.0))
    };
    let max_tokens_cause =
        tpm_binding && !g.truncated && g.max_tokens.is_some() && held_vs_charged >= 1.0;
    if let Some((b, l)) = g.rpm_above.filter(|_| !tokens_throttled) {
        format!(
            "the RPM budget ({}) was set above the real quota (about {} RPM): Bedrock throttled {} times until \
             batchrun measured it; requests, not tokens, ran out",
            int(b),
            int(l.round() as u64),
            int(throttled)
        )
    } else if max_tokens_cause {
        max_tokens_verdict(g, held_vs_charged)
    } else if let Some((b, l)) = g.tpm_above {
        format!(
            "the TPM budget ({}) was set above the real quota (about {} TPM): Bedrock throttled {} times until \
             batchrun measured it",
            int(b),
            int(l.round() as u64),
            int(throttled)
        )
    } else if throttled > 0 {
        let rpm = !tokens_throttled;
        format!(
            "the {} quota is the limit: {} of {} throttles were on it; batchrun held the rate just under it",
            if rpm { "RPM" } else { "TPM" },
            int(if rpm { g.t_rpm } else { g.t_tokens }),
            int(throttled)
        )
    } else if tpm_binding {
        format!(
            "no throttles: the TPM budget ({}) set the pace, and Bedrock never refused it",
            g.budget_tpm.map_or("?".into(), int)
        )
    } else if rpm_pressure.is_some_and(|p| p >= 0.9) {
        format!(
            "no throttles: the RPM budget ({}) set the pace, and Bedrock never refused it",
            g.budget_rpm.map_or("?".into(), int)
        )
    } else if let (Some(tpm), Some(share)) =
        (g.budget_tpm, g.in_flight_share.filter(|u| *u < FREE_SLOTS))
    {
        tpm_room_verdict(g, tpm, share)
    } else {
        "no throttles: neither quota was reached; concurrency and latency set the pace (raise \
         budget.max-concurrency to go faster)"
            .into()
    }
}

/// No throttles, slots free: calls waited for the TPM budget's room, though its per-minute figures stayed low
/// (a short run, or one whose reservations hold the bucket's level rather than its rate).
fn tpm_room_verdict(g: &Signals, tpm: u64, share: f64) -> String {
    let cause = match g.max_tokens {
        Some(m) if !g.truncated && g.ratio >= 2.0 => format!(
            " through what max-tokens reserves: each request held input + max-tokens ({}) of it while it ran \
             ({:.1}× its final charge), so few fit at once",
            int(m),
            g.ratio
        ),
        _ => String::new(),
    };
    format!(
        "no throttles: the TPM budget ({}) set the pace{cause}; calls waited for its room while {:.0} % of the \
         concurrency cap was in use",
        int(tpm),
        share * 100.0
    )
}

// Below this share of the concurrency cap in use, calls were not waiting for a slot.
const FREE_SLOTS: f64 = 0.8;

/// Tokens per minute ran out because of what max-tokens reserved.
fn max_tokens_verdict(g: &Signals, held_vs_charged: f64) -> String {
    let throttled = g.throttled();
    format!(
        "tokens per minute ran out, and max-tokens is why: each request reserved input + max-tokens ({}) \
         while it ran ({:.1}× its final charge), and the reservations held in flight filled the TPM quota \
         {:.1}× faster than the charges did{}",
        g.max_tokens.map_or("?".into(), int),
        g.ratio,
        held_vs_charged,
        if throttled > 0 {
            format!(
                "; {} of {} throttles were on TPM",
                int(g.t_tokens),
                int(throttled)
            )
        } else {
            "; batchrun kept to the TPM budget, so Bedrock did not throttle".into()
        }
    )
}

/// `; cost …` for the tokens line: input, output and the prompt cache at the model table's prices, the tokens a
/// tier with a known price served at that price; empty without a price.
fn cost_text(f: &ReportFacts) -> String {
    f.price
        .as_ref()
        .map_or(String::new(), |(p, currency, as_of)| {
            let at = |q: &Price, input: u64, output: u64| {
                (input as f64 * q.input + output as f64 * q.output) / 1e6
            };
            // Tokens a tier with a known price served are paid at that price.
            let mut total = at(p, f.input_tokens, f.output_tokens);
            let ((read, write), cache_prices) = f.cache;
            total += match cache_prices {
                Some((r, w)) => (read as f64 * r + write as f64 * w) / 1e6,
                // Priced as input when the table has no cache prices.
                None => (read + write) as f64 * p.input / 1e6,
            };
            let mut priced = Vec::new();
            for (x, tier_price) in &f.tiers {
                if let Some(tp) = tier_price.filter(|_| x.tier != "default") {
                    total -= at(p, x.input_tokens, x.output_tokens)
                        - at(&tp, x.input_tokens, x.output_tokens);
                    priced.push(x.tier.as_str());
                }
            }
            let tiers = match priced.is_empty() {
                true => String::new(),
                false => format!(
                    ", {} at {} price",
                    priced.join(" and "),
                    if priced.len() == 1 { "its" } else { "their" }
                ),
            };
            format!(
                "; cost {} (on-demand prices as of {as_of}{tiers})",
                money(total, currency)
            )
        })
}

/// The report as text.
pub fn render(f: &ReportFacts, d: &Diagnosis) -> String {
    let mut t = String::new();
    let last = f.runs.last();
    let state = match last {
        None => "never run".to_string(),
        Some(r) => r
            .outcome
            .clone()
            .unwrap_or_else(|| "running, or killed".into()),
    };
    let _ = writeln!(
        t,
        "report for job `{}`{}: {}",
        f.job,
        last.map_or(String::new(), |r| format!(" (model {})", r.model_id)),
        state
    );
    let _ = writeln!(
        t,
        "  records     {}: {} succeeded, {} failed, {} pending; {} run{}, {} sending",
        int(f.total),
        int(f.succeeded),
        int(f.failed),
        int(f.total.saturating_sub(f.succeeded + f.failed)),
        f.runs.len(),
        if f.runs.len() == 1 { "" } else { "s" },
        duration(d.sending)
    );
    let cost = cost_text(f);
    let _ = writeln!(
        t,
        "  tokens      in {} / out {}{}",
        int(f.input_tokens),
        int(f.output_tokens),
        cost
    );
    cache_line(&mut t, f);
    budget_lines(&mut t, f, d);
    target_lines(&mut t, f);
    tier_lines(&mut t, f);
    failures(&mut t, f);
    let _ = writeln!(t, "\ndiagnosis: {}", d.verdict);
    if !d.recommendations.is_empty() {
        let _ = writeln!(t, "recommendations:");
        for r in &d.recommendations {
            let _ = writeln!(t, "  - {r}");
        }
    }
    t
}

/// A job with several targets: what each answered, its throttles, latency and tokens, and what they cost at the
/// job's model price.
fn target_lines(t: &mut String, f: &ReportFacts) {
    if f.targets.is_empty() {
        return;
    }
    let answered: u64 = f.targets.iter().map(|x| x.answered).sum();
    let _ = writeln!(
        t,
        "  targets     {} (answered, share, throttles, latency median / p99, tokens in / out{})",
        f.targets.len(),
        if f.price.is_some() { ", cost" } else { "" }
    );
    for x in &f.targets {
        let cost = f.price.as_ref().map_or(String::new(), |(p, currency, _)| {
            let amount =
                (x.input_tokens as f64 * p.input + x.output_tokens as f64 * p.output) / 1e6;
            format!(", {}", money(amount, currency))
        });
        let _ = writeln!(
            t,
            "    {:<22} {:>9} {:>4.0} %  {:>5} throttle{}  {} / {}  in {} / out {}{cost}",
            x.name,
            int(x.answered),
            100.0 * x.answered as f64 / answered.max(1) as f64,
            int(x.throttles),
            if x.throttles == 1 { " " } else { "s" },
            duration(Duration::from_millis(x.p50_ms)),
            duration(Duration::from_millis(x.p99_ms)),
            int(x.input_tokens),
            int(x.output_tokens),
        );
    }
}

/// A job that used the prompt cache: the input tokens read from it and written to it, what the quota was charged
/// for (Bedrock gives back the tokens read at settlement), and what the cache saved when its prices are known.
fn cache_line(t: &mut String, f: &ReportFacts) {
    let ((read, write), prices) = f.cache;
    if read == 0 && write == 0 {
        return;
    }
    let charged = f.input_tokens + write;
    let sent = charged + read;
    let saved = match (prices, &f.price) {
        (Some((r, w)), Some((p, currency, _))) => {
            let saved = (read as f64 * (p.input - r) - write as f64 * (w - p.input)) / 1e6;
            format!("; saved {} against no cache", money(saved, currency))
        }
        _ => String::new(),
    };
    let _ = writeln!(
        t,
        "  cache       {} input tokens read from the prompt cache, {} written to it: the quota was charged {} of the \
         {} input tokens sent{saved}",
        int(read),
        int(write),
        int(charged),
        int(sent)
    );
}

/// What each service tier served, what it cost, and what the same tokens cost in the default tier.
fn tier_lines(t: &mut String, f: &ReportFacts) {
    for (x, tier_price) in &f.tiers {
        let price_of =
            |p: &Price| (x.input_tokens as f64 * p.input + x.output_tokens as f64 * p.output) / 1e6;
        let cost = match (tier_price, &f.price) {
            (Some(tp), Some((p, currency, _))) => {
                let (paid, default) = (price_of(tp), price_of(p));
                let (word, by) = if paid <= default {
                    ("saved", default - paid)
                } else {
                    ("cost", paid - default)
                };
                format!(
                    "; cost {} ({word} {} against {})",
                    money(paid, currency),
                    money(by, currency),
                    if x.tier == "batch" {
                        "on demand"
                    } else {
                        "the default tier"
                    }
                )
            }
            (None, Some(_)) if x.tier == "batch" => {
                "; no batch price in the model table (add batch-input and batch-output)".into()
            }
            (None, Some(_)) if x.tier != "default" => {
                format!(
                    "; no {} price in the model table (add {0}-input and {0}-output)",
                    x.tier
                )
            }
            _ => String::new(),
        };
        // A batch job's records have no latency of their own.
        let (label, latency) = match x.tier.as_str() {
            "batch" => ("batch inference".to_string(), String::new()),
            tier => (
                format!("tier {tier:<9}"),
                format!(
                    ", median latency {}",
                    duration(Duration::from_millis(x.p50_ms))
                ),
            ),
        };
        let _ = writeln!(
            t,
            "  {label} {} records{latency}, tokens in {} / out {}{cost}",
            int(x.answered),
            int(x.input_tokens),
            int(x.output_tokens),
        );
    }
}

/// Throughput, budget, throttles, max-tokens and calls: how the quota was used.
fn budget_lines(t: &mut String, f: &ReportFacts, d: &Diagnosis) {
    let last = f.runs.last();
    let _ = writeln!(
        t,
        "  throughput  peak (60 s window): {} requests/min, {} tokens/min charged",
        int(d.peak_rpm),
        int(d.peak_tpm)
    );
    // A value the account gave (Service Quotas) is not one the job file configured.
    let origin = |name: &str| {
        let from = last.and_then(|r| r.budget_from.as_deref()).unwrap_or("");
        if from.split(',').any(|m| m.eq_ignore_ascii_case(name)) {
            "from Service Quotas"
        } else {
            "configured"
        }
    };
    let budget =
        |name: &str, configured: Option<u64>, learned: Option<f64>| match (configured, learned) {
            (Some(b), Some(l)) => format!(
                "{name} {} {}, {} in force at the end",
                int(b),
                origin(name),
                int(l.round() as u64)
            ),
            (Some(b), None) => format!("{name} {} {}", int(b), origin(name)),
            (None, Some(l)) => format!(
                "{name} not set, {} measured from throttles",
                int(l.round() as u64)
            ),
            (None, None) => format!("{name} not set"),
        };
    let _ = writeln!(
        t,
        "  budget      {}; {}; concurrency up to {}",
        budget(
            "RPM",
            last.and_then(|r| r.budget_rpm),
            f.learned.and_then(|l| l.rpm_rate)
        ),
        budget(
            "TPM",
            last.and_then(|r| r.budget_tpm),
            f.learned.and_then(|l| l.tpm_rate)
        ),
        last.map_or(0, |r| r.max_concurrency)
    );
    let (r, tk, td) = f.throttles;
    let _ = writeln!(
        t,
        "  throttles   {}: RPM {}, TPM {}, TPD {}",
        int(r + tk + td),
        int(r),
        int(tk),
        int(td)
    );
    let s = &f.stats;
    let _ = writeln!(
        t,
        "  max-tokens  {}: reserved {} tokens, charged {} ({:.1}×); replies mean {:.0}, p95 {}, max {}, {} at the cap",
        last.and_then(|r| r.max_tokens)
            .map_or("not set".into(), int),
        int(d.reserved),
        int(d.charged),
        d.reserved as f64 / d.charged.max(1) as f64,
        s.output_mean,
        int(s.output_p95),
        int(s.output_max),
        int(s.at_cap)
    );
    let _ = writeln!(
        t,
        "  calls       {:.2} per record sent ({} beyond the first: throttles and transient errors retried); \
         median latency {}",
        s.attempts as f64 / s.sent.max(1) as f64,
        int(s.attempts.saturating_sub(s.sent)),
        duration(Duration::from_millis(s.latency_p50_ms))
    );
    calls_saved(t, s);
}

/// Calls not made: records packed into calls that carry many, answers reused from earlier generations.
fn calls_saved(t: &mut String, s: &OutcomeStats) {
    if s.carried > 0 {
        let _ = writeln!(
            t,
            "  packed      {} records in {} calls ({:.1} a call, up to {}): each call is one request of the RPM quota",
            int(s.carried),
            int(s.carrying_calls),
            s.carried as f64 / s.carrying_calls.max(1) as f64,
            int(s.most_in_call)
        );
    }
    if s.reused > 0 {
        let _ = writeln!(
            t,
            "  reused      {} answers from earlier generations, no call made",
            int(s.reused)
        );
    }
}

/// Failed records, grouped by error code with one example each.
fn failures(t: &mut String, f: &ReportFacts) {
    if f.errors.is_empty() {
        let _ = writeln!(t, "  failed      none");
    } else {
        let _ = writeln!(t, "  failed      by error:");
        for e in &f.errors {
            let mut example = e.example.replace('\n', " ");
            if example.chars().count() > 100 {
                example = example.chars().take(97).collect::<String>() + "…";
            }
            let _ = writeln!(
                t,
                "                {:>6}  {}: {}",
                int(e.count),
                e.code,
                example
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(max_tokens: u64, rpm: Option<u64>, tpm: Option<u64>) -> RunRow {
        RunRow {
            started_at: 1_000,
            ended_at: Some(1_120),
            outcome: Some("finished".into()),
            model_id: "m".into(),
            max_tokens: Some(max_tokens),
            burndown: 1,
            budget_rpm: rpm,
            budget_tpm: tpm,
            max_concurrency: 32,
            pending: 1000,
            budget_from: None,
            waiting_until: None,
            waiting_reason: None,
        }
    }

    fn series(
        n: i64,
        admitted: u64,
        reserved: u64,
        settled: u64,
        t_rpm: u64,
        t_tpm: u64,
    ) -> Vec<Second> {
        (0..n)
            .map(|i| Second {
                at_s: 1_000 + i,
                admitted,
                reserved_tokens: reserved,
                settled_tokens: settled,
                succeeded: admitted,
                throttled_rpm: t_rpm,
                throttled_tpm: t_tpm,
                in_flight: 8,
                rpm_rate: None,
                tpm_rate: None,
                concurrency_cap: 16,
            })
            .collect()
    }

    fn facts() -> ReportFacts {
        ReportFacts {
            job: "j".into(),
            job_file: Some("j.toml".into()),
            runs: vec![run(4096, None, Some(20_000))],
            total: 1000,
            succeeded: 1000,
            failed: 0,
            input_tokens: 100_000,
            output_tokens: 60_000,
            stats: OutcomeStats {
                done: 1000,
                output_mean: 60.0,
                output_p95: 90,
                output_max: 100,
                input_mean: 100.0,
                at_cap: 0,
                attempts: 1100,
                finished: 1000,
                sent: 1000,
                latency_p50_ms: 6000,
                ..OutcomeStats::default()
            },
            throttles: (0, 40, 0),
            series: series(120, 8, 8 * 4196, 8 * 160, 0, 0),
            errors: vec![],
            learned: Some(LearnedRates {
                rpm_rate: None,
                tpm_rate: Some(19_600.0),
                token_ratio: 1.0,
            }),
            price: None,
            deadline: None,
            targets: Vec::new(),
            tiers: Vec::new(),
            cache: ((0, 0), None),
        }
    }

    #[test]
    fn a_large_max_tokens_is_named_as_the_cause() {
        let f = facts();
        let d = diagnose(&f);
        assert!(
            d.verdict
                .starts_with("tokens per minute ran out, and max-tokens is why"),
            "{}",
            d.verdict
        );
        assert_eq!(d.lower_max_tokens, Some(192));
        assert_eq!(d.peak_rpm, 480);
        insta::assert_snapshot!(render(&f, &d), @r"
            report for job `j` (model m): finished
              records     1,000: 1,000 succeeded, 0 failed, 0 pending; 1 run, 2m00s sending
              tokens      in 100,000 / out 60,000
              throughput  peak (60 s window): 480 requests/min, 76,800 tokens/min charged
              budget      RPM not set; TPM 20,000 configured, 19,600 in force at the end; concurrency up to 32
              throttles   40: RPM 0, TPM 40, TPD 0
              max-tokens  4,096: reserved 4,028,160 tokens, charged 153,600 (26.2×); replies mean 60, p95 90, max 100, 0 at the cap
              calls       1.10 per record sent (100 beyond the first: throttles and transient errors retried); median latency 6.0s
              failed      none

            diagnosis: tokens per minute ran out, and max-tokens is why: each request reserved input + max-tokens (4,096) while it ran (26.2× its final charge), and the reservations held in flight filled the TPM quota 2.6× faster than the charges did; 40 of 40 throttles were on TPM
            recommendations:
              - lower model.max-tokens from 4,096 to 192 (replies: mean 60, p95 90, max 100 tokens): each request would reserve 3,904 fewer tokens of TPM while it runs
              - to finish all 1,000 records in 1m00s: request RPM ≥ 1,000 and TPM ≥ 419,600 (160,000 with max-tokens 192); ask with `batchrun quotas request j.toml --rpm 1000 --tpm 419600 --submit`
        ");
    }

    #[test]
    fn free_slots_and_no_throttles_name_the_tpm_budget_not_concurrency() {
        let mut f = facts();
        f.throttles = (0, 0, 0);
        f.learned = None;
        f.stats.latency_p50_ms = 1000;
        // A short run: 3 of 16 slots in use, a request a second, each reserving 4,196 for a charge of 160; the
        // busiest minute's charges and reservations held stay under 0.9 of the budget.
        f.series = series(30, 1, 4196, 160, 0, 0)
            .into_iter()
            .map(|s| Second { in_flight: 3, ..s })
            .collect();
        let d = diagnose(&f);
        assert!(
            d.verdict.starts_with(
                "no throttles: the TPM budget (20,000) set the pace through what max-tokens reserves: each \
                 request held input + max-tokens (4,096)"
            ),
            "{}",
            d.verdict
        );
        assert!(
            d.verdict
                .ends_with("while 19 % of the concurrency cap was in use"),
            "{}",
            d.verdict
        );
        // With the slots full, concurrency is the pace.
        f.series = series(30, 1, 4196, 160, 0, 0)
            .into_iter()
            .map(|s| Second { in_flight: 16, ..s })
            .collect();
        let d = diagnose(&f);
        assert!(
            d.verdict.contains("concurrency and latency set the pace"),
            "{}",
            d.verdict
        );
    }

    #[test]
    fn a_budget_above_the_real_quota_is_named() {
        let mut f = facts();
        f.runs = vec![run(200, Some(2400), None)];
        f.throttles = (6, 0, 0);
        f.series = series(20, 20, 20 * 300, 20 * 130, 0, 0);
        f.learned = Some(LearnedRates {
            rpm_rate: Some(1188.0),
            tpm_rate: None,
            token_ratio: 1.0,
        });
        let d = diagnose(&f);
        assert!(
            d.verdict.starts_with(
                "the RPM budget (2,400) was set above the real quota (about 1,188 RPM)"
            ),
            "{}",
            d.verdict
        );
        assert!(
            d.recommendations[0].starts_with("set budget.rpm = 1,164"),
            "{:?}",
            d.recommendations
        );
    }

    #[test]
    fn replies_cut_short_are_not_told_to_shrink() {
        let mut f = facts();
        f.stats.at_cap = 300;
        let d = diagnose(&f);
        assert_eq!(d.lower_max_tokens, None);
        assert!(
            d.recommendations[0].contains("raise model.max-tokens"),
            "{:?}",
            d.recommendations
        );
    }

    #[test]
    fn no_throttles_names_what_set_the_pace() {
        let mut f = facts();
        f.throttles = (0, 0, 0);
        f.runs = vec![run(200, None, None)];
        assert!(diagnose(&f).verdict.contains("concurrency and latency"));
    }

    #[test]
    fn round_numbers() {
        assert_eq!(round_up(135.0), 192);
        assert_eq!(round_up(1024.0), 1024);
        assert_eq!(round_up(1500.0), 2000);
        assert_eq!(round_up(4097.0), 5000);
    }
}
