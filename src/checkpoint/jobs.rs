//! Table `jobs`: a job's identity (fingerprint, settings, inputs), how far its ingest got, and the rates and
//! calibration its last run learned.

use sqlx::FromRow;

use super::store::{CheckpointError, JOB_STATE, Store, delete_rows, failed_to, now};
use crate::budget::LearnedRates;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StoredJob {
    /// Fingerprint of settings and inputs.
    pub fingerprint: String,
    /// Settings JSON.
    pub settings: String,
    /// Input identities JSON.
    pub inputs: String,
    /// Whether every record was ingested.
    pub ingested: bool,
    /// Records ingested: all of them once `ingested`; before, how many an ingest that did not finish stored
    /// whole (records, bad lines' outcomes, reused answers), from which the next run goes on.
    pub total: u64,
    /// A `--fresh` started and has not finished removing the job's earlier output.
    pub clearing: bool,
}

/// The `jobs` columns [`LearnedRates`] is kept in.
#[derive(FromRow)]
struct LearnedRow {
    rpm_rate: Option<f64>,
    tpm_rate: Option<f64>,
    token_ratio: Option<f64>,
}

impl Store {
    /// The stored job named `name`.
    pub async fn job(&self, name: &str) -> Result<Option<StoredJob>, CheckpointError> {
        sqlx::query_as(
            "SELECT fingerprint, settings, inputs, ingested, total, clearing FROM jobs WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed_to("read the job"))
    }

    /// Names of every job in the database.
    pub async fn job_names(&self) -> Result<Vec<String>, CheckpointError> {
        // A generation's key is no job of its own: its job is listed by name.
        sqlx::query_scalar(
            "SELECT name FROM jobs WHERE name NOT IN (SELECT key FROM generations) \
             UNION SELECT job FROM generations ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("list jobs"))
    }

    /// Notes that a fresh start of `job` began removing its earlier output: until [`Store::create_job`] resets
    /// it, every run finishes that removal first. Nothing happens for a job not in the database.
    pub async fn mark_clearing(&self, job: &str) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET clearing = 1, updated_at = ? WHERE name = ?")
            .bind(now())
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(failed_to("note the start of a fresh run"))?;
        Ok(())
    }

    /// Starts a job from nothing, in one transaction: any earlier state under `name` is deleted (all but the
    /// uploads still to abort).
    pub async fn create_job(
        &self,
        name: &str,
        fingerprint: &str,
        settings: &str,
        inputs: &str,
    ) -> Result<(), CheckpointError> {
        let mut tx = self.begin().await?;
        delete_rows(&mut tx, name, &JOB_STATE, "clear the job's earlier state").await?;
        let t = now();
        sqlx::query(
            "INSERT INTO jobs (name, fingerprint, settings, inputs, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(settings)
        .bind(inputs)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(failed_to("create the job"))?;
        tx.commit().await.map_err(failed_to("commit the new job"))
    }

    /// Notes that the ingest stored its first `records` records whole: they may be sent, and an ingest that
    /// stops goes on from there.
    pub async fn note_ingested_upto(&self, job: &str, records: u64) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET total = ?, updated_at = ? WHERE name = ? AND ingested = 0")
            .bind(records as i64)
            .bind(now())
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(failed_to("note how far the ingest got"))?;
        Ok(())
    }

    /// Marks the ingest complete with `total` records.
    pub async fn mark_ingested(&self, job: &str, total: u64) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET ingested = 1, total = ?, updated_at = ? WHERE name = ?")
            .bind(total as i64)
            .bind(now())
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(failed_to("mark the ingest complete"))?;
        Ok(())
    }

    /// Marks the job finished.
    pub async fn mark_finished(&self, job: &str) -> Result<(), CheckpointError> {
        let t = now();
        sqlx::query("UPDATE jobs SET finished_at = ?, updated_at = ? WHERE name = ?")
            .bind(t)
            .bind(t)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(failed_to("mark the job finished"))?;
        Ok(())
    }

    /// The rates and calibration a run of the job last saved; `None` before any run saved them.
    pub async fn learned(&self, job: &str) -> Result<Option<LearnedRates>, CheckpointError> {
        let row: Option<LearnedRow> =
            sqlx::query_as("SELECT rpm_rate, tpm_rate, token_ratio FROM jobs WHERE name = ?")
                .bind(job)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed_to("read learned rates"))?;
        Ok(row.and_then(|r| {
            r.token_ratio.map(|token_ratio| LearnedRates {
                rpm_rate: r.rpm_rate,
                tpm_rate: r.tpm_rate,
                token_ratio,
            })
        }))
    }

    /// Saves what the run learned.
    pub async fn save_learned(
        &self,
        job: &str,
        learned: &LearnedRates,
    ) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE jobs SET rpm_rate = ?, tpm_rate = ?, token_ratio = ? WHERE name = ?")
            .bind(learned.rpm_rate)
            .bind(learned.tpm_rate)
            .bind(learned.token_ratio)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(failed_to("save learned rates"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::scratch;
    use super::*;

    #[tokio::test]
    async fn a_job_is_created_marked_and_started_over() {
        let (_dir, store) = scratch().await;
        assert_eq!(store.job("j").await.unwrap(), None);
        store
            .create_job("j", "fp", "{\"a\":1}", "[]")
            .await
            .unwrap();
        let job = store.job("j").await.unwrap().unwrap();
        assert_eq!(
            job,
            StoredJob {
                fingerprint: "fp".into(),
                settings: "{\"a\":1}".into(),
                inputs: "[]".into(),
                ingested: false,
                total: 0,
                clearing: false,
            }
        );
        store.note_ingested_upto("j", 3).await.unwrap();
        assert_eq!(store.job("j").await.unwrap().unwrap().total, 3);
        store.mark_ingested("j", 7).await.unwrap();
        // Once the ingest is complete, a late note of its progress changes nothing.
        store.note_ingested_upto("j", 5).await.unwrap();
        store.mark_clearing("j").await.unwrap();
        let job = store.job("j").await.unwrap().unwrap();
        assert!(job.ingested && job.clearing && job.total == 7, "{job:?}");
        // Marking a job that does not exist changes nothing and is no error.
        store.mark_clearing("other").await.unwrap();
        assert_eq!(store.job_names().await.unwrap(), vec!["j".to_string()]);
        // Starting over resets every column.
        store.create_job("j", "fp2", "{}", "[]").await.unwrap();
        let job = store.job("j").await.unwrap().unwrap();
        assert!(!job.ingested && !job.clearing && job.total == 0 && job.fingerprint == "fp2");
    }

    #[tokio::test]
    async fn learned_rates_round_trip_and_are_none_before_a_run_saved_them() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        assert_eq!(store.learned("j").await.unwrap(), None);
        assert_eq!(store.learned("missing").await.unwrap(), None);
        let learned = LearnedRates {
            rpm_rate: None,
            tpm_rate: Some(19_600.5),
            token_ratio: 1.25,
        };
        store.save_learned("j", &learned).await.unwrap();
        assert_eq!(store.learned("j").await.unwrap(), Some(learned));
    }
}
