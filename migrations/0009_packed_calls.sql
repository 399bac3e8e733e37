-- Models that take many inputs a call (Cohere Embed: up to 96 texts) answer several records with one call: how
-- many records the call that answered a record carried. NULL for records answered one a call by a model that
-- takes one input.
ALTER TABLE outcomes ADD COLUMN call_records INTEGER;
