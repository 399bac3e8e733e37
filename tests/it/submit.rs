//! `batchrun submit` end to end: the built binary against the emulator, one test per input format, plus failed
//! records, bad input lines and refused resumes.

use batchrun::emulator::OutputLength;
use batchrun::emulator::text;
use serde_json::Value;

use crate::common::emulator;
use crate::common::job::{TestJob, output_text};

const PROFILE: &str =
    "[models.\"*\"]\noutput-tokens = { min = 5, max = 12 }\ncontext-window = 400\n";
const LEN: OutputLength = OutputLength { min: 5, max: 12 };
/// A Converse job over `in.jsonl` with 20 max tokens, writing to `out`.
const JSONL_JOB: &str = "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\n";

fn expected(prompt_key: &str, max_tokens: u64) -> String {
    text::reply(prompt_key, LEN, max_tokens).text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_prompts_and_messages() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write(
        "in/prompts.jsonl",
        "{\"id\": \"a\", \"prompt\": \"Name a river.\"}\n\
         {\"id\": \"b\", \"messages\": [{\"role\": \"user\", \"content\": \"Name a lake.\"}], \"system\": \"Be short.\"}\n\
         {\"id\": 3, \"prompt\": \"Name a sea.\"}\n",
    )
    .job(
        "[model]\nid = \"anthropic.claude-3-haiku-20240307-v1:0\"\nmax-tokens = 64\n\
         [input]\npath = \"in/prompts.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.len(), 3);
    assert_eq!(output_text(&out["a"]), expected("Name a river.\n", 64));
    assert_eq!(
        output_text(&out["b"]),
        expected("Be short.\nName a lake.\n", 64)
    );
    assert_eq!(output_text(&out["3"]), expected("Name a sea.\n", 64));
    assert_eq!(out["a"]["modelInput"]["inferenceConfig"]["maxTokens"], 64);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(t.path().join("out/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["totalRecordCount"], 3);
    assert_eq!(manifest["successRecordCount"], 3);
    assert_eq!(manifest["errorRecordCount"], 0);
    assert_eq!(manifest["parts"][0]["file"], "part-00001.jsonl");
    assert_eq!(
        emu.stats().models["anthropic.claude-3-haiku-20240307-v1:0"]
            .totals
            .succeeded,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_batch_records_go_through_invoke_model() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    let mut lines = String::new();
    for i in 0..25 {
        lines.push_str(&format!(
            "{{\"recordId\": \"r{i:02}\", \"modelInput\": {{\"anthropic_version\": \"bedrock-2023-05-31\", \"max_tokens\": 9, \
             \"messages\": [{{\"role\": \"user\", \"content\": [{{\"type\": \"text\", \"text\": \"Item {i}\"}}]}}]}}}}\n"
        ));
    }
    t.write("batch.jsonl", lines).job(
        "[model]\nid = \"anthropic.claude-3-haiku-20240307-v1:0\"\napi = \"invoke\"\n\
         [input]\npath = \"batch.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\nrecords-per-part = 10\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.len(), 25);
    for i in 0..25 {
        let line = &out[&format!("r{i:02}")];
        assert_eq!(line["modelInput"]["max_tokens"], 9);
        assert_eq!(
            line["modelOutput"]["content"][0]["text"],
            expected(&format!("Item {i}\n"), 9).as_str()
        );
    }
    // 25 records at 10 a part: three parts, in order.
    let names: Vec<_> = ["part-00001.jsonl", "part-00002.jsonl", "part-00003.jsonl"]
        .iter()
        .map(|n| t.path().join("out").join(n).exists())
        .collect();
    assert_eq!(names, [true, true, true]);
    assert_eq!(t.output_lines("out")[10]["recordId"], "r10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_through_a_template_to_csv_output() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write("q.csv", "qid,question,topic\nq1,What is rain?,weather\nq2,What is snow?,weather\n")
        .job(
            "[model]\nid = \"m\"\nmax-tokens = 32\nsystem = \"Answer briefly.\"\n\
             [input]\npath = \"q.csv\"\nformat = \"csv\"\nid-column = \"qid\"\ntemplate = \"[{{ topic }}] {{ question }}\"\n\
             [output]\npath = \"out\"\nformat = \"csv\"\n",
            &emu.endpoint(),
        );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut reader = csv::Reader::from_path(t.path().join("out/part-00001.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[0][0], "q1");
    assert_eq!(&rows[0][1], "done");
    assert_eq!(
        &rows[0][2],
        expected("Answer briefly.\n[weather] What is rain?\n", 32)
    );
    assert_eq!(
        &rows[1][2],
        expected("Answer briefly.\n[weather] What is snow?\n", 32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_documents_through_a_template() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write("docs/a.md", "Alpha.")
        .write("docs/sub/b.txt", "Beta.")
        .job(
            "[model]\nid = \"m\"\nmax-tokens = 20\n\
             [input]\npath = \"docs\"\nformat = \"documents\"\ntemplate = \"Summarize {{ file_name }}: {{ text }}\"\n\
             [output]\npath = \"out\"\n",
            &emu.endpoint(),
        );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(out.keys().collect::<Vec<_>>(), ["a.md", "sub/b.txt"]);
    assert_eq!(
        output_text(&out["a.md"]),
        expected("Summarize a.md: Alpha.\n", 20)
    );
    assert_eq!(
        output_text(&out["sub/b.txt"]),
        expected("Summarize b.txt: Beta.\n", 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_to_embeddings_through_a_body_template() {
    let emu = emulator("[models.\"*\"]\nembedding-dimensions = 8\n").await;
    let t = TestJob::new();
    t.write("docs/a.txt", "first \"quoted\" doc").write("docs/b.txt", "second doc").job(
        "[model]\nid = \"amazon.titan-embed-text-v2:0\"\napi = \"invoke\"\n\
         [input]\npath = \"docs\"\nformat = \"documents\"\nbody-template = '{\"inputText\": {{ text | tojson }}, \"dimensions\": 256}'\n\
         [output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = t.output_by_id("out");
    assert_eq!(
        out["a.txt"]["modelInput"]["inputText"],
        "first \"quoted\" doc"
    );
    let vector = out["a.txt"]["modelOutput"]["embedding"].as_array().unwrap();
    // 256: a length Titan V2 takes (256, 512 or 1024), as the emulator now checks.
    assert_eq!(vector.len(), 256);
    assert_eq!(
        vector[0].as_f64().unwrap() as f32,
        text::embedding("first \"quoted\" doc\n", 256)[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_fails_with_its_message_and_the_rest_succeed() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    let long = "word ".repeat(500);
    t.write(
        "in.jsonl",
        format!("{{\"id\": \"ok1\", \"prompt\": \"short\"}}\n{{\"id\": \"long\", \"prompt\": \"{long}\"}}\n{{\"id\": \"ok2\", \"prompt\": \"short too\"}}\n"),
    )
    .job(
        JSONL_JOB,
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("2 succeeded, 1 failed"),
        "{}",
        run.stderr
    );
    let out = t.output_by_id("out");
    assert_eq!(out["long"]["error"]["errorCode"], "ValidationException");
    assert!(
        out["long"]["error"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Input is too long")
    );
    assert!(out["ok1"].get("modelOutput").is_some());
    assert!(out["ok2"].get("modelOutput").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_lines_are_failed_records_and_good_ones_are_kept() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"fine\"}\n\
         {\"id\": \"b\", \"prompt\": \n\
         {\"id\": \"a\", \"prompt\": \"same id again\"}\n\
         {\"id\": \"c\", \"prompt\": \"   \"}\n\
         {\"id\": \"d\", \"prompt\": \"also fine\"}\n",
    )
    .job(JSONL_JOB, &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("warning: in.jsonl:2: invalid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("warning: in.jsonl:3: duplicate id `a` (first at in.jsonl:1)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("warning: in.jsonl:4: empty prompt"),
        "{}",
        run.stderr
    );
    let lines = t.output_lines("out");
    let ids: Vec<_> = lines
        .iter()
        .map(|l| l["recordId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "in.jsonl:2", "in.jsonl:3", "c", "d"]);
    assert_eq!(output_text(&lines[0]), expected("fine\n", 20));
    assert_eq!(lines[1]["error"]["errorCode"], "InvalidInput");
    assert_eq!(lines[2]["error"]["errorCode"], "DuplicateId");
    assert_eq!(lines[3]["error"]["errorCode"], "InvalidInput");
    assert_eq!(output_text(&lines[4]), expected("also fine\n", 20));
    // Only the two good records were sent.
    assert_eq!(emu.stats().models["m"].totals.requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_row_missing_a_column_fails_alone() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write("q.csv", "id,question,context\nq1,What?,ctx\nq2,Why?\nq3,How?,ctx\n").job(
        "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"q.csv\"\nformat = \"csv\"\ntemplate = \"{{ question }} {{ context }}\"\n[output]\npath = \"out\"\n",
        &emu.endpoint(),
    );
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("q.csv:3: expected 3 columns (id, question, context), found 2"),
        "{}",
        run.stderr
    );
    let out = t.output_by_id("out");
    assert_eq!(out.len(), 3);
    assert_eq!(out["q2"]["error"]["errorCode"], "InvalidInput");
    assert!(out["q3"].get("modelOutput").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_job_is_refused_until_fresh() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    let job = |max: u32| {
        format!(
            "[model]\nid = \"m\"\nmax-tokens = {max}\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"\n[output]\npath = \"out\"\n"
        )
    };
    t.write("in.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n")
        .job(&job(20), &emu.endpoint());
    assert_eq!(t.submit(&[]).await.code, Some(0));
    let again = t.submit(&[]).await;
    assert_eq!(again.code, Some(0));
    assert!(
        again.stderr.contains("already finished"),
        "{}",
        again.stderr
    );
    assert_eq!(
        emu.stats().models["m"].totals.requests,
        1,
        "a finished job sends nothing"
    );

    t.job(&job(30), &emu.endpoint());
    let refused = t.submit(&[]).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("model.max-tokens: 20 → 30"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--fresh"), "{}", refused.stderr);

    let fresh = t.submit(&["--fresh"]).await;
    assert_eq!(fresh.code, Some(0), "{}", fresh.stderr);
    assert_eq!(
        t.output_by_id("out")["a"]["modelInput"]["inferenceConfig"]["maxTokens"],
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_stops_the_job_with_a_hint_and_loses_nothing() {
    let emu = emulator("[models.\"*\"]\naccess-denied = true\n").await;
    let t = TestJob::new();
    t.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"y\"}\n",
    )
    .job(JSONL_JOB, &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("AccessDeniedException"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: check that the credentials may call bedrock:InvokeModel"),
        "{}",
        run.stderr
    );
    assert!(
        t.output_lines("out").is_empty(),
        "no part is published while records are pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_is_a_clear_error_and_nothing_is_sent() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.write("in.jsonl", "{\"id\": \"a\", \"prompt\": \"x\"}\n")
        .job(JSONL_JOB, &emu.endpoint());
    // The credential chain finds nothing: no environment keys, empty profiles, instance metadata disabled.
    let output = t
        .command(&["submit", "job.toml", "--progress", "off"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .await
        .unwrap();
    let run = crate::common::job::Run::from(output);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("NoCredentials"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hint: no AWS credentials were found"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("DispatchFailure {"),
        "no debug dumps: {}",
        run.stderr
    );
    assert!(
        emu.stats().models.is_empty(),
        "nothing reached the endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_inputs_could_not_be_read_starts_over_once_fixed() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    let job = |id_column: &str| {
        format!(
            "[model]\nid = \"m\"\nmax-tokens = 20\n[input]\npath = \"q.csv\"\nformat = \"csv\"\n{id_column}\
             template = \"{{{{ question }}}}\"\n[output]\npath = \"out\"\n"
        )
    };
    t.write("q.csv", "qid,question\nq1,What?\n")
        .job(&job(""), &emu.endpoint());
    let run = t.submit(&[]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "the header has no `id` column (columns: qid, question); set input.id-column"
        ),
        "{}",
        run.stderr
    );
    // The fix changes the job's settings, but nothing was sent yet: no --fresh needed.
    t.job(&job("id-column = \"qid\"\n"), &emu.endpoint());
    let fixed = t.submit(&[]).await;
    assert_eq!(fixed.code, Some(0), "{}", fixed.stderr);
    assert!(t.output_by_id("out").contains_key("q1"));
}

/// JSONL record `i`: id `r{i}`.
fn question(i: usize) -> String {
    format!("{{\"id\": \"r{i}\", \"prompt\": \"question {i}\"}}\n")
}

/// A named pipe at `in.jsonl` in `t`, written by a thread: eight records at once (the first batch the run
/// stores and sends), then, when the returned sender says so or is dropped, `more` records and the end.
fn piped_input(
    t: &TestJob,
    more: usize,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    use std::io::Write as _;
    let fifo = t.path().join("in.jsonl");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        for i in 0..8 {
            pipe.write_all(question(i).as_bytes()).unwrap();
        }
        pipe.flush().unwrap();
        if wait.recv().is_ok() {
            for i in 8..8 + more {
                pipe.write_all(question(i).as_bytes()).unwrap();
            }
        }
    });
    (go_on, writer)
}

/// Waits (up to 20 s) until the emulator answered a call for model `m`; returns how many it answered.
async fn first_answer(emu: &batchrun::emulator::EmulatorHandle) -> u64 {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(20);
    let answered = || {
        emu.stats()
            .models
            .get("m")
            .map_or(0, |m| m.totals.succeeded)
    };
    while answered() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answered()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_sent_while_the_input_is_still_being_read() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.job(JSONL_JOB, &emu.endpoint());
    // The input's end is written only once the first records were answered, so the run cannot have read all of
    // its input before it sends.
    let (go_on, writer) = piped_input(&t, 4);
    let child = t.spawn_submit();
    let before_the_end = first_answer(&emu).await;
    go_on.send(()).unwrap();
    writer.join().unwrap();
    let run = crate::common::job::Run::from(child.wait_with_output().await.unwrap());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        before_the_end > 0,
        "no call was answered while the input was open"
    );
    let out = t.output_by_id("out");
    assert_eq!(out.len(), 12, "{out:?}");
    assert_eq!(emu.stats().models["m"].totals.succeeded, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_while_reading_exits_and_its_answers_are_not_discarded_by_a_changed_input() {
    let emu = emulator(PROFILE).await;
    let t = TestJob::new();
    t.job(JSONL_JOB, &emu.endpoint());
    let (go_on, writer) = piped_input(&t, 0);
    let child = t.spawn_submit();
    assert!(first_answer(&emu).await > 0, "no call was answered");
    // Ctrl-C while the reader waits on the pipe: the run drains and exits; the reader is not waited for.
    crate::common::signal(&child, "INT");
    let exited = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output());
    let output = exited
        .await
        .expect("the run exits while its reader still waits on the pipe");
    let run = crate::common::job::Run::from(output.unwrap());
    assert_eq!(run.code, Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("(and the inputs not read yet)"),
        "{}",
        run.stderr
    );
    drop(go_on);
    writer.join().unwrap();
    // Answers were paid for: a changed input is refused, not a silent fresh start.
    std::fs::remove_file(t.path().join("in.jsonl")).unwrap();
    t.write("in.jsonl", (0..10).map(question).collect::<String>());
    let refused = t.submit(&[]).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("input file changed: in.jsonl")
            && refused.stderr.contains("--fresh"),
        "{}",
        refused.stderr
    );
    let fresh = t.submit(&["--fresh"]).await;
    assert_eq!(fresh.code, Some(0), "{}", fresh.stderr);
    assert_eq!(t.output_by_id("out").len(), 10);
}
