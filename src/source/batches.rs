//! Inputs read off the async runtime: a blocking thread reads the files and hands their items over in batches,
//! so memory holds a batch, not the input.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{InputFile, Item, RequestBuilder, SourceError, items};
use crate::job::Job;
use crate::s3::S3;

/// The reading thread: whether every input could be read and, if so, how many items each file gave.
pub type Reader = JoinHandle<Result<Vec<u64>, SourceError>>;

/// Items handed over at a time.
pub const BATCH: usize = 500;
/// The first batch: small, so that the first records are stored (and sent) before the reader has tokenized
/// hundreds of documents. Each batch after it is twice as large, up to [`BATCH`].
pub const FIRST_BATCH: usize = 8;
/// A batch is handed over early when its items came this slowly (documents downloaded one by one from S3).
const SLOW_BATCH: Duration = Duration::from_millis(25);

/// Reads `files` on a blocking thread and hands their items over in batches of [`FIRST_BATCH`] growing to
/// [`BATCH`] (or whatever was read in [`SLOW_BATCH`], when reading is slow), in input order; the thread stops
/// when the receiver is dropped. Its result says whether every input could be read and, if so, how
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
        let mut size = FIRST_BATCH;
        let mut batch = Vec::with_capacity(size);
        let mut since = Instant::now();
        let mut counts = Vec::with_capacity(files.len());
        for file in &files {
            let mut open = true;
            let mut count = 0u64;
            items(&job, &builder, file, s3.as_ref(), &mut |item| {
                count += 1;
                batch.push(item);
                if batch.len() >= size || since.elapsed() >= SLOW_BATCH {
                    size = (size * 2).min(BATCH);
                    since = Instant::now();
                    open = tx
                        .blocking_send(std::mem::replace(&mut batch, Vec::with_capacity(size)))
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
