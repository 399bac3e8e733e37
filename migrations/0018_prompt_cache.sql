-- Prompt caching: input tokens of a record's call read from Bedrock's prompt cache, and written to it (neither is
-- in input_tokens, as Bedrock reports them).
ALTER TABLE outcomes ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outcomes ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
