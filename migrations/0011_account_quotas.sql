-- The account's quotas as Service Quotas last gave them, by Region and model id: a run that cannot read Service
-- Quotas (a network error, not a denial) starts from these, and says when they were read.
CREATE TABLE account_quotas (
    region   TEXT NOT NULL,
    model_id TEXT NOT NULL,
    measure  TEXT NOT NULL CHECK (measure IN ('rpm', 'tpm', 'tpd')),
    code     TEXT NOT NULL,
    name     TEXT NOT NULL,
    value    REAL NOT NULL,
    read_at  INTEGER NOT NULL,   -- Unix seconds
    PRIMARY KEY (region, model_id, measure)
) WITHOUT ROWID;
