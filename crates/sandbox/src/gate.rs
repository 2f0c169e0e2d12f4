//! The gate every upstream API request passes (control requests do not): it is logged,
//! may be given the next fault, and must carry the configured credential. A fault comes
//! first, as it would from the network or a proxy in front of the real API.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::faults::{self, Fault};
use super::requests::Entry;
use super::wire::Sever;
use super::{Sandbox, json_reply};

/// The largest request body read (GraphQL queries are small).
const MAX_BODY: usize = 1 << 20;

pub(super) async fn gate(
    State(sandbox): State<Arc<Sandbox>>,
    request: Request,
    next: Next,
) -> Response {
    let arrived = Instant::now();
    let sever = request
        .extensions()
        .get::<ConnectInfo<Sever>>()
        .map(|info| info.0.clone());
    let (parts, body) = request.into_parts();
    let (body, variables) = match parts.method {
        Method::POST => read_variables(body).await,
        _ => (body, None),
    };
    let at_ms = u64::try_from((arrived - sandbox.started).as_millis()).unwrap_or(u64::MAX);
    let (seq, fault, denial) = {
        let mut world = sandbox.world();
        let world = &mut *world;
        let fault = world.faults.next(parts.uri.path(), &mut world.noise);
        let denial = world
            .credentials
            .check(&parts.headers, parts.uri.query(), arrived)
            .err();
        let entry = Entry::new(&parts, at_ms, fault.map(Fault::kind), variables);
        (world.requests.push(entry), fault, denial)
    };
    let request = Request::from_parts(parts, body);
    let answer = async move {
        match denial {
            Some(denial) => denial.into_response(),
            None => next.run(request).await,
        }
    };
    let response = match fault {
        None => answer.await,
        Some(Fault::Slow { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answer.await
        }
        Some(Fault::Truncated) => faults::truncate(answer.await).await,
        Some(Fault::RateLimit { remaining, reset }) => {
            faults::rate_limited(answer.await, remaining, reset)
        }
        Some(Fault::Reset) => match sever {
            Some(sever) => {
                // The response is never written: the connection fails first. The log
                // keeps no status for it.
                sever.cut();
                return StatusCode::BAD_GATEWAY.into_response();
            }
            None => json_reply(
                StatusCode::BAD_GATEWAY,
                serde_json::json!({ "errors": ["reset fault: served without sandbox::serve, cannot cut the connection"] })
                    .to_string(),
            ),
        },
        Some(Fault::Status { status }) => faults::error_reply(status),
        Some(Fault::RetryAfter { status, seconds }) => faults::retry_after(status, seconds),
        Some(Fault::Html { status }) => faults::html_reply(status),
        Some(Fault::Huge { bytes }) => {
            faults::huge_reply(bytes, sandbox.world().faults.huge_sent.clone())
        }
    };
    sandbox.world().requests.finish(seq, response.status());
    response
}

/// Reads a POST body to log its GraphQL `variables`, giving the handler the same bytes.
/// A body that cannot be read is passed on empty, for the handler to reject.
async fn read_variables(body: Body) -> (Body, Option<Box<RawValue>>) {
    #[derive(Deserialize)]
    struct Envelope {
        variables: Option<Box<RawValue>>,
    }
    match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let variables = serde_json::from_slice::<Envelope>(&bytes)
                .ok()
                .and_then(|envelope| envelope.variables);
            (Body::from(bytes), variables)
        }
        Err(_) => (Body::empty(), None),
    }
}
