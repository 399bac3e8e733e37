//! End-of-run and progress text, from pure functions so they can be tested as text.

use std::time::Duration;

use super::Snapshot;
use super::format::{compact, duration};
use crate::budget::Usage;

/// What the budget is doing: per minute used against the rate in force (and that rate against the configured
/// budget when it is lower), requests in flight against the cap, throttles by quota.
pub fn budget_text(l: &Usage) -> String {
    let quota = |name: &str, used: f64, rate: Option<f64>, budget: Option<f64>| match (rate, budget)
    {
        (Some(r), Some(b)) if r < 0.995 * b => format!(
            "{name} {}/{} (×{:.2} of budget {})",
            compact(used),
            compact(r),
            r / b,
            compact(b)
        ),
        (Some(r), _) => format!("{name} {}/{}", compact(used), compact(r)),
        (None, _) => format!("{name} {}", compact(used)),
    };
    format!(
        "{}, {}, in flight {}/{}, throttled {} RPM / {} TPM",
        quota("RPM", l.rpm_used, l.rpm_rate, l.rpm_budget),
        quota("TPM", l.tpm_used, l.tpm_rate, l.tpm_budget),
        l.in_flight,
        l.concurrency_cap,
        l.throttled_rpm,
        l.throttled_tpm
    )
}

/// One progress line, for logs: counts, rate, ETA, and what the budget is doing.
pub fn status_line(s: &Snapshot, elapsed: Duration, live: &Usage) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = s.finished() as f64 / secs;
    let left = s.planned.saturating_sub(s.finished());
    let eta = if rate > 0.0 {
        duration(Duration::from_secs_f64(left as f64 / rate))
    } else {
        "?".to_string()
    };
    let line = format!(
        "progress: {}/{} records ({} failed), {:.1} records/s, eta {}; {}; {} retried",
        s.finished(),
        s.planned,
        s.failed,
        rate,
        eta,
        budget_text(live),
        s.transient
    );
    match s.daily_wait_until {
        0 => line,
        at => format!("{line}; {}", super::status::daily_wait(at as i64)),
    }
}

/// The bar's message: what the bar itself does not show.
pub fn bar_message(s: &Snapshot, elapsed: Duration, live: &Usage) -> String {
    let rate = s.finished() as f64 / elapsed.as_secs_f64().max(1e-9);
    let line = format!("{rate:.1}/s, {} failed; {}", s.failed, budget_text(live));
    match s.daily_wait_until {
        0 => line,
        at => format!("{line}; {}", super::status::daily_wait(at as i64)),
    }
}

/// The summary after a run that finished every record.
pub fn finished(s: &Snapshot, elapsed: Duration, total_done: u64, total_failed: u64) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!(
        "finished: {} records this run in {} ({:.1} records/s): {} succeeded, {} failed; {} throttled calls and {} \
         transient errors retried; tokens in {} / out {}\njob total: {} succeeded, {} failed",
        s.finished(),
        duration(elapsed),
        s.finished() as f64 / secs,
        s.succeeded,
        s.failed,
        s.throttled,
        s.transient,
        s.input_tokens,
        s.output_tokens,
        total_done,
        total_failed,
    )
}

/// The message after an interruption; `all_read` says whether every input was read.
pub fn interrupted(done: u64, pending: u64, all_read: bool, job_file: &str) -> String {
    let unread = if all_read {
        ""
    } else {
        " (and the inputs not read yet)"
    };
    format!(
        "interrupted: {done} done, {pending} pending{unread} — resume with `batchrun submit {job_file}`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let s = Snapshot {
            planned: 100,
            succeeded: 40,
            failed: 2,
            throttled: 7,
            transient: 1,
            in_flight: 4,
            input_tokens: 1000,
            output_tokens: 2000,
            daily_wait_until: 0,
        };
        let live = Usage {
            rpm_used: 1188.0,
            tpm_used: 152_300.0,
            rpm_rate: Some(1176.0),
            rpm_budget: Some(2400.0),
            tpm_rate: None,
            tpm_budget: None,
            concurrency_cap: 16,
            in_flight: 4,
            throttled_rpm: 6,
            throttled_tpm: 1,
        };
        assert_eq!(
            status_line(&s, Duration::from_secs(6), &live),
            "progress: 42/100 records (2 failed), 7.0 records/s, eta 8.3s; RPM 1.2k/1.2k (×0.49 of budget 2.4k), \
             TPM 152k, in flight 4/16, throttled 6 RPM / 1 TPM; 1 retried"
        );
        let waiting = Snapshot {
            daily_wait_until: 1_795_000_000,
            ..s
        };
        assert!(
            status_line(&waiting, Duration::from_secs(6), &live)
                .ends_with("; waiting for the daily token quota: no calls until the next try at 2026-11-18 11:06:40 UTC")
        );
        assert_eq!(
            bar_message(&s, Duration::from_secs(6), &live),
            "7.0/s, 2 failed; RPM 1.2k/1.2k (×0.49 of budget 2.4k), TPM 152k, in flight 4/16, throttled 6 RPM / 1 TPM"
        );
        assert_eq!(duration(Duration::from_secs(184)), "3m04s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
        insta::assert_snapshot!(finished(&s, Duration::from_secs(10), 90, 3), @r"
        finished: 42 records this run in 10.0s (4.2 records/s): 40 succeeded, 2 failed; 7 throttled calls and 1 transient errors retried; tokens in 1000 / out 2000
        job total: 90 succeeded, 3 failed
        ");
        assert_eq!(
            interrupted(5, 7, true, "jobs/demo.toml"),
            "interrupted: 5 done, 7 pending — resume with `batchrun submit jobs/demo.toml`"
        );
        assert_eq!(
            interrupted(5, 0, false, "j.toml"),
            "interrupted: 5 done, 0 pending (and the inputs not read yet) — resume with `batchrun submit j.toml`"
        );
    }
}
