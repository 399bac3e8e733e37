-- The Bedrock service tier that served a record's call (flex, priority, default), when the call named one.
ALTER TABLE outcomes ADD COLUMN tier TEXT;
