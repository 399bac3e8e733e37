//! `batchrun status`: every job of a state database, or one in detail, as text or JSON. Pure functions over
//! [`JobStatus`], which [`crate::inspect::state`] reads from the checkpoint.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::format::duration;
use super::format::int;

/// A failed record, for the last errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// Its id.
    pub record_id: String,
    /// The error code.
    pub code: String,
    /// The message.
    pub message: String,
}

/// One job's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// `new` (nothing sent yet), `running`, `interrupted`, `stopped` (by an error) or `finished`.
    pub state: String,
    /// The model of the last run.
    pub model_id: Option<String>,
    /// Records in the job.
    pub total: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Without an outcome.
    pub pending: u64,
    /// Input tokens Bedrock counted.
    pub input_tokens: u64,
    /// Output tokens Bedrock counted.
    pub output_tokens: u64,
    /// Records per minute: over the last minute while running, else over the last run.
    pub records_per_minute: Option<f64>,
    /// Seconds to finish at that rate (pending records only).
    pub eta_seconds: Option<f64>,
    /// Runs so far.
    pub runs: u64,
    /// When the last run started (Unix seconds).
    pub last_run_started: Option<i64>,
    /// How long it ran (to now if it is running).
    pub last_run_seconds: Option<u64>,
    /// How it ended: `finished`, `interrupted`, `stopped: …`; `None` while running or if it was killed.
    pub last_run_outcome: Option<String>,
    /// The most recent failed records, newest first.
    pub last_errors: Vec<LastError>,
    /// The process running the job now (`process 1234 on host h (since …)`), if one is.
    pub run_by: Option<String>,
    /// While the running job waits for the daily token quota: its next try (Unix seconds) and Bedrock's
    /// message.
    pub daily_wait: Option<DailyWait>,
    /// The job's Bedrock batch jobs, as last read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batch_jobs: Vec<BatchJobStatus>,
}

/// One of a job's Bedrock batch jobs, as the run last read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchJobStatus {
    /// Its number in the job.
    pub shard: u64,
    /// Its ARN, once created.
    pub arn: Option<String>,
    /// `Staged`, then Bedrock's status.
    pub status: String,
    /// Bedrock's message.
    pub message: Option<String>,
    /// Records it holds.
    pub records: u64,
    /// Processed, answered and failed, as last read.
    pub processed: u64,
    /// Answered.
    pub succeeded: u64,
    /// Failed.
    pub errored: u64,
    /// Its results were read into the job.
    pub collected: bool,
    /// When it was last read (Unix seconds).
    pub updated_at: i64,
}

/// The batch jobs' lines of `render_one`.
fn batch_jobs(t: &mut String, jobs: &[BatchJobStatus]) {
    if jobs.is_empty() {
        return;
    }
    let read = jobs.iter().filter(|j| j.collected).count();
    let _ = writeln!(
        t,
        "  batch     {} Bedrock batch job{}, {} read back",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" },
        read
    );
    for j in jobs {
        let _ = writeln!(
            t,
            "    job {:<3} {:<18} {} records: {} processed, {} answered, {} failed{}  {}{}",
            j.shard,
            j.status,
            int(j.records),
            int(j.processed),
            int(j.succeeded),
            int(j.errored),
            if j.collected { " (read)" } else { "" },
            j.arn.as_deref().unwrap_or("(not created yet)"),
            j.message
                .as_deref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        t,
        "    as of {}",
        utc(jobs.iter().map(|j| j.updated_at).max().unwrap_or(0))
    );
}

/// A running job waiting for the daily token quota.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyWait {
    /// When the next try goes, Unix seconds.
    pub next_try: i64,
    /// Bedrock's message.
    pub message: String,
}

/// What a run waiting for the daily token quota is doing.
pub fn daily_wait(next_try: i64) -> String {
    format!(
        "waiting for the daily token quota: no calls until the next try at {}",
        utc(next_try)
    )
}

/// `2026-11-26 01:02:03 UTC` from Unix seconds (no time zone database needed).
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn eta(s: &JobStatus) -> String {
    match (s.pending, s.eta_seconds) {
        (0, _) => "-".into(),
        // The rate of the last minute says nothing while no call goes.
        _ if s.daily_wait.is_some() => "? (waiting for the daily quota)".into(),
        (_, Some(e)) => duration(Duration::from_secs_f64(e)),
        (_, None) => "?".into(),
    }
}

fn rate(s: &JobStatus) -> String {
    s.records_per_minute
        .map_or("-".into(), |r| int(r.round() as u64))
}

/// A table of every job.
pub fn render_all(jobs: &[JobStatus]) -> String {
    if jobs.is_empty() {
        return "no jobs in this state database\n".into();
    }
    let width = jobs.iter().map(|j| j.job.len()).max().unwrap_or(3).max(3);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<width$}  {:<11}  {:>9}  {:>7}  {:>8}  {:>9}  {:>21}  {:>8}  {:>7}",
        "JOB",
        "STATE",
        "SUCCEEDED",
        "FAILED",
        "PENDING",
        "TOTAL",
        "TOKENS IN / OUT",
        "REC/MIN",
        "ETA"
    );
    for s in jobs {
        let _ = writeln!(
            t,
            "{:<width$}  {:<11}  {:>9}  {:>7}  {:>8}  {:>9}  {:>21}  {:>8}  {:>7}",
            s.job,
            s.state,
            int(s.succeeded),
            int(s.failed),
            int(s.pending),
            int(s.total),
            format!("{} / {}", int(s.input_tokens), int(s.output_tokens)),
            rate(s),
            eta(s)
        );
    }
    for s in jobs.iter().filter(|s| !s.last_errors.is_empty()) {
        let _ = writeln!(t, "\nlast errors of `{}`:", s.job);
        errors(&mut t, s);
    }
    t
}

fn errors(t: &mut String, s: &JobStatus) {
    for e in &s.last_errors {
        let mut message = e.message.replace('\n', " ");
        if message.chars().count() > 120 {
            message = message.chars().take(117).collect::<String>() + "…";
        }
        let _ = writeln!(t, "  {}: {}: {}", e.record_id, e.code, message);
    }
}

/// One job in detail.
pub fn render_one(s: &JobStatus) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "job `{}`: {}{}",
        s.job,
        s.state,
        s.model_id
            .as_deref()
            .map_or(String::new(), |m| format!(" (model {m})"))
    );
    if let Some(who) = &s.run_by {
        let _ = writeln!(t, "  run by    {who}");
    }
    if let Some(DailyWait { next_try, message }) = &s.daily_wait {
        let _ = writeln!(t, "  paused    {} ({message})", daily_wait(*next_try));
    }
    let _ = writeln!(
        t,
        "  records   {} total: {} succeeded, {} failed, {} pending",
        int(s.total),
        int(s.succeeded),
        int(s.failed),
        int(s.pending)
    );
    let _ = writeln!(
        t,
        "  tokens    in {} / out {}",
        int(s.input_tokens),
        int(s.output_tokens)
    );
    let _ = writeln!(
        t,
        "  rate      {} records/min{}; eta {}",
        rate(s),
        if s.state == "running" {
            " over the last minute"
        } else {
            " in the last run"
        },
        eta(s)
    );
    match s.last_run_started {
        Some(started) => {
            let _ = writeln!(
                t,
                "  last run  {} of {}: started {}, ran {}, {}",
                s.runs,
                s.runs,
                utc(started),
                duration(Duration::from_secs(s.last_run_seconds.unwrap_or(0))),
                s.last_run_outcome
                    .as_deref()
                    .unwrap_or(if s.state == "running" {
                        "still running"
                    } else {
                        "ended without a word (killed?)"
                    })
            );
        }
        None => {
            let _ = writeln!(t, "  last run  none yet");
        }
    }
    batch_jobs(&mut t, &s.batch_jobs);
    if s.last_errors.is_empty() {
        let _ = writeln!(t, "  errors    none");
    } else {
        let _ = writeln!(t, "  last errors:");
        errors(&mut t, s);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> JobStatus {
        JobStatus {
            job: "nightly-rag".into(),
            state: "running".into(),
            model_id: Some("us.anthropic.claude-3-5-haiku-20241022-v1:0".into()),
            total: 12_000,
            succeeded: 7_950,
            failed: 50,
            pending: 4_000,
            input_tokens: 9_500_000,
            output_tokens: 1_200_000,
            records_per_minute: Some(400.0),
            eta_seconds: Some(600.0),
            runs: 2,
            last_run_started: Some(1_795_000_000),
            last_run_seconds: Some(1_230),
            last_run_outcome: None,
            last_errors: vec![LastError {
                record_id: "docs/a.md".into(),
                code: "ValidationException".into(),
                message: "Input is too long for requested model.".into(),
            }],
            run_by: Some("process 4242 on host worker-1 (since 2026-11-18 11:06:40 UTC)".into()),
            daily_wait: None,
            batch_jobs: Vec::new(),
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn texts() {
        let s = status();
        insta::assert_snapshot!(render_one(&s), @r"
            job `nightly-rag`: running (model us.anthropic.claude-3-5-haiku-20241022-v1:0)
              run by    process 4242 on host worker-1 (since 2026-11-18 11:06:40 UTC)
              records   12,000 total: 7,950 succeeded, 50 failed, 4,000 pending
              tokens    in 9,500,000 / out 1,200,000
              rate      400 records/min over the last minute; eta 10m00s
              last run  2 of 2: started 2026-11-18 11:06:40 UTC, ran 20m30s, still running
              last errors:
              docs/a.md: ValidationException: Input is too long for requested model.
        ");
        let done = JobStatus {
            job: "demo".into(),
            state: "finished".into(),
            pending: 0,
            last_errors: vec![],
            ..s.clone()
        };
        insta::assert_snapshot!(render_all(&[s, done]), @r"
        JOB          STATE        SUCCEEDED   FAILED   PENDING      TOTAL        TOKENS IN / OUT   REC/MIN      ETA
        nightly-rag  running          7,950       50     4,000     12,000  9,500,000 / 1,200,000       400   10m00s
        demo         finished         7,950       50         0     12,000  9,500,000 / 1,200,000       400        -

        last errors of `nightly-rag`:
          docs/a.md: ValidationException: Input is too long for requested model.
        ");
    }
}
