//! The mirror: what tidemark holds of each stream.

use axum::Json;
use axum::extract::{Query, State};
use serde_json::value::RawValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::extract::{RecordPath, StreamPath};
use super::problems;
use super::sources::{ListParams, next_after, no_stream};
use crate::api::error::ApiError;
use crate::spec::record::{RecordEntry, RecordList};
use crate::store::{StoreError, StoredRecord};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_records))
        .routes(routes!(get_record))
}

fn entry(record: StoredRecord) -> Result<RecordEntry, ApiError> {
    let body = RawValue::from_string(record.body)
        .map_err(|e| StoreError::Corrupt(format!("stored record {}: {e}", record.key)))?;
    Ok(RecordEntry {
        key: record.key,
        rev: record.rev,
        record: body,
        synced_at: record.synced_at,
    })
}

/// List a stream's mirrored records in key order (deleted records are not listed).
#[utoipa::path(
    get, path = "/v1/sources/{source}/streams/{stream}/records", tag = "records",
    params(StreamPath, ListParams),
    responses(
        (status = 200, description = "A page of records", body = RecordList),
        problems::Reader,
        problems::BadParameter,
        problems::NoStream,
    )
)]
#[tracing::instrument(skip_all, fields(source = %source, stream = %stream))]
async fn list_records(
    State(state): State<AppState>,
    StreamPath(source, stream): StreamPath,
    Query(params): Query<ListParams>,
) -> Result<Json<RecordList>, ApiError> {
    let limit = params.limit()?;
    let records = state
        .store
        .list_records(&source, &stream, params.after(), limit)
        .await?
        .ok_or_else(|| no_stream(&source, &stream))?;
    let next = next_after(&records, limit, |r| r.key.clone());
    Ok(Json(RecordList {
        results: records.into_iter().map(entry).collect::<Result<_, _>>()?,
        next,
    }))
}

/// Read one mirrored record by key.
#[utoipa::path(
    get, path = "/v1/sources/{source}/streams/{stream}/records/{key}", tag = "records",
    params(RecordPath),
    responses(
        (status = 200, description = "The record", body = RecordEntry),
        problems::Reader,
        problems::NoRecord,
    )
)]
#[tracing::instrument(skip_all, fields(source = %path.source, stream = %path.stream))]
async fn get_record(
    State(state): State<AppState>,
    path: RecordPath,
) -> Result<Json<RecordEntry>, ApiError> {
    let found = state
        .store
        .get_record(&path.source, &path.stream, &path.key)
        .await?
        .ok_or_else(|| no_stream(&path.source, &path.stream))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "`{}/{}` has no record with key `{}`",
                path.source, path.stream, path.key
            ))
        })?;
    Ok(Json(entry(found)?))
}
