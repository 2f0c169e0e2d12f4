-- Scheduling state of a stream: when the scheduler last queued a job for it, how many
-- of its jobs in a row have failed (for the exponential backoff), and whether a webhook
-- asked for another run while one was already running.
ALTER TABLE streams ADD COLUMN scheduled_at TIMESTAMPTZ;
ALTER TABLE streams ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE streams ADD COLUMN rerun BOOLEAN NOT NULL DEFAULT FALSE;

-- Workers look for claimable jobs (queued, or running with an expired lease).
CREATE INDEX jobs_claimable ON jobs (status, lease_expires_at);

-- Record keys sort by bytes, as on SQLite, whatever the server's locale (the mirror is
-- listed in key order).
ALTER TABLE records ALTER COLUMN key TYPE TEXT COLLATE "C";
