//! Table `runs`: each submit that sent records — when, with which model and budget settings (the job's
//! fingerprint leaves the budget out, so it is kept here), and how it ended.

use sqlx::FromRow;

use super::store::{CheckpointError, Store, failed_to, now};

/// A run as `submit` started it.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct RunRow {
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while running or if the process was killed.
    pub ended_at: Option<i64>,
    /// `finished`, `interrupted` or `stopped: …`.
    pub outcome: Option<String>,
    /// The model id.
    pub model_id: String,
    /// `model.max-tokens`.
    pub max_tokens: Option<u64>,
    /// `model.output-burndown`.
    pub burndown: u64,
    /// `budget.rpm`.
    pub budget_rpm: Option<u64>,
    /// `budget.tpm`.
    pub budget_tpm: Option<u64>,
    /// `budget.max-concurrency`.
    pub max_concurrency: u64,
    /// Records pending when it started: a run that reads its inputs while it sends counts those stored then.
    pub pending: u64,
    /// Which budget values came from Service Quotas (`rpm`, `tpm`, `rpm,tpm`), not the job file.
    #[sqlx(default)]
    pub budget_from: Option<String>,
    /// While the run waits for the daily token quota: its next try (Unix seconds) and Bedrock's message.
    #[sqlx(default)]
    pub waiting_until: Option<i64>,
    /// See `waiting_until`.
    #[sqlx(default)]
    pub waiting_reason: Option<String>,
}

impl Store {
    /// Notes the start of a run; returns its key (Unix seconds). `run.started_at`, `ended_at` and `outcome`
    /// are not read: the run starts now.
    pub async fn start_run(&self, job: &str, run: &RunRow) -> Result<i64, CheckpointError> {
        // Two runs in one second (a quick resume) keep distinct keys.
        let mut at = now();
        loop {
            let done = sqlx::query(
                "INSERT INTO runs (job, started_at, model_id, max_tokens, burndown, budget_rpm, budget_tpm, \
                 max_concurrency, pending) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(job)
            .bind(at)
            .bind(&run.model_id)
            .bind(run.max_tokens.map(|v| v as i64))
            .bind(run.burndown as i64)
            .bind(run.budget_rpm.map(|v| v as i64))
            .bind(run.budget_tpm.map(|v| v as i64))
            .bind(run.max_concurrency as i64)
            .bind(run.pending as i64)
            .execute(&self.pool)
            .await
            .map_err(failed_to("note a run"))?;
            if done.rows_affected() == 1 {
                return Ok(at);
            }
            at += 1;
        }
    }

    /// Notes how a run ended.
    pub async fn end_run(
        &self,
        job: &str,
        started_at: i64,
        outcome: &str,
    ) -> Result<(), CheckpointError> {
        sqlx::query("UPDATE runs SET ended_at = ?, outcome = ? WHERE job = ? AND started_at = ?")
            .bind(now())
            .bind(outcome)
            .bind(job)
            .bind(started_at)
            .execute(&self.pool)
            .await
            .map_err(failed_to("note the end of a run"))?;
        Ok(())
    }

    /// Notes the budget a run started at `started_at` runs with, once its quotas not set in the job file were
    /// read from the account.
    pub async fn note_run_budget(
        &self,
        job: &str,
        started_at: i64,
        rpm: Option<u64>,
        tpm: Option<u64>,
        from: Option<&str>,
    ) -> Result<(), CheckpointError> {
        sqlx::query(
            "UPDATE runs SET budget_rpm = ?, budget_tpm = ?, budget_from = ? WHERE job = ? AND started_at = ?",
        )
        .bind(rpm.map(|v| v as i64))
        .bind(tpm.map(|v| v as i64))
        .bind(from)
        .bind(job)
        .bind(started_at)
        .execute(&self.pool)
        .await
        .map_err(failed_to("note a run's budget"))?;
        Ok(())
    }

    /// Notes that run `started_at` of `job` waits for the daily token quota until `until` (Unix seconds)
    /// because of `reason`, or (`None`) sends again.
    pub async fn note_run_waiting(
        &self,
        job: &str,
        started_at: i64,
        waiting: Option<(i64, &str)>,
    ) -> Result<(), CheckpointError> {
        sqlx::query(
            "UPDATE runs SET waiting_until = ?, waiting_reason = ? WHERE job = ? AND started_at = ?",
        )
        .bind(waiting.map(|w| w.0))
        .bind(waiting.map(|w| w.1))
        .bind(job)
        .bind(started_at)
        .execute(&self.pool)
        .await
        .map_err(failed_to("note a run's wait for the daily quota"))?;
        Ok(())
    }

    /// The job's runs, oldest first.
    pub async fn runs(&self, job: &str) -> Result<Vec<RunRow>, CheckpointError> {
        sqlx::query_as(
            "SELECT started_at, ended_at, outcome, model_id, max_tokens, burndown, budget_rpm, budget_tpm, \
             max_concurrency, pending, budget_from, waiting_until, waiting_reason FROM runs WHERE job = ? \
             ORDER BY started_at",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read runs"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::scratch;
    use super::*;

    #[tokio::test]
    async fn runs_in_one_second_keep_distinct_keys_and_their_settings() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        let run = RunRow {
            started_at: 0,
            ended_at: None,
            outcome: None,
            model_id: "m".into(),
            max_tokens: Some(10),
            burndown: 5,
            budget_rpm: Some(60),
            budget_tpm: None,
            max_concurrency: 4,
            pending: 3,
            budget_from: None,
            waiting_until: None,
            waiting_reason: None,
        };
        let first = store.start_run("j", &run).await.unwrap();
        let second = store.start_run("j", &run).await.unwrap();
        assert_eq!(
            second,
            first + 1,
            "two runs in one second keep distinct keys"
        );
        store.end_run("j", first, "interrupted").await.unwrap();
        store
            .note_run_budget("j", second, Some(60), Some(9000), Some("tpm"))
            .await
            .unwrap();
        let runs = store.runs("j").await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(
            runs[0],
            RunRow {
                started_at: first,
                ended_at: runs[0].ended_at,
                outcome: Some("interrupted".into()),
                ..run.clone()
            }
        );
        assert!(runs[0].ended_at.is_some_and(|e| e >= first));
        assert_eq!(runs[1].ended_at, None);
        assert_eq!(runs[1].max_tokens, Some(10));
        assert_eq!(
            (runs[1].budget_tpm, runs[1].budget_from.as_deref()),
            (Some(9000), Some("tpm"))
        );
        store.create_job("j", "fp2", "{}", "[]").await.unwrap();
        assert!(store.runs("j").await.unwrap().is_empty());
    }
}
