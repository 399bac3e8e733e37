//! Nightly RAG through the built binary: documents split into chunks, one record and one call each, every
//! output line citing where its chunk lies in its document.

use batchrun::emulator::EmulatorHandle;

use crate::common::emulator;
use crate::common::job::TestJob;

const PROFILE: &str = "[models.\"*\"]\noutput-tokens = { min = 2, max = 6 }\n";

/// A Cohere Embed job over `in.jsonl`.
const COHERE_JSONL: &str = "[model]\nid = \"cohere.embed-english-v3\"\napi = \"embed\"\n\
     [input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\n";

fn requests(emu: &EmulatorHandle) -> u64 {
    emu.stats().models.values().map(|m| m.totals.requests).sum()
}

/// Calls the emulator answered (and charged): requests it refused as busy are not among them.
fn answered(emu: &EmulatorHandle) -> u64 {
    emu.stats()
        .models
        .values()
        .map(|m| m.totals.succeeded)
        .sum()
}

/// A Markdown document of `sections` sections of a few paragraphs each, its words drawn from `seed`.
fn markdown(title: &str, sections: usize, seed: usize) -> String {
    let words = [
        "quota", "token", "bucket", "river", "lantern", "meadow", "harbor", "signal", "orchard",
        "copper", "glacier", "ember", "willow", "thunder", "saffron",
    ];
    let mut text = format!("# {title}\n\n");
    for s in 0..sections {
        text.push_str(&format!("## Part {s}\n\n"));
        for p in 0..3 {
            let sentence = |k: usize| {
                let w: Vec<&str> = (0..9)
                    .map(|i| words[(seed * 7 + s * 5 + p * 3 + k + i * i) % words.len()])
                    .collect();
                format!("{} {}.", capitalize(w[0]), w[1..].join(" "))
            };
            let para: Vec<String> = (0..4).map(sentence).collect();
            text.push_str(&para.join(" "));
            text.push_str("\n\n");
        }
    }
    text
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

const CHUNK_JOB: &str = "[model]\nid = \"m\"\nmax-tokens = 16\n\
    [input]\npath = \"docs\"\nformat = \"documents\"\n\
    template = \"Label this passage of {{ doc }}:\\n{{ text }}\"\n\
    [chunk]\ntokens = 120\noverlap = 24\n\
    [output]\npath = \"out\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_chunked_one_call_a_chunk_and_each_line_cites_its_place() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    let a = markdown("Alpha", 4, 1);
    let b = markdown("Bravo ünïcödé", 2, 2);
    t.write("docs/a.md", &a)
        .write("docs/nested/b.txt", &b)
        .write("docs/scan.pdf", b"%PDF-1.4")
        .write("docs/photo.PNG", b"\x89PNG")
        .write("docs/other.pdf", b"%PDF-1.4")
        .job(CHUNK_JOB, &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The files chunking cannot read are skipped with one line that counts them by extension.
    let skipped: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{}", run.stderr);
    assert!(
        skipped[0].contains("skipped 3 files that are not text or Markdown")
            && skipped[0].ends_with(": 2 .pdf, 1 .png"),
        "{}",
        skipped[0]
    );

    let lines = t.output_lines("out");
    assert_eq!(requests(&emu), lines.len() as u64, "one call a chunk");
    let raw = std::fs::read_to_string(t.path().join("out/part-00001.jsonl")).unwrap();
    assert!(
        raw.starts_with(
            "{\"recordId\":\"a.md#0\",\"doc\":\"a.md\",\"chunk\":0,\"start\":0,\"end\":"
        ),
        "{}",
        &raw[..200.min(raw.len())]
    );
    for (doc, text) in [("a.md", &a), ("nested/b.txt", &b)] {
        let chars: Vec<char> = text.chars().collect();
        let chunks: Vec<_> = lines.iter().filter(|l| l["doc"] == doc).collect();
        assert!(chunks.len() > 1, "{doc} is one chunk");
        let mut covered = 0;
        for (n, l) in chunks.iter().enumerate() {
            assert_eq!(l["recordId"], format!("{doc}#{n}"));
            assert_eq!(l["chunk"], n);
            let (start, end) = (
                l["start"].as_u64().unwrap() as usize,
                l["end"].as_u64().unwrap() as usize,
            );
            assert!(
                start <= covered && end > covered,
                "{doc}#{n} leaves a gap: {start}..{end} after {covered}"
            );
            covered = end;
            assert!(l["tokens"].as_u64().unwrap() <= 120);
            // The prompt holds exactly the document's characters start..end.
            let piece: String = chars[start..end].iter().collect();
            let prompt = l["modelInput"]["messages"][0]["content"][0]["text"]
                .as_str()
                .unwrap();
            assert_eq!(prompt, format!("Label this passage of {doc}:\n{piece}"));
            assert!(l.get("modelOutput").is_some(), "{l}");
        }
        assert_eq!(covered, chars.len(), "{doc} is covered to its end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_need_no_template_for_titan_or_cohere() {
    let emu = emulator(PROFILE).await;
    for (model, extra, dims) in [
        (
            "amazon.titan-embed-text-v2:0",
            "dimensions = 256\nnormalize = true\n",
            256,
        ),
        (
            "cohere.embed-english-v3",
            "input-type = \"search_document\"\n",
            1024,
        ),
    ] {
        let t = TestJob::new();
        t.write("docs/a.md", markdown("Alpha", 3, 1)).job(
            &format!(
                "[model]\nid = \"{model}\"\napi = \"embed\"\n{extra}\
                 [input]\npath = \"docs\"\nformat = \"documents\"\n\
                 [chunk]\ntokens = 100\n[output]\npath = \"out\"\n"
            ),
            &emu.endpoint(),
        );
        let before = requests(&emu);
        let run = t.submit(&[]).await;
        assert_eq!(run.code, Some(0), "{model}: {}", run.stderr);
        let lines = t.output_lines("out");
        assert!(lines.len() > 1, "{model}");
        let calls = requests(&emu) - before;
        if model.starts_with("amazon") {
            assert_eq!(calls, lines.len() as u64, "{model}: one call a chunk");
        } else {
            // Cohere takes up to 96 texts a call: each line says how many records its call carried, and the
            // calls those add up to are the calls the emulator answered.
            let carried: Vec<u64> = lines
                .iter()
                .map(|l| l["recordsInCall"].as_u64().unwrap_or_else(|| panic!("{l}")))
                .collect();
            let from_lines: f64 = carried.iter().map(|&n| 1.0 / n as f64).sum();
            assert_eq!(from_lines.round() as u64, calls, "{carried:?}");
            assert!(
                calls < lines.len() as u64,
                "{model}: {calls} calls for {} chunks",
                lines.len()
            );
            // The report says so too.
            let out = t.command(&["report", "job.toml"]).output().await.unwrap();
            let report = String::from_utf8_lossy(&out.stdout);
            let packed = format!("packed      {} records in {calls} calls", lines.len());
            assert!(report.contains(&packed), "{report}");
        }
        for l in &lines {
            let input = &l["modelInput"];
            let output = &l["modelOutput"];
            let vector = if model.starts_with("amazon") {
                assert_eq!(input["dimensions"], 256);
                assert_eq!(input["normalize"], true);
                assert!(input["inputText"].as_str().unwrap().len() > 10);
                &output["embedding"]
            } else {
                assert_eq!(input["input_type"], "search_document");
                assert_eq!(input["texts"].as_array().unwrap().len(), 1);
                assert_eq!(output["response_type"], "embeddings_by_type");
                // Each record has its own text's vector out of the packed reply.
                assert_eq!(output["texts"], input["texts"]);
                let text = input["texts"][0].as_str().unwrap();
                let expected: Vec<f64> = batchrun::emulator::text::embedding(text, dims)
                    .into_iter()
                    .map(f64::from)
                    .collect();
                let got: Vec<f64> = output["embeddings"]["float"][0]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert!(
                    got.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-6),
                    "{model}: the vector of another text"
                );
                &output["embeddings"]["float"][0]
            };
            assert_eq!(vector.as_array().unwrap().len(), dims, "{model}: {l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_calls_start_full() {
    // 30 × 96 records for 16 workers: each call waits a moment for the queue to fill, so the first workers do not
    // send the first few records queued in calls of their own (each call is a request of the RPM quota).
    let emu = emulator("[models.\"*\"]\nembedding-dimensions = 8\n").await;
    let t = TestJob::new();
    let lines: String = (0..2880)
        .map(|i| format!("{{\"id\": \"r{i:04}\", \"prompt\": \"chunk number {i}\"}}\n"))
        .collect();
    t.write("in.jsonl", lines)
        .job(COHERE_JSONL, &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(t.output_lines("out").len(), 2880);
    // Thirty full calls; one more if a call went out before the reader had queued its records.
    let calls = requests(&emu);
    assert!(
        (30..=31).contains(&calls),
        "{calls} calls for 2,880 records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_refused_in_a_packed_call_fails_alone() {
    // Cohere refuses a text over its limit (here 60 tokens) and with it the whole call.
    let emu = emulator("[models.\"*\"]\ncontext-window = 60\n").await;
    let t = TestJob::new();
    let mut lines = String::new();
    for i in 0..30 {
        let prompt = if i == 17 {
            "many words of a long passage ".repeat(20)
        } else {
            format!("Short passage number {i}.")
        };
        lines.push_str(&format!(
            "{{\"recordId\":\"r{i}\",\"prompt\":\"{prompt}\"}}\n"
        ));
    }
    t.write("in.jsonl", lines)
        .job(COHERE_JSONL, &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "one record fails: {}", run.stderr);
    let out = t.output_lines("out");
    assert_eq!(out.len(), 30);
    let failed: Vec<&serde_json::Value> = out.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["recordId"], "r17");
    assert_eq!(failed[0]["error"]["errorCode"], "ValidationException");
    assert!(
        failed[0]["error"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("too long"),
        "{}",
        failed[0]
    );
    // The others have their vectors, each from a call that carried one record or several; those calls are the
    // ones the emulator answered (the packed call with r17 in it was refused, and each of its records sent alone).
    let mut calls = 0.0;
    for l in out.iter().filter(|l| l["recordId"] != "r17") {
        assert_eq!(l["modelOutput"]["texts"], l["modelInput"]["texts"], "{l}");
        calls += 1.0 / l["recordsInCall"].as_u64().unwrap() as f64;
    }
    assert_eq!(calls.round() as u64, answered(&emu));
}

/// Output lines of generation `n` by record id, as raw text.
fn snapshot(t: &TestJob, n: u64) -> std::collections::BTreeMap<String, String> {
    let parts = t.part_files(&format!("out/gen-{n:05}"));
    let mut by_id = std::collections::BTreeMap::new();
    for p in parts {
        for line in std::fs::read_to_string(p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["recordId"].as_str().unwrap().to_string();
            assert!(
                by_id.insert(id, line.to_string()).is_none(),
                "a record twice"
            );
        }
    }
    by_id
}

/// The change set of generation `n`: (op, record id) in file order.
fn changes(t: &TestJob, n: u64) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(t.path().join(format!("out/gen-{n:05}/changes.jsonl"))).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["op"].as_str().unwrap().to_string(),
                v["recordId"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const INCREMENTAL_JOB: &str = "[job]\nincremental = true\nkeep = 2\n\
    [model]\nid = \"amazon.titan-embed-text-v2:0\"\napi = \"embed\"\ndimensions = 256\n\
    [input]\npath = \"docs\"\nformat = \"documents\"\n\
    [chunk]\ntokens = 100\noverlap = 10\n\
    [output]\npath = \"out\"\nrecords-per-part = 25\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_night_sends_only_what_changed_and_writes_the_change_set() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    for i in 0..12 {
        t.write(
            &format!("docs/d{i:02}.md"),
            markdown(&format!("Doc {i}"), 1 + i % 3, i),
        );
    }
    // `[job]` comes from TestJob: the incremental keys go in a table of their own, merged below.
    let body = INCREMENTAL_JOB.replacen("[job]\n", "", 1);
    t.write(
        "job.toml",
        format!(
            "[job]\nname = \"test\"\n{body}[endpoint]\nurl = \"{}\"\n",
            emu.endpoint()
        ),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let night1 = snapshot(&t, 1);
    let calls1 = requests(&emu);
    assert_eq!(calls1, night1.len() as u64, "night 1: one call a chunk");
    assert_eq!(
        changes(&t, 1).len(),
        night1.len(),
        "night 1: every chunk is an upsert"
    );

    // Edit the last section of two documents, add two, delete one.
    for i in [3, 7] {
        let path = format!("docs/d{i:02}.md");
        let text = std::fs::read_to_string(t.path().join(&path)).unwrap();
        t.write(
            &path,
            format!("{text}An added closing sentence about the harbor signal.\n"),
        );
    }
    t.write("docs/new-a.md", markdown("New A", 2, 40));
    t.write("docs/new-b.md", markdown("New B", 1, 41));
    std::fs::remove_file(t.path().join("docs/d05.md")).unwrap();
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let night2 = snapshot(&t, 2);

    // What night 2 had to send: the lines whose request night 1 never made.
    let input = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["modelInput"].to_string()
    };
    let night1_requests: std::collections::BTreeSet<String> =
        night1.values().map(|l| input(l)).collect();
    let new_requests = night2
        .values()
        .filter(|l| !night1_requests.contains(&input(l)))
        .count() as u64;
    assert_eq!(requests(&emu) - calls1, new_requests, "night 2 calls");
    let touched: Vec<&String> = night2
        .keys()
        .filter(|id| {
            ["d03.md", "d07.md", "new-a.md", "new-b.md"]
                .iter()
                .any(|d| id.starts_with(*d))
        })
        .collect();
    assert!(new_requests > 0 && new_requests <= touched.len() as u64);

    // Lines of documents left alone are byte-identical.
    for (id, line) in &night1 {
        if !["d03.md", "d07.md", "d05.md"]
            .iter()
            .any(|d| id.starts_with(*d))
        {
            assert_eq!(night2.get(id), Some(line), "{id} changed");
        }
    }
    // The change set: exactly the new or changed lines, then the ids that are gone.
    let expected_upserts: Vec<(String, String)> = night2
        .iter()
        .filter(|(id, l)| night1.get(*id) != Some(*l))
        .map(|(id, _)| ("upsert".to_string(), id.clone()))
        .collect();
    let expected_deletes: Vec<(String, String)> = night1
        .keys()
        .filter(|id| !night2.contains_key(*id))
        .map(|id| ("delete".to_string(), id.clone()))
        .collect();
    let mut got = changes(&t, 2);
    let deletes = got.split_off(got.len() - expected_deletes.len());
    got.sort();
    assert_eq!(got, expected_upserts);
    assert_eq!(deletes, expected_deletes);
    assert!(deletes.iter().all(|(_, id)| id.starts_with("d05.md#")));

    // Night 3 with nothing changed sends nothing; night 4 after a change prunes generations beyond keep = 2.
    let calls2 = requests(&emu);
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(requests(&emu), calls2, "an unchanged corpus sends nothing");
    t.write("docs/new-c.md", markdown("New C", 1, 42));
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("pruned generation 1"), "{}", run.stderr);
    assert!(!t.path().join("out/gen-00001").exists());
    assert!(t.path().join("out/gen-00002/manifest.json").exists());
    assert_eq!(
        std::fs::read_to_string(t.path().join("out/CURRENT")).unwrap(),
        "gen-00003\n"
    );
    // status reads the current generation.
    let out = t
        .command(&["status", "job.toml", "--json"])
        .output()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["job"], "test");
    assert_eq!(
        status["total"].as_u64().unwrap(),
        snapshot(&t, 3).len() as u64
    );
}

/// Every line of every part in `out`, in order, as raw text.
/// `lines` with the latency Bedrock measured (`modelOutput.metrics.latencyMs`, the emulator's wall time, which
/// a loaded machine moves by a millisecond or two) set to 0: what two separate runs must agree on.
fn without_latency(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            // Answered lines carry it; failed ones have no modelOutput.
            if v.get("modelOutput").is_some() {
                let m = v
                    .pointer_mut("/modelOutput/metrics/latencyMs")
                    .filter(|m| m.is_u64())
                    .unwrap_or_else(|| panic!("an answer without its latency: {l}"));
                *m = serde_json::json!(0);
            }
            v.to_string()
        })
        .collect()
}

fn raw_lines(t: &TestJob, out: &str) -> Vec<String> {
    t.part_files(out)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_files_are_not_read_again_and_give_what_a_fresh_read_gives() {
    let emu = emulator(PROFILE).await;
    let line = |id: &str| format!("{{\"recordId\":\"{id}\",\"prompt\":\"Say {id}.\"}}\n");
    let files = [
        // A bad line: the file is read again every night, and fails the same way.
        ("in/a.jsonl", format!("{}{{not json\n", line("a1"))),
        (
            "in/b.jsonl",
            format!("{}{}{}", line("b1"), line("b2"), line("b3")),
        ),
        ("in/c.jsonl", format!("{}{}", line("c1"), line("c2"))),
    ];
    let job = "[model]\nid = \"m\"\nmax-tokens = 20\n\
               [input]\npath = \"in\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\n";
    let t = TestJob::new();
    for (path, text) in &files {
        t.write(path, text);
    }
    t.job(job, &emu.endpoint());
    let text = std::fs::read_to_string(t.path().join("job.toml")).unwrap();
    t.write(
        "job.toml",
        text.replacen("[job]\n", "[job]\nincremental = true\n", 1),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "a failed record: {}", run.stderr);

    // The change set holds a vector store's upserts; a record without a reply is listed as failed, not upserted.
    let ops = changes(&t, 1);
    let failed: Vec<&(String, String)> = ops.iter().filter(|(op, _)| op == "failed").collect();
    assert_eq!(failed, [&("failed".to_string(), "a.jsonl:2".to_string())]);
    assert_eq!(ops.iter().filter(|(op, _)| op == "upsert").count(), 6);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("out/gen-00001/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            &manifest["changes"]["upserts"],
            &manifest["changes"]["failed"]
        ),
        (&6.into(), &1.into())
    );

    // Night 2: a new file, first in order, takes b2's id, so b.jsonl's b2 (taken unread) is the duplicate now.
    t.write("in/0.jsonl", line("b2"));
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "a failed record: {}", run.stderr);
    assert!(
        run.stderr
            .contains("2 of 4 input files unchanged since generation 1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("duplicate id `b2`"), "{}", run.stderr);
    let night2 = raw_lines(&t, "out/gen-00002");

    // The same inputs as a one-shot job, read from scratch: the same lines in the same order.
    let fresh = TestJob::new();
    for (path, text) in &files {
        fresh.write(path, text);
    }
    fresh
        .write("in/0.jsonl", line("b2"))
        .job(job, &emu.endpoint());
    let run = fresh.submit(&[]).await;
    assert_eq!(run.code, Some(1), "a failed record: {}", run.stderr);
    assert_eq!(
        without_latency(&night2),
        without_latency(&raw_lines(&fresh, "out"))
    );
    assert_eq!(night2.len(), 8);

    // Night 3: b.jsonl edited (same size, later modification time) is read again; 0.jsonl and c.jsonl are not.
    t.write("in/b.jsonl", files[1].1.replace("Say b3", "Say B3"));
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "a failed record: {}", run.stderr);
    assert!(
        run.stderr
            .contains("2 of 4 input files unchanged since generation 2"),
        "{}",
        run.stderr
    );
    let night3 = raw_lines(&t, "out/gen-00003");
    assert!(night3.iter().any(|l| l.contains("Say B3")), "{night3:?}");

    // --fresh reads every file again, and gives the same lines.
    let run = t.submit(&["--fresh"]).await;
    assert_eq!(run.code, Some(1), "a failed record: {}", run.stderr);
    assert!(!run.stderr.contains("unchanged since"), "{}", run.stderr);
    assert!(
        run.stderr.contains("read 8 records from in\n"),
        "{}",
        run.stderr
    );
    assert_eq!(raw_lines(&t, "out/gen-00003"), night3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_killed_midway_resumes_into_the_same_generation_exactly_once() {
    // About 100 ms a call, four at a time: night 2 lasts a couple of seconds.
    let emu = emulator(
        "[models.\"*\"]\nlatency = { first-token-ms = 100, per-token-ms = 0, jitter = 0 }\nmax-concurrency = 4\n",
    )
    .await;
    let t = TestJob::new();
    for i in 0..6 {
        t.write(
            &format!("docs/d{i}.md"),
            markdown(&format!("Doc {i}"), 2, i),
        );
    }
    let body = INCREMENTAL_JOB.replacen("[job]\n", "", 1);
    t.write(
        "job.toml",
        format!(
            "[job]\nname = \"test\"\n{body}[budget]\nmax-concurrency = 4\n[endpoint]\nurl = \"{}\"\n",
            emu.endpoint()
        ),
    );
    assert_eq!(t.submit(&[]).await.code, Some(0));
    let night1 = snapshot(&t, 1);
    let calls1 = answered(&emu);
    // Night 2: twenty new documents, killed once some of them are answered.
    for i in 0..20 {
        t.write(
            &format!("docs/n{i:02}.md"),
            markdown(&format!("New {i}"), 2, 100 + i),
        );
    }
    let child = t.spawn_submit();
    let started = std::time::Instant::now();
    while answered(&emu) < calls1 + 12 && started.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    crate::common::signal(&child, "KILL");
    let killed = child.wait_with_output().await.unwrap();
    assert_eq!(killed.status.code(), None, "killed by the signal");
    assert!(
        !t.path().join("out/gen-00002/manifest.json").exists(),
        "the night ended before the kill"
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("resuming job `test@2`"),
        "{}",
        run.stderr
    );
    let night2 = snapshot(&t, 2);
    let new_chunks = night2.keys().filter(|id| id.starts_with('n')).count() as u64;
    // Every chunk once, and the old documents' lines unchanged.
    assert_eq!(night2.len() as u64, night1.len() as u64 + new_chunks);
    for (id, line) in &night1 {
        assert_eq!(night2.get(id), Some(line), "{id}");
    }
    // Calls answered: the chunks whose request night 1 never made (the generated documents repeat sentences, so
    // some new chunks are old requests), plus at most the four in flight when the process died. (The resumed
    // run may also be refused as busy while the dead one's calls still run at the emulator: not answered.)
    let input = |line: &String| {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["modelInput"].to_string()
    };
    let old: std::collections::BTreeSet<String> = night1.values().map(input).collect();
    let needed = night2.values().filter(|l| !old.contains(&input(l))).count() as u64;
    let calls2 = answered(&emu) - calls1;
    assert!(
        needed > 12 && (needed..=needed + 4).contains(&calls2),
        "{calls2} calls for {needed} new requests ({new_chunks} new chunks)"
    );
    eprintln!("{calls2} calls for {needed} new requests ({new_chunks} new chunks)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_corpus_runs_incrementally_to_an_s3_prefix() {
    let emu = emulator(PROFILE).await;
    let s3 = crate::common::s3::s3_server(&["corpus", "vectors"]).await;
    for i in 0..5 {
        s3.put(
            "corpus",
            &format!("docs/d{i}.md"),
            markdown(&format!("Doc {i}"), 2, i),
        )
        .await;
    }
    s3.put("corpus", "docs/scan.pdf", b"%PDF".to_vec()).await;
    let t = TestJob::new();
    t.s3_endpoint(&s3.endpoint).job(
        "[model]\nid = \"cohere.embed-multilingual-v3\"\napi = \"embed\"\n\
         [input]\npath = \"s3://corpus/docs/\"\nformat = \"documents\"\n\
         [chunk]\ntokens = 100\n[output]\npath = \"s3://vectors/nightly/\"\n",
        &emu.endpoint(),
    );
    // Incremental: the job table is written by TestJob; add the key to it.
    let text = std::fs::read_to_string(t.path().join("job.toml")).unwrap();
    t.write(
        "job.toml",
        text.replacen("[job]\n", "[job]\nincremental = true\n", 1),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let calls1 = answered(&emu);
    assert_eq!(s3.get("vectors", "nightly/CURRENT").await, b"gen-00001\n");

    // One document edited at its end, one deleted.
    let d2 = String::from_utf8(s3.get("corpus", "docs/d2.md").await).unwrap();
    s3.put("corpus", "docs/d2.md", format!("{d2}A closing line.\n"))
        .await;
    s3.delete("corpus", "docs/d4.md").await;
    let read_before = s3.reads_below("corpus", "docs/").len();
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        answered(&emu) - calls1,
        1,
        "only d2's last chunk is new: {}",
        run.stderr
    );
    // Unchanged objects (same ETag and size) are not downloaded again: their records come from night 1.
    assert_eq!(
        s3.reads_below("corpus", "docs/")[read_before..],
        ["/corpus/docs/d2.md"],
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("3 of 4 input files unchanged since generation 1"),
        "{}",
        run.stderr
    );
    assert_eq!(s3.get("vectors", "nightly/CURRENT").await, b"gen-00002\n");
    let changes =
        String::from_utf8(s3.get("vectors", "nightly/gen-00002/changes.jsonl").await).unwrap();
    let ops: Vec<(String, String)> = changes
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["op"].as_str().unwrap().into(),
                v["recordId"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        ops.iter()
            .any(|(op, id)| op == "upsert" && id.starts_with("d2.md#")),
        "{ops:?}"
    );
    assert!(
        ops.iter()
            .filter(|(op, _)| op == "delete")
            .all(|(_, id)| id.starts_with("d4.md#"))
    );
    assert!(ops.iter().any(|(op, _)| op == "delete"), "{ops:?}");
    assert!(
        ops.iter()
            .all(|(_, id)| id.starts_with("d2.md#") || id.starts_with("d4.md#")),
        "{ops:?}"
    );
    let keys = s3.keys("vectors", "nightly/").await;
    assert!(
        keys.contains(&"nightly/gen-00001/manifest.json".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"nightly/gen-00002/part-00001.jsonl".to_string()),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_is_one_object_a_line_with_the_run_s_events() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write("docs/a.md", markdown("Alpha", 2, 1))
        .write("docs/scan.pdf", b"%PDF")
        .job(CHUNK_JOB, &emu.endpoint());
    let out = t
        .command(&[
            "--log-format",
            "json",
            "submit",
            "job.toml",
            "--progress",
            "lines",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        stderr.lines().all(|l| l.starts_with("{\"ts\":")),
        "ts first: {stderr}"
    );
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for name in ["start", "part", "finish"] {
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            1,
            "{name} in {names:?}"
        );
    }
    assert!(
        events
            .iter()
            .all(|e| e["ts"].as_f64().is_some_and(|t| t > 1.7e9))
    );
    let finish = events.iter().find(|e| e["event"] == "finish").unwrap();
    assert_eq!(finish["outcome"], "finished");
    assert_eq!(finish["succeeded"], requests(&emu));
    let warning = events
        .iter()
        .find(|e| e["event"] == "message" && e["level"] == "warning")
        .unwrap();
    assert!(
        warning["text"]
            .as_str()
            .unwrap()
            .starts_with("skipped 1 file"),
        "{warning}"
    );
    // Throttles are summed up in a `throttles` event every few seconds while they happen.
    let busy = emulator(
        "[models.\"*\"]\nrpm = 600\ninitial-fill = 0.0\noutput-tokens = { min = 2, max = 4 }\n",
    )
    .await;
    let lines: String = (0..30)
        .map(|i| format!("{{\"recordId\":\"r{i}\",\"prompt\":\"Say {i}.\"}}\n"))
        .collect();
    let throttled = TestJob::new();
    throttled.write("in.jsonl", lines).job(
        "[model]\nid = \"m\"\nmax-tokens = 8\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n\
         [output]\npath = \"out\"\n",
        &busy.endpoint(),
    );
    let out = throttled
        .command(&["--log-format", "json", "submit", "job.toml"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<serde_json::Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summed: u64 = events
        .iter()
        .filter(|e| e["event"] == "throttles")
        .map(|e| e["rpm"].as_u64().unwrap() + e["tpm"].as_u64().unwrap())
        .sum();
    let finish = events.iter().find(|e| e["event"] == "finish").unwrap();
    assert!(summed > 0, "{events:?}");
    assert_eq!(summed, finish["throttled"].as_u64().unwrap(), "{events:?}");

    // A job file error is a JSON line too, at level error, and the exit code is unchanged.
    let out = t
        .command(&["--log-format", "json", "submit", "missing.toml"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stderr)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["level"], "error");
}
