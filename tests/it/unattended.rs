//! Running unattended: one process per job (a second submit exits 75 or waits; a dead holder's lock is taken
//! over), input and output kept apart, a `--fresh` that survives being stopped, readers that never write, and a
//! state database private to its user.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use batchrun::checkpoint::{Holder, Store};
use batchrun::emulator::{EmulatorHandle, OutputLength, text};

use crate::common::job::{Run, TestJob, output_text};
use crate::common::s3::s3_server;
use crate::common::{emulator, signal};

const LEN: OutputLength = OutputLength { min: 5, max: 12 };

/// Replies take about 200 ms, so a run of a few hundred records lasts a few seconds.
const SLOW: &str = "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n\
                    latency = { first-token-ms = 200, per-token-ms = 0, jitter = 0 }\n";

fn records(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\": \"rec-{i:03}\", \"prompt\": \"Record number {i}\"}}\n"))
        .collect()
}

fn job_body(out: &str, per_part: u32) -> String {
    format!(
        "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [budget]\nmax-concurrency = 16\n[output]\npath = \"{out}\"\nrecords-per-part = {per_part}\n"
    )
}

fn requests(emu: &EmulatorHandle) -> u64 {
    emu.stats().models.values().map(|m| m.totals.requests).sum()
}

/// Every record exactly once in `out`, with its own reply.
fn assert_complete(t: &TestJob, n: usize) {
    let out = t.output_by_id("out");
    assert_eq!(out.len(), n, "records in the output");
    for i in 0..n {
        let expected = text::reply(&format!("Record number {i}\n"), LEN, 20).text;
        assert_eq!(output_text(&out[&format!("rec-{i:03}")]), expected);
    }
}

/// Waits until some process holds the lock of job `test`, and returns it.
async fn lock_holder(t: &TestJob) -> Holder {
    let db = t.path().join(".batchrun/state.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(store) = Store::open_read_only(&db).await {
            let holder = store.lock_holder("test").await.unwrap();
            store.close().await;
            if let Some(h) = holder {
                return h;
            }
        }
        assert!(Instant::now() < deadline, "nobody took the job's lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finish(child: tokio::process::Child) -> Run {
    Run::from(child.wait_with_output().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_submit_of_a_running_job_exits_75_or_waits_and_nothing_is_sent_twice() {
    let emu = emulator(SLOW).await;
    let t = TestJob::new();
    t.write("in.jsonl", records(400))
        .job(&job_body("out", 100), &emu.endpoint());
    let first = t.spawn_submit();
    let pid = first.id().unwrap();
    let holder = lock_holder(&t).await;
    assert_eq!(holder.pid, pid);

    // A second submit while the first runs: exit 75 at once, naming the holder and what to do.
    let second = t.submit(&[]).await;
    assert_eq!(second.code, Some(75), "{}", second.stderr);
    assert!(
        second.stderr.contains("job `test` is already running")
            && second.stderr.contains(&format!("process {pid} on host"))
            && second.stderr.contains("--wait"),
        "{}",
        second.stderr
    );
    // `status` names who runs it.
    let status = t.command(&["status", "job.toml"]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("running") && status.contains(&format!("run by    process {pid} on host")),
        "{status}"
    );

    // A third with --wait waits for the first, then finds the job finished and sends nothing.
    let third = t
        .command(&["submit", "job.toml", "--progress", "off", "--wait"])
        .spawn()
        .unwrap();
    let first = finish(first).await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let third = finish(third).await;
    assert_eq!(third.code, Some(0), "{}", third.stderr);
    assert!(
        third.stderr.contains("waiting for it to end") && third.stderr.contains("already finished"),
        "{}",
        third.stderr
    );
    assert_complete(&t, 400);
    assert_eq!(requests(&emu), 400, "calls at the emulator for 400 records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_submits_started_together_on_a_new_database_run_the_job_once() {
    let emu = emulator(SLOW).await;
    let t = TestJob::new();
    // About 4 s of work: the second is at the lock long before the first could finish.
    t.write("in.jsonl", records(300))
        .job(&job_body("out", 50), &emu.endpoint());
    // Both create the state database and its schema at the same moment.
    let a = t.spawn_submit();
    let b = t.spawn_submit();
    let (a, b) = (finish(a).await, finish(b).await);
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(75)],
        "first:\n{}\nsecond:\n{}",
        a.stderr,
        b.stderr
    );
    assert_complete(&t, 300);
    assert_eq!(requests(&emu), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_of_a_killed_run_is_taken_over() {
    let emu = emulator(SLOW).await;
    let t = TestJob::new();
    t.write("in.jsonl", records(200))
        .job(&job_body("out", 50), &emu.endpoint());
    let mut first = t.spawn_submit();
    let pid = lock_holder(&t).await.pid;
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let status = t.command(&["status", "job.toml"]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("killed") && !status.contains("run by"),
        "{status}"
    );

    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("job `test` was locked by process {pid} on host"))
            && run.stderr.contains("no longer running; taking over"),
        "{}",
        run.stderr
    );
    assert_complete(&t, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_inside_the_input_folder_is_refused_before_anything_starts() {
    let emu = emulator(SLOW).await;
    let t = TestJob::new();
    t.write("docs/a.md", "Alpha.").write("docs/b.md", "Beta.");
    for out in ["docs", "docs/out", "."] {
        t.job(
            &format!(
                "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"docs\"\nformat = \"documents\"\n\
                 template = \"{{{{ text }}}}\"\n[output]\npath = \"{out}\"\n"
            ),
            &emu.endpoint(),
        );
        let run = t.submit(&[]).await;
        assert_eq!(run.code, Some(2), "{out}: {}", run.stderr);
        assert!(
            run.stderr.contains("output.path") && run.stderr.contains("input.path = \"docs\""),
            "{}",
            run.stderr
        );
    }
    assert_eq!(requests(&emu), 0);
    assert!(!t.path().join(".batchrun").exists());
    assert!(!t.path().join("docs/out").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_that_fails_midway_is_finished_by_the_next_run() {
    let emu = emulator("[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n").await;
    let s3 = s3_server(&["results"]).await;
    let t = TestJob::new();
    let body = |n: u32| {
        format!(
            "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
             [output]\npath = \"s3://results/run/\"\nrecords-per-part = {n}\n"
        )
    };
    t.s3_endpoint(&s3.endpoint);
    t.write("in.jsonl", records(6))
        .job(&body(1), &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        s3.keys("results", "run/").await.len(),
        7,
        "6 parts and the manifest"
    );

    // New settings need --fresh; the bucket refuses deletes, so the fresh start fails midway.
    t.job(&body(2), &emu.endpoint());
    s3.deny_deletes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let run = t.submit(&["--fresh"]).await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("AccessDenied") || run.stderr.contains("access denied"),
        "{}",
        run.stderr
    );

    // With deletes allowed again, a plain submit (no --fresh) finishes the fresh start: only the new parts.
    s3.deny_deletes
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("finishing a fresh start that was interrupted"),
        "{}",
        run.stderr
    );
    let mut keys = s3.keys("results", "run/").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "run/manifest.json",
            "run/part-00001.jsonl",
            "run/part-00002.jsonl",
            "run/part-00003.jsonl"
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&s3.get("results", "run/manifest.json").await).unwrap();
    assert_eq!(manifest["parts"].as_array().unwrap().len(), 3);
    assert_eq!(manifest["totalRecordCount"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_migrate_or_write_and_the_database_is_private() {
    let emu = emulator("[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n").await;
    let t = TestJob::new();
    t.write("in.jsonl", records(5))
        .job(&job_body("out", 10), &emu.endpoint());
    let db = t.path().join(".batchrun/state.db");

    // A database an older batchrun wrote (schema up to migration 4).
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    sqlx::migrate::Migrator::new(migrations.as_path())
        .await
        .unwrap()
        .run_to(4, &pool)
        .await
        .unwrap();
    pool.close().await;
    let before = std::fs::read(&db).unwrap();

    // status and report refuse it, say how to upgrade it, and leave it as it was.
    for args in [["status", "job.toml"], ["report", "job.toml"]] {
        let out = t.command(&args).output().await.unwrap();
        let run = Run::from(out);
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("has schema version 4; this batchrun reads version")
                && run.stderr.contains("brings it up to date"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "a reader changed the database"
    );

    // submit upgrades it and runs; the readers then work.
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.command(&["status", "job.toml"]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A database from a newer batchrun is refused by readers and writers alike.
    let pool =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db))
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    for args in [
        vec!["status", "job.toml"],
        vec!["submit", "job.toml", "--progress", "off"],
    ] {
        let run = Run::from(t.command(&args).output().await.unwrap());
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(
            run.stderr
                .contains("was written by a newer batchrun (schema version 9999"),
            "{}",
            run.stderr
        );
    }

    // A new state database and its folder are the user's alone.
    let t = TestJob::new();
    t.write("in.jsonl", records(2))
        .job(&job_body("out", 10), &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&t.path().join(".batchrun")), 0o700);
    assert_eq!(mode(&t.path().join(".batchrun/state.db")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_like_ctrl_c_and_closed_pipes_end_quietly() {
    let emu = emulator(SLOW).await;
    let t = TestJob::new();
    t.write("in.jsonl", records(200))
        .job(&job_body("out", 50), &emu.endpoint());

    // SIGHUP (the terminal or session went away): stop sending, drain, exit 130, resumable.
    let child = t.spawn_submit();
    lock_holder(&t).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(&child, "HUP");
    let run = finish(child).await;
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("stopping: no new calls"),
        "{}",
        run.stderr
    );
    let status = t.command(&["status", "job.toml"]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("interrupted"), "{status}");

    // `status | head -1`: the reader is gone before status writes; status ends quietly with 0.
    let mut child = t
        .command(&["status", "job.toml"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A run started with standard error closed (`2>&-`) finishes the job instead of panicking.
    let bin = env!("CARGO_BIN_EXE_batchrun");
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec '{bin}' submit job.toml --progress lines 2>&-"
        ))
        .current_dir(t.path())
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", t.path().join(".aws/config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            t.path().join(".aws/credentials"),
        )
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env_remove("AWS_PROFILE")
        .output()
        .await
        .unwrap();
    assert_eq!(run.status.code(), Some(0));
    assert_complete(&t, 200);
}

/// A tmpfs of `size` mounted on `dir` (the tests run as root), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_output_disk_stops_sending_and_the_resume_finishes_exactly_once() {
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\n\
         latency = { first-token-ms = 40, per-token-ms = 0, jitter = 0 }\n",
    )
    .await;
    let t = TestJob::new();
    // Each output line carries its 4 KB prompt: ten records make a part of about 45 KB.
    let filler = "lorem ipsum ".repeat(340);
    let lines: String = (0..300)
        .map(|i| {
            format!("{{\"id\": \"rec-{i:03}\", \"prompt\": \"Record number {i} {filler}\"}}\n")
        })
        .collect();
    t.write("in.jsonl", lines)
        .job(&job_body("out", 10), &emu.endpoint());
    let disk = Tmpfs::mount(&t.path().join("out"), "200k");

    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(70), "{}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device")
            && run.stderr.contains("the output disk is full"),
        "{}",
        run.stderr
    );
    let sent = requests(&emu);
    assert!(
        sent < 150,
        "{sent} of 300 records were sent after the disk filled"
    );
    let leftovers: Vec<_> = std::fs::read_dir(t.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Space freed: the resume sends only what was never answered and publishes every record once.
    disk.resize("16m");
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.len(), 300);
    assert_eq!(requests(&emu), 300, "calls over both runs");
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_is_the_error_reported_and_the_resume_finishes_exactly_once() {
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 200, max = 400 }\n\
         latency = { first-token-ms = 20, per-token-ms = 0, jitter = 0 }\n",
    )
    .await;
    let t = TestJob::new();
    let filler = "lorem ipsum ".repeat(100);
    let lines: String = (0..400)
        .map(|i| format!("{{\"id\": \"rec-{i:03}\", \"prompt\": \"Record {i} {filler}\"}}\n"))
        .collect();
    t.write("in.jsonl", lines).job(
        "[model]\nid = \"m\"\nmax-tokens = 500\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    // Room for the records and a few outcomes, not for all of them.
    let disk = Tmpfs::mount(&t.path().join("state"), "2500k");
    let run = t.submit(&["--state", "state/state.db"]).await;
    assert_eq!(run.code, Some(70), "{}", run.stderr);
    let error = run
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("error:"))
        .collect::<Vec<_>>();
    // The ingest stores records while the first outcomes come in, so the write that meets the full disk is
    // the outcomes' or, on a loaded machine where the ingest falls behind, the last records': either is the
    // full state disk, reported as such.
    assert!(
        error.first().is_some_and(|l| {
            l.contains("failed to commit outcomes") || l.contains("failed to commit records")
        }) && run.stderr.contains("database or disk is full")
            && run
                .stderr
                .contains("the disk holding the state database is full"),
        "{}",
        run.stderr
    );
    let status = t
        .command(&["status", "job.toml", "--state", "state/state.db"])
        .output()
        .await
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(!status.contains("running"), "{status}");

    disk.resize("32m");
    let run = t.submit(&["--state", "state/state.db"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(t.output_by_id("out").len(), 400);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_read_safely_through_the_binary() {
    let emu = emulator(
        "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\nembedding-dimensions = 4\n",
    )
    .await;

    // A documents folder with two links back to itself, a self-link, and a link to a secret outside it.
    let t = TestJob::new();
    t.write("docs/a.md", "Alpha.")
        .write("docs/sub/b.md", "Beta.")
        .write("secret.txt", "aws_secret_access_key = do-not-send");
    for (target, link) in [
        (".", "docs/loop1"),
        (".", "docs/sub/loop2"),
        ("self", "docs/self"),
    ] {
        std::os::unix::fs::symlink(target, t.path().join(link)).unwrap();
    }
    std::os::unix::fs::symlink(t.path().join("secret.txt"), t.path().join("docs/creds.md"))
        .unwrap();
    t.job(
        "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"docs\"\nformat = \"documents\"\n\
         template = \"{{ text }}\"\n[output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("skipped 1 symbolic link(s) that lead outside the input folder")
            && run.stderr.contains("follow-links-outside"),
        "{}",
        run.stderr
    );
    let out = t.output_by_id("out");
    assert_eq!(out.keys().collect::<Vec<_>>(), ["a.md", "sub/b.md"]);
    assert_eq!(requests(&emu), 2);

    // JSONL with a byte-order mark and a line over Bedrock's request limit between two good ones.
    let t = TestJob::new();
    let mut jsonl = b"\xEF\xBB\xBF{\"id\": \"first\", \"prompt\": \"One.\"}\n".to_vec();
    jsonl.extend_from_slice(
        format!(
            "{{\"id\": \"huge\", \"prompt\": \"{}\"}}\n",
            "word ".repeat(5_200_000)
        )
        .as_bytes(),
    );
    jsonl.extend_from_slice(b"{\"id\": \"last\", \"prompt\": \"Two.\"}\n");
    t.write("in.jsonl", jsonl)
        .job(&job_body("out", 10), &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("in.jsonl:2: the line is 26000028 bytes, larger than the largest request"),
        "{}",
        run.stderr
    );
    let out = t.output_by_id("out");
    assert!(out["first"]["modelOutput"].is_object() && out["last"]["modelOutput"].is_object());
    assert_eq!(out["in.jsonl:2"]["error"]["errorCode"], "InvalidInput");

    // A document that tries to add fields to the body template's JSON.
    let t = TestJob::new();
    t.write("docs/x.txt", r#"hello", "dimensions": 1024, "normalize": false, "x": ""#)
        .job(
            "[model]\nid = \"amazon.titan-embed-text-v2:0\"\napi = \"invoke\"\n\
             [input]\npath = \"docs\"\nformat = \"documents\"\nbody-template = '{\"dimensions\": 256, \"inputText\": \"{{ text }}\"}'\n\
             [output]\npath = \"out\"\n",
            &emu.endpoint(),
        );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    let input = &out["x.txt"]["modelInput"];
    assert_eq!(input.as_object().unwrap().len(), 2, "{input}");
    assert_eq!(input["dimensions"], 256);
    assert_eq!(
        out["x.txt"]["modelOutput"]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        256
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_jobs_in_one_state_database_run_side_by_side() {
    let emu = emulator(SLOW).await;
    let t = TestJob::new();
    t.write("in.jsonl", records(60));
    for name in ["one", "two"] {
        t.write(
            &format!("{name}.toml"),
            format!(
                "[job]\nname = \"{name}\"\n{}[endpoint]\nurl = \"{}\"\n",
                job_body(&format!("out-{name}"), 20),
                emu.endpoint()
            ),
        );
    }
    let spawn = |file: &str| {
        t.command(&["submit", file, "--state", "shared.db", "--progress", "off"])
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn("one.toml"), spawn("two.toml"));
    let (one, two) = (finish(one).await, finish(two).await);
    assert_eq!(
        (one.code, two.code),
        (Some(0), Some(0)),
        "{}\n{}",
        one.stderr,
        two.stderr
    );
    assert_eq!(requests(&emu), 120);
}
