-- The feed position at which a stream was created (the head is bumped for it), so a
-- feed token issued before a stream of that name was removed and created again can tell.
ALTER TABLE streams ADD COLUMN created_seq INTEGER NOT NULL DEFAULT 0;

-- A feed filtered by stream reads that stream's changes in position order.
CREATE INDEX records_by_stream_seq ON records (stream_id, seq);

-- Retention purges tombstones by age.
CREATE INDEX records_tombstones ON records (changed_at) WHERE body IS NULL;
