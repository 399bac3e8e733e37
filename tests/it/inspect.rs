//! `batchrun plan`, `status` and `report` through the built binary: plan makes no model call (and `--exact`
//! only CountTokens), status reads a state database as text and JSON, report names the cause of a slow run, and
//! its HTML page is well-formed XML with its charts.

use serde_json::Value;

use crate::common::emulator;
use crate::common::job::{Run, TestJob};

/// Replies of about 60 tokens from a model that takes 3 s, on an account with 30,000 tokens per minute.
// The account's quotas cannot be read (no Service Quotas permission), so a run learns the TPM quota from
// throttles, as the report's diagnosis of max-tokens is tested on.
const SLOW_TPM: &str = "[service-quotas]\naccess-denied = true\n\
    [models.\"*\"]\ntpm = 30000\noutput-tokens = { min = 40, max = 80 }\n\
    latency = { first-token-ms = 3000 }\n";

fn tickets(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\": \"t{i:03}\", \"prompt\": \"Ticket {i}: the export button does nothing.\"}}\n"))
        .collect()
}

/// A job over `n` tickets with `max-tokens` and the given budget lines.
fn job(t: &TestJob, endpoint: &str, n: usize, max_tokens: u32, budget: &str) {
    t.write("in.jsonl", tickets(n)).job(
        &format!(
            "[model]\nid = \"anthropic.claude-3-5-haiku-20241022-v1:0\"\nmax-tokens = {max_tokens}\n\
             [input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[budget]\n{budget}\n[output]\npath = \"out\"\n"
        ),
        endpoint,
    );
}

async fn run(t: &TestJob, args: &[&str]) -> (Run, String) {
    let out = t.command(args).output().await.unwrap();
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    (Run::from(out), stdout)
}

/// The model table fills in what the job file leaves out about the model, warns about what Bedrock would refuse,
/// and a user's table laid over it changes one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_table_sets_burndown_prices_and_limits() {
    let emu = emulator(SLOW_TPM).await;
    let t = TestJob::new();
    let sonnet = |max_tokens: u32| {
        format!(
            "[model]\nid = \"global.anthropic.claude-sonnet-4-5-20250929-v1:0\"\nmax-tokens = {max_tokens}\n\
             [input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[budget]\ntpm = 1000000\n[output]\npath = \"out\"\n"
        )
    };
    t.write("in.jsonl", tickets(20))
        .job(&sonnet(100_000), &emu.endpoint());
    let args = [
        "plan",
        "job.toml",
        "--output-tokens",
        "60",
        "--latency",
        "1s",
    ];
    let (r, out) = run(&t, &args).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for want in [
        "output burndown 5 from the model table (Claude Sonnet 4.5)",
        "warning: model.max-tokens 100,000 is more than the 64,000 output tokens Claude Sonnet 4.5 can write",
        "(input + output × burndown 5)",
        "expected cost    $",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("too long"), "{out}");

    // A user's table: a price and a context window changed, the rest kept.
    t.write(
        "my-models.toml",
        "[models.\"anthropic.claude-sonnet-4-5-20250929-v1:0\"]\ncontext = 300\ninput = 300.0\n",
    )
    .job(&sonnet(500), &emu.endpoint());
    let (r, with_file) = run(&t, &[&args[..], &["--models", "my-models.toml"]].concat()).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        with_file.contains(
            "too long         20 records need more than the model's context window of 300 tokens"
        ),
        "{with_file}"
    );
    assert!(
        with_file.contains("(input + output × burndown 5)"),
        "{with_file}"
    );
    let input_cost = |text: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with("expected cost"))
            .unwrap()
            .to_string();
        line.split("input $")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let (_, built_in) = run(&t, &args).await;
    assert!(
        (input_cost(&with_file) / input_cost(&built_in) - 100.0).abs() < 1.0,
        "a price of 300 instead of 3 per million: {with_file}\n{built_in}"
    );
    // The same file through the environment, and a bad one named with its key.
    t.env("BATCHRUN_MODELS", Some("my-models.toml"));
    let (_, from_env) = run(&t, &args).await;
    assert_eq!(input_cost(&from_env), input_cost(&with_file));
    t.write("my-models.toml", "[models.\"x\"]\nburndown = 0\n");
    let (r, _) = run(&t, &args).await;
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("my-models.toml: x: burndown = 0"),
        "{}",
        r.stderr
    );
}

/// A model the table does not know is sent with burndown 1 and one warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_gets_one_warning() {
    let emu = emulator("[models.\"*\"]\ntpm = 1000000\n").await;
    let t = TestJob::new();
    t.write("in.jsonl", tickets(30)).job(
        "[model]\nid = \"acme.unknown-v1\"\nmax-tokens = 50\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [budget]\nrpm = 6000\ntpm = 1000000\n[output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let r = t.submit(&[]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("not in the model table"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(
        warnings[0].contains("output burndown 1 assumed"),
        "{}",
        warnings[0]
    );
    assert_eq!(t.output_lines("out").len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_everything_and_calls_no_model() {
    let emu = emulator(SLOW_TPM).await;
    let t = TestJob::new();
    job(
        &t,
        &emu.endpoint(),
        200,
        4096,
        "tpm = 30000\nmax-concurrency = 32",
    );
    // Two records too long for any reservation to fit 30,000 tokens.
    let long = "word ".repeat(30_000);
    std::fs::write(
        t.path().join("in.jsonl"),
        tickets(200)
            + &format!("{{\"id\": \"huge-1\", \"prompt\": \"{long}\"}}\n{{\"id\": \"huge-2\", \"prompt\": \"{long}\"}}\n"),
    )
    .unwrap();
    let (r, out) = run(
        &t,
        &[
            "plan",
            "job.toml",
            "--deadline",
            "1m",
            "--latency",
            "3s",
            "--output-tokens",
            "60",
        ],
    )
    .await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        out.contains("records          200 to send, 2 that never fit (below)"),
        "{out}"
    );
    assert!(
        out.contains("mean 14 per record"),
        "the averages leave out what never fits: {out}"
    );
    assert!(
        out.contains("→ TPM-bound (by tokens reserved for max-tokens while requests run)"),
        "{out}"
    );
    assert!(out.contains("→ with max-tokens = 128"), "{out}");
    assert!(
        out.contains("never fit        2 records reserve more than the TPM budget of 30,000"),
        "{out}"
    );
    assert!(out.contains("huge-1 (in.jsonl:201)"), "{out}");
    assert!(out.contains("to finish within 1m00s: RPM ≥ 200"), "{out}");
    // ...and ends with the command that asks for them.
    assert!(
        out.contains("`batchrun quotas request job.toml --rpm 200 --tpm "),
        "{out}"
    );
    assert!(out.contains("expected cost    $"), "{out}");
    assert!(emu.stats().models.is_empty(), "plan sent nothing");
    assert!(
        !t.path().join(".batchrun").exists(),
        "plan created no state"
    );

    // --exact asks CountTokens, and only that.
    let (r, out) = run(&t, &["plan", "job.toml", "--exact"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(out.contains("counted by Bedrock's CountTokens"), "{out}");
    let stats = emu.stats();
    assert_eq!(
        stats.count_tokens_requests, 202,
        "one CountTokens per record"
    );
    let model_calls: u64 = stats.models.values().map(|m| m.totals.requests).sum();
    assert_eq!(model_calls, 0, "no model call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_names_max_tokens_as_the_cause_and_status_reads_the_state() {
    let emu = emulator(SLOW_TPM).await;
    let t = TestJob::new();
    // No TPM budget: Bedrock (the emulator) throttles on tokens, and max-tokens 4,096 is why.
    job(&t, &emu.endpoint(), 24, 4096, "max-concurrency = 16");
    let mut child = t.spawn_submit();
    // While it runs, status sees it running, with a rate and an ETA.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        assert!(std::time::Instant::now() < deadline, "never seen running");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before status saw it running");
        }
        let (r, out) = run(&t, &["status", "job.toml", "--json"]).await;
        if r.code == Some(0) {
            let s: Value = serde_json::from_str(&out).unwrap();
            if s["state"] == "running" && s["succeeded"].as_u64().unwrap() > 0 {
                break s;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(seen["pending"].as_u64().unwrap() > 0, "{seen}");
    assert!(seen["records_per_minute"].as_f64().unwrap() > 0.0, "{seen}");
    assert!(seen["eta_seconds"].as_f64().unwrap() > 0.0, "{seen}");
    assert!(seen["last_run_outcome"].is_null(), "{seen}");
    let ended = child.wait_with_output().await.unwrap();
    assert_eq!(
        ended.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );

    let (r, out) = run(&t, &["report", "job.toml", "--html", "report.html"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        out.contains("diagnosis: tokens per minute ran out, and max-tokens is why"),
        "{out}"
    );
    assert!(
        out.contains("lower model.max-tokens from 4,096 to"),
        "{out}"
    );
    assert!(out.contains("records     24: 24 succeeded"), "{out}");
    assert!(
        out.contains("; ask with `batchrun quotas request job.toml --rpm "),
        "{out}"
    );

    // The page is well-formed XML with five charts and the diagnosis.
    let page = std::fs::read_to_string(t.path().join("report.html")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&page);
    let (mut svgs, mut depth) = (0, 0i32);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                depth += 1;
                if e.name().as_ref() == b"svg" {
                    svgs += 1;
                }
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "report.html is not well-formed at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0, "every element is closed");
    assert_eq!(svgs, 5);
    assert!(page.contains("max-tokens is why"));

    let (r, out) = run(&t, &["status", "job.toml"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(out.starts_with("job `test`: finished"), "{out}");
    assert!(
        out.contains("records   24 total: 24 succeeded, 0 failed, 0 pending"),
        "{out}"
    );
    let (r, out) = run(&t, &["status", "--state", ".batchrun/state.db", "--json"]).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let jobs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs[0]["job"], "test");
    assert_eq!(jobs[0]["state"], "finished");
    assert_eq!(jobs[0]["succeeded"], 24);
    assert_eq!(jobs[0]["pending"], 0);
    assert!(jobs[0]["output_tokens"].as_u64().unwrap() > 0);

    // Asking for what is not there says so.
    let (r, _) = run(&t, &["status", "nope", "--state", ".batchrun/state.db"]).await;
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("no job `nope`") && r.stderr.contains("jobs there: test"),
        "{}",
        r.stderr
    );
    let (r, _) = run(&t, &["report", "test", "--state", "missing.db"]).await;
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("no state database at missing.db"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn plan_of_the_example_jobs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for job in ["demo", "tpm-bound"] {
        // No earlier run (the state path does not exist): the plan rests on the inputs, the emulator profile and
        // the price table alone, so its text is fixed.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_batchrun"))
            .args([
                "plan",
                &format!("jobs/{job}.toml"),
                "--state",
                "/nonexistent/never-created.db",
                "--deadline",
                "10m",
            ])
            .current_dir(root)
            .env_remove("BATCHRUN_PRICES")
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        insta::assert_snapshot!(
            format!("plan-{job}"),
            String::from_utf8(out.stdout).unwrap()
        );
    }
}
