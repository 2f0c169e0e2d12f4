//! The public types: source and stream specs, cursors, jobs, and the views the API
//! returns. Each deserializes only when valid ("parse, don't validate").

pub mod auth;
pub mod change;
pub mod consumer;
pub mod cursor;
pub mod de;
pub mod job;
pub mod names;
pub mod pagination;
pub mod record;
pub mod secret;
pub mod source;
pub mod template;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use job::Job;
pub use names::{SourceName, StreamName};
pub use source::{SourceSpec, StreamSpec};

/// A registered source, as the API returns it (inline secrets redacted).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceView {
    #[serde(flatten)]
    pub spec: SourceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of sources, ordered by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceList {
    pub results: Vec<SourceView>,
    /// Pass as `after` to read the next page; `null` on the last page.
    pub next: Option<String>,
}

/// A stream with its sync state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamView {
    /// The source the stream belongs to.
    #[schema(value_type = String, example = "shop")]
    pub source: SourceName,
    #[serde(flatten)]
    pub spec: StreamSpec,
    /// The checkpoint (see `GET .../cursor`).
    #[schema(value_type = Option<Object>)]
    pub cursor: Option<Value>,
    /// The stream's most recent job.
    pub last_job: Option<Job>,
    /// Seconds since the last successful job finished: how far behind the upstream the
    /// mirror may be. `null` until a job has succeeded.
    pub lag_seconds: Option<f64>,
}
