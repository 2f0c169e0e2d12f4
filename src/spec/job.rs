//! Sync jobs: one run of one stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::Problem;

use super::names::{SourceName, StreamName};

/// What a job reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    /// From the stream's cursor.
    #[default]
    Incremental,
    /// From the beginning, keeping the mirror.
    Full,
    /// A full listing that also turns keys not seen upstream into deletions.
    Reconcile,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// What queued a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Api,
    Schedule,
    Webhook,
    /// The parent stream committed changes that the child stream has to read
    /// (docs/design.md §3, "Child stream").
    Parent,
    /// Kept for the jobs of earlier versions, in which a stale upstream token failed the
    /// job and queued a full one with this trigger. A job now resyncs itself (`resynced`).
    Resync,
}

/// Counters of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobStats {
    pub requests: u64,
    pub pages: u64,
    pub records_seen: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    /// Requests made to step back (or check a page again) after rows shifted under an
    /// offset run (docs/design.md §4, "Offset paging never skips a row").
    #[serde(default)]
    pub step_backs: u64,
    /// Page boundaries at which rows shifted under an offset run and no anchor was found
    /// again: the run read on to the end but kept its old high-water.
    #[serde(default)]
    pub shifted: u64,
}

/// One sync run of one stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[schema(value_type = String)]
    pub source: SourceName,
    #[schema(value_type = String)]
    pub stream: StreamName,
    pub mode: JobMode,
    pub status: JobStatus,
    pub trigger: Trigger,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub stats: JobStats,
    /// Why the job failed, when it did.
    pub error: Option<Problem>,
    /// When the upstream refused the stored cursor, and why: the job reset the cursor and
    /// read again from the beginning. `null` when it did not.
    pub resynced: Option<Resynced>,
}

/// A job's resync: the upstream said the stored cursor (a token, a delta link) is no
/// longer valid, so the job reset the cursor and read from the beginning, keeping the
/// mirror (unchanged records make no change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Resynced {
    /// The upstream's HTTP status.
    #[schema(example = 410)]
    pub status: u16,
    /// Which rule took the reply as stale, and what the upstream said (the start of its
    /// body).
    #[schema(
        example = "410 Gone, a token stream's default `invalid_token` rule (`{\"status\": 410}`); the upstream said: {\"error\":{\"code\":\"syncStateNotFound\"}}"
    )]
    pub reason: String,
    /// When the job reset the cursor.
    pub at: DateTime<Utc>,
}

/// `POST .../sync`: which kind of job to queue (an empty body queues an incremental one).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    #[serde(default)]
    #[schema(default = "incremental")]
    pub mode: JobMode,
}

/// The jobs of a source-level request, one per stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceJobs {
    pub jobs: Vec<Job>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobList {
    pub results: Vec<Job>,
    /// Pass as `after` to read the next page; `null` on the last page.
    pub next: Option<String>,
}
