//! Sync jobs: queue them, list and read them, cancel them; and the upstream webhook that
//! queues one as a hint.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{JobPath, JsonOrEmpty, SourcePath, StreamPath};
use super::problems;
use super::sources::{after_param, found_source, next_after, no_stream, page_limit};
use crate::api::error::ApiError;
use crate::spec::job::{JobList, JobStatus, SourceJobs, SyncRequest, Trigger};
use crate::spec::secret::Secret;
use crate::spec::{Job, SourceName, StreamName};
use crate::store::JobFilter;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync_source))
        .routes(routes!(sync_stream))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(webhook))
}

/// Queue a job for every stream of a source. A stream that already has a queued or
/// running job gets no second one: that job is returned.
#[utoipa::path(
    post, path = "/v1/sources/{source}/sync", tag = "jobs",
    params(SourcePath),
    request_body(content = Option<SyncRequest>, description = "Empty for an incremental sync"),
    responses(
        (status = 202, description = "Queued (or already queued or running)", body = SourceJobs),
        problems::Admin,
        problems::JsonBody,
        problems::BodyTooLarge,
        problems::NoSource,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source))]
async fn sync_source(
    State(state): State<AppState>,
    SourcePath(source): SourcePath,
    JsonOrEmpty(body): JsonOrEmpty<SyncRequest>,
) -> Result<(StatusCode, Json<SourceJobs>), ApiError> {
    let spec = found_source(&state, &source).await?.spec;
    let mut jobs = Vec::new();
    for stream in spec.streams.iter() {
        // A stream removed meanwhile by a concurrent replace is simply skipped.
        if let Some(queued) = state
            .store
            .enqueue_job(&source, &stream.name, body.mode, Trigger::Api)
            .await?
        {
            jobs.push(queued.job);
        }
    }
    state.waker.wake();
    Ok((StatusCode::ACCEPTED, Json(SourceJobs { jobs })))
}

/// Queue a job for one stream. A stream has at most one queued or running job: asking
/// again returns that job.
#[utoipa::path(
    post, path = "/v1/sources/{source}/streams/{stream}/sync", tag = "jobs",
    params(StreamPath),
    request_body(content = Option<SyncRequest>, description = "Empty for an incremental sync"),
    responses(
        (status = 202, description = "Queued (or already queued or running)", body = Job),
        problems::Admin,
        problems::JsonBody,
        problems::BodyTooLarge,
        problems::NoStream,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
async fn sync_stream(
    State(state): State<AppState>,
    StreamPath(source, stream): StreamPath,
    JsonOrEmpty(body): JsonOrEmpty<SyncRequest>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let queued = state
        .store
        .enqueue_job(&source, &stream, body.mode, Trigger::Api)
        .await?
        .ok_or_else(|| no_stream(&source, &stream))?;
    state.waker.wake();
    Ok((StatusCode::ACCEPTED, Json(queued.job)))
}

/// Filters and paging of the job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobParams {
    /// Only jobs of this source; blank: of every source.
    #[param(pattern = "^([a-z0-9][a-z0-9_-]{0,63})?$")]
    source: Option<String>,
    /// Only jobs of streams with this name; blank: of every stream.
    #[param(pattern = "^([a-z0-9][a-z0-9_-]{0,63})?$")]
    stream: Option<String>,
    /// Only jobs in this status (`queued`, `running`, `succeeded`, `failed` or
    /// `cancelled`); blank: in any status.
    #[param(pattern = "^(queued|running|succeeded|failed|cancelled)?$")]
    status: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// The `next` value of the previous page (a job id); blank: from the beginning.
    #[param(
        pattern = "^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?$"
    )]
    after: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(JobParams),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        problems::Reader,
        problems::BadParameter,
    )
)]
#[tracing::instrument(skip_all)]
async fn list_jobs(
    State(state): State<AppState>,
    Query(params): Query<JobParams>,
) -> Result<Json<JobList>, ApiError> {
    let limit = page_limit(params.limit)?;
    let filter = JobFilter {
        source: params
            .source
            .filter(|s| !s.is_empty())
            .map(|s| {
                SourceName::try_from(s).map_err(|e| {
                    ApiError::invalid_param("source", format!("not a source name: {e}"))
                })
            })
            .transpose()?,
        stream: params
            .stream
            .filter(|s| !s.is_empty())
            .map(|s| {
                StreamName::try_from(s).map_err(|e| {
                    ApiError::invalid_param("stream", format!("not a stream name: {e}"))
                })
            })
            .transpose()?,
        status: params
            .status
            .filter(|s| !s.is_empty())
            .map(|s| {
                serde_json::from_value::<JobStatus>(serde_json::Value::String(s)).map_err(|_| {
                    ApiError::invalid_param(
                        "status",
                        "status must be queued, running, succeeded, failed or cancelled",
                    )
                })
            })
            .transpose()?,
    };
    // Only the hyphenated form that `next` hands out (the parser also takes others).
    let after = after_param(params.after, |a| {
        Some(a)
            .filter(|a| a.len() == 36)
            .and_then(|a| a.parse().ok())
    })?;
    let jobs = state.store.list_jobs(&filter, after, limit).await?;
    let next = next_after(&jobs, limit, |j| j.id.to_string());
    Ok(Json(JobList {
        results: jobs,
        next,
    }))
}

fn no_job(id: uuid::Uuid) -> ApiError {
    ApiError::not_found(format!("there is no job {id}"))
}

/// Read a job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(JobPath),
    responses(
        (status = 200, description = "The job", body = Job),
        problems::Reader,
        problems::NoJob,
    )
)]
#[tracing::instrument(skip_all, fields(job = %id))]
async fn get_job(
    State(state): State<AppState>,
    JobPath(id): JobPath,
) -> Result<Json<Job>, ApiError> {
    state
        .store
        .get_job(id)
        .await?
        .map(Json)
        .ok_or_else(|| no_job(id))
}

/// Cancel a queued or running job. A running job stops at its next page boundary: the
/// page in flight is not committed, and the cursor stays at the last committed page.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(JobPath),
    responses(
        (status = 200, description = "Cancelled", body = Job),
        problems::Admin,
        problems::NoJob,
        problems::Conflict,
    )
)]
#[tracing::instrument(skip_all, fields(job = %id))]
async fn cancel_job(
    State(state): State<AppState>,
    JobPath(id): JobPath,
) -> Result<Json<Job>, ApiError> {
    match state.store.cancel_job(id).await? {
        None => Err(no_job(id)),
        Some((job, true)) => Ok(Json(job)),
        Some((job, false)) => Err(ApiError::conflict(format!(
            "job {id} has already finished ({})",
            serde_json::to_value(job.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ))),
    }
}

/// The header that carries a source's webhook secret.
const WEBHOOK_SECRET: &str = "x-webhook-secret";

/// An upstream's webhook, taken as a hint that something changed: queues an incremental
/// sync of every stream of the source at once (a stream already syncing gets one more run
/// after it, however many hints arrive meanwhile). The body is ignored. Authenticated by
/// the source's `webhook_secret`, sent as the `X-Webhook-Secret` header; API tokens are
/// not needed. Polling on the schedule stays the guarantee: webhooks can be lost.
#[utoipa::path(
    post, path = "/v1/sources/{source}/webhook", tag = "jobs",
    params(
        SourcePath,
        ("X-Webhook-Secret" = String, Header, description = "The source's webhook secret"),
    ),
    security(()),
    responses(
        (status = 202, description = "Syncs queued", body = SourceJobs),
        problems::Webhook,
        problems::BodyTooLarge,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source))]
async fn webhook(
    State(state): State<AppState>,
    SourcePath(source): SourcePath,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<SourceJobs>), ApiError> {
    let spec = found_source(&state, &source).await?.spec;
    let Some(secret) = &spec.webhook_secret else {
        return Err(ApiError::not_found(format!(
            "source `{source}` has no webhook (set its `webhook_secret`)"
        )));
    };
    let expected = match secret {
        Secret::Inline(value) => Some(value.clone()),
        Secret::Env(name) => std::env::var(name.as_str()).ok(),
    };
    let given = headers
        .get(WEBHOOK_SECRET)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let Some(expected) = expected.filter(|e| !e.is_empty()) else {
        tracing::warn!("the webhook secret's environment variable is not set");
        return Err(ApiError::unauthorized(
            "the webhook secret is not available",
        ));
    };
    if !bool::from(expected.as_bytes().ct_eq(given)) {
        return Err(ApiError::unauthorized(
            "send the source's webhook secret in `X-Webhook-Secret`",
        ));
    }
    let mut jobs = Vec::new();
    for stream in spec.streams.iter() {
        if let Some(job) = state
            .store
            .request_run(&source, &stream.name, Trigger::Webhook)
            .await?
        {
            jobs.push(job);
        }
    }
    state.waker.wake();
    Ok((StatusCode::ACCEPTED, Json(SourceJobs { jobs })))
}
