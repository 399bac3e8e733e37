//! Ctrl-C (and SIGTERM, and SIGHUP) in stages. First: stop admitting new calls and let the calls in flight finish, up to a
//! grace period. Second (or when the grace period ends): abandon the calls in flight; their records stay
//! pending. Third: exit at once. Nothing is half-written in any case: outcomes are committed in transactions
//! and parts are published by rename.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The two stages of stopping, as tokens the runner's tasks watch.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled at the first signal: take no new record, start no new attempt.
    pub stop: CancellationToken,
    /// Cancelled at the second signal or when the grace period ends: abandon calls in flight.
    pub abort: CancellationToken,
}

impl Shutdown {
    /// Whether the first stage was reached.
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Starts stopping: no new work; in-flight calls get `grace` to finish.
    pub fn begin(&self, grace: Duration) {
        if self.stop.is_cancelled() {
            return;
        }
        self.stop.cancel();
        let abort = self.abort.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = abort.cancelled() => {}
                _ = tokio::time::sleep(grace) => abort.cancel(),
            }
        });
    }

    /// Listens for SIGINT and SIGTERM and steps through the stages.
    pub fn listen(&self, grace: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut count = 0;
            loop {
                if !next_signal().await {
                    return;
                }
                count += 1;
                match count {
                    1 => {
                        crate::say!(
                            "\nstopping: no new calls; waiting up to {}s for calls in flight (Ctrl-C again to stop now)",
                            grace.as_secs()
                        );
                        this.begin(grace);
                    }
                    2 => {
                        crate::say!(
                            "\nstopping now: calls in flight are abandoned and stay pending"
                        );
                        this.stop.cancel();
                        this.abort.cancel();
                    }
                    _ => std::process::exit(130),
                }
            }
        });
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP (a closed terminal or session: drain as for Ctrl-C); false if signals
/// cannot be received.
async fn next_signal() -> bool {
    #[cfg(unix)]
    {
        use std::sync::OnceLock;
        use tokio::signal::unix::{SignalKind, signal};
        use tokio::sync::Mutex;
        // Signal streams are created once: re-creating them between signals could miss one.
        type Streams = (
            tokio::signal::unix::Signal,
            tokio::signal::unix::Signal,
            tokio::signal::unix::Signal,
        );
        static STREAMS: OnceLock<Option<Mutex<Streams>>> = OnceLock::new();
        let streams = STREAMS.get_or_init(|| {
            let int = signal(SignalKind::interrupt()).ok()?;
            let term = signal(SignalKind::terminate()).ok()?;
            let hup = signal(SignalKind::hangup()).ok()?;
            Some(Mutex::new((int, term, hup)))
        });
        let Some(streams) = streams else { return false };
        let mut s = streams.lock().await;
        let (int, term, hup) = &mut *s;
        tokio::select! {
            r = int.recv() => r.is_some(),
            r = term.recv() => r.is_some(),
            r = hup.recv() => r.is_some(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
