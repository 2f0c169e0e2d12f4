//! Page commits: a page's records (or a group of consecutive pages' records), the changes
//! they cause (feed positions), the cursor and the job's counters, in one transaction
//! fenced by the job's lease; a reconcile's seen keys with them; a job's resync (the
//! cursor reset).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Encode, Executor, Type};

use uuid::Uuid;

use super::backend::{
    Backend, Conn, Db, Row, RowsAffected, Scalar, SqlStore, now, stats_text, text_of,
};
use super::{PageCommit, PageOutcome, PageRecord, ResyncCommit, StoreResult};
use crate::spec::cursor::CursorWrite;
use crate::spec::job::JobMode;

/// What a commit does to each of its records (one page's, or a group of pages'), given
/// what the mirror holds for their keys (`key → (hash, rev)`, hash `None` for a
/// tombstone). A key given twice in one commit keeps its last occurrence (the earlier one
/// counts as unchanged), as the compacted feed would show it.
struct PagePlan<'a> {
    /// Records that change, in page order (the order of their feed positions).
    changes: Vec<Change<'a>>,
    outcome: PageOutcome,
}

/// One record a page changes.
pub struct Change<'a> {
    pub record: &'a PageRecord,
    pub rev: i64,
    /// Whether the mirror has a row for the key (a tombstone counts): it is updated in
    /// place; otherwise a row is inserted.
    pub stored: bool,
}

impl<'a> PagePlan<'a> {
    fn new(records: &'a [PageRecord], existing: &HashMap<String, (Option<Vec<u8>>, i64)>) -> Self {
        let mut last: HashMap<&str, &PageRecord> = HashMap::with_capacity(records.len());
        for record in records {
            last.insert(&record.key, record);
        }
        let mut plan = PagePlan {
            changes: Vec::new(),
            outcome: PageOutcome::default(),
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

impl PageRecord {
    pub(super) fn hash_bytes(&self) -> Option<&[u8]> {
        self.hash.as_ref().map(|h| h.as_slice())
    }

    /// About the memory the record holds: its key and text, and the record itself.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.key.len() + self.body.as_ref().map_or(0, String::len)
    }
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
    #[tracing::instrument(skip_all, fields(job = %page.job, records = page.records.len()))]
    pub(super) async fn commit_page(
        &self,
        page: PageCommit<'_>,
    ) -> StoreResult<Option<PageOutcome>> {
        let now = now();
        let job_id = page.job.hyphenated().to_string();
        let mut tx = self.write.begin().await?;
        // Fencing first: a cancelled job, or one whose lease another worker took
        // over, writes nothing.
        // With it, whether the stream has child streams (their queues take its changes):
        // no round trip more for a stream without.
        let fenced: Option<(String, bool)> = sqlx::query_as(
            "UPDATE jobs SET lease_expires_at = $3 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
             RETURNING mode, EXISTS (SELECT 1 FROM streams c WHERE c.parent_id = $4)",
        )
        .bind(&job_id)
        .bind(page.owner)
        .bind(now + page.lease)
        .bind(page.target_stream_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((mode, has_children)) = fenced else {
            return Ok(None);
        };
        // A reconcile remembers the keys it lists in the database, not in memory, and in
        // the transaction of their page: what it committed, it has seen.
        if mode == text_of(&JobMode::Reconcile) && page.target_stream_id == page.cursor_stream_id {
            Self::record_seen(&mut *tx, &job_id, page.records).await?;
        }
        let mut existing = HashMap::with_capacity(page.records.len());
        if !page.records.is_empty() {
            let rows: Vec<(String, Option<Vec<u8>>, i64)> = sqlx::query_as(B::EXISTING_SQL)
                .bind(page.target_stream_id)
                .bind(B::key_list(page.records))
                .fetch_all(&mut *tx)
                .await?;
            existing.extend(rows.into_iter().map(|(k, h, r)| (k, (h, r))));
        }
        let plan = PagePlan::new(page.records, &existing);
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
            B::write_changes(
                &mut *tx,
                page.target_stream_id,
                last - n + 1,
                &plan.changes,
                now,
            )
            .await?;
            self.backend
                .announce(&mut *tx, page.target_stream_id, last)
                .await?;
            if has_children {
                Self::queue_children(&mut *tx, page.target_stream_id, last - n + 1, last, now)
                    .await?;
            }
            last_seq = Some(last);
        }
        // After the feed head, which a parent's page takes before the queue row this
        // may delete: both lock in the same order.
        if let Some(child) = &page.child {
            Self::write_child(&mut *tx, page.target_stream_id, child, page.records).await?;
        }
        let cursor = match page.cursor {
            CursorWrite::Keep => None,
            CursorWrite::Set(value) => Some(Some(value.to_string())),
            CursorWrite::Clear => Some(None),
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
            .bind(stats_text(&stats))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Some(last) = last_seq {
            self.notifier.committed(page.target_stream_id, last);
        }
        Ok(Some(plan.outcome))
    }

    #[tracing::instrument(skip_all, fields(job = %resync.job))]
    pub(super) async fn resync_job(&self, resync: ResyncCommit<'_>) -> StoreResult<bool> {
        let now = now();
        let job_id = resync.job.hyphenated().to_string();
        let mut tx = self.write.begin().await?;
        let ours = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3, resynced = $4 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(&job_id)
        .bind(resync.owner)
        .bind(now + resync.lease)
        .bind(serde_json::to_string(resync.resynced).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        if ours.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE streams SET cursor = NULL, cursor_updated_at = $2, cursor_job = $3 \
             WHERE id = $1",
        )
        .bind(resync.cursor_stream_id)
        .bind(now)
        .bind(&job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(skip_all, fields(job = %job))]
    pub(super) async fn forget_seen(
        &self,
        job: Uuid,
        owner: &str,
        limit: u32,
    ) -> StoreResult<Option<u64>> {
        let job_id = job.hyphenated().to_string();
        let mut tx = self.write.begin().await?;
        // Fenced like a page: once another worker took the job over, the keys are its.
        let ours = sqlx::query(
            "UPDATE jobs SET lease_expires_at = lease_expires_at \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(&job_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if ours.rows_affected() == 0 {
            return Ok(None);
        }
        let deleted = sqlx::query(
            "DELETE FROM reconcile_seen WHERE job_id = $1 AND key IN \
             (SELECT key FROM reconcile_seen WHERE job_id = $1 ORDER BY key LIMIT $2)",
        )
        .bind(&job_id)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(deleted.rows_affected()))
    }

    /// Records the keys of a reconcile's page that are live upstream as seen by the job
    /// (tombstones need no remembering: they are not in the mirror's live keys).
    async fn record_seen(
        conn: &mut Conn<B>,
        job_id: &str,
        records: &[PageRecord],
    ) -> StoreResult<()> {
        let live: Vec<PageRecord>;
        let records = if records.iter().all(|r| r.body.is_some()) {
            records
        } else {
            live = records
                .iter()
                .filter(|r| r.body.is_some())
                .map(|r| PageRecord::delete(r.key.clone()))
                .collect();
            &live
        };
        if records.is_empty() {
            return Ok(());
        }
        sqlx::query(B::INSERT_SEEN_SQL)
            .bind(job_id)
            .bind(B::key_list(records))
            .execute(conn)
            .await?;
        Ok(())
    }
}
