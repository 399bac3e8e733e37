//! The checkpoint: every job's records, outcomes and published parts in one SQLite database (sqlx, WAL,
//! schema in `migrations/`). It is the single source of truth for resume: a record is done only with its
//! result here, and output parts are rebuilt from here.
//!
//! One module per table (or tables that go together), each with its row types and statements:
//!
//! | module     | tables               | holds                                                        |
//! |------------|----------------------|--------------------------------------------------------------|
//! | `jobs`     | `jobs`               | identity, ingest progress, learned rates                     |
//! | `records`  | `records`            | every input record and its request, in input order           |
//! | `outcomes` | `outcomes`           | each record's final outcome, and the statistics over them    |
//! | `parts`    | `parts`, `uploads`   | output parts published, S3 uploads not yet finished          |
//! | `runs`     | `runs`               | each run's settings and how it ended                         |
//! | `observed` | `throttles`, `series`| what the budget saw: throttles, per-second counts            |
//! | `generations` | `generations`     | an incremental job's generations, reused answers, change sets |
//! | `answers`  | `answers`            | replies shared by a job's generations, stored once each      |
//! | `inputs`   | `input_files`        | which records each input file gave an incremental job        |
//! | `lock`     | `locks`              | which process runs a job                                     |
//! | `account`  | `account_quotas`     | the account's quotas as Service Quotas last gave them        |
//! | `batch`    | `batch_jobs`, `batch_records` | Bedrock batch jobs made of the job's records, and their state |
//!
//! `open` creates and migrates the database; `store` holds the [`Store`] handle and the error. It stores and
//! answers; it never calls back into the runner or the sink.
//!
//! Multi-row statements (one `INSERT … VALUES` for a batch of rows; sqlx costs ~90 µs a statement) are built with
//! `QueryBuilder` and marked `persistent(false)`: their text changes with the batch's size, and each size kept in
//! sqlx's statement cache (100 per connection, four connections) held a prepared statement of hundreds of
//! placeholders. That cache was most of a large job's memory: peak RSS 132 MB at 100,000 records and 169 MB at
//! 1,000,000 before, 74 and 78 MB after (benches/footprint.sh).

mod account;
mod answers;
mod batch;
mod generations;
mod inputs;
mod jobs;
mod lock;
mod observed;
mod open;
mod outcomes;
mod parts;
mod records;
mod runs;
mod store;

pub use account::CachedQuota;
pub use batch::{BatchJobRow, BatchProgress, CREATING, NewShard, STAGED};
pub use generations::{Deleted, Generation};
pub use inputs::{InputSpan, StoredRecord};
pub use jobs::StoredJob;
pub use lock::{Holder, Locked};
pub use observed::{TargetStats, TierStats};
pub use open::schema_version;
pub use outcomes::{
    Counts, ErrorGroup, FailedRecord, Finished, OutcomeStats, OutputRow, Status, TokenTotals,
};
pub use parts::{OpenUpload, PartRow};
pub use records::{NewRecord, PendingRecord};
pub use runs::RunRow;
pub use store::{CheckpointError, Store, now as unix_now};
