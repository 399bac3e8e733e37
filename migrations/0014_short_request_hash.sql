-- A request's hash is the first 128 bits of its SHA-256 (32 hex characters) instead of all 256: enough to tell
-- requests apart (two different requests share one by chance about once in 2^64 at four billion requests), and
-- 64 bytes a record less in the state database, half in the column and half in its index (issue 14). Stored
-- hashes are cut the same way, so that a generation checkpointed before this still matches the next night's.
UPDATE records SET request_hash = substr(request_hash, 1, 32) WHERE length(request_hash) > 32;
UPDATE answers SET hash = substr(hash, 1, 32) WHERE length(hash) > 32;
