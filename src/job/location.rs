//! Where a job reads or writes: a local path or an S3 URI.

use std::path::PathBuf;

use crate::s3::S3Uri;

/// Where inputs are read or outputs written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local path, resolved against the job file's folder.
    Local(PathBuf),
    /// An S3 URI.
    S3(S3Uri),
}

impl Location {
    /// The S3 URI, if this is one.
    pub fn s3(&self) -> Option<&S3Uri> {
        match self {
            Location::S3(u) => Some(u),
            Location::Local(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(u) => write!(f, "{u}"),
        }
    }
}
