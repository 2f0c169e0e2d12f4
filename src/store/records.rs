//! Reads of the mirror: a stream's live records, and its live keys as a reconcile sweeps
//! them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};
use uuid::Uuid;

use super::backend::{Backend, Conn, Db, Row, Scalar, SqlStore};
use super::{StoreResult, StoredRecord, SweepBatch};
use crate::spec::{SourceName, StreamName};

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
    /// Two range reads of one key range, each bounded by `limit` and ordered by a
    /// primary key whatever the planner knows: the mirror's next live keys, then the
    /// job's seen keys among them. (One query with `EXISTS` on the seen table let
    /// PostgreSQL hash the whole table once per batch: quadratic in the listing.)
    #[tracing::instrument(skip_all, fields(stream_id, job = %job))]
    pub(super) async fn sweep_batch(
        &self,
        stream_id: i64,
        job: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<SweepBatch> {
        let after = after.unwrap_or("");
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM records WHERE stream_id = $1 AND body IS NOT NULL \
             AND key > $2 ORDER BY key LIMIT $3",
        )
        .bind(stream_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let Some(last) = keys.last().cloned() else {
            return Ok(SweepBatch::default());
        };
        let seen: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM reconcile_seen WHERE job_id = $1 AND key > $2 AND key <= $3 \
             ORDER BY key",
        )
        .bind(job.hyphenated().to_string())
        .bind(after)
        .bind(&last)
        .fetch_all(&self.read)
        .await?;
        let seen: HashSet<String> = seen.into_iter().collect();
        let unseen = keys.into_iter().filter(|k| !seen.contains(k)).collect();
        Ok(SweepBatch {
            unseen,
            last: Some(last),
        })
    }

    #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
    pub(super) async fn list_records(
        &self,
        source: &SourceName,
        stream: &StreamName,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Option<Vec<StoredRecord>>> {
        let mut conn = self.read.acquire().await?;
        let Some(stream_id) = Self::stream_id(&mut *conn, source, stream).await? else {
            return Ok(None);
        };
        let rows: Vec<(String, i64, String, DateTime<Utc>)> = sqlx::query_as(
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
                .map(|(key, rev, body, synced_at)| StoredRecord {
                    key,
                    rev,
                    body,
                    synced_at,
                })
                .collect(),
        ))
    }

    #[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
    pub(super) async fn get_record(
        &self,
        source: &SourceName,
        stream: &StreamName,
        key: &str,
    ) -> StoreResult<Option<Option<StoredRecord>>> {
        let mut conn = self.read.acquire().await?;
        let Some(stream_id) = Self::stream_id(&mut *conn, source, stream).await? else {
            return Ok(None);
        };
        let row: Option<(i64, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT rev, body, synced_at FROM records WHERE stream_id = $1 AND key = $2 \
             AND body IS NOT NULL",
        )
        .bind(stream_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(Some(row.map(|(rev, body, synced_at)| StoredRecord {
            key: key.to_owned(),
            rev,
            body,
            synced_at,
        })))
    }
}
