-- Sources and their streams. A source's spec is kept as the JSON text it was given
-- (TEXT, not JSONB: JSONB would reorder keys and renormalize numbers).
CREATE TABLE sources (
    id         BIGSERIAL PRIMARY KEY,
    -- "C" collation: names sort by bytes, as on SQLite, whatever the server's locale.
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- One row per stream of a source; holds the stream's checkpoint.
CREATE TABLE streams (
    id                BIGSERIAL PRIMARY KEY,
    source_id         BIGINT NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    name              TEXT COLLATE "C" NOT NULL,
    strategy          TEXT NOT NULL,
    cursor            TEXT,
    cursor_updated_at TIMESTAMPTZ,
    cursor_job        TEXT,
    UNIQUE (source_id, name)
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    stream_id        BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    mode             TEXT NOT NULL,
    status           TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    stats            TEXT NOT NULL,
    error            TEXT,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ
);
CREATE INDEX jobs_by_stream ON jobs (stream_id, created_at);
CREATE INDEX jobs_by_status ON jobs (status, created_at);
-- At most one queued-or-running job per stream.
CREATE UNIQUE INDEX jobs_one_active ON jobs (stream_id) WHERE status IN ('queued', 'running');

-- The mirror, which is also the per-key compacted feed: `seq` is the feed position of
-- the record's latest change. A deleted record keeps its row (a tombstone, body NULL)
-- until retention purges it.
CREATE TABLE records (
    stream_id  BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    rev        BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       BYTEA,
    body       TEXT,
    synced_at  TIMESTAMPTZ NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_id, key)
);
CREATE UNIQUE INDEX records_by_seq ON records (seq);

-- The feed's position counter: the page transaction takes positions from this row and
-- holds its lock until commit, so every snapshot sees a dense prefix of positions.
CREATE TABLE feed_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO feed_head (id, last_seq) VALUES (1, 0);

-- Instance-wide values created at first start (feed epoch, token key, ...).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
