//! PostgreSQL: one pool shared by every instance's API and workers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgListener, PgPoolOptions, PgQueryResult};
use sqlx::{PgConnection, Pool};

use super::backend::{Backend, Pools, RowsAffected, join};
use super::feed::CHANGE_SELECT;
use super::notify::Notifier;
use super::pages::Change;
use super::{PageRecord, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

const CONNECTIONS: u32 = 16;

/// The `LISTEN`/`NOTIFY` channel of feed commits.
const CHANNEL: &str = "tidemark_feed";

/// The PostgreSQL backend.
pub struct Postgres {
    /// Tells this instance's feed notifications from other instances'.
    instance: String,
}

impl Backend for Postgres {
    type Db = sqlx::Postgres;
    type KeyList = Vec<String>;
    type IdList = Vec<i64>;

    const MIGRATOR: &'static Migrator = &MIGRATOR;

    /// Claims the oldest claimable job; `SKIP LOCKED` lets the workers of every instance
    /// claim at once without waiting on each other or taking the same job.
    const CLAIM_SQL: &'static str = "UPDATE jobs SET status = 'running', \
         attempts = attempts + 1, started_at = COALESCE(started_at, $2), lease_owner = $1, \
         lease_expires_at = $3 \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                     OR (status = 'running' AND lease_expires_at < $2) \
                     ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id";

    /// A source's id, its row locked until commit: no stream can be added to it meanwhile
    /// (adding one takes a key-share lock on the row) and a replace in flight is waited
    /// for.
    const LOCK_SOURCE_SQL: &'static str = "SELECT id FROM sources WHERE name = $1 FOR UPDATE";

    /// What the mirror holds for a page's keys (bound as one array), locked in key order:
    /// a deletions stream and the stream it deletes from may write the same keys at once,
    /// and each must see the other's committed revision.
    const EXISTING_SQL: &'static str = "SELECT key, hash, rev FROM records WHERE stream_id = $1 \
         AND key = ANY($2) ORDER BY key FOR UPDATE";

    /// A reconcile's seen keys (bound as one array); a key listed twice is one.
    const INSERT_SEEN_SQL: &'static str = "INSERT INTO reconcile_seen (job_id, key) \
         SELECT $1, k FROM unnest($2::text[]) AS k ON CONFLICT DO NOTHING";

    /// A repeatable-read snapshot: the head, the horizon and the rows read in it agree.
    const SNAPSHOT_SQL: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

    /// Feed rows of the streams in an array of ids.
    const CHANGES_IN_SQL: &'static str = join(&[
        CHANGE_SELECT,
        "WHERE r.stream_id = ANY($3) AND r.seq > $1 ORDER BY r.seq LIMIT $2",
    ])
    .as_str();

    /// The names of the streams in an array of ids.
    const STREAM_NAMES_SQL: &'static str = "SELECT st.id, so.name, st.name FROM streams st \
         JOIN sources so ON so.id = st.source_id WHERE st.id = ANY($1)";

    /// Connects and applies migrations (sqlx serializes concurrent migrators with an
    /// advisory lock, so several instances may start at once).
    async fn connect(url: &str) -> anyhow::Result<(Self, Pools<sqlx::Postgres>)> {
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let backend = Postgres {
            instance: uuid::Uuid::new_v4().simple().to_string(),
        };
        Ok((
            backend,
            Pools {
                read: pool.clone(),
                write: pool,
            },
        ))
    }

    fn key_list(records: &[PageRecord]) -> Vec<String> {
        records.iter().map(|r| r.key.clone()).collect()
    }

    fn id_list(ids: &[i64]) -> Vec<i64> {
        ids.to_vec()
    }

    /// Writes a page's changes, the `i`-th at feed position `first + i`: new keys in one
    /// `INSERT`, stored ones in one `UPDATE`, each binding one array per column. (One
    /// multi-row `INSERT … ON CONFLICT DO UPDATE` of 8000 bound values took twice as long
    /// per page of new keys: the values parsed and bound one by one, and a speculative
    /// insertion with its extra index probe per row.)
    async fn write_changes(
        conn: &mut PgConnection,
        stream_id: i64,
        first: i64,
        changes: &[Change<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        for (sql, stored) in [(INSERT_SQL, false), (UPDATE_SQL, true)] {
            let mut columns = Columns::default();
            for (i, change) in changes.iter().enumerate() {
                if change.stored == stored {
                    columns.push(change, first + i as i64);
                }
            }
            if columns.keys.is_empty() {
                continue;
            }
            sqlx::query(sql)
                .bind(stream_id)
                .bind(now)
                .bind(columns.keys)
                .bind(columns.revs)
                .bind(columns.seqs)
                .bind(columns.hashes)
                .bind(columns.bodies)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Tells the other instances' feed waiters, at commit, that a page changed
    /// `stream_id` up to position `seq`: one `NOTIFY` per page transaction.
    async fn announce(
        &self,
        conn: &mut PgConnection,
        stream_id: i64,
        seq: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{}:{stream_id}:{seq}", self.instance))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Listens on one dedicated connection and announces other instances' commits here.
    /// `recv` reconnects by itself; what was sent meanwhile is lost, which the feed's
    /// periodic re-check of the head makes up for.
    async fn relay(&self, pool: &Pool<sqlx::Postgres>, notifier: &Notifier) -> StoreResult<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        loop {
            let notification = listener.recv().await?;
            let mut parts = notification.payload().splitn(3, ':');
            let (Some(instance), Some(stream_id), Some(seq)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if instance == self.instance {
                continue;
            }
            if let (Ok(stream_id), Ok(seq)) = (stream_id.parse(), seq.parse()) {
                notifier.committed(stream_id, seq);
            }
        }
    }
}

/// A page's new keys, one row per element of the bound arrays. A plain `INSERT`: the
/// locked lookup found none of these keys, and only this stream's own job inserts into it
/// (a deletions stream only writes keys the mirror holds), so a conflict here is a bug
/// that fails the page rather than something to merge.
const INSERT_SQL: &str = "INSERT INTO records \
     (stream_id, key, rev, seq, hash, body, synced_at, changed_at) \
     SELECT $1, u.key, u.rev, u.seq, u.hash, u.body, $2, $2 \
     FROM unnest($3::text[], $4::int8[], $5::int8[], $6::bytea[], $7::text[]) \
     AS u (key, rev, seq, hash, body)";

/// A page's changes to keys the mirror holds (rows the locked lookup found and holds).
const UPDATE_SQL: &str = "UPDATE records r SET rev = u.rev, seq = u.seq, hash = u.hash, \
     body = u.body, synced_at = $2, changed_at = $2 \
     FROM unnest($3::text[], $4::int8[], $5::int8[], $6::bytea[], $7::text[]) \
     AS u (key, rev, seq, hash, body) \
     WHERE r.stream_id = $1 AND r.key = u.key";

/// Changes as one array per column.
#[derive(Default)]
struct Columns<'a> {
    keys: Vec<&'a str>,
    revs: Vec<i64>,
    seqs: Vec<i64>,
    hashes: Vec<Option<&'a [u8]>>,
    bodies: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, change: &Change<'a>, seq: i64) {
        self.keys.push(&change.record.key);
        self.revs.push(change.rev);
        self.seqs.push(seq);
        self.hashes.push(change.record.hash_bytes());
        self.bodies.push(change.record.body.as_deref());
    }
}

impl RowsAffected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}
