//! Reading one input file into [`Item`]s, pushed to a callback one at a time so that memory stays bounded.

use std::io::{BufRead, BufReader, Read};

use serde_json::{Map, Value};

use super::files::Origin;
use super::request::{Built, RequestBuilder};
use super::{BadRecord, InputFile, Item, Record, SourceError, chunk};
use crate::job::{ChunkSettings, InputFormat, Job};
use crate::s3::S3;
use tokio_util::io::SyncIoBridge;

/// Opens an input for reading: a file, or an S3 object streamed as it is read (this runs on a blocking thread
/// inside the runtime, which drives the download).
fn open(file: &InputFile, s3: Option<&S3>) -> Result<Box<dyn Read + Send>, SourceError> {
    match &file.origin {
        Origin::File(path) => {
            let f = std::fs::File::open(path).map_err(|source| SourceError::Io {
                name: file.name(),
                source,
            })?;
            Ok(Box::new(f))
        }
        Origin::S3(uri) => {
            let s3 = s3.expect("S3 inputs are read with an S3 client");
            let etag = file.etag.as_deref().unwrap_or("");
            let handle = tokio::runtime::Handle::current();
            let body = handle.block_on(s3.get(uri, etag))?;
            Ok(Box::new(SyncIoBridge::new_with_handle(
                body.into_async_read(),
                handle,
            )))
        }
    }
}

fn item(id: String, location: String, built: Result<Built, String>) -> Item {
    match built {
        Ok(b) => Item::Good(Record {
            id,
            location,
            request: b.request,
            est_tokens: b.est_tokens,
            max_tokens: b.max_tokens,
            meta: None,
        }),
        Err(message) => Item::Bad(BadRecord {
            location,
            id: Some(id),
            message,
        }),
    }
}

fn bad(location: String, message: impl Into<String>) -> Item {
    Item::Bad(BadRecord {
        location,
        id: None,
        message: message.into(),
    })
}

/// Reads `file` as `job.input.format` says and hands each item to `emit`; stops early when `emit` returns
/// false.
pub fn items(
    job: &Job,
    builder: &RequestBuilder,
    file: &InputFile,
    s3: Option<&S3>,
    emit: &mut dyn FnMut(Item) -> bool,
) -> Result<(), SourceError> {
    let input = open(file, s3)?;
    match job.input.format {
        InputFormat::Jsonl => jsonl(builder, file, input, emit),
        InputFormat::Csv => csv(builder, file, input, &job.input.id_column, emit),
        InputFormat::Documents => document(builder, file, input, job.input.chunk, emit),
    }
}

fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The largest record read: the largest request body Bedrock accepts (InvokeModel's `body` is at most
/// 25,000,000 bytes; research/bedrock.md). A larger line, row or document is a failed record, skipped without
/// being held in memory.
pub const MAX_RECORD_BYTES: u64 = 25_000_000;

fn too_large(what: &str, size: u64, at_least: bool) -> String {
    format!(
        "the {what} is {}{size} bytes, larger than the largest request Bedrock accepts ({MAX_RECORD_BYTES} bytes); \
         shorten it or split it into several records",
        if at_least { "at least " } else { "" }
    )
}

/// One line read with bounded memory: its bytes when it fits in `cap`, else only its length.
enum Line {
    Text,
    TooLong(u64),
}

/// Reads the next line into `buf` (without its newline), keeping at most `cap` bytes: a longer line is
/// consumed to its end and reported by length. `None` at the end of the input.
fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: u64,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut len = 0u64;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        len += take as u64;
        if len <= cap {
            buf.extend_from_slice(&chunk[..take]);
        } else if !buf.is_empty() {
            buf.clear();
            buf.shrink_to(64 * 1024);
        }
        reader.consume(take + usize::from(end));
        if end {
            break;
        }
    }
    Ok(match (any, len > cap) {
        (false, _) => None,
        (true, false) => Some(Line::Text),
        (true, true) => Some(Line::TooLong(len)),
    })
}

/// Drops a UTF-8 byte-order mark at the start of `bytes`.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn jsonl(
    builder: &RequestBuilder,
    file: &InputFile,
    input: Box<dyn Read + Send>,
    emit: &mut dyn FnMut(Item) -> bool,
) -> Result<(), SourceError> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        let read = read_line(&mut reader, &mut buf, MAX_RECORD_BYTES).map_err(|source| {
            SourceError::Io {
                name: file.name(),
                source,
            }
        })?;
        let Some(read) = read else {
            return Ok(());
        };
        line_no += 1;
        let location = format!("{}:{line_no}", file.rel);
        if let Line::TooLong(len) = read {
            if !emit(bad(location, too_large("line", len, false))) {
                return Ok(());
            }
            continue;
        }
        let bytes = if line_no == 1 { strip_bom(&buf) } else { &buf };
        let Ok(line) = std::str::from_utf8(bytes) else {
            if !emit(bad(location, "the line is not UTF-8 text")) {
                return Ok(());
            }
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = match serde_json::from_str::<Value>(line) {
            Err(e) => bad(location, format!("invalid JSON: {e}")),
            Ok(Value::Object(obj)) => json_record(builder, &obj, location),
            Ok(_) => bad(location, "each line must be a JSON object"),
        };
        if !emit(parsed) {
            return Ok(());
        }
    }
}

fn json_record(builder: &RequestBuilder, obj: &Map<String, Value>, location: String) -> Item {
    // A record without an id is named by where it stands, as Bedrock batch names records it assigns.
    let id = obj
        .get("recordId")
        .or_else(|| obj.get("id"))
        .and_then(id_of)
        .unwrap_or_else(|| location.clone());
    let fields = Value::Object(obj.clone());
    let built = if let Some(input) = obj.get("modelInput") {
        builder.from_model_input(input)
    } else if let Some(messages) = obj.get("messages").filter(|_| !builder.has_template()) {
        builder.from_messages(messages, obj.get("system").and_then(Value::as_str))
    } else {
        builder.from_fields(&fields, obj.get("prompt").and_then(Value::as_str))
    };
    item(id, location, built)
}

/// Hands bytes to the CSV parser, counting them since the last [`Capped::reset`]; past `cap` it fails the read
/// with [`RowTooLarge`], so one row never takes more memory than the cap.
struct Capped<R> {
    inner: R,
    since_reset: u64,
    cap: u64,
}

#[derive(Debug)]
struct RowTooLarge;

impl std::fmt::Display for RowTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("row too large")
    }
}

impl std::error::Error for RowTooLarge {}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_reset > self.cap {
            return Err(std::io::Error::other(RowTooLarge));
        }
        let n = self.inner.read(buf)?;
        self.since_reset += n as u64;
        Ok(n)
    }
}

fn row_too_large(e: &::csv::Error) -> bool {
    match e.kind() {
        ::csv::ErrorKind::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<RowTooLarge>().is_some()),
        _ => false,
    }
}

fn csv(
    builder: &RequestBuilder,
    file: &InputFile,
    input: Box<dyn Read + Send>,
    id_column: &str,
    emit: &mut dyn FnMut(Item) -> bool,
) -> Result<(), SourceError> {
    let io_error = |source| SourceError::Io {
        name: file.name(),
        source,
    };
    let (mut reader, headers) = open_csv(file, input)?;
    let Some(id_index) = headers.iter().position(|h| h == id_column) else {
        return Err(SourceError::CsvNoIdColumn {
            name: file.name(),
            column: id_column.to_string(),
            found: headers.iter().collect::<Vec<_>>().join(", "),
        });
    };
    let columns = Columns {
        headers: &headers,
        id_index,
        id_column,
    };
    let mut row = ::csv::StringRecord::new();
    // Lines before the current parser's first (it restarts after a row too large to read).
    let mut lines_before = 0u64;
    loop {
        reader.get_mut().since_reset = 0;
        let read = reader.read_record(&mut row);
        // Lines count from 1 at the header; a record spanning lines is named by its first.
        let line = lines_before
            + match &read {
                Ok(_) => row.position().map(|p| p.line()),
                Err(e) => e.position().map(|p| p.line()),
            }
            .unwrap_or(reader.position().line());
        let location = format!("{}:{line}", file.rel);
        let parsed = match read {
            Ok(false) => return Ok(()),
            Err(e) if row_too_large(&e) => {
                let size;
                (reader, size) = skip_row(reader, &mut lines_before).map_err(io_error)?;
                bad(
                    format!("{}:{}", file.rel, lines_before),
                    too_large("row", size, true),
                )
            }
            Err(e) => bad(location, format!("unreadable CSV row: {e}")),
            Ok(true) => columns.item(builder, &row, location),
        };
        if !emit(parsed) {
            return Ok(());
        }
    }
}

type CsvReader = ::csv::Reader<Capped<BufReader<Box<dyn Read + Send>>>>;

/// A CSV parser over `input` with rows capped in size, and the header row.
fn open_csv(
    file: &InputFile,
    input: Box<dyn Read + Send>,
) -> Result<(CsvReader, ::csv::StringRecord), SourceError> {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    // A byte-order mark before the header would become part of the first column's name.
    let start = input.fill_buf().map_err(|source| SourceError::Io {
        name: file.name(),
        source,
    })?;
    if start.starts_with(b"\xEF\xBB\xBF") {
        input.consume(3);
    }
    let capped = Capped {
        inner: input,
        since_reset: 0,
        cap: MAX_RECORD_BYTES,
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(capped);
    let headers = reader
        .headers()
        .map_err(|e| SourceError::CsvHeader {
            name: file.name(),
            message: e.to_string(),
        })?
        .clone();
    Ok((reader, headers))
}

/// After a row too large to read: skips to the end of its line without keeping it and returns a new parser
/// (the old one had handed out every byte it buffered) and the row's size; `lines_before` moves past it.
fn skip_row(reader: CsvReader, lines_before: &mut u64) -> std::io::Result<(CsvReader, u64)> {
    let line_at = reader.position().line().max(1);
    let mut rest = reader.into_inner();
    let skipped = rest.inner.skip_until(b'\n')? as u64;
    let size = rest.since_reset + skipped;
    rest.since_reset = 0;
    *lines_before += line_at;
    let reader = ::csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(rest);
    Ok((reader, size))
}

/// A CSV file's header row and its id column.
struct Columns<'a> {
    headers: &'a ::csv::StringRecord,
    id_index: usize,
    id_column: &'a str,
}

impl Columns<'_> {
    /// A parsed row as a record, or as a bad record with the reason.
    fn item(&self, builder: &RequestBuilder, row: &::csv::StringRecord, location: String) -> Item {
        let headers = self.headers;
        let size = row.as_byte_record().as_slice().len() as u64;
        // A row just over the cap can be parsed whole before the reader is asked for more bytes.
        if size > MAX_RECORD_BYTES {
            return bad(location, too_large("row", size, true));
        }
        if row.len() != headers.len() {
            return Item::Bad(BadRecord {
                location,
                // The id is kept when the row is long enough to hold it.
                id: row
                    .get(self.id_index)
                    .and_then(|v| id_of(&Value::String(v.to_string()))),
                message: format!(
                    "expected {} columns ({}), found {}",
                    headers.len(),
                    headers.iter().collect::<Vec<_>>().join(", "),
                    row.len()
                ),
            });
        }
        let Some(id) = id_of(&Value::String(row[self.id_index].to_string())) else {
            return bad(
                location,
                format!("the `{}` column is empty", self.id_column),
            );
        };
        let fields: Map<String, Value> = headers
            .iter()
            .zip(row.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        item(
            id,
            location,
            builder.from_fields(&Value::Object(fields), None),
        )
    }
}

/// A chunk's place in its document: template fields, and keys of its output line (in this order).
#[derive(serde::Serialize)]
struct ChunkMeta<'a> {
    doc: &'a str,
    chunk: usize,
    start: usize,
    end: usize,
    tokens: u64,
}

fn document(
    builder: &RequestBuilder,
    file: &InputFile,
    input: Box<dyn Read + Send>,
    chunking: Option<ChunkSettings>,
    emit: &mut dyn FnMut(Item) -> bool,
) -> Result<(), SourceError> {
    let failed = |message: String| {
        Item::Bad(BadRecord {
            location: file.rel.clone(),
            id: Some(file.rel.clone()),
            message,
        })
    };
    if file.size > MAX_RECORD_BYTES {
        emit(failed(too_large("document", file.size, false)));
        return Ok(());
    }
    // The listed size bounds the read; a file that grew since is cut off at the cap and refused.
    let mut bytes = Vec::with_capacity(file.size as usize);
    input
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SourceError::Io {
            name: file.name(),
            source,
        })?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        emit(failed(too_large("document", bytes.len() as u64, true)));
        return Ok(());
    }
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    let Ok(text) = String::from_utf8(bytes) else {
        emit(failed("the document is not UTF-8 text".into()));
        return Ok(());
    };
    let file_name = file.rel.rsplit('/').next().unwrap_or(&file.rel).to_string();
    let Some(chunking) = chunking else {
        let fields = serde_json::json!({ "text": text, "file_name": file_name, "path": file.rel });
        let built = builder.from_fields(&fields, Some(&text));
        emit(item(file.rel.clone(), file.rel.clone(), built));
        return Ok(());
    };
    for (n, c) in chunk::split(&text, chunking.tokens, chunking.overlap)
        .into_iter()
        .enumerate()
    {
        let piece = &text[c.bytes.clone()];
        let meta = ChunkMeta {
            doc: &file.rel,
            chunk: n,
            start: c.chars.start,
            end: c.chars.end,
            tokens: c.tokens,
        };
        let mut fields = serde_json::to_value(&meta).expect("a chunk's place serializes");
        fields["text"] = piece.into();
        fields["file_name"] = file_name.as_str().into();
        fields["path"] = file.rel.as_str().into();
        let id = format!("{}#{n}", file.rel);
        let mut chunk = item(id.clone(), id, builder.from_fields(&fields, Some(piece)));
        if let Item::Good(r) = &mut chunk {
            r.meta = Some(serde_json::to_string(&meta).expect("a chunk's place serializes"));
        }
        if !emit(chunk) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::job::Location;
    use crate::source::list_local;

    fn job(dir: &Path, extra: &str) -> Job {
        let text = format!(
            "[job]\nname = \"t\"\n[model]\nid = \"m\"\nmax-tokens = 50\n{extra}\n[output]\npath = \"out\"\n"
        );
        Job::parse(&text, &dir.join("job.toml")).unwrap()
    }

    fn read_all(job: &Job) -> Vec<Item> {
        let builder = RequestBuilder::new(job);
        let mut out = Vec::new();
        let Location::Local(path) = &job.input.location else {
            panic!("a local input")
        };
        for file in list_local(path, job.input.format, false).unwrap() {
            items(job, &builder, &file, None, &mut |i| {
                out.push(i);
                true
            })
            .unwrap();
        }
        out
    }

    fn good(i: &Item) -> &Record {
        match i {
            Item::Good(r) => r,
            Item::Bad(b) => panic!("unexpected bad record {b:?}"),
        }
    }

    fn bad_message(i: &Item) -> (&str, &str) {
        match i {
            Item::Bad(b) => (b.location.as_str(), b.message.as_str()),
            Item::Good(r) => panic!("unexpected good record {r:?}"),
        }
    }

    #[test]
    fn jsonl_lines_of_every_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.jsonl"),
            concat!(
                "{\"id\": \"a\", \"prompt\": \"Hello\"}\n",
                "\n",
                "{\"id\": 7, \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"system\": \"Sys\"}\n",
                "{\"id\": \"b\", \"prompt\": \"  \"}\n",
                "{not json\n",
                "{\"prompt\": \"no id\"}\n",
            ),
        )
        .unwrap();
        let items = read_all(&job(
            dir.path(),
            "[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"",
        ));
        assert_eq!(items.len(), 5);
        let a = good(&items[0]);
        assert_eq!(a.id, "a");
        assert_eq!(a.location, "in.jsonl:1");
        assert_eq!(
            a.request,
            r#"{"inferenceConfig":{"maxTokens":50},"messages":[{"content":[{"text":"Hello"}],"role":"user"}]}"#
        );
        assert_eq!(a.max_tokens, 50);
        let seven = good(&items[1]);
        assert_eq!(seven.id, "7");
        assert!(
            seven.request.contains(r#""system":[{"text":"Sys"}]"#),
            "{}",
            seven.request
        );
        assert_eq!(
            bad_message(&items[2]),
            ("in.jsonl:4", "empty prompt: the record has no text to send")
        );
        let (loc, msg) = bad_message(&items[3]);
        assert_eq!(loc, "in.jsonl:5");
        assert!(msg.starts_with("invalid JSON"), "{msg}");
        assert_eq!(good(&items[4]).id, "in.jsonl:6");
    }

    #[test]
    fn bedrock_batch_lines_are_sent_as_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("in.jsonl"),
            "{\"recordId\": \"r1\", \"modelInput\": {\"inputText\": \"embed me\"}}\n\
             {\"recordId\": \"r2\", \"modelInput\": {\"anthropic_version\": \"x\", \"max_tokens\": 300, \"messages\": []}}\n",
        )
        .unwrap();
        let j = job(
            dir.path(),
            "api = \"invoke\"\n[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"",
        );
        let items = read_all(&j);
        let r1 = good(&items[0]);
        assert_eq!(r1.request, r#"{"inputText":"embed me"}"#);
        // No cap in the body: the job's max-tokens is reserved.
        assert_eq!(r1.max_tokens, 50);
        assert_eq!(good(&items[1]).max_tokens, 300);
    }

    #[test]
    fn csv_rows_render_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("q.csv"),
            "id,question,context\nq1,What?,Ctx one\nq2,Why?\nq3,How?,\"multi\nline\"\n,Who?,x\n",
        )
        .unwrap();
        let j = job(
            dir.path(),
            "[input]\npath = \"q.csv\"\nformat = \"csv\"\ntemplate = \"{{ question }} ({{ context }})\"",
        );
        let items = read_all(&j);
        assert_eq!(items.len(), 4);
        assert!(good(&items[0]).request.contains("What? (Ctx one)"));
        let (loc, msg) = bad_message(&items[1]);
        assert_eq!(loc, "q.csv:3");
        assert!(
            msg.contains("expected 3 columns (id, question, context), found 2"),
            "{msg}"
        );
        assert!(good(&items[2]).request.contains("How? (multi\\nline)"));
        assert_eq!(
            bad_message(&items[3]),
            ("q.csv:6", "the `id` column is empty")
        );
    }

    #[test]
    fn csv_template_naming_a_missing_column_fails_the_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("q.csv"), "id,question\nq1,What?\n").unwrap();
        let j = job(
            dir.path(),
            "[input]\npath = \"q.csv\"\nformat = \"csv\"\ntemplate = \"{{ answer }}\"",
        );
        let items = read_all(&j);
        let (_, msg) = bad_message(&items[0]);
        assert!(msg.contains("undefined"), "{msg}");
    }

    #[test]
    fn chunked_documents_become_one_record_a_chunk_with_their_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        let body = "A sentence of the section, long enough to count. ".repeat(30);
        std::fs::write(
            dir.path().join("docs/a.md"),
            format!("# A\n\n{body}\n\n## B\n\n{body}"),
        )
        .unwrap();
        std::fs::write(dir.path().join("docs/é.txt"), "Ünïcode note.").unwrap();
        let j = job(
            dir.path(),
            "[input]\npath = \"docs\"\nformat = \"documents\"\n\
             template = \"{{ doc }}#{{ chunk }} {{ start }}-{{ end }} ({{ tokens }}): {{ text }}\"\n\
             [chunk]\ntokens = 100\noverlap = 10",
        );
        let items = read_all(&j);
        let records: Vec<&Record> = items.iter().map(good).collect();
        assert!(records.len() > 5, "{}", records.len());
        for (n, r) in records[..records.len() - 1].iter().enumerate() {
            assert_eq!(r.id, format!("a.md#{n}"));
            let meta: Value = serde_json::from_str(r.meta.as_deref().unwrap()).unwrap();
            assert_eq!(meta["doc"], "a.md");
            assert_eq!(meta["chunk"], n);
            let prefix = format!(
                "a.md#{n} {}-{} ({}): ",
                meta["start"], meta["end"], meta["tokens"]
            );
            assert!(r.request.contains(&prefix), "{} lacks {prefix}", r.request);
            assert!(meta["tokens"].as_u64().unwrap() <= 100);
        }
        let last = records.last().unwrap();
        assert_eq!(last.id, "é.txt#0");
        // Offsets count characters, not bytes (the note is 13 characters, 16 bytes).
        let tokens = crate::tokens::estimate("Ünïcode note.");
        assert_eq!(
            last.meta.as_deref().unwrap(),
            format!("{{\"doc\":\"é.txt\",\"chunk\":0,\"start\":0,\"end\":13,\"tokens\":{tokens}}}")
        );
    }

    #[test]
    fn documents_render_with_text_and_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/a.md"), "Alpha text").unwrap();
        std::fs::write(dir.path().join("docs/b.md"), [0xff, 0xfe]).unwrap();
        let j = job(
            dir.path(),
            "[input]\npath = \"docs\"\nformat = \"documents\"\ntemplate = \"{{ file_name }}: {{ text }}\"",
        );
        let items = read_all(&j);
        let a = good(&items[0]);
        assert_eq!(a.id, "a.md");
        assert!(a.request.contains("a.md: Alpha text"), "{}", a.request);
        assert_eq!(
            bad_message(&items[1]),
            ("b.md", "the document is not UTF-8 text")
        );
    }

    #[test]
    fn documents_through_a_body_template_for_embeddings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "say \"hi\"").unwrap();
        let j = job(
            dir.path(),
            "api = \"invoke\"\n[input]\npath = \"a.txt\"\nformat = \"documents\"\nbody-template = '{\"inputText\": {{ text | tojson }}}'",
        );
        assert_eq!(
            good(&read_all(&j)[0]).request,
            r#"{"inputText":"say \"hi\""}"#
        );
    }

    /// A line, row or document of `size` bytes of text (the prompt is plain letters).
    fn big(size: usize) -> String {
        "a".repeat(size)
    }

    #[test]
    fn records_larger_than_a_request_are_failed_in_place_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let huge = MAX_RECORD_BYTES as usize + 1_000;
        // JSONL: a byte-order mark, a good line, a line too large, a good line.
        let mut jsonl = b"\xEF\xBB\xBF{\"id\": \"a\", \"prompt\": \"Hello\"}\n".to_vec();
        let line = format!("{{\"id\": \"big\", \"prompt\": \"{}\"}}", big(huge));
        jsonl.extend_from_slice(line.as_bytes());
        jsonl.push(b'\n');
        jsonl.extend_from_slice(b"{\"id\": \"c\", \"prompt\": \"Bye\"}\n");
        std::fs::write(dir.path().join("in.jsonl"), jsonl).unwrap();
        let items = read_all(&job(
            dir.path(),
            "[input]\npath = \"in.jsonl\"\nformat = \"jsonl\"",
        ));
        assert_eq!(items.len(), 3);
        assert_eq!(good(&items[0]).id, "a");
        let (at, message) = bad_message(&items[1]);
        assert_eq!(at, "in.jsonl:2");
        assert!(
            message.contains(&format!("the line is {} bytes", line.len()))
                && message.contains("larger than the largest request Bedrock accepts"),
            "{message}"
        );
        assert_eq!(good(&items[2]).id, "c");

        // CSV: a byte-order mark before the header, a row too large between two good ones.
        let mut csv = b"\xEF\xBB\xBFid,question\nq1,What?\n".to_vec();
        csv.extend_from_slice(format!("q2,{}\n", big(huge)).as_bytes());
        // Far past the cap: the reader stops handing bytes to the parser and skips to the line's end.
        csv.extend_from_slice(format!("q2b,{}\n", big(huge + 100_000)).as_bytes());
        csv.extend_from_slice(b"q3,How?\n");
        std::fs::write(dir.path().join("q.csv"), csv).unwrap();
        let items = read_all(&job(
            dir.path(),
            "[input]\npath = \"q.csv\"\nformat = \"csv\"\ntemplate = \"{{ question }}\"",
        ));
        assert_eq!(items.len(), 4);
        assert_eq!(good(&items[0]).id, "q1");
        for (item, line) in items[1..3].iter().zip([3, 4]) {
            let (at, message) = bad_message(item);
            assert_eq!(at, format!("q.csv:{line}"));
            assert!(message.contains("the row is at least"), "{message}");
        }
        assert_eq!(good(&items[3]).id, "q3");
        assert_eq!(good(&items[3]).location, "q.csv:5");

        // Documents: too large is failed by its listed size; a byte-order mark is dropped.
        std::fs::create_dir_all(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/big.md"), big(huge)).unwrap();
        std::fs::write(dir.path().join("docs/small.md"), b"\xEF\xBB\xBFHi").unwrap();
        let items = read_all(&job(
            dir.path(),
            "[input]\npath = \"docs\"\nformat = \"documents\"\ntemplate = \"[{{ text }}]\"",
        ));
        let (at, message) = bad_message(&items[0]);
        assert_eq!(at, "big.md");
        assert!(
            message.contains(&format!("the document is {huge} bytes")),
            "{message}"
        );
        assert!(
            good(&items[1]).request.contains("\"[Hi]\""),
            "{}",
            good(&items[1]).request
        );
    }

    #[test]
    fn a_long_line_is_read_without_keeping_it() {
        let text = format!("short\n{}\nlast", big(10_000));
        let mut reader = BufReader::with_capacity(64, text.as_bytes());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut buf, 100).unwrap(),
            Some(Line::Text)
        ));
        assert_eq!(buf, b"short");
        assert!(matches!(
            read_line(&mut reader, &mut buf, 100).unwrap(),
            Some(Line::TooLong(10_000))
        ));
        assert!(buf.capacity() <= 64 * 1024);
        assert!(matches!(
            read_line(&mut reader, &mut buf, 100).unwrap(),
            Some(Line::Text)
        ));
        assert_eq!(buf, b"last");
        assert!(read_line(&mut reader, &mut buf, 100).unwrap().is_none());
    }
}
