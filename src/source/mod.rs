//! Input records: which files a job reads ([`list`]), and each file read as a stream of [`Item`]s, a record
//! ready to send or a bad line with its location and reason. Memory is bounded by one line (or one document).
//!
//! It does not touch the checkpoint; the runner decides what to do with bad lines (mark them failed).

mod files;
mod reader;
mod request;

use std::path::PathBuf;

pub use files::{InputFile, list};
pub use reader::items;
pub use request::RequestBuilder;

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
    /// A file or folder could not be read.
    #[error("failed to read input {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file whose header lacks the id column.
    #[error("{}: the header has no `{column}` column (columns: {found}); set input.id-column to the column that holds ids", path.display())]
    CsvNoIdColumn {
        /// The file.
        path: PathBuf,
        /// The expected id column.
        column: String,
        /// The columns found.
        found: String,
    },
    /// A CSV header that cannot be read.
    #[error("{}: cannot read the CSV header: {message}", path.display())]
    CsvHeader {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}
