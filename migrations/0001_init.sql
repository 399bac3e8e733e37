-- The checkpoint: one state database serves many jobs, keyed by job name.

-- A job and what it was started with. A resumed run must match `fingerprint`.
CREATE TABLE jobs (
    name        TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    -- The request- and output-shaping settings, as JSON, to say what changed when a resume is refused.
    settings    TEXT NOT NULL,
    -- The input files' identities (relative path, size, modification time), as JSON.
    inputs      TEXT NOT NULL,
    -- 1 once every input record is in `records`; an interrupted ingest starts over.
    ingested    INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
);

-- Every input record, in input order (`seq`). `request` is the body sent (the output's `modelInput`); it is
-- NULL for a line that could not be read, which has a failed outcome from the start.
CREATE TABLE records (
    job        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    record_id  TEXT NOT NULL,
    location   TEXT NOT NULL,
    request    TEXT,
    est_tokens INTEGER NOT NULL,
    max_tokens INTEGER NOT NULL,
    PRIMARY KEY (job, seq),
    UNIQUE (job, record_id)
) WITHOUT ROWID;

-- A record's final outcome, written once. A record without a row here is pending.
CREATE TABLE outcomes (
    job           TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    attempts      INTEGER NOT NULL,
    -- The model's reply (the output's `modelOutput`) when done.
    result        TEXT,
    error_code    TEXT,
    error_message TEXT,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms    INTEGER NOT NULL DEFAULT 0,
    finished_at   INTEGER NOT NULL,
    PRIMARY KEY (job, seq)
) WITHOUT ROWID;

-- Output parts published: part k (from 1) holds records with seq in [(k-1)·n, k·n).
CREATE TABLE parts (
    job          TEXT NOT NULL,
    part         INTEGER NOT NULL,
    file         TEXT NOT NULL,
    records      INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (job, part)
) WITHOUT ROWID;
