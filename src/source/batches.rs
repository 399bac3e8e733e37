//! Inputs read off the async runtime: a blocking thread reads the files and hands their items over in batches,
//! so memory holds a batch, not the input.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{InputFile, Item, RequestBuilder, SourceError, items};
use crate::job::Job;
use crate::s3::S3;

/// The reading thread: whether every input could be read and, if so, how many items each file gave.
pub type Reader = JoinHandle<Result<Vec<u64>, SourceError>>;

/// Items handed over at a time.
pub const BATCH: usize = 500;

/// Reads `files` on a blocking thread and hands their items over in batches of [`BATCH`], in input order; the
/// thread stops when the receiver is dropped. Its result says whether every input could be read and, if so, how
/// many items each file gave (in the order of `files`).
pub fn read_in_batches(
    job: &Job,
    files: Vec<InputFile>,
    s3: Option<&S3>,
) -> (mpsc::Receiver<Vec<Item>>, Reader) {
    let (tx, rx) = mpsc::channel::<Vec<Item>>(4);
    let job = job.clone();
    let s3 = s3.cloned();
    let reader = tokio::task::spawn_blocking(move || {
        let builder = RequestBuilder::new(&job);
        let mut batch = Vec::with_capacity(BATCH);
        let mut counts = Vec::with_capacity(files.len());
        for file in &files {
            let mut open = true;
            let mut count = 0u64;
            items(&job, &builder, file, s3.as_ref(), &mut |item| {
                count += 1;
                batch.push(item);
                if batch.len() >= BATCH {
                    open = tx
                        .blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                        .is_ok();
                }
                open
            })?;
            counts.push(count);
            if !open {
                return Ok(counts);
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(counts)
    });
    (rx, reader)
}
