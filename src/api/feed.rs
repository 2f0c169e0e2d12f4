//! The change feed: pages with long-poll, a "from now on" token, and Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::consumers::consumer_param;
use super::problems;
use super::sources::page_limit;
use crate::api::error::ApiError;
use crate::feed::{MAX_WAIT, Scope};
use crate::spec::change::{ChangePage, FeedHead};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_changes))
        .routes(routes!(head))
        .routes(routes!(stream_changes))
}

/// Feed responses are never to be cached: the same URL answers differently as changes
/// commit. Also set on errors, including the ones produced before the handler runs.
pub async fn no_store(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let feed = path == "/v1/changes" || path.starts_with("/v1/changes/");
    let mut response = next.run(req).await;
    if feed {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Counts a feed request by endpoint and status.
fn counted<T>(endpoint: &'static str, result: Result<T, ApiError>) -> Result<T, ApiError> {
    let status = match &result {
        Ok(_) => "200".to_owned(),
        Err(e) => e.status().as_u16().to_string(),
    };
    metrics::counter!("tidemark_feed_requests_total", "endpoint" => endpoint, "status" => status)
        .increment(1);
    result
}

/// Reading the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesParams {
    /// The `until` of the previous page; missing or blank: from the beginning (a full,
    /// compacted snapshot).
    since: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// With no change to hand out, wait up to this many seconds (0 to 60, decimals
    /// allowed; default 0) for one to commit.
    #[param(minimum = 0, maximum = 60, default = 0)]
    wait: Option<f64>,
    /// Only these streams: `source/stream`, several separated by commas. A token is bound
    /// to the filter it was issued for.
    #[param(
        example = "shop/products,shop/orders",
        pattern = "^ *([a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63})? *(, *([a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63})? *)*$"
    )]
    stream: Option<String>,
    /// Who is reading: a name of your choice (a slug), under which the gateway records the
    /// `since` this request came with and when (see `/v1/consumers`). It never changes
    /// what the feed returns; blank: nobody in particular.
    #[param(pattern = "^([a-z0-9][a-z0-9_-]{0,63})?$", example = "billing")]
    consumer: Option<String>,
}

/// The `stream` filter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScopeParams {
    /// Only these streams: `source/stream`, several separated by commas.
    #[param(
        example = "shop/products",
        pattern = "^ *([a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63})? *(, *([a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63})? *)*$"
    )]
    stream: Option<String>,
}

/// Following the feed as Server-Sent Events.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Where to start (a token); missing or blank: from the beginning. A `Last-Event-ID`
    /// header takes precedence.
    since: Option<String>,
    /// Only these streams: `source/stream`, several separated by commas.
    #[param(
        example = "shop/products",
        pattern = "^ *([a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63})? *(, *([a-z0-9][a-z0-9_-]{0,63}/[a-z0-9][a-z0-9_-]{0,63})? *)*$"
    )]
    stream: Option<String>,
    /// Who is reading: a name of your choice (a slug), under which the gateway records
    /// where it started and the last event it was sent (see `/v1/consumers`). It never
    /// changes what the stream sends; blank: nobody in particular.
    #[param(pattern = "^([a-z0-9][a-z0-9_-]{0,63})?$", example = "billing")]
    consumer: Option<String>,
}

/// The `stream` filter. Only the characters its documented pattern allows: names,
/// `/`, commas and spaces (other whitespace is refused rather than trimmed).
fn scope_param(filter: Option<&str>) -> Result<Scope, ApiError> {
    let allowed = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '/' | ',' | ' ')
    };
    if filter.is_some_and(|f| !f.chars().all(allowed)) {
        return Err(ApiError::invalid_param(
            "stream",
            "the filter is `source/stream` names separated by commas",
        ));
    }
    Ok(Scope::parse(filter)?)
}

fn wait_param(wait: Option<f64>) -> Result<Duration, ApiError> {
    let wait = wait.unwrap_or(0.0);
    if wait.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(&wait) {
        Ok(Duration::from_secs_f64(wait))
    } else {
        Err(ApiError::invalid_param(
            "wait",
            format!("wait must be 0 to {} seconds", MAX_WAIT.as_secs()),
        ))
    }
}

/// Read the change feed: the latest state of every record changed after `since`, in commit
/// order. Store `until` and pass it as `since` next time; with `has_more`, call again at
/// once. Tokens are opaque: `400 invalid-since-format` when one does not decode,
/// `400 since-scope-mismatch` when it was issued for another `stream` filter, `410
/// since-expired` when it can no longer be followed (another database, tombstones purged,
/// a stream of its filter removed): then start again from a blank `since`.
#[utoipa::path(
    get, path = "/v1/changes", tag = "feed",
    params(ChangesParams),
    responses(
        (status = 200, description = "A page of changes", body = ChangePage,
         headers(("cache-control" = String, description = "`no-store`"))),
        problems::Reader,
        problems::FeedRead,
    )
)]
#[tracing::instrument(skip_all, fields(limit = params.limit, wait = params.wait))]
async fn list_changes(
    State(state): State<AppState>,
    Query(params): Query<ChangesParams>,
) -> Result<Response, ApiError> {
    counted(
        "changes",
        async {
            let limit = page_limit(params.limit)?;
            let wait = wait_param(params.wait)?;
            let scope = scope_param(params.stream.as_deref())?;
            let consumer = consumer_param(params.consumer.as_deref())?;
            let since = state.feed.since(params.since.as_deref(), &scope)?;
            let page = state
                .feed
                .poll(&scope, since, limit, wait, consumer.as_ref())
                .await?;
            // Written as JSON by the feed itself, from the stored text of each record.
            let json = HeaderValue::from_static("application/json");
            Ok(([(header::CONTENT_TYPE, json)], page.into_json()).into_response())
        }
        .await,
    )
}

/// A token for "from now on": reading from it yields only changes committed after this
/// call. Bound to the same optional `stream` filter as the feed.
#[utoipa::path(
    get, path = "/v1/changes/head", tag = "feed",
    params(ScopeParams),
    responses(
        (status = 200, description = "The head token", body = FeedHead,
         headers(("cache-control" = String, description = "`no-store`"))),
        problems::Reader,
        problems::FeedFilter,
    )
)]
#[tracing::instrument(skip_all)]
async fn head(
    State(state): State<AppState>,
    Query(params): Query<ScopeParams>,
) -> Result<Json<FeedHead>, ApiError> {
    counted(
        "head",
        async {
            let scope = scope_param(params.stream.as_deref())?;
            Ok(Json(FeedHead {
                until: state.feed.head(&scope).await?,
            }))
        }
        .await,
    )
}

/// Follow the feed as Server-Sent Events: every change after `since`, then each new one
/// as it commits. Each event is `event: change`, its `data` a change as in `/v1/changes`,
/// its `id` the token that resumes right after it (sent back as `Last-Event-ID` on
/// reconnect). A comment is sent every 15 s when nothing else is; the server ends the
/// response after 5 minutes (reconnect with `Last-Event-ID`). A token that expires while
/// following ends the response with an `event: problem` whose data is the problem document.
#[utoipa::path(
    get, path = "/v1/changes/stream", tag = "feed",
    params(
        StreamParams,
        ("last-event-id" = Option<String>, Header, description = "The `id` of the last event received"),
    ),
    responses(
        (status = 200, description = "An event stream; the schema describes each event", body = FeedEvent, content_type = "text/event-stream",
         headers(("cache-control" = String, description = "`no-store`"))),
        problems::Reader,
        problems::FeedRead,
    )
)]
#[tracing::instrument(skip_all)]
async fn stream_changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Response, ApiError> {
    counted(
        "stream",
        async {
            let scope = scope_param(params.stream.as_deref())?;
            let consumer = consumer_param(params.consumer.as_deref())?;
            let resume = match headers.get("last-event-id") {
                Some(value) => Some(
                    value
                        .to_str()
                        .map_err(|_| ApiError::from(crate::feed::FeedError::InvalidSince))?,
                ),
                None => params.since.as_deref(),
            };
            let since = state.feed.since(resume, &scope)?;
            let changes = state.feed.clone().follow(scope, since, consumer).await?;
            let events = changes.map(|item| {
                let event = match item {
                    Ok((id, change)) => match serde_json::to_string(&change) {
                        Ok(data) => FeedEvent {
                            event: "change",
                            data,
                            id: Some(id),
                        },
                        Err(e) => problem_event(ApiError::from(crate::store::StoreError::Corrupt(
                            format!("serializing a change: {e}"),
                        ))),
                    },
                    Err(e) => problem_event(e.into()),
                };
                Ok::<_, Infallible>(Event::from(event))
            });
            Ok(Sse::new(events)
                .keep_alive(
                    KeepAlive::new()
                        .interval(Duration::from_secs(15))
                        .text("heartbeat"),
                )
                .into_response())
        }
        .await,
    )
}

/// One Server-Sent Event of `/v1/changes/stream` (the heartbeats are comments, not events).
#[derive(ToSchema)]
pub struct FeedEvent {
    /// `change`, or `problem` when following ends on an error (a token that expired).
    #[schema(value_type = String, pattern = "^(change|problem)$")]
    event: &'static str,
    /// A change as in `/v1/changes` (`change`) or a problem document (`problem`), as JSON.
    data: String,
    /// The token that resumes right after this change (`change` only).
    id: Option<String>,
}

impl From<FeedEvent> for Event {
    fn from(feed: FeedEvent) -> Event {
        let event = Event::default().event(feed.event).data(feed.data);
        match feed.id {
            Some(id) => event.id(id),
            None => event,
        }
    }
}

fn problem_event(error: ApiError) -> FeedEvent {
    let problem = error.problem();
    FeedEvent {
        event: "problem",
        data: serde_json::to_string(&problem).unwrap_or_else(|_| problem.kind.clone()),
        id: None,
    }
}
