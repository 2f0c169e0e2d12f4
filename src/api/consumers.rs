//! Named feed consumers: the `consumer` parameter of the feed, the consumers with their
//! position and lag, forgetting one, and their lag as metrics.

use std::fmt::Write;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::problems;
use super::sources::{after_param, next_after, page_limit};
use crate::api::error::ApiError;
use crate::feed::LAG_CAP;
use crate::spec::consumer::{Consumer, ConsumerList};
use crate::spec::names::ConsumerName;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_consumers))
        .routes(routes!(get_consumer, delete_consumer))
}

/// The feed's `consumer` parameter: blank or missing is no consumer; anything else must
/// be a name (400 `invalid-parameter` with the pointer `/consumer`).
pub(super) fn consumer_param(name: Option<&str>) -> Result<Option<ConsumerName>, ApiError> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => ConsumerName::try_from(name.to_owned())
            .map(Some)
            .map_err(|e| ApiError::invalid_param("consumer", e)),
        None => Ok(None),
    }
}

/// The `{name}` path segment. A name that is not a valid slug cannot exist: 404.
#[derive(IntoParams)]
#[into_params(names("name"), parameter_in = Path)]
pub struct ConsumerPath(
    /// Consumer name
    #[param(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "billing")]
    pub ConsumerName,
);

impl<S: Send + Sync> FromRequestParts<S> for ConsumerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(name) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|r| ApiError::from_status(r.status(), r.body_text()))?;
        ConsumerName::try_from(name)
            .map(ConsumerPath)
            .map_err(|_| ApiError::not_found("there is no consumer with this name"))
    }
}

fn no_consumer(name: &ConsumerName) -> ApiError {
    ApiError::not_found(format!(
        "there is no consumer named `{name}`: none has read the feed with `consumer={name}` \
         since it was last forgotten"
    ))
}

/// Paging of the consumer list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsumerListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` value of the previous page (a consumer name); blank: from the beginning.
    #[param(pattern = "^([a-z0-9][a-z0-9_-]{0,63})?$")]
    after: Option<String>,
}

/// List the named feed consumers, ordered by name.
///
/// Each with the position it last read the feed from, when, and how far behind the head
/// of its filter it is. Consumers name themselves with `consumer=<name>` on
/// `/v1/changes` or `/v1/changes/stream`.
#[utoipa::path(
    get, path = "/v1/consumers", tag = "feed",
    params(ConsumerListParams),
    responses(
        (status = 200, description = "A page of consumers", body = ConsumerList),
        problems::Reader,
        problems::BadParameter,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_consumers(
    State(state): State<AppState>,
    Query(params): Query<ConsumerListParams>,
) -> Result<Json<ConsumerList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let after = after_param(params.after, |a| ConsumerName::try_from(a).ok())?;
    let consumers = state.feed.consumers(after.as_ref(), limit).await?;
    let next = next_after(&consumers, limit, |c| c.name.to_string());
    Ok(Json(ConsumerList {
        results: consumers,
        next,
    }))
}

/// Read a named feed consumer.
///
/// The position it last read the feed from, when, and how far behind the head of its
/// filter it is.
#[utoipa::path(
    get, path = "/v1/consumers/{name}", tag = "feed",
    params(ConsumerPath),
    responses(
        (status = 200, description = "The consumer", body = Consumer),
        problems::Reader,
        problems::NoConsumer,
    )
)]
#[tracing::instrument(skip_all, fields(consumer = %name))]
async fn get_consumer(
    State(state): State<AppState>,
    ConsumerPath(name): ConsumerPath,
) -> Result<Json<Consumer>, ApiError> {
    state
        .feed
        .consumer(&name)
        .await?
        .map(Json)
        .ok_or_else(|| no_consumer(&name))
}

/// Forget a named feed consumer.
///
/// For a consumer that is gone for good. Reading the feed does not depend on it: a
/// consumer that reads again under this name is recorded again.
#[utoipa::path(
    delete, path = "/v1/consumers/{name}", tag = "feed",
    params(ConsumerPath),
    responses(
        (status = 204, description = "Forgotten"),
        problems::Admin,
        problems::NoConsumer,
    )
)]
#[tracing::instrument(skip_all, fields(consumer = %name))]
async fn delete_consumer(
    State(state): State<AppState>,
    ConsumerPath(name): ConsumerPath,
) -> Result<StatusCode, ApiError> {
    if state.feed.forget(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_consumer(&name))
    }
}

/// How long `/metrics` waits for the consumers' lag; past it they are left out.
const METRICS_WITHIN: Duration = Duration::from_secs(2);

/// The consumers' lag in the Prometheus text format, read from the database when scraped
/// (so a forgotten consumer has no series left behind, and every instance reports the
/// same values). Empty when there are none, or when the database does not answer in time.
pub(super) async fn metrics(state: &AppState) -> String {
    let consumers = match tokio::time::timeout(METRICS_WITHIN, state.feed.every_consumer()).await {
        Ok(Ok(consumers)) => consumers,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the feed consumers for /metrics failed");
            return String::new();
        }
        Err(_) => {
            tracing::warn!("reading the feed consumers for /metrics took too long");
            return String::new();
        }
    };
    if consumers.is_empty() {
        return String::new();
    }
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&Consumer) -> String| {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for consumer in consumers.iter() {
            let _ = writeln!(
                text,
                "{name}{{consumer=\"{}\"}} {}",
                consumer.name,
                value(consumer)
            );
        }
    };
    gauge(
        "tidemark_consumer_lag_changes",
        &format!(
            "Changes of a named feed consumer's filter after the position it last read from \
             (counted up to {LAG_CAP})"
        ),
        &|c| c.lag.changes.to_string(),
    );
    gauge(
        "tidemark_consumer_lag_seconds",
        "Seconds since a named feed consumer last read the feed",
        &|c| c.lag.seconds.to_string(),
    );
    text
}
