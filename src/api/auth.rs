//! Bearer-token authentication of `/v1/*`: `reader` tokens may read (GET, HEAD), `admin`
//! tokens may do everything. With no tokens configured the API is open (and tidemark
//! only binds to loopback addresses).

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::api::error::ApiError;
use crate::config::Role;

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.tokens.is_empty() || !req.uri().path().starts_with("/v1/") || is_webhook(&req) {
        return next.run(req).await;
    }
    let needed = if matches!(*req.method(), Method::GET | Method::HEAD) {
        Role::Reader
    } else {
        Role::Admin
    };
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = token else {
        return ApiError::unauthorized("send `Authorization: Bearer <token>`").into_response();
    };
    match state.tokens.role_of(token) {
        None => ApiError::unauthorized("the bearer token is not valid").into_response(),
        Some(role) if role < needed => {
            ApiError::forbidden("this operation needs an admin token").into_response()
        }
        Some(_) => next.run(req).await,
    }
}

/// Upstream webhooks carry their source's webhook secret instead of an API token (the
/// handler checks it).
fn is_webhook(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == Method::POST
        && path.strip_prefix("/v1/sources/").is_some_and(|rest| {
            rest.strip_suffix("/webhook")
                .is_some_and(|source| !source.is_empty() && !source.contains('/'))
        })
}
