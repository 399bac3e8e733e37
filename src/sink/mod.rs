//! Results on disk: numbered part files rendered from the checkpoint and published atomically, then a
//! `manifest.json`. A part's bytes depend only on its records' stored outcomes, so a part that was being
//! written when the process died is rebuilt byte for byte on resume.
//!
//! It writes what it is given; deciding when a part is complete is the runner's job.

mod local;
mod render;

pub use local::{LocalSink, OutputError, Published};
pub use render::{Manifest, ManifestPart, part_file_name, render_part};
