//! The job file: `job.toml` read into raw serde types ([`spec`]), checked (`check.rs`, one function per TOML
//! table) into a [`Job`] (`settings.rs`) with every path resolved and every cross-field rule applied; its
//! [`Settings`] are what a resumed run must share with the first.
//!
//! It does not read inputs (that is `source`) nor open the state database (that is `checkpoint`).

pub mod batch;
mod check;
pub mod embed;
mod error;
mod location;
mod overlap;
mod settings;
pub mod spec;
mod targets;

pub use batch::BatchSettings;
pub use check::{MAX_TOKENS, MIN_CHUNK_TOKENS};
pub use embed::{EmbedFamily, EmbedSettings};
pub use error::JobError;
pub use location::Location;
pub use settings::{
    BurndownFrom, ChunkSettings, Endpoint, Job, ModelSettings, RetrySettings, Settings, Target,
};
pub use spec::{
    Api, CacheTtl, InputFormat, Mode, OnDailyQuota, OnRecordError, OutputFormat, ServiceTier,
    UnsupportedTier,
};
