//! Results on disk or in S3: numbered part files rendered from the checkpoint and published atomically, then a
//! `manifest.json`. A part's bytes depend only on its records' stored outcomes, so a part that was being
//! written when the process died is rebuilt byte for byte on resume.
//!
//! It writes what it is given; deciding when a part is complete is the runner's job.

mod local;
mod render;
mod s3;

use sha2::{Digest, Sha256};

pub use local::{LocalPart, LocalSink, OutputError};
pub use render::{
    Layout, Manifest, ManifestChanges, ManifestPart, part_file_name, render_delete, render_part,
    render_rows, render_upserts,
};
pub use s3::S3Sink;

/// Where a job's output goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A local folder.
    Local(LocalSink),
    /// An S3 prefix.
    S3(S3Sink),
}

/// What was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The size and SHA-256 of output written in pieces.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    hasher: Sha256,
    bytes: u64,
}

impl Tally {
    /// Counts `bytes`.
    pub fn add(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// What was counted.
    pub fn done(self) -> Published {
        Published {
            bytes: self.bytes,
            sha256: self
                .hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }
}

/// Whether a file name is one batchrun writes in an output folder or prefix (parts, the manifest, and their
/// temporary files), so that a fresh start removes exactly these.
pub(crate) fn is_ours(name: &str) -> bool {
    name == "manifest.json"
        || name == "changes.jsonl"
        || name.starts_with(".changes")
        || (name.starts_with("part-")
            || name.starts_with(".part-")
            || name.starts_with(".manifest"))
            && (name.ends_with(".jsonl") || name.ends_with(".csv") || name.ends_with(".tmp"))
}

/// The `manifest.json` text.
pub fn manifest_bytes(manifest: &Manifest) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(manifest).expect("the manifest serializes");
    text.push('\n');
    text.into_bytes()
}
