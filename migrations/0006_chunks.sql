-- Where a record came from inside its document, when documents are split into chunks: a JSON object with
-- `doc`, `chunk`, `start`, `end` (character offsets into the document) and `tokens`, written into the record's
-- output line so that a vector store can cite the source. NULL for records that are not chunks.
ALTER TABLE records ADD COLUMN meta TEXT;
