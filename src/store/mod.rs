//! Persistence: one interface ([`Store`], with its feed part [`FeedStore`]), implemented
//! once by [`SqlStore`] for SQLite and PostgreSQL. Handlers and workers never build SQL;
//! the store never makes HTTP calls.
//!
//! - `backend.rs`: the [`Backend`](backend::Backend) trait, which holds what the two
//!   databases do differently (the statements that differ as associated constants; how a
//!   list is bound, how a page's changes are written, how commits reach other instances
//!   and how to connect, as methods), and [`SqlStore`], the store generic over it, with
//!   its `Store` impl.
//! - One module per aggregate, each an `impl` block of [`SqlStore`] with the SQL both
//!   databases share and the rows it reads (`#[derive(sqlx::FromRow)]` structs):
//!   `sources.rs` (sources, streams, cursors), `queue.rs` (jobs and scheduling),
//!   `pages.rs` (page commits and their plan), `records.rs` (reads of the mirror) and
//!   `feed.rs` (the [`FeedStore`] part).
//! - `children.rs`: child streams: which stream is whose parent, the queue of parents
//!   whose children are to be read (written in the parent's page transaction) and the
//!   children each parent has in the mirror.
//! - `consumers.rs`: named feed consumers, an aggregate whose methods are part of
//!   [`FeedStore`] too.
//! - `sqlite.rs` and `postgres.rs`: the two backends, with only what differs.
//! - `notify.rs` (wake-ups for feed waiters) and `sealed.rs` (stored secrets).

mod backend;
mod children;
mod consumers;
mod feed;
mod notify;
mod pages;
mod postgres;
mod queue;
mod records;
mod sealed;
mod sources;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::problem::{Problem, ProblemType};
use crate::spec::cursor::CursorWrite;
use crate::spec::job::{JobMode, JobStats, JobStatus, Resynced, Trigger};
use crate::spec::names::HttpUrl;
use crate::spec::source::Schedule;
use crate::spec::{Job, SourceName, SourceSpec, StreamName, StreamSpec};

pub use backend::SqlStore;
pub use consumers::{ConsumerRead, StoredConsumer};
pub use feed::{FeedQuery, FeedSnapshot, FeedStore, FeedStream, Purged, StoredChange};
pub use notify::{Commit, Notifier};
pub use sealed::{Sealer, SecretKey};

/// The store on SQLite.
pub type SqliteStore = SqlStore<sqlite::Sqlite>;
/// The store on PostgreSQL.
pub type PgStore = SqlStore<postgres::Postgres>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. a duplicate source name).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Stored data that no longer parses: a bug or a manual edit of the database.
    #[error("{0}")]
    Corrupt(String),
    /// A stored secret that does not decrypt: `TIDEMARK_SECRET_KEY` is missing or is not
    /// the key it was encrypted with.
    #[error("{0}")]
    Unreadable(String),
}

impl StoreError {
    /// The database is unreachable or refused for a moment (down, restarting, out of
    /// connections, a lost connection, a serialization conflict): the same call may
    /// succeed later. Anything else (a constraint, bad SQL, corrupt data) will not.
    pub fn is_transient(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| match code.len() {
                // PostgreSQL's SQLSTATE classes 08 (connection exception), 53 (insufficient
                // resources), 57P (the server shutting down or starting up) and 40
                // (transaction rollback: serialization failure, deadlock), and 25P03 (the
                // server ended a session left idle inside a transaction: a process that
                // hung there, and whose job may have been taken over meanwhile).
                5 => ["08", "53", "57P", "40", "25P03"]
                    .iter()
                    .any(|class| code.starts_with(class)),
                // SQLite's (extended) result codes: BUSY and LOCKED in the low byte.
                _ => code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
            }),
            _ => false,
        }
    }
}

impl StoreError {
    /// The problem a job reports when this error keeps it from starting: a secret that
    /// does not decrypt says so; anything else is the server's fault, told in its logs.
    pub fn problem(&self) -> Problem {
        match self {
            StoreError::Unreadable(detail) => {
                Problem::new(ProblemType::StoredSecretUnreadable, detail.clone())
            }
            _ => Problem::new(
                ProblemType::Internal,
                "the server failed to handle the request; see its logs",
            ),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A source as stored.
#[derive(Debug, Clone)]
pub struct StoredSource {
    pub spec: SourceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stream with its sync state.
#[derive(Debug, Clone)]
pub struct StreamState {
    pub source: SourceName,
    /// The source's base URL (link cursors must stay on its host).
    pub base_url: HttpUrl,
    pub spec: StreamSpec,
    pub cursor: Option<Cursor>,
    pub last_job: Option<Job>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// A stored checkpoint: the strategy's own JSON, kept verbatim.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub value: Value,
    pub updated_at: DateTime<Utc>,
    /// The job that wrote it; `None` when it was set through the API.
    pub job: Option<Uuid>,
}

/// What a new or replaced source is stored as: the parsed spec (for the streams' rows)
/// and the JSON text it came from (kept, and parsed again when read).
pub struct NewSource<'a> {
    pub spec: &'a SourceSpec,
    pub raw: &'a str,
}

/// What a look for the jobs of instances that are gone found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoneLeases {
    /// Leases this look ended.
    pub ended: u64,
    /// Running jobs whose lease has ended, whoever ended it, that no worker has claimed.
    pub waiting: u64,
}

/// A job a worker has claimed, with everything needed to run it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: Job,
    pub stream_id: i64,
    /// Where the stream's records go: the stream itself, or for a deletions stream the
    /// stream whose records it deletes.
    pub target_stream_id: i64,
    pub source: SourceSpec,
    pub stream: StreamSpec,
    pub cursor: Option<Cursor>,
}

/// One record of a page: its key and verbatim JSON text, or `None` for a deletion.
#[derive(Debug, Clone)]
pub struct PageRecord {
    pub key: String,
    pub body: Option<String>,
    /// SHA-256 of `body`, computed outside the page transaction.
    hash: Option<[u8; 32]>,
}

impl PageRecord {
    pub fn upsert(key: String, body: String) -> Self {
        use sha2::{Digest, Sha256};
        let hash = Sha256::digest(body.as_bytes()).into();
        PageRecord {
            key,
            body: Some(body),
            hash: Some(hash),
        }
    }

    pub fn delete(key: String) -> Self {
        PageRecord {
            key,
            body: None,
            hash: None,
        }
    }
}

/// One transaction's writes: the records of one page, or of several consecutive pages of
/// one run (a group commit, docs/design.md §4) with the cursor after the last of them.
/// The pages of a reconcile job (of a stream that is not a deletions stream) also record
/// the keys of their records as seen by the job, in the same transaction.
pub struct PageCommit<'a> {
    pub job: Uuid,
    /// The worker that holds the job's lease; the commit fails if it no longer does.
    pub owner: &'a str,
    /// How far the commit extends the lease.
    pub lease: chrono::TimeDelta,
    pub target_stream_id: i64,
    pub cursor_stream_id: i64,
    pub records: &'a [PageRecord],
    pub cursor: &'a CursorWrite,
    /// The job's counters including these pages' request and page counts; the records'
    /// outcomes are added to them before they are written.
    pub stats: &'a JobStats,
    /// A page of a child stream's listing of one parent; `None` for any other stream.
    pub child: Option<ChildWrite<'a>>,
}

/// What a child stream's page commits besides its records (docs/design.md §3, "Child
/// stream"): which parent's children they are, and on the listing's last page the queue
/// row it consumes.
#[derive(Debug, Clone, Copy)]
pub struct ChildWrite<'a> {
    pub parent_key: &'a str,
    /// The feed position of the parent's change the queue row was written for: the row is
    /// deleted only if the parent did not change again since.
    pub consume: Option<i64>,
}

/// A parent queued for a child stream: its key, the feed position of its change that
/// queued it, and whether that change deleted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedParent {
    pub key: String,
    pub seq: i64,
    pub deleted: bool,
}

/// A child stream with queued parents and no queued or running job.
#[derive(Debug, Clone)]
pub struct WaitingChild {
    pub stream_id: i64,
    /// Its jobs failed in a row.
    pub failures: u32,
    /// When its last job ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a page changed in the mirror.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl PageOutcome {
    pub fn add_to(self, stats: &mut JobStats) {
        stats.inserted += self.inserted;
        stats.updated += self.updated;
        stats.unchanged += self.unchanged;
        stats.deleted += self.deleted;
    }
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum JobEnd {
    Succeeded,
    Failed(Problem),
}

/// A job's resync, committed in one transaction: the stream's cursor is reset and the
/// job says why (the job then reads from the beginning).
pub struct ResyncCommit<'a> {
    pub job: Uuid,
    /// The worker that holds the job's lease; nothing is written if it no longer does.
    pub owner: &'a str,
    pub lease: chrono::TimeDelta,
    pub cursor_stream_id: i64,
    pub resynced: &'a Resynced,
}

/// One batch of a reconcile's sweep over the mirror's live keys, in key order.
#[derive(Debug, Clone, Default)]
pub struct SweepBatch {
    /// The keys of the batch the job has not seen upstream.
    pub unseen: Vec<String>,
    /// The last key of the batch, where the next batch starts; `None` when the sweep is
    /// done.
    pub last: Option<String>,
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub source: Option<SourceName>,
    pub stream: Option<StreamName>,
    pub status: Option<JobStatus>,
}

/// A scheduled stream and its scheduling state.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub stream_id: i64,
    pub schedule: Arc<Schedule>,
    /// When the scheduler last queued a job for it.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Jobs failed in a row.
    pub failures: u32,
    /// When a reconcile of `schedule.reconcile` last fell due; `None` before its clock
    /// started.
    pub reconcile_scheduled_at: Option<DateTime<Utc>>,
    /// A reconcile fell due and waits for the stream to be free.
    pub reconcile_waiting: bool,
}

/// The schedules the scheduler has read, by stream, each with the time its source's spec
/// was written: a tick parses the specs of only the sources written since the last one,
/// not every scheduled source's spec every second.
#[derive(Default)]
pub struct KnownSchedules {
    streams: std::collections::HashMap<i64, KnownSchedule>,
    /// Counts the reads, so that streams gone from the last one are forgotten.
    tick: u64,
}

/// A stream's schedule as its source's spec of `spec_at` gives it (`None`: it has none).
struct KnownSchedule {
    spec_at: DateTime<Utc>,
    schedule: Option<Arc<Schedule>>,
    tick: u64,
}

/// One entry of the mirror.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub key: String,
    pub rev: i64,
    pub body: String,
    pub synced_at: DateTime<Utc>,
}

/// A serving process, as job leases name it. Ids are never reused, so a lease of a process
/// that died is never mistaken for one of a process started later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceId(i32);

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What `enqueue_job` did.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: Job,
    /// `false` when the stream already had a queued or running job, which is returned.
    pub created: bool,
}

/// Everything tidemark keeps. [`SqlStore`] implements it once for both databases.
#[async_trait::async_trait]
pub trait Store: FeedStore + Send + Sync + 'static {
    /// The database answers and every migration of this build is applied.
    async fn ready(&self) -> StoreResult<()>;

    /// Registers a source; [`StoreError::Conflict`] when the name is taken.
    async fn create_source(&self, source: NewSource<'_>) -> StoreResult<StoredSource>;

    /// Replaces a source's spec. Streams keep their cursor and mirror unless their
    /// pagination type changed (then the cursor is reset); streams no longer in the spec
    /// are removed with their records and jobs. `None` when there is no such source.
    async fn replace_source(&self, source: NewSource<'_>) -> StoreResult<Option<StoredSource>>;

    async fn get_source(&self, name: &SourceName) -> StoreResult<Option<StoredSource>>;

    /// Sources ordered by name, after `after`.
    async fn list_sources(
        &self,
        after: Option<&SourceName>,
        limit: u32,
    ) -> StoreResult<Vec<StoredSource>>;

    /// Removes a source with its streams, cursors, jobs and records. `false` when absent.
    async fn delete_source(&self, name: &SourceName) -> StoreResult<bool>;

    async fn get_stream(
        &self,
        source: &SourceName,
        stream: &StreamName,
    ) -> StoreResult<Option<StreamState>>;

    /// Sets (or with `None` resets) a stream's cursor through the API. Returns when it was
    /// written; `None` when the stream does not exist.
    async fn set_cursor(
        &self,
        source: &SourceName,
        stream: &StreamName,
        cursor: Option<&Value>,
    ) -> StoreResult<Option<DateTime<Utc>>>;

    /// Queues a job for a stream unless it has a queued or running one (then that one is
    /// returned). `None` when the stream does not exist.
    async fn enqueue_job(
        &self,
        source: &SourceName,
        stream: &StreamName,
        mode: JobMode,
        trigger: Trigger,
    ) -> StoreResult<Option<Enqueued>>;

    /// Asks for another incremental run of a stream: queued at once, or, when a job is
    /// running, queued as soon as it finishes (so many hints make one run). `None` when
    /// the stream does not exist.
    async fn request_run(
        &self,
        source: &SourceName,
        stream: &StreamName,
        trigger: Trigger,
    ) -> StoreResult<Option<Job>>;

    async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>>;

    /// Jobs, newest first, after the job `after`.
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Job>>;

    /// Cancels a queued or running job (a running one stops at its next page boundary:
    /// its commits are refused from now on). Returns the job as it is afterwards, and
    /// whether this call cancelled it.
    async fn cancel_job(&self, id: Uuid) -> StoreResult<Option<(Job, bool)>>;

    /// Registers this process as a serving instance and takes its liveness lock, held until
    /// [`Store::close`] or the process's end (docs/design.md §7): while an instance holds
    /// it, its jobs are taken over only when their lease runs out; once it does not (the
    /// process died), they are taken over at once. With SQLite the lock is the one taken
    /// on the database file when it was opened: one process serves a file.
    async fn start_instance(&self) -> StoreResult<InstanceId>;

    /// Closes the database and lets go of the liveness lock (once the workers stopped).
    async fn close(&self);

    /// Ends the leases of the running jobs whose instance (another than `instance`) no
    /// longer holds its liveness lock, so that they are claimed at once; how many it
    /// ended, and how many jobs wait for a worker to take them over (their lease ended,
    /// by this call, another instance's or the clock).
    async fn expire_gone_leases(&self, instance: InstanceId) -> StoreResult<GoneLeases>;

    /// Claims the oldest queued job, or a running one whose lease expired, for worker
    /// `owner` of `instance`.
    async fn claim_job(
        &self,
        instance: InstanceId,
        owner: &str,
        lease: chrono::TimeDelta,
    ) -> StoreResult<Option<Claim>>;

    /// Extends a lease; `false` when the job is no longer running under `owner`.
    async fn heartbeat(
        &self,
        job: Uuid,
        owner: &str,
        lease: chrono::TimeDelta,
    ) -> StoreResult<bool>;

    /// Puts a running job back in the queue (on shutdown), keeping what it committed.
    async fn release_job(&self, job: Uuid, owner: &str) -> StoreResult<()>;

    /// Finishes a job; `false` when it was no longer running under `owner`.
    async fn finish_job(
        &self,
        job: Uuid,
        owner: &str,
        stats: &JobStats,
        end: JobEnd,
    ) -> StoreResult<bool>;

    /// Commits one page: records, the changes they cause (feed positions), the cursor and
    /// the job's counters, in one transaction. `None` (nothing written) when the job is no
    /// longer running under `page.owner` (cancelled, or its lease was taken over).
    async fn commit_page(&self, page: PageCommit<'_>) -> StoreResult<Option<PageOutcome>>;

    /// Resets the stream's cursor and records the job's resync, if the job still runs
    /// under `resync.owner` (else `false`, nothing written).
    async fn resync_job(&self, resync: ResyncCommit<'_>) -> StoreResult<bool>;

    /// Up to `limit` live (not deleted) keys of a stream after `after`, in key order, and
    /// which of them reconcile job `job` has not seen.
    async fn sweep_batch(
        &self,
        stream_id: i64,
        job: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<SweepBatch>;

    /// Deletes up to `limit` of the keys reconcile job `job` has seen, while the job runs
    /// under `owner`: how many were deleted (0: none are left), `None` when the job is no
    /// longer ours.
    async fn forget_seen(&self, job: Uuid, owner: &str, limit: u32) -> StoreResult<Option<u64>>;

    /// Live records of a stream in key order, after `after`. `None` when the stream does
    /// not exist.
    async fn list_records(
        &self,
        source: &SourceName,
        stream: &StreamName,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Option<Vec<StoredRecord>>>;

    /// One live record. `Ok(None)` when the stream does not exist, `Ok(Some(None))` when
    /// the record does not (or was deleted).
    async fn get_record(
        &self,
        source: &SourceName,
        stream: &StreamName,
        key: &str,
    ) -> StoreResult<Option<Option<StoredRecord>>>;

    /// Every stream that has a schedule; `known` keeps the schedules of the specs read
    /// before, so only the specs written since are read and parsed again.
    async fn scheduled_streams(&self, known: &mut KnownSchedules) -> StoreResult<Vec<Scheduled>>;

    /// Queues a scheduled incremental job for each stream of `due` (its id and the
    /// `scheduled_at` read), unless another scheduler did since `scheduled_at` was read
    /// (that stream is skipped), or the stream has a queued or running job (its time is
    /// recorded, no job is queued). Returns how many were queued.
    async fn enqueue_scheduled(
        &self,
        due: &[(i64, Option<DateTime<Utc>>)],
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;

    /// Deletes at most `batch` jobs that finished before `before` and are not among the
    /// newest `keep` jobs of their stream (queued and running jobs are never deleted),
    /// and the rows of instances started before then that no lease names; returns how
    /// many jobs it deleted.
    async fn purge_jobs(&self, before: DateTime<Utc>, keep: u32, batch: u32) -> StoreResult<u64>;

    /// Moves a stream's reconcile clock and queues a waiting reconcile. When the clock
    /// never started (`previous` is `None`) or `fell_due`, the clock is set to `now`
    /// (compare-and-set on `previous`: `false` when another scheduler moved it), and a
    /// reconcile that fell due waits from then on. A waiting reconcile is queued at once
    /// when the stream has no queued or running job, or else when that job ends. `true`
    /// when a job was queued.
    async fn schedule_reconcile(
        &self,
        stream_id: i64,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        fell_due: bool,
    ) -> StoreResult<bool>;

    /// The parent stream of a child stream; `None` for a stream without one.
    async fn parent_of(&self, stream_id: i64) -> StoreResult<Option<i64>>;

    /// Up to `limit` parents queued for child stream `stream_id` after the queue position
    /// `after_seq`, oldest first.
    async fn queued_parents(
        &self,
        stream_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedParent>>;

    /// The JSON text of a live record; `None` when there is none (or a tombstone).
    async fn live_record(&self, stream_id: i64, key: &str) -> StoreResult<Option<String>>;

    /// Up to `limit` live records (key and JSON text) of a stream after `after`, in key
    /// order.
    async fn live_records_after(
        &self,
        stream_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>>;

    /// The keys child stream `stream_id` holds in its mirror for one parent.
    async fn children_of(&self, stream_id: i64, parent_key: &str) -> StoreResult<Vec<String>>;

    /// Child streams with queued parents and no queued or running job.
    async fn waiting_children(&self) -> StoreResult<Vec<WaitingChild>>;

    /// Queues an incremental job of a child stream unless it has one; `true` when queued.
    async fn queue_child_job(&self, stream_id: i64) -> StoreResult<bool>;
}

/// Opens the store `database_url` names (`sqlite:` or `postgres:`) and applies its
/// migrations. Inline upstream secrets are encrypted with `secret_key` when one is given.
pub async fn connect(
    database_url: &str,
    secret_key: Option<&SecretKey>,
) -> anyhow::Result<Arc<dyn Store>> {
    let sealer = Sealer::new(secret_key);
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(database_url, sealer).await?))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(database_url, sealer).await?))
    } else {
        anyhow::bail!(
            "DATABASE_URL must start with sqlite: or postgres: (got `{}`)",
            database_url.split(':').next().unwrap_or_default()
        )
    }
}
