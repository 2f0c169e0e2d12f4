//! The job queue: enqueueing, claiming under a lease (taking over the jobs of instances
//! that no longer hold their liveness lock), heartbeats, finishing, the scheduler's
//! bookkeeping and the job history's retention.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};
use uuid::Uuid;

use super::backend::{
    Backend, Conn, Db, Joined, Row, RowsAffected, Scalar, SqlStore, join, json, label, now,
    stats_text, text_of,
};
use super::sources::CursorRow;
use super::{
    Claim, Enqueued, GoneLeases, InstanceId, JobEnd, JobFilter, KnownSchedule, KnownSchedules,
    Scheduled, StoreError, StoreResult,
};
use crate::problem::Problem;
use crate::spec::job::{JobMode, JobStats, JobStatus, Resynced, Trigger};
use crate::spec::{Job, SourceName, StreamName};

/// The columns of a job with its source and stream names, as [`JobRow`] reads them.
const JOB_COLUMNS: &str = "SELECT j.id, j.mode, j.status, j.trigger, j.attempts, j.created_at, \
     j.started_at, j.finished_at, j.stats, j.error, j.resynced, so.name AS source, \
     st.name AS stream ";

/// What [`JOB_COLUMNS`] reads from; followed by a `WHERE` clause.
const JOB_FROM: &str =
    "FROM jobs j JOIN streams st ON st.id = j.stream_id JOIN sources so ON so.id = st.source_id ";

const fn job_select(filter: &str) -> Joined {
    join(&[JOB_COLUMNS, JOB_FROM, filter])
}

/// Job `$1` with what it runs on, as [`ClaimRow`] reads it.
const CLAIMED_SQL: &str = join(&[
    JOB_COLUMNS,
    ", st.id AS stream_id, so.spec, so.id AS source_id, st.cursor, st.cursor_updated_at, \
     st.cursor_job ",
    JOB_FROM,
    "WHERE j.id = $1",
])
.as_str();

/// A job by id (`$1`).
const JOB_BY_ID_SQL: &str = job_select("WHERE j.id = $1").as_str();

/// The queued or running job of stream `$1`.
const ACTIVE_JOB_SQL: &str =
    job_select("WHERE j.stream_id = $1 AND j.status IN ('queued', 'running')").as_str();

/// The newest job of stream `$1`.
pub(super) const LATEST_JOB_SQL: &str =
    job_select("WHERE j.stream_id = $1 ORDER BY j.created_at DESC LIMIT 1").as_str();

/// A page of `GET /v1/jobs`: source `$1`, stream `$2`, status `$3` (each unless NULL),
/// after job `$4`, at most `$5`, newest first.
const LIST_JOBS_SQL: &str = job_select(
    "WHERE ($1 IS NULL OR so.name = $1) AND ($2 IS NULL OR st.name = $2) \
     AND ($3 IS NULL OR j.status = $3) \
     AND ($4 IS NULL OR (j.created_at, j.id) < \
          (SELECT created_at, id FROM jobs WHERE id = $4)) \
     ORDER BY j.created_at DESC, j.id DESC LIMIT $5",
)
.as_str();

/// Up to `$3` jobs that finished before `$1` and are older than the `$2 + 1`-th newest job
/// of their stream (so the newest `$2 + 1` of each stream stay, whatever their age); a
/// stream with fewer jobs keeps them all (the subquery finds no row, and the comparison
/// is NULL). Each candidate reads its stream's newest jobs from `jobs_by_stream`.
const PURGE_JOBS_SQL: &str = "DELETE FROM jobs WHERE id IN (\
     SELECT j.id FROM jobs j WHERE j.finished_at < $1 \
     AND (j.created_at, j.id) < (SELECT k.created_at, k.id FROM jobs k \
          WHERE k.stream_id = j.stream_id ORDER BY k.created_at DESC, k.id DESC \
          LIMIT 1 OFFSET $2) \
     ORDER BY j.finished_at LIMIT $3)";

/// A job row with its source and stream names.
#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    mode: String,
    status: String,
    trigger: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    stats: String,
    error: Option<String>,
    resynced: Option<String>,
    source: String,
    stream: String,
}

impl JobRow {
    pub(super) fn into_job(self) -> StoreResult<Job> {
        Ok(Job {
            id: self
                .id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("stored job id: {e}")))?,
            source: label(&self.source)?,
            stream: label(&self.stream)?,
            mode: label(&self.mode)?,
            status: label(&self.status)?,
            trigger: label(&self.trigger)?,
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            stats: json::<JobStats>("job stats", &self.stats)?,
            error: self
                .error
                .as_deref()
                .map(|e| json::<Problem>("job error", e))
                .transpose()?,
            resynced: self
                .resynced
                .as_deref()
                .map(|r| json::<Resynced>("job resync", r))
                .transpose()?,
        })
    }
}

/// A claimed job and what it runs on: its stream, its source's spec and the cursor.
#[derive(sqlx::FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    job: JobRow,
    stream_id: i64,
    spec: String,
    source_id: i64,
    #[sqlx(flatten)]
    cursor: CursorRow,
}

/// A stream's scheduling state as the scheduler reads it every tick, with the time its
/// source's spec was written.
#[derive(sqlx::FromRow)]
struct ScheduledRow {
    id: i64,
    source_id: i64,
    spec_at: DateTime<Utc>,
    scheduled_at: Option<DateTime<Utc>>,
    failures: i32,
    reconcile_scheduled_at: Option<DateTime<Utc>>,
    reconcile_waiting: bool,
}

/// Every stream's scheduling state (a stream without a schedule is known as such from its
/// spec; it is not read).
const SCHEDULE_STATES_SQL: &str = "SELECT st.id, st.source_id, so.updated_at AS spec_at, \
     st.scheduled_at, st.failures, st.reconcile_scheduled_at, \
     st.reconcile_due_at IS NOT NULL AS reconcile_waiting \
     FROM streams st JOIN sources so ON so.id = st.source_id";

/// A stream with its source's spec, for the scheduler to read its schedule from.
#[derive(sqlx::FromRow)]
struct StreamSpecRow {
    id: i64,
    name: String,
    source_id: i64,
    spec: String,
    spec_at: DateTime<Utc>,
}

/// Every stream with its source's spec.
const STREAM_SPECS_SQL: &str = "SELECT st.id, st.name, st.source_id, so.spec, \
     so.updated_at AS spec_at FROM streams st JOIN sources so ON so.id = st.source_id";

/// The streams of source `$1` with its spec.
const STREAM_SPECS_OF_SQL: &str = "SELECT st.id, st.name, st.source_id, so.spec, \
     so.updated_at AS spec_at FROM streams st JOIN sources so ON so.id = st.source_id \
     WHERE so.id = $1";

/// Above this many sources whose specs a tick must read, it reads every spec in one
/// statement rather than one statement per source.
const SPECS_ONE_BY_ONE: usize = 32;

// The driver bounds of the store's generic impls (see `backend.rs`).
impl<B: Backend> SqlStore<B>
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
    #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
    pub(super) async fn enqueue_job(
        &self,
        source: &SourceName,
        stream: &StreamName,
        mode: JobMode,
        trigger: Trigger,
    ) -> StoreResult<Option<Enqueued>> {
        let mut tx = self.write.begin().await?;
        let Some(stream_id) = Self::stream_id(&mut *tx, source, stream).await? else {
            return Ok(None);
        };
        let created = Self::insert_job(&mut *tx, stream_id, mode, trigger).await?;
        let job = Self::active_job(&mut *tx, stream_id).await?;
        tx.commit().await?;
        Ok(job.map(|job| Enqueued {
            job,
            created: created.is_some(),
        }))
    }

    #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
    pub(super) async fn request_run(
        &self,
        source: &SourceName,
        stream: &StreamName,
        trigger: Trigger,
    ) -> StoreResult<Option<Job>> {
        let mut tx = self.write.begin().await?;
        let Some(stream_id) = Self::stream_id(&mut *tx, source, stream).await? else {
            return Ok(None);
        };
        Self::insert_job(&mut *tx, stream_id, JobMode::Incremental, trigger).await?;
        let job = Self::active_job(&mut *tx, stream_id).await?;
        if job.as_ref().is_some_and(|j| j.status == JobStatus::Running) {
            sqlx::query("UPDATE streams SET rerun = TRUE WHERE id = $1")
                .bind(stream_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(job)
    }

    #[tracing::instrument(skip_all, fields(job = %id))]
    pub(super) async fn get_job(&self, id: Uuid) -> StoreResult<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(JOB_BY_ID_SQL)
            .bind(id.hyphenated().to_string())
            .fetch_optional(&self.read)
            .await?;
        row.map(JobRow::into_job).transpose()
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn list_jobs(
        &self,
        filter: &JobFilter,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(LIST_JOBS_SQL)
            .bind(filter.source.as_ref().map(|s| s.as_str().to_owned()))
            .bind(filter.stream.as_ref().map(|s| s.as_str().to_owned()))
            .bind(filter.status.as_ref().map(text_of))
            .bind(after.map(|a| a.hyphenated().to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    #[tracing::instrument(skip_all, fields(job = %id))]
    pub(super) async fn cancel_job(&self, id: Uuid) -> StoreResult<Option<(Job, bool)>> {
        let now = now();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $2, lease_owner = NULL, \
             lease_instance = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(id.hyphenated().to_string())
        .bind(now)
        .execute(&self.write)
        .await?;
        if done.rows_affected() > 0 {
            // A cancelled reconcile's seen keys; its pages can no longer commit.
            sqlx::query("DELETE FROM reconcile_seen WHERE job_id = $1")
                .bind(id.hyphenated().to_string())
                .execute(&self.write)
                .await?;
        }
        let row: Option<JobRow> = sqlx::query_as(JOB_BY_ID_SQL)
            .bind(id.hyphenated().to_string())
            .fetch_optional(&self.write)
            .await?;
        row.map(|r| r.into_job().map(|j| (j, done.rows_affected() > 0)))
            .transpose()
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn start_instance(&self) -> StoreResult<InstanceId> {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let id: i32 = sqlx::query_scalar(
            "INSERT INTO instances (pid, started_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(pid)
        .bind(now())
        .fetch_one(&self.write)
        .await?;
        let instance = InstanceId(id);
        self.backend.hold_liveness(&self.write, instance).await?;
        tracing::info!(%instance, pid, "instance started");
        Ok(instance)
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn expire_gone_leases(&self, instance: InstanceId) -> StoreResult<GoneLeases> {
        let now = now();
        let ended = sqlx::query(B::EXPIRE_GONE_SQL)
            .bind(instance.0)
            .bind(now)
            .execute(&self.write)
            .await?
            .rows_affected();
        // Also the leases another instance ended: its workers may all be busy, and this
        // instance's idle ones would otherwise find the job only at their next poll.
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND lease_expires_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(GoneLeases {
            ended,
            waiting: u64::try_from(waiting).unwrap_or_default(),
        })
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn claim_job(
        &self,
        instance: InstanceId,
        owner: &str,
        lease: chrono::TimeDelta,
    ) -> StoreResult<Option<Claim>> {
        let mut tx = self.write.begin().await?;
        // Read the clock once the transaction holds the connection, so a job
        // queued meanwhile never looks started before it was created.
        let now = now();
        let claimed: Option<String> = sqlx::query_scalar(B::CLAIM_SQL)
            .bind(owner)
            .bind(now)
            .bind(now + lease)
            .bind(instance.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = claimed else {
            return Ok(None);
        };
        let detail: ClaimRow = sqlx::query_as(CLAIMED_SQL)
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let job = detail.job.into_job()?;
        let source = match self.sealer.open(&detail.spec) {
            Ok(source) => source,
            Err(e) => {
                // Failed rather than left queued: the oldest queued job is claimed
                // first, so one that cannot start would block every other.
                tx.commit().await?;
                let end = JobEnd::Failed(e.problem());
                self.finish_job(job.id, owner, &job.stats, end).await?;
                return Ok(None);
            }
        };
        let Some(stream) = source.streams.get(&job.stream).cloned() else {
            return Err(StoreError::Corrupt(format!(
                "job {id} names stream `{}`, which is not in its source's spec",
                job.stream
            )));
        };
        let target_stream_id = match &stream.deletes {
            Some(target) => {
                sqlx::query_scalar("SELECT id FROM streams WHERE source_id = $1 AND name = $2")
                    .bind(detail.source_id)
                    .bind(target.as_str())
                    .fetch_one(&mut *tx)
                    .await?
            }
            None => detail.stream_id,
        };
        tx.commit().await?;
        Ok(Some(Claim {
            job,
            stream_id: detail.stream_id,
            target_stream_id,
            source,
            stream,
            cursor: detail.cursor.parse()?,
        }))
    }

    #[tracing::instrument(skip_all, fields(job = %job))]
    pub(super) async fn heartbeat(
        &self,
        job: Uuid,
        owner: &str,
        lease: chrono::TimeDelta,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(job.hyphenated().to_string())
        .bind(owner)
        .bind(now() + lease)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    #[tracing::instrument(skip_all, fields(job = %job))]
    pub(super) async fn release_job(&self, job: Uuid, owner: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_instance = NULL, \
             lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(job.hyphenated().to_string())
        .bind(owner)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(job = %job))]
    pub(super) async fn finish_job(
        &self,
        job: Uuid,
        owner: &str,
        stats: &JobStats,
        end: JobEnd,
    ) -> StoreResult<bool> {
        let now = now();
        let (status, error) = match &end {
            JobEnd::Succeeded => (JobStatus::Succeeded, None),
            JobEnd::Failed(problem) => (JobStatus::Failed, Some(problem.clone())),
        };
        let mut tx = self.write.begin().await?;
        let ended: Option<(i64, String)> = sqlx::query_as(
            "UPDATE jobs SET status = $3, finished_at = $4, stats = $5, error = $6, \
             lease_owner = NULL, lease_instance = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
             RETURNING stream_id, mode",
        )
        .bind(job.hyphenated().to_string())
        .bind(owner)
        .bind(text_of(&status))
        .bind(now)
        .bind(stats_text(stats))
        .bind(error.map(|e| serde_json::to_string(&e).unwrap_or_default()))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((stream_id, mode)) = ended else {
            return Ok(false);
        };
        // Read with the stream's row written (locked, on PostgreSQL): a rerun asked for
        // or a reconcile that fell due meanwhile is seen, not overwritten.
        let (rerun, reconcile_waiting): (bool, bool) = sqlx::query_as(
            "UPDATE streams SET failures = CASE WHEN $2 THEN 0 ELSE failures + 1 END \
             WHERE id = $1 RETURNING rerun, reconcile_due_at IS NOT NULL",
        )
        .bind(stream_id)
        .bind(matches!(end, JobEnd::Succeeded))
        .fetch_one(&mut *tx)
        .await?;
        if rerun {
            sqlx::query("UPDATE streams SET rerun = FALSE WHERE id = $1")
                .bind(stream_id)
                .execute(&mut *tx)
                .await?;
        }
        if mode == text_of(&JobMode::Reconcile) {
            // A reconcile's seen keys go with it (a succeeded one has deleted them
            // already, in batches).
            sqlx::query("DELETE FROM reconcile_seen WHERE job_id = $1")
                .bind(job.hyphenated().to_string())
                .execute(&mut *tx)
                .await?;
        }
        // A reconcile that fell due while this job ran goes first (it reads everything a
        // rerun would); the rerun's job is then not queued beside it.
        let reconciling =
            reconcile_waiting && Self::queue_waiting_reconcile(&mut *tx, stream_id).await?;
        if !reconciling && rerun {
            Self::insert_job(&mut *tx, stream_id, JobMode::Incremental, Trigger::Webhook).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn scheduled_streams(
        &self,
        known: &mut KnownSchedules,
    ) -> StoreResult<Vec<Scheduled>> {
        let rows: Vec<ScheduledRow> = sqlx::query_as(SCHEDULE_STATES_SQL)
            .fetch_all(&self.read)
            .await?;
        known.tick += 1;
        let tick = known.tick;
        let stale: HashSet<i64> = rows
            .iter()
            .filter(|row| {
                known
                    .streams
                    .get(&row.id)
                    .is_none_or(|k| k.spec_at != row.spec_at)
            })
            .map(|row| row.source_id)
            .collect();
        if stale.len() > SPECS_ONE_BY_ONE {
            let specs = sqlx::query_as(STREAM_SPECS_SQL)
                .fetch_all(&self.read)
                .await?;
            self.learn_schedules(known, specs)?;
        } else {
            for source_id in stale {
                let specs = sqlx::query_as(STREAM_SPECS_OF_SQL)
                    .bind(source_id)
                    .fetch_all(&self.read)
                    .await?;
                self.learn_schedules(known, specs)?;
            }
        }
        let mut scheduled = Vec::new();
        for row in rows {
            // A stream added after the states were read is scheduled next tick.
            let Some(entry) = known.streams.get_mut(&row.id) else {
                continue;
            };
            entry.tick = tick;
            if let Some(schedule) = &entry.schedule {
                scheduled.push(Scheduled {
                    stream_id: row.id,
                    schedule: schedule.clone(),
                    scheduled_at: row.scheduled_at,
                    failures: u32::try_from(row.failures).unwrap_or_default(),
                    reconcile_scheduled_at: row.reconcile_scheduled_at,
                    reconcile_waiting: row.reconcile_waiting,
                });
            }
        }
        known.streams.retain(|_, k| k.tick == tick);
        Ok(scheduled)
    }

    /// Reads the schedules of `rows`' streams from their sources' specs (each parsed once)
    /// into `known`.
    fn learn_schedules(
        &self,
        known: &mut KnownSchedules,
        rows: Vec<StreamSpecRow>,
    ) -> StoreResult<()> {
        let mut specs = HashMap::new();
        for row in rows {
            let source = match specs.entry(row.source_id) {
                Entry::Occupied(parsed) => parsed.into_mut(),
                Entry::Vacant(slot) => slot.insert(self.sealer.open_streams(&row.spec)?),
            };
            let schedule = source
                .streams
                .iter()
                .find(|s| s.name.as_str() == row.name)
                .and_then(|s| s.schedule.clone())
                .map(Arc::new);
            known.streams.insert(
                row.id,
                KnownSchedule {
                    spec_at: row.spec_at,
                    schedule,
                    tick: known.tick,
                },
            );
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(streams = due.len()))]
    pub(super) async fn enqueue_scheduled(
        &self,
        due: &[(i64, Option<DateTime<Utc>>)],
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut queued = 0;
        // One transaction per stream, each holding its stream's row only for its own two
        // statements: a transaction of a whole tick's streams held their rows while its
        // inserts waited for the jobs of other streams to end, so those jobs' ends (which
        // write their stream's row) waited for it, or deadlocked with it (measured on a
        // loaded PostgreSQL: a third of the jobs per second).
        for &(stream_id, previous) in due {
            let mut tx = self.write.begin().await?;
            let won = sqlx::query(
                "UPDATE streams SET scheduled_at = $3 \
                 WHERE id = $1 AND scheduled_at IS NOT DISTINCT FROM $2",
            )
            .bind(stream_id)
            .bind(previous)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if won.rows_affected() == 0 {
                continue;
            }
            if Self::insert_job(&mut *tx, stream_id, JobMode::Incremental, Trigger::Schedule)
                .await?
                .is_some()
            {
                queued += 1;
            }
            tx.commit().await?;
        }
        Ok(queued)
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn purge_jobs(
        &self,
        before: DateTime<Utc>,
        keep: u32,
        batch: u32,
    ) -> StoreResult<u64> {
        let purged = sqlx::query(PURGE_JOBS_SQL)
            .bind(before)
            .bind(i64::from(keep.saturating_sub(1)))
            .bind(i64::from(batch))
            .execute(&self.write)
            .await?
            .rows_affected();
        // A log of starts, kept as long as the jobs.
        sqlx::query(
            "DELETE FROM instances WHERE started_at < $1 AND id NOT IN \
             (SELECT lease_instance FROM jobs WHERE lease_instance IS NOT NULL)",
        )
        .bind(before)
        .execute(&self.write)
        .await?;
        Ok(purged)
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn schedule_reconcile(
        &self,
        stream_id: i64,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        fell_due: bool,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        if previous.is_none() || fell_due {
            // A compare-and-set, as for incremental jobs: one scheduler moves the clock.
            let won = sqlx::query(
                "UPDATE streams SET reconcile_scheduled_at = $3, \
                 reconcile_due_at = CASE WHEN $4 THEN COALESCE(reconcile_due_at, $3) \
                                    ELSE reconcile_due_at END \
                 WHERE id = $1 AND reconcile_scheduled_at IS NOT DISTINCT FROM $2",
            )
            .bind(stream_id)
            .bind(previous)
            .bind(now)
            .bind(fell_due)
            .execute(&mut *tx)
            .await?;
            if won.rows_affected() == 0 {
                return Ok(false);
            }
        }
        let queued = Self::queue_waiting_reconcile(&mut *tx, stream_id).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// Queues the reconcile waiting on a stream, if one is and the stream has no queued
    /// or running job (else it keeps waiting); `true` when it was queued. A queued
    /// reconcile that has not started is as good as a new one, so the wait ends then too.
    async fn queue_waiting_reconcile(conn: &mut Conn<B>, stream_id: i64) -> StoreResult<bool> {
        // Writes the row to lock it (on PostgreSQL), so that two schedulers cannot both
        // queue the same waiting reconcile.
        let waiting = sqlx::query(
            "UPDATE streams SET reconcile_due_at = reconcile_due_at \
             WHERE id = $1 AND reconcile_due_at IS NOT NULL",
        )
        .bind(stream_id)
        .execute(&mut *conn)
        .await?;
        if waiting.rows_affected() == 0 {
            return Ok(false);
        }
        let queued = Self::insert_job(&mut *conn, stream_id, JobMode::Reconcile, Trigger::Schedule)
            .await?
            .is_some();
        let served = queued
            || Self::active_job(&mut *conn, stream_id)
                .await?
                .is_some_and(|j| j.mode == JobMode::Reconcile && j.status == JobStatus::Queued);
        if served {
            sqlx::query("UPDATE streams SET reconcile_due_at = NULL WHERE id = $1")
                .bind(stream_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(queued)
    }

    /// Queues a job unless the stream has an active one; the new job's id, if any.
    async fn insert_job(
        conn: &mut Conn<B>,
        stream_id: i64,
        mode: JobMode,
        trigger: Trigger,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "INSERT INTO jobs (id, stream_id, mode, status, trigger, attempts, created_at, stats) \
             VALUES ($1, $2, $3, 'queued', $4, 0, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(Uuid::new_v4().hyphenated().to_string())
        .bind(stream_id)
        .bind(text_of(&mode))
        .bind(text_of(&trigger))
        .bind(now())
        .bind(stats_text(&Default::default()))
        .fetch_optional(conn)
        .await?)
    }

    /// The queued or running job of a stream.
    async fn active_job(conn: &mut Conn<B>, stream_id: i64) -> StoreResult<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(ACTIVE_JOB_SQL)
            .bind(stream_id)
            .fetch_optional(conn)
            .await?;
        row.map(JobRow::into_job).transpose()
    }
}
