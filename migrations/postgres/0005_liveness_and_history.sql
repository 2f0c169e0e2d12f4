-- Serving processes (docs/design.md §7, "Failover without waiting out a lease"): each
-- start takes the next id (never one used before) and holds a session-level advisory
-- lock under it for as long as it lives.
CREATE TABLE instances (
    id         INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pid        INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL
);
-- The instance whose worker holds a running job's lease: a job whose instance no
-- longer holds its lock is taken over at once.
ALTER TABLE jobs ADD COLUMN lease_instance INTEGER;

-- Job history retention: finished jobs by age, and a stream's jobs newest first (with
-- the id, so "the newest 100 of a stream" reads 100 index entries, ties included).
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
DROP INDEX jobs_by_stream;
CREATE INDEX jobs_by_stream ON jobs (stream_id, created_at, id);
