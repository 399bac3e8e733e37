-- A job may be served by several targets (model or inference profile × region, each with its own quota): the
-- name of the target whose call answered a record. NULL for a job with one target, and for reused answers.
ALTER TABLE outcomes ADD COLUMN target TEXT;
