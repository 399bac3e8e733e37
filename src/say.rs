//! `say!`: messages to standard error that never panic.

/// Writes a line to standard error, like `eprintln!`, but never panics: a closed or broken standard error
/// (`2>&-`, a reader that went away) must not end a run that is writing results.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
