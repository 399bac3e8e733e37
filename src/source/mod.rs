//! Input records: which files a job reads ([`list`]), and each file read as a stream of [`Item`]s, a record
//! ready to send or a bad line with its location and reason ([`items`]; [`read_in_batches`] does it on a
//! blocking thread for the async side). Memory is bounded by one line (or one document) and one batch.
//!
//! It does not touch the checkpoint; the runner decides what to do with bad lines (mark them failed).

mod batches;
pub mod chunk;
mod files;
mod reader;
mod request;

use std::path::Path;

pub use batches::{BATCH, Reader, read_in_batches};
pub use files::{InputFile, Origin, list_local};
pub use reader::items;
pub use request::RequestBuilder;

/// Readies what reading takes a while to build (the token counter), on a thread of its own, so that the first
/// records are not held up by it: a run calls this first.
pub fn prepare() {
    crate::tokens::prepare();
}

use crate::job::{InputFormat, Job, Location};
use crate::s3::{S3, S3Error, Selection};

/// Lists the inputs of `job`, sorted by relative path: local files, or S3 objects through `s3` (all pages of a
/// prefix; a prefix is read like a folder).
pub async fn list(job: &Job, s3: Option<&S3>) -> Result<Vec<InputFile>, SourceError> {
    let files = list_all(job, s3).await?;
    if job.input.chunk.is_none() {
        return Ok(files);
    }
    let (text, other): (Vec<InputFile>, Vec<InputFile>) =
        files.into_iter().partition(|f| is_text(&f.rel));
    if !other.is_empty() {
        crate::say!("warning: {}", skipped_by_extension(&other));
    }
    if text.is_empty() {
        return Err(SourceError::NoInputs {
            pattern: format!("{} (text and Markdown files, for [chunk])", job.input.path),
        });
    }
    Ok(text)
}

/// File name endings [`chunk`] reads as text: plain text and Markdown.
const TEXT_EXTENSIONS: [&str; 6] = ["txt", "text", "md", "markdown", "mdown", "rst"];

/// Whether `rel` names a text or Markdown file (by its extension, any case).
fn is_text(rel: &str) -> bool {
    Path::new(rel)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| TEXT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// One line for the files chunking skips, counted by extension: `skipped 12 files that are not text or
/// Markdown: 7 .pdf, 4 .docx, 1 without an extension`.
fn skipped_by_extension(files: &[InputFile]) -> String {
    let mut by_ext: std::collections::BTreeMap<String, usize> = Default::default();
    for f in files {
        let ext = Path::new(&f.rel)
            .extension()
            .map_or("without an extension".to_string(), |e| {
                format!(".{}", e.to_string_lossy().to_ascii_lowercase())
            });
        *by_ext.entry(ext).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> = by_ext.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let listed: Vec<String> = counts.iter().map(|(e, n)| format!("{n} {e}")).collect();
    format!(
        "skipped {} file{} that {} not text or Markdown ([chunk] reads .{}): {}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        if files.len() == 1 { "is" } else { "are" },
        TEXT_EXTENSIONS.join(", ."),
        listed.join(", ")
    )
}

/// Every input of `job`, whatever its kind.
async fn list_all(job: &Job, s3: Option<&S3>) -> Result<Vec<InputFile>, SourceError> {
    let uri = match &job.input.location {
        Location::Local(path) => {
            return list_local(path, job.input.format, job.input.follow_links_outside);
        }
        Location::S3(uri) => uri,
    };
    let s3 = s3.expect("S3 inputs are listed with an S3 client");
    let pattern = matches!(uri.selection(), Ok(Selection::Pattern { .. }));
    let format = job.input.format;
    let files: Vec<InputFile> = s3
        .list(uri)
        .await?
        .into_iter()
        .map(|o| InputFile::from_s3(uri, o))
        .filter(|f| {
            // The named object, or a pattern's matches, are read whatever their names; a prefix is filtered as
            // a folder is: JSONL and CSV at its top level by extension, documents at every level.
            let named = f.uri.as_deref() == Some(&uri.to_string());
            named
                || pattern
                || (files::wanted(Path::new(&f.rel), format)
                    && (format == InputFormat::Documents || !f.rel.contains('/')))
        })
        .collect();
    if files.is_empty() {
        return Err(SourceError::NoInputs {
            pattern: uri.to_string(),
        });
    }
    Ok(files)
}

/// A record ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record's id, unique within the job.
    pub id: String,
    /// Where it came from: `file:line`, or the document's relative path.
    pub location: String,
    /// The request body, compact JSON: a Converse request or an InvokeModel body. Written to the output as
    /// `modelInput`.
    pub request: String,
    /// Estimated input tokens.
    pub est_tokens: u64,
    /// Output tokens the request may produce (`maxTokens`), reserved from the TPM budget while it runs.
    pub max_tokens: u64,
    /// A chunk's place in its document, as a JSON object (`doc`, `chunk`, `start`, `end`, `tokens`).
    pub meta: Option<String>,
}

/// A line or document that cannot become a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// `file:line` or the document's relative path.
    pub location: String,
    /// The record's id when it could be read.
    pub id: Option<String>,
    /// What is wrong, and what to do.
    pub message: String,
}

/// One input unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A record to send.
    Good(Record),
    /// A record that is failed as it is read.
    Bad(BadRecord),
}

/// Inputs that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A glob matched nothing, or a folder holds no input files.
    #[error("input.path {pattern} matches no input files")]
    NoInputs {
        /// The resolved path or pattern.
        pattern: String,
    },
    /// The glob pattern is malformed.
    #[error("input.path {pattern} is not a valid glob: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The glob parser's message.
        message: String,
    },
    /// Listing or opening S3 inputs failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A file, folder or object could not be read.
    #[error("failed to read input {name}")]
    Io {
        /// The path or URI.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file whose header lacks the id column.
    #[error(
        "{name}: the header has no `{column}` column (columns: {found}); set input.id-column to the column that holds ids"
    )]
    CsvNoIdColumn {
        /// The file.
        name: String,
        /// The expected id column.
        column: String,
        /// The columns found.
        found: String,
    },
    /// A CSV header that cannot be read.
    #[error("{name}: cannot read the CSV header: {message}")]
    CsvHeader {
        /// The file.
        name: String,
        /// The parser's message.
        message: String,
    },
}
