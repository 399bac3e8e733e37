//! One process per job. A submit takes the job's lock in the state database before it reads or changes the
//! job, refreshes it while it runs and releases it when it ends. Whether a holder still lives is decided
//! here, where the operating system is: on the same host the holder's pid must still run and have started
//! when the holder did (a reused pid is not the holder); on another host (a state database on a shared
//! disk) its heartbeat must be recent.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::shutdown::Shutdown;
use crate::checkpoint::{Holder, Locked, Store, unix_now};
use crate::error::Error;
use crate::report::status::utc;

// How often the holder refreshes its heartbeat, and how old a heartbeat from another host may be before the
// holder counts as dead.
const HEARTBEAT: Duration = Duration::from_secs(10);
const STALE_AFTER_S: i64 = 90;
// How often `--wait` asks again.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// The lock on a job, held until [`JobLock::release`].
#[derive(Debug)]
pub struct JobLock {
    store: Store,
    job: String,
    token: String,
    heartbeat: JoinHandle<()>,
    waited: bool,
}

/// How [`JobLock::acquire`] ended without the lock.
#[derive(Debug)]
pub enum NotLocked {
    /// Another live process holds it.
    Busy(Holder),
    /// A signal came while waiting.
    Stopped,
}

impl JobLock {
    /// Takes the lock on `job`. With `wait`, waits while another live process holds it (until `shutdown`
    /// stops); without, returns at once with the holder. A dead holder's lock is taken over with a warning.
    pub async fn acquire(
        store: &Store,
        job: &str,
        wait: bool,
        shutdown: &Shutdown,
    ) -> Result<Result<JobLock, NotLocked>, Error> {
        let me = this_process();
        let token = format!("{}-{:016x}", me.pid, rand::random::<u64>());
        let mut waiting = false;
        loop {
            let now = unix_now();
            match store
                .lock_job(job, &me, &token, |h| is_gone(h, &me, now))
                .await?
            {
                Locked::Taken { replaced } => {
                    if let Some(dead) = replaced {
                        crate::say!(
                            "warning: job `{job}` was locked by {}, which is no longer running; taking over",
                            describe(&dead)
                        );
                    }
                    let heartbeat = tokio::spawn(beat(
                        store.clone(),
                        job.to_string(),
                        token.clone(),
                        shutdown.clone(),
                    ));
                    return Ok(Ok(JobLock {
                        store: store.clone(),
                        job: job.to_string(),
                        token,
                        heartbeat,
                        waited: waiting,
                    }));
                }
                Locked::Busy(holder) if !wait => return Ok(Err(NotLocked::Busy(holder))),
                Locked::Busy(holder) => {
                    if !waiting {
                        crate::say!(
                            "job `{job}` is running in {}; waiting for it to end (--wait)",
                            describe(&holder)
                        );
                        waiting = true;
                    }
                    tokio::select! {
                        _ = shutdown.stop.cancelled() => return Ok(Err(NotLocked::Stopped)),
                        _ = tokio::time::sleep(WAIT_POLL) => {}
                    }
                }
            }
        }
    }

    /// Whether another process held the lock first and this one waited for it (`--wait`): what was read
    /// before may have changed since.
    pub fn waited(&self) -> bool {
        self.waited
    }

    /// Releases the lock. A failure to (a full disk, say) is a warning: the next run sees the holder gone.
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.store.unlock(&self.job, &self.token).await {
            crate::say!(
                "warning: could not release the lock on job `{}` ({e}); the next run takes it over",
                self.job
            );
        }
    }
}

/// Refreshes the heartbeat; if the lock was taken over (this process was thought dead), stops the run.
async fn beat(store: Store, job: String, token: String, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.heartbeat(&job, &token).await {
            Ok(true) => {}
            Ok(false) => {
                crate::say!(
                    "error: another process took over the lock on job `{job}`; stopping this run"
                );
                shutdown.stop.cancel();
                shutdown.abort.cancel();
                return;
            }
            // A heartbeat that cannot be written (a busy or full disk) is tried again; a holder on the same
            // host is judged by its pid, not its heartbeat.
            Err(e) => tracing::warn!("could not refresh the job's lock: {e}"),
        }
    }
}

/// `process 1234 on host db-1 (since 2026-11-27 06:40:01 UTC)`.
pub fn describe(h: &Holder) -> String {
    format!(
        "process {} on host {} (since {})",
        h.pid,
        h.host,
        utc(h.since)
    )
}

/// Whether the holder `h` has died, as seen by `me` at `now` (Unix seconds).
pub fn is_gone(h: &Holder, me: &Holder, now: i64) -> bool {
    if h.host != me.host {
        return now - h.heartbeat_at > STALE_AFTER_S;
    }
    if !pid_runs(h.pid) || zombie(h.pid) {
        return true;
    }
    match (h.process_start, start_time(h.pid)) {
        (Some(then), Some(now)) => then != now,
        _ => false,
    }
}

/// This process, as a lock holder.
pub fn this_process() -> Holder {
    let pid = std::process::id();
    Holder {
        pid,
        host: hostname(),
        process_start: start_time(pid),
        since: 0,
        heartbeat_at: 0,
    }
}

#[cfg(unix)]
fn pid_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 checks that the process exists without signalling it; EPERM means it exists as another user.
    // SAFETY: kill with signal 0 has no effect beyond the check.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn pid_runs(_pid: u32) -> bool {
    true
}

/// Field `n` (from 3) of `/proc/PID/stat`, on Linux.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; fields are counted after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

/// The process's start time in clock ticks since boot (field 22), on Linux.
fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// Whether the process has exited and only waits for its parent to collect it (state Z or X): a killed run
/// whose parent has not reaped it yet holds nothing.
fn zombie(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state == "Z" || state == "X")
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(name) = std::str::from_utf8(&buf[..end])
                && !name.is_empty()
            {
                return name.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_is_alive_while_its_process_runs() {
        let me = this_process();
        let now = 1_000_000;
        let mut h = me.clone();
        assert!(!is_gone(&h, &me, now), "this process is alive");
        // The same pid with another start time is another process: the holder died and the pid was reused.
        h.process_start = h.process_start.map(|s| s + 1);
        if me.process_start.is_some() {
            assert!(is_gone(&h, &me, now));
        }
        // A process that exited but was not collected yet, then a pid that runs nothing.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        h = Holder {
            pid: dead,
            ..me.clone()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !zombie(dead) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(is_gone(&h, &me, now), "a zombie holds the lock");
        child.wait().unwrap();
        assert!(is_gone(&h, &me, now));
        // Another host: judged by the heartbeat.
        h = Holder {
            host: "elsewhere".into(),
            heartbeat_at: now - 10,
            ..me.clone()
        };
        assert!(!is_gone(&h, &me, now));
        h.heartbeat_at = now - STALE_AFTER_S - 1;
        assert!(is_gone(&h, &me, now));
    }
}
