//! Named feed consumers (docs/design.md §5): where each one last read the feed from, and
//! how many changes lie after that position. The feed decides what is recorded; this is
//! only its table and the bounded count the lag is made of.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};

use super::StoreResult;
use super::backend::{Backend, Conn, Db, Row, RowsAffected, Scalar, SqlStore, join};
use crate::spec::change::StreamRef;

/// One feed request of a named consumer, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsumerRead {
    pub name: String,
    /// The normalized `stream` filter; empty for the whole feed.
    pub scope: String,
    /// The `since` token it came with; `None` for the beginning.
    pub since: Option<String>,
    /// The feed position of `since`.
    pub position: i64,
    pub read_at: DateTime<Utc>,
}

/// A consumer as stored: its latest read, and when it was first seen.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredConsumer {
    #[sqlx(flatten)]
    pub last: ConsumerRead,
    pub first_read_at: DateTime<Utc>,
}

const COLUMNS: &str = "SELECT name, scope, since, position, first_read_at, read_at FROM consumers ";

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
    /// One upsert per read, all in one transaction; a read older than the one stored for
    /// its consumer (another instance recorded a later request) changes nothing.
    #[tracing::instrument(skip_all, fields(reads = reads.len()))]
    pub(super) async fn record_consumers(&self, reads: &[ConsumerRead]) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        for read in reads {
            sqlx::query(
                "INSERT INTO consumers (name, scope, since, position, first_read_at, read_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (name) DO UPDATE SET scope = excluded.scope, \
                 since = excluded.since, position = excluded.position, \
                 read_at = excluded.read_at \
                 WHERE consumers.read_at <= excluded.read_at",
            )
            .bind(read.name.as_str())
            .bind(read.scope.as_str())
            .bind(read.since.clone())
            .bind(read.position)
            .bind(read.read_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn list_consumers(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredConsumer>> {
        const SQL: &str = join(&[COLUMNS, "WHERE name > $1 ORDER BY name LIMIT $2"]).as_str();
        Ok(sqlx::query_as(SQL)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?)
    }

    #[tracing::instrument(skip_all, fields(consumer = name))]
    pub(super) async fn get_consumer(&self, name: &str) -> StoreResult<Option<StoredConsumer>> {
        const SQL: &str = join(&[COLUMNS, "WHERE name = $1"]).as_str();
        Ok(sqlx::query_as(SQL)
            .bind(name)
            .fetch_optional(&self.read)
            .await?)
    }

    #[tracing::instrument(skip_all, fields(consumer = name))]
    pub(super) async fn delete_consumer(&self, name: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM consumers WHERE name = $1")
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Changes of `streams` (empty: of every stream) after `after`, counted up to `cap`:
    /// an index range scan of at most `cap` entries per stream, however far behind. A
    /// stream that no longer exists has none.
    #[tracing::instrument(skip_all, fields(after, cap))]
    pub(super) async fn count_changes(
        &self,
        streams: &[StreamRef],
        after: i64,
        cap: u64,
    ) -> StoreResult<u64> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let mut conn = self.read.acquire().await?;
        if streams.is_empty() {
            let behind: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE seq > $1 \
                 ORDER BY seq LIMIT $2) behind",
            )
            .bind(after)
            .bind(cap)
            .fetch_one(&mut *conn)
            .await?;
            return Ok(u64::try_from(behind).unwrap_or_default());
        }
        let mut total = 0;
        for stream in streams {
            if total >= cap {
                break;
            }
            let Some(id) = Self::stream_id(&mut *conn, &stream.source, &stream.stream).await?
            else {
                continue;
            };
            let behind: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE stream_id = $1 \
                 AND seq > $2 ORDER BY seq LIMIT $3) behind",
            )
            .bind(id)
            .bind(after)
            .bind(cap - total)
            .fetch_one(&mut *conn)
            .await?;
            total += behind;
        }
        Ok(u64::try_from(total).unwrap_or_default())
    }
}
