//! Live progress: an indicatif bar when standard error is a terminal, plain periodic lines otherwise (cron,
//! CI, a pipe).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RunStats;
use super::summary::{bar_message, status_line};
use crate::budget::Budget;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, lines elsewhere.
    Auto,
    /// Lines every `interval`.
    Lines(Duration),
    /// Nothing.
    Off,
}

// Often enough to see a run move in a log, rarely enough not to flood it.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One progress line: text, or a `progress` event in JSON mode.
fn progress_line(stats: &RunStats, budgets: &[Arc<Budget>], elapsed: Duration) {
    let (s, u) = (stats.snapshot(), usage(budgets));
    if crate::say::json() {
        crate::say::event(
            "progress",
            serde_json::json!({
                "elapsed_s": elapsed.as_secs(), "planned": s.planned, "succeeded": s.succeeded,
                "failed": s.failed, "in_flight": s.in_flight, "throttled": s.throttled,
                "transient": s.transient, "rpm_used": u.rpm_used.round(), "tpm_used": u.tpm_used.round(),
                "rpm_rate": u.rpm_rate.map(f64::round), "tpm_rate": u.tpm_rate.map(f64::round),
                "daily_wait_until": (s.daily_wait_until > 0).then_some(s.daily_wait_until),
            }),
        );
    } else {
        crate::say!("{}", status_line(&s, elapsed, &u));
    }
}

/// What the run's budgets (one a target) use together.
fn usage(budgets: &[Arc<Budget>]) -> crate::budget::Usage {
    crate::budget::Usage::total(budgets.iter().map(|b| b.usage()))
}

/// Runs the reporter until `done` is cancelled.
pub fn spawn(
    stats: Arc<RunStats>,
    budgets: Vec<Arc<Budget>>,
    mode: ProgressMode,
    done: CancellationToken,
) -> JoinHandle<()> {
    let mode = match mode {
        // A log of JSON lines gets progress events, never a bar.
        ProgressMode::Auto if std::io::stderr().is_terminal() && !crate::say::json() => None,
        ProgressMode::Auto => Some(LOG_INTERVAL),
        ProgressMode::Lines(i) => Some(i),
        ProgressMode::Off => return tokio::spawn(async {}),
    };
    let started = Instant::now();
    tokio::spawn(async move {
        match mode {
            Some(interval) => {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tick.tick() => progress_line(&stats, &budgets, started.elapsed()),
                    }
                }
            }
            None => {
                let bar = ProgressBar::with_draw_target(
                    Some(stats.snapshot().planned),
                    ProgressDrawTarget::stderr(),
                );
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} eta {eta} {msg}",
                    )
                    .expect("a valid template"),
                );
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    let s = stats.snapshot();
                    bar.set_length(s.planned);
                    bar.set_position(s.finished());
                    bar.set_message(bar_message(&s, started.elapsed(), &usage(&budgets)));
                    tokio::select! {
                        _ = done.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                }
                bar.finish_and_clear();
            }
        }
    })
}
