//! The feed's side of the store. The mirror table is the compacted feed: a record's `seq`
//! is the position of its latest change and a NULL body is a tombstone, so a feed page is
//! the records past a position, in position order.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};

use super::backend::{Backend, Conn, Db, Row, RowsAffected, Scalar, SqlStore, join, label};
use super::consumers::{ConsumerRead, StoredConsumer};
use super::notify::Notifier;
use super::{StoreError, StoreResult};
use crate::spec::change::StreamRef;

/// The settings key of the purge horizon.
const HORIZON: &str = "feed_horizon";

/// One read of the feed.
#[derive(Debug, Clone, Copy)]
pub struct FeedQuery<'a> {
    /// The streams to read; empty for all.
    pub streams: &'a [StreamRef],
    /// Changes strictly after this position.
    pub after: i64,
    /// At most this many changes (0: only the head, horizon and streams).
    pub limit: u32,
}

/// A stream of a feed filter as the snapshot holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStream {
    pub id: i64,
    /// The feed head when the stream was created.
    pub created_seq: i64,
}

/// What one snapshot of the database says about a feed read.
#[derive(Debug, Clone)]
pub struct FeedSnapshot {
    /// The last position handed out; every change at or below it is in this snapshot.
    pub head: i64,
    /// Tombstones at or below this position may have been purged.
    pub horizon: i64,
    /// The query's streams, in its order; `None` for one that does not exist.
    pub streams: Vec<Option<FeedStream>>,
    /// The changes, in position order (none when a stream of the query is missing).
    pub changes: Vec<StoredChange>,
}

/// A record's latest change.
#[derive(Debug, Clone)]
pub struct StoredChange {
    pub seq: i64,
    /// The record's stream as `source/stream`, shared by the changes of one read.
    pub stream: Arc<str>,
    /// The parent's key, for a record of a child stream.
    pub parent: Option<String>,
    pub key: String,
    pub rev: i64,
    /// The record's JSON text; `None` for a tombstone.
    pub body: Option<String>,
    pub changed_at: DateTime<Utc>,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub tombstones: u64,
    /// The horizon afterwards.
    pub horizon: i64,
}

/// The feed's queries. Every read is one snapshot: the head, the horizon, the streams and
/// the rows agree with each other.
#[async_trait::async_trait]
pub trait FeedStore: Send + Sync {
    /// Commits of this store announce themselves here.
    fn notifier(&self) -> &Notifier;

    /// The value of an instance-wide setting, storing `value` first if it has none (so the
    /// first of several starting instances decides).
    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String>;

    async fn read_feed(&self, query: FeedQuery<'_>) -> StoreResult<FeedSnapshot>;

    /// The last position handed out.
    async fn feed_head(&self) -> StoreResult<i64>;

    /// Deletes the tombstones changed before `before` and raises the horizon to the
    /// highest position deleted.
    async fn purge_tombstones(&self, before: DateTime<Utc>) -> StoreResult<Purged>;

    /// Announces other instances' commits to [`FeedStore::notifier`] until the connection
    /// fails (PostgreSQL `LISTEN`); never returns where there are no other instances.
    async fn relay_commits(&self) -> StoreResult<()>;

    /// Records named consumers' reads (one upsert each, in one transaction), each unless a
    /// later read of the same consumer is stored already.
    async fn record_consumers(&self, reads: &[ConsumerRead]) -> StoreResult<()>;

    /// Consumers ordered by name, after `after`.
    async fn list_consumers(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredConsumer>>;

    async fn get_consumer(&self, name: &str) -> StoreResult<Option<StoredConsumer>>;

    /// Forgets a consumer; `false` when there was none of that name.
    async fn delete_consumer(&self, name: &str) -> StoreResult<bool>;

    /// How many changes of `streams` (empty: of every stream) lie after `after`, counted up
    /// to `cap` and no further.
    async fn count_changes(&self, streams: &[StreamRef], after: i64, cap: u64) -> StoreResult<u64>;
}

/// The columns of a feed row, as [`ChangeRow`] reads them; followed by a `WHERE` clause.
pub(super) const CHANGE_SELECT: &str =
    "SELECT r.seq, r.stream_id, r.key, r.rev, r.body, r.changed_at FROM records r ";

/// A record's latest change as the mirror holds it.
#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    stream_id: i64,
    key: String,
    rev: i64,
    body: Option<String>,
    changed_at: DateTime<Utc>,
}

/// The feed rows with their streams' names, which are read once per stream of the page
/// (`names`: stream id, source name, stream name, whether it is a child stream) rather
/// than joined and parsed per row.
fn changes(
    rows: Vec<ChangeRow>,
    names: Vec<(i64, String, String, bool)>,
) -> StoreResult<Vec<StoredChange>> {
    let mut streams = HashMap::with_capacity(names.len());
    for (id, source, stream, child) in names {
        let stream = StreamRef {
            source: label(&source)?,
            stream: label(&stream)?,
        };
        streams.insert(id, (Arc::<str>::from(stream.to_string()), child));
    }
    rows.into_iter()
        .map(|row| {
            let (stream, child) = streams.get(&row.stream_id).cloned().ok_or_else(|| {
                StoreError::Corrupt(format!("feed row {} names no stream", row.seq))
            })?;
            // A child's key is its parent's, `/` and its own (escaped: it has no `/`).
            let parent = child
                .then(|| {
                    row.key
                        .rsplit_once('/')
                        .map(|(parent, _)| parent.to_owned())
                })
                .flatten();
            Ok(StoredChange {
                seq: row.seq,
                stream,
                parent,
                key: row.key,
                rev: row.rev,
                body: row.body,
                changed_at: row.changed_at,
            })
        })
        .collect()
}

/// Feed rows after `$1`, at most `$2`, of every stream.
const CHANGES_SQL: &str =
    join(&[CHANGE_SELECT, "WHERE r.seq > $1 ORDER BY r.seq LIMIT $2"]).as_str();

/// An instance-wide setting's value, by key (`$1`).
const SETTING_SQL: &str = "SELECT value FROM settings WHERE key = $1";

/// The last feed position handed out.
const HEAD_SQL: &str = "SELECT last_seq FROM feed_head WHERE id = 1";

// The driver bounds of the store's generic impls (see `backend.rs`).
#[async_trait::async_trait]
impl<B: Backend> FeedStore for SqlStore<B>
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
    fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    #[tracing::instrument(skip_all, fields(key))]
    async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(sqlx::query_scalar(SETTING_SQL)
            .bind(key)
            .fetch_one(&self.write)
            .await?)
    }

    #[tracing::instrument(skip_all, fields(after = query.after, limit = query.limit))]
    async fn read_feed(&self, query: FeedQuery<'_>) -> StoreResult<FeedSnapshot> {
        let mut tx = self.read.begin_with(B::SNAPSHOT_SQL).await?;
        let head: i64 = sqlx::query_scalar(HEAD_SQL).fetch_one(&mut *tx).await?;
        let horizon: Option<String> = sqlx::query_scalar(SETTING_SQL)
            .bind(HORIZON)
            .fetch_optional(&mut *tx)
            .await?;
        let horizon = match horizon {
            Some(text) => text
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("stored feed horizon: {e}")))?,
            None => 0,
        };
        let mut streams = Vec::with_capacity(query.streams.len());
        for stream in query.streams {
            let found: Option<(i64, i64)> = sqlx::query_as(
                "SELECT st.id, st.created_seq FROM streams st \
                 JOIN sources so ON so.id = st.source_id WHERE so.name = $1 AND st.name = $2",
            )
            .bind(stream.source.as_str())
            .bind(stream.stream.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            streams.push(found.map(|(id, created_seq)| FeedStream { id, created_seq }));
        }
        let ids: Option<Vec<i64>> = streams.iter().map(|s| s.map(|s| s.id)).collect();
        let rows: Vec<ChangeRow> = match ids {
            _ if query.limit == 0 => Vec::new(),
            // A missing stream makes the read an error; its rows do not matter.
            None => Vec::new(),
            Some(ids) if ids.is_empty() => {
                sqlx::query_as(CHANGES_SQL)
                    .bind(query.after)
                    .bind(i64::from(query.limit))
                    .fetch_all(&mut *tx)
                    .await?
            }
            Some(ids) => {
                sqlx::query_as(B::CHANGES_IN_SQL)
                    .bind(query.after)
                    .bind(i64::from(query.limit))
                    .bind(B::id_list(&ids))
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        let mut row_streams: Vec<i64> = rows.iter().map(|r| r.stream_id).collect();
        row_streams.sort_unstable();
        row_streams.dedup();
        let names: Vec<(i64, String, String, bool)> = if row_streams.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(B::STREAM_NAMES_SQL)
                .bind(B::id_list(&row_streams))
                .fetch_all(&mut *tx)
                .await?
        };
        tx.commit().await?;
        Ok(FeedSnapshot {
            head,
            horizon,
            streams,
            changes: changes(rows, names)?,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn feed_head(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(HEAD_SQL).fetch_one(&self.read).await?)
    }

    #[tracing::instrument(skip_all)]
    async fn purge_tombstones(&self, before: DateTime<Utc>) -> StoreResult<Purged> {
        let mut tx = self.write.begin().await?;
        let highest: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(seq) FROM records WHERE body IS NULL AND changed_at < $1",
        )
        .bind(before)
        .fetch_one(&mut *tx)
        .await?;
        let mut tombstones = 0;
        if let Some(highest) = highest {
            // Raised before deleting, in the same transaction: no snapshot sees the
            // tombstones gone and the horizon still low.
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = CASE \
                 WHEN CAST(settings.value AS BIGINT) < CAST(excluded.value AS BIGINT) \
                 THEN excluded.value ELSE settings.value END",
            )
            .bind(HORIZON)
            .bind(highest.to_string())
            .execute(&mut *tx)
            .await?;
            tombstones = sqlx::query(
                "DELETE FROM records WHERE body IS NULL AND changed_at < $1 AND seq <= $2",
            )
            .bind(before)
            .bind(highest)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let horizon: Option<String> = sqlx::query_scalar(SETTING_SQL)
            .bind(HORIZON)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Purged {
            tombstones,
            horizon: horizon.and_then(|h| h.parse().ok()).unwrap_or(0),
        })
    }

    async fn relay_commits(&self) -> StoreResult<()> {
        self.backend.relay(&self.write, &self.notifier).await
    }

    // The consumers' statements are in `consumers.rs`, as inherent methods of the same names.

    async fn record_consumers(&self, reads: &[ConsumerRead]) -> StoreResult<()> {
        self.record_consumers(reads).await
    }

    async fn list_consumers(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<StoredConsumer>> {
        self.list_consumers(after, limit).await
    }

    async fn get_consumer(&self, name: &str) -> StoreResult<Option<StoredConsumer>> {
        self.get_consumer(name).await
    }

    async fn delete_consumer(&self, name: &str) -> StoreResult<bool> {
        self.delete_consumer(name).await
    }

    async fn count_changes(&self, streams: &[StreamRef], after: i64, cap: u64) -> StoreResult<u64> {
        self.count_changes(streams, after, cap).await
    }
}
