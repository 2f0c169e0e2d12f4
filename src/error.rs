//! One error type for the HTTP API, rendered as `application/problem+json` (RFC 9457).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::feed::FeedError;
use crate::store::StoreError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document (RFC 9457). `type` is a stable, relative URI reference naming the
/// kind of problem (for example `invalid-spec`); clients switch on it, never on `title`
/// or `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `invalid-spec`, `not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// JSON pointer (RFC 6901) to the field of the request body at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

/// The error every handler returns.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    pointer: Option<String>,
    www_authenticate: bool,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            kind,
            title,
            detail,
            pointer: None,
            www_authenticate: false,
            retry_after: None,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            detail.into(),
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail.into())
    }

    /// A request body that is well-formed JSON but not a valid document of its kind.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-spec",
            "Invalid request body",
            detail.into(),
        );
        e.pointer = Some(pointer.into());
        e
    }

    /// A query parameter that does not parse or is out of range.
    pub fn invalid_param(name: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid query parameter",
            detail.into(),
        );
        e.pointer = Some(format!("/{name}"));
        e
    }

    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            detail.into(),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail.into(),
        );
        e.www_authenticate = true;
        e
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            detail.into(),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail.into(),
        )
    }

    /// An error the client cannot act on; the cause is logged, not returned.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; see its logs".into(),
        )
    }

    /// The generic problem for a status produced outside a handler (axum's own
    /// rejections, the router's 404/405, the body limit), keeping their message as detail.
    pub fn from_status(status: StatusCode, detail: String) -> Self {
        let (kind, title) = match status {
            StatusCode::NOT_FOUND => ("not-found", "Not found"),
            StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Payload too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported-media-type", "Unsupported media type")
            }
            StatusCode::REQUEST_TIMEOUT => ("request-timeout", "Request timeout"),
            s if s.is_server_error() => ("internal", "Internal server error"),
            _ => ("bad-request", "Bad request"),
        };
        Self::new(status, kind, title, detail)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: self.kind.to_owned(),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            pointer: self.pointer.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.problem())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidemark\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(detail) => Self::conflict(detail),
            e @ StoreError::Database(_) => {
                tracing::error!(error = %e, "database error");
                if e.is_transient() {
                    Self::unavailable("the database is unreachable; try again shortly")
                } else {
                    Self::internal()
                }
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(%detail, "stored data does not parse");
                Self::internal()
            }
            StoreError::Unreadable(detail) => {
                tracing::error!(%detail, "a stored secret cannot be decrypted");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "stored-secret-unreadable",
                    "Stored secret cannot be decrypted",
                    detail,
                )
            }
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        let detail = e.to_string();
        let since = |mut e: ApiError| {
            e.pointer = Some("/since".into());
            e
        };
        match e {
            FeedError::InvalidSince => since(Self::new(
                StatusCode::BAD_REQUEST,
                "invalid-since-format",
                "Invalid since token",
                detail,
            )),
            FeedError::ScopeMismatch => since(Self::new(
                StatusCode::BAD_REQUEST,
                "since-scope-mismatch",
                "Token issued for another stream filter",
                detail,
            )),
            FeedError::Expired(_) => since(Self::new(
                StatusCode::GONE,
                "since-expired",
                "Token expired",
                detail,
            )),
            FeedError::NoStream(_) => Self::not_found(detail),
            FeedError::InvalidFilter(_) => Self::invalid_param("stream", detail),
            FeedError::TooManyWaiters { retry_after } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-waiters",
                    "Too many waiting requests",
                    detail,
                );
                e.retry_after = Some(retry_after);
                e
            }
            FeedError::Store(e) => e.into(),
        }
    }
}
