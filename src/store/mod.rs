//! Persistence: one interface ([`Store`]), implemented for SQLite and PostgreSQL. Handlers
//! and workers never build SQL; the store never makes HTTP calls.

mod postgres;
mod shared;
mod sqlite;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::spec::names::HttpUrl;
use crate::spec::{Job, SourceName, SourceSpec, StreamName, StreamSpec};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. a duplicate source name).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Stored data that no longer parses: a bug or a manual edit of the database.
    #[error("{0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A source as stored.
#[derive(Debug, Clone)]
pub struct StoredSource {
    pub spec: SourceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stream with its sync state.
#[derive(Debug, Clone)]
pub struct StreamState {
    pub source: SourceName,
    /// The source's base URL (link cursors must stay on its host).
    pub base_url: HttpUrl,
    pub spec: StreamSpec,
    pub cursor: Option<Cursor>,
    pub last_job: Option<Job>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// A stored checkpoint: the strategy's own JSON, kept verbatim.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub value: Value,
    pub updated_at: DateTime<Utc>,
    /// The job that wrote it; `None` when it was set through the API.
    pub job: Option<Uuid>,
}

/// What a new or replaced source is stored as: the parsed spec (for the streams' rows)
/// and the JSON text it came from (kept, and parsed again when read).
pub struct NewSource<'a> {
    pub spec: &'a SourceSpec,
    pub raw: &'a str,
}

/// Everything tidemark keeps. Implementations share their SQL where the two databases
/// agree (`shared.rs`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The database answers and every migration of this build is applied.
    async fn ready(&self) -> StoreResult<()>;

    /// Registers a source; [`StoreError::Conflict`] when the name is taken.
    async fn create_source(&self, source: NewSource<'_>) -> StoreResult<StoredSource>;

    /// Replaces a source's spec. Streams keep their cursor and mirror unless their
    /// pagination type changed (then the cursor is reset); streams no longer in the spec
    /// are removed with their records and jobs. `None` when there is no such source.
    async fn replace_source(&self, source: NewSource<'_>) -> StoreResult<Option<StoredSource>>;

    async fn get_source(&self, name: &SourceName) -> StoreResult<Option<StoredSource>>;

    /// Sources ordered by name, after `after`.
    async fn list_sources(
        &self,
        after: Option<&SourceName>,
        limit: u32,
    ) -> StoreResult<Vec<StoredSource>>;

    /// Removes a source with its streams, cursors, jobs and records. `false` when absent.
    async fn delete_source(&self, name: &SourceName) -> StoreResult<bool>;

    async fn get_stream(
        &self,
        source: &SourceName,
        stream: &StreamName,
    ) -> StoreResult<Option<StreamState>>;

    /// Sets (or with `None` resets) a stream's cursor through the API. Returns when it was
    /// written; `None` when the stream does not exist.
    async fn set_cursor(
        &self,
        source: &SourceName,
        stream: &StreamName,
        cursor: Option<&Value>,
    ) -> StoreResult<Option<DateTime<Utc>>>;
}

/// Opens the store `database_url` names (`sqlite:` or `postgres:`) and applies its
/// migrations.
pub async fn connect(database_url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(database_url).await?))
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(database_url).await?))
    } else {
        anyhow::bail!(
            "DATABASE_URL must start with sqlite: or postgres: (got `{}`)",
            database_url.split(':').next().unwrap_or_default()
        )
    }
}
