//! One feed read: a snapshot of the store turned into a page of changes, and the page's
//! JSON written straight from the stored text.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::position::{Issued, Position};
use super::{Feed, FeedError, Scope};
use crate::spec::change::{Change, Op};
use crate::store::{Commit, FeedQuery, FeedSnapshot, StoreError, StoredChange};

/// One snapshot's changes after a position.
pub(super) struct Batch {
    pub(super) head: i64,
    pub(super) horizon: i64,
    /// In position order.
    pub(super) changes: Vec<StoredChange>,
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
            (true, Some(last)) => last.seq,
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

/// A page of the feed as the JSON of a [`crate::spec::change::ChangePage`], ready to send
/// (cheap to clone: the requests one read answers share it).
#[derive(Debug, Clone)]
pub struct FeedPage {
    json: Bytes,
}

impl FeedPage {
    pub fn into_json(self) -> Bytes {
        self.json
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
            changes,
            has_more,
            ids,
        })
    }

    /// The page of `batch`, with the token that resumes after it, written as JSON.
    pub(super) fn page(&self, scope: &Scope, batch: &Batch) -> FeedPage {
        let next = batch.next();
        let until = self.token(scope, next.at, batch);
        FeedPage {
            json: page_json(&batch.changes, &until, batch.has_more).into(),
        }
    }
}

/// A `ChangePage`'s JSON, its members in the order serde writes them. Each record goes
/// out as the text stored for it, unparsed: it was a JSON value of the upstream's reply,
/// checked when the reply was read (`paginate/extract.rs`), and nothing else writes the
/// mirror's bodies. Changes of one commit share their time, which is formatted once.
fn page_json(changes: &[StoredChange], until: &str, has_more: bool) -> Vec<u8> {
    let text: usize = changes
        .iter()
        .map(|c| {
            let parent = c.parent.as_ref().map_or(0, |p| p.len() + 12);
            c.key.len() + c.body.as_ref().map_or(4, String::len) + c.stream.len() + parent
        })
        .sum();
    let mut out = Vec::with_capacity(text + changes.len() * 96 + until.len() + 48);
    out.extend_from_slice(b"{\"results\":[");
    let mut time: Option<(DateTime<Utc>, Vec<u8>)> = None;
    for (i, change) in changes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"stream\":");
        json_str(&mut out, &change.stream);
        if let Some(parent) = &change.parent {
            out.extend_from_slice(b",\"parent\":");
            json_str(&mut out, parent);
        }
        out.extend_from_slice(b",\"key\":");
        json_str(&mut out, &change.key);
        let (op, record) = match &change.body {
            Some(body) => ("upsert", body.as_str()),
            None => ("delete", "null"),
        };
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(op.as_bytes());
        out.extend_from_slice(b"\",\"rev\":");
        json_value(&mut out, &change.rev);
        out.extend_from_slice(b",\"record\":");
        out.extend_from_slice(record.as_bytes());
        out.extend_from_slice(b",\"changed_at\":");
        match &time {
            Some((at, text)) if *at == change.changed_at => out.extend_from_slice(text),
            _ => {
                let mut text = Vec::with_capacity(32);
                json_value(&mut text, &change.changed_at);
                out.extend_from_slice(&text);
                time = Some((change.changed_at, text));
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"until\":");
    json_str(&mut out, until);
    out.extend_from_slice(if has_more {
        b",\"has_more\":true}"
    } else {
        b",\"has_more\":false}"
    });
    out
}

/// Appends `text` as a JSON string.
fn json_str(out: &mut Vec<u8>, text: &str) {
    json_value(out, text);
}

/// Appends `value` as serde_json writes it (into a `Vec`, which cannot fail).
fn json_value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = serde_json::Serializer::new(out);
    let _infallible = serde::Serialize::serialize(value, &mut serializer);
}

/// A stored change as a Server-Sent Event carries it.
pub(super) fn change(stored: &StoredChange) -> Result<Change, StoreError> {
    let record = stored
        .body
        .clone()
        .map(RawValue::from_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("stored record {}: {e}", stored.key)))?;
    Ok(Change {
        stream: stored.stream.to_string(),
        parent: stored.parent.clone(),
        key: stored.key.clone(),
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
