//! The writer: the one task that commits outcomes. It batches outcomes for a few milliseconds so that thousands
//! of records a second cost a few transactions, not thousands. Parts are published by a second task fed with
//! the parts each batch touched, so that a slow upload never holds answered records out of the checkpoint.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::parts::Parts;
use super::shutdown::Shutdown;
use crate::checkpoint::{Finished, Status, Store};
use crate::error::Error;
use crate::report::RunStats;

const MAX_BATCH: usize = 1000;
// Outcomes wait at most this long before they are committed.
const LINGER: Duration = Duration::from_millis(20);

/// Commits outcomes until every sender is gone, while a publisher task publishes each part as it completes.
/// Returns the parts once the last one that could be published is.
///
/// A failure stops the run at once (`halt`): when outcomes cannot be committed, calls in flight are abandoned
/// (their records stay pending); when a part cannot be published (a full disk, a refused upload), no new call
/// starts, and the answers of calls in flight are still committed, so nothing paid for is lost. The first
/// error is the one returned.
pub async fn run(
    job: String,
    store: Store,
    parts: Parts,
    mut rx: mpsc::Receiver<Finished>,
    stats: Arc<RunStats>,
    halt: Shutdown,
) -> Result<Parts, Error> {
    let per_part = parts.records_per_part();
    let (touched_tx, touched_rx) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publish(store.clone(), parts, touched_rx));
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
        if let Err(e) = store.write_outcomes(&job, &batch).await {
            halt.stop.cancel();
            halt.abort.cancel();
            return Err(e.into());
        }
        let touched: BTreeSet<u64> = batch.iter().map(|f| f.seq / per_part + 1).collect();
        for f in &batch {
            let counter = match f.status {
                Status::Done => &stats.succeeded,
                Status::Failed => &stats.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        batch.clear();
        // A publisher that failed has stopped listening; its error is returned below, once the calls in flight
        // are in.
        if touched_tx.send(touched).is_err() || publisher.is_finished() {
            halt.stop.cancel();
        }
    }
    drop(touched_tx);
    Error::joined(publisher.await, "publisher")?
}

/// Publishes the parts named on `rx` that are complete, folding notices that queued up during an upload.
async fn publish(
    store: Store,
    mut parts: Parts,
    mut rx: mpsc::UnboundedReceiver<BTreeSet<u64>>,
) -> Result<Parts, Error> {
    while let Some(mut touched) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            touched.extend(more);
        }
        parts.publish_complete(&store, touched).await?;
    }
    Ok(parts)
}
