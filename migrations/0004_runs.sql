-- Each run of a job (a submit that sent records): when, with which budget and model settings, and how it
-- ended. `status` and `report` read these; the job's fingerprint leaves the budget out, so it is kept here.
CREATE TABLE runs (
    job             TEXT NOT NULL,
    started_at      INTEGER NOT NULL,      -- Unix seconds
    ended_at        INTEGER,               -- NULL while running (or if the process was killed)
    outcome         TEXT,                  -- finished | interrupted | stopped: <error>
    model_id        TEXT NOT NULL,
    max_tokens      INTEGER,
    burndown        INTEGER NOT NULL,
    budget_rpm      INTEGER,
    budget_tpm      INTEGER,
    max_concurrency INTEGER NOT NULL,
    pending         INTEGER NOT NULL,      -- records without an outcome when the run started
    PRIMARY KEY (job, started_at)
) WITHOUT ROWID;
