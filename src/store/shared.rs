//! SQL the two databases share. sqlx's SQLite driver takes `$n` placeholders, and the
//! schemas agree on column names and on the Rust types rows decode to, so the queries
//! below are written once and instantiated for each backend by [`impl_store!`].
//! (`sqlx::Any` is no help here: it cannot bind timestamps.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Sealer, StoreError, StoreResult, StoredSource};
use crate::problem::Problem;
use crate::spec::job::JobStats;
use crate::spec::{Job, SourceSpec};

/// The current time at the precision both databases keep (microseconds), so a value
/// returned on write equals the value read back later.
pub(super) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// A stored source from its row.
pub(super) fn source_from_parts(
    sealer: &Sealer,
    spec: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> StoreResult<StoredSource> {
    Ok(StoredSource {
        spec: sealer.open(spec)?,
        created_at,
        updated_at,
    })
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

/// Maps a unique violation to [`StoreError::Conflict`].
pub(super) fn on_unique(e: sqlx::Error, detail: impl FnOnce() -> String) -> StoreError {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::Conflict(detail()),
        _ => StoreError::Database(e),
    }
}

/// What replacing a source does to its existing stream rows.
pub(super) struct StreamPlan {
    /// Streams of the old spec missing from the new one: removed with their data.
    pub remove: Vec<i64>,
    /// Streams whose pagination type changed: their cursor no longer means anything.
    pub reset: Vec<(i64, &'static str)>,
    /// Streams new in the spec: name and pagination type.
    pub insert: Vec<(String, &'static str)>,
}

impl StreamPlan {
    pub(super) fn new(existing: Vec<(i64, String, String)>, spec: &SourceSpec) -> Self {
        let mut old: HashMap<String, (i64, String)> = existing
            .into_iter()
            .map(|(id, name, strategy)| (name, (id, strategy)))
            .collect();
        let mut plan = StreamPlan {
            remove: Vec::new(),
            reset: Vec::new(),
            insert: Vec::new(),
        };
        for stream in spec.streams.iter() {
            let kind = stream.pagination.kind();
            match old.remove(stream.name.as_str()) {
                Some((id, strategy)) if strategy != kind => plan.reset.push((id, kind)),
                Some(_) => {}
                None => plan.insert.push((stream.name.to_string(), kind)),
            }
        }
        plan.remove = old.into_values().map(|(id, _)| id).collect();
        plan
    }
}

/// The columns of a job with its source and stream names, as [`NamedJobTuple`] decodes
/// them; followed by a `WHERE` clause.
macro_rules! job_select {
    () => {
        "SELECT j.id, j.mode, j.status, j.trigger, j.attempts, j.created_at, j.started_at, \
         j.finished_at, j.stats, j.error, so.name, st.name \
         FROM jobs j JOIN streams st ON st.id = j.stream_id JOIN sources so ON so.id = st.source_id "
    };
}
pub(super) use job_select;

/// A job row with its source and stream names.
pub(super) type NamedJobTuple = (
    String,
    String,
    String,
    String,
    i32,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    String,
    Option<String>,
    String,
    String,
);

pub(super) fn named_job(t: NamedJobTuple) -> StoreResult<Job> {
    let (id, mode, status, trigger, attempts, created_at, started_at, finished_at) =
        (t.0, t.1, t.2, t.3, t.4, t.5, t.6, t.7);
    let (stats, error, source, stream) = (t.8, t.9, t.10, t.11);
    Ok(Job {
        id: id
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("stored job id: {e}")))?,
        source: label(&source)?,
        stream: label(&stream)?,
        mode: label(&mode)?,
        status: label(&status)?,
        trigger: label(&trigger)?,
        attempts: u32::try_from(attempts).unwrap_or_default(),
        created_at,
        started_at,
        finished_at,
        stats: json::<JobStats>("job stats", &stats)?,
        error: error
            .as_deref()
            .map(|e| json::<Problem>("job error", e))
            .transpose()?,
    })
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

/// What a page does to each of its records, given what the mirror holds for their keys
/// (`key → (hash, rev)`, hash `None` for a tombstone). A key given twice in one page keeps
/// its last occurrence.
pub(super) struct PagePlan<'a> {
    /// Records that change, in page order (the order of their feed positions).
    pub changes: Vec<Change<'a>>,
    pub outcome: super::PageOutcome,
}

/// One record a page changes.
pub(super) struct Change<'a> {
    pub record: &'a super::PageRecord,
    pub rev: i64,
    /// Whether the mirror has a row for the key (a tombstone counts): it is updated in
    /// place; otherwise a row is inserted.
    pub stored: bool,
}

impl<'a> PagePlan<'a> {
    pub(super) fn new(
        records: &'a [super::PageRecord],
        existing: &HashMap<String, (Option<Vec<u8>>, i64)>,
    ) -> Self {
        let mut last: HashMap<&str, &super::PageRecord> = HashMap::with_capacity(records.len());
        for record in records {
            last.insert(&record.key, record);
        }
        let mut plan = PagePlan {
            changes: Vec::new(),
            outcome: super::PageOutcome::default(),
        };
        for record in records {
            if !std::ptr::eq(last[record.key.as_str()], record) {
                plan.outcome.unchanged += 1;
                continue;
            }
            let old = existing.get(&record.key);
            let old_hash = old.and_then(|(h, _)| h.as_deref());
            let rev = old.map(|(_, rev)| *rev).unwrap_or(0) + 1;
            let change = Change {
                record,
                rev,
                stored: old.is_some(),
            };
            match (&record.hash, old_hash) {
                (Some(new), Some(old)) if new.as_slice() == old => plan.outcome.unchanged += 1,
                (Some(_), Some(_)) => {
                    plan.outcome.updated += 1;
                    plan.changes.push(change);
                }
                (Some(_), None) => {
                    plan.outcome.inserted += 1;
                    plan.changes.push(change);
                }
                (None, Some(_)) => {
                    plan.outcome.deleted += 1;
                    plan.changes.push(change);
                }
                (None, None) => plan.outcome.unchanged += 1,
            }
        }
        plan
    }
}

impl super::PageRecord {
    pub(super) fn hash_bytes(&self) -> Option<&[u8]> {
        self.hash.as_ref().map(|h| h.as_slice())
    }
}

/// Writes the shared [`Store`](super::Store) implementation for one backend.
/// `$store` has fields `read` and `write` (pools; the same pool on PostgreSQL) and
/// `$migrator` is that backend's embedded migrator.
macro_rules! impl_store {
    ($store:ty, $migrator:expr, $conn:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            #[tracing::instrument(skip_all)]
            async fn ready(&self) -> $crate::store::StoreResult<()> {
                let applied: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM _sqlx_migrations WHERE success",
                )
                .fetch_one(&self.read)
                .await?;
                let expected = $migrator.iter().count();
                if usize::try_from(applied).unwrap_or_default() < expected {
                    return Err($crate::store::StoreError::Corrupt(format!(
                        "{applied} of {expected} migrations applied"
                    )));
                }
                Ok(())
            }

            #[tracing::instrument(skip_all, fields(source = %source.spec.name))]
            async fn create_source(
                &self,
                source: $crate::store::NewSource<'_>,
            ) -> $crate::store::StoreResult<$crate::store::StoredSource> {
                let stored = self.sealer.seal(source.spec, source.raw)?;
                let now = $crate::store::shared::now();
                let mut tx = self.write.begin().await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO sources (name, spec, created_at, updated_at) \
                     VALUES ($1, $2, $3, $3) RETURNING id",
                )
                .bind(source.spec.name.as_str())
                .bind(&stored)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::store::shared::on_unique(e, || {
                        format!("a source named `{}` already exists", source.spec.name)
                    })
                })?;
                let created_seq = new_streams_seq(&mut *tx).await?;
                for stream in source.spec.streams.iter() {
                    sqlx::query(
                        "INSERT INTO streams (source_id, name, strategy, created_seq) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(id)
                    .bind(stream.name.as_str())
                    .bind(stream.pagination.kind())
                    .bind(created_seq)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok($crate::store::StoredSource {
                    spec: source.spec.clone(),
                    created_at: now,
                    updated_at: now,
                })
            }

            #[tracing::instrument(skip_all, fields(source = %source.spec.name))]
            async fn replace_source(
                &self,
                source: $crate::store::NewSource<'_>,
            ) -> $crate::store::StoreResult<Option<$crate::store::StoredSource>> {
                let stored = self.sealer.seal(source.spec, source.raw)?;
                let now = $crate::store::shared::now();
                let mut tx = self.write.begin().await?;
                let row: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "UPDATE sources SET spec = $2, updated_at = $3 WHERE name = $1 \
                     RETURNING id, created_at",
                )
                .bind(source.spec.name.as_str())
                .bind(&stored)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((id, created_at)) = row else {
                    return Ok(None);
                };
                let existing: Vec<(i64, String, String)> =
                    sqlx::query_as("SELECT id, name, strategy FROM streams WHERE source_id = $1")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                let plan = $crate::store::shared::StreamPlan::new(existing, source.spec);
                remove_streams(&mut *tx, &plan.remove).await?;
                for (stream_id, strategy) in plan.reset {
                    sqlx::query(
                        "UPDATE streams SET strategy = $2, cursor = NULL, \
                         cursor_updated_at = $3, cursor_job = NULL WHERE id = $1",
                    )
                    .bind(stream_id)
                    .bind(strategy)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                if !plan.insert.is_empty() {
                    let created_seq = new_streams_seq(&mut *tx).await?;
                    for (name, strategy) in plan.insert {
                        sqlx::query(
                            "INSERT INTO streams (source_id, name, strategy, created_seq) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(id)
                        .bind(name)
                        .bind(strategy)
                        .bind(created_seq)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
                Ok(Some($crate::store::StoredSource {
                    spec: source.spec.clone(),
                    created_at,
                    updated_at: now,
                }))
            }

            #[tracing::instrument(skip_all, fields(source = %name))]
            async fn get_source(
                &self,
                name: &$crate::spec::SourceName,
            ) -> $crate::store::StoreResult<Option<$crate::store::StoredSource>> {
                let row: Option<(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
                    sqlx::query_as("SELECT spec, created_at, updated_at FROM sources WHERE name = $1")
                        .bind(name.as_str())
                        .fetch_optional(&self.read)
                        .await?;
                row.map(|(spec, created, updated)| {
                    $crate::store::shared::source_from_parts(&self.sealer, &spec, created, updated)
                })
                .transpose()
            }

            #[tracing::instrument(skip_all)]
            async fn list_sources(
                &self,
                after: Option<&$crate::spec::SourceName>,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::StoredSource>> {
                let rows: Vec<(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
                    sqlx::query_as(
                        "SELECT spec, created_at, updated_at FROM sources \
                         WHERE name > $1 ORDER BY name LIMIT $2",
                    )
                    .bind(after.map(|a| a.as_str()).unwrap_or(""))
                    .bind(i64::from(limit))
                    .fetch_all(&self.read)
                    .await?;
                rows.into_iter()
                    .map(|(spec, created, updated)| {
                        $crate::store::shared::source_from_parts(&self.sealer, &spec, created, updated)
                    })
                    .collect()
            }

            #[tracing::instrument(skip_all, fields(source = %name))]
            async fn delete_source(
                &self,
                name: &$crate::spec::SourceName,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.write.begin().await?;
                // Locked, so that no stream is added to it meanwhile.
                let id: Option<i64> = sqlx::query_scalar(LOCK_SOURCE_SQL)
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(id) = id else {
                    return Ok(false);
                };
                let streams: Vec<i64> =
                    sqlx::query_scalar("SELECT id FROM streams WHERE source_id = $1")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                remove_streams(&mut *tx, &streams).await?;
                sqlx::query("DELETE FROM sources WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
            async fn get_stream(
                &self,
                source: &$crate::spec::SourceName,
                stream: &$crate::spec::StreamName,
            ) -> $crate::store::StoreResult<Option<$crate::store::StreamState>> {
                type Row = (
                    i64,
                    String,
                    Option<String>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<String>,
                );
                let row: Option<Row> = sqlx::query_as(
                    "SELECT st.id, so.spec, st.cursor, st.cursor_updated_at, st.cursor_job \
                     FROM streams st JOIN sources so ON so.id = st.source_id \
                     WHERE so.name = $1 AND st.name = $2",
                )
                .bind(source.as_str())
                .bind(stream.as_str())
                .fetch_optional(&self.read)
                .await?;
                let Some((stream_id, spec, cursor, cursor_updated_at, cursor_job)) = row else {
                    return Ok(None);
                };
                let source_spec = self.sealer.open(&spec)?;
                let Some(stream_spec) = source_spec.streams.get(stream).cloned() else {
                    return Err($crate::store::StoreError::Corrupt(format!(
                        "stream `{stream}` has a row but is not in the spec of `{source}`"
                    )));
                };
                let cursor = match (cursor, cursor_updated_at) {
                    (Some(text), Some(updated_at)) => Some($crate::store::Cursor {
                        value: $crate::store::shared::json("cursor", &text)?,
                        updated_at,
                        job: cursor_job.and_then(|j| j.parse().ok()),
                    }),
                    _ => None,
                };
                let last_job: Option<$crate::store::shared::NamedJobTuple> = sqlx::query_as(concat!(
                    $crate::store::shared::job_select!(),
                    "WHERE j.stream_id = $1 ORDER BY j.created_at DESC LIMIT 1"
                ))
                .bind(stream_id)
                .fetch_optional(&self.read)
                .await?;
                let last_success_at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                    "SELECT finished_at FROM jobs WHERE stream_id = $1 AND status = 'succeeded' \
                     ORDER BY finished_at DESC LIMIT 1",
                )
                .bind(stream_id)
                .fetch_optional(&self.read)
                .await?
                .flatten();
                Ok(Some($crate::store::StreamState {
                    source: source.clone(),
                    base_url: source_spec.base_url.clone(),
                    spec: stream_spec,
                    cursor,
                    last_job: last_job.map($crate::store::shared::named_job).transpose()?,
                    last_success_at,
                }))
            }

            #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
            async fn set_cursor(
                &self,
                source: &$crate::spec::SourceName,
                stream: &$crate::spec::StreamName,
                cursor: Option<&serde_json::Value>,
            ) -> $crate::store::StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
                let text = cursor.map(|c| c.to_string());
                let now = $crate::store::shared::now();
                let done = sqlx::query(
                    "UPDATE streams SET cursor = $3, cursor_updated_at = $4, cursor_job = NULL \
                     WHERE name = $2 AND source_id = (SELECT id FROM sources WHERE name = $1)",
                )
                .bind(source.as_str())
                .bind(stream.as_str())
                .bind(text)
                .bind(now)
                .execute(&self.write)
                .await?;
                Ok((done.rows_affected() > 0).then_some(now))
            }

            #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
            async fn enqueue_job(
                &self,
                source: &$crate::spec::SourceName,
                stream: &$crate::spec::StreamName,
                mode: $crate::spec::job::JobMode,
                trigger: $crate::spec::job::Trigger,
            ) -> $crate::store::StoreResult<Option<$crate::store::Enqueued>> {
                let mut tx = self.write.begin().await?;
                let Some(stream_id) = stream_id(&mut *tx, source, stream).await? else {
                    return Ok(None);
                };
                let created = insert_job(&mut *tx, stream_id, mode, trigger).await?;
                let job = active_job(&mut *tx, stream_id).await?;
                tx.commit().await?;
                Ok(job.map(|job| $crate::store::Enqueued {
                    job,
                    created: created.is_some(),
                }))
            }

            #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
            async fn request_run(
                &self,
                source: &$crate::spec::SourceName,
                stream: &$crate::spec::StreamName,
                trigger: $crate::spec::job::Trigger,
            ) -> $crate::store::StoreResult<Option<$crate::spec::Job>> {
                let mut tx = self.write.begin().await?;
                let Some(stream_id) = stream_id(&mut *tx, source, stream).await? else {
                    return Ok(None);
                };
                insert_job(&mut *tx, stream_id, $crate::spec::job::JobMode::Incremental, trigger)
                    .await?;
                let job = active_job(&mut *tx, stream_id).await?;
                if job.as_ref().is_some_and(|j| j.status == $crate::spec::job::JobStatus::Running) {
                    sqlx::query("UPDATE streams SET rerun = TRUE WHERE id = $1")
                        .bind(stream_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(job)
            }

            #[tracing::instrument(skip_all, fields(job = %id))]
            async fn get_job(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::spec::Job>> {
                let row: Option<$crate::store::shared::NamedJobTuple> = sqlx::query_as(concat!(
                    $crate::store::shared::job_select!(),
                    "WHERE j.id = $1"
                ))
                .bind(id.hyphenated().to_string())
                .fetch_optional(&self.read)
                .await?;
                row.map($crate::store::shared::named_job).transpose()
            }

            #[tracing::instrument(skip_all)]
            async fn list_jobs(
                &self,
                filter: &$crate::store::JobFilter,
                after: Option<uuid::Uuid>,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::spec::Job>> {
                let rows: Vec<$crate::store::shared::NamedJobTuple> = sqlx::query_as(concat!(
                    $crate::store::shared::job_select!(),
                    "WHERE ($1 IS NULL OR so.name = $1) AND ($2 IS NULL OR st.name = $2) \
                     AND ($3 IS NULL OR j.status = $3) \
                     AND ($4 IS NULL OR (j.created_at, j.id) < \
                          (SELECT created_at, id FROM jobs WHERE id = $4)) \
                     ORDER BY j.created_at DESC, j.id DESC LIMIT $5"
                ))
                .bind(filter.source.as_ref().map(|s| s.as_str().to_owned()))
                .bind(filter.stream.as_ref().map(|s| s.as_str().to_owned()))
                .bind(filter.status.as_ref().map($crate::store::shared::text_of))
                .bind(after.map(|a| a.hyphenated().to_string()))
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map($crate::store::shared::named_job).collect()
            }

            #[tracing::instrument(skip_all, fields(job = %id))]
            async fn cancel_job(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<($crate::spec::Job, bool)>> {
                let now = $crate::store::shared::now();
                let done = sqlx::query(
                    "UPDATE jobs SET status = 'cancelled', finished_at = $2, lease_owner = NULL, \
                     lease_expires_at = NULL WHERE id = $1 AND status IN ('queued', 'running')",
                )
                .bind(id.hyphenated().to_string())
                .bind(now)
                .execute(&self.write)
                .await?;
                let row: Option<$crate::store::shared::NamedJobTuple> = sqlx::query_as(concat!(
                    $crate::store::shared::job_select!(),
                    "WHERE j.id = $1"
                ))
                .bind(id.hyphenated().to_string())
                .fetch_optional(&self.write)
                .await?;
                row.map(|r| {
                    $crate::store::shared::named_job(r).map(|j| (j, done.rows_affected() > 0))
                })
                .transpose()
            }

            #[tracing::instrument(skip_all)]
            async fn claim_job(
                &self,
                owner: &str,
                lease: chrono::TimeDelta,
            ) -> $crate::store::StoreResult<Option<$crate::store::Claim>> {
                let mut tx = self.write.begin().await?;
                // Read the clock once the transaction holds the connection, so a job
                // queued meanwhile never looks started before it was created.
                let now = $crate::store::shared::now();
                let claimed: Option<String> = sqlx::query_scalar(CLAIM_SQL)
                    .bind(owner)
                    .bind(now)
                    .bind(now + lease)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(id) = claimed else {
                    return Ok(None);
                };
                let row: $crate::store::shared::NamedJobTuple = sqlx::query_as(concat!(
                    $crate::store::shared::job_select!(),
                    "WHERE j.id = $1"
                ))
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
                type Detail = (
                    i64,
                    String,
                    i64,
                    Option<String>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<String>,
                );
                let (stream_id, spec, source_id, cursor, cursor_updated_at, cursor_job): Detail =
                    sqlx::query_as(
                        "SELECT st.id, so.spec, so.id, st.cursor, st.cursor_updated_at, st.cursor_job \
                         FROM jobs j JOIN streams st ON st.id = j.stream_id \
                         JOIN sources so ON so.id = st.source_id WHERE j.id = $1",
                    )
                    .bind(&id)
                    .fetch_one(&mut *tx)
                    .await?;
                let job = $crate::store::shared::named_job(row)?;
                let source = match self.sealer.open(&spec) {
                    Ok(source) => source,
                    Err(e) => {
                        // Failed rather than left queued: the oldest queued job is claimed
                        // first, so one that cannot start would block every other.
                        tx.commit().await?;
                        let problem = e.problem();
                        let end = $crate::store::JobEnd::Failed(problem);
                        $crate::store::Store::finish_job(self, job.id, owner, &job.stats, end)
                            .await?;
                        return Ok(None);
                    }
                };
                let Some(stream) = source.streams.get(&job.stream).cloned() else {
                    return Err($crate::store::StoreError::Corrupt(format!(
                        "job {id} names stream `{}`, which is not in its source's spec",
                        job.stream
                    )));
                };
                let target_stream_id = match &stream.deletes {
                    Some(target) => sqlx::query_scalar(
                        "SELECT id FROM streams WHERE source_id = $1 AND name = $2",
                    )
                    .bind(source_id)
                    .bind(target.as_str())
                    .fetch_one(&mut *tx)
                    .await?,
                    None => stream_id,
                };
                tx.commit().await?;
                let cursor = match (cursor, cursor_updated_at) {
                    (Some(text), Some(updated_at)) => Some($crate::store::Cursor {
                        value: $crate::store::shared::json("cursor", &text)?,
                        updated_at,
                        job: cursor_job.and_then(|j| j.parse().ok()),
                    }),
                    _ => None,
                };
                Ok(Some($crate::store::Claim {
                    job,
                    stream_id,
                    target_stream_id,
                    source,
                    stream,
                    cursor,
                }))
            }

            #[tracing::instrument(skip_all, fields(job = %job))]
            async fn heartbeat(
                &self,
                job: uuid::Uuid,
                owner: &str,
                lease: chrono::TimeDelta,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE jobs SET lease_expires_at = $3 \
                     WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                )
                .bind(job.hyphenated().to_string())
                .bind(owner)
                .bind($crate::store::shared::now() + lease)
                .execute(&self.write)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            #[tracing::instrument(skip_all, fields(job = %job))]
            async fn release_job(
                &self,
                job: uuid::Uuid,
                owner: &str,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                )
                .bind(job.hyphenated().to_string())
                .bind(owner)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            #[tracing::instrument(skip_all, fields(job = %job))]
            async fn finish_job(
                &self,
                job: uuid::Uuid,
                owner: &str,
                stats: &$crate::spec::job::JobStats,
                end: $crate::store::JobEnd,
            ) -> $crate::store::StoreResult<bool> {
                use $crate::spec::job::{JobMode, JobStatus, Trigger};
                use $crate::store::JobEnd;
                let now = $crate::store::shared::now();
                let mut tx = self.write.begin().await?;
                let running: Option<(i64, bool)> = sqlx::query_as(
                    "SELECT st.id, st.rerun FROM jobs j JOIN streams st ON st.id = j.stream_id \
                     WHERE j.id = $1 AND j.lease_owner = $2 AND j.status = 'running'",
                )
                .bind(job.hyphenated().to_string())
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((stream_id, rerun)) = running else {
                    return Ok(false);
                };
                let (status, error) = match &end {
                    JobEnd::Succeeded => (JobStatus::Succeeded, None),
                    JobEnd::Failed(problem) => (JobStatus::Failed, Some(problem.clone())),
                    JobEnd::Resync(problem) => (JobStatus::Failed, Some(problem.clone())),
                };
                sqlx::query(
                    "UPDATE jobs SET status = $2, finished_at = $3, stats = $4, error = $5, \
                     lease_owner = NULL, lease_expires_at = NULL WHERE id = $1",
                )
                .bind(job.hyphenated().to_string())
                .bind($crate::store::shared::text_of(&status))
                .bind(now)
                .bind($crate::store::shared::stats_text(stats))
                .bind(error.map(|e| serde_json::to_string(&e).unwrap_or_default()))
                .execute(&mut *tx)
                .await?;
                match end {
                    JobEnd::Succeeded => {
                        sqlx::query("UPDATE streams SET failures = 0, rerun = FALSE WHERE id = $1")
                            .bind(stream_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    JobEnd::Failed(_) => {
                        sqlx::query(
                            "UPDATE streams SET failures = failures + 1, rerun = FALSE WHERE id = $1",
                        )
                        .bind(stream_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    JobEnd::Resync(_) => {
                        sqlx::query(
                            "UPDATE streams SET cursor = NULL, cursor_updated_at = $2, \
                             cursor_job = $3, rerun = FALSE WHERE id = $1",
                        )
                        .bind(stream_id)
                        .bind(now)
                        .bind(job.hyphenated().to_string())
                        .execute(&mut *tx)
                        .await?;
                        insert_job(&mut *tx, stream_id, JobMode::Full, Trigger::Resync).await?;
                    }
                }
                if rerun && !matches!(end, JobEnd::Resync(_)) {
                    insert_job(&mut *tx, stream_id, JobMode::Incremental, Trigger::Webhook).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            #[tracing::instrument(skip_all, fields(job = %page.job, records = page.records.len()))]
            async fn commit_page(
                &self,
                page: $crate::store::PageCommit<'_>,
            ) -> $crate::store::StoreResult<Option<$crate::store::PageOutcome>> {
                let now = $crate::store::shared::now();
                let job_id = page.job.hyphenated().to_string();
                let mut tx = self.write.begin().await?;
                // Fencing first: a cancelled job, or one whose lease another worker took
                // over, writes nothing.
                let ours = sqlx::query(
                    "UPDATE jobs SET lease_expires_at = $3 \
                     WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                )
                .bind(&job_id)
                .bind(page.owner)
                .bind(now + page.lease)
                .execute(&mut *tx)
                .await?;
                if ours.rows_affected() == 0 {
                    return Ok(None);
                }
                let mut existing = std::collections::HashMap::with_capacity(page.records.len());
                if !page.records.is_empty() {
                    let rows: Vec<(String, Option<Vec<u8>>, i64)> = sqlx::query_as(EXISTING_SQL)
                        .bind(page.target_stream_id)
                        .bind(key_list(page.records))
                        .fetch_all(&mut *tx)
                        .await?;
                    existing.extend(rows.into_iter().map(|(k, h, r)| (k, (h, r))));
                }
                let plan = $crate::store::shared::PagePlan::new(page.records, &existing);
                let mut last_seq = None;
                if !plan.changes.is_empty() {
                    // Positions are taken as late as possible and the counter row stays
                    // locked until commit, so readers only ever see a dense prefix.
                    let n = i64::try_from(plan.changes.len()).unwrap_or(i64::MAX);
                    let last: i64 = sqlx::query_scalar(
                        "UPDATE feed_head SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq",
                    )
                    .bind(n)
                    .fetch_one(&mut *tx)
                    .await?;
                    write_changes(&mut *tx, page.target_stream_id, last - n + 1, &plan.changes, now)
                        .await?;
                    self.announce(&mut *tx, page.target_stream_id, last).await?;
                    last_seq = Some(last);
                }
                let cursor = match page.cursor {
                    $crate::spec::cursor::CursorWrite::Keep => None,
                    $crate::spec::cursor::CursorWrite::Set(value) => Some(Some(value.to_string())),
                    $crate::spec::cursor::CursorWrite::Clear => Some(None),
                };
                if let Some(text) = cursor {
                    sqlx::query(
                        "UPDATE streams SET cursor = $2, cursor_updated_at = $3, cursor_job = $4 \
                         WHERE id = $1",
                    )
                    .bind(page.cursor_stream_id)
                    .bind(text)
                    .bind(now)
                    .bind(&job_id)
                    .execute(&mut *tx)
                    .await?;
                }
                let mut stats = page.stats.clone();
                plan.outcome.add_to(&mut stats);
                sqlx::query("UPDATE jobs SET stats = $2 WHERE id = $1")
                    .bind(&job_id)
                    .bind($crate::store::shared::stats_text(&stats))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                if let Some(last) = last_seq {
                    self.notifier.committed(page.target_stream_id, last);
                }
                Ok(Some(plan.outcome))
            }

            #[tracing::instrument(skip_all, fields(stream_id))]
            async fn live_keys(
                &self,
                stream_id: i64,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(
                    "SELECT key FROM records WHERE stream_id = $1 AND body IS NOT NULL \
                     AND key > $2 ORDER BY key LIMIT $3",
                )
                .bind(stream_id)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?)
            }

            #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
            async fn list_records(
                &self,
                source: &$crate::spec::SourceName,
                stream: &$crate::spec::StreamName,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::store::StoreResult<Option<Vec<$crate::store::StoredRecord>>> {
                let mut conn = self.read.acquire().await?;
                let Some(stream_id) = stream_id(&mut *conn, source, stream).await? else {
                    return Ok(None);
                };
                let rows: Vec<(String, i64, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT key, rev, body, synced_at FROM records WHERE stream_id = $1 \
                     AND body IS NOT NULL AND key > $2 ORDER BY key LIMIT $3",
                )
                .bind(stream_id)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await?;
                Ok(Some(
                    rows.into_iter()
                        .map(|(key, rev, body, synced_at)| $crate::store::StoredRecord {
                            key,
                            rev,
                            body,
                            synced_at,
                        })
                        .collect(),
                ))
            }

            #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
            async fn get_record(
                &self,
                source: &$crate::spec::SourceName,
                stream: &$crate::spec::StreamName,
                key: &str,
            ) -> $crate::store::StoreResult<Option<Option<$crate::store::StoredRecord>>> {
                let mut conn = self.read.acquire().await?;
                let Some(stream_id) = stream_id(&mut *conn, source, stream).await? else {
                    return Ok(None);
                };
                let row: Option<(i64, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT rev, body, synced_at FROM records WHERE stream_id = $1 AND key = $2 \
                     AND body IS NOT NULL",
                )
                .bind(stream_id)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
                Ok(Some(row.map(|(rev, body, synced_at)| $crate::store::StoredRecord {
                    key: key.to_owned(),
                    rev,
                    body,
                    synced_at,
                })))
            }

            #[tracing::instrument(skip_all)]
            async fn scheduled_streams(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Scheduled>> {
                type Row = (i64, String, String, Option<chrono::DateTime<chrono::Utc>>, i32);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT st.id, st.name, so.spec, st.scheduled_at, st.failures \
                     FROM streams st JOIN sources so ON so.id = st.source_id \
                     WHERE so.spec LIKE '%\"schedule\"%'",
                )
                .fetch_all(&self.read)
                .await?;
                let mut specs = std::collections::HashMap::new();
                let mut scheduled = Vec::new();
                for (stream_id, name, spec, scheduled_at, failures) in rows {
                    let source = match specs.get(&spec) {
                        Some(source) => source,
                        None => {
                            let parsed = self.sealer.open_streams(&spec)?;
                            specs.entry(spec.clone()).or_insert(parsed)
                        }
                    };
                    let schedule = source
                        .streams
                        .iter()
                        .find(|s| s.name.as_str() == name)
                        .and_then(|s| s.schedule.clone());
                    if let Some(schedule) = schedule {
                        scheduled.push($crate::store::Scheduled {
                            stream_id,
                            schedule,
                            scheduled_at,
                            failures: u32::try_from(failures).unwrap_or_default(),
                        });
                    }
                }
                Ok(scheduled)
            }

            #[tracing::instrument(skip_all, fields(stream_id))]
            async fn enqueue_scheduled(
                &self,
                stream_id: i64,
                previous: Option<chrono::DateTime<chrono::Utc>>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::store::StoreResult<bool> {
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
                    return Ok(false);
                }
                insert_job(
                    &mut *tx,
                    stream_id,
                    $crate::spec::job::JobMode::Incremental,
                    $crate::spec::job::Trigger::Schedule,
                )
                .await?;
                tx.commit().await?;
                Ok(true)
            }
        }

        /// The feed position of streams created now: the head, moved on by one so that no
        /// feed token issued before (for a removed stream of the same name) reaches it.
        async fn new_streams_seq(conn: &mut $conn) -> $crate::store::StoreResult<i64> {
            Ok(sqlx::query_scalar(
                "UPDATE feed_head SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq",
            )
            .fetch_one(conn)
            .await?)
        }

        /// Removes streams with their jobs, then their records (on PostgreSQL the mirror
        /// has no foreign key to cascade along; on SQLite the cascade finds nothing left).
        /// Jobs go first: deleting a job row waits for a page commit of that job in flight
        /// (it holds the row), and a later one finds no job and writes nothing, so each
        /// records `DELETE`, a statement of its own that sees every page committed before
        /// it started, leaves nothing behind. A deletions stream writing into a removed
        /// stream only updates rows its lookup locked, which the `DELETE` waits for.
        async fn remove_streams(conn: &mut $conn, ids: &[i64]) -> $crate::store::StoreResult<()> {
            for id in ids {
                sqlx::query("DELETE FROM streams WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            for id in ids {
                sqlx::query("DELETE FROM records WHERE stream_id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }

        /// The id of a stream, by names.
        async fn stream_id(
            conn: &mut $conn,
            source: &$crate::spec::SourceName,
            stream: &$crate::spec::StreamName,
        ) -> $crate::store::StoreResult<Option<i64>> {
            Ok(sqlx::query_scalar(
                "SELECT st.id FROM streams st JOIN sources so ON so.id = st.source_id \
                 WHERE so.name = $1 AND st.name = $2",
            )
            .bind(source.as_str())
            .bind(stream.as_str())
            .fetch_optional(conn)
            .await?)
        }

        /// Queues a job unless the stream has an active one; the new job's id, if any.
        async fn insert_job(
            conn: &mut $conn,
            stream_id: i64,
            mode: $crate::spec::job::JobMode,
            trigger: $crate::spec::job::Trigger,
        ) -> $crate::store::StoreResult<Option<String>> {
            Ok(sqlx::query_scalar(
                "INSERT INTO jobs (id, stream_id, mode, status, trigger, attempts, created_at, stats) \
                 VALUES ($1, $2, $3, 'queued', $4, 0, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(uuid::Uuid::new_v4().hyphenated().to_string())
            .bind(stream_id)
            .bind($crate::store::shared::text_of(&mode))
            .bind($crate::store::shared::text_of(&trigger))
            .bind($crate::store::shared::now())
            .bind($crate::store::shared::stats_text(&Default::default()))
            .fetch_optional(conn)
            .await?)
        }

        /// The queued or running job of a stream.
        async fn active_job(
            conn: &mut $conn,
            stream_id: i64,
        ) -> $crate::store::StoreResult<Option<$crate::spec::Job>> {
            let row: Option<$crate::store::shared::NamedJobTuple> = sqlx::query_as(concat!(
                $crate::store::shared::job_select!(),
                "WHERE j.stream_id = $1 AND j.status IN ('queued', 'running')"
            ))
            .bind(stream_id)
            .fetch_optional(conn)
            .await?;
            row.map($crate::store::shared::named_job).transpose()
        }
    };
}
pub(super) use impl_store;
