-- Answers shared by the generations of an incremental job: a reply is stored once, under the hash of the
-- request it answers (`records.request_hash`), and every generation's outcome for that request reads it from
-- here (its `outcomes.result` is NULL), so that a night that reuses forty thousand answers copies no reply and
-- the database does not grow by a copy of every reply each night. An outcome whose request already had a
-- stored answer keeps its own reply in `outcomes.result` (the same request sent twice may be answered
-- differently). Answers no record asks for any more are deleted when a generation is pruned.
CREATE TABLE answers (
    hash   TEXT PRIMARY KEY NOT NULL,
    result TEXT NOT NULL
);
