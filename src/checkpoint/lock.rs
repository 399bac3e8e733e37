//! Job locks: which process runs a job. Taking a lock is one write transaction (`BEGIN IMMEDIATE`), so two
//! processes that try at the same moment are ordered by SQLite and exactly one of them gets it. Whether a
//! holder is still alive is the caller's question (it depends on the operating system); the store only
//! keeps the rows.

use sqlx::Row;

use super::store::{CheckpointError, Store, failed_to, now};

/// A process that holds (or asks for) a job's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// The host it runs on.
    pub host: String,
    /// Its start time as the operating system counts it, to tell a reused pid from the holder.
    pub process_start: Option<u64>,
    /// Unix seconds: when it took the lock.
    pub since: i64,
    /// Unix seconds: its last sign of life.
    pub heartbeat_at: i64,
}

/// What an attempt to lock a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// The lock is ours; `replaced` is the holder that had died, if there was one.
    Taken {
        /// A dead holder whose lock was taken over.
        replaced: Option<Holder>,
    },
    /// Another process, still alive, holds it.
    Busy(Holder),
}

impl Store {
    /// Takes the lock on `job` for `me` (marked with `token`) unless a live process holds it; `is_gone`
    /// says whether a holder has died.
    pub async fn lock_job(
        &self,
        job: &str,
        me: &Holder,
        token: &str,
        is_gone: impl Fn(&Holder) -> bool,
    ) -> Result<Locked, CheckpointError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed_to("lock the job"))?;
        let current = holder_row(&mut tx, job).await?;
        if let Some(h) = &current
            && !is_gone(h)
        {
            return Ok(Locked::Busy(h.clone()));
        }
        let t = now();
        sqlx::query(
            "INSERT OR REPLACE INTO locks (job, pid, host, process_start, since, heartbeat_at, token) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job)
        .bind(i64::from(me.pid))
        .bind(&me.host)
        .bind(me.process_start.map(|s| s as i64))
        .bind(t)
        .bind(t)
        .bind(token)
        .execute(&mut *tx)
        .await
        .map_err(failed_to("lock the job"))?;
        tx.commit().await.map_err(failed_to("lock the job"))?;
        Ok(Locked::Taken { replaced: current })
    }

    /// Refreshes the heartbeat of the lock marked `token`; false if the lock is no longer ours.
    pub async fn heartbeat(&self, job: &str, token: &str) -> Result<bool, CheckpointError> {
        let done = sqlx::query("UPDATE locks SET heartbeat_at = ? WHERE job = ? AND token = ?")
            .bind(now())
            .bind(job)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(failed_to("refresh the job's lock"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases the lock marked `token` (another holder's lock is left alone).
    pub async fn unlock(&self, job: &str, token: &str) -> Result<(), CheckpointError> {
        sqlx::query("DELETE FROM locks WHERE job = ? AND token = ?")
            .bind(job)
            .bind(token)
            .execute(&self.pool)
            .await
            .map_err(failed_to("release the job's lock"))?;
        Ok(())
    }

    /// Who holds the lock on `job`, alive or not.
    pub async fn lock_holder(&self, job: &str) -> Result<Option<Holder>, CheckpointError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(failed_to("read the job's lock"))?;
        holder_row(&mut conn, job).await
    }
}

async fn holder_row(
    conn: &mut sqlx::SqliteConnection,
    job: &str,
) -> Result<Option<Holder>, CheckpointError> {
    let row = sqlx::query(
        "SELECT pid, host, process_start, since, heartbeat_at FROM locks WHERE job = ?",
    )
    .bind(job)
    .fetch_optional(conn)
    .await
    .map_err(failed_to("read the job's lock"))?;
    Ok(row.map(|r| Holder {
        pid: r.get::<i64, _>("pid") as u32,
        host: r.get("host"),
        process_start: r.get::<Option<i64>, _>("process_start").map(|s| s as u64),
        since: r.get("since"),
        heartbeat_at: r.get("heartbeat_at"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(pid: u32) -> Holder {
        Holder {
            pid,
            host: "h".into(),
            process_start: Some(7),
            since: 0,
            heartbeat_at: 0,
        }
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_dead_holders_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let alive = |_: &Holder| false;
        assert_eq!(
            store.lock_job("j", &me(1), "a", alive).await.unwrap(),
            Locked::Taken { replaced: None }
        );
        // A second process while the first lives: busy, and the row is untouched.
        let Locked::Busy(h) = store.lock_job("j", &me(2), "b", alive).await.unwrap() else {
            panic!("the lock was taken twice");
        };
        assert_eq!(h.pid, 1);
        // Another job is independent.
        assert!(matches!(
            store.lock_job("k", &me(2), "b", alive).await.unwrap(),
            Locked::Taken { .. }
        ));
        // Only the holder's token refreshes or releases it.
        assert!(store.heartbeat("j", "a").await.unwrap());
        assert!(!store.heartbeat("j", "b").await.unwrap());
        store.unlock("j", "b").await.unwrap();
        assert_eq!(store.lock_holder("j").await.unwrap().unwrap().pid, 1);
        // A dead holder is replaced, and named.
        let gone = |h: &Holder| h.pid == 1;
        let Locked::Taken { replaced } = store.lock_job("j", &me(3), "c", gone).await.unwrap()
        else {
            panic!("a dead holder kept the lock");
        };
        assert_eq!(replaced.unwrap().pid, 1);
        assert!(!store.heartbeat("j", "a").await.unwrap());
        store.unlock("j", "c").await.unwrap();
        assert_eq!(store.lock_holder("j").await.unwrap(), None);
    }
}
