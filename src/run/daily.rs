//! `budget.on-daily-quota = "wait"`: when Bedrock answers "Too many tokens per day", sending stops for the
//! model and one probe call goes out every `budget.daily-retry-secs`; the first that is answered opens sending
//! again. Calls that were in flight when the gate closed come back throttled too; they wait with the rest and
//! do not move the next try. Waiting seconds does not refill a daily quota, so nothing here retries sooner.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The gate every call passes before admission.
#[derive(Debug)]
pub struct DailyGate {
    retry: Duration,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Closed: the next probe may go at this instant (and the wall-clock time, to show).
    closed: Option<(Instant, SystemTime)>,
    /// A probe is out.
    probing: bool,
    /// Bedrock's last daily message.
    message: String,
}

/// How a call passed the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Sending is open.
    Open,
    /// The gate is closed and this call is the one probe.
    Probe,
}

/// What the gate says, for progress and the state database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// When the next probe goes.
    pub next_try: SystemTime,
    /// Bedrock's message.
    pub message: String,
}

impl DailyGate {
    /// A gate that probes every `retry` while closed.
    pub fn new(retry: Duration) -> DailyGate {
        DailyGate {
            retry,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a call may go: at once while open; while closed, until the next try, where one caller goes
    /// as the probe and the rest wait for its answer. `None` when `stop` fires first.
    pub async fn pass(&self, stop: &CancellationToken) -> Option<Pass> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait_until = {
                let mut s = self.lock();
                match s.closed {
                    None => return Some(Pass::Open),
                    Some((at, _)) if !s.probing && Instant::now() >= at => {
                        s.probing = true;
                        return Some(Pass::Probe);
                    }
                    Some((at, _)) if !s.probing => Some(at),
                    Some(_) => None,
                }
            };
            let sleep = async {
                match wait_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = &mut changed => {}
                _ = sleep => {}
            }
        }
    }

    /// A call that passed as `pass` met the daily throttle with `message`: the gate closes (a probe's failure
    /// moves the next try one period on; a call that was in flight when it closed changes nothing). Returns
    /// whether this closed an open gate.
    pub fn throttled(&self, pass: Pass, message: &str) -> bool {
        let mut s = self.lock();
        let opened_now = s.closed.is_none();
        if opened_now || pass == Pass::Probe {
            s.closed = Some((Instant::now() + self.retry, SystemTime::now() + self.retry));
            s.message = message.to_string();
        }
        if pass == Pass::Probe {
            s.probing = false;
        }
        drop(s);
        self.changed.notify_waiters();
        opened_now
    }

    /// A call that passed as `pass` was answered (or failed for another reason): a probe opens the gate; a
    /// probe's slot is given back.
    pub fn answered(&self, pass: Pass, reopened: bool) {
        if pass != Pass::Probe {
            return;
        }
        let mut s = self.lock();
        s.probing = false;
        if reopened {
            s.closed = None;
        }
        drop(s);
        self.changed.notify_waiters();
    }

    /// While closed: when the next try goes, and why.
    pub fn waiting(&self) -> Option<Waiting> {
        let s = self.lock();
        s.closed.map(|(_, next_try)| Waiting {
            next_try,
            message: s.message.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_and_an_answer_opens() {
        let gate = std::sync::Arc::new(DailyGate::new(Duration::from_secs(600)));
        let stop = CancellationToken::new();
        assert_eq!(gate.pass(&stop).await, Some(Pass::Open));
        assert!(gate.throttled(Pass::Open, "Too many tokens per day"));
        // A second call that was in flight does not move the next try.
        let first = gate.waiting().unwrap().next_try;
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!gate.throttled(Pass::Open, "Too many tokens per day"));
        assert_eq!(gate.waiting().unwrap().next_try, first);

        // Two callers: one probe after the period, the other waits for its answer.
        let t0 = Instant::now();
        let (a, b) = (gate.clone(), gate.clone());
        let (s1, s2) = (stop.clone(), stop.clone());
        let h1 = tokio::spawn(async move { a.pass(&s1).await });
        let h2 = tokio::spawn(async move { b.pass(&s2).await });
        tokio::time::sleep(Duration::from_secs(585)).await;
        assert!(!h1.is_finished() && !h2.is_finished());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (done, waiting) = if h1.is_finished() { (h1, h2) } else { (h2, h1) };
        assert_eq!(done.await.unwrap(), Some(Pass::Probe));
        assert!(
            t0.elapsed() >= Duration::from_secs(590),
            "the next try stays 600 s after the closing"
        );
        assert!(!waiting.is_finished(), "one probe at a time");

        // The probe is throttled again: closed one more period; then answered: open for all.
        gate.throttled(Pass::Probe, "Too many tokens per day");
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(waiting.await.unwrap(), Some(Pass::Probe));
        gate.answered(Pass::Probe, true);
        assert_eq!(gate.waiting(), None);
        assert_eq!(gate.pass(&stop).await, Some(Pass::Open));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let gate = DailyGate::new(Duration::from_secs(600));
        gate.throttled(Pass::Open, "per day");
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            s.cancel();
        });
        assert_eq!(gate.pass(&stop).await, None);
    }
}
