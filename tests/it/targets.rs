//! Jobs with several targets, through the built binary: emulators on loopback stand for regions, each with a quota
//! of its own.

use std::collections::BTreeMap;

use batchrun::emulator::EmulatorHandle;

use crate::common::emulator;
use crate::common::job::TestJob;

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// A region's emulator: `rpm` requests a minute for every model, or only for `other-model` when `has_model` is
/// false (the job's model is then unknown there, as a model not enabled in a region is).
async fn region(rpm: u32, has_model: bool) -> EmulatorHandle {
    let model = if has_model { "*" } else { "other-model" };
    emulator(&format!(
        "[models.\"{model}\"]\nrpm = {rpm}\noutput-tokens = {{ min = 2, max = 4 }}\n\
         latency = {{ first-token-ms = 20 }}\n"
    ))
    .await
}

/// A job of `n` records served by the named targets, each `(name, region, url)`.
fn job(n: usize, targets: &[(&str, &str, &str)]) -> TestJob {
    let t = TestJob::new();
    let lines: String = (0..n)
        .map(|i| format!("{{\"recordId\":\"r{i:03}\",\"prompt\":\"Say r{i}.\"}}\n"))
        .collect();
    let tables: String = targets
        .iter()
        .map(|(name, region, url)| {
            format!("[[target]]\nname = \"{name}\"\nregion = \"{region}\"\nurl = \"{url}\"\n")
        })
        .collect();
    t.write("in.jsonl", lines).job(
        &format!(
            "[model]\nid = \"{HAIKU}\"\nmax-tokens = 100\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [budget]\nrpm = 600\n[output]\npath = \"out\"\n{tables}"
        ),
        // The job's own endpoint is never called: every target names its own.
        "http://127.0.0.1:9",
    );
    t
}

/// Each record's line, once, by id; and how many lines each target answered.
fn by_target(t: &TestJob) -> (usize, BTreeMap<String, u64>) {
    let lines = t.output_lines("out");
    let ids: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), lines.len(), "a record written twice");
    let mut counts = BTreeMap::new();
    for l in &lines {
        assert!(l.get("modelOutput").is_some(), "not answered: {l}");
        let target = l["target"].as_str().unwrap_or("(none)").to_string();
        *counts.entry(target).or_insert(0) += 1;
    }
    (lines.len(), counts)
}

fn succeeded(emu: &EmulatorHandle) -> u64 {
    emu.stats()
        .models
        .get(HAIKU)
        .map_or(0, |m| m.totals.succeeded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_share_the_records_and_each_line_names_the_one_that_answered() {
    let (east, west) = (region(600, true).await, region(600, true).await);
    let t = job(
        60,
        &[
            ("east", "us-east-1", &east.endpoint()),
            ("west", "us-west-2", &west.endpoint()),
        ],
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (n, counts) = by_target(&t);
    assert_eq!(n, 60);
    // What each line says answered it is what each region's emulator counted.
    assert_eq!(
        counts.get("east").copied(),
        Some(succeeded(&east)),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("west").copied(),
        Some(succeeded(&west)),
        "{counts:?}"
    );
    assert!(
        succeeded(&east) > 0 && succeeded(&west) > 0,
        "one region did everything: {counts:?}"
    );
    // The report breaks the job down by target: what each answered, as each region counted it.
    let out = t.command(&["report", "job.toml"]).output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("  targets     2 (answered, share, throttles"),
        "{report}"
    );
    for (name, emu) in [("east", &east), ("west", &west)] {
        let row = report
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {report}"));
        let answered: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(answered, succeeded(emu), "{row}");
        let throttled = emu.stats().models[HAIKU].totals.throttled_rpm;
        assert!(
            row.contains(&format!(" {throttled} throttle")),
            "{throttled} throttled by {name}: {row}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_refuses_connections_rests_and_the_job_finishes_on_the_other() {
    let up = region(600, true).await;
    // A port nobody listens on: connection refused.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let t = job(
        30,
        &[
            ("gone", "us-west-2", &gone),
            ("up", "us-east-1", &up.endpoint()),
        ],
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: target gone failed 3 calls in a row (ConnectionError:"),
        "{}",
        run.stderr
    );
    let (n, counts) = by_target(&t);
    assert_eq!((n, counts.get("up").copied()), (30, Some(30)), "{counts:?}");
    assert_eq!(succeeded(&up), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_without_the_model_is_dropped_and_the_job_goes_on() {
    let (east, west) = (region(600, true).await, region(600, false).await);
    let t = job(
        30,
        &[
            ("west", "us-west-2", &west.endpoint()),
            ("east", "us-east-1", &east.endpoint()),
        ],
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: target west is dropped for this run (ResourceNotFoundException: ")
            && run.stderr.contains("the job goes on with east"),
        "{}",
        run.stderr
    );
    let (n, counts) = by_target(&t);
    assert_eq!(
        (n, counts.get("east").copied()),
        (30, Some(30)),
        "{counts:?}"
    );
    // One call found the model missing; none after it went there.
    let west_calls = west
        .stats()
        .models
        .values()
        .map(|m| m.totals.rejected)
        .sum::<u64>()
        + west
            .stats()
            .models
            .get(HAIKU)
            .map_or(0, |m| m.totals.requests);
    assert!(west_calls <= 2, "{west_calls} calls to a dropped target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_target_is_dropped_the_run_stops_resumably_and_a_fixed_job_finishes() {
    let (a, b) = (region(600, false).await, region(600, false).await);
    let t = job(
        20,
        &[
            ("a", "us-east-1", &a.endpoint()),
            ("b", "us-west-2", &b.endpoint()),
        ],
    );
    let run = t.submit(&[]).await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("ResourceNotFoundException"),
        "{}",
        run.stderr
    );
    // The message names the target whose error stopped the run: the last one in use, either.
    assert!(
        ["a", "b"].iter().any(|n| run
            .stderr
            .contains(&format!("model {HAIKU} (target {n}) answered"))),
        "{}",
        run.stderr
    );
    assert_eq!(
        t.done_in_state().await,
        (0, 20),
        "nothing done, all pending"
    );
    // The model is enabled in one region: the same job resumes and finishes there.
    let fixed = region(600, true).await;
    let t2 = std::fs::read_to_string(t.path().join("job.toml"))
        .unwrap()
        .replace(&b.endpoint(), &fixed.endpoint());
    t.write("job.toml", t2);
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (n, counts) = by_target(&t);
    assert_eq!((n, counts.get("b").copied()), (20, Some(20)), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_what_each_region_allows_and_what_they_allow_together() {
    let (east, west) = (region(300, true).await, region(120, true).await);
    let t = job(
        50,
        &[
            ("east", "us-east-1", &east.endpoint()),
            ("west", "us-west-2", &west.endpoint()),
        ],
    );
    // No budget in the job: each region's quota comes from its own Service Quotas.
    let text = std::fs::read_to_string(t.path().join("job.toml"))
        .unwrap()
        .replace("[budget]\nrpm = 600\n", "");
    t.write("job.toml", text);
    let out = t.command(&["plan", "job.toml"]).output().await.unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{plan}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        plan.contains("target east: RPM 300 from Service Quotas"),
        "{plan}"
    );
    assert!(
        plan.contains("target west: RPM 120 from Service Quotas"),
        "{plan}"
    );
    let row = |name: &str| {
        plan.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}: {plan}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        row("east").contains("RPM 300 TPM not set 300 RPM-bound"),
        "{plan}"
    );
    assert!(
        row("west").contains("RPM 120 TPM not set 120 RPM-bound"),
        "{plan}"
    );
    assert!(
        plan.contains("→ together: 420 requests/min, mostly RPM-bound"),
        "{plan}"
    );
    // 50 records at 420 a minute.
    assert!(
        plan.contains("expected time    7.1s at 420 requests/min"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_that_denies_access_is_dropped_and_the_job_goes_on() {
    let east = region(600, true).await;
    let denied =
        emulator("[models.\"*\"]\naccess-denied = true\noutput-tokens = { min = 2, max = 4 }\n")
            .await;
    let t = job(
        20,
        &[
            ("denied", "eu-west-1", &denied.endpoint()),
            ("east", "us-east-1", &east.endpoint()),
        ],
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("warning: target denied is dropped for this run (AccessDeniedException: "),
        "{}",
        run.stderr
    );
    let (n, counts) = by_target(&t);
    assert_eq!(
        (n, counts.get("east").copied()),
        (20, Some(20)),
        "{counts:?}"
    );
}
