//! The checkpoint: every job's records, outcomes and published parts in one SQLite database (sqlx, WAL,
//! schema in `migrations/`). It is the single source of truth for resume: a record is done only with its
//! result here, and output parts are rebuilt from here.
//!
//! It stores and answers; it never calls back into the runner or the sink.

mod history;
mod lock;
mod open;
mod store;

pub use history::{ErrorGroup, FailedRecord, OutcomeStats, RunRow, SeriesRow};
pub use lock::{Holder, Locked};
pub use open::schema_version;
pub use store::{
    CheckpointError, Counts, Finished, NewRecord, OutputRow, PartRow, PendingRecord, Status, Store,
    StoredJob, TokenTotals, now as unix_now,
};
