//! How the runner reaches Bedrock, as the command layer resolves it. The runner talks to Bedrock only through
//! the SDK and an endpoint URL; whatever serves that URL (real Bedrock, a proxy, an embedded emulator) is
//! decided outside `run`, which only holds on to the [`Connection`] while it sends.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;
use crate::job::Job;

/// Where to send a job's calls.
pub struct Connection {
    /// The endpoint URL; `None` for real Bedrock by the standard AWS configuration.
    pub url: Option<String>,
    /// Sign with fixed test credentials instead of the AWS configuration's (an embedded emulator).
    pub static_credentials: bool,
    /// Keeps whatever serves `url` alive while the connection is held.
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("static_credentials", &self.static_credentials)
            .finish()
    }
}

/// What a simulated endpoint says of the job's model, for `plan` to expect before any run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    /// Shortest reply, in tokens.
    pub output_min: u64,
    /// Longest reply, in tokens.
    pub output_max: u64,
    /// Latency before the first token, milliseconds.
    pub first_token_ms: f64,
    /// Latency per output token, milliseconds.
    pub per_token_ms: f64,
}

/// Resolves a job's endpoint; the command layer implements it.
pub trait Endpoints: std::fmt::Debug + Send + Sync {
    /// Opens the connection for `job` (starting what serves it, if that is the command layer's to start).
    fn connect<'a>(
        &'a self,
        job: &'a Job,
    ) -> Pin<Box<dyn Future<Output = Result<Connection, Error>> + Send + 'a>>;

    /// What the endpoint is known to do for the job's model, when it is simulated.
    fn expected(&self, job: &Job) -> Result<Option<Expected>, Error>;
}
