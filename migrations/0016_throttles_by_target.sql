-- A job with several targets: which one a throttle came from. NULL for a job with one target.
ALTER TABLE throttles ADD COLUMN target TEXT;
