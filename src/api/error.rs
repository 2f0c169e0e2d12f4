//! One error type for the HTTP API, rendered as `application/problem+json` (RFC 9457)
//! from the problem catalogue ([`crate::problem`]).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::feed::FeedError;
use crate::problem::{Problem, ProblemType};
use crate::store::StoreError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The error every handler returns.
#[derive(Debug)]
pub struct ApiError {
    problem: Problem,
    www_authenticate: bool,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            problem: Problem::new(kind, detail),
            www_authenticate: false,
            retry_after: None,
        }
    }

    fn at(mut self, pointer: impl Into<String>) -> Self {
        self.problem.pointer = Some(pointer.into());
        self
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Conflict, detail)
    }

    /// A request body that is well-formed JSON but not a valid document of its kind.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ProblemType::InvalidSpec, detail).at(pointer)
    }

    /// A query parameter that does not parse or is out of range.
    pub fn invalid_param(name: &str, detail: impl Into<String>) -> Self {
        Self::new(ProblemType::InvalidParameter, detail).at(format!("/{name}"))
    }

    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::MalformedJson, detail)
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            ProblemType::UnsupportedMediaType,
            "the request body must be JSON, sent with `Content-Type: application/json`",
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(ProblemType::Unauthorized, detail);
        e.www_authenticate = true;
        e
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Forbidden, detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unavailable, detail)
    }

    /// An error the client cannot act on; the cause is logged, not returned.
    pub fn internal() -> Self {
        Self::new(
            ProblemType::Internal,
            "the server failed to handle the request; see its logs",
        )
    }

    /// The generic problem for a status produced outside a handler (axum's own
    /// rejections, the router's 404/405, the body limit), keeping their message as detail.
    pub fn from_status(status: StatusCode, detail: String) -> Self {
        let kind = match status {
            StatusCode::NOT_FOUND => ProblemType::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemType::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemType::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemType::UnsupportedMediaType,
            StatusCode::REQUEST_TIMEOUT => ProblemType::RequestTimeout,
            s if s.is_server_error() => ProblemType::Internal,
            _ => ProblemType::BadRequest,
        };
        let mut e = Self::new(kind, detail);
        // The catalogue's status of the kind, unless the status was more specific.
        e.problem.status = status.as_u16();
        e
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn problem(&self) -> Problem {
        self.problem.clone()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.problem)).into_response();
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
            e @ StoreError::Unreadable(_) => {
                tracing::error!(detail = %e, "a stored secret cannot be decrypted");
                Self {
                    problem: e.problem(),
                    www_authenticate: false,
                    retry_after: None,
                }
            }
        }
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        let detail = e.to_string();
        match e {
            FeedError::InvalidSince => {
                Self::new(ProblemType::InvalidSinceFormat, detail).at("/since")
            }
            FeedError::ScopeMismatch => {
                Self::new(ProblemType::SinceScopeMismatch, detail).at("/since")
            }
            FeedError::Expired(_) => Self::new(ProblemType::SinceExpired, detail).at("/since"),
            FeedError::NoStream(_) => Self::not_found(detail),
            FeedError::InvalidFilter(_) => Self::invalid_param("stream", detail),
            FeedError::TooManyWaiters { retry_after } => {
                let mut e = Self::new(ProblemType::TooManyWaiters, detail);
                e.retry_after = Some(retry_after);
                e
            }
            FeedError::Store(e) => e.into(),
        }
    }
}
