-- Sources and their streams. A source's spec is kept as the JSON text it was given.
CREATE TABLE sources (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- One row per stream of a source; holds the stream's checkpoint.
CREATE TABLE streams (
    id                INTEGER PRIMARY KEY,
    source_id         INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    strategy          TEXT NOT NULL,
    cursor            TEXT,
    cursor_updated_at TEXT,
    cursor_job        TEXT,
    UNIQUE (source_id, name)
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    stream_id        INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    mode             TEXT NOT NULL,
    status           TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    stats            TEXT NOT NULL,
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at TEXT
);
CREATE INDEX jobs_by_stream ON jobs (stream_id, created_at);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
-- At most one queued-or-running job per stream.
CREATE UNIQUE INDEX jobs_one_active ON jobs (stream_id) WHERE status IN ('queued', 'running');

-- The mirror, which is also the per-key compacted feed: `seq` is the feed position of
-- the record's latest change. A deleted record keeps its row (a tombstone, body NULL)
-- until retention purges it.
CREATE TABLE records (
    stream_id  INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    rev        INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    hash       BLOB,
    body       TEXT,
    synced_at  TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (stream_id, key)
);
CREATE UNIQUE INDEX records_by_seq ON records (seq);

-- The feed's position counter: the page transaction takes positions from this row.
CREATE TABLE feed_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
INSERT INTO feed_head (id, last_seq) VALUES (1, 0);

-- Instance-wide values created at first start (feed epoch, token key, ...).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
