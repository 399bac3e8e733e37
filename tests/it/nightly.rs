//! Nightly RAG through the built binary: documents split into chunks, one record and one call each, every
//! output line citing where its chunk lies in its document.

use batchrun::emulator::EmulatorHandle;

use crate::common::emulator;
use crate::common::job::TestJob;

const PROFILE: &str = "[models.\"*\"]\noutput-tokens = { min = 2, max = 6 }\n";

fn requests(emu: &EmulatorHandle) -> u64 {
    emu.stats().models.values().map(|m| m.totals.requests).sum()
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
        assert_eq!(
            requests(&emu) - before,
            lines.len() as u64,
            "{model}: one call a chunk"
        );
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
                &output["embeddings"]["float"][0]
            };
            assert_eq!(vector.as_array().unwrap().len(), dims, "{model}: {l}");
        }
    }
}
