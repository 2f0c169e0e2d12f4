//! The request log: every upstream API request in arrival order, with the status it got
//! and the fault it was given, so tests can count requests and time retries.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::Serialize;
use serde_json::value::RawValue;

use super::faults::Kind;
use super::{Sandbox, json_reply};

/// The log keeps the latest entries only, so a soak run cannot exhaust memory.
const CAPACITY: usize = 100_000;

/// One request, as `GET /_control/requests` lists it.
#[derive(Serialize)]
pub(super) struct Entry {
    method: String,
    path: String,
    query: Option<String>,
    /// `None` until answered, and for ever when the connection was reset.
    status: Option<u16>,
    fault: Option<Kind>,
    /// Real milliseconds since the sandbox was created, at arrival.
    at_ms: u64,
    /// The `variables` of a JSON (GraphQL) body, verbatim.
    #[serde(skip_serializing_if = "Option::is_none")]
    variables: Option<Box<RawValue>>,
}

impl Entry {
    pub(super) fn new(
        request: &Parts,
        at_ms: u64,
        fault: Option<Kind>,
        variables: Option<Box<RawValue>>,
    ) -> Self {
        Entry {
            method: request.method.to_string(),
            path: request.uri.path().to_owned(),
            query: request.uri.query().map(str::to_owned),
            status: None,
            fault,
            at_ms,
            variables,
        }
    }
}

#[derive(Default)]
pub(super) struct Requests {
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`: requests finish after later ones arrive and
    /// after old entries were dropped, so they are found by number, not by index.
    first: u64,
}

impl Requests {
    /// Logs an arriving request; returns its sequence number for [`Requests::finish`].
    pub(super) fn push(&mut self, entry: Entry) -> u64 {
        if self.entries.len() == CAPACITY {
            self.entries.pop_front();
            self.first += 1;
        }
        self.entries.push_back(entry);
        self.first + self.entries.len() as u64 - 1
    }

    /// Records the status request `seq` was answered with (if it is still in the log).
    pub(super) fn finish(&mut self, seq: u64, status: StatusCode) {
        let entry = seq
            .checked_sub(self.first)
            .and_then(|i| self.entries.get_mut(usize::try_from(i).ok()?));
        if let Some(entry) = entry {
            entry.status = Some(status.as_u16());
        }
    }
}

/// `GET /_control/requests`: `{"requests": [...]}`, oldest first.
pub(super) async fn list(State(sandbox): State<Arc<Sandbox>>) -> Response {
    #[derive(Serialize)]
    struct Listing<'a> {
        requests: &'a VecDeque<Entry>,
    }
    let world = sandbox.world();
    match serde_json::to_string(&Listing {
        requests: &world.requests.entries,
    }) {
        Ok(body) => json_reply(StatusCode::OK, body),
        Err(e) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "errors": [e.to_string()] }).to_string(),
        ),
    }
}

/// `DELETE /_control/requests`: empties the log. Requests still in flight are not
/// written back into it.
pub(super) async fn clear(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let mut world = sandbox.world();
    let requests = &mut world.requests;
    requests.first += requests.entries.len() as u64;
    requests.entries.clear();
    json_reply(StatusCode::OK, r#"{"requests":[]}"#.to_owned())
}
