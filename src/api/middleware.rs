//! Cross-cutting layers: HTTP metrics, and problem documents for every error response
//! that did not come from a handler.

use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::{ApiError, PROBLEM_JSON};

/// Counts requests by method, route and status, and times them.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The longest plain-text error body carried over into a problem's `detail`.
const MAX_DETAIL: usize = 4096;

/// Rewrites any 4xx/5xx response that is not already a problem document (axum's
/// rejections, the router's 404 and 405, the body limit's 413, a caught panic) into one,
/// keeping the original text as `detail`.
pub async fn problem_json(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_DETAIL)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() || status.is_server_error() {
        match status.as_u16() {
            404 => format!("no route for {method} {path}"),
            405 => format!("{method} is not allowed on {path}"),
            _ => status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_owned(),
        }
    } else {
        text
    };
    let mut problem = ApiError::from_status(status, detail).into_response();
    // Keep headers such as `Allow` and `Retry-After`; the body's type and length change.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// An empty 404, rewritten by [`problem_json`].
pub async fn not_found() -> Response {
    (axum::http::StatusCode::NOT_FOUND, Body::empty()).into_response()
}

/// An empty 405, rewritten by [`problem_json`].
pub async fn method_not_allowed() -> Response {
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, Body::empty()).into_response()
}
