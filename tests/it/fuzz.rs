//! Fuzzing the readers and the job-file parser with proptest: arbitrary bytes as a JSONL file, a CSV file and a
//! document, and arbitrary text and arbitrary values in a job file. None may panic, and what they produce must
//! hold together: every non-blank JSONL line is one record or one failed record at its own line, a document is
//! one item, a good record's request is JSON, locations name lines in order.
//!
//! CI runs a few hundred cases of each; a long run is `PROPTEST_CASES=100000 cargo test --release --test it
//! fuzz`. Inputs that once broke something are kept in `tests/fuzz/` and run through the same checks every time.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use batchrun::job::Job;
use batchrun::source::{Item, RequestBuilder, items, list_local};

/// A job over `file` in `dir` as `format`, with a template when the format needs one.
fn job(dir: &Path, file: &str, format: &str) -> Job {
    let template = match format {
        "csv" => "template = \"{{ id }}: {{ q }}\"\n",
        _ => "",
    };
    let text = format!(
        "[job]\nname = \"fuzz\"\n[model]\nid = \"m\"\nmax-tokens = 50\n\
         [input]\npath = \"{file}\"\nformat = \"{format}\"\n{template}[output]\npath = \"../out\"\n"
    );
    Job::parse(&text, &dir.join("job.toml")).unwrap()
}

/// Every item read from `path` as `format`.
fn read(dir: &Path, file: &str, format: &str) -> Result<Vec<Item>, String> {
    let job = job(dir, file, format);
    let builder = RequestBuilder::new(&job);
    let mut out = Vec::new();
    let path = dir.join(file);
    let files = list_local(&path, job.input.format, false).map_err(|e| e.to_string())?;
    for f in files {
        items(&job, &builder, &f, None, &mut |i| {
            out.push(i);
            true
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn line_of(location: &str) -> u64 {
    location.rsplit(':').next().unwrap().parse().unwrap()
}

/// The checks every JSONL input must pass.
fn check_jsonl(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), bytes).unwrap();
    let items = read(dir.path(), "in.jsonl", "jsonl").expect("a JSONL file always reads");
    // One item per line that holds anything but whitespace (after a byte-order mark at the start).
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let expected = body
        .split(|&b| b == b'\n')
        .filter(|l| match std::str::from_utf8(l) {
            Ok(s) => !s.trim().is_empty(),
            Err(_) => true,
        })
        .count();
    assert_eq!(
        items.len(),
        expected,
        "items for {:?}",
        String::from_utf8_lossy(bytes)
    );
    let mut last = 0;
    for item in &items {
        let location = match item {
            Item::Good(r) => {
                serde_json::from_str::<serde_json::Value>(&r.request).expect("a request is JSON");
                assert!(!r.id.is_empty());
                &r.location
            }
            Item::Bad(b) => {
                assert!(!b.message.is_empty());
                &b.location
            }
        };
        let line = line_of(location);
        assert!(line > last, "lines out of order: {line} after {last}");
        last = line;
    }
}

/// The checks every CSV input must pass: it reads (or fails as a file with a message), and each item names
/// a line of the file.
fn check_csv(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.csv"), bytes).unwrap();
    let lines = bytes.split(|&b| b == b'\n').count() as u64;
    if let Ok(items) = read(dir.path(), "in.csv", "csv") {
        for item in &items {
            let location = match item {
                Item::Good(r) => {
                    serde_json::from_str::<serde_json::Value>(&r.request)
                        .expect("a request is JSON");
                    &r.location
                }
                Item::Bad(b) => &b.location,
            };
            let line = line_of(location);
            assert!((1..=lines + 1).contains(&line), "line {line} of {lines}");
        }
    }
}

/// The checks every document must pass: exactly one item, named by the file.
fn check_document(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/a.md"), bytes).unwrap();
    let items = read(dir.path(), "docs", "documents").expect("a document always reads");
    assert_eq!(items.len(), 1);
    match &items[0] {
        Item::Good(r) => assert_eq!(r.id, "a.md"),
        Item::Bad(b) => assert_eq!(b.id.as_deref(), Some("a.md")),
    }
}

/// A job file must parse or be refused with an error; never panic.
fn check_job(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "").unwrap();
    let _ = Job::parse(text, &dir.path().join("job.toml"));
}

/// Bytes that look like JSONL: JSON-ish fragments, quotes, braces, newlines, invalid UTF-8, a BOM.
fn jsonl_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"{\"id\": \"a\", \"prompt\": \"hi\"}".to_vec()),
        Just(b"{\"recordId\": 1, \"modelInput\": {}}".to_vec()),
        Just(b"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"\\u0000".to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
        "[ -~]{0,12}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn csv_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"id,q\n".to_vec()),
        Just(b"a,b\n".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
        "[ -~]{0,10}".prop_map(String::into_bytes),
    ];
    (
        Just(b"id,q\n".to_vec()),
        prop::collection::vec(piece, 0..24),
    )
        .prop_map(|(head, v)| [head, v.concat()].concat())
}

/// Text that looks like a job file: tables and keys of a job in any order, with values of any type.
fn job_text() -> impl Strategy<Value = String> {
    let table = prop::sample::select(vec![
        "[job]",
        "[model]",
        "[input]",
        "[budget]",
        "[retry]",
        "[output]",
        "[endpoint]",
        "[s3]",
        "[[x]]",
    ]);
    let key = prop::sample::select(vec![
        "name",
        "id",
        "region",
        "api",
        "max-tokens",
        "temperature",
        "top-p",
        "system",
        "output-burndown",
        "path",
        "format",
        "template",
        "body-template",
        "id-column",
        "rpm",
        "tpm",
        "max-concurrency",
        "base-delay-ms",
        "max-delay-ms",
        "max-attempts",
        "records-per-part",
        "url",
        "emulator-profile",
        "timeout-secs",
        "force-path-style",
        "follow-links-outside",
        "allow-insecure-http",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| if x.is_finite() {
            format!("{x:e}")
        } else {
            "nan".into()
        }),
        Just("inf".to_string()),
        Just("true".to_string()),
        Just("\"in.jsonl\"".to_string()),
        Just("\"emulator\"".to_string()),
        Just("\"http://127.0.0.1:1\"".to_string()),
        Just("\"s3://bucket/key\"".to_string()),
        Just("\"{{ text }}\"".to_string()),
        Just("\"{% for %}\"".to_string()),
        "\"[ -~]{0,10}\"".prop_map(|s| s.replace('\\', "")),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    let line = prop_oneof![
        1 => table.prop_map(str::to_string),
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[ -~]{0,20}",
    ];
    let base = "[job]\nname = \"f\"\n[model]\nid = \"m\"\nmax-tokens = 5\n[input]\npath = \"in.jsonl\"\n\
                format = \"jsonl\"\n[output]\npath = \"../out\"\n";
    (any::<bool>(), prop::collection::vec(line, 0..16)).prop_map(move |(with_base, lines)| {
        let tail = lines.join("\n");
        if with_base {
            format!("{base}{tail}\n")
        } else {
            tail
        }
    })
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn jsonl_reader(bytes in jsonl_bytes()) {
        check_jsonl(&bytes);
    }

    #[test]
    fn csv_reader(bytes in csv_bytes()) {
        check_csv(&bytes);
    }

    #[test]
    fn document_reader(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_document(&bytes);
    }

    #[test]
    fn job_file_parser(text in job_text()) {
        check_job(&text);
    }
}

/// Every file under `tests/fuzz/KIND/`.
fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

#[test]
fn inputs_that_once_broke_something_still_pass() {
    for f in corpus("jsonl") {
        check_jsonl(&std::fs::read(&f).unwrap());
    }
    for f in corpus("csv") {
        check_csv(&std::fs::read(&f).unwrap());
    }
    for f in corpus("documents") {
        check_document(&std::fs::read(&f).unwrap());
    }
    for f in corpus("job") {
        check_job(&std::fs::read_to_string(&f).unwrap());
    }
}
