-- What quota control learns and records.

-- The rates in use when the job last stopped, and the calibration of the local token estimate, so a resumed run
-- starts where the last one left off.
ALTER TABLE jobs ADD COLUMN rpm_rate REAL;
ALTER TABLE jobs ADD COLUMN tpm_rate REAL;
ALTER TABLE jobs ADD COLUMN token_ratio REAL;

-- Every throttle: when (Unix milliseconds), which quota, Bedrock's message, whether it started an episode (and
-- cut the rate), the bucket levels (share of capacity) before the resync, and the rates after it.
CREATE TABLE throttles (
    job       TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('rpm', 'tpm', 'tpd')),
    message   TEXT NOT NULL,
    cut       INTEGER NOT NULL,
    rpm_level REAL,
    tpm_level REAL,
    rpm_rate  REAL,
    tpm_rate  REAL
);
CREATE INDEX throttles_by_job ON throttles (job, at_ms);

-- Per second of a run (Unix seconds): admissions, tokens reserved and settled, successes, throttles, the most
-- requests in flight, and the controller's rates and concurrency cap.
CREATE TABLE series (
    job             TEXT NOT NULL,
    at_s            INTEGER NOT NULL,
    admitted        INTEGER NOT NULL,
    reserved_tokens INTEGER NOT NULL,
    settled_tokens  INTEGER NOT NULL,
    succeeded       INTEGER NOT NULL,
    throttled_rpm   INTEGER NOT NULL,
    throttled_tpm   INTEGER NOT NULL,
    in_flight       INTEGER NOT NULL,
    rpm_rate        REAL,
    tpm_rate        REAL,
    concurrency_cap INTEGER NOT NULL,
    PRIMARY KEY (job, at_s)
) WITHOUT ROWID;
