//! The `batchrun` binary: parse the command line, set up logging and the runtime, run, map the result to an
//! exit code. Everything else lives in the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use batchrun::cli::{self, Cli};
use batchrun::{Error, ExitKind};

// How long the end of the process waits for tasks still running.
const SHUTDOWN: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    reopen_closed_standard_streams();
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.log_format == "json");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            batchrun::say!("error: failed to start the async runtime: {e}");
            return ExitCode::from(ExitKind::Internal as u8);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Everything the run wrote is committed by now. What may still run is an input reader blocked in a read (a
    // pipe nobody writes to, a stalled download) after a stop: it is not waited for.
    runtime.shutdown_timeout(SHUTDOWN);
    let kind = match result {
        Ok(kind) => kind,
        // A reader that stopped reading (`batchrun status | head -1`) is not an error, as for other tools.
        Err(Error::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitKind::Ok,
        Err(e) => {
            report(&e);
            e.exit_kind()
        }
    };
    ExitCode::from(kind as u8)
}

/// Points standard input, output or error at /dev/null when the process was started with it closed (`2>&-`),
/// so that no file batchrun opens (a part, the database) takes its number and receives messages.
fn reopen_closed_standard_streams() {
    #[cfg(unix)]
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // open returns the lowest free descriptor: the closed one. It stays open for the process's life.
            // SAFETY: a valid NUL-terminated path; the descriptor is deliberately never closed.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

fn init_tracing(verbose: u8, json: bool) {
    // The credential chain warns about each provider it tries; batchrun reports the outcome once, with a hint.
    // sqlx warns of statements slower than a second: a large job's multi-row writes are, by design.
    let default = match verbose {
        0 => "warn,aws_config::meta::credentials=error,sqlx::query=error",
        1 => "batchrun=debug,warn",
        _ => "batchrun=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // With --log-format json, log records are JSON lines too.
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

/// Prints `error: …`, each cause on a `caused by:` line, then the hint if there is one.
fn report(e: &Error) {
    batchrun::say!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        batchrun::say!("  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = e.hint() {
        batchrun::say!("hint: {hint}");
    }
}
