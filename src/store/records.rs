//! Reads of the mirror: a stream's live records, and its live keys as a reconcile sweeps
//! them.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};
use uuid::Uuid;

use super::backend::{Backend, Conn, Db, Row, Scalar, SqlStore};
use super::{StoreResult, StoredRecord, SweepBatch};
use crate::spec::{SourceName, StreamName};

/// A live key of the mirror, and whether the sweeping reconcile has seen it.
#[derive(sqlx::FromRow)]
struct SweptKey {
    key: String,
    seen: bool,
}

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
    #[tracing::instrument(skip_all, fields(stream_id, job = %job))]
    pub(super) async fn sweep_batch(
        &self,
        stream_id: i64,
        job: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<SweepBatch> {
        let rows: Vec<SweptKey> = sqlx::query_as(
            "SELECT b.key, EXISTS (SELECT 1 FROM reconcile_seen s \
                 WHERE s.job_id = $2 AND s.key = b.key) AS seen \
             FROM (SELECT key FROM records WHERE stream_id = $1 AND body IS NOT NULL \
                   AND key > $3 ORDER BY key LIMIT $4) b ORDER BY b.key",
        )
        .bind(stream_id)
        .bind(job.hyphenated().to_string())
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let last = rows.last().map(|r| r.key.clone());
        let unseen = rows
            .into_iter()
            .filter(|r| !r.seen)
            .map(|r| r.key)
            .collect();
        Ok(SweepBatch { unseen, last })
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
