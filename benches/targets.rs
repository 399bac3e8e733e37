//! Several targets against one: two emulators stand for two regions, each with a quota of `Q` requests a minute,
//! and `batchrun submit` runs one job over both (and, as the baseline beside it, over one).
//!
//! ```text
//! cargo bench --bench targets -- [--seconds 30]
//! ```
//!
//! Scenarios (the job states `rpm = Q`, which each target takes):
//! - `one-region`: the job with one target, the baseline: goodput against `Q`.
//! - `two-regions`: the job with both: goodput against `2Q`, and calls throttled in both.
//! - `region-halved`: region A's quota halves a third of the way in, which only its throttles tell: the seconds
//!   until the job runs at 90 % of the new `1.5Q` again, and A's throttles after the change.
//! - `region-gone`: region A stops a third of the way in (its port then refuses connections). The job holds as many
//!   records as both regions would answer in two thirds of the run: every record must come out exactly once, none
//!   failed, and the run ends about when region B alone can finish the rest.
//!
//! Goodput counts the records the emulators answered over the whole run, the start included (their buckets start
//! empty at the first request), against what the quotas allow over that time.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use batchrun::emulator::{self, EmulatorConfig, EmulatorHandle, Stats};

mod common;
use serde_json::{Value, json};

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
/// Each region's quota, requests a minute.
const Q: f64 = 600.0;

fn profile(change_at: Option<f64>) -> EmulatorConfig {
    let change = change_at.map_or(String::new(), |at| {
        format!("quota-changes = [{{ at-s = {at}, rpm = {} }}]\n", Q / 2.0)
    });
    let text = format!(
        "seed = 1\n[models.\"*\"]\nrpm = {Q}\ninitial-fill = 0.0\noutput-tokens = {{ min = 20, max = 60 }}\n\
         latency = {{ first-token-ms = 200, per-token-ms = 2, jitter = 0.2 }}\n{change}"
    );
    EmulatorConfig::from_toml(&text, Path::new("targets.toml")).expect("bench profile")
}

async fn region(change_at: Option<f64>) -> EmulatorHandle {
    emulator::start(profile(change_at), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A job folder: `records` records, the job over `urls` (one target each).
fn job_folder(records: usize, urls: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..records)
        .map(|i| format!("{{\"id\":\"r{i:06}\",\"prompt\":\"Say something short about {i}.\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("in.jsonl"), lines).unwrap();
    let regions = ["us-east-1", "us-west-2"];
    let targets: String = urls
        .iter()
        .zip(regions)
        .map(|(url, region)| format!("[[target]]\nregion = \"{region}\"\nurl = \"{url}\"\n"))
        .collect();
    let job = format!(
        "[job]\nname = \"bench\"\n[model]\nid = \"{MODEL}\"\nmax-tokens = 100\n[input]\npath = \"in.jsonl\"\n\
         format = \"jsonl\"\n[budget]\nrpm = {Q}\n[output]\npath = \"out\"\nrecords-per-part = 5000\n\
         [endpoint]\ntimeout-secs = 30\n{targets}"
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    dir
}

/// Answered and throttled calls of the model, from second `from` to before second `to` of an emulator's clock.
fn between(stats: &Stats, from: u64, to: u64) -> (u64, u64) {
    stats.models.get(MODEL).map_or((0, 0), |m| {
        m.series
            .iter()
            .filter(|s| s.second >= from && s.second < to)
            .fold((0, 0), |(ok, thr), s| {
                (ok + s.counts.succeeded, thr + s.counts.throttled_rpm)
            })
    })
}

fn throttled_pct(all: &[&Stats]) -> f64 {
    let (mut requests, mut throttled) = (0, 0);
    for s in all {
        if let Some(m) = s.models.get(MODEL) {
            requests += m.totals.requests;
            throttled += m.totals.throttled_rpm;
        }
    }
    (1000.0 * throttled as f64 / requests.max(1) as f64).round() / 10.0
}

/// One scenario: `regions` targets (1 or 2), region A's quota halved a third of the way in or not, for `seconds`.
async fn scenario(name: &str, regions: usize, halved: bool, seconds: f64) -> Value {
    let third = (seconds / 3.0).round();
    let a = region(halved.then_some(third)).await;
    let b = region(None).await;
    let urls: Vec<String> = [&a, &b]
        .iter()
        .take(regions)
        .map(|e| e.endpoint())
        .collect();
    // Enough records to keep every region busy to the deadline.
    let records = (regions as f64 * Q / 60.0 * seconds * 2.0) as usize;
    let dir = job_folder(records, &urls);
    let (code, log) = common::submit(dir.path(), Duration::from_secs_f64(seconds)).await;
    let (sa, sb) = (a.stats(), b.stats());
    let to = seconds as u64;
    let ok_a = between(&sa, 0, to).0;
    let ok_b = if regions == 2 {
        between(&sb, 0, to).0
    } else {
        0
    };
    let limit = |t: u64| match (regions, halved) {
        (1, _) => Q,
        (_, true) if t as f64 >= third => 1.5 * Q,
        _ => 2.0 * Q,
    };
    // What the quotas allowed, second by second, over the run.
    let allowed: f64 = (0..to).map(|t| limit(t) / 60.0).sum();
    let stats = if regions == 2 {
        vec![&sa, &sb]
    } else {
        vec![&sa]
    };
    let mut row = json!({
        "scenario": name,
        "exit": code,
        "limit_rpm": limit(0),
        "answered": ok_a + ok_b,
        "answered_by_region": [ok_a, ok_b],
        "goodput_ratio": ((ok_a + ok_b) as f64 / allowed * 1000.0).round() / 1000.0,
        "throttled_pct": throttled_pct(&stats),
    });
    if halved {
        let at = third as u64;
        let target = 0.9 * 1.5 * Q / 60.0 * 5.0;
        let back = (at + 5..=to)
            .find(|&t| (between(&sa, t - 5, t).0 + between(&sb, t - 5, t).0) as f64 >= target)
            .map(|t| t - at);
        row["change_at_s"] = json!(at);
        row["secs_to_90pct_of_new"] = json!(back);
        row["throttled_in_a_after_change"] = json!(between(&sa, at, to).1);
    }
    if code != Some(130) && code != Some(0) {
        eprintln!("{name}: batchrun exited {code:?}:\n{log}");
    }
    row
}

/// Region A stops a third of the way into a job both regions would finish in two thirds of `seconds`.
async fn region_gone(seconds: f64) -> Value {
    let third = (seconds / 3.0).round();
    let (a, b) = (region(None).await, region(None).await);
    let records = (2.0 * Q / 60.0 * seconds * 2.0 / 3.0) as usize;
    let dir = job_folder(records, &[a.endpoint(), b.endpoint()]);
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let run =
        tokio::spawn(
            async move { common::submit(&path, Duration::from_secs_f64(seconds * 3.0)).await },
        );
    tokio::time::sleep(Duration::from_secs_f64(third)).await;
    let sa = a.stats();
    a.shutdown().await;
    let (code, log) = run.await.unwrap();
    let wall = started.elapsed().as_secs_f64();
    let answered_a = sa.models.get(MODEL).map_or(0, |m| m.totals.succeeded);
    // From the stop on, region B alone: what was left at its quota.
    let expected =
        third + (records as f64 - answered_a as f64 - third * Q / 60.0).max(0.0) / (Q / 60.0);
    let (lines, distinct, failed) = output(dir.path());
    if code != Some(0) {
        eprintln!("region-gone: batchrun exited {code:?}:\n{log}");
    }
    json!({
        "scenario": "region-gone",
        "exit": code,
        "records": records,
        "output_lines": lines,
        "distinct_ids": distinct,
        "failed_records": failed,
        "answered_by_region": [answered_a, b.stats().models.get(MODEL).map_or(0, |m| m.totals.succeeded)],
        "wall_s": (wall * 10.0).round() / 10.0,
        "expected_wall_s": (expected * 10.0).round() / 10.0,
        "stopped_at_s": third,
    })
}

/// Output lines, distinct record ids among them, and failed records.
fn output(dir: &Path) -> (usize, usize, usize) {
    let mut ids = BTreeSet::new();
    let (mut lines, mut failed) = (0, 0);
    let Ok(parts) = std::fs::read_dir(dir.join("out")) else {
        return (0, 0, 0);
    };
    for part in parts
        .flatten()
        .filter(|p| p.file_name().to_string_lossy().starts_with("part-"))
    {
        for line in std::fs::read_to_string(part.path()).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            lines += 1;
            failed += usize::from(v.get("error").is_some());
            ids.insert(v["recordId"].as_str().unwrap_or_default().to_string());
        }
    }
    (lines, ids.len(), failed)
}

fn main() {
    let mut seconds = 30.0;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--seconds" {
            seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (name, regions, halved) in [
            ("one-region", 1, false),
            ("two-regions", 2, false),
            ("region-halved", 2, true),
        ] {
            println!("{}", scenario(name, regions, halved, seconds).await);
        }
        println!("{}", region_gone(seconds).await);
    });
}
