//! `say!`: messages to standard error that never panic, as text or, with `--log-format json`, as one JSON
//! object a line (`{"ts", "event", …}`) for journald or CloudWatch. [`event`] adds the structured events a
//! scheduler's log wants (a run's start, its progress, each part published, its end); in text they are said
//! by the human lines, so they print nothing.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static JSON: AtomicBool = AtomicBool::new(false);

/// From now on, standard error gets JSON lines.
pub fn use_json() {
    JSON.store(true, Ordering::Relaxed);
}

/// Whether standard error gets JSON lines.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Writes one line; a closed or broken standard error (`2>&-`, a reader that went away) must not end a run
/// that is writing results.
pub fn line(text: &str) {
    if json() {
        let (level, text) = match text.trim_start().split_once(": ") {
            Some((l @ ("warning" | "error" | "hint"), rest)) => (l, rest),
            Some(("caused by", _)) => ("error", text.trim_start()),
            _ => ("info", text),
        };
        event(
            "message",
            serde_json::json!({ "level": level, "text": text }),
        );
    } else {
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// Writes event `name` with `fields` (an object) as a JSON line, in JSON mode; nothing otherwise.
pub fn event(name: &str, fields: serde_json::Value) {
    if !json() {
        return;
    }
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as f64
        / 1000.0;
    // `ts` and `event` first, whatever order the fields serialize in.
    let mut line = format!("{{\"ts\":{ts},\"event\":{}", serde_json::Value::from(name));
    if let serde_json::Value::Object(fields) = fields {
        for (k, v) in fields {
            line.push_str(&format!(",{}:{v}", serde_json::Value::from(k)));
        }
    }
    line.push('}');
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Writes a line to standard error, like `eprintln!`, but never panics (see [`line`]).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        $crate::say::line(&format!($($arg)*));
    }};
}
