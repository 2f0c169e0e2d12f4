-- Scheduling state of a stream: when the scheduler last queued a job for it, how many
-- of its jobs in a row have failed (for the exponential backoff), and whether a webhook
-- asked for another run while one was already running.
ALTER TABLE streams ADD COLUMN scheduled_at TEXT;
ALTER TABLE streams ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE streams ADD COLUMN rerun INTEGER NOT NULL DEFAULT 0;

-- Workers look for claimable jobs (queued, or running with an expired lease).
CREATE INDEX jobs_claimable ON jobs (status, lease_expires_at);
