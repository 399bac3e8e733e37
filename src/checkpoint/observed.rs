//! Tables `throttles` and `series`: what the budget observed during runs — every throttle, and per second the
//! requests admitted, tokens reserved and charged, successes, throttles, requests in flight and the rates in
//! force. The series row is [`Second`], defined once in the budget that counts it; [`SERIES`] names its
//! columns once for the INSERT, the merge of a second written twice, and the SELECT.

use sqlx::query_builder::Separated;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::store::{CheckpointError, ROWS_PER_STATEMENT, Store, failed_to};
use crate::budget::{Second, ThrottleEvent};

/// How a second recorded twice (a resumed run within the same second) is merged.
#[derive(Clone, Copy)]
enum Merge {
    /// Counts add up.
    Sum,
    /// The larger stays.
    Max,
    /// The later one stays.
    Last,
}

/// The columns of `series` after `job` and `at_s`, in the order [`bind`] binds them.
const SERIES: [(&str, Merge); 10] = [
    ("admitted", Merge::Sum),
    ("reserved_tokens", Merge::Sum),
    ("settled_tokens", Merge::Sum),
    ("succeeded", Merge::Sum),
    ("throttled_rpm", Merge::Sum),
    ("throttled_tpm", Merge::Sum),
    ("in_flight", Merge::Max),
    ("rpm_rate", Merge::Last),
    ("tpm_rate", Merge::Last),
    ("concurrency_cap", Merge::Last),
];

/// A [`Second`]'s values in the order of [`SERIES`].
fn bind(mut row: Separated<'_, Sqlite, &'static str>, s: &Second) {
    row.push_bind(s.admitted as i64)
        .push_bind(s.reserved_tokens as i64)
        .push_bind(s.settled_tokens as i64)
        .push_bind(s.succeeded as i64)
        .push_bind(s.throttled_rpm as i64)
        .push_bind(s.throttled_tpm as i64)
        .push_bind(s.in_flight as i64)
        .push_bind(s.rpm_rate)
        .push_bind(s.tpm_rate)
        .push_bind(s.concurrency_cap as i64);
}

/// A `series` row, read by column name.
fn second(r: &SqliteRow) -> Result<Second, sqlx::Error> {
    Ok(Second {
        at_s: r.try_get("at_s")?,
        admitted: r.try_get("admitted")?,
        reserved_tokens: r.try_get("reserved_tokens")?,
        settled_tokens: r.try_get("settled_tokens")?,
        succeeded: r.try_get("succeeded")?,
        throttled_rpm: r.try_get("throttled_rpm")?,
        throttled_tpm: r.try_get("throttled_tpm")?,
        in_flight: r.try_get("in_flight")?,
        rpm_rate: r.try_get("rpm_rate")?,
        tpm_rate: r.try_get("tpm_rate")?,
        concurrency_cap: r.try_get("concurrency_cap")?,
    })
}

/// `a, b, c`
fn columns() -> String {
    SERIES.map(|(c, _)| c).join(", ")
}

/// The `ON CONFLICT` clause that merges a second written twice.
fn merge() -> String {
    let set = SERIES.map(|(c, m)| match m {
        Merge::Sum => format!("{c} = {c} + excluded.{c}"),
        Merge::Max => format!("{c} = max({c}, excluded.{c})"),
        Merge::Last => format!("{c} = excluded.{c}"),
    });
    format!(" ON CONFLICT (job, at_s) DO UPDATE SET {}", set.join(", "))
}

/// What one target of a job with several answered, over all its runs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TargetStats {
    /// The target's name.
    pub name: String,
    /// Records it answered.
    pub answered: u64,
    /// Their input tokens.
    pub input_tokens: u64,
    /// Their output tokens.
    pub output_tokens: u64,
    /// Median latency of its answers, milliseconds (retries on other targets included).
    pub p50_ms: u64,
    /// 99th percentile, likewise.
    pub p99_ms: u64,
    /// Throttles it returned.
    pub throttles: u64,
}

/// What one service tier served of a job, over all its runs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TierStats {
    /// The tier (`flex`, `priority`, `default`).
    pub tier: String,
    /// Records it answered.
    pub answered: u64,
    /// Their input tokens.
    pub input_tokens: u64,
    /// Their output tokens.
    pub output_tokens: u64,
    /// Median latency of those records, milliseconds.
    pub p50_ms: u64,
}

impl Store {
    /// Records throttles, of `target` in a job with several.
    pub async fn insert_throttles(
        &self,
        (job, target): (&str, Option<&str>),
        events: &[ThrottleEvent],
    ) -> Result<(), CheckpointError> {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(
                "INSERT INTO throttles (job, at_ms, kind, message, cut, rpm_level, tpm_level, rpm_rate, tpm_rate, \
                 target) ",
            );
            b.push_values(chunk, |mut row, e| {
                row.push_bind(job.to_string())
                    .push_bind(e.at_ms)
                    .push_bind(e.kind.as_str())
                    .push_bind(e.message.clone())
                    .push_bind(e.cut)
                    .push_bind(e.rpm_level)
                    .push_bind(e.tpm_level)
                    .push_bind(e.rpm_rate)
                    .push_bind(e.tpm_rate)
                    .push_bind(target);
            });
            b.build()
                .persistent(false)
                .execute(&self.pool)
                .await
                .map_err(failed_to("record throttles"))?;
        }
        Ok(())
    }

    /// A job with several targets: what each one answered, and its throttles, by target name.
    pub async fn by_target(&self, job: &str) -> Result<Vec<TargetStats>, CheckpointError> {
        sqlx::query_as(
            "WITH answered AS (SELECT target, latency_ms, input_tokens, output_tokens, \
               row_number() OVER (PARTITION BY target ORDER BY latency_ms) AS i, \
               count(*) OVER (PARTITION BY target) AS n \
               FROM outcomes WHERE job = ?1 AND target IS NOT NULL), \
             per AS (SELECT target, count(*) AS answered, sum(input_tokens) AS input_tokens, \
               sum(output_tokens) AS output_tokens, \
               max(CASE WHEN i = (n + 1) / 2 THEN latency_ms END) AS p50_ms, \
               max(CASE WHEN i = (n * 99 + 99) / 100 THEN latency_ms END) AS p99_ms \
               FROM answered GROUP BY target), \
             thr AS (SELECT target, count(*) AS throttles FROM throttles WHERE job = ?1 AND target IS NOT NULL \
               GROUP BY target) \
             SELECT t.target AS name, coalesce(p.answered, 0) AS answered, \
               coalesce(p.input_tokens, 0) AS input_tokens, coalesce(p.output_tokens, 0) AS output_tokens, \
               coalesce(p.p50_ms, 0) AS p50_ms, coalesce(p.p99_ms, 0) AS p99_ms, \
               coalesce(h.throttles, 0) AS throttles \
             FROM (SELECT target FROM per UNION SELECT target FROM thr) t \
             LEFT JOIN per p ON p.target = t.target LEFT JOIN thr h ON h.target = t.target ORDER BY t.target",
        )
        .bind(job)
        .persistent(false)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("sum up the job's targets"))
    }

    /// What each service tier served, for the records whose calls named one, and as tier `batch` what Bedrock
    /// batch inference answered.
    pub async fn by_tier(&self, job: &str) -> Result<Vec<TierStats>, CheckpointError> {
        sqlx::query_as(
            "WITH answered AS (SELECT CASE WHEN via_batch THEN 'batch' ELSE tier END AS tier, latency_ms, \
               input_tokens, output_tokens FROM outcomes WHERE job = ?1 AND status = 'done'), \
             served AS (SELECT tier, latency_ms, input_tokens, output_tokens, \
               row_number() OVER (PARTITION BY tier ORDER BY latency_ms) AS i, \
               count(*) OVER (PARTITION BY tier) AS n \
               FROM answered WHERE tier IS NOT NULL) \
             SELECT tier, count(*) AS answered, sum(input_tokens) AS input_tokens, \
               sum(output_tokens) AS output_tokens, \
               coalesce(max(CASE WHEN i = (n + 1) / 2 THEN latency_ms END), 0) AS p50_ms \
             FROM served GROUP BY tier ORDER BY tier",
        )
        .bind(job)
        .persistent(false)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("sum up the job's service tiers"))
    }

    /// Throttles by quota: `(rpm, tpm, tpd)`.
    pub async fn throttle_counts(&self, job: &str) -> Result<(u64, u64, u64), CheckpointError> {
        sqlx::query_as(
            "SELECT coalesce(sum(kind = 'rpm'), 0), coalesce(sum(kind = 'tpm'), 0), coalesce(sum(kind = 'tpd'), 0) \
             FROM throttles WHERE job = ?",
        )
        .bind(job)
        .fetch_one(&self.pool)
        .await
        .map_err(failed_to("count throttles"))
    }

    /// Records per-second counts. A second recorded twice (a resumed run within the same second) is merged:
    /// counts add up, the most in flight stays, the rates are the later ones.
    pub async fn insert_seconds(
        &self,
        job: &str,
        seconds: &[Second],
    ) -> Result<(), CheckpointError> {
        for chunk in seconds.chunks(ROWS_PER_STATEMENT) {
            let mut b = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO series (job, at_s, {}) ",
                columns()
            ));
            b.push_values(chunk, |mut row, s| {
                row.push_bind(job.to_string()).push_bind(s.at_s);
                bind(row, s);
            });
            b.push(merge());
            b.build()
                .persistent(false)
                .execute(&self.pool)
                .await
                .map_err(failed_to("record the per-second series"))?;
        }
        Ok(())
    }

    /// The per-second series, oldest first.
    pub async fn series(&self, job: &str) -> Result<Vec<Second>, CheckpointError> {
        let sql = format!(
            "SELECT at_s, {} FROM series WHERE job = ? ORDER BY at_s",
            columns()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job)
            .fetch_all(&self.pool)
            .await
            .map_err(failed_to("read the per-second series"))?;
        rows.iter()
            .map(second)
            .collect::<Result<_, _>>()
            .map_err(failed_to("read the per-second series"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::scratch;
    use super::*;
    use crate::budget::ThrottleKind;

    fn sec(at_s: i64, n: u64) -> Second {
        Second {
            at_s,
            admitted: n,
            reserved_tokens: 100 * n,
            settled_tokens: 40 * n,
            succeeded: n,
            throttled_rpm: 1,
            throttled_tpm: 2,
            in_flight: n,
            rpm_rate: Some(60.0 * n as f64),
            tpm_rate: None,
            concurrency_cap: 4 * n,
        }
    }

    #[tokio::test]
    async fn seconds_round_trip_and_a_second_written_twice_is_merged() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        // More than one statement's worth.
        let many: Vec<_> = (0..700).map(|i| sec(1_000 + i, 1)).collect();
        store.insert_seconds("j", &many).await.unwrap();
        store.insert_seconds("j", &[sec(1_000, 3)]).await.unwrap();
        let read = store.series("j").await.unwrap();
        assert_eq!(read.len(), 700);
        assert_eq!(read[1], many[1]);
        assert_eq!(
            read[0],
            Second {
                at_s: 1_000,
                admitted: 4,
                reserved_tokens: 400,
                settled_tokens: 160,
                succeeded: 4,
                throttled_rpm: 2,
                throttled_tpm: 4,
                in_flight: 3,
                rpm_rate: Some(180.0),
                tpm_rate: None,
                concurrency_cap: 12,
            }
        );
        assert!(store.series("other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn throttles_are_counted_by_quota() {
        let (_dir, store) = scratch().await;
        store.create_job("j", "fp", "{}", "[]").await.unwrap();
        assert_eq!(store.throttle_counts("j").await.unwrap(), (0, 0, 0));
        let event = |kind| ThrottleEvent {
            at_ms: 1_700_000_000_000,
            kind,
            message: "Too many requests".into(),
            cut: false,
            rpm_level: Some(0.1),
            tpm_level: None,
            rpm_rate: Some(60.0),
            tpm_rate: None,
        };
        let events = [
            event(ThrottleKind::Rpm),
            event(ThrottleKind::Tpm),
            event(ThrottleKind::Tpm),
            event(ThrottleKind::Tpd),
        ];
        store.insert_throttles(("j", None), &events).await.unwrap();
        assert_eq!(store.throttle_counts("j").await.unwrap(), (1, 2, 1));
    }
}
