//! S3 inputs and outputs against a real S3-compatible server on loopback (`s3s-fs`, SigV4 checked), through the
//! built binary and its real `aws-sdk-s3` client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use batchrun::emulator::OutputLength;
use batchrun::emulator::text;
use serde_json::Value;

use crate::common::emulator;
use crate::common::job::{TestJob, output_text};
use crate::common::s3::{LOCKED, S3Server, s3_server, s3_server_with_slow_uploads};

const PROFILE: &str =
    "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\ncontext-window = 100000\n";
const LEN: OutputLength = OutputLength { min: 5, max: 12 };

fn expected(prompt_key: &str, max_tokens: u64) -> String {
    text::reply(prompt_key, LEN, max_tokens).text
}

/// Every line of every part below `prefix` in `bucket`, by record id; fails on an id seen twice, a part cut
/// short, or a key that is neither a part nor the manifest.
async fn s3_output(s3: &S3Server, bucket: &str, prefix: &str) -> BTreeMap<String, Value> {
    let mut by_id = BTreeMap::new();
    for key in s3.keys(bucket, prefix).await {
        let name = &key[prefix.len()..];
        if name == "manifest.json" {
            continue;
        }
        assert!(
            name.starts_with("part-") && name.ends_with(".jsonl"),
            "unexpected object {key}"
        );
        let text = String::from_utf8(s3.get(bucket, &key).await).unwrap();
        assert!(text.ends_with('\n'), "{key} is cut short");
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["recordId"].as_str().unwrap().to_string();
            assert!(
                by_id.insert(id.clone(), v).is_none(),
                "{id} is in the output twice"
            );
        }
    }
    by_id
}

async fn manifest(s3: &S3Server, bucket: &str, prefix: &str) -> Value {
    serde_json::from_slice(&s3.get(bucket, &format!("{prefix}manifest.json")).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_from_s3_to_parts_and_manifest_on_s3() {
    let emu = emulator(PROFILE).await;
    let s3 = s3_server(&["data", "results"]).await;
    let mut lines = String::new();
    for i in 0..25 {
        lines.push_str(&format!(
            "{{\"id\": \"q{i:02}\", \"prompt\": \"Question {i}?\"}}\n"
        ));
    }
    s3.put("data", "in/prompts.jsonl", lines).await;
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 30\n[input]\npath = \"s3://data/in/prompts.jsonl\"\nformat = \"jsonl\"\n\
         [output]\npath = \"s3://results/run1/\"\nrecords-per-part = 10\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = s3_output(&s3, "results", "run1/").await;
    assert_eq!(out.len(), 25);
    for i in 0..25 {
        assert_eq!(
            output_text(&out[&format!("q{i:02}")]),
            expected(&format!("Question {i}?\n"), 30)
        );
    }
    let keys = s3.keys("results", "run1/").await;
    assert_eq!(
        keys,
        [
            "run1/manifest.json",
            "run1/part-00001.jsonl",
            "run1/part-00002.jsonl",
            "run1/part-00003.jsonl"
        ]
    );
    let m = manifest(&s3, "results", "run1/").await;
    assert_eq!(m["successRecordCount"], 25);
    assert_eq!(m["parts"].as_array().unwrap().len(), 3);
    // The manifest's digests are those of the objects as stored.
    for part in m["parts"].as_array().unwrap() {
        let bytes = s3
            .get(
                "results",
                &format!("run1/{}", part["file"].as_str().unwrap()),
            )
            .await;
        assert_eq!(part["bytes"], bytes.len() as u64);
    }
    assert_eq!(emu.stats().models["m"].totals.succeeded, 25);
    assert!(s3.open_uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_documents_from_s3_by_key_prefix_and_pattern() {
    let emu = emulator(PROFILE).await;
    let s3 = s3_server(&["data"]).await;
    s3.put(
        "data",
        "tables/q.csv",
        "qid,question\nq1,What is rain?\nq2,What is snow?\n",
    )
    .await;
    s3.put("data", "docs/a.md", "Alpha.").await;
    s3.put("data", "docs/sub/b.txt", "Beta.").await;
    s3.put("data", "docs/.hidden", "not a document").await;
    s3.put("data", "docs/c.md", "Gamma.").await;
    s3.put("data", "docsextra/d.md", "not below docs/").await;

    // CSV by key.
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 32\n\
         [input]\npath = \"s3://data/tables/q.csv\"\nformat = \"csv\"\nid-column = \"qid\"\ntemplate = \"Q: {{ question }}\"\n\
         [output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.keys().collect::<Vec<_>>(), ["q1", "q2"]);
    assert_eq!(output_text(&out["q2"]), expected("Q: What is snow?\n", 32));

    // Documents below a prefix: every level, hidden names left out; ids relative to the prefix. The same
    // folder named without its slash reads the same.
    for path in ["s3://data/docs/", "s3://data/docs"] {
        let t = TestJob::new();
        t.s3_endpoint(&s3.endpoint).job(
            &format!(
                "[model]\nid = \"m\"\nmax-tokens = 20\n\
                 [input]\npath = \"{path}\"\nformat = \"documents\"\ntemplate = \"Summarize {{{{ file_name }}}}: {{{{ text }}}}\"\n\
                 [output]\npath = \"out\"\n"
            ),
            &emu.endpoint(),
        );
        let run = t.submit(&[]).await;
        assert_eq!(run.code, Some(0), "{path}: {}", run.stderr);
        let out = t.output_by_id("out");
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            ["a.md", "c.md", "sub/b.txt"],
            "{path}"
        );
        assert_eq!(
            output_text(&out["sub/b.txt"]),
            expected("Summarize b.txt: Beta.\n", 20)
        );
    }

    // A pattern: `*` stays within one level.
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 20\n\
         [input]\npath = \"s3://data/docs/*.md\"\nformat = \"documents\"\ntemplate = \"{{ text }}\"\n\
         [output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.keys().collect::<Vec<_>>(), ["a.md", "c.md"]);
    assert_eq!(output_text(&out["c.md"]), expected("Gamma.\n", 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_of_more_than_a_thousand_objects_is_read_across_pages() {
    let emu = emulator(PROFILE).await;
    let s3 = s3_server(&["data"]).await;
    // Seeded straight into the server's storage (objects are plain files there); listing, HEAD and GET go
    // through the server.
    let n = 1_050;
    for i in 0..n {
        let p = s3.root.path().join(format!("data/many/doc-{i:04}.txt"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("Document number {i}.")).unwrap();
    }
    assert!(
        s3.keys("data", "many/").await.len() == n,
        "the server lists them all"
    );
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 16\n\
         [input]\npath = \"s3://data/many/\"\nformat = \"documents\"\ntemplate = \"{{ text }}\"\n\
         [budget]\nmax-concurrency = 64\n[output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.len(), n);
    assert_eq!(
        output_text(&out["doc-1049.txt"]),
        expected("Document number 1049.\n", 16)
    );
    assert!(
        run.stderr.contains(&format!("read {n} records")),
        "{}",
        run.stderr
    );
}

/// `n` JSONL lines of about `size` bytes each, with ids `r00000`…
fn big_lines(n: usize, size: usize) -> String {
    let filler = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
    let mut text = String::with_capacity(n * (size + 40));
    for i in 0..n {
        text.push_str(&format!(
            "{{\"id\": \"r{i:05}\", \"prompt\": \"{i} {}\"}}\n",
            &filler[..size]
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_is_streamed_and_large_parts_go_up_in_pieces() {
    let emu = emulator(PROFILE).await;
    let s3 = s3_server(&["data", "results"]).await;
    // 20 MB of input in one object; parts of 900 records are about 9.5 MB each, above the 8 MiB multipart
    // threshold.
    let input = big_lines(2_000, 10_000);
    assert!(input.len() > 20_000_000);
    s3.put("data", "big.jsonl", input).await;
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 16\n[input]\npath = \"s3://data/big.jsonl\"\nformat = \"jsonl\"\n\
         [budget]\nmax-concurrency = 64\n[output]\npath = \"s3://results/big/\"\nrecords-per-part = 900\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = s3_output(&s3, "results", "big/").await;
    assert_eq!(out.len(), 2_000);
    let line = &out["r01999"];
    let prompt = line["modelInput"]["messages"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(prompt.starts_with("1999 lorem ipsum") && prompt.len() > 10_000);
    // A multipart object's ETag ends in `-<pieces>`; the last, smaller part went up in one request.
    let etag = |key: &'static str| {
        let client = s3.client.clone();
        async move {
            client
                .head_object()
                .bucket("results")
                .key(key)
                .send()
                .await
                .unwrap()
                .e_tag()
                .unwrap()
                .to_string()
        }
    };
    assert!(etag("big/part-00001.jsonl").await.ends_with("-2\""));
    assert!(etag("big/part-00002.jsonl").await.ends_with("-2\""));
    assert!(!etag("big/part-00003.jsonl").await.contains('-'));
    assert!(s3.open_uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_an_upload_then_resume_publishes_each_part_once() {
    // Replies take 200 ms, so records are still pending when the first part's upload is cut off.
    let emu = emulator(&format!("{PROFILE}latency = {{ first-token-ms = 200 }}\n")).await;
    // Each multipart piece takes two seconds to arrive: the kill lands while an upload is open.
    let s3 = s3_server_with_slow_uploads(&["data", "results"], Duration::from_secs(2)).await;
    s3.put("data", "in.jsonl", big_lines(1_600, 10_000)).await;
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 16\n[input]\npath = \"s3://data/in.jsonl\"\nformat = \"jsonl\"\n\
         [budget]\nmax-concurrency = 64\n[output]\npath = \"s3://results/out/\"\nrecords-per-part = 1000\n",
        &emu.endpoint(),
    );
    let mut child = t.spawn_submit();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s3.open_uploads().is_empty() {
        assert!(Instant::now() < deadline, "no upload started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its upload was seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While the upload is held, the writer keeps committing: a record answered after the upload began reaches
    // the checkpoint before the piece does (a writer that waited for the upload would commit none until then).
    let seen = Instant::now();
    let answered_at_upload = emu.stats().models["m"].totals.succeeded;
    loop {
        let (committed, _) = t.done_in_state().await;
        if committed > answered_at_upload {
            break;
        }
        assert!(
            seen.elapsed() < Duration::from_millis(1800),
            "nothing answered during the upload was committed during it ({committed} committed, \
             {answered_at_upload} answered when it began)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Into the first piece's second, past the instant between the upload's start and its note in the
    // checkpoint.
    tokio::time::sleep(Duration::from_millis(300).saturating_sub(seen.elapsed())).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // The half-sent part is not visible; the upload is still open on the server.
    assert!(s3.keys("results", "out/").await.is_empty());
    assert_eq!(s3.open_uploads().len(), 1);
    let calls_before = emu.stats().models["m"].totals.succeeded;
    let (committed, pending) = t.done_in_state().await;
    assert!(
        committed >= 1_000,
        "the first part's records were committed: {committed}"
    );
    assert_eq!(committed + pending, 1_600);

    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = s3_output(&s3, "results", "out/").await;
    assert_eq!(out.len(), 1_600);
    assert_eq!(
        s3.keys("results", "out/").await,
        [
            "out/manifest.json",
            "out/part-00001.jsonl",
            "out/part-00002.jsonl"
        ]
    );
    // The resume aborted the dead upload, sent only the records never answered, and left nothing open.
    assert!(s3.open_uploads().is_empty(), "{:?}", s3.open_uploads());
    // Answers the kill cut off before their commit (the calls in flight and the writer's last window) are asked
    // again; no more.
    assert_eq!(
        emu.stats().models["m"].totals.succeeded,
        calls_before + pending
    );
    println!(
        "kill -9 during an upload: {calls_before} answered before the kill, {committed} committed, {pending} \
         pending; after the resume: {} records once each, {} calls in all, {} uploads left open",
        out.len(),
        emu.stats().models["m"].totals.succeeded,
        s3.open_uploads().len()
    );
    let m = manifest(&s3, "results", "out/").await;
    assert_eq!(m["successRecordCount"], 1_600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_input_object_is_refused_on_resume_until_fresh() {
    let emu = emulator(PROFILE).await;
    let s3 = s3_server(&["data"]).await;
    s3.put(
        "data",
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"One.\"}\n",
    )
    .await;
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"m\"\nmax-tokens = 16\n[input]\npath = \"s3://data/in.jsonl\"\nformat = \"jsonl\"\n\
         [output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    s3.put(
        "data",
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"One.\"}\n{\"id\": \"b\", \"prompt\": \"Two.\"}\n",
    )
    .await;
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("input object changed: s3://data/in.jsonl (ETag "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("size 30 → 60"), "{}", run.stderr);
    assert!(run.stderr.contains("--fresh"), "{}", run.stderr);

    let run = t.submit(&["--fresh"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(t.output_by_id("out").keys().collect::<Vec<_>>(), ["a", "b"]);
}

/// Environment variables set (`Some`) or removed (`None`) for a run.
type Env = [(&'static str, Option<&'static str>)];

/// Runs the job with `input` and `output` paths and returns the run; asserts that no model call was made.
async fn failing_run(
    s3: &S3Server,
    input: &str,
    output: &str,
    env: &Env,
) -> crate::common::job::Run {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        &format!(
            "[model]\nid = \"m\"\nmax-tokens = 16\n[input]\npath = \"{input}\"\nformat = \"jsonl\"\n\
             [output]\npath = \"{output}\"\n"
        ),
        &emu.endpoint(),
    );
    for (k, v) in env {
        t.env(k, *v);
    }
    let run = t.submit(&[]).await;
    assert!(
        emu.stats().models.is_empty(),
        "no model call: {}",
        run.stderr
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_name_the_uri_and_what_to_do_before_any_model_call() {
    let s3 = s3_server(&["data", "results"]).await;
    s3.put(
        "data",
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"One.\"}\n",
    )
    .await;
    // The locked bucket refuses writes too: seed it in the server's storage.
    std::fs::write(
        s3.root.path().join(LOCKED).join("in.jsonl"),
        "{\"id\": \"a\", \"prompt\": \"One.\"}\n",
    )
    .unwrap();
    let good_in = "s3://data/in.jsonl";
    let no_keys: [(&str, Option<&str>); 2] =
        [("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)];
    let wrong_secret = [("AWS_SECRET_ACCESS_KEY", Some("not-the-secret"))];
    let cases: [(&str, &str, &Env, &str, &str); 7] = [
        (
            "s3://nobucket/in.jsonl",
            "out",
            &[],
            "error: s3://nobucket/in.jsonl: the bucket does not exist",
            "hint: check the bucket name",
        ),
        (
            "s3://data/missing.jsonl",
            "out",
            &[],
            "error: s3://data/missing.jsonl: no such object",
            "hint: check input.path",
        ),
        (
            "s3://locked/in.jsonl",
            "out",
            &[],
            "error: s3://locked/in.jsonl: access denied",
            "s3:GetObject",
        ),
        (
            good_in,
            "s3://nobucket/out/",
            &[],
            "error: s3://nobucket/out/: the bucket does not exist",
            "hint: check the bucket name",
        ),
        (
            good_in,
            "s3://locked/out/",
            &[],
            "error: s3://locked/out/: access denied",
            "s3:PutObject",
        ),
        (
            good_in,
            "out",
            &no_keys,
            "error: s3://data/in.jsonl: no usable AWS credentials for S3",
            "hint: set AWS_PROFILE",
        ),
        (
            good_in,
            "out",
            &wrong_secret,
            "error: s3://data/in.jsonl: no usable AWS credentials for S3 (SignatureDoesNotMatch",
            "hint: set AWS_PROFILE",
        ),
    ];
    for (input, output, env, error, hint) in cases {
        let run = failing_run(&s3, input, output, env).await;
        assert_eq!(run.code, Some(2), "{input} → {output}: {}", run.stderr);
        assert!(
            run.stderr.contains(error),
            "{input} → {output}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(hint),
            "{input} → {output}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("{ "), "no debug dumps: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_keys_of_the_job_and_the_generic_endpoint_variable_are_used() {
    let emu = emulator(PROFILE).await;
    let s3 = s3_server(&["data"]).await;
    s3.put(
        "data",
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"One.\"}\n",
    )
    .await;
    let t = TestJob::new();
    // No AWS_REGION and no S3-specific endpoint: the region comes from [s3], the endpoint from the variable
    // every service reads.
    t.env("AWS_REGION", None)
        .env("AWS_ENDPOINT_URL", Some(&s3.endpoint))
        .job(
            "[model]\nid = \"m\"\nmax-tokens = 16\nregion = \"us-east-1\"\n\
             [input]\npath = \"s3://data/in.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"s3://data/out/\"\n\
             [s3]\nregion = \"eu-west-1\"\nforce-path-style = true\n",
            &emu.endpoint(),
        );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(s3_output(&s3, "data", "out/").await.len(), 1);
}
