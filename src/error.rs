//! The top-level error: what failed, and which exit code that maps to.

use crate::emulator::{ConfigError, EmulatorError};

/// Process exit codes, documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Everything succeeded.
    Ok = 0,
    /// The job finished, and some records failed.
    RecordsFailed = 1,
    /// The command line or a configuration file is wrong.
    Config = 2,
    /// Something unexpected failed (I/O, a bug).
    Internal = 70,
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
    /// Writing to standard output failed.
    #[error("failed to write to standard output")]
    Stdout(#[source] std::io::Error),
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
    /// The exit code this error ends the process with.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Error::EmulatorConfig(_) => ExitKind::Config,
            Error::Emulator(_) | Error::Stdout(_) => ExitKind::Internal,
        }
    }

    /// A suggestion printed after the error, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Emulator(EmulatorError::Bind { .. }) => {
                Some("pick another port with `--port`, or `--port 0` for any free port".into())
            }
            _ => None,
        }
    }
}
