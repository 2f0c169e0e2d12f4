//! SQL the two databases share. sqlx's SQLite driver takes `$n` placeholders, and the
//! schemas agree on column names and on the Rust types rows decode to, so the queries
//! below are written once and instantiated for each backend by [`impl_store!`].
//! (`sqlx::Any` is no help here: it cannot bind timestamps.)

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{StoreError, StoreResult, StoredSource};
use crate::error::Problem;
use crate::spec::de::parse;
use crate::spec::job::JobStats;
use crate::spec::{Job, SourceSpec};

/// The current time at the precision both databases keep (microseconds), so a value
/// returned on write equals the value read back later.
pub(super) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Parses a stored source spec.
pub(super) fn parse_spec(spec: &str) -> StoreResult<SourceSpec> {
    parse(spec.as_bytes()).map_err(|e| StoreError::Corrupt(format!("stored source spec: {e:?}")))
}

/// A stored source from its row.
pub(super) fn source_from_parts(
    spec: &str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> StoreResult<StoredSource> {
    Ok(StoredSource {
        spec: parse_spec(spec)?,
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

/// The fields of a job row, decoded.
pub(super) struct JobRow {
    pub id: String,
    pub mode: String,
    pub status: String,
    pub trigger: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub stats: String,
    pub error: Option<String>,
}

impl JobRow {
    pub(super) fn into_job(self, source: &str, stream: &str) -> StoreResult<Job> {
        Ok(Job {
            id: self
                .id
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("stored job id: {e}")))?,
            source: label(source)?,
            stream: label(stream)?,
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
        })
    }
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

/// Writes the shared [`Store`](super::Store) implementation for one backend.
/// `$store` has fields `read` and `write` (pools; the same pool on PostgreSQL) and
/// `$migrator` is that backend's embedded migrator.
macro_rules! impl_store {
    ($store:ty, $migrator:expr) => {
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
                let now = $crate::store::shared::now();
                let mut tx = self.write.begin().await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO sources (name, spec, created_at, updated_at) \
                     VALUES ($1, $2, $3, $3) RETURNING id",
                )
                .bind(source.spec.name.as_str())
                .bind(source.raw)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::store::shared::on_unique(e, || {
                        format!("a source named `{}` already exists", source.spec.name)
                    })
                })?;
                for stream in source.spec.streams.iter() {
                    sqlx::query("INSERT INTO streams (source_id, name, strategy) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(stream.name.as_str())
                        .bind(stream.pagination.kind())
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
                let now = $crate::store::shared::now();
                let mut tx = self.write.begin().await?;
                let row: Option<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "UPDATE sources SET spec = $2, updated_at = $3 WHERE name = $1 \
                     RETURNING id, created_at",
                )
                .bind(source.spec.name.as_str())
                .bind(source.raw)
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
                for stream_id in plan.remove {
                    sqlx::query("DELETE FROM streams WHERE id = $1")
                        .bind(stream_id)
                        .execute(&mut *tx)
                        .await?;
                }
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
                for (name, strategy) in plan.insert {
                    sqlx::query("INSERT INTO streams (source_id, name, strategy) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(name)
                        .bind(strategy)
                        .execute(&mut *tx)
                        .await?;
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
                    $crate::store::shared::source_from_parts(&spec, created, updated)
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
                        $crate::store::shared::source_from_parts(&spec, created, updated)
                    })
                    .collect()
            }

            #[tracing::instrument(skip_all, fields(source = %name))]
            async fn delete_source(
                &self,
                name: &$crate::spec::SourceName,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query("DELETE FROM sources WHERE name = $1")
                    .bind(name.as_str())
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected() > 0)
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
                let source_spec = $crate::store::shared::parse_spec(&spec)?;
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
                let last_job: Option<$crate::store::shared::JobRow> = sqlx::query_as(
                    "SELECT id, mode, status, trigger, attempts, created_at, started_at, \
                     finished_at, stats, error FROM jobs WHERE stream_id = $1 \
                     ORDER BY created_at DESC LIMIT 1",
                )
                .bind(stream_id)
                .fetch_optional(&self.read)
                .await?
                .map(|row: $crate::store::shared::JobTuple| row.into());
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
                    last_job: last_job
                        .map(|j| j.into_job(source.as_str(), stream.as_str()))
                        .transpose()?,
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
        }
    };
}
pub(super) use impl_store;

/// A job row as `query_as` decodes it.
pub(super) type JobTuple = (
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
);

impl From<JobTuple> for JobRow {
    fn from(t: JobTuple) -> Self {
        JobRow {
            id: t.0,
            mode: t.1,
            status: t.2,
            trigger: t.3,
            attempts: t.4,
            created_at: t.5,
            started_at: t.6,
            finished_at: t.7,
            stats: t.8,
            error: t.9,
        }
    }
}
