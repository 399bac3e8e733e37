//! Table `answers`: the replies of an incremental job's generations, stored once under the hash of the request
//! they answer and read by every generation whose record sends that request. A generation's outcome that took
//! its reply from here has `result` NULL; [`output_row_select`](super::outcomes) reads through.

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::store::{CheckpointError, ROWS_PER_STATEMENT, failed_to};

/// Stores `replies` (position, reply) of `job` as shared answers when `job` is a generation of an incremental
/// job, and returns the positions whose reply went there (their outcome is written without it). A reply to a
/// request that already has an answer is not shared: its outcome keeps it.
pub(super) async fn share(
    conn: &mut SqliteConnection,
    job: &str,
    replies: &[(u64, &str)],
) -> Result<HashSet<u64>, CheckpointError> {
    let generation: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM generations WHERE key = ?)")
            .bind(job)
            .fetch_one(&mut *conn)
            .await
            .map_err(failed_to("look up the job's generation"))?;
    let mut shared = HashSet::new();
    if !generation || replies.is_empty() {
        return Ok(shared);
    }
    for chunk in replies.chunks(ROWS_PER_STATEMENT) {
        let hashes = request_hashes(conn, job, chunk).await?;
        // The first reply to each request in the batch is the one offered.
        let mut offered: Vec<(&str, u64, &str)> = Vec::new();
        let mut seen = HashSet::new();
        for &(seq, reply) in chunk {
            if let Some(h) = hashes.get(&seq)
                && seen.insert(h.as_str())
            {
                offered.push((h.as_str(), seq, reply));
            }
        }
        if offered.is_empty() {
            continue;
        }
        let mut b = QueryBuilder::<Sqlite>::new("INSERT INTO answers (hash, result) ");
        b.push_values(&offered, |mut row, (hash, _, reply)| {
            row.push_bind(hash.to_string()).push_bind(reply.to_string());
        });
        b.push(" ON CONFLICT DO NOTHING RETURNING hash");
        let stored: HashSet<String> = b
            .build_query_scalar::<String>()
            .persistent(false)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed_to("store answers"))?
            .into_iter()
            .collect();
        shared.extend(
            offered
                .iter()
                .filter(|(h, _, _)| stored.contains(*h))
                .map(|(_, seq, _)| *seq),
        );
    }
    Ok(shared)
}

/// The request hashes of the records of `job` at the positions of `replies`.
async fn request_hashes(
    conn: &mut SqliteConnection,
    job: &str,
    replies: &[(u64, &str)],
) -> Result<HashMap<u64, String>, CheckpointError> {
    let mut b = QueryBuilder::<Sqlite>::new("SELECT seq, request_hash FROM records WHERE job = ");
    b.push_bind(job.to_string());
    b.push(" AND request_hash IS NOT NULL AND seq IN (");
    let mut seqs = b.separated(", ");
    for (seq, _) in replies {
        seqs.push_bind(*seq as i64);
    }
    b.push(")");
    let rows: Vec<(i64, String)> = b
        .build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(failed_to("read request hashes"))?;
    Ok(rows.into_iter().map(|(s, h)| (s as u64, h)).collect())
}

/// Deletes the answers no record asks for any more (after a generation's records are gone).
pub(super) async fn forget_unused(conn: &mut SqliteConnection) -> Result<(), CheckpointError> {
    sqlx::query(
        "DELETE FROM answers WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.request_hash = answers.hash)",
    )
    .execute(&mut *conn)
    .await
    .map_err(failed_to("forget unused answers"))?;
    Ok(())
}
