//! Child streams (docs/design.md §3, "Child stream"): which stream is whose parent, the
//! durable queue of parents whose children have to be read again (written by the parent's
//! page transaction), and which children of each parent the child's mirror holds
//! (written by the child's page transactions, which consume the queue's rows).

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};
use uuid::Uuid;

use super::backend::{
    Backend, Conn, Db, Row, RowsAffected, Scalar, SqlStore, now, stats_text, text_of,
};
use super::{ChildWrite, PageRecord, QueuedParent, StoreResult, WaitingChild};
use crate::spec::SourceSpec;
use crate::spec::job::{JobMode, Trigger};

/// Queues, for child stream `$1`, the keys of parent stream `$2` whose changes took the
/// feed positions `$3..=$4` (this transaction's), at time `$5`. A key queued before moves
/// on to its newest change.
const ENQUEUE_SQL: &str = "INSERT INTO child_queue (stream_id, parent_key, seq, deleted, enqueued_at) \
     SELECT $1, r.key, r.seq, r.body IS NULL, $5 FROM records r \
     WHERE r.stream_id = $2 AND r.seq >= $3 AND r.seq <= $4 \
     ON CONFLICT (stream_id, parent_key) DO UPDATE SET seq = excluded.seq, \
     deleted = excluded.deleted, enqueued_at = excluded.enqueued_at";

/// A queued parent as the child's job reads it.
#[derive(sqlx::FromRow)]
struct QueueRow {
    parent_key: String,
    seq: i64,
    deleted: bool,
}

/// A child stream with queued parents and no job, as the scheduler's backstop reads it.
#[derive(sqlx::FromRow)]
struct WaitingRow {
    id: i64,
    failures: i32,
    finished_at: Option<DateTime<Utc>>,
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
    /// Sets every stream's parent from the spec of source `source_id` (in the transaction
    /// that stores it). A stream whose parent changed forgets its queue: the keys it holds
    /// are another stream's.
    pub(super) async fn link_parents(
        conn: &mut Conn<B>,
        source_id: i64,
        spec: &SourceSpec,
    ) -> StoreResult<()> {
        for stream in spec.streams.iter() {
            let parent = stream.parent.as_ref().map(|p| p.stream.to_string());
            let changed = sqlx::query(
                "UPDATE streams SET parent_id = \
                 (SELECT p.id FROM streams p WHERE p.source_id = $1 AND p.name = $3) \
                 WHERE source_id = $1 AND name = $2 AND parent_id IS DISTINCT FROM \
                 (SELECT p.id FROM streams p WHERE p.source_id = $1 AND p.name = $3)",
            )
            .bind(source_id)
            .bind(stream.name.as_str())
            .bind(parent)
            .execute(&mut *conn)
            .await?;
            if changed.rows_affected() > 0 {
                sqlx::query(
                    "DELETE FROM child_queue WHERE stream_id = \
                     (SELECT id FROM streams WHERE source_id = $1 AND name = $2)",
                )
                .bind(source_id)
                .bind(stream.name.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    /// In a page transaction of stream `stream_id` (one with child streams) whose changes
    /// took the feed positions `first..=last`: queues the changed keys for each child
    /// stream of it, and a child job where the child has none queued or running.
    pub(super) async fn queue_children(
        conn: &mut Conn<B>,
        stream_id: i64,
        first: i64,
        last: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let children: Vec<i64> = sqlx::query_scalar("SELECT id FROM streams WHERE parent_id = $1")
            .bind(stream_id)
            .fetch_all(&mut *conn)
            .await?;
        for child in children {
            sqlx::query(ENQUEUE_SQL)
                .bind(child)
                .bind(stream_id)
                .bind(first)
                .bind(last)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            // Looked for first, without a lock: an insert meeting the child's running job
            // would wait for that job's page transaction, which waits for this one's feed
            // head. A job that ends meanwhile leaves the rows to the scheduler.
            let active: Option<i64> = sqlx::query_scalar(
                "SELECT stream_id FROM jobs WHERE stream_id = $1 \
                 AND status IN ('queued', 'running')",
            )
            .bind(child)
            .fetch_optional(&mut *conn)
            .await?;
            if active.is_none() {
                Self::insert_child_job(&mut *conn, child, now).await?;
            }
        }
        Ok(())
    }

    /// Queues an incremental job of child stream `child` unless it has a queued or
    /// running one.
    async fn insert_child_job(
        conn: &mut Conn<B>,
        child: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, stream_id, mode, status, trigger, attempts, created_at, stats) \
             VALUES ($1, $2, $3, 'queued', $4, 0, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::new_v4().hyphenated().to_string())
        .bind(child)
        .bind(text_of(&JobMode::Incremental))
        .bind(text_of(&Trigger::Parent))
        .bind(now)
        .bind(stats_text(&Default::default()))
        .execute(conn)
        .await?;
        Ok(inserted.rows_affected() > 0)
    }

    /// In a page transaction of child stream `stream_id`: records which children of the
    /// parent the mirror now holds (and no longer holds), and consumes the parent's queue
    /// row when the page ends the parent's listing, unless the parent changed again since.
    pub(super) async fn write_child(
        conn: &mut Conn<B>,
        stream_id: i64,
        child: &ChildWrite<'_>,
        records: &[PageRecord],
    ) -> StoreResult<()> {
        // A key given twice in one page keeps its last occurrence, as in the mirror.
        let mut last = std::collections::HashMap::with_capacity(records.len());
        for record in records {
            last.insert(record.key.as_str(), record.body.is_some());
        }
        let (mut live, mut gone) = (Vec::new(), Vec::new());
        for (key, is_live) in last {
            let key = PageRecord::delete(key.to_owned());
            if is_live {
                live.push(key);
            } else {
                gone.push(key);
            }
        }
        if !live.is_empty() {
            sqlx::query(B::INSERT_CHILD_KEYS_SQL)
                .bind(stream_id)
                .bind(child.parent_key)
                .bind(B::key_list(&live))
                .execute(&mut *conn)
                .await?;
        }
        if !gone.is_empty() {
            sqlx::query(B::DELETE_CHILD_KEYS_SQL)
                .bind(stream_id)
                .bind(child.parent_key)
                .bind(B::key_list(&gone))
                .execute(&mut *conn)
                .await?;
        }
        if let Some(seq) = child.consume {
            sqlx::query(
                "DELETE FROM child_queue WHERE stream_id = $1 AND parent_key = $2 AND seq = $3",
            )
            .bind(stream_id)
            .bind(child.parent_key)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn parent_of(&self, stream_id: i64) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT parent_id FROM streams WHERE id = $1")
                .bind(stream_id)
                .fetch_optional(&self.read)
                .await?
                .flatten(),
        )
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn queued_parents(
        &self,
        stream_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<QueuedParent>> {
        let rows: Vec<QueueRow> = sqlx::query_as(
            "SELECT parent_key, seq, deleted FROM child_queue \
             WHERE stream_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(stream_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QueuedParent {
                key: r.parent_key,
                seq: r.seq,
                deleted: r.deleted,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn live_record(
        &self,
        stream_id: i64,
        key: &str,
    ) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT body FROM records WHERE stream_id = $1 AND key = $2",
        )
        .bind(stream_id)
        .bind(key)
        .fetch_optional(&self.read)
        .await?
        .flatten())
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn live_records_after(
        &self,
        stream_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT key, body FROM records WHERE stream_id = $1 AND body IS NOT NULL \
             AND key > $2 ORDER BY key LIMIT $3",
        )
        .bind(stream_id)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn children_of(
        &self,
        stream_id: i64,
        parent_key: &str,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT key FROM child_keys WHERE stream_id = $1 AND parent_key = $2 ORDER BY key",
        )
        .bind(stream_id)
        .bind(parent_key)
        .fetch_all(&self.read)
        .await?)
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn waiting_children(&self) -> StoreResult<Vec<WaitingChild>> {
        let rows: Vec<WaitingRow> = sqlx::query_as(
            "SELECT st.id, st.failures, \
             (SELECT MAX(j.finished_at) FROM jobs j WHERE j.stream_id = st.id) AS finished_at \
             FROM streams st WHERE st.parent_id IS NOT NULL \
             AND EXISTS (SELECT 1 FROM child_queue q WHERE q.stream_id = st.id) \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.stream_id = st.id \
                             AND j.status IN ('queued', 'running'))",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| WaitingChild {
                stream_id: r.id,
                failures: u32::try_from(r.failures).unwrap_or_default(),
                finished_at: r.finished_at,
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(stream_id))]
    pub(super) async fn queue_child_job(&self, stream_id: i64) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let queued = Self::insert_child_job(&mut *tx, stream_id, now()).await?;
        tx.commit().await?;
        Ok(queued)
    }
}
