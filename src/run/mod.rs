//! `batchrun submit`: the run of one job, start to finish or to an interruption.
//!
//! ```text
//!  load job ─► list inputs ─► fingerprint ─► state: new | resume | refuse (changed) | --fresh
//!      ─► ingest (once) ─► publish parts left complete by a crash
//!      ─► feeder ──records──► workers (budget → invoke → retry) ──outcomes──► writer (checkpoint → parts)
//!      ─► manifest ─► summary, exit code
//! ```
//!
//! The writer is the only task that writes outcomes and publishes parts; workers only send it messages. A
//! record is done only once its outcome is committed, and a part is published only once all its records are
//! done, so whatever stops the process, a resumed run sends exactly the records without an outcome and writes
//! every record to exactly one part.

mod account;
mod batch;
mod connect;
mod daily;
mod fingerprint;
mod generation;
mod ingest;
pub(crate) mod lock;
mod parts;
mod route;
mod shutdown;
pub(crate) mod submit;
mod worker;
mod writer;

pub use account::{Unread, fill_budget, read_own};
pub use batch::cancel;
pub use connect::{Connection, Endpoints, Expected};
pub use fingerprint::{Fingerprint, describe_changes};
pub use shutdown::Shutdown;
pub use submit::{RunOutcome, SubmitOptions, submit};
