//! One feed read: a snapshot of the store turned into a page of changes.

use serde_json::value::RawValue;

use super::position::{Issued, Position};
use super::{Feed, FeedError, Scope};
use crate::spec::change::{Change, ChangePage, Op};
use crate::store::{Commit, FeedQuery, FeedSnapshot, StoreError, StoredChange};

/// One snapshot's changes after a position.
pub(super) struct Batch {
    pub(super) head: i64,
    pub(super) horizon: i64,
    /// In position order, with their positions.
    pub(super) changes: Vec<(i64, Change)>,
    pub(super) has_more: bool,
    /// The ids of the scope's streams (empty: every stream).
    pub(super) ids: Vec<i64>,
}

impl Batch {
    /// Whether `commit` may have changed something this read would see.
    pub(super) fn concerns(&self, commit: &Commit) -> bool {
        match commit.stream_id {
            Some(id) => self.ids.is_empty() || self.ids.contains(&id),
            None => true,
        }
    }

    /// Where the next read starts: after the last change handed out, or at the head when
    /// everything up to it was handed out.
    pub(super) fn next(&self) -> Position {
        let at = match (self.has_more, self.changes.last()) {
            (true, Some((seq, _))) => *seq,
            _ => self.head,
        };
        Position {
            at,
            issued: Some(Issued {
                head: self.head,
                horizon: self.horizon,
            }),
        }
    }
}

impl Feed {
    /// Reads one snapshot: up to `limit` changes after `from`, after checking that the
    /// position can still be followed without missing anything.
    pub(super) async fn read(
        &self,
        scope: &Scope,
        from: Position,
        limit: u32,
    ) -> Result<Batch, FeedError> {
        let snapshot = self
            .store
            .read_feed(FeedQuery {
                streams: scope.streams(),
                after: from.at,
                // One more than asked tells whether more are waiting.
                limit: if limit == 0 { 0 } else { limit + 1 },
            })
            .await?;
        metrics::gauge!("tidemark_feed_head").set(snapshot.head as f64);
        let FeedSnapshot {
            head,
            horizon,
            streams,
            mut changes,
        } = snapshot;
        let ids = scope
            .streams()
            .iter()
            .zip(streams)
            .map(|(name, found)| from.stream_id(name, found))
            .collect::<Result<Vec<_>, _>>()?;
        from.followable(head, horizon)?;
        let has_more = changes.len() > limit as usize;
        changes.truncate(limit as usize);
        Ok(Batch {
            head,
            horizon,
            changes: changes
                .into_iter()
                .map(|c| Ok((c.seq, change(c)?)))
                .collect::<Result<_, StoreError>>()?,
            has_more,
            ids,
        })
    }

    /// The page of `batch`, with the token that resumes after it.
    pub(super) fn page(&self, scope: &Scope, batch: Batch) -> ChangePage {
        let next = batch.next();
        ChangePage {
            until: self.token(scope, next.at, &batch),
            has_more: batch.has_more,
            results: batch.changes.into_iter().map(|(_, c)| c).collect(),
        }
    }
}

/// A stored change as the feed shows it.
fn change(stored: StoredChange) -> Result<Change, StoreError> {
    let record = stored
        .body
        .map(RawValue::from_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("stored record {}: {e}", stored.key)))?;
    Ok(Change {
        stream: stored.stream.to_string(),
        parent: stored.parent,
        key: stored.key,
        op: if record.is_some() {
            Op::Upsert
        } else {
            Op::Delete
        },
        rev: stored.rev,
        record,
        changed_at: stored.changed_at,
    })
}
