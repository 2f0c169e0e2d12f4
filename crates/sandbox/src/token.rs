//! The token dataset, imitating a POS GraphQL API: `sale(since, first)` returns the sales
//! changed after an opaque `since` token, in change order, with an `until` token to come
//! back with. Every create, update and soft delete (`"deleted": true`) gives the sale the
//! next number of a change counter, so the feed lists each sale once, at its latest
//! change. Tokens carry a format version: after `rotate_format` older tokens get `400`
//! `INVALID_SINCE_FORMAT`, as the real API answers once it has changed its format.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::churn::Dataset;
use super::{Clock, Sandbox, SplitMix64, World, json_array, json_reply};

/// The API's page size limits.
const DEFAULT_FIRST: usize = 100;
const MAX_FIRST: usize = 250;
const PAYMENT_TYPES: [&str; 3] = ["card", "cash", "sbp"];

/// A sale id as the API writes it: `sale_00000042`. The fixed width makes text order
/// and number order agree.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SaleId(u64);

impl fmt::Display for SaleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sale_{:08}", self.0)
    }
}

impl Serialize for SaleId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One sale with its JSON text, rendered once per change.
struct Sale {
    id: SaleId,
    change: u64,
    total_cents: u64,
    items: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    deleted: bool,
    json: String,
}

impl Sale {
    /// Re-renders the stored text; called only when the sale changes, so unchanged sales
    /// are served byte-identically.
    fn render(&mut self) {
        let n = self.id.0;
        self.json = serde_json::json!({
            "id": self.id,
            "receiptNumber": format!("R-{:06}-{n:08}", 100_000 + n % 17),
            "storeId": format!("store_{}", n % 7),
            "createdAt": format_time(self.created),
            "updatedAt": format_time(self.updated),
            "total": format!("{}.{:02}", self.total_cents / 100, self.total_cents % 100),
            "currency": "RUB",
            "itemsCount": self.items,
            "paymentType": PAYMENT_TYPES[(n % 3) as usize],
            "deleted": self.deleted,
        })
        .to_string();
    }
}

/// Formats a time as the API does: RFC 3339 with milliseconds, in UTC (`Z`).
fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The token dataset, indexed by id and by change number.
pub(super) struct Sales {
    rng: SplitMix64,
    by_id: BTreeMap<SaleId, Sale>,
    by_change: BTreeMap<u64, SaleId>,
    last_id: u64,
    last_change: u64,
    /// The token format version; `rotate_format` moves it on.
    version: u32,
}

impl Sales {
    /// Applies `edit` to a sale, stamps it `at` and gives it the next change number.
    fn touch(&mut self, id: SaleId, at: DateTime<Utc>, edit: impl FnOnce(&mut Sale)) {
        if let Some(sale) = self.by_id.get_mut(&id) {
            self.by_change.remove(&sale.change);
            self.last_change += 1;
            edit(sale);
            sale.change = self.last_change;
            sale.updated = at;
            sale.render();
            self.by_change.insert(sale.change, id);
        }
    }

    fn live_sales(&self) -> impl Iterator<Item = &Sale> {
        self.by_id.values().filter(|s| !s.deleted)
    }

    fn token(&self, change: u64) -> String {
        format!("v{}.{change:016x}", self.version)
    }

    /// The change number in a token of the current format, `None` for any other text.
    fn decode(&self, token: &str) -> Option<u64> {
        let (version, change) = token.strip_prefix('v')?.split_once('.')?;
        let current = version.parse::<u32>().ok()? == self.version;
        let well_formed = change.len() == 16 && change.bytes().all(|b| b.is_ascii_hexdigit());
        (current && well_formed)
            .then(|| u64::from_str_radix(change, 16).ok())
            .flatten()
    }

    /// The reply to one `sale(since, first)` query.
    fn page(&self, since: Option<&str>, first: usize) -> Result<String, GraphQlError> {
        let after = match since {
            None => 0,
            Some(token) => self.decode(token).ok_or_else(GraphQlError::invalid_since)?,
        };
        let sales: Vec<&Sale> = self
            .by_change
            .range((Bound::Excluded(after), Bound::Unbounded))
            .take(first)
            .filter_map(|(_, id)| self.by_id.get(id))
            .collect();
        // The token characters need no JSON escaping.
        let until = match sales.last() {
            Some(last) => format!("\"{}\"", self.token(last.change)),
            None => "null".to_owned(),
        };
        let results = json_array(sales.iter().map(|s| s.json.as_str()));
        Ok(format!(
            r#"{{"data":{{"sale":{{"until":{until},"results":{results}}}}}}}"#
        ))
    }
}

impl Dataset for Sales {
    type Id = SaleId;
    type Stamp = DateTime<Utc>;

    fn new(rng: SplitMix64) -> Self {
        Sales {
            rng,
            by_id: BTreeMap::new(),
            by_change: BTreeMap::new(),
            last_id: 0,
            last_change: 0,
            version: 1,
        }
    }

    fn parts(world: &mut World) -> (&mut Self, &mut Clock) {
        (&mut world.sales, &mut world.clock)
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// Till clocks have milliseconds.
    fn stamp(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        at + TimeDelta::milliseconds(self.rng.below(1000) as i64)
    }

    fn format_time(at: DateTime<Utc>) -> String {
        format_time(at)
    }

    fn live(&self) -> Vec<SaleId> {
        self.live_sales().map(|s| s.id).collect()
    }

    fn create(&mut self, at: DateTime<Utc>) -> SaleId {
        self.last_id += 1 + self.rng.below(3);
        self.last_change += 1;
        let id = SaleId(self.last_id);
        let mut sale = Sale {
            id,
            change: self.last_change,
            total_cents: total(&mut self.rng),
            items: 1 + self.rng.below(12),
            created: at,
            updated: at,
            deleted: false,
            json: String::new(),
        };
        sale.render();
        self.by_change.insert(sale.change, id);
        self.by_id.insert(id, sale);
        id
    }

    /// A corrected receipt: a new total and item count.
    fn update(&mut self, id: SaleId, at: DateTime<Utc>) {
        let (total, items) = (total(&mut self.rng), 1 + self.rng.below(12));
        self.touch(id, at, |s| {
            s.total_cents = total;
            s.items = items;
        });
    }

    fn delete(&mut self, id: SaleId, at: DateTime<Utc>) {
        self.touch(id, at, |s| s.deleted = true);
    }

    fn truth(&self) -> String {
        json_array(self.live_sales().map(|s| s.json.as_str()))
    }
}

fn total(rng: &mut SplitMix64) -> u64 {
    100 + rng.below(5_000_000)
}

/// A GraphQL error: `400` with `{"errors": [{"message", "extensions": {"code"}}]}`.
struct GraphQlError {
    message: String,
    code: &'static str,
}

impl GraphQlError {
    /// What the API answers to a token it cannot read (garbage, or an older format).
    fn invalid_since() -> Self {
        GraphQlError {
            message: "since: invalid format".to_owned(),
            code: "INVALID_SINCE_FORMAT",
        }
    }
}

impl IntoResponse for GraphQlError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "message": self.message, "extensions": { "code": self.code } }]
        });
        json_reply(StatusCode::BAD_REQUEST, body.to_string())
    }
}

/// A GraphQL request body. `query` is not parsed: the API has one query.
#[derive(Deserialize)]
struct Request {
    variables: Option<Variables>,
}

/// `since` and `first` stay JSON values until checked, so that each bad value gets its
/// own error code.
#[derive(Default, Deserialize)]
struct Variables {
    #[serde(default)]
    since: Value,
    #[serde(default)]
    first: Value,
}

impl Variables {
    /// `since` (blank or null: from the start) and `first`.
    fn parse(&self) -> Result<(Option<&str>, usize), GraphQlError> {
        let since = match &self.since {
            Value::Null => None,
            Value::String(text) if text.is_empty() => None,
            Value::String(text) => Some(text.as_str()),
            _ => return Err(GraphQlError::invalid_since()),
        };
        let first = match &self.first {
            Value::Null => DEFAULT_FIRST,
            value => value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_FIRST).contains(n))
                .ok_or_else(|| GraphQlError {
                    message: format!("first: must be an integer between 1 and {MAX_FIRST}"),
                    code: "BAD_USER_INPUT",
                })?,
        };
        Ok((since, first))
    }
}

/// `POST /pos/graphql`: the `sale` query.
pub(super) async fn list(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    let request: Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("invalid request body: {e}");
            return GraphQlError {
                message,
                code: "BAD_REQUEST",
            }
            .into_response();
        }
    };
    let variables = request.variables.unwrap_or_default();
    let page = variables
        .parse()
        .and_then(|(since, first)| sandbox.world().sales.page(since, first));
    match page {
        Ok(body) => json_reply(StatusCode::OK, body),
        Err(error) => error.into_response(),
    }
}

/// `POST /_control/token/rotate_format`: a new token format; older tokens are refused.
pub(super) async fn rotate_format(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let mut world = sandbox.world();
    world.sales.version += 1;
    let body = serde_json::json!({ "version": world.sales.version });
    json_reply(StatusCode::OK, body.to_string())
}
