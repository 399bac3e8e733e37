//! The writer: the one task that commits outcomes and publishes parts. It batches outcomes for a few
//! milliseconds so that thousands of records a second cost a few transactions, not thousands.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::parts::Parts;
use crate::checkpoint::{Finished, Status, Store};
use crate::error::Error;
use crate::report::RunStats;

const MAX_BATCH: usize = 1000;
// Outcomes wait at most this long before they are committed.
const LINGER: Duration = Duration::from_millis(20);

/// Commits outcomes until every sender is gone, publishing each part as it completes.
pub async fn run(
    job: String,
    store: Store,
    mut parts: Parts,
    mut rx: mpsc::Receiver<Finished>,
    stats: Arc<RunStats>,
) -> Result<Parts, Error> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(f)) => batch.push(f),
                Ok(None) | Err(_) => break,
            }
        }
        store.write_outcomes(&job, &batch).await?;
        let touched: BTreeSet<u64> = batch.iter().map(|f| parts.part_of(f.seq)).collect();
        for f in &batch {
            let counter = match f.status {
                Status::Done => &stats.succeeded,
                Status::Failed => &stats.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        batch.clear();
        parts.publish_complete(&store, touched).await?;
    }
    Ok(parts)
}
