//! PostgreSQL: one pool shared by every instance's API and workers, and per instance one
//! dedicated connection that holds its liveness lock (docs/design.md §7).

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, PgConnection, Pool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::backend::{Backend, Pools, RowsAffected, join};
use super::feed::CHANGE_SELECT;
use super::notify::Notifier;
use super::pages::Change;
use super::{InstanceId, PageRecord, StoreError, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

const CONNECTIONS: u32 = 16;

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first key of every liveness lock (`pg_advisory_lock(class, instance)`; "tdmk"),
/// which keeps them apart from other advisory locks of the database.
const LIVENESS_CLASS: i32 = 0x7464_6d6b;
/// [`LIVENESS_CLASS`] as `EXPIRE_GONE_SQL` writes it.
const LIVENESS_CLASS_SQL: &str = "1952738667";

/// How long a session may sit inside a transaction waiting for its client before the
/// server ends it. A process that hangs (or is stopped) in the middle of a page commit
/// holds its job's row lock, which the claims skip: without this its job could not be
/// taken over, lease or no lease, until the process woke up.
const IDLE_IN_TRANSACTION: &str = "10s";

/// How often a session that runs a statement (or waits for a lock) checks that its client
/// is still connected (PostgreSQL 14 and later, on Linux). A process killed while its
/// page commit waited for another commit's lock (every commit takes the feed's position
/// counter) left a session that held its job's row until that wait ended, seconds under
/// load: the look for the jobs of instances that are gone skips locked rows, so the
/// takeover waited with it. Checked, the session ends within this interval of the kill.
const CLIENT_CHECK: &str = "250ms";

/// How often the liveness connection is checked, and how long a check may take.
const LIVENESS_PING: Duration = Duration::from_secs(1);

/// The `LISTEN`/`NOTIFY` channel of feed commits.
const CHANNEL: &str = "tidemark_feed";

/// The PostgreSQL backend.
pub struct Postgres {
    /// Tells this instance's feed notifications from other instances'.
    instance: String,
    /// The task holding the liveness lock, once there is one.
    liveness: Mutex<Option<Liveness>>,
}

/// The task that holds an instance's liveness lock, and how to end it.
struct Liveness {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
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
         lease_instance = $4, lease_expires_at = $3 \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                     OR (status = 'running' AND lease_expires_at < $2) \
                     ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id";

    /// Ends the leases of the running jobs of other instances that no session of this
    /// database holds the liveness lock of (their process is gone, and with it its
    /// connection): `pg_locks` is read once per statement. A job of this instance's own,
    /// or one without an instance (written by an older version), waits out its lease; a
    /// row locked by a transaction in flight is skipped, not waited for.
    const EXPIRE_GONE_SQL: &'static str = join(&[
        "UPDATE jobs SET lease_expires_at = $2 WHERE id IN (\
         SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at > $2 \
         AND lease_instance <> $1 AND lease_instance::int8 NOT IN (\
             SELECT l.objid::int8 FROM pg_locks l WHERE l.locktype = 'advisory' \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid = ",
        LIVENESS_CLASS_SQL,
        " AND l.objsubid = 2 AND l.granted) \
         FOR UPDATE SKIP LOCKED)",
    ])
    .as_str();

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

    /// A child stream's keys of one parent (bound as one array).
    const INSERT_CHILD_KEYS_SQL: &'static str = "INSERT INTO child_keys (stream_id, parent_key, key) \
         SELECT $1, $2, k FROM unnest($3::text[]) AS k ON CONFLICT DO NOTHING";

    /// A child stream's keys of one parent that the mirror no longer holds.
    const DELETE_CHILD_KEYS_SQL: &'static str = "DELETE FROM child_keys WHERE stream_id = $1 \
         AND parent_key = $2 AND key = ANY($3)";

    /// A repeatable-read snapshot: the head, the horizon and the rows read in it agree.
    const SNAPSHOT_SQL: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

    /// Feed rows of the streams in an array of ids.
    const CHANGES_IN_SQL: &'static str = join(&[
        CHANGE_SELECT,
        "WHERE r.stream_id = ANY($3) AND r.seq > $1 ORDER BY r.seq LIMIT $2",
    ])
    .as_str();

    /// The names of the streams (and whether each is a child stream) in an array of ids.
    const STREAM_NAMES_SQL: &'static str = "SELECT st.id, so.name, st.name, st.parent_id IS NOT NULL FROM streams st \
         JOIN sources so ON so.id = st.source_id WHERE st.id = ANY($1)";

    /// Connects and applies migrations (sqlx serializes concurrent migrators with an
    /// advisory lock, so several instances may start at once). One connection is made
    /// first, so that an unreachable server is reported as such (the pool would only say
    /// it timed out).
    async fn connect(url: &str) -> anyhow::Result<(Self, Pools<sqlx::Postgres>)> {
        let options = PgConnectOptions::from_str(url)?.options([
            ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION),
            ("client_connection_check_interval", CLIENT_CHECK),
        ]);
        let server = server_of(&options);
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Err(_) => anyhow::bail!(
                "cannot reach PostgreSQL at {server}: timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
            Ok(Err(e)) => return Err(unreachable(&server, e)),
            Ok(Ok(first)) => {
                let _ = first.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| unreachable(&server, e))?;
        MIGRATOR.run(&pool).await?;
        let backend = Postgres {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            liveness: Mutex::new(None),
        };
        Ok((
            backend,
            Pools {
                read: pool.clone(),
                write: pool,
            },
        ))
    }

    /// Takes the instance's advisory lock on a connection of its own, and keeps it in a
    /// task: the connection is checked every second and, if it was lost (the server
    /// restarted, a network cut), made again and the lock taken again. Meanwhile other
    /// instances may take this one's jobs over; its commits are then refused by the
    /// lease, as for a process that hung. TCP keepalives on that connection make the
    /// server notice within about 11 s a host that vanished without closing it.
    async fn hold_liveness(
        &self,
        pool: &Pool<sqlx::Postgres>,
        instance: InstanceId,
    ) -> StoreResult<()> {
        let options = pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name("tidemark liveness")
            .options([
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "2"),
                ("tcp_keepalives_count", "3"),
            ]);
        let connection = lock(&options, instance).await?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep_lock(options, instance, connection, stopped));
        if let Ok(mut liveness) = self.liveness.lock() {
            *liveness = Some(Liveness { stop, task });
        }
        Ok(())
    }

    async fn release(&self) {
        let liveness = self.liveness.lock().ok().and_then(|mut l| l.take());
        if let Some(Liveness { stop, task }) = liveness {
            let _ = stop.send(());
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, task).await;
        }
    }

    fn key_list(records: &[PageRecord]) -> Vec<String> {
        records.iter().map(|r| r.key.clone()).collect()
    }

    fn id_list(ids: &[i64]) -> Vec<i64> {
        ids.to_vec()
    }

    /// Writes a page's changes, the `i`-th at feed position `first + i`: new keys in
    /// `INSERT`s, stored ones in `UPDATE`s, each binding one array per column, at most
    /// [`ROWS_PER_STATEMENT`] rows a statement. (One multi-row `INSERT … ON CONFLICT DO
    /// UPDATE` of 8000 bound values took twice as long per page of new keys: the values
    /// parsed and bound one by one, and a speculative insertion with its extra index probe
    /// per row.)
    async fn write_changes(
        conn: &mut PgConnection,
        stream_id: i64,
        first: i64,
        changes: &[Change<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        for (sql, stored) in [(INSERT_SQL, false), (UPDATE_SQL, true)] {
            let rows: Vec<usize> = (0..changes.len())
                .filter(|&i| changes[i].stored == stored)
                .collect();
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut columns = Columns::default();
                for &i in chunk {
                    columns.push(&changes[i], first + i as i64);
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

/// Where the server is, for messages: `host:port`, or the socket's directory.
fn server_of(options: &PgConnectOptions) -> String {
    match options.get_socket() {
        Some(socket) => format!("{} (port {})", socket.display(), options.get_port()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    }
}

/// Why the server at `server` cannot be used, in words an operator acts on.
fn unreachable(server: &str, e: sqlx::Error) -> anyhow::Error {
    use std::io::ErrorKind;
    match &e {
        sqlx::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => anyhow::anyhow!(
                "cannot reach PostgreSQL at {server}: connection refused (is it running and \
                 listening there?)"
            ),
            ErrorKind::TimedOut => {
                anyhow::anyhow!("cannot reach PostgreSQL at {server}: timed out")
            }
            _ => anyhow::anyhow!("cannot reach PostgreSQL at {server}: {io}"),
        },
        sqlx::Error::PoolTimedOut => anyhow::anyhow!(
            "cannot reach PostgreSQL at {server}: timed out after {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
        sqlx::Error::Database(db) => {
            anyhow::anyhow!(
                "PostgreSQL at {server} refused the connection: {}",
                db.message()
            )
        }
        _ => anyhow::anyhow!("cannot connect to PostgreSQL at {server}: {e}"),
    }
}

/// A new connection holding `instance`'s liveness lock; an error when the lock is taken
/// (by the previous connection of this instance, which the server has not yet seen go).
async fn lock(options: &PgConnectOptions, instance: InstanceId) -> StoreResult<PgConnection> {
    let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LIVENESS_CLASS)
        .bind(instance.0)
        .fetch_one(&mut connection)
        .await?;
    if !held {
        return Err(StoreError::Conflict(format!(
            "the liveness lock of instance {instance} is held by another session"
        )));
    }
    Ok(connection)
}

/// Keeps `instance`'s liveness lock held on `connection` (made again when lost) until
/// `stopped` fires or its sender is dropped.
async fn keep_lock(
    options: PgConnectOptions,
    instance: InstanceId,
    mut connection: PgConnection,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => {
                let _ = connection.close().await;
                return;
            }
            _ = tokio::time::sleep(LIVENESS_PING) => {}
        }
        let alive = tokio::time::timeout(LIVENESS_PING * 5, connection.ping()).await;
        if matches!(alive, Ok(Ok(()))) {
            continue;
        }
        tracing::warn!(
            %instance,
            "the connection holding this instance's liveness lock was lost: other instances \
             may take over its jobs until it is back"
        );
        connection = loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(LIVENESS_PING) => {}
            }
            match lock(&options, instance).await {
                Ok(connection) => break connection,
                Err(e) => tracing::debug!(error = %e, "taking the liveness lock again"),
            }
        };
        tracing::info!(%instance, "the liveness lock is held again");
    }
}

/// Rows per `INSERT` or `UPDATE` of a page commit. A group commit holds up to 20,000
/// records; one statement of them all took 2–4 times as long as the same rows in
/// statements of 1000 (likely the server keeping a function scan's rows, the `unnest`,
/// in memory only up to `work_mem` and spilling the rest to a temporary file), and every
/// pooled connection that wrote one kept buffers of its size (peak RSS 196 MB against 59
/// at 200,000 records).
const ROWS_PER_STATEMENT: usize = 1000;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_names_the_liveness_class() {
        assert_eq!(LIVENESS_CLASS.to_string(), LIVENESS_CLASS_SQL);
        assert!(Postgres::EXPIRE_GONE_SQL.contains(&format!("l.classid = {LIVENESS_CLASS_SQL} ")));
    }
}
