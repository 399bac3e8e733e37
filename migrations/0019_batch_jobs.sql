-- Bedrock batch inference: each batch job a run made of a job's records (a shard), from the moment it is staged,
-- and which records each one holds. A shard's row is written before its records go up to S3 and before its
-- batch job is created, with the idempotency token the create sends, so that a process killed anywhere in between
-- makes the same batch job again, never a second one.
CREATE TABLE batch_jobs (
    job TEXT NOT NULL,
    shard INTEGER NOT NULL,
    token TEXT NOT NULL,
    name TEXT NOT NULL,
    input_uri TEXT NOT NULL,
    output_uri TEXT NOT NULL,
    records INTEGER NOT NULL,
    -- NULL until CreateModelInvocationJob answered.
    arn TEXT,
    -- 'Staged' until created, then Bedrock's status as last read.
    status TEXT NOT NULL,
    message TEXT,
    processed INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    errored INTEGER NOT NULL DEFAULT 0,
    -- Its results were read into outcomes.
    collected INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job, shard)
);

CREATE TABLE batch_records (
    job TEXT NOT NULL,
    seq INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    PRIMARY KEY (job, seq)
) WITHOUT ROWID;

CREATE INDEX batch_records_by_shard ON batch_records (job, shard, seq);

-- Whether a record's answer came from a batch job (priced at the batch price) rather than an on-demand call.
ALTER TABLE outcomes ADD COLUMN via_batch INTEGER NOT NULL DEFAULT 0;
