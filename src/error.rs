//! The top-level error: what failed, which exit code that maps to, and a hint for the user.

use std::path::PathBuf;

use crate::catalogue::CatalogueError;
use crate::checkpoint::CheckpointError;
use crate::emulator::{ConfigError, EmulatorError};
use crate::invoke::{InvokeError, Stop};
use crate::job::JobError;
use crate::s3::{S3Error, S3ErrorKind};
use crate::sink::OutputError;
use crate::source::SourceError;

/// Process exit codes, documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Everything succeeded.
    Ok = 0,
    /// The job finished, and some records failed.
    RecordsFailed = 1,
    /// The command line, the job file or the job's setup (inputs, credentials, model access) is wrong.
    Config = 2,
    /// Something unexpected failed (I/O, the state database, a bug).
    Internal = 70,
    /// The model's daily token quota ran out; the job stopped resumably (sysexits' EX_UNAVAILABLE).
    DailyQuota = 69,
    /// The job is already running in another process (sysexits' EX_TEMPFAIL: try again later).
    Busy = 75,
    /// Interrupted by Ctrl-C.
    Interrupted = 130,
}

/// Any error a command ends with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The emulator's configuration is wrong.
    #[error(transparent)]
    EmulatorConfig(#[from] ConfigError),
    /// The emulator could not start.
    #[error(transparent)]
    Emulator(EmulatorError),
    /// The job file is wrong.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The inputs cannot be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The state database failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The output cannot be written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// An S3 output (or the S3 client) failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The model table cannot be read.
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    /// The Bedrock client cannot be set up.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// Service Quotas could not be read.
    #[error(transparent)]
    Quotas(#[from] crate::quotas::QuotasError),
    /// A quota increase that cannot be asked for as given.
    #[error("{message}")]
    QuotaRequest {
        /// Why, naming the quota.
        message: String,
    },
    /// A resumed job whose settings or inputs changed.
    #[error("job `{name}` changed since it was started, so it cannot be resumed:\n{}", changes.iter().map(|c| format!("  - {c}")).collect::<Vec<_>>().join("\n"))]
    JobChanged {
        /// The job's name.
        name: String,
        /// The job file.
        path: PathBuf,
        /// What changed.
        changes: Vec<String>,
    },
    /// Bedrock refused every call for a reason no retry can fix.
    #[error("stopped: model {model} answered {code}: {message}")]
    Fatal {
        /// The model id.
        model: String,
        /// The error code.
        code: String,
        /// The message.
        message: String,
        /// Why no call can succeed.
        stop: Stop,
        /// The job file, to say how to resume.
        path: PathBuf,
    },
    /// The model's daily token quota ran out: waiting seconds does not help, so the run stopped.
    #[error("stopped: the daily token quota of {model} is used up (Bedrock: {message})")]
    DailyQuota {
        /// The model id.
        model: String,
        /// Bedrock's message.
        message: String,
        /// The job file, to say how to resume.
        path: PathBuf,
    },
    /// Another live process runs the job.
    #[error(
        "job `{name}` is already running: process {} on host {} (since {})",
        holder.pid,
        holder.host,
        crate::report::status::utc(holder.since)
    )]
    AlreadyRunning {
        /// The job's name.
        name: String,
        /// The job file.
        path: PathBuf,
        /// Who runs it.
        holder: crate::checkpoint::Holder,
    },
    /// `status` or `report` found no state database.
    #[error("no state database at {}", path.display())]
    NoState {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The state database has no job of that name.
    #[error("no job `{name}` in {}", path.display())]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The state database.
        path: PathBuf,
        /// The jobs it has.
        known: Vec<String>,
    },
    /// `report` needs one job.
    #[error("which job? {} may hold several", path.display())]
    NoJobGiven {
        /// The state database.
        path: PathBuf,
    },
    /// A file the user asked for could not be written.
    #[error("failed to write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A task of the run panicked: a bug. Everything committed before it is kept.
    #[error("internal error: the {task} stopped unexpectedly: {message}")]
    Panicked {
        /// Which task.
        task: &'static str,
        /// The panic's message.
        message: String,
    },
    /// Writing to standard output failed.
    #[error("failed to write to standard output")]
    Stdout(#[source] std::io::Error),
    /// Bedrock batch inference refused what was asked, or its results could not be read.
    #[error("{message}")]
    Batch {
        /// What happened.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
}

impl From<crate::batch::BatchError> for Error {
    fn from(e: crate::batch::BatchError) -> Self {
        use crate::batch::BatchError;
        match e {
            BatchError::Checkpoint(c) => Error::Checkpoint(c),
            BatchError::S3(s) => Error::S3(s),
            BatchError::Refused { message, hint } => Error::Batch {
                message,
                hint: Some(hint),
            },
            other @ BatchError::Read { .. } => Error::Batch {
                message: other.to_string(),
                hint: Some("nothing was lost: run the job again to read the results again".into()),
            },
        }
    }
}

impl From<EmulatorError> for Error {
    fn from(e: EmulatorError) -> Self {
        match e {
            EmulatorError::Config(c) => Error::EmulatorConfig(c),
            other => Error::Emulator(other),
        }
    }
}

impl Error {
    /// The value of a finished task, or [`Error::Panicked`] with its panic message when it panicked.
    pub fn joined<T>(
        result: Result<T, tokio::task::JoinError>,
        task: &'static str,
    ) -> Result<T, Error> {
        result.map_err(|e| {
            let message = if e.is_cancelled() {
                "it was cancelled".to_string()
            } else {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into())
            };
            Error::Panicked { task, message }
        })
    }

    /// The exit code this error ends the process with.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Error::S3(e) | Error::Source(SourceError::S3(e)) if e.kind == S3ErrorKind::Other => {
                ExitKind::Internal
            }
            Error::EmulatorConfig(_)
            | Error::Job(_)
            | Error::Source(_)
            | Error::Catalogue(_)
            | Error::NoState { .. }
            | Error::UnknownJob { .. }
            | Error::NoJobGiven { .. }
            | Error::WriteFile { .. }
            | Error::Invoke(_)
            | Error::Quotas(_)
            | Error::QuotaRequest { .. }
            | Error::JobChanged { .. }
            | Error::Fatal { .. }
            | Error::Batch { .. } => ExitKind::Config,
            Error::S3(_) => ExitKind::Config,
            Error::AlreadyRunning { .. } => ExitKind::Busy,
            Error::DailyQuota { .. } => ExitKind::DailyQuota,
            Error::Checkpoint(CheckpointError::Newer { .. } | CheckpointError::Older { .. }) => {
                ExitKind::Config
            }
            Error::Emulator(_)
            | Error::Checkpoint(_)
            | Error::Output(_)
            | Error::Stdout(_)
            | Error::Panicked { .. } => ExitKind::Internal,
        }
    }

    /// A suggestion printed after the error, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Emulator(EmulatorError::Bind { .. }) => {
                Some("pick another port with `--port`, or `--port 0` for any free port".into())
            }
            Error::Quotas(crate::quotas::QuotasError::AccessDenied { .. }) => Some(
                "the credentials need servicequotas:ListServiceQuotas (and ListAWSDefaultServiceQuotas for AWS's \
                 defaults); without them, a job without a [budget] learns its quota from throttles"
                    .into(),
            ),
            Error::JobChanged { path, .. } => Some(format!(
                "to start over with the new settings, run `batchrun submit {} --fresh` (earlier results of this job are discarded); \
                 to keep them, restore the old settings or give the job a new name",
                path.display()
            )),
            Error::Fatal { stop, path, .. } => Some(format!(
                "{}; nothing was lost: run `batchrun submit {}` again to resume",
                what_to_check(*stop),
                path.display()
            )),
            Error::DailyQuota { path, .. } => Some(format!(
                "nothing was lost: the records not answered stay pending; run `batchrun submit {}` again once the \
                 quota has refilled (Bedrock refills it over a day), or let the run wait for it with \
                 `on-daily-quota = \"wait\"` under [budget]; `batchrun quotas {}` shows the daily quota",
                path.display(),
                path.display()
            )),
            Error::S3(e) | Error::Source(SourceError::S3(e)) => Some(e.hint()),
            Error::Batch { hint, .. } => hint.clone(),
            Error::Output(e) if e.source.kind() == std::io::ErrorKind::StorageFull => Some(
                "the output disk is full: free space there and submit the job again; answers already received \
                 are kept in the state database and are not paid for again"
                    .into(),
            ),
            Error::Checkpoint(e) if e.disk_full() => Some(
                "the disk holding the state database is full: free space there and submit the job again; every \
                 answer committed before is kept"
                    .into(),
            ),
            Error::Panicked { .. } => Some(
                "this is a bug in batchrun; what was committed before it is kept, so running the same command \
                 again resumes; please report it with the message above"
                    .into(),
            ),
            Error::AlreadyRunning { path, .. } => Some(format!(
                "one process runs a job at a time; `batchrun submit {0} --wait` waits for it to end and then \
                 resumes, `batchrun status {0}` shows its progress",
                path.display()
            )),
            Error::Checkpoint(CheckpointError::Newer { .. }) => {
                Some("use the batchrun that wrote it, or a newer one".into())
            }
            Error::Checkpoint(CheckpointError::Older { .. }) => Some(
                "`batchrun submit` of any job in it brings it up to date (readers never change it)".into(),
            ),
            Error::NoState { .. } => Some(
                "give the job file (`batchrun status jobs/demo.toml`), run from the job file's folder, or pass \
                 --state FILE; a job has a state database once it has been submitted"
                    .into(),
            ),
            Error::UnknownJob { known, .. } if known.is_empty() => {
                Some("the database holds no jobs yet".into())
            }
            Error::UnknownJob { known, .. } => Some(format!("jobs there: {}", known.join(", "))),
            Error::NoJobGiven { .. } => {
                Some("name the job: `batchrun report JOB` (a job file or a job name)".into())
            }
            Error::Invoke(InvokeError::NoRegion { .. }) => {
                Some("set `region = \"us-east-1\"` (for example) under [model]".into())
            }
            _ => None,
        }
    }
}

/// What to check after Bedrock refused every call for `stop`.
fn what_to_check(stop: Stop) -> &'static str {
    match stop {
        Stop::AccessDenied => {
            "check that the credentials may call bedrock:InvokeModel and that access to the model is enabled in the Bedrock console"
        }
        Stop::UnknownModel => {
            "check model.id (a model id, inference profile id or ARN) and that the model is offered in model.region"
        }
        Stop::ExpiredCredentials => {
            "the credentials expired: refresh them (for SSO, run `aws sso login`)"
        }
        Stop::NoCredentials => {
            "no AWS credentials were found: set AWS_PROFILE (for SSO, run `aws sso login` first) or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; to rehearse without AWS, set [endpoint] url = \"emulator\""
        }
        Stop::Other => "check the AWS credentials and region (for SSO, run `aws sso login`)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_an_internal_error_with_its_message() {
        let task = tokio::spawn(async { panic!("index 7 out of range") });
        let e = Error::joined::<()>(task.await, "worker").unwrap_err();
        assert_eq!(
            e.to_string(),
            "internal error: the worker stopped unexpectedly: index 7 out of range"
        );
        assert_eq!(e.exit_kind(), ExitKind::Internal);
        assert!(
            e.hint()
                .unwrap()
                .contains("running the same command again resumes")
        );
        let fine = tokio::spawn(async { 5 });
        assert_eq!(Error::joined(fine.await, "worker").unwrap(), 5);
    }
}
