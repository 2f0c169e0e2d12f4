-- A job that met a stale cursor and read again from the beginning says so: the
-- upstream's status, the reason and when (JSON), NULL when it did not.
ALTER TABLE jobs ADD COLUMN resynced TEXT;

-- The reconcile clock of a stream with `schedule.reconcile`: when a reconcile last fell
-- due (the next one is due a period later), and since when one that fell due is waiting
-- for the stream's job to end (NULL when none waits).
ALTER TABLE streams ADD COLUMN reconcile_scheduled_at TEXT;
ALTER TABLE streams ADD COLUMN reconcile_due_at TEXT;

-- The keys a reconcile job has listed, written with each page it commits (in the page's
-- transaction), so the job knows which keys of the mirror vanished upstream without
-- holding them in memory. Deleted when the job ends.
CREATE TABLE reconcile_seen (
    job_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    PRIMARY KEY (job_id, key)
) WITHOUT ROWID;
