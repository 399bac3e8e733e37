//! Bedrock batch inference through the built binary: records staged on a real S3-compatible server on loopback,
//! batch jobs created, polled and collected through the real `aws-sdk-bedrock` against the emulator's control
//! plane, which reads the staged records from that server and writes its results back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use batchrun::emulator::{EmulatorHandle, OutputLength, text};
use serde_json::Value;

use crate::common::emulator;
use crate::common::job::{TestJob, output_text};
use crate::common::s3::{ACCESS_KEY, S3Server, SECRET_KEY, s3_server};

const LEN: OutputLength = OutputLength { min: 5, max: 12 };

/// An emulator whose batch jobs use `s3`, answering `rate` records a second, with `[batch]` extras.
async fn batch_emulator(s3: &S3Server, rate: f64, extra: &str) -> EmulatorHandle {
    emulator(&format!(
        "[models.\"*\"]\noutput-tokens = {{ min = 5, max = 12 }}\ncontext-window = 100000\n\
         [batch]\nrecords-per-second = {rate}\nstart-delay-s = 0.05\ns3-endpoint = \"{}\"\n\
         s3-access-key-id = \"{ACCESS_KEY}\"\ns3-secret-access-key = \"{SECRET_KEY}\"\n{extra}",
        s3.endpoint
    ))
    .await
}

/// A job of `n` JSONL records in `t`, with `[job]` extras and `[batch]` extras, staged in bucket `stage`.
fn batch_job(
    t: &TestJob,
    emu: &EmulatorHandle,
    s3: &S3Server,
    n: usize,
    job_extra: &str,
    batch_extra: &str,
) {
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&format!(
            "{{\"id\": \"q{i:05}\", \"prompt\": \"Question {i}?\"}}\n"
        ));
    }
    t.write("in.jsonl", lines);
    t.s3_endpoint(&s3.endpoint).write(
        "job.toml",
        format!(
            "[job]\nname = \"test\"\n{job_extra}\n[model]\nid = \"m\"\nmax-tokens = 30\n\
             [input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\nrecords-per-part = 400\n\
             [endpoint]\nurl = \"{}\"\ntimeout-secs = 5\n\
             [batch]\nrole-arn = \"arn:aws:iam::123456789012:role/batch\"\nstaging = \"s3://stage/runs/\"\n\
             poll-secs = 0.1\npoll-max-secs = 0.3\n{batch_extra}\n",
            emu.endpoint()
        ),
    );
}

/// Every record `0..n` is in the output once, answered as the runtime answers its prompt.
fn assert_every_record_once(t: &TestJob, n: usize) -> BTreeMap<String, Value> {
    let out = t.output_by_id("out");
    assert_eq!(out.len(), n, "records in the output");
    for i in [0, n / 2, n - 1] {
        let line = &out[&format!("q{i:05}")];
        assert_eq!(
            output_text(line),
            text::reply(&format!("Question {i}?\n"), LEN, 30).text,
            "{line}"
        );
    }
    out
}

fn runtime_calls(emu: &EmulatorHandle) -> u64 {
    emu.stats().models.values().map(|m| m.totals.requests).sum()
}

/// A control-plane client for the emulator, as batchrun builds one.
async fn control(emu: &EmulatorHandle) -> aws_sdk_bedrock::Client {
    let sdk = batchrun::invoke::sdk_config(Some("us-east-1"), Some(&emu.endpoint()), true).await;
    aws_sdk_bedrock::Client::new(&sdk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_job_goes_in_several_batch_jobs_and_every_record_comes_back_once() {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(&s3, 20_000.0, "max-jobs-in-flight = 2\n").await;
    let t = TestJob::new();
    // 2,500 records, at most 1,000 a batch job: three of 834 (the last 832), two in flight at once.
    batch_job(
        &t,
        &emu,
        &s3,
        2500,
        "mode = \"batch\"",
        "records-per-job = 1000\nmax-jobs-in-flight = 2",
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("batch: 2500 records in 3 batch jobs"),
        "{}",
        run.stderr
    );
    assert_every_record_once(&t, 2500);
    let stats = emu.stats().batch;
    assert_eq!(
        (stats.create_calls, stats.jobs_created),
        (3, 3),
        "{stats:?}"
    );
    assert_eq!(stats.records_succeeded, 2500);
    // Not one on-demand call.
    assert_eq!(runtime_calls(&emu), 0);
    // Three staged inputs, each with its results and manifest beside it.
    let keys = s3.keys("stage", "runs/").await;
    assert_eq!(
        keys.iter().filter(|k| k.ends_with("records.jsonl")).count(),
        3,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.ends_with("records.jsonl.out"))
            .count(),
        3,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.ends_with("manifest.json.out"))
            .count(),
        3,
        "{keys:?}"
    );
    // The checkpoint knows every batch job, ended and read.
    let status = t.command(&["status", "test"]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.matches("Completed").count(), 3, "{status}");
    // Run again: finished, nothing sent or created.
    let again = t.submit(&[]).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("already finished"),
        "{}",
        again.stderr
    );
    assert_eq!(emu.stats().batch.create_calls, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_batch_failed_or_left_out_are_sent_on_demand() {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(
        &s3,
        20_000.0,
        "failure-share = 0.08\nmissing-share = 0.04\n",
    )
    .await;
    let t = TestJob::new();
    batch_job(&t, &emu, &s3, 600, "mode = \"batch\"", "");
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let b = emu.stats().batch;
    let unanswered = b.records_failed + b.records_missing;
    assert!(b.records_failed > 0 && b.records_missing > 0, "{b:?}");
    assert_eq!(b.records_succeeded + unanswered, 600);
    // Exactly the unanswered ones were called on demand, and each record is in the output once.
    assert_eq!(runtime_calls(&emu), unanswered, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("{unanswered} records left to send on demand")),
        "{}",
        run.stderr
    );
    assert_every_record_once(&t, 600);
    // The report prices what batch inference answered at the batch price, the rest at the on-demand one.
    t.write("models.toml", PRICES)
        .env("BATCHRUN_MODELS", Some("models.toml"));
    let out = t.command(&["report", "job.toml"]).output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("batch inference"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        line.contains(&format!(" {} records, tokens in ", b.records_succeeded)),
        "{line}"
    );
    assert!(
        line.contains("saved") && line.contains("against on demand"),
        "{line}"
    );
    // Half price: what was saved equals what was paid.
    let amounts = crate::common::dollar_amounts(line);
    assert_eq!(amounts.len(), 2, "{line}");
    assert_eq!(amounts[0], amounts[1], "{line}");
    assert!(report.contains("batch at its price"), "{report}");
}

/// Prices for model `m`, batch at half of on demand.
const PRICES: &str =
    "[models.\"m\"]\ninput = 1.0\noutput = 4.0\nbatch-input = 0.5\nbatch-output = 2.0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_compares_batch_with_on_demand_and_says_which_way_submit_goes() {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(&s3, 20_000.0, "").await;
    let t = TestJob::new();
    batch_job(
        &t,
        &emu,
        &s3,
        1200,
        "mode = \"auto\"",
        "records-per-job = 500\nmin-records = 200\ntimeout-hours = 48",
    );
    t.write("models.toml", PRICES)
        .env("BATCHRUN_MODELS", Some("models.toml"));
    let out = t.command(&["plan", "job.toml"]).output().await.unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{plan}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = plan
        .lines()
        .find(|l| l.starts_with("batch inference"))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(line.contains("50 % of it"), "{line}");
    assert!(
        line.contains("1,200 records in 3 jobs of at most 500"),
        "{line}"
    );
    assert!(line.contains("up to 48 h to finish"), "{line}");
    assert!(
        plan.contains("submit sends     mode auto: batch inference — 1200 records (at least 200) and no deadline"),
        "{plan}"
    );
    // plan sends nothing.
    assert_eq!(emu.stats().batch.create_calls, 0);
    assert_eq!(runtime_calls(&emu), 0);
}

/// A job of 1,000 records in two batch jobs of 500, one at a time, at `rate` records a second, whose run is
/// killed once Bedrock made the first batch job and then left as a kill between CreateModelInvocationJob's
/// answer and the noting of its ARN leaves it: the shard being created, with its token and no ARN.
async fn killed_before_the_arn_was_noted(rate: f64) -> (S3Server, EmulatorHandle, TestJob) {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(&s3, rate, "").await;
    let t = TestJob::new();
    batch_job(
        &t,
        &emu,
        &s3,
        1000,
        "mode = \"batch\"",
        "records-per-job = 500\nmax-jobs-in-flight = 1",
    );
    let mut child = t.spawn_submit();
    until_created(&emu, 1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        t.path().join(".batchrun/state.db").display()
    ))
    .await
    .unwrap();
    let forgotten = sqlx::query(
        "UPDATE batch_jobs SET arn = NULL, status = 'Creating' WHERE job = 'test' AND shard = 1",
    )
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(forgotten.rows_affected(), 1);
    db.close().await;
    (s3, emu, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_create_and_noting_the_arn_the_same_token_gets_the_same_batch_job() {
    let (_s3, emu, t) = killed_before_the_arn_was_noted(500.0).await;
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let b = emu.stats().batch;
    assert_eq!((b.jobs_created, b.idempotent_creates), (2, 1), "{b:?}");
    assert_eq!(b.records_succeeded, 1000, "{b:?}");
    assert_every_record_once(&t, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_record_error_fail_the_unanswered_records_fail_with_the_batch_error() {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(
        &s3,
        20_000.0,
        "failure-share = 0.05\nmissing-share = 0.05\n",
    )
    .await;
    let t = TestJob::new();
    batch_job(
        &t,
        &emu,
        &s3,
        400,
        "mode = \"batch\"",
        "on-record-error = \"fail\"",
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let b = emu.stats().batch;
    assert_eq!(runtime_calls(&emu), 0);
    let out = t.output_by_id("out");
    assert_eq!(out.len(), 400);
    let failed: Vec<&Value> = out.values().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(failed.len() as u64, b.records_failed + b.records_missing);
    let codes: std::collections::BTreeSet<&str> = failed
        .iter()
        .map(|l| l["error"]["errorCode"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        codes,
        ["BatchRecordError", "BatchRecordMissing"]
            .into_iter()
            .collect(),
        "{failed:?}"
    );
}

/// Waits until the emulator has made `n` batch jobs, for at most 20 s.
async fn until_created(emu: &EmulatorHandle, n: u64) {
    let start = Instant::now();
    while emu.stats().batch.jobs_created < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no batch job {n} in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_creating_a_batch_job_a_resumed_run_reattaches_and_makes_no_duplicate() {
    let s3 = s3_server(&["stage"]).await;
    // 1,500 records in three batch jobs of 500, one at a time, each taking about a second.
    let emu = batch_emulator(&s3, 500.0, "").await;
    let t = TestJob::new();
    batch_job(
        &t,
        &emu,
        &s3,
        1500,
        "mode = \"batch\"",
        "records-per-job = 500\nmax-jobs-in-flight = 1",
    );
    let mut child = t.spawn_submit();
    until_created(&emu, 1).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // A --fresh start now would lose the running batch job's results: refused.
    let fresh = t.submit(&["--fresh"]).await;
    assert_eq!(fresh.code, Some(2), "{}", fresh.stderr);
    assert!(
        fresh.stderr.contains("1 batch job running at Bedrock"),
        "{}",
        fresh.stderr
    );
    assert!(
        fresh.stderr.contains("batchrun cancel job.toml"),
        "{}",
        fresh.stderr
    );
    // The first batch job goes on at Bedrock without the process.
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_every_record_once(&t, 1500);
    let b = emu.stats().batch;
    assert_eq!(
        b.jobs_created, 3,
        "one batch job a shard, none made twice: {b:?}"
    );
    assert_eq!(b.records_succeeded, 1500, "{b:?}");
    assert_eq!(runtime_calls(&emu), 0);
    // Every create that repeated a token got the job that token made.
    assert_eq!(b.create_calls, 3 + b.idempotent_creates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_batch_jobs_running_and_cancel_stops_them() {
    let s3 = s3_server(&["stage"]).await;
    // Slow: 600 records at 50 a second.
    let emu = batch_emulator(&s3, 50.0, "").await;
    let t = TestJob::new();
    batch_job(
        &t,
        &emu,
        &s3,
        600,
        "mode = \"batch\"",
        "records-per-job = 300",
    );
    let child = t.spawn_submit();
    until_created(&emu, 2).await;
    crate::common::signal(&child, "INT");
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("2 batch jobs are still running at Bedrock"),
        "{stderr}"
    );
    assert!(stderr.contains("batchrun cancel job.toml"), "{stderr}");
    // Still running after the process is gone.
    let bedrock = control(&emu).await;
    let listed = bedrock.list_model_invocation_jobs().send().await.unwrap();
    let statuses: Vec<String> = listed
        .invocation_job_summaries()
        .iter()
        .map(|j| j.status().map_or("?".into(), |s| s.as_str().to_string()))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s == "InProgress" || s == "Validating" || s == "Submitted"),
        "{statuses:?}"
    );
    let cancel = t.command(&["cancel", "job.toml"]).output().await.unwrap();
    let said = String::from_utf8_lossy(&cancel.stderr);
    assert_eq!(cancel.status.code(), Some(0), "{said}");
    assert_eq!(said.matches("stopping").count(), 2, "{said}");
    assert_eq!(emu.stats().batch.stop_calls, 2);
    // The next run collects what the stopped jobs answered and sends the rest on demand.
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("Stopped"), "{}", run.stderr);
    let b = emu.stats().batch;
    assert!(b.records_succeeded < 600, "{b:?}");
    assert_eq!(runtime_calls(&emu), 600 - b.records_succeeded);
    assert_every_record_once(&t, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_chooses_batch_for_a_large_job_without_a_deadline() {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(&s3, 20_000.0, "").await;
    let t = TestJob::new();
    batch_job(&t, &emu, &s3, 300, "mode = \"auto\"", "");
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("mode auto: batch inference — 300 records (at least 100) and no deadline"),
        "{}",
        run.stderr
    );
    assert_eq!(emu.stats().batch.jobs_created, 1);
    assert_eq!(runtime_calls(&emu), 0);
    assert_every_record_once(&t, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_chooses_on_demand_for_a_small_job_or_a_short_deadline() {
    let s3 = s3_server(&["stage"]).await;
    let emu = batch_emulator(&s3, 20_000.0, "").await;
    let small = TestJob::new();
    batch_job(&small, &emu, &s3, 60, "mode = \"auto\"", "");
    let run = small.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("mode auto: on demand — 60 records are fewer than a batch job takes"),
        "{}",
        run.stderr
    );
    assert_every_record_once(&small, 60);
    let hurried = TestJob::new();
    batch_job(
        &hurried,
        &emu,
        &s3,
        300,
        "mode = \"auto\"\ndeadline-hours = 6",
        "",
    );
    let run = hurried.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("mode auto: on demand — the deadline (6 h) is shorter than the 24 h"),
        "{}",
        run.stderr
    );
    assert_every_record_once(&hurried, 300);
    assert_eq!(emu.stats().batch.create_calls, 0);
    assert_eq!(runtime_calls(&emu), 360);
    // The command line overrides the job file: the same job in batch.
    let forced = TestJob::new();
    batch_job(&forced, &emu, &s3, 300, "mode = \"on-demand\"", "");
    let run = forced.submit(&["--mode", "batch"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(emu.stats().batch.jobs_created, 1);
    assert_eq!(runtime_calls(&emu), 360);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_finds_by_name_a_batch_job_whose_arn_was_not_noted() {
    let (_s3, emu, t) = killed_before_the_arn_was_noted(100.0).await;
    let cancel = t.command(&["cancel", "job.toml"]).output().await.unwrap();
    let said = String::from_utf8_lossy(&cancel.stderr);
    assert_eq!(cancel.status.code(), Some(0), "{said}");
    assert!(
        said.contains("job 1: arn:aws:bedrock:") && said.contains("stopping"),
        "{said}"
    );
    assert!(
        said.contains("job 2: not created; given up (500 records go on demand"),
        "{said}"
    );
    let b = emu.stats().batch;
    assert_eq!((b.list_calls, b.stop_calls), (1, 1), "{b:?}");
    // Nothing runs at Bedrock now: the next run reads what job 1 answered and sends the rest on demand.
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let b = emu.stats().batch;
    assert_eq!(b.jobs_created, 1, "{b:?}");
    assert_eq!(runtime_calls(&emu), 1000 - b.records_succeeded);
    assert_every_record_once(&t, 1000);
}
