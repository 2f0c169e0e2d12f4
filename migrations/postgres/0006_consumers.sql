-- Named feed consumers (docs/design.md §5): where each one last read the feed from, so
-- that operators can see which downstream service is behind. One row per consumer,
-- rewritten by each of its feed requests (the latest request wins).
CREATE TABLE consumers (
    -- "C" collation: names sort by bytes, as on SQLite (the list is paged by name).
    name          TEXT COLLATE "C" PRIMARY KEY,
    -- The normalized `stream` filter it read with: `source/stream,...`; '' for the whole feed.
    scope         TEXT NOT NULL,
    -- The `since` token it came with (it has read everything before it); NULL for a
    -- blank `since` (from the beginning).
    since         TEXT,
    -- The feed position of `since`, which the lag is counted from.
    position      BIGINT NOT NULL,
    first_read_at TIMESTAMPTZ NOT NULL,
    read_at       TIMESTAMPTZ NOT NULL
);
