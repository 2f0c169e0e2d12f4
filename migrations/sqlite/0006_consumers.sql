-- Named feed consumers (docs/design.md §5): where each one last read the feed from, so
-- that operators can see which downstream service is behind. One row per consumer,
-- rewritten by each of its feed requests (the latest request wins).
CREATE TABLE consumers (
    name          TEXT PRIMARY KEY,
    -- The normalized `stream` filter it read with: `source/stream,...`; '' for the whole feed.
    scope         TEXT NOT NULL,
    -- The `since` token it came with (it has read everything before it); NULL for a
    -- blank `since` (from the beginning).
    since         TEXT,
    -- The feed position of `since`, which the lag is counted from.
    position      INTEGER NOT NULL,
    first_read_at TEXT NOT NULL,
    read_at       TEXT NOT NULL
);
