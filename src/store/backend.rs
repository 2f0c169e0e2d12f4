//! The one store, generic over its database. sqlx's SQLite driver takes `$n` placeholders,
//! and the two schemas agree on column names and on the Rust types rows decode to, so
//! every statement the databases agree on is written once, in the aggregate modules, as
//! methods of [`SqlStore`]; [`Backend`] holds what differs. (`sqlx::Any` is no help here:
//! it cannot bind timestamps.)
//!
//! Each generic `impl` block of the store repeats the same where-clause (the driver's
//! executor, `&str` and the [`Scalar`] types): Rust does not carry a helper trait's
//! where-clauses to the code bounded by it (rust-lang/rust#20671), only `Self`'s
//! supertraits, which is why [`Scalar`] folds a type's three sqlx bounds into one.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::notify::Notifier;
use super::pages::Change;
use super::{
    Claim, Enqueued, GoneLeases, InstanceId, JobEnd, JobFilter, KnownSchedules, NewSource,
    PageCommit, PageOutcome, PageRecord, QueuedParent, ResyncCommit, Scheduled, Sealer, Store,
    StoreError, StoreResult, StoredRecord, StoredSource, StreamState, SweepBatch, WaitingChild,
};
use crate::spec::job::{JobMode, JobStats, Trigger};
use crate::spec::{Job, SourceName, StreamName};

/// The database of a backend.
pub type Db<B> = <B as Backend>::Db;
/// A connection (or an open transaction, through `&mut *tx`) of a backend's database.
pub type Conn<B> = <Db<B> as Database>::Connection;
/// A result row of a backend's database.
pub type Row<B> = <Db<B> as Database>::Row;

/// A Rust type a database binds as a parameter and reads back from a column.
pub trait Scalar<DB: Database>: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB> {}

impl<DB: Database, T> Scalar<DB> for T where
    T: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>
{
}

/// How many rows a statement changed (both drivers say, with an inherent method each).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

/// What SQLite and PostgreSQL do differently: the statements that differ, how a list is
/// bound, how a page's changes are written, how commits reach other instances, and how
/// an instance says it is alive.
pub trait Backend: Send + Sync + Sized + 'static {
    type Db: Database<Arguments: IntoArguments<Self::Db>, QueryResult: RowsAffected>;
    /// A page's keys as one bound value (see [`Backend::key_list`]).
    type KeyList: for<'q> Encode<'q, Self::Db> + Type<Self::Db>;
    /// Stream ids as one bound value (see [`Backend::id_list`]).
    type IdList: for<'q> Encode<'q, Self::Db> + Type<Self::Db>;

    /// The migrations of this database, which `ready` counts.
    const MIGRATOR: &'static Migrator;
    /// Claims the oldest claimable job for worker `$1` of instance `$4` at `$2` with its
    /// lease until `$3`: a queued job, or a running one whose lease expired. Returns its id.
    const CLAIM_SQL: &'static str;
    /// Ends at `$2` the leases of the running jobs whose instance (not `$1`) no longer
    /// holds its liveness lock, so that the next claim takes them over.
    const EXPIRE_GONE_SQL: &'static str;
    /// A source's id by name (`$1`), locked against new streams until commit.
    const LOCK_SOURCE_SQL: &'static str;
    /// `key, hash, rev` of the records of stream `$1` whose keys are in the list `$2`.
    const EXISTING_SQL: &'static str;
    /// Records the keys in the list `$2` as seen by reconcile job `$1`.
    const INSERT_SEEN_SQL: &'static str;
    /// Records the keys in the list `$3` as children of parent `$2` in child stream `$1`.
    const INSERT_CHILD_KEYS_SQL: &'static str;
    /// Forgets the keys in the list `$3` as children of parent `$2` in child stream `$1`.
    const DELETE_CHILD_KEYS_SQL: &'static str;
    /// Begins the read-only transaction of one feed snapshot.
    const SNAPSHOT_SQL: &'static str;
    /// Feed rows after `$1`, at most `$2`, of the streams in the list `$3`.
    const CHANGES_IN_SQL: &'static str;
    /// `id`, source name, stream name and whether it is a child stream (a bool), of the
    /// streams in the list `$1`.
    const STREAM_NAMES_SQL: &'static str;

    /// Opens the pools and applies [`Backend::MIGRATOR`]; the error says plainly what is
    /// wrong with `url` or why the database cannot be reached.
    fn connect(url: &str) -> impl Future<Output = anyhow::Result<(Self, Pools<Self::Db>)>> + Send;

    /// Holds `instance`'s liveness lock from now until [`Backend::release`].
    fn hold_liveness(
        &self,
        pool: &Pool<Self::Db>,
        instance: InstanceId,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Lets go of the liveness lock (the pools are closed by then).
    fn release(&self) -> impl Future<Output = ()> + Send;

    /// The keys of a page as `EXISTING_SQL` binds them.
    fn key_list(records: &[PageRecord]) -> Self::KeyList;

    /// Stream ids as `CHANGES_IN_SQL` and `STREAM_NAMES_SQL` bind them.
    fn id_list(ids: &[i64]) -> Self::IdList;

    /// Writes a page's changes, the `i`-th at feed position `first + i`.
    fn write_changes(
        conn: &mut Conn<Self>,
        stream_id: i64,
        first: i64,
        changes: &[Change<'_>],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Tells other instances, in the page transaction, that `stream_id` changed up to `seq`.
    fn announce(
        &self,
        conn: &mut Conn<Self>,
        stream_id: i64,
        seq: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Announces other instances' commits to `notifier` until the connection fails.
    fn relay(
        &self,
        pool: &Pool<Self::Db>,
        notifier: &Notifier,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// The pools a backend opens: the same pool twice where readers need no pool of their own.
pub struct Pools<DB: Database> {
    pub read: Pool<DB>,
    pub write: Pool<DB>,
}

/// Everything tidemark keeps, in one database.
pub struct SqlStore<B: Backend> {
    pub(super) read: Pool<B::Db>,
    pub(super) write: Pool<B::Db>,
    pub(super) backend: B,
    pub(super) notifier: Notifier,
    pub(super) sealer: Sealer,
}

impl<B: Backend> SqlStore<B> {
    /// Opens the database at `url` and applies its migrations; inline upstream secrets are
    /// sealed with `sealer`.
    pub async fn connect(url: &str, sealer: Sealer) -> anyhow::Result<Self> {
        let (backend, Pools { read, write }) = B::connect(url).await?;
        Ok(Self {
            read,
            write,
            backend,
            notifier: Notifier::default(),
            sealer,
        })
    }
}

/// Each method is the aggregate module's inherent method of the same name (inherent
/// methods take precedence over the trait's): sources, queue, pages and records.
#[async_trait::async_trait]
impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut Conn<B>: Executor<'c, Database = Db<B>>,
    for<'a> &'a str: Encode<'a, Db<B>> + Type<Db<B>> + ColumnIndex<Row<B>>,
    usize: ColumnIndex<Row<B>>,
    i32: Scalar<Db<B>>,
    i64: Scalar<Db<B>>,
    bool: Scalar<Db<B>>,
    String: Scalar<Db<B>>,
    Vec<u8>: Scalar<Db<B>>,
    DateTime<Utc>: Scalar<Db<B>>,
    Option<String>: Scalar<Db<B>>,
    Option<DateTime<Utc>>: Scalar<Db<B>>,
{
    #[tracing::instrument(skip_all)]
    async fn ready(&self) -> StoreResult<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.read)
                .await?;
        let expected = B::MIGRATOR.iter().count();
        if usize::try_from(applied).unwrap_or_default() < expected {
            return Err(StoreError::Corrupt(format!(
                "{applied} of {expected} migrations applied"
            )));
        }
        Ok(())
    }

    async fn create_source(&self, source: NewSource<'_>) -> StoreResult<StoredSource> {
        self.create_source(source).await
    }

    async fn replace_source(&self, source: NewSource<'_>) -> StoreResult<Option<StoredSource>> {
        self.replace_source(source).await
    }

    async fn get_source(&self, name: &SourceName) -> StoreResult<Option<StoredSource>> {
        self.get_source(name).await
    }

    async fn list_sources(
        &self,
        after: Option<&SourceName>,
        limit: u32,
    ) -> StoreResult<Vec<StoredSource>> {
        self.list_sources(after, limit).await
    }

    async fn delete_source(&self, name: &SourceName) -> StoreResult<bool> {
        self.delete_source(name).await
    }

    async fn get_stream(
        &self,
        source: &SourceName,
        stream: &StreamName,
    ) -> StoreResult<Option<StreamState>> {
        self.get_stream(source, stream).await
    }

    async fn set_cursor(
        &self,
        source: &SourceName,
        stream: &StreamName,
        cursor: Option<&Value>,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        self.set_cursor(source, stream, cursor).await
    }

    async fn enqueue_job(
        &self,
        source: &SourceName,
        stream: &StreamName,
        mode: JobMode,
        trigger: Trigger,
    ) -> StoreResult<Option<Enqueued>> {
        self.enqueue_job(source, stream, mode, trigger).await
    }

    async fn request_run(
        &self,
        source: &SourceName,
        stream: &StreamName,
        trigger: Trigger,
    ) -> StoreResult<Option<Job>> {
        self.request_run(source, stream, trigger).await
    }

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>> {
        self.get_job(id).await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        self.list_jobs(filter, after, limit).await
    }

    async fn cancel_job(&self, id: Uuid) -> StoreResult<Option<(Job, bool)>> {
        self.cancel_job(id).await
    }

    async fn start_instance(&self) -> StoreResult<InstanceId> {
        self.start_instance().await
    }

    async fn close(&self) {
        // Bounded: a connection still checked out (a task being torn down) must not hold
        // the shutdown up; the liveness lock goes either way.
        let pools = async {
            self.write.close().await;
            self.read.close().await;
        };
        if tokio::time::timeout(std::time::Duration::from_secs(5), pools)
            .await
            .is_err()
        {
            tracing::warn!("closing the database took longer than 5 s");
        }
        self.backend.release().await;
    }

    async fn claim_job(
        &self,
        instance: InstanceId,
        owner: &str,
        lease: chrono::TimeDelta,
    ) -> StoreResult<Option<Claim>> {
        self.claim_job(instance, owner, lease).await
    }

    async fn expire_gone_leases(&self, instance: InstanceId) -> StoreResult<GoneLeases> {
        self.expire_gone_leases(instance).await
    }

    async fn heartbeat(
        &self,
        job: Uuid,
        owner: &str,
        lease: chrono::TimeDelta,
    ) -> StoreResult<bool> {
        self.heartbeat(job, owner, lease).await
    }

    async fn release_job(&self, job: Uuid, owner: &str) -> StoreResult<()> {
        self.release_job(job, owner).await
    }

    async fn finish_job(
        &self,
        job: Uuid,
        owner: &str,
        stats: &JobStats,
        end: JobEnd,
    ) -> StoreResult<bool> {
        self.finish_job(job, owner, stats, end).await
    }

    async fn commit_page(&self, page: PageCommit<'_>) -> StoreResult<Option<PageOutcome>> {
        self.commit_page(page).await
    }

    async fn resync_job(&self, resync: ResyncCommit<'_>) -> StoreResult<bool> {
        self.resync_job(resync).await
    }

    async fn sweep_batch(
        &self,
        stream_id: i64,
        job: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<SweepBatch> {
        self.sweep_batch(stream_id, job, after, limit).await
    }

    async fn forget_seen(&self, job: Uuid, owner: &str, limit: u32) -> StoreResult<Option<u64>> {
        self.forget_seen(job, owner, limit).await
    }

    async fn list_records(
        &self,
        source: &SourceName,
        stream: &StreamName,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Option<Vec<StoredRecord>>> {
        self.list_records(source, stream, after, limit).await
    }

    async fn get_record(
        &self,
        source: &SourceName,
        stream: &StreamName,
        key: &str,
    ) -> StoreResult<Option<Option<StoredRecord>>> {
        self.get_record(source, stream, key).await
    }

    async fn scheduled_streams(&self, known: &mut KnownSchedules) -> StoreResult<Vec<Scheduled>> {
        self.scheduled_streams(known).await
    }

    async fn enqueue_scheduled(
        &self,
        due: &[(i64, Option<DateTime<Utc>>)],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.enqueue_scheduled(due, now).await
    }

    async fn purge_jobs(&self, before: DateTime<Utc>, keep: u32, batch: u32) -> StoreResult<u64> {
        self.purge_jobs(before, keep, batch).await
    }

    async fn schedule_reconcile(
        &self,
        stream_id: i64,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        fell_due: bool,
    ) -> StoreResult<bool> {
        self.schedule_reconcile(stream_id, previous, now, fell_due)
            .await
    }

    async fn parent_of(&self, stream_id: i64) -> StoreResult<Option<i64>> {
        self.parent_of(stream_id).await
    }

    async fn queued_parents(
        &self,
        stream_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedParent>> {
        self.queued_parents(stream_id, after_seq, limit).await
    }

    async fn live_record(&self, stream_id: i64, key: &str) -> StoreResult<Option<String>> {
        self.live_record(stream_id, key).await
    }

    async fn live_records_after(
        &self,
        stream_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>> {
        self.live_records_after(stream_id, after, limit).await
    }

    async fn children_of(&self, stream_id: i64, parent_key: &str) -> StoreResult<Vec<String>> {
        self.children_of(stream_id, parent_key).await
    }

    async fn waiting_children(&self) -> StoreResult<Vec<WaitingChild>> {
        self.waiting_children().await
    }

    async fn queue_child_job(&self, stream_id: i64) -> StoreResult<bool> {
        self.queue_child_job(stream_id).await
    }
}

/// Statement text built from a shared part (a column list) and its own, at compile time:
/// `concat!` takes only literals. `join(&[COLUMNS, "WHERE ..."]).as_str()` in a `const`.
pub(super) struct Joined {
    bytes: [u8; Joined::CAPACITY],
    len: usize,
}

pub(super) const fn join(parts: &[&str]) -> Joined {
    let mut joined = Joined {
        bytes: [0; Joined::CAPACITY],
        len: 0,
    };
    let mut part = 0;
    while part < parts.len() {
        let bytes = parts[part].as_bytes();
        assert!(
            joined.len + bytes.len() <= Joined::CAPACITY,
            "statement too long"
        );
        let mut i = 0;
        while i < bytes.len() {
            joined.bytes[joined.len] = bytes[i];
            joined.len += 1;
            i += 1;
        }
        part += 1;
    }
    joined
}

impl Joined {
    const CAPACITY: usize = 1024;

    pub(super) const fn as_str(&self) -> &str {
        match std::str::from_utf8(self.bytes.split_at(self.len).0) {
            Ok(text) => text,
            // Whole `&str`s joined end to end are UTF-8.
            Err(_) => panic!("statement text is not UTF-8"),
        }
    }
}

/// The current time at the precision both databases keep (microseconds), so a value
/// returned on write equals the value read back later.
pub(super) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Parses a stored JSON value (a cursor, job stats, a problem).
pub(super) fn json<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("stored {what}: {e}")))
}

/// Parses a stored enum value (`"queued"`, `"incremental"`, ...).
pub(super) fn label<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|e| StoreError::Corrupt(format!("stored label `{text}`: {e}")))
}

/// A label as stored (`"queued"`, `"api"`, ...).
pub(super) fn text_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Job counters as stored.
pub(super) fn stats_text(stats: &JobStats) -> String {
    serde_json::to_string(stats).unwrap_or_else(|_| "{}".to_owned())
}

/// Maps a unique violation to [`StoreError::Conflict`].
pub(super) fn on_unique(e: sqlx::Error, detail: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict(detail()),
        _ => StoreError::Database(e),
    }
}
