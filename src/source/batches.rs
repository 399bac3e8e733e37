//! Inputs read off the async runtime: a blocking thread reads the files and hands their items over in batches,
//! so memory holds a batch, not the input.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{InputFile, Item, RequestBuilder, SourceError, items};
use crate::job::Job;
use crate::s3::S3;

/// Items handed over at a time.
pub const BATCH: usize = 500;

/// Reads `files` on a blocking thread and hands their items over in batches of [`BATCH`], in input order; the
/// thread stops when the receiver is dropped. Its result says whether every input could be read.
pub fn read_in_batches(
    job: &Job,
    files: Vec<InputFile>,
    s3: Option<&S3>,
) -> (
    mpsc::Receiver<Vec<Item>>,
    JoinHandle<Result<(), SourceError>>,
) {
    let (tx, rx) = mpsc::channel::<Vec<Item>>(4);
    let job = job.clone();
    let s3 = s3.cloned();
    let reader = tokio::task::spawn_blocking(move || {
        let builder = RequestBuilder::new(&job);
        let mut batch = Vec::with_capacity(BATCH);
        for file in &files {
            let mut open = true;
            items(&job, &builder, file, s3.as_ref(), &mut |item| {
                batch.push(item);
                if batch.len() >= BATCH {
                    open = tx
                        .blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                        .is_ok();
                }
                open
            })?;
            if !open {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(())
    });
    (rx, reader)
}
