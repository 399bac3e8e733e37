-- A run that waits for the model's daily token quota (budget.on-daily-quota = "wait"): when its next try goes
-- (Unix seconds) and Bedrock's message; NULL while it sends. `batchrun status` shows it.
ALTER TABLE runs ADD COLUMN waiting_until INTEGER;
ALTER TABLE runs ADD COLUMN waiting_reason TEXT;
