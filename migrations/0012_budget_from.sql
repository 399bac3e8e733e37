-- Which of a run's budget values came from the account (Service Quotas) rather than the job file: `rpm`, `tpm`
-- or `rpm,tpm`; NULL when the job file set them all (or set none and none could be read).
ALTER TABLE runs ADD COLUMN budget_from TEXT;
