//! Request extractors whose rejections are problem documents.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::api::error::ApiError;
use crate::spec::de::{ParseError, parse_object};
use crate::spec::{SourceName, StreamName};

/// A JSON body parsed into `T`, keeping the text it came from. A body that is not JSON
/// is a 400 `malformed-json`; JSON that is not an object, or not a valid `T`, is a 422
/// `invalid-spec` naming the field at fault; a body without a JSON content type is a 415.
pub struct ApiJson<T> {
    pub value: T,
    pub raw: String,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        Self::from_bytes(bytes)
    }
}

impl<T: DeserializeOwned> ApiJson<T> {
    fn from_bytes(bytes: Bytes) -> Result<Self, ApiError> {
        let value = parse_object::<T>(&bytes).map_err(|e| match e {
            ParseError::Malformed(detail) => ApiError::malformed_json(detail),
            ParseError::Invalid { pointer, message } => ApiError::invalid(pointer, message),
        })?;
        // `parse` succeeded, so the body is valid UTF-8 JSON.
        let raw = String::from_utf8(bytes.to_vec())
            .map_err(|e| ApiError::malformed_json(e.to_string()))?;
        Ok(ApiJson { value, raw })
    }
}

/// Like [`ApiJson`], but an empty body (with any content type) or JSON `null` means
/// `T::default()`, so `curl -X POST` works for requests whose fields all have defaults.
pub struct JsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers().get(header::CONTENT_TYPE));
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        let value: Option<T> = ApiJson::from_bytes(bytes)?.value;
        Ok(JsonOrEmpty(value.unwrap_or_default()))
    }
}

/// A body that could not be read: too large (413), sent too slowly (408, the client
/// timeout), or broken off (400).
fn body_rejection(rejection: BytesRejection) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::from_status(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive within the client timeout".into(),
            );
        }
        cause = error.source();
    }
    ApiError::from_status(rejection.status(), rejection.body_text())
}

/// `application/json` or any `application/*+json`, with or without parameters.
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(mime) = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The `{source}` path segment. A name that is not a valid slug cannot exist: 404.
#[derive(IntoParams)]
#[into_params(names("source"), parameter_in = Path)]
pub struct SourcePath(
    /// Source name
    pub SourceName,
);

/// The `{source}` and `{stream}` path segments.
#[derive(IntoParams)]
#[into_params(names("source", "stream"), parameter_in = Path)]
pub struct StreamPath(
    /// Source name
    pub SourceName,
    /// Stream name
    pub StreamName,
);

impl<S: Send + Sync> FromRequestParts<S> for SourcePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(SourcePath(source_name(&path_params(parts, state).await?)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        let source = source_name(&params)?;
        let stream = param(&params, "stream")
            .and_then(|s| StreamName::try_from(s.to_owned()).ok())
            .ok_or_else(|| ApiError::not_found(format!("source `{source}` has no such stream")))?;
        Ok(StreamPath(source, stream))
    }
}

async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>, ApiError> {
    let axum::extract::Path(params) =
        axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::from_status(r.status(), r.body_text()))?;
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn source_name(params: &[(String, String)]) -> Result<SourceName, ApiError> {
    param(params, "source")
        .and_then(|s| SourceName::try_from(s.to_owned()).ok())
        .ok_or_else(|| ApiError::not_found("no such source"))
}

/// The `{id}` path segment of a job. An id that is not a UUID cannot exist: 404.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct JobPath(
    /// Job id
    pub uuid::Uuid,
);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = path_params(parts, state).await?;
        param(&params, "id")
            .and_then(|id| id.parse().ok())
            .map(JobPath)
            .ok_or_else(|| ApiError::not_found("there is no job with this id"))
    }
}

/// The `{source}`, `{stream}` and `{key}` path segments.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecordPath {
    /// Source name
    pub source: SourceName,
    /// Stream name
    pub stream: StreamName,
    /// The record's key
    pub key: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RecordPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let StreamPath(source, stream) = StreamPath::from_request_parts(parts, state).await?;
        let params = path_params(parts, state).await?;
        let key = param(&params, "key").unwrap_or_default().to_owned();
        Ok(RecordPath {
            source,
            stream,
            key,
        })
    }
}
