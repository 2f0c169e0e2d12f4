-- Child streams (docs/design.md §3, "Child stream"): a stream's parent, set from the
-- spec whenever the source is stored.
ALTER TABLE streams ADD COLUMN parent_id BIGINT REFERENCES streams (id) ON DELETE SET NULL;
CREATE INDEX streams_by_parent ON streams (parent_id) WHERE parent_id IS NOT NULL;

-- The durable queue of parents whose children a child stream has to read again: the
-- parent's page transaction writes one row per parent key it inserted, changed or
-- deleted, per child stream. `seq` is the feed position of that change of the parent
-- (a later change of the same key moves the row on), so the child's commit consumes a
-- row only if no newer change of the parent came meanwhile.
CREATE TABLE child_queue (
    stream_id   BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    parent_key  TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    -- The parent was deleted: its children are tombstoned.
    deleted     BOOLEAN NOT NULL,
    enqueued_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_id, parent_key)
);
CREATE INDEX child_queue_by_seq ON child_queue (stream_id, seq);

-- Which children of a parent the child stream's mirror holds (keys `<parent>/<child>`),
-- written in the child's page transactions: a listing that no longer holds one, or the
-- parent's deletion, tombstones it. An exact lookup by parent, whatever the collation.
CREATE TABLE child_keys (
    stream_id  BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    parent_key TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (stream_id, parent_key, key)
);
