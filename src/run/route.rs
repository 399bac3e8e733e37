//! The targets of a run, as the workers use them: each with its own client and budget, and whether it is in use.
//! A request is admitted by whichever target in use has room first; a target that fails for good is dropped,
//! and one that stops answering rests while the others serve.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use crate::budget::{Admission, Budget};
use crate::invoke::{CallError, Class, Invoker};

/// Calls in a row a target failed to answer (connection refused, 5xx, timeouts) before it rests.
pub const FAILURES_TO_REST: u32 = 3;
/// The first rest; each rest in a row doubles it, up to [`LONGEST_REST`].
const FIRST_REST: Duration = Duration::from_secs(2);
const LONGEST_REST: Duration = Duration::from_secs(60);

/// One target of a run.
#[derive(Debug)]
pub struct Route {
    /// The target's name.
    pub name: String,
    /// Its client.
    pub invoker: Invoker,
    /// Its budget.
    pub budget: Arc<Budget>,
    state: std::sync::Mutex<Health>,
}

/// Whether a target is in use.
#[derive(Debug, Default)]
struct Health {
    /// Why it was dropped for good.
    dropped: Option<String>,
    /// Calls in a row it failed to answer.
    failing: u32,
    /// Rests in a row.
    rests: u32,
    /// Left alone until then.
    resting_until: Option<Instant>,
}

/// What a failed call says of its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing: the record's own retry policy applies.
    Record,
    /// The target rests this long (it failed [`FAILURES_TO_REST`] calls in a row); others serve meanwhile.
    Rests(Duration),
    /// The target is dropped for good with this reason; others serve.
    Dropped(String),
}

impl Route {
    /// A target in use.
    pub fn new(name: String, invoker: Invoker, budget: Arc<Budget>) -> Route {
        Route {
            name,
            invoker,
            budget,
            state: std::sync::Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether it may be sent to now.
    pub fn usable(&self, now: Instant) -> bool {
        let h = self.health();
        h.dropped.is_none() && h.resting_until.is_none_or(|t| t <= now)
    }

    /// Whether it was dropped for good.
    pub fn is_dropped(&self) -> bool {
        self.health().dropped.is_some()
    }

    /// A call it served was answered.
    pub fn answered(&self) {
        self.health().answered();
    }

    /// A call it served failed with `error`; `others` says whether another target is in use. With no other
    /// target, every failure is the record's, as in a job of one target.
    pub fn failed(&self, error: &CallError, others: bool, now: Instant) -> Verdict {
        self.health().judge(error, others, now)
    }
}

impl Health {
    /// A call was answered: the run of failures, and of rests, is over.
    fn answered(&mut self) {
        self.failing = 0;
        self.rests = 0;
    }

    /// What a failed call says of the target (see [`Route::failed`]).
    fn judge(&mut self, error: &CallError, others: bool, now: Instant) -> Verdict {
        if !others || self.dropped.is_some() {
            return Verdict::Record;
        }
        if gone_for_good(error) {
            let reason = format!("{}: {}", error.code, error.message);
            self.dropped = Some(reason.clone());
            return Verdict::Dropped(reason);
        }
        if error.class != Class::Transient {
            self.failing = 0;
            return Verdict::Record;
        }
        self.failing += 1;
        if self.failing < FAILURES_TO_REST {
            return Verdict::Record;
        }
        let rest = FIRST_REST
            .saturating_mul(1 << self.rests.min(16))
            .min(LONGEST_REST);
        self.failing = 0;
        self.rests += 1;
        self.resting_until = Some(now + rest);
        Verdict::Rests(rest)
    }
}

/// Errors that say a target cannot serve the job at all (the model is not enabled or not offered there, access
/// is denied, the profile is unknown), as against a problem of the record or of the moment.
fn gone_for_good(error: &CallError) -> bool {
    error.class == Class::Fatal
        || error.is_daily()
        || (error.code == "ValidationException"
            && error
                .message
                .to_ascii_lowercase()
                .contains("model identifier is invalid"))
}

/// The targets of a run.
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Route>,
    /// Where the next admission starts looking, so that targets with room at the same moment share the work.
    next: AtomicUsize,
}

/// Where a request goes: the target's index, and its admission.
pub type Admitted = (usize, Admission);

/// A request waiting for one target's admission.
type Waiting<'a> = Pin<Box<dyn Future<Output = Admission> + Send + 'a>>;

impl Routes {
    /// The run's targets, all in use.
    pub fn new(routes: Vec<Route>) -> Routes {
        assert!(!routes.is_empty(), "a run has at least one target");
        Routes {
            routes,
            next: AtomicUsize::new(0),
        }
    }

    /// Target `i`.
    pub fn get(&self, i: usize) -> &Route {
        &self.routes[i]
    }

    /// All of them, in the job file's order.
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// Whether the job has more than one target.
    pub fn several(&self) -> bool {
        self.routes.len() > 1
    }

    /// Whether any target but `i` is still in use (resting ones count: they come back).
    pub fn others_in_use(&self, i: usize) -> bool {
        self.routes
            .iter()
            .enumerate()
            .any(|(j, r)| j != i && !r.is_dropped())
    }

    /// Whether some target in use could ever admit a request of `tokens` (its TPM budget holds it).
    pub fn can_ever_admit(&self, est_tokens: u64, max_tokens: u64) -> bool {
        self.routes.iter().any(|r| {
            !r.is_dropped()
                && r.budget
                    .can_ever_admit(r.budget.reservation(est_tokens, max_tokens))
        })
    }

    /// Waits until a target in use admits a request (estimated input `est_tokens`, output cap `max_tokens`),
    /// the first with room; `None` when every target was dropped.
    pub async fn admit(&self, est_tokens: u64, max_tokens: u64) -> Option<Admitted> {
        // One target is never dropped nor rested (its errors are the records'): no search.
        if let [only] = &self.routes[..] {
            return Some((0, only.budget.admit(est_tokens, max_tokens).await));
        }
        loop {
            let now = Instant::now();
            let usable: Vec<usize> = (0..self.routes.len())
                .filter(|&i| self.routes[i].usable(now))
                .collect();
            if usable.is_empty() {
                // Every target is dropped, or resting: wait for the first rest to end.
                let wake = self
                    .routes
                    .iter()
                    .filter(|r| !r.is_dropped())
                    .filter_map(|r| r.health().resting_until)
                    .min()?;
                tokio::time::sleep_until(wake).await;
                continue;
            }
            let (i, admission) = self.first_to_admit(&usable, est_tokens, max_tokens).await;
            // A target dropped or put to rest while the request waited for it: the request goes elsewhere.
            if self.routes[i].usable(Instant::now()) {
                return Some((i, admission));
            }
        }
    }

    /// The first of `usable` whose budget admits the request, looked at from a turning start.
    async fn first_to_admit(&self, usable: &[usize], est_tokens: u64, max_tokens: u64) -> Admitted {
        if let [only] = usable {
            return (
                *only,
                self.routes[*only]
                    .budget
                    .admit(est_tokens, max_tokens)
                    .await,
            );
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % usable.len();
        let mut waiting: Vec<(usize, Waiting<'_>)> = (0..usable.len())
            .map(|k| {
                let i = usable[(start + k) % usable.len()];
                let admit: Waiting<'_> =
                    Box::pin(self.routes[i].budget.admit(est_tokens, max_tokens));
                (i, admit)
            })
            .collect();
        // The budgets' admissions are cancel-safe: those that did not win are dropped without taking anything.
        std::future::poll_fn(|cx| {
            for (i, admit) in waiting.iter_mut() {
                if let Poll::Ready(a) = admit.as_mut().poll(cx) {
                    return Poll::Ready((*i, a));
                }
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(class: Class, code: &str, message: &str) -> CallError {
        CallError {
            class,
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_target_that_keeps_failing_to_answer_rests_longer_each_time_until_it_answers() {
        let now = Instant::now();
        let refused = error(Class::Transient, "ConnectionError", "connection refused");
        let mut h = Health::default();
        let mut verdicts = Vec::new();
        for _ in 0..9 {
            verdicts.push(h.judge(&refused, true, now));
        }
        let rests: Vec<Duration> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Rests(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(rests, [2, 4, 8].map(Duration::from_secs));
        assert_eq!(verdicts[0], Verdict::Record);
        // Throttles and refused records are not the target's fault: they break a run of failures.
        h.judge(&refused, true, now);
        h.judge(
            &error(Class::Throttled, "ThrottlingException", "Too many requests"),
            true,
            now,
        );
        h.judge(&refused, true, now);
        assert_eq!(h.judge(&refused, true, now), Verdict::Record);
        // An answer starts the rests over.
        let mut answered = Health::default();
        for _ in 0..6 {
            answered.judge(&refused, true, now);
        }
        answered.answered();
        for _ in 0..2 {
            answered.judge(&refused, true, now);
        }
        assert_eq!(
            answered.judge(&refused, true, now),
            Verdict::Rests(Duration::from_secs(2))
        );
    }

    #[test]
    fn a_target_that_cannot_serve_the_job_is_dropped_unless_it_is_the_last() {
        let now = Instant::now();
        for e in [
            error(Class::Fatal, "AccessDeniedException", "not authorized"),
            error(Class::Fatal, "ResourceNotFoundException", "no such model"),
            error(
                Class::Permanent,
                "ValidationException",
                "The provided model identifier is invalid.",
            ),
            error(
                Class::Throttled,
                "ThrottlingException",
                "Too many tokens per day, please wait",
            ),
        ] {
            let mut h = Health::default();
            assert_eq!(
                h.judge(&e, false, now),
                Verdict::Record,
                "the last target: {e:?}"
            );
            assert!(
                matches!(h.judge(&e, true, now), Verdict::Dropped(_)),
                "{e:?}"
            );
            assert!(h.dropped.is_some());
        }
        // A record the model refuses is the record's failure, wherever it is sent.
        let mut h = Health::default();
        let refused = error(
            Class::Permanent,
            "ValidationException",
            "Input is too long for requested model.",
        );
        assert_eq!(h.judge(&refused, true, now), Verdict::Record);
        assert!(h.dropped.is_none());
    }
}
