//! SQLite: one file in WAL mode, one writer connection (SQLite has one writer anyway, so
//! commit order is feed order by construction) and a pool of read-only readers. One
//! process serves a file: it holds an exclusive lock on `<file>.lock` for as long as the
//! store is open, which is also its liveness lock (docs/design.md §7).

use std::fs::{File, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Pool, SqliteConnection};

use super::backend::{Backend, Pools, RowsAffected, join};
use super::feed::CHANGE_SELECT;
use super::notify::Notifier;
use super::pages::Change;
use super::{InstanceId, PageRecord, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

const READERS: u32 = 8;
/// The writer's page cache, in KiB when negative (SQLite's convention): 64 MiB, which holds
/// the key index of a few million records. Readers keep SQLite's default.
const WRITER_CACHE: &str = "-65536";
/// WAL pages between automatic checkpoints (64 MiB of 4 KiB pages).
const WAL_CHECKPOINT_PAGES: &str = "16384";

/// The SQLite backend: the lock that makes this process the one serving the file.
pub struct Sqlite {
    /// `<file>.lock`, exclusively locked (and holding this process's PID) until released.
    lock: Mutex<Option<File>>,
}

impl Backend for Sqlite {
    type Db = sqlx::Sqlite;
    /// Keys bound as one JSON array.
    type KeyList = String;
    /// Ids bound as one JSON array.
    type IdList = String;

    const MIGRATOR: &'static Migrator = &MIGRATOR;

    /// Claims the oldest claimable job. SQLite has one writer, so no two workers can claim
    /// the same job.
    const CLAIM_SQL: &'static str = "UPDATE jobs SET status = 'running', \
         attempts = attempts + 1, started_at = COALESCE(started_at, $2), lease_owner = $1, \
         lease_instance = $4, lease_expires_at = $3 \
         WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                     OR (status = 'running' AND lease_expires_at < $2) \
                     ORDER BY created_at, id LIMIT 1) \
         RETURNING id";

    /// Ends the leases of the running jobs of every other instance: the file's lock lets
    /// one process serve it, so they are a dead process's.
    const EXPIRE_GONE_SQL: &'static str = "UPDATE jobs SET lease_expires_at = $2 \
         WHERE status = 'running' AND lease_expires_at > $2 AND lease_instance IS NOT $1";

    /// A source's id. The one writer connection serializes every write, so there is
    /// nothing to lock.
    const LOCK_SOURCE_SQL: &'static str = "SELECT id FROM sources WHERE name = $1";

    /// What the mirror holds for a page's keys (bound as one JSON array).
    const EXISTING_SQL: &'static str = "SELECT key, hash, rev FROM records WHERE stream_id = $1 \
         AND key IN (SELECT value FROM json_each($2))";

    /// A reconcile's seen keys (bound as one JSON array); a key listed twice is one.
    const INSERT_SEEN_SQL: &'static str = "INSERT INTO reconcile_seen (job_id, key) \
         SELECT $1, value FROM json_each($2) WHERE true ON CONFLICT DO NOTHING";

    /// A child stream's keys of one parent (bound as one JSON array).
    const INSERT_CHILD_KEYS_SQL: &'static str = "INSERT INTO child_keys (stream_id, parent_key, key) \
         SELECT $1, $2, value FROM json_each($3) WHERE true ON CONFLICT DO NOTHING";

    /// A child stream's keys of one parent that the mirror no longer holds.
    const DELETE_CHILD_KEYS_SQL: &'static str = "DELETE FROM child_keys WHERE stream_id = $1 \
         AND parent_key = $2 AND key IN (SELECT value FROM json_each($3))";

    /// A deferred transaction: in WAL mode its first read fixes the snapshot that every
    /// later read of it sees.
    const SNAPSHOT_SQL: &'static str = "BEGIN";

    /// Feed rows of the streams in a JSON array of ids.
    const CHANGES_IN_SQL: &'static str = join(&[
        CHANGE_SELECT,
        "WHERE r.stream_id IN (SELECT value FROM json_each($3)) AND r.seq > $1 \
         ORDER BY r.seq LIMIT $2",
    ])
    .as_str();

    /// The names of the streams (and whether each is a child stream) in a JSON array of ids.
    const STREAM_NAMES_SQL: &'static str = "SELECT st.id, so.name, st.name, st.parent_id IS NOT NULL FROM streams st \
         JOIN sources so ON so.id = st.source_id \
         WHERE st.id IN (SELECT value FROM json_each($1))";

    /// Takes the file's lock (refused, naming the holder, while another process serves
    /// it), then opens (creating if needed) the database file and applies migrations.
    async fn connect(url: &str) -> anyhow::Result<(Self, Pools<sqlx::Sqlite>)> {
        let options = SqliteConnectOptions::from_str(url)?;
        let file = database_file(url, options.get_filename())?;
        let lock = Mutex::new(Some(take_lock(&file)?));
        let opening = || format!("opening the SQLite database {}", file.display());
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; only an OS crash can lose
            // the last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    // Every page reads and writes the mirror's key index at random places;
                    // with SQLite's default 2 MB cache a large mirror's index pages are read
                    // back from the OS on every page (measured: most of a full sync's time).
                    .pragma("cache_size", WRITER_CACHE)
                    // A checkpoint copies each changed page once however many commits
                    // changed it, so fewer, larger checkpoints write (and sync) far less
                    // than SQLite's default of one every 1000 pages, about every page.
                    .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES),
            )
            .await
            .with_context(opening)?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await
            .with_context(opening)?;
        Ok((Sqlite { lock }, Pools { read, write }))
    }

    /// The lock taken at [`Backend::connect`] is the liveness lock: nothing more to hold.
    async fn hold_liveness(&self, _: &Pool<sqlx::Sqlite>, _: InstanceId) -> StoreResult<()> {
        Ok(())
    }

    async fn release(&self) {
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
    }

    fn key_list(records: &[PageRecord]) -> String {
        let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        serde_json::to_string(&keys).unwrap_or_default()
    }

    fn id_list(ids: &[i64]) -> String {
        Value::from(ids.to_vec()).to_string()
    }

    /// Writes a page's changes, the `i`-th at feed position `first + i`, in multi-row
    /// upserts of up to 1000 rows (8 bound values each, below SQLite's limit of 32766 per
    /// statement).
    async fn write_changes(
        conn: &mut SqliteConnection,
        stream_id: i64,
        first: i64,
        changes: &[Change<'_>],
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        for (chunk_no, chunk) in changes.chunks(1000).enumerate() {
            let base = first + (chunk_no as i64) * 1000;
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO records (stream_id, key, rev, seq, hash, body, synced_at, changed_at) ",
            );
            insert.push_values(chunk.iter().enumerate(), |mut row, (i, change)| {
                row.push_bind(stream_id)
                    .push_bind(change.record.key.as_str())
                    .push_bind(change.rev)
                    .push_bind(base + i as i64)
                    .push_bind(change.record.hash_bytes())
                    .push_bind(change.record.body.as_deref())
                    .push_bind(now)
                    .push_bind(now);
            });
            insert.push(
                " ON CONFLICT (stream_id, key) DO UPDATE SET rev = excluded.rev, \
                 seq = excluded.seq, hash = excluded.hash, body = excluded.body, \
                 synced_at = excluded.synced_at, changed_at = excluded.changed_at",
            );
            insert.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// No other process serves the file, so there is no one to tell.
    async fn announce(
        &self,
        _: &mut SqliteConnection,
        _stream_id: i64,
        _seq: i64,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    /// No other instance shares the file: nothing to relay.
    async fn relay(&self, _: &Pool<sqlx::Sqlite>, _: &Notifier) -> StoreResult<()> {
        std::future::pending().await
    }
}

/// The database file `url` names, refused with the reason when tidemark cannot keep its
/// data there: no file at all (`sqlite://`, where SQLite would open a private temporary
/// database per connection, so that a write is not seen by the next read), an in-memory
/// database (lost at exit, and without a file to lock), or a directory that is missing.
fn database_file(url: &str, file: &Path) -> anyhow::Result<PathBuf> {
    let example = "e.g. sqlite://tidemark.db (relative to the working directory) or \
                   sqlite:///var/lib/tidemark/tidemark.db";
    if file.as_os_str().is_empty() {
        anyhow::bail!("DATABASE_URL `{url}` names no database file: give its path, {example}");
    }
    if url.contains(":memory:") || url.contains("mode=memory") {
        anyhow::bail!(
            "DATABASE_URL `{url}` is an in-memory database, which would lose the mirror, the \
             cursors and the feed at exit: give a file, {example}"
        );
    }
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match std::fs::metadata(directory) {
        Ok(meta) if meta.is_dir() => Ok(file.to_path_buf()),
        Ok(_) => anyhow::bail!(
            "cannot open the SQLite database {}: {} is not a directory",
            file.display(),
            directory.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "cannot open the SQLite database {}: the directory {} does not exist",
            file.display(),
            directory.display()
        ),
        Err(e) => anyhow::bail!(
            "cannot open the SQLite database {}: {}: {e}",
            file.display(),
            directory.display()
        ),
    }
}

/// Locks `<file>.lock` exclusively for this process and writes its PID into it; refused,
/// naming the PID written there, while another process holds it. The lock (`flock`) goes
/// with the process, however it ends, so a killed process never leaves it behind.
fn take_lock(file: &Path) -> anyhow::Result<File> {
    let mut path = file.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    let mut lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot create the lock file {}", path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_owned(),
                pid => format!("the process with PID {pid}"),
            };
            anyhow::bail!(
                "another tidemark is serving {}: {holder} holds its lock file {}. One SQLite \
                 file is served by one tidemark process; stop that one first, or give this \
                 one its own DATABASE_URL",
                file.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    lock.set_len(0)
        .and_then(|()| writeln!(lock, "{}", std::process::id()))
        .and_then(|()| lock.flush())
        .with_context(|| format!("cannot write to the lock file {}", path.display()))?;
    Ok(lock)
}

impl RowsAffected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}
