//! Stopping a run and resuming it: Ctrl-C drains, kill -9 loses nothing, faults are retried. In every case each
//! input record appears exactly once in the output, with the reply the emulator derives from its prompt.

use std::time::Duration;

use batchrun::emulator::{OutputLength, text};

use crate::common::job::{TestJob, output_text};
use crate::common::{emulator, signal};

const LEN: OutputLength = OutputLength { min: 5, max: 12 };

fn records(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\": \"rec-{i:03}\", \"prompt\": \"Record number {i}\"}}\n"))
        .collect()
}

fn job_body(concurrency: u32) -> String {
    format!(
        "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [budget]\nmax-concurrency = {concurrency}\n[retry]\nbase-delay-ms = 20\nmax-delay-ms = 300\nmax-attempts = 12\n\
         [output]\npath = \"out\"\nrecords-per-part = 20\n"
    )
}

/// Every record exactly once, with its own reply; no temporary file left visible.
fn assert_complete(t: &TestJob, n: usize) {
    let out = t.output_by_id("out");
    assert_eq!(out.len(), n, "records in the output");
    for i in 0..n {
        let line = &out[&format!("rec-{i:03}")];
        let expected = text::reply(&format!("Record number {i}\n"), LEN, 20).text;
        assert_eq!(output_text(line), expected, "rec-{i:03}");
    }
}

/// Parts on disk now: each complete (whole lines, 20 records, none twice).
fn assert_parts_whole(t: &TestJob) -> usize {
    let lines = t.output_lines("out");
    assert_eq!(
        lines.len() % 20,
        0,
        "a visible part holds fewer than 20 records"
    );
    lines.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_calls_in_flight_and_a_resume_finishes() {
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\nlatency = { first-token-ms = 400 }\n",
    )
    .await;
    let t = TestJob::new();
    t.write("in.jsonl", records(120))
        .job(&job_body(6), &emu.endpoint());

    let child = t.spawn_submit();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, "INT");
    let run = crate::common::job::Run::from(child.wait_with_output().await.unwrap());
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("resume with `batchrun submit job.toml`"),
        "{}",
        run.stderr
    );

    let (done, pending) = t.done_in_state().await;
    assert!(
        done > 0 && pending > 0,
        "interrupted mid-run: {done} done, {pending} pending"
    );
    // Drained: every call the emulator answered was recorded, none was abandoned.
    let answered = emu.stats().models["m"].totals.succeeded;
    assert_eq!(answered, done, "calls answered vs records done");
    assert!(assert_parts_whole(&t) as u64 <= done);

    let resumed = t.submit(&[]).await;
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_complete(&t, 120);
    // Nothing was sent twice: one successful call per record over both runs.
    assert_eq!(emu.stats().models["m"].totals.succeeded, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_nothing_and_duplicates_nothing() {
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\nlatency = { first-token-ms = 150, jitter = 0.5 }\n",
    )
    .await;
    let t = TestJob::new();
    t.write("in.jsonl", records(200))
        .job(&job_body(8), &emu.endpoint());

    let mut kills = 0;
    for delay_ms in [900, 1300, 1100] {
        let mut child = t.spawn_submit();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        kills += 1;
        assert_parts_whole(&t);
    }
    assert!(kills >= 2, "the run finished too fast to be killed");
    let (done, _) = t.done_in_state().await;
    assert!(done > 0, "no progress was checkpointed before the kills");

    let resumed = t.submit(&[]).await;
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_complete(&t, 200);
    let leftovers: Vec<_> = std::fs::read_dir(t.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_of_faults_is_retried_until_every_record_succeeds() {
    let emu = emulator(
        "seed = 3\n[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n\
         faults = { service-unavailable = 0.04, internal = 0.04, model-timeout = 0.03, model-not-ready = 0.02, \
         connection-reset = 0.04, hang = 0.02, hang-ms = 3000 }\n",
    )
    .await;
    let t = TestJob::new();
    t.write("in.jsonl", records(100))
        .job_with_timeout(&job_body(8), &emu.endpoint(), 0.5);
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_complete(&t, 100);
    let stats = emu.stats();
    let m = &stats.models["m"];
    assert!(
        m.totals.faults >= 5,
        "the fault mix barely ran: {:?}",
        m.faults_by_kind
    );
    assert!(
        run.stderr.contains("100 succeeded, 0 failed"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_abandons_calls_in_flight_and_they_stay_pending() {
    // Replies take 3 s: a second Ctrl-C right after the first must not wait for them.
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\nlatency = { first-token-ms = 3000 }\n",
    )
    .await;
    let t = TestJob::new();
    t.write("in.jsonl", records(8))
        .job(&job_body(4), &emu.endpoint());

    let child = t.spawn_submit();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = std::time::Instant::now();
    for _ in 0..2 {
        signal(&child, "INT");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let run = crate::common::job::Run::from(child.wait_with_output().await.unwrap());
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited for the calls: {:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("stopping now"), "{}", run.stderr);
    assert_eq!(
        t.done_in_state().await,
        (0, 8),
        "abandoned calls stay pending"
    );
    assert!(t.output_lines("out").is_empty());

    let resumed = t.submit(&[]).await;
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_complete(&t, 8);
}
