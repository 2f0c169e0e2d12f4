//! Sources, their streams and the streams' cursors.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{ColumnIndex, Encode, Executor, Type};

use super::backend::{
    Backend, Conn, Db, Row, RowsAffected, Scalar, SqlStore, json, now, on_unique,
};
use super::queue::{JobRow, LATEST_JOB_SQL};
use super::{Cursor, NewSource, Sealer, StoreError, StoreResult, StoredSource, StreamState};
use crate::spec::{SourceName, SourceSpec, StreamName};

/// A source as its row holds it.
#[derive(sqlx::FromRow)]
struct SourceRow {
    spec: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SourceRow {
    /// The stored source, its secrets decrypted.
    fn open(self, sealer: &Sealer) -> StoreResult<StoredSource> {
        Ok(StoredSource {
            spec: sealer.open(&self.spec)?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A stream row as replacing its source compares it with the new spec.
#[derive(sqlx::FromRow)]
pub(super) struct StreamRow {
    id: i64,
    name: String,
    strategy: String,
}

/// A stream's cursor columns.
#[derive(sqlx::FromRow)]
pub(super) struct CursorRow {
    cursor: Option<String>,
    cursor_updated_at: Option<DateTime<Utc>>,
    cursor_job: Option<String>,
}

impl CursorRow {
    /// The stored cursor; `None` when the stream has none.
    pub(super) fn parse(self) -> StoreResult<Option<Cursor>> {
        match (self.cursor, self.cursor_updated_at) {
            (Some(text), Some(updated_at)) => Ok(Some(Cursor {
                value: json("cursor", &text)?,
                updated_at,
                job: self.cursor_job.and_then(|j| j.parse().ok()),
            })),
            _ => Ok(None),
        }
    }
}

/// A stream with its source's spec and its cursor.
#[derive(sqlx::FromRow)]
struct StreamStateRow {
    id: i64,
    spec: String,
    #[sqlx(flatten)]
    cursor: CursorRow,
}

/// What replacing a source does to its existing stream rows.
struct StreamPlan {
    /// Streams of the old spec missing from the new one: removed with their data.
    remove: Vec<i64>,
    /// Streams whose pagination type changed: their cursor no longer means anything.
    reset: Vec<(i64, &'static str)>,
    /// Streams new in the spec: name and pagination type.
    insert: Vec<(String, &'static str)>,
}

impl StreamPlan {
    fn new(existing: Vec<StreamRow>, spec: &SourceSpec) -> Self {
        let mut old: HashMap<String, (i64, String)> = existing
            .into_iter()
            .map(|row| (row.name, (row.id, row.strategy)))
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

const INSERT_STREAM_SQL: &str = "INSERT INTO streams (source_id, name, strategy, created_seq) \
     VALUES ($1, $2, $3, $4)";

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
    #[tracing::instrument(skip_all, fields(source = %source.spec.name))]
    pub(super) async fn create_source(&self, source: NewSource<'_>) -> StoreResult<StoredSource> {
        let stored = self.sealer.seal(source.spec, source.raw)?;
        let now = now();
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
            on_unique(e, || {
                format!("a source named `{}` already exists", source.spec.name)
            })
        })?;
        let created_seq = Self::new_streams_seq(&mut *tx).await?;
        for stream in source.spec.streams.iter() {
            sqlx::query(INSERT_STREAM_SQL)
                .bind(id)
                .bind(stream.name.as_str())
                .bind(stream.pagination.kind())
                .bind(created_seq)
                .execute(&mut *tx)
                .await?;
        }
        Self::link_parents(&mut *tx, id, source.spec).await?;
        tx.commit().await?;
        Ok(StoredSource {
            spec: source.spec.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    #[tracing::instrument(skip_all, fields(source = %source.spec.name))]
    pub(super) async fn replace_source(
        &self,
        source: NewSource<'_>,
    ) -> StoreResult<Option<StoredSource>> {
        let stored = self.sealer.seal(source.spec, source.raw)?;
        let now = now();
        let mut tx = self.write.begin().await?;
        let row: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
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
        let existing: Vec<StreamRow> =
            sqlx::query_as("SELECT id, name, strategy FROM streams WHERE source_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        let plan = StreamPlan::new(existing, source.spec);
        Self::remove_streams(&mut *tx, &plan.remove).await?;
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
            let created_seq = Self::new_streams_seq(&mut *tx).await?;
            for (name, strategy) in plan.insert {
                sqlx::query(INSERT_STREAM_SQL)
                    .bind(id)
                    .bind(name)
                    .bind(strategy)
                    .bind(created_seq)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Self::link_parents(&mut *tx, id, source.spec).await?;
        tx.commit().await?;
        Ok(Some(StoredSource {
            spec: source.spec.clone(),
            created_at,
            updated_at: now,
        }))
    }

    #[tracing::instrument(skip_all, fields(source = %name))]
    pub(super) async fn get_source(&self, name: &SourceName) -> StoreResult<Option<StoredSource>> {
        let row: Option<SourceRow> =
            sqlx::query_as("SELECT spec, created_at, updated_at FROM sources WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.read)
                .await?;
        row.map(|row| row.open(&self.sealer)).transpose()
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn list_sources(
        &self,
        after: Option<&SourceName>,
        limit: u32,
    ) -> StoreResult<Vec<StoredSource>> {
        let rows: Vec<SourceRow> = sqlx::query_as(
            "SELECT spec, created_at, updated_at FROM sources \
             WHERE name > $1 ORDER BY name LIMIT $2",
        )
        .bind(after.map(|a| a.as_str()).unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(|row| row.open(&self.sealer)).collect()
    }

    #[tracing::instrument(skip_all, fields(source = %name))]
    pub(super) async fn delete_source(&self, name: &SourceName) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        // Locked, so that no stream is added to it meanwhile.
        let id: Option<i64> = sqlx::query_scalar(B::LOCK_SOURCE_SQL)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        let streams: Vec<i64> = sqlx::query_scalar("SELECT id FROM streams WHERE source_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        Self::remove_streams(&mut *tx, &streams).await?;
        sqlx::query("DELETE FROM sources WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
    pub(super) async fn get_stream(
        &self,
        source: &SourceName,
        stream: &StreamName,
    ) -> StoreResult<Option<StreamState>> {
        let row: Option<StreamStateRow> = sqlx::query_as(
            "SELECT st.id, so.spec, st.cursor, st.cursor_updated_at, st.cursor_job \
             FROM streams st JOIN sources so ON so.id = st.source_id \
             WHERE so.name = $1 AND st.name = $2",
        )
        .bind(source.as_str())
        .bind(stream.as_str())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let source_spec = self.sealer.open(&row.spec)?;
        let Some(stream_spec) = source_spec.streams.get(stream).cloned() else {
            return Err(StoreError::Corrupt(format!(
                "stream `{stream}` has a row but is not in the spec of `{source}`"
            )));
        };
        let cursor = row.cursor.parse()?;
        let last_job: Option<JobRow> = sqlx::query_as(LATEST_JOB_SQL)
            .bind(row.id)
            .fetch_optional(&self.read)
            .await?;
        let last_success_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT finished_at FROM jobs WHERE stream_id = $1 AND status = 'succeeded' \
             ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(row.id)
        .fetch_optional(&self.read)
        .await?
        .flatten();
        Ok(Some(StreamState {
            source: source.clone(),
            base_url: source_spec.base_url.clone(),
            spec: stream_spec,
            cursor,
            last_job: last_job.map(JobRow::into_job).transpose()?,
            last_success_at,
        }))
    }

    #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
    pub(super) async fn set_cursor(
        &self,
        source: &SourceName,
        stream: &StreamName,
        cursor: Option<&Value>,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let text = cursor.map(|c| c.to_string());
        let now = now();
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

    /// The feed position of streams created now: the head, moved on by one so that no
    /// feed token issued before (for a removed stream of the same name) reaches it.
    async fn new_streams_seq(conn: &mut Conn<B>) -> StoreResult<i64> {
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
    async fn remove_streams(conn: &mut Conn<B>, ids: &[i64]) -> StoreResult<()> {
        for id in ids {
            // A running reconcile's seen keys (they have no foreign key to cascade along).
            sqlx::query(
                "DELETE FROM reconcile_seen WHERE job_id IN \
                 (SELECT id FROM jobs WHERE stream_id = $1)",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
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
    pub(super) async fn stream_id(
        conn: &mut Conn<B>,
        source: &SourceName,
        stream: &StreamName,
    ) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT st.id FROM streams st JOIN sources so ON so.id = st.source_id \
             WHERE so.name = $1 AND st.name = $2",
        )
        .bind(source.as_str())
        .bind(stream.as_str())
        .fetch_optional(conn)
        .await?)
    }
}
