//! Sources, their streams, and stream cursors.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{ApiJson, SourcePath, StreamPath};
use super::problems;
use crate::api::error::ApiError;
use crate::spec::auth::Auth;
use crate::spec::cursor::{self, CursorUpdate, CursorView};
use crate::spec::de::ParseError;
use crate::spec::{SourceList, SourceName, SourceSpec, SourceView, StreamName, StreamView};
use crate::store::{NewSource, StoredSource, StreamState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_source, list_sources))
        .routes(routes!(get_source, replace_source, delete_source))
        .routes(routes!(get_stream))
        .routes(routes!(get_cursor, put_cursor, delete_cursor))
}

fn view(source: StoredSource) -> SourceView {
    SourceView {
        spec: source.spec,
        created_at: source.created_at,
        updated_at: source.updated_at,
    }
}

fn no_source(name: &SourceName) -> ApiError {
    ApiError::not_found(format!("there is no source named `{name}`"))
}

pub(super) fn no_stream(source: &SourceName, stream: &StreamName) -> ApiError {
    ApiError::not_found(format!("there is no stream `{source}/{stream}`"))
}

/// The source named `name`, or a 404.
pub(super) async fn found_source(
    state: &AppState,
    name: &SourceName,
) -> Result<StoredSource, ApiError> {
    state
        .store
        .get_source(name)
        .await?
        .ok_or_else(|| no_source(name))
}

/// The stream `source/stream`, or a 404.
async fn found_stream(
    state: &AppState,
    source: &SourceName,
    stream: &StreamName,
) -> Result<StreamState, ApiError> {
    state
        .store
        .get_stream(source, stream)
        .await?
        .ok_or_else(|| no_stream(source, stream))
}

/// A source may only name hosts the upstream policy allows: its `base_url`, and its OAuth
/// 2.0 token endpoint (the client checks both again before every request, because DNS
/// answers and the policy can change after registration).
fn check_hosts(state: &AppState, spec: &SourceSpec) -> Result<(), ApiError> {
    state
        .hosts
        .check(spec.base_url.as_str())
        .map_err(|e| ApiError::invalid("/base_url", e.to_string()))?;
    if let Auth::Oauth2(oauth) = &spec.auth {
        state
            .hosts
            .check(oauth.token_url.as_str())
            .map_err(|e| ApiError::invalid("/auth/token_url", e.to_string()))?;
    }
    Ok(())
}

/// A list's page size: 1 to 1000, 100 when not given.
pub(super) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_param("limit", "limit must be 1 to 1000"))
    }
}

/// A list's `next`: the key of the page's last item, unless the page is the last one
/// (shorter than `limit`).
pub(super) fn next_after<T>(
    page: &[T],
    limit: u32,
    key: impl FnOnce(&T) -> String,
) -> Option<String> {
    page.last()
        .filter(|_| page.len() == limit as usize)
        .map(key)
}

/// A list's `after`: blank or missing is the beginning; anything else must be a `next`
/// value the list hands out, which `parse` reads.
pub(super) fn after_param<T>(
    after: Option<String>,
    parse: impl FnOnce(String) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    after
        .filter(|a| !a.is_empty())
        .map(|a| {
            parse(a)
                .ok_or_else(|| ApiError::invalid_param("after", "not a `next` value of this list"))
        })
        .transpose()
}

/// Register a source with its streams.
#[utoipa::path(
    post, path = "/v1/sources", tag = "sources",
    request_body = SourceSpec,
    responses(
        (status = 201, description = "Registered", body = SourceView,
         headers(("location" = String, description = "The source's URL"))),
        problems::Admin,
        problems::JsonBody,
        problems::BodyTooLarge,
        problems::Conflict,
    )
)]
#[tracing::instrument(skip_all, fields(source = %body.value.name))]
async fn create_source(
    State(state): State<AppState>,
    body: ApiJson<SourceSpec>,
) -> Result<impl IntoResponse, ApiError> {
    check_hosts(&state, &body.value)?;
    let stored = state
        .store
        .create_source(NewSource {
            spec: &body.value,
            raw: &body.raw,
        })
        .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sources/{}", stored.spec.name)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(view(stored))))
}

/// Paging of lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// The `next` value of the previous page.
    after: Option<String>,
}

/// Paging of the source list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SourceListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// The `next` value of the previous page (a source name); blank: from the beginning.
    #[param(pattern = "^([a-z0-9][a-z0-9_-]{0,63})?$")]
    after: Option<String>,
}

impl ListParams {
    /// The page size, checked.
    pub(super) fn limit(&self) -> Result<u32, ApiError> {
        page_limit(self.limit)
    }

    /// Where the page starts, if not at the beginning.
    pub(super) fn after(&self) -> Option<&str> {
        self.after.as_deref().filter(|a| !a.is_empty())
    }
}

/// List sources, ordered by name.
#[utoipa::path(
    get, path = "/v1/sources", tag = "sources",
    params(SourceListParams),
    responses(
        (status = 200, description = "A page of sources", body = SourceList),
        problems::Reader,
        problems::BadParameter,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_sources(
    State(state): State<AppState>,
    Query(params): Query<SourceListParams>,
) -> Result<Json<SourceList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let after = after_param(params.after, |a| SourceName::try_from(a).ok())?;
    let sources = state.store.list_sources(after.as_ref(), limit).await?;
    let next = next_after(&sources, limit, |s| s.spec.name.to_string());
    Ok(Json(SourceList {
        results: sources.into_iter().map(view).collect(),
        next,
    }))
}

/// Read a source (inline secrets are redacted).
#[utoipa::path(
    get, path = "/v1/sources/{source}", tag = "sources",
    params(SourcePath),
    responses(
        (status = 200, description = "The source", body = SourceView),
        problems::Reader,
        problems::NoSource,
    )
)]
#[tracing::instrument(skip_all, fields(source = %name))]
async fn get_source(
    State(state): State<AppState>,
    SourcePath(name): SourcePath,
) -> Result<Json<SourceView>, ApiError> {
    Ok(Json(view(found_source(&state, &name).await?)))
}

/// Replace a source's spec. Streams that keep their name and pagination type keep their
/// cursor and mirror; a stream whose pagination type changed has its cursor reset;
/// streams left out are removed with their records.
#[utoipa::path(
    put, path = "/v1/sources/{source}", tag = "sources",
    params(SourcePath),
    request_body = SourceSpec,
    responses(
        (status = 200, description = "Replaced", body = SourceView),
        problems::Admin,
        problems::JsonBody,
        problems::BodyTooLarge,
        problems::NoSource,
        problems::Conflict,
    )
)]
#[tracing::instrument(skip_all, fields(source = %name))]
async fn replace_source(
    State(state): State<AppState>,
    SourcePath(name): SourcePath,
    body: ApiJson<SourceSpec>,
) -> Result<Json<SourceView>, ApiError> {
    // A body for another resource conflicts with this one (RFC 9110, 9.3.4).
    if body.value.name != name {
        return Err(ApiError::conflict(format!(
            "the name in the body must be the source's name, `{name}` (sources cannot be renamed)"
        )));
    }
    check_hosts(&state, &body.value)?;
    let stored = state
        .store
        .replace_source(NewSource {
            spec: &body.value,
            raw: &body.raw,
        })
        .await?
        .ok_or_else(|| no_source(&name))?;
    Ok(Json(view(stored)))
}

/// Remove a source with its streams, cursors, jobs and mirrored records. The feed emits
/// nothing for the removed records.
#[utoipa::path(
    delete, path = "/v1/sources/{source}", tag = "sources",
    params(SourcePath),
    responses(
        (status = 204, description = "Removed"),
        problems::Admin,
        problems::NoSource,
    )
)]
#[tracing::instrument(skip_all, fields(source = %name))]
async fn delete_source(
    State(state): State<AppState>,
    SourcePath(name): SourcePath,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_source(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_source(&name))
    }
}

/// Read a stream with its cursor, last job and lag.
#[utoipa::path(
    get, path = "/v1/sources/{source}/streams/{stream}", tag = "streams",
    params(StreamPath),
    responses(
        (status = 200, description = "The stream", body = StreamView),
        problems::Reader,
        problems::NoStream,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
async fn get_stream(
    State(state): State<AppState>,
    StreamPath(source, stream): StreamPath,
) -> Result<Json<StreamView>, ApiError> {
    let found = found_stream(&state, &source, &stream).await?;
    let lag_seconds = found
        .last_success_at
        .map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0);
    Ok(Json(StreamView {
        source: found.source,
        spec: found.spec,
        cursor: found.cursor.map(|c| c.value),
        last_job: found.last_job,
        lag_seconds,
    }))
}

/// Read a stream's cursor (checkpoint).
#[utoipa::path(
    get, path = "/v1/sources/{source}/streams/{stream}/cursor", tag = "streams",
    params(StreamPath),
    responses(
        (status = 200, description = "The cursor", body = CursorView),
        problems::Reader,
        problems::NoStream,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
async fn get_cursor(
    State(state): State<AppState>,
    StreamPath(source, stream): StreamPath,
) -> Result<Json<CursorView>, ApiError> {
    let found = found_stream(&state, &source, &stream).await?;
    let (cursor, updated_at, job) = match found.cursor {
        Some(c) => (Some(c.value), Some(c.updated_at), c.job),
        None => (None, None, None),
    };
    Ok(Json(CursorView {
        stream: format!("{source}/{stream}"),
        cursor,
        updated_at,
        job,
    }))
}

/// Set a stream's cursor; the next incremental run starts there. The body's shape
/// depends on the stream's pagination type (see `CursorUpdate`); `null` resets.
#[utoipa::path(
    put, path = "/v1/sources/{source}/streams/{stream}/cursor", tag = "streams",
    params(StreamPath),
    request_body = CursorUpdate,
    responses(
        (status = 200, description = "The new cursor", body = CursorView),
        problems::Admin,
        problems::JsonBody,
        problems::BodyTooLarge,
        problems::NoStream,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
async fn put_cursor(
    State(state): State<AppState>,
    StreamPath(source, stream): StreamPath,
    body: ApiJson<CursorUpdate>,
) -> Result<Json<CursorView>, ApiError> {
    let found = found_stream(&state, &source, &stream).await?;
    let cursor = Some(body.value.cursor).filter(|c| !c.is_null());
    if let Some(c) = &cursor {
        cursor::check(&found.spec.pagination, &found.base_url, c).map_err(|e| match e {
            ParseError::Invalid { pointer, message } => ApiError::invalid(pointer, message),
            ParseError::Malformed(m) => ApiError::malformed_json(m),
        })?;
    }
    let written = state
        .store
        .set_cursor(&source, &stream, cursor.as_ref())
        .await?
        .ok_or_else(|| no_stream(&source, &stream))?;
    Ok(Json(CursorView {
        stream: format!("{source}/{stream}"),
        updated_at: cursor.as_ref().map(|_| written),
        cursor,
        job: None,
    }))
}

/// Reset a stream's cursor: the next incremental run starts from the beginning.
#[utoipa::path(
    delete, path = "/v1/sources/{source}/streams/{stream}/cursor", tag = "streams",
    params(StreamPath),
    responses(
        (status = 204, description = "Reset"),
        problems::Admin,
        problems::NoStream,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
async fn delete_cursor(
    State(state): State<AppState>,
    StreamPath(source, stream): StreamPath,
) -> Result<StatusCode, ApiError> {
    if state
        .store
        .set_cursor(&source, &stream, None)
        .await?
        .is_some()
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_stream(&source, &stream))
    }
}
