//! The job file: `job.toml` read into raw serde types ([`spec`]), checked into a [`Job`] with every path
//! resolved and every cross-field rule applied, and fingerprinted so that a resumed run can tell whether the
//! job still means the same thing.
//!
//! It does not read inputs (that is `source`) nor open the state database (that is `checkpoint`).

mod error;
mod location;
mod overlap;
pub mod spec;
mod validate;

pub use error::JobError;
pub use location::Location;
pub use spec::{Api, InputFormat, OutputFormat};
pub use validate::{Endpoint, Job, MAX_TOKENS, ModelSettings, RetrySettings, Settings};
