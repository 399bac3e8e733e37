-- Which records each input file gave, for incremental jobs: a file's records are consecutive in input order, so
-- a span (`first_seq`, `records`) names them. The next generation takes the records of a file whose identity
-- (relative path, size, modification time or ETag) is unchanged from here instead of reading it again, when the
-- settings are the same. `clean` is 1 when every record of the file could be sent (no bad line, no duplicate
-- id): only those are taken, so a file with a failed line is read again and fails the same way with its reason.
CREATE TABLE input_files (
    job       TEXT NOT NULL,
    identity  TEXT NOT NULL,  -- the file's identity, JSON, as in the job's fingerprint
    first_seq INTEGER NOT NULL,
    records   INTEGER NOT NULL,
    clean     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, identity)
) WITHOUT ROWID;
