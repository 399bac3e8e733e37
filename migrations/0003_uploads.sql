-- Multipart uploads of output parts to S3 that were started and not yet completed or aborted. A run that dies
-- mid-upload leaves a row here; the next run aborts the upload so that S3 frees its pieces. Rows outlive a
-- `--fresh` start for the same reason.
CREATE TABLE uploads (
    job        TEXT NOT NULL,
    key        TEXT NOT NULL,
    upload_id  TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    PRIMARY KEY (job, upload_id)
) WITHOUT ROWID;
