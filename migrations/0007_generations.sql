-- Incremental jobs: each submit after the inputs changed is a new generation, stored as a job of its own under
-- `key` (records, outcomes, parts, runs and series as for any job). A record whose request was answered in an
-- earlier generation takes that answer instead of a call: requests are matched by `records.request_hash`, a
-- hash of what is sent (model, API, body).
CREATE TABLE generations (
    job         TEXT NOT NULL,       -- the job's name
    generation  INTEGER NOT NULL,    -- 1, 2, …
    key         TEXT NOT NULL UNIQUE,-- the job key its records are stored under
    fingerprint TEXT NOT NULL,       -- the inputs and settings it was started with
    started_at  INTEGER NOT NULL,    -- Unix seconds
    finished_at INTEGER,             -- NULL until every record has an outcome and the output is published
    PRIMARY KEY (job, generation)
) WITHOUT ROWID;

ALTER TABLE records ADD COLUMN request_hash TEXT;
CREATE INDEX records_by_request ON records (request_hash);

-- 1 when the answer was taken from an earlier generation without a call.
ALTER TABLE outcomes ADD COLUMN reused INTEGER NOT NULL DEFAULT 0;
