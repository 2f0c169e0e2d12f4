//! Injected faults: the ways a real upstream misbehaves (errors, throttling, slowness,
//! broken or foreign bodies, dropped connections), queued one per request or drawn at a
//! seeded rate, so the sync engine's retries can be tested against each of them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{JsonBody, Sandbox, SplitMix64, bad_request, json_reply};

/// Bounds one `POST /_control/faults` so a typo cannot exhaust memory.
const MAX_QUEUED: usize = 100_000;
/// The longest `slow` delay: longer than any client timeout worth testing.
const MAX_SLOW_MS: u64 = 600_000;
/// The `slow` delay of random faults when `slow_ms` is not given.
const DEFAULT_SLOW_MS: u64 = 1000;
/// The longest body the `truncated` fault buffers to cut.
const MAX_BODY: usize = 64 << 20;
/// The largest `huge` reply: far beyond any sane client cap, still finite.
const MAX_HUGE_BYTES: u64 = 16 << 30;
/// One record of a `huge` reply, padded so that a record is about 1 KiB.
const HUGE_PAD: usize = 1000;

/// One fault, as `POST /_control/faults` takes it.
#[derive(Clone, Copy, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Fault {
    /// An error status with a JSON body.
    Status { status: u16 },
    /// `429` or `503` with `Retry-After: <seconds>`.
    RetryAfter { status: u16, seconds: u32 },
    /// The normal answer, after a delay.
    Slow { ms: u64 },
    /// A `200` whose JSON body is cut in half (with a matching `Content-Length`).
    Truncated,
    /// An HTML page, as a proxy or a maintenance page serves it (`200` unless given).
    Html {
        #[serde(default = "html_status")]
        status: u16,
    },
    /// The connection closed without any response.
    Reset,
    /// The normal answer with rate-limit headers saying the budget is spent.
    RateLimit { remaining: u32, reset: u32 },
    /// A `200` whose body is a JSON array of about `bytes` bytes of records, generated
    /// while it is sent (chunked, no `Content-Length`), as a runaway upstream serves one.
    Huge { bytes: u64 },
}

fn html_status() -> u16 {
    200
}

/// A fault's name, in the request log and in random fault settings.
#[derive(Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Kind {
    Status,
    RetryAfter,
    Slow,
    Truncated,
    Html,
    Reset,
    RateLimit,
    Huge,
}

impl Fault {
    pub(super) fn kind(self) -> Kind {
        match self {
            Fault::Status { .. } => Kind::Status,
            Fault::RetryAfter { .. } => Kind::RetryAfter,
            Fault::Slow { .. } => Kind::Slow,
            Fault::Truncated => Kind::Truncated,
            Fault::Html { .. } => Kind::Html,
            Fault::Reset => Kind::Reset,
            Fault::RateLimit { .. } => Kind::RateLimit,
            Fault::Huge { .. } => Kind::Huge,
        }
    }

    /// Rejects faults that could not be served as described.
    fn check(self) -> Result<Self, String> {
        let problem = match self {
            Fault::Status { status } if !(400..=599).contains(&status) => {
                "status must be between 400 and 599".to_owned()
            }
            Fault::RetryAfter { status, .. } if status != 429 && status != 503 => {
                "retry_after status must be 429 or 503".to_owned()
            }
            Fault::Slow { ms } if ms > MAX_SLOW_MS => format!("ms must be at most {MAX_SLOW_MS}"),
            Fault::Huge { bytes } if bytes > MAX_HUGE_BYTES => {
                format!("bytes must be at most {MAX_HUGE_BYTES}")
            }
            Fault::Html { status } if status != 200 && !(400..=599).contains(&status) => {
                "html status must be 200 or between 400 and 599".to_owned()
            }
            _ => return Ok(self),
        };
        Err(problem)
    }
}

/// The JSON error body of an injected error status.
pub(super) fn error_reply(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_reply(
        status,
        serde_json::json!({ "errors": [format!("injected fault: {status}")] }).to_string(),
    )
}

/// An injected error status that says when to come back.
pub(super) fn retry_after(status: u16, seconds: u32) -> Response {
    let mut response = error_reply(status);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// An HTML page where JSON was expected, as a misrouted proxy serves one.
pub(super) fn html_reply(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let title = match status {
        StatusCode::OK => "Scheduled maintenance".to_owned(),
        other => other.to_string(),
    };
    let page = format!(
        "<!DOCTYPE html>\n<html><head><title>{title}</title></head>\
         <body><h1>{title}</h1><p>injected fault</p><hr><p>nginx</p></body></html>\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// The normal answer with its body cut in half. `Content-Length` is recomputed from the
/// shorter body, so the client reads a complete response that is not valid JSON.
pub(super) async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return error_reply(500),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
}

/// The normal answer with both spellings of the rate-limit headers.
pub(super) fn rate_limited(mut response: Response, remaining: u32, reset: u32) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("ratelimit-remaining", remaining),
        ("ratelimit-reset", reset),
        ("x-ratelimit-remaining", remaining),
        ("x-ratelimit-reset", reset),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
    response
}

/// A `huge` reply of about `bytes` bytes: `[`, records of about 1 KiB, `]`, made one
/// 64 KiB chunk at a time as the client reads, so the sandbox never holds it. What was
/// handed to the connection is added to `sent`, which tells how much a client read
/// before it hung up.
pub(super) fn huge_reply(bytes: u64, sent: Arc<AtomicU64>) -> Response {
    const CHUNK: u64 = 64 << 10;
    let pad = "x".repeat(HUGE_PAD);
    // The state is (bytes written, next record id), `None` once the closing bracket is out.
    let chunks = futures_util::stream::unfold(Some((0_u64, 0_u64)), move |state| {
        let sent = sent.clone();
        let pad = pad.clone();
        async move {
            let (written, mut id) = state?;
            let mut chunk = String::with_capacity(CHUNK as usize + HUGE_PAD + 64);
            if written == 0 {
                chunk.push('[');
            }
            while (chunk.len() as u64) < CHUNK && written + (chunk.len() as u64) < bytes {
                if id > 0 {
                    chunk.push(',');
                }
                chunk.push_str(&format!(r#"{{"id":{id},"pad":"{pad}"}}"#));
                id += 1;
            }
            let written = written + chunk.len() as u64;
            let next = if written >= bytes {
                chunk.push(']');
                None
            } else {
                Some((written, id))
            };
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((Ok::<_, std::convert::Infallible>(chunk), next))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// A queued fault, for the next request whose path starts with `prefix`.
struct Queued {
    fault: Fault,
    prefix: Option<String>,
}

/// Faults at a rate, for soak runs.
struct Random {
    rate: f64,
    kinds: Vec<Kind>,
    slow_ms: u64,
    prefix: Option<String>,
}

impl Random {
    fn draw(&self, rng: &mut SplitMix64) -> Option<Fault> {
        if rng.unit() >= self.rate {
            return None;
        }
        let kind = *self
            .kinds
            .get(rng.below(self.kinds.len() as u64) as usize)?;
        Some(match kind {
            Kind::Status => Fault::Status {
                status: [500, 502, 503][rng.below(3) as usize],
            },
            Kind::RetryAfter => Fault::RetryAfter {
                status: 429,
                seconds: 1,
            },
            Kind::Slow => Fault::Slow { ms: self.slow_ms },
            Kind::Truncated => Fault::Truncated,
            Kind::Html => Fault::Html { status: 200 },
            Kind::Reset => Fault::Reset,
            Kind::RateLimit => Fault::RateLimit {
                remaining: 0,
                reset: 1,
            },
            Kind::Huge => Fault::Huge { bytes: 1 << 30 },
        })
    }
}

/// The fault settings and what they have done so far.
#[derive(Default)]
pub(super) struct Faults {
    queue: VecDeque<Queued>,
    random: Option<Random>,
    injected: u64,
    /// Bytes of `huge` replies handed to connections.
    pub(super) huge_sent: Arc<AtomicU64>,
}

impl Faults {
    /// The fault for a request to `path`, if any: the first queued one whose prefix
    /// matches, else a random draw.
    pub(super) fn next(&mut self, path: &str, rng: &mut SplitMix64) -> Option<Fault> {
        let admits =
            |prefix: &Option<String>| prefix.as_deref().is_none_or(|p| path.starts_with(p));
        let fault = match self.queue.iter().position(|q| admits(&q.prefix)) {
            Some(i) => self.queue.remove(i).map(|q| q.fault),
            None => self
                .random
                .as_ref()
                .filter(|r| admits(&r.prefix))
                .and_then(|r| r.draw(rng)),
        };
        if fault.is_some() {
            self.injected += 1;
        }
        fault
    }

    fn status(&self) -> Response {
        let body = serde_json::json!({
            "pending": self.queue.len(),
            "injected": self.injected,
            "huge_bytes_sent": self.huge_sent.load(Ordering::Relaxed),
        });
        json_reply(StatusCode::OK, body.to_string())
    }
}

/// The body of `POST /_control/faults`: faults to queue, a random rate, or both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    #[serde(default)]
    faults: Vec<Fault>,
    path_prefix: Option<String>,
    rate: Option<f64>,
    kinds: Option<Vec<Kind>>,
    slow_ms: Option<u64>,
}

impl Settings {
    /// The settings with every value checked, before anything is applied: the faults to
    /// queue, and the random setting (`None`: unchanged, `Some(None)`: turned off).
    fn check(self) -> Result<(Vec<Queued>, Option<Option<Random>>), String> {
        if self.faults.len() > MAX_QUEUED {
            return Err(format!("at most {MAX_QUEUED} faults at once"));
        }
        let queued = self
            .faults
            .into_iter()
            .map(|fault| {
                let prefix = self.path_prefix.clone();
                fault.check().map(|fault| Queued { fault, prefix })
            })
            .collect::<Result<_, _>>()?;
        let random = match self.rate {
            None if self.kinds.is_some() || self.slow_ms.is_some() => {
                return Err("kinds and slow_ms need a rate".to_owned());
            }
            None => None,
            Some(rate) if !(0.0..=1.0).contains(&rate) => {
                return Err("rate must be between 0 and 1".to_owned());
            }
            Some(rate) if rate <= 0.0 => Some(None),
            Some(rate) => {
                let kinds = self.kinds.unwrap_or_else(|| {
                    vec![
                        Kind::Status,
                        Kind::RetryAfter,
                        Kind::Truncated,
                        Kind::Html,
                        Kind::Reset,
                        Kind::Slow,
                    ]
                });
                if kinds.is_empty() {
                    return Err("kinds must name at least one fault".to_owned());
                }
                let slow_ms = self.slow_ms.unwrap_or(DEFAULT_SLOW_MS);
                Fault::Slow { ms: slow_ms }.check()?;
                Some(Some(Random {
                    rate,
                    kinds,
                    slow_ms,
                    prefix: self.path_prefix,
                }))
            }
        };
        Ok((queued, random))
    }
}

/// `POST /_control/faults`: queues `faults` after those already queued and, when `rate`
/// is given, sets (or with 0 turns off) random faults. Answers like `GET`.
pub(super) async fn add(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(settings): JsonBody<Settings>,
) -> Response {
    let (queued, random) = match settings.check() {
        Ok(checked) => checked,
        Err(message) => return bad_request(&message),
    };
    let mut world = sandbox.world();
    world.faults.queue.extend(queued);
    if let Some(random) = random {
        world.faults.random = random;
    }
    world.faults.status()
}

/// `GET /_control/faults`: `{"pending": n, "injected": n, "huge_bytes_sent": n}`.
pub(super) async fn status(State(sandbox): State<Arc<Sandbox>>) -> Response {
    sandbox.world().faults.status()
}

/// `DELETE /_control/faults`: no queued faults, no random ones, and the count at zero.
pub(super) async fn clear(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let mut world = sandbox.world();
    world.faults = Faults::default();
    world.faults.status()
}
