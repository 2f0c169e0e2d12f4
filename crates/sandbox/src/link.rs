//! The link dataset: orders in id order, a bare JSON array per page, and the next page
//! named by an RFC 8288 `Link: <...>; rel="next"` header on every full page. The next URL
//! is built on the request's own `Host`, as real APIs do behind their load balancers.
//! Soft deletes are `"deleted": true` and stay in the listing; there are no hard deletes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use super::churn::Dataset;
use super::{
    Clock, Sandbox, SplitMix64, World, bad_request, json_array, json_reply, origin, parse_limit,
    query_pairs,
};

/// The API's page size limits.
const DEFAULT_PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 250;
/// Order ids start in a realistic range, not at 1.
const FIRST_ID: u64 = 4_500_000;
/// The order life cycle; an update moves an order one step on (and round again).
const STATUSES: [&str; 5] = ["new", "paid", "packed", "shipped", "delivered"];

/// One order with its JSON text, rendered once per change.
struct Order {
    id: u64,
    status: usize,
    total_cents: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    deleted: bool,
    json: String,
}

impl Order {
    /// Re-renders the stored text; called only when the order changes, so unchanged
    /// orders are served byte-identically.
    fn render(&mut self) {
        self.json = serde_json::json!({
            "id": self.id,
            "number": format!("#{}", self.id - FIRST_ID + 1000),
            "status": STATUSES[self.status % STATUSES.len()],
            "total_price": format!("{}.{:02}", self.total_cents / 100, self.total_cents % 100),
            "currency": "EUR",
            "created_at": format_time(self.created),
            "updated_at": format_time(self.updated),
            "deleted": self.deleted,
        })
        .to_string();
    }
}

/// Formats a time as the API does: RFC 3339 in whole seconds, in UTC (`Z`).
fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The link dataset, by id.
pub(super) struct Orders {
    rng: SplitMix64,
    by_id: BTreeMap<u64, Order>,
    last_id: u64,
}

impl Orders {
    /// Applies `change` to an order and stamps it `at`.
    fn touch(&mut self, id: u64, at: DateTime<Utc>, change: impl FnOnce(&mut Order)) {
        if let Some(order) = self.by_id.get_mut(&id) {
            change(order);
            order.updated = at;
            order.render();
        }
    }

    fn live_orders(&self) -> impl Iterator<Item = &Order> {
        self.by_id.values().filter(|o| !o.deleted)
    }

    /// One page, with the id of its last order when the page is full.
    fn page(&self, query: &Listing) -> (String, Option<u64>) {
        let start = query.after.map_or(Bound::Unbounded, Bound::Excluded);
        let page: Vec<&Order> = self
            .by_id
            .range((start, Bound::Unbounded))
            .take(query.per_page)
            .map(|(_, order)| order)
            .collect();
        let last = page.last().filter(|_| page.len() == query.per_page);
        (
            json_array(page.iter().map(|o| o.json.as_str())),
            last.map(|o| o.id),
        )
    }
}

impl Dataset for Orders {
    type Id = u64;
    type Stamp = DateTime<Utc>;

    fn new(rng: SplitMix64) -> Self {
        Orders {
            rng,
            by_id: BTreeMap::new(),
            last_id: FIRST_ID,
        }
    }

    fn parts(world: &mut World) -> (&mut Self, &mut Clock) {
        (&mut world.orders, &mut world.clock)
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    fn stamp(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn format_time(at: DateTime<Utc>) -> String {
        format_time(at)
    }

    fn live(&self) -> Vec<u64> {
        self.live_orders().map(|o| o.id).collect()
    }

    fn create(&mut self, at: DateTime<Utc>) -> u64 {
        self.last_id += 1 + self.rng.below(10);
        let id = self.last_id;
        let mut order = Order {
            id,
            status: 0,
            total_cents: 500 + self.rng.below(200_000),
            created: at,
            updated: at,
            deleted: false,
            json: String::new(),
        };
        order.render();
        self.by_id.insert(id, order);
        id
    }

    /// The order moves on in its life cycle.
    fn update(&mut self, id: u64, at: DateTime<Utc>) {
        self.touch(id, at, |o| o.status += 1);
    }

    fn delete(&mut self, id: u64, at: DateTime<Utc>) {
        self.touch(id, at, |o| o.deleted = true);
    }

    fn truth(&self) -> String {
        json_array(self.live_orders().map(|o| o.json.as_str()))
    }
}

/// The listing's query, parsed by hand so every bad value gets a JSON `400`.
struct Listing {
    after: Option<u64>,
    per_page: usize,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut listing = Listing {
            after: None,
            per_page: DEFAULT_PER_PAGE,
        };
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "after" => {
                    listing.after = Some(
                        value
                            .parse()
                            .map_err(|_| format!("after is not an id: {value}"))?,
                    );
                }
                "per_page" => listing.per_page = parse_limit("per_page", &value, MAX_PER_PAGE)?,
                _ => {}
            }
        }
        Ok(listing)
    }
}

/// `GET /link/orders`: a bare JSON array of orders, with a `Link` to the next page when
/// this one is full.
pub(super) async fn list(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let listing = match Listing::parse(raw.as_deref()) {
        Ok(listing) => listing,
        Err(message) => return bad_request(&message),
    };
    let origin = match origin(&headers) {
        Ok(origin) => origin,
        Err(refusal) => return refusal.into_response(),
    };
    let (body, last) = sandbox.world().orders.page(&listing);
    let mut response = json_reply(StatusCode::OK, body);
    if let Some(last) = last {
        let next = format!(
            "<{origin}/link/orders?per_page={}&after={last}>; rel=\"next\"",
            listing.per_page
        );
        match HeaderValue::from_str(&next) {
            Ok(link) => {
                response.headers_mut().insert(header::LINK, link);
            }
            Err(_) => return bad_request("the next page cannot be linked"),
        }
    }
    response
}
