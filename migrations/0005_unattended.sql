-- Running unattended (cron, systemd timers): one process per job, and a --fresh that survives a crash.

-- The process that runs a job. A submit takes the row in a write transaction before it touches the job and
-- deletes it when it ends; a row whose process is gone (same host: the pid no longer runs, or runs a
-- different program; another host: no heartbeat for a while) is taken over.
CREATE TABLE locks (
    job           TEXT PRIMARY KEY NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    -- The holder's start time as the operating system counts it (Linux: clock ticks since boot), so that a
    -- pid reused by another process is not taken for the holder. NULL where it cannot be read.
    process_start INTEGER,
    since         INTEGER NOT NULL,      -- Unix seconds: when the lock was taken
    heartbeat_at  INTEGER NOT NULL,      -- Unix seconds: refreshed while the holder runs
    token         TEXT NOT NULL          -- the holder's own mark, so it only ever releases its own lock
) WITHOUT ROWID;

-- 1 while `--fresh` removes the job's earlier output; a run that finds it set finishes the removal and the
-- reset before anything else, so an interrupted --fresh never leaves old parts beside new ones.
ALTER TABLE jobs ADD COLUMN clearing INTEGER NOT NULL DEFAULT 0;
