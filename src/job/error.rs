//! Job file errors. Each names the file, the key or line and column, and what to do.

use std::path::PathBuf;

/// A job file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("failed to read job file {}", path.display())]
    Read {
        /// The job file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, a wrong type, a missing or unknown key: the TOML parser's message with line and caret.
    #[error("invalid job file {}:\n{message}", path.display())]
    Parse {
        /// The job file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The model table (`BATCHRUN_MODELS`) cannot be used.
    #[error(transparent)]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    /// A value that parses but cannot work.
    #[error("invalid job file {}:\n{message}", path.display())]
    Invalid {
        /// The job file.
        path: PathBuf,
        /// Where, what is wrong, and what to do.
        message: String,
    },
}
