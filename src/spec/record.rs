//! The mirror as the API shows it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// One mirrored record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordEntry {
    /// The record's key within its stream.
    #[schema(example = "1042")]
    pub key: String,
    /// How many times this record has changed (content or deletion) in the mirror.
    pub rev: i64,
    /// The upstream's JSON, byte for byte.
    #[schema(value_type = Object)]
    pub record: Box<RawValue>,
    /// When tidemark stored this content.
    pub synced_at: DateTime<Utc>,
}

/// A page of the mirror, in key order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordList {
    pub results: Vec<RecordEntry>,
    /// Pass as `after` to read the next page; `null` on the last page.
    pub next: Option<String>,
}
