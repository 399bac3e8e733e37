//! Rendering records into part bytes, and the manifest.

use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::{OutputRow, Status};
use crate::job::{Job, OutputFormat};

/// How a job's records are laid out in its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// JSONL or CSV.
    pub format: OutputFormat,
    /// Documents are split into chunks: CSV rows carry each chunk's place in its document (JSONL lines carry
    /// it whenever a record has one).
    pub chunked: bool,
    /// The job has several targets: CSV rows name the one that answered (JSONL lines do whenever one did).
    pub targets: bool,
}

impl Layout {
    /// The layout of `job`'s output.
    pub fn of(job: &Job) -> Layout {
        Layout {
            format: job.output.format,
            chunked: job.input.chunk.is_some(),
            targets: job.targets.len() > 1,
        }
    }
}

/// The keys of a chunk's place in its document, in the order CSV columns give them.
const CHUNK_KEYS: [&str; 5] = ["doc", "chunk", "start", "end", "tokens"];

/// The file name of part `part` (from 1).
pub fn part_file_name(part: u64, format: OutputFormat) -> String {
    let ext = match format {
        OutputFormat::Jsonl => "jsonl",
        OutputFormat::Csv => "csv",
    };
    format!("part-{part:05}.{ext}")
}

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The text of a reply: Converse content blocks, an Anthropic messages body, a `generation`, else the JSON.
fn reply_text(result: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(result) else {
        return result.to_string();
    };
    let texts = |blocks: &Value| -> Option<String> {
        let parts: Vec<&str> = blocks
            .as_array()?
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.join(""))
    };
    texts(&v["output"]["message"]["content"])
        .or_else(|| texts(&v["content"]))
        .or_else(|| v["generation"].as_str().map(str::to_string))
        .unwrap_or_else(|| result.to_string())
}

/// The bytes of one part: a line per record in input order.
///
/// JSONL lines are shaped as Bedrock batch output: `{"recordId", "modelInput", "modelOutput"}`, or
/// `{"recordId", "modelInput", "error": {"errorCode", "errorMessage"}}` for a failed record (`modelInput` is left
/// out for an input line that could not be read). CSV has a header and one row per record.
pub fn render_part(rows: &[OutputRow], layout: Layout) -> Vec<u8> {
    render_rows(rows, layout, true)
}

/// The bytes of consecutive rows of a part; `first` says whether they open it (a CSV part starts with its
/// header). A part rendered in pages is byte for byte the part rendered at once.
pub fn render_rows(rows: &[OutputRow], layout: Layout, first: bool) -> Vec<u8> {
    match layout.format {
        OutputFormat::Jsonl => jsonl(rows),
        OutputFormat::Csv => csv(rows, layout, first),
    }
}

/// JSONL lines; a chunk's `doc`, `chunk`, `start`, `end` and `tokens` follow its `recordId`.
fn jsonl(rows: &[OutputRow]) -> Vec<u8> {
    // Sized once: a part can be tens of megabytes, and growing by doubling would hold twice that.
    let size: usize = rows
        .iter()
        .map(|r| {
            r.record_id.len()
                + r.request.as_ref().map_or(0, String::len)
                + r.result.as_ref().map_or(0, String::len)
                + r.error_message.as_ref().map_or(0, String::len)
                + 96
        })
        .sum();
    let mut out = String::with_capacity(size);
    for r in rows {
        out.push_str("{\"recordId\":");
        out.push_str(&json_string(&r.record_id));
        if let Some(meta) = r.meta.as_deref().filter(|m| m.len() > 2) {
            out.push(',');
            out.push_str(&meta[1..meta.len() - 1]);
        }
        if let Some(req) = &r.request {
            out.push_str(",\"modelInput\":");
            out.push_str(req);
        }
        match (r.status, &r.result) {
            (Status::Done, Some(result)) => {
                out.push_str(",\"modelOutput\":");
                out.push_str(result);
                if let Some(n) = r.call_records {
                    out.push_str(",\"recordsInCall\":");
                    out.push_str(&n.to_string());
                }
                if let Some(t) = &r.target {
                    out.push_str(",\"target\":");
                    out.push_str(&json_string(t));
                }
                if let Some(t) = &r.tier {
                    out.push_str(",\"serviceTier\":");
                    out.push_str(&json_string(t));
                }
            }
            _ => {
                out.push_str(",\"error\":{\"errorCode\":");
                out.push_str(&json_string(r.error_code.as_deref().unwrap_or("Unknown")));
                out.push_str(",\"errorMessage\":");
                out.push_str(&json_string(r.error_message.as_deref().unwrap_or("")));
                out.push('}');
            }
        }
        out.push_str("}\n");
    }
    out.into_bytes()
}

/// Change-set lines for rows that are new or changed: each output line with `"op"` first, `"upsert"` for a
/// record with its reply (a vector store takes it), `"failed"` for one without (nothing to store: its error says
/// why; the records it replaces, if any, are deletes).
pub fn render_upserts(rows: &[OutputRow]) -> Vec<u8> {
    let lines = jsonl(rows);
    let mut out = Vec::with_capacity(lines.len() + rows.len() * 16);
    for (line, row) in lines.split_inclusive(|&b| b == b'\n').zip(rows) {
        out.extend_from_slice(match row.status {
            Status::Done => b"{\"op\":\"upsert\",".as_slice(),
            Status::Failed => b"{\"op\":\"failed\",".as_slice(),
        });
        out.extend_from_slice(&line[1..]);
    }
    out
}

/// A change-set line for a record that is gone: `{"op":"delete","recordId",…}` with its chunk's place.
pub fn render_delete(record_id: &str, meta: Option<&str>) -> Vec<u8> {
    let mut line = format!(
        "{{\"op\":\"delete\",\"recordId\":{}",
        json_string(record_id)
    );
    if let Some(meta) = meta.filter(|m| m.len() > 2) {
        line.push(',');
        line.push_str(&meta[1..meta.len() - 1]);
    }
    line.push_str("}\n");
    line.into_bytes()
}

/// CSV rows, after a header when `first`; with the chunk columns for a chunked job, and the target's last for a
/// job with several.
fn csv(rows: &[OutputRow], layout: Layout, first: bool) -> Vec<u8> {
    let chunked = layout.chunked;
    let mut w = csv::Writer::from_writer(Vec::new());
    if first {
        let mut header = vec!["recordId"];
        if chunked {
            header.extend(CHUNK_KEYS);
        }
        header.extend([
            "status",
            "output",
            "errorCode",
            "errorMessage",
            "inputTokens",
            "outputTokens",
        ]);
        if layout.targets {
            header.push("target");
        }
        w.write_record(header).expect("writing to memory");
    }
    for r in rows {
        let (status, output) = match (r.status, &r.result) {
            (Status::Done, Some(result)) => ("done", reply_text(result)),
            _ => ("failed", String::new()),
        };
        let mut fields = vec![r.record_id.clone()];
        if chunked {
            let meta: Value = r
                .meta
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default();
            fields.extend(CHUNK_KEYS.map(|k| match &meta[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            }));
        }
        fields.extend([
            status.to_string(),
            output,
            r.error_code.clone().unwrap_or_default(),
            r.error_message.clone().unwrap_or_default(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
        ]);
        if layout.targets {
            fields.push(r.target.clone().unwrap_or_default());
        }
        w.write_record(&fields).expect("writing to memory");
    }
    w.into_inner().expect("writing to memory")
}

/// `manifest.json`: counts as Bedrock batch names them, token totals, and the parts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The job's name.
    pub job: String,
    /// The model id.
    pub model_id: String,
    /// Input records.
    pub total_record_count: u64,
    /// Records with an outcome.
    pub processed_record_count: u64,
    /// Records that succeeded.
    pub success_record_count: u64,
    /// Records that failed.
    pub error_record_count: u64,
    /// Input tokens Bedrock reported.
    pub input_token_count: u64,
    /// Output tokens Bedrock reported.
    pub output_token_count: u64,
    /// The part files, in order.
    pub parts: Vec<ManifestPart>,
    /// An incremental job's change set against the generation before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<ManifestChanges>,
}

/// The change set of a generation, in the manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestChanges {
    /// `changes.jsonl`.
    pub file: String,
    /// The generation it is against (none for the first).
    pub against: Option<String>,
    /// Records to upsert: new, changed, or answered now and not before.
    pub upserts: u64,
    /// Records new or changed that failed (no reply to store).
    pub failed: u64,
    /// Records gone.
    pub deletes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// One part in the manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ManifestPart {
    /// File name.
    pub file: String,
    /// Records in it.
    pub records: u64,
    /// Size.
    pub bytes: u64,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: Status) -> OutputRow {
        OutputRow {
            record_id: id.into(),
            request: Some(r#"{"messages":[]}"#.into()),
            status,
            result: (status == Status::Done)
                .then(|| r#"{"output":{"message":{"content":[{"text":"hi, there"}]}}}"#.into()),
            error_code: (status == Status::Failed).then(|| "ValidationException".into()),
            error_message: (status == Status::Failed).then(|| "Input is \"too\" long".into()),
            input_tokens: 3,
            output_tokens: 2,
            meta: None,
            call_records: None,
            target: None,
            tier: None,
        }
    }

    fn layout(format: OutputFormat) -> Layout {
        Layout {
            format,
            chunked: false,
            targets: false,
        }
    }

    #[test]
    fn a_part_rendered_in_pages_is_the_part_rendered_at_once() {
        let rows: Vec<OutputRow> = (0..7)
            .map(|i| {
                row(
                    &format!("r{i}"),
                    if i % 3 == 0 {
                        Status::Failed
                    } else {
                        Status::Done
                    },
                )
            })
            .collect();
        for format in [OutputFormat::Jsonl, OutputFormat::Csv] {
            let paged: Vec<u8> = rows
                .chunks(3)
                .enumerate()
                .flat_map(|(i, page)| render_rows(page, layout(format), i == 0))
                .collect();
            assert_eq!(paged, render_part(&rows, layout(format)), "{format:?}");
        }
    }

    #[test]
    fn jsonl_lines_are_bedrock_batch_shaped() {
        let text = String::from_utf8(render_part(
            &[row("a", Status::Done), row("b", Status::Failed)],
            layout(OutputFormat::Jsonl),
        ))
        .unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["recordId"], "a");
        assert_eq!(lines[0]["modelInput"], serde_json::json!({"messages": []}));
        assert_eq!(
            lines[0]["modelOutput"]["output"]["message"]["content"][0]["text"],
            "hi, there"
        );
        assert_eq!(lines[1]["error"]["errorCode"], "ValidationException");
        assert_eq!(lines[1]["error"]["errorMessage"], "Input is \"too\" long");
        assert!(lines[1].get("modelOutput").is_none());
    }

    #[test]
    fn csv_rows_carry_the_reply_text() {
        let text = String::from_utf8(render_part(
            &[row("a", Status::Done), row("b", Status::Failed)],
            layout(OutputFormat::Csv),
        ))
        .unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][2], "hi, there");
        assert_eq!(&rows[1][1], "failed");
        assert_eq!(&rows[1][4], "Input is \"too\" long");
        assert_eq!(part_file_name(12, OutputFormat::Csv), "part-00012.csv");
    }
}
