//! The named consumers' views (docs/design.md §5), as `GET /v1/consumers` returns them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::names::ConsumerName;

/// A named feed consumer: where it last read the feed from, and how far behind it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Consumer {
    /// The name it reads with (`consumer=`).
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "billing")]
    pub name: ConsumerName,
    pub position: ConsumerPosition,
    /// When it first read the feed under this name (since it was last forgotten).
    pub first_read_at: DateTime<Utc>,
    /// When it last read the feed: when its latest request read it (a long-poll: before
    /// it began waiting); an open event stream also reads each time it is sent events
    /// (counted at most once a second).
    pub last_read_at: DateTime<Utc>,
    pub lag: ConsumerLag,
}

/// Where a consumer last read the feed from: everything before it has been handed out to
/// it. Reading with these two values reads what it would read next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConsumerPosition {
    /// The `since` its latest request came with (for an event stream, the `id` of the last
    /// event it was sent); `null` for a blank `since`, the beginning.
    pub since: Option<String>,
    /// The `stream` filter of that request, normalized (sorted, without duplicates);
    /// `null` for the whole feed. The latest request wins: a consumer that changed its
    /// filter is shown with the new one.
    #[schema(example = "shop/orders,shop/products")]
    pub stream: Option<String>,
}

/// How far behind a consumer is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ConsumerLag {
    /// Changes of its filter after its position, up to the head of the feed: what its
    /// next reads would hand out. Counted up to 10000.
    pub changes: u64,
    /// `false` when the count stopped at its cap: there are more than `changes`.
    pub exact: bool,
    /// Seconds since its last read.
    pub seconds: f64,
}

/// A page of consumers, ordered by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumerList {
    pub results: Vec<Consumer>,
    /// Pass as `after` to read the next page; `null` on the last page.
    pub next: Option<String>,
}
