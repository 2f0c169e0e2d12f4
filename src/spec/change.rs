//! The change feed as consumers see it (docs/design.md §5).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::names::{SourceName, StreamName};

/// One stream, as the feed's `stream` filter and its results name it: `source/stream`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamRef {
    pub source: SourceName,
    pub stream: StreamName,
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.source, self.stream)
    }
}

impl FromStr for StreamRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (source, stream) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not `source/stream`"))?;
        Ok(StreamRef {
            source: SourceName::try_from(source.to_owned())?,
            stream: StreamName::try_from(stream.to_owned())?,
        })
    }
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Created or changed: `record` is its new content.
    Upsert,
    /// Deleted: `record` is null.
    Delete,
}

/// The latest change of one record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    /// The record's stream, as `source/stream`.
    #[schema(example = "shop/products")]
    pub stream: String,
    /// For a record of a child stream, its parent record's key in the parent stream (the
    /// record's `key` is this key, `/` and the child's own key); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "1042")]
    pub parent: Option<String>,
    /// The record's key within its stream.
    #[schema(example = "1042")]
    pub key: String,
    pub op: Op,
    /// How many times this record has changed: a consumer that already applied this
    /// `rev` (or a later one) of the key can skip the change.
    pub rev: i64,
    /// The upstream's JSON, byte for byte; null for a deletion.
    #[schema(value_type = Option<Object>, required = true)]
    pub record: Option<Box<RawValue>>,
    /// When tidemark committed the change.
    pub changed_at: DateTime<Utc>,
}

/// A page of the feed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangePage {
    /// Changes in commit order; each record at most once, in its latest state.
    pub results: Vec<Change>,
    /// Pass as `since` next time (always usable, even after an empty page).
    #[schema(example = "AQzU7X0pC5hXAAAAAAAAAAAAAAAAAAAAAdQAAAAAAAAB1H2Rnb3Hn3jJ7V2yQxwJmTg")]
    pub until: String,
    /// More changes are waiting: call again at once.
    pub has_more: bool,
}

/// A token for "from now on".
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeedHead {
    /// Pass as `since` to read only changes committed after this call.
    pub until: String,
}
