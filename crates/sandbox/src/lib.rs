//! The simulated upstream (`tidemark sandbox`): in-memory datasets that speak the seed
//! APIs' pagination styles exactly, plus control endpoints that churn them, inject
//! faults, demand credentials and log requests, so sync tests can prove convergence
//! against a known answer.
//!
//! Everything is deterministic: seeded PRNGs drive every random choice and a sandbox
//! clock (not the wall clock) stamps every mutation and every `Date` header. Only the
//! request log's `at_ms`, the `slow` fault and access-token expiry use real time.
//!
//! Upstream APIs (logged, subject to faults and to the configured credential):
//! - `GET /insales/products.json?updated_since=&from_id=&per_page=&with_deleted=&deleted=`
//!   (keyset): a bare array of products.
//! - `POST /pos/graphql` `{"query": "...", "variables": {"since": "<token>", "first": n}}`
//!   (token): `{"data": {"sale": {"until": "<token>" | null, "results": [...]}}}`.
//! - `GET /carrot/conversations?paginate_position=[ts,id]&paginate_count=&paginate_direction=&paginate_including=&paginate_page_order=`
//!   (position): `{"data": [...], "meta": {"next_after_position": [ts, id] | null,
//!   "next_before_position": [ts, id] | null}}`.
//! - `GET /reqon/items?modified_since=&offset=&limit=&includeDeleted=` (offset):
//!   `{"items": [...], "total": n}`; `GET /reqon/items/deleted?modified_since=&page=&per_page=`:
//!   `{"deletions": [{"id": n, "deletedAt": "..."}]}`.
//! - `GET /link/orders?per_page=&after=` (link): a bare array, with
//!   `Link: <http://HOST/link/orders?per_page=N&after=ID>; rel="next"` on a full page.
//!
//! Real-API dialects, imitated from their public documentation (the `dialect` module;
//! what each imitates and simplifies is in `docs/sandbox-dialects.md`), each dataset
//! generated on its first use:
//! - `GET /github/repos/tidemark/sandbox/issues?state=&sort=&direction=&since=&per_page=&page=`:
//!   a bare array, `Link` with `rel="next"`, `"last"`, `"prev"`, `"first"` page numbers.
//! - `GET /shopify/admin/api/{version}/products.json?updated_at_min=&updated_at_max=&since_id=&limit=`:
//!   `{"products": [...]}`, `Link` with `page_info` cursors (`rel="next"`, `"previous"`);
//!   with `page_info`, any parameter but `limit` and `fields` is a `400`.
//! - `GET /shopify/admin/api/{version}/orders.json?status=&updated_at_min=&limit=&page_info=`
//!   and `GET /shopify/admin/api/{version}/orders/{id}/transactions.json?limit=&page_info=`:
//!   `{"orders": [...]}` by `(updated_at, id)` and one order's `{"transactions": [...]}`
//!   (`404` for an order that is gone), both paged by `page_info` links; a transaction's
//!   change moves its order's `updated_at`. Control: `POST
//!   /_control/shopify_orders/{create,update,delete}` and
//!   `.../transactions/{create,update,delete}` (`{"count": n, "touch_order": bool}`),
//!   `GET /_control/shopify_orders/truth` (`{"orders": {...}, "transactions": {...}}`).
//! - `GET /stripe/v1/customers?limit=&starting_after=&ending_before=&created[gte]=&…`:
//!   `{"object": "list", "data": [...], "has_more", "url"}`, newest first.
//! - `GET /zendesk/api/v2/incremental/tickets/cursor.json?start_time=|cursor=&per_page=&exclude_deleted=`:
//!   `{"tickets": [...], "after_url", "after_cursor", "before_url", "before_cursor",
//!   "end_of_stream"}`.
//! - `POST /hubspot/crm/v3/objects/contacts/search` `{"filterGroups", "sorts", "limit",
//!   "after"}`: `{"total", "results": [...], "paging": {"next": {"after"}}}`, at most
//!   10,000 results a query.
//! - `GET /salesforce/services/data/v59.0/query?q=<SOQL>` and the `nextRecordsUrl` it
//!   names, `GET /services/data/v59.0/query/{locator}-{offset}` (also under
//!   `/salesforce`): `{"totalSize", "done", "nextRecordsUrl", "records": [...]}`.
//! - `GET /jira/rest/api/3/search?jql=&startAt=&maxResults=`: `{"startAt", "maxResults",
//!   "total", "issues": [...]}`.
//! - `GET /graph/v1.0/users/delta?$skiptoken=|$deltatoken=`: `{"@odata.nextLink" |
//!   "@odata.deltaLink", "value": [...]}`, `410 Gone` for an expired token.
//! - `GET /postgrest/items?<column>=<op>.<value>&or=(…)&order=&limit=&offset=`: a bare
//!   array with `Content-Range`.
//! - `GET /clamp/things?page=&per_page=&modified_since=`: `{"things": [...], "page",
//!   "per_page", "next"}`, the last page again for any page past it.
//!
//! `POST /oauth/token` (form-encoded) issues access tokens when the credential is
//! `oauth2`; it is neither logged nor faulted, and counted in `GET /_control/auth`.
//!
//! Control endpoints (never logged, never faulted, no credential), for each style `S`
//! of `keyset`, `token`, `position`, `offset` and `link`, and each dialect `S` of
//! `github`, `shopify`, `stripe`, `zendesk`, `hubspot`, `salesforce`, `jira`, `graph`,
//! `postgrest` and `clamp`:
//! - `POST /_control/S/create`, `/update`, `/delete`, `/mass_update` with
//!   `{"count": n}`, answering `{"ids": [...], "at": "...", "now": "..."}`; deletes are
//!   soft (the record stays, marked deleted) for the styles, Zendesk (`status:
//!   "deleted"`) and Graph (`@removed`), and hard for the other dialects, whose real
//!   APIs can only stop listing a deleted record;
//! - `GET /_control/S/truth`: every live record, byte for byte as served, by id.
//!
//! and also `POST /_control/keyset/archive` (the same as `keyset/delete`),
//! `POST /_control/offset/hard_delete {"count": n}`, `POST /_control/token/rotate_format`,
//! `POST /_control/graph/expire_tokens`,
//! `POST /_control/tick {"seconds": s}` (also at `/_control/keyset/tick`),
//! `POST`/`GET`/`DELETE /_control/faults`, `POST`/`GET /_control/auth`,
//! `POST /_control/auth/revoke` and `GET`/`DELETE /_control/requests`.

mod base64;
mod churn;
mod credentials;
mod dialect;
mod faults;
mod gate;
mod keyset;
mod link;
mod offset;
mod position;
mod requests;
mod token;
mod wire;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{from_fn_with_state, map_response_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Seed used by `tidemark sandbox` so its data is the same on every start.
pub const DEFAULT_SEED: u64 = 42;
/// Records per dataset used by `tidemark sandbox`.
pub const DEFAULT_RECORDS: usize = 1000;

/// A simulated upstream holding one dataset per API style.
pub struct Sandbox {
    /// Real time at construction, the zero of the request log's `at_ms`.
    started: Instant,
    world: Mutex<World>,
}

/// Everything mutable, behind one lock: mutations must see one consistent clock.
struct World {
    clock: Clock,
    products: keyset::Products,
    sales: token::Sales,
    conversations: position::Conversations,
    items: offset::Items,
    orders: link::Orders,
    /// The real-API dialects' datasets, each generated on first use.
    dialects: dialect::Dialects,
    /// Draws faults and access tokens, apart from the datasets' generators so that
    /// neither ever changes the data a seed produces.
    noise: SplitMix64,
    faults: faults::Faults,
    credentials: credentials::Credentials,
    requests: requests::Requests,
}

impl Sandbox {
    /// A sandbox whose datasets hold `records` records each, generated from `seed`.
    pub fn new(seed: u64, records: usize) -> Arc<Self> {
        let clock = Clock::start();
        // Each dataset draws from its own stream, so churning one never changes another.
        let products = churn::generate(SplitMix64::stream(seed, 0), records, &clock);
        let sales = churn::generate(SplitMix64::stream(seed, 1), records, &clock);
        let conversations = churn::generate(SplitMix64::stream(seed, 2), records, &clock);
        let items = churn::generate(SplitMix64::stream(seed, 3), records, &clock);
        let orders = churn::generate(SplitMix64::stream(seed, 4), records, &clock);
        Arc::new(Sandbox {
            started: Instant::now(),
            world: Mutex::new(World {
                clock,
                products,
                sales,
                conversations,
                items,
                orders,
                dialects: dialect::Dialects::new(seed, records),
                noise: SplitMix64::stream(seed, 5),
                faults: faults::Faults::default(),
                credentials: credentials::Credentials::default(),
                requests: requests::Requests::default(),
            }),
        })
    }

    /// All sandbox routes: the upstream APIs, `/oauth/token` and `/_control/...`. The
    /// `reset` fault needs the connection layer of [`serve`]; without it, it answers 502.
    pub fn router(self: &Arc<Self>) -> Router {
        let upstream = Router::new()
            .route("/insales/products.json", get(keyset::list))
            .route("/pos/graphql", post(token::list))
            .route("/carrot/conversations", get(position::list))
            .route("/reqon/items", get(offset::list))
            .route("/reqon/items/deleted", get(offset::deletions))
            .route("/link/orders", get(link::list))
            .merge(dialect::api())
            .route_layer(from_fn_with_state(self.clone(), gate::gate));
        Router::new()
            .merge(upstream)
            .route("/oauth/token", post(credentials::token))
            .merge(churn::routes::<keyset::Products>("keyset"))
            .route(
                "/_control/keyset/archive",
                post(churn::delete::<keyset::Products>),
            )
            .route("/_control/keyset/tick", post(tick))
            .merge(churn::routes::<token::Sales>("token"))
            .route("/_control/token/rotate_format", post(token::rotate_format))
            .merge(churn::routes::<position::Conversations>("position"))
            .merge(churn::routes::<offset::Items>("offset"))
            .route("/_control/offset/hard_delete", post(offset::hard_delete))
            .merge(churn::routes::<link::Orders>("link"))
            .merge(dialect::control())
            .route("/_control/tick", post(tick))
            .route(
                "/_control/faults",
                get(faults::status).post(faults::add).delete(faults::clear),
            )
            .route(
                "/_control/auth",
                get(credentials::status).post(credentials::set),
            )
            .route("/_control/auth/revoke", post(credentials::revoke))
            .route(
                "/_control/requests",
                get(requests::list).delete(requests::clear),
            )
            .layer(map_response_with_state(self.clone(), date_header))
            .with_state(self.clone())
    }

    /// The lock is never held across an await, and a panicking handler leaves the data
    /// consistent enough for a test double, so a poisoned lock is simply taken over.
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves `sandbox` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    sandbox: Arc<Sandbox>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = sandbox
        .router()
        .into_make_service_with_connect_info::<wire::Sever>();
    axum::serve(wire::Listener(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The sandbox's own clock. It moves only when told to (or by one second per ordinary
/// mutation), so timestamps, and with them every test, are reproducible.
struct Clock {
    now: DateTime<Utc>,
}

impl Clock {
    /// 2017-09-04 00:00:00 +03:00, the example date of the InSales documentation.
    fn start() -> Self {
        Clock {
            now: DateTime::from_timestamp(1_504_472_400, 0).unwrap_or_default(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Moves the clock forward; `None` (clock unchanged) past chrono's range.
    fn advance(&mut self, seconds: u32) -> Option<DateTime<Utc>> {
        self.now = self
            .now
            .checked_add_signed(TimeDelta::seconds(i64::from(seconds)))?;
        Some(self.now)
    }
}

/// SplitMix64: a tiny, well-mixed PRNG, enough to make churn deterministic per seed.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Generator number `stream` of `seed`. Stream 0 is the seed itself (the keyset
    /// dataset's, as before there were other streams); the others start from a mixed
    /// value so that they do not overlap it.
    fn stream(seed: u64, stream: u64) -> Self {
        match stream {
            0 => SplitMix64(seed),
            _ => SplitMix64(SplitMix64(seed ^ stream).next_u64()),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// A number in `[0, 1)`, from the top 53 bits (all an `f64` mantissa holds).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A control body parsed as JSON whatever its `Content-Type` (so a bare `curl -d` works),
/// every failure a JSON `400` instead of axum's plain-text rejection.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| bad_request(&e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| bad_request(&format!("invalid JSON body: {e}")))
    }
}

#[derive(serde::Deserialize)]
struct TickBody {
    seconds: u32,
}

/// `POST /_control/tick {"seconds": s}`: advances the sandbox clock. Answers
/// `{"now": ...}` in the keyset format, for which it was first written.
async fn tick(State(sandbox): State<Arc<Sandbox>>, JsonBody(body): JsonBody<TickBody>) -> Response {
    let now = sandbox.world().clock.advance(body.seconds);
    match now {
        Some(now) => json_reply(
            StatusCode::OK,
            serde_json::json!({ "now": keyset::format_time(now) }).to_string(),
        ),
        None => bad_request("the clock cannot move that far"),
    }
}

/// Every reply carries the sandbox clock as its `Date`, as a real upstream carries its
/// own: the gateway takes a run's start from it.
async fn date_header(State(sandbox): State<Arc<Sandbox>>, mut response: Response) -> Response {
    let now = sandbox.world().clock.now();
    let text = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().insert(header::DATE, value);
    }
    response
}

/// A reply whose JSON body is already text (records are served from their stored text).
fn json_reply(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A `400` with a JSON body, the way the imitated APIs reject bad parameters.
fn bad_request(message: &str) -> Response {
    json_reply(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "errors": [message] }).to_string(),
    )
}

/// `http://HOST` of a request, for the next-page URLs an API hands out: built on the
/// request's own `Host`, as real APIs do behind their load balancers. Only host and port
/// characters are accepted, so the host cannot break out of a link.
fn origin(headers: &HeaderMap) -> Result<String, NoHost> {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
        })
        .map(|host| format!("http://{host}"))
        .ok_or(NoHost)
}

/// The [`origin`] of a request, as an extractor for the handlers that link pages.
struct Origin(String);

impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = NoHost;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NoHost> {
        origin(&parts.headers).map(Origin)
    }
}

/// A request without a usable `Host`: a `400`, as no next page can be linked.
struct NoHost;

impl IntoResponse for NoHost {
    fn into_response(self) -> Response {
        bad_request("a valid Host header is required to link the next page")
    }
}

/// Writes stored JSON texts as one array, byte for byte.
fn json_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

/// Parses a page-size style parameter: an integer in `1..=max`.
fn parse_limit(name: &str, value: &str, max: usize) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{name} must be between 1 and {max}, not {value}"))
}

/// Parses a boolean query parameter.
fn parse_flag(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{name} must be true or false, not {value}")),
    }
}

/// The decoded `(name, value)` pairs of a raw query string, blank values left out:
/// clients often send `from_id=` meaning "none".
fn query_pairs(raw: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}
