//! Shopify Admin REST's orders and their transactions, a parent and its sub-resource
//! (docs/design.md §3, "Child stream"): `GET /admin/api/{version}/orders.json` and
//! `GET /admin/api/{version}/orders/{id}/transactions.json`, at
//! `/shopify/admin/api/{version}/...`.
//!
//! Imitated: `{"orders": [...]}` ordered by `(updated_at, id)` with the first request's
//! filter `updated_at_min` (ISO 8601, any offset), `status=any` accepted, `limit` (default
//! 50, at most 250) and cursor paging by `Link: <…?limit=n&page_info=…>; rel="next"`;
//! `{"transactions": [...]}` of one order in id order, `404 {"errors": "Not Found"}` for
//! an order that does not exist (or no longer does). A transaction, an order's payment
//! or refund, changes its order: creating, changing or deleting one moves the order's
//! `updated_at` on, as Shopify's does when a transaction is processed (unless the churn
//! asks for a silent change, to show what a child stream cannot see).
//!
//! Simplified: the real transactions endpoint is not paged; here it also takes `limit`
//! (default: every transaction) and pages by `page_info` links, so that child listings of
//! several pages can be tested. Deletes of both are hard (orders and transactions vanish
//! from their listings); real transactions are never deleted, only voided or refunded.
//! Orders have no line items, customers or addresses; the shop's zone is a fixed -05:00.
//!
//! Control: `POST /_control/shopify_orders/{create,update,delete}` and
//! `POST /_control/shopify_orders/transactions/{create,update,delete}` with `{"count": n}`
//! (transactions: of random live orders; `"touch_order": false` leaves the order's
//! `updated_at` alone), answering `{"ids": [...], "now": "..."}`; `GET
//! /_control/shopify_orders/truth` answers `{"orders": {"<id>": order}, "transactions":
//! {"<order id>/<id>": transaction}}`, byte for byte as served.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{link_header, opaque, reply, rfc3339, unopaque, with_header};
use crate::{Clock, JsonBody, Origin, Sandbox, SplitMix64, json_array, query_pairs};

const NAME: &str = "shopify_orders";
const STREAM: u64 = 17;
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;
const MAX_COUNT: usize = 10_000;
const ZONE: FixedOffset = match FixedOffset::west_opt(5 * 3600) {
    Some(zone) => zone,
    None => panic!("-05:00 is a valid offset"),
};
const KINDS: [&str; 4] = ["authorization", "capture", "sale", "refund"];
const GATEWAYS: [&str; 3] = ["shopify_payments", "manual", "bogus"];
const STATUSES: [&str; 3] = ["paid", "partially_refunded", "pending"];

/// The orders and their transactions.
pub(super) struct Book {
    rng: SplitMix64,
    orders: BTreeMap<u64, Order>,
    next_order: u64,
    next_transaction: u64,
}

struct Order {
    id: u64,
    number: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    draw: u64,
    transactions: BTreeMap<u64, Transaction>,
    json: String,
}

struct Transaction {
    id: u64,
    created: DateTime<Utc>,
    draw: u64,
    json: String,
}

fn format_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&ZONE)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

impl Order {
    fn render(&mut self) {
        let total: u64 = self.transactions.values().map(|t| amount(t.draw)).sum();
        self.json = serde_json::json!({
            "id": self.id,
            "name": format!("#{}", 1000 + self.number),
            "email": format!("buyer{}@example.com", self.number),
            "financial_status": STATUSES[(self.draw % 3) as usize],
            "currency": "USD",
            "total_price": cents(total),
            "created_at": format_time(self.created),
            "updated_at": format_time(self.updated),
        })
        .to_string();
    }
}

fn amount(draw: u64) -> u64 {
    100 + draw % 20_000
}

fn cents(n: u64) -> String {
    format!("{}.{:02}", n / 100, n % 100)
}

impl Transaction {
    fn render(&mut self, order: u64) {
        self.json = serde_json::json!({
            "id": self.id,
            "order_id": order,
            "kind": KINDS[(self.draw % 4) as usize],
            "gateway": GATEWAYS[((self.draw >> 8) % 3) as usize],
            "status": "success",
            "amount": cents(amount(self.draw)),
            "currency": "USD",
            "created_at": format_time(self.created),
            "processed_at": format_time(self.created),
        })
        .to_string();
    }
}

impl Book {
    /// `orders` orders with zero to three transactions each, stamped from the clock's start.
    fn generate(seed: u64, orders: usize) -> Self {
        let mut book = Book {
            rng: SplitMix64::stream(seed, STREAM),
            orders: BTreeMap::new(),
            next_order: 450_789_469,
            next_transaction: 389_404_469,
        };
        let at = Clock::start().now();
        for _ in 0..orders {
            let id = book.create_order(at);
            for _ in 0..book.rng.below(4) {
                book.create_transaction(id, at);
            }
            if let Some(order) = book.orders.get_mut(&id) {
                order.render();
            }
        }
        book
    }

    fn create_order(&mut self, at: DateTime<Utc>) -> u64 {
        self.next_order += 1 + self.rng.below(1000);
        let id = self.next_order;
        let mut order = Order {
            id,
            number: self.orders.len() as u64 + 1,
            created: at,
            updated: at,
            draw: self.rng.next_u64(),
            transactions: BTreeMap::new(),
            json: String::new(),
        };
        order.render();
        self.orders.insert(id, order);
        id
    }

    fn create_transaction(&mut self, order: u64, at: DateTime<Utc>) -> Option<u64> {
        self.next_transaction += 1 + self.rng.below(1000);
        let id = self.next_transaction;
        let draw = self.rng.next_u64();
        let o = self.orders.get_mut(&order)?;
        let mut transaction = Transaction {
            id,
            created: at,
            draw,
            json: String::new(),
        };
        transaction.render(order);
        o.transactions.insert(id, transaction);
        Some(id)
    }

    fn pick_order(&mut self) -> Option<u64> {
        let n = self.rng.below(self.orders.len() as u64) as usize;
        self.orders.keys().nth(n).copied()
    }

    /// A random transaction of a random order that has one.
    fn pick_transaction(&mut self) -> Option<(u64, u64)> {
        let with: Vec<u64> = self
            .orders
            .values()
            .filter(|o| !o.transactions.is_empty())
            .map(|o| o.id)
            .collect();
        let order = *with.get(self.rng.below(with.len() as u64) as usize)?;
        let transactions = &self.orders.get(&order)?.transactions;
        let n = self.rng.below(transactions.len() as u64) as usize;
        Some((order, *transactions.keys().nth(n)?))
    }
}

/// Runs `work` on the book (generated on first use) under the lock.
fn with_book<R>(sandbox: &Sandbox, work: impl FnOnce(&mut Book, &mut Clock) -> R) -> R {
    let mut world = sandbox.world();
    let world = &mut *world;
    let (seed, records) = (world.dialects.seed, world.dialects.records);
    let book = world
        .dialects
        .shopify_orders
        .get_or_insert_with(|| Book::generate(seed, records));
    work(book, &mut world.clock)
}

pub(super) fn api() -> Router<Arc<Sandbox>> {
    Router::new()
        .route("/shopify/admin/api/{version}/orders.json", get(orders))
        .route(
            "/shopify/admin/api/{version}/orders/{order}/transactions.json",
            get(transactions),
        )
}

pub(super) fn control() -> Router<Arc<Sandbox>> {
    let path = |operation: &str| format!("/_control/{NAME}/{operation}");
    Router::new()
        .route(&path("create"), post(create_orders))
        .route(&path("update"), post(update_orders))
        .route(&path("delete"), post(delete_orders))
        .route(&path("transactions/create"), post(create_transactions))
        .route(&path("transactions/update"), post(update_transactions))
        .route(&path("transactions/delete"), post(delete_transactions))
        .route(&path("truth"), get(truth))
}

/// Where a listing goes on: the filter of its first request, and the last record read
/// (orders: its updated time and id; transactions: its id).
#[derive(Serialize, Deserialize)]
struct PageInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<i64>,
    after: (i64, u64),
}

impl PageInfo {
    fn read(token: &str) -> Option<Self> {
        serde_json::from_str(&unopaque(token)?).ok()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    reply(status, serde_json::json!({ "errors": message }).to_string())
}

/// `limit` and `page_info` of a request, and its other parameters.
struct Paging {
    limit: Option<usize>,
    page_info: Option<PageInfo>,
    rest: Vec<(String, String)>,
}

/// A bad parameter's message, answered as a `400`.
fn paging(raw: Option<&str>) -> Result<Paging, String> {
    let mut paging = Paging {
        limit: None,
        page_info: None,
        rest: Vec::new(),
    };
    for (key, value) in query_pairs(raw) {
        match key.as_str() {
            "limit" => {
                let limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("limit: Invalid value.")?;
                paging.limit = Some(limit.min(MAX_LIMIT));
            }
            "page_info" => {
                paging.page_info = Some(PageInfo::read(&value).ok_or("page_info: Invalid value.")?)
            }
            _ => paging.rest.push((key, value)),
        }
    }
    if paging.page_info.is_some()
        && let Some((key, _)) = paging.rest.first()
    {
        return Err(format!("{key} cannot be passed with page_info."));
    }
    Ok(paging)
}

/// A page with a `Link: rel="next"` when `next` names where the listing goes on.
fn page(member: &str, items: Vec<&str>, next: Option<String>) -> Response {
    let body = format!("{{\"{member}\":{}}}", json_array(items.into_iter()));
    let response = reply(StatusCode::OK, body);
    match next {
        Some(url) => with_header(response, header::LINK, &link_header(&[(url, "next")])),
        None => response,
    }
}

fn next_url(origin: &str, path: &str, limit: usize, info: &PageInfo) -> String {
    let token = opaque(&serde_json::to_string(info).unwrap_or_default());
    format!("{origin}{path}?limit={limit}&page_info={token}")
}

async fn orders(
    State(sandbox): State<Arc<Sandbox>>,
    Path(version): Path<String>,
    Origin(origin): Origin,
    RawQuery(raw): RawQuery,
) -> Response {
    let paging = match paging(raw.as_deref()) {
        Ok(paging) => paging,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let mut min = paging.page_info.as_ref().and_then(|p| p.min);
    // `status`, `fields` and the rest are accepted and ignored.
    for (_, value) in paging
        .rest
        .iter()
        .filter(|(key, _)| key == "updated_at_min")
    {
        match rfc3339(value) {
            Some(at) => min = Some(at.timestamp()),
            None => return error(StatusCode::BAD_REQUEST, "updated_at_min: Invalid value."),
        }
    }
    let limit = paging.limit.unwrap_or(DEFAULT_LIMIT);
    let after = paging.page_info.as_ref().map(|p| p.after);
    with_book(&sandbox, |book, _| {
        let mut listed: Vec<&Order> = book
            .orders
            .values()
            .filter(|o| min.is_none_or(|m| o.updated.timestamp() >= m))
            .filter(|o| after.is_none_or(|a| (o.updated.timestamp(), o.id) > a))
            .collect();
        listed.sort_by_key(|o| (o.updated, o.id));
        let more = listed.len() > limit;
        listed.truncate(limit);
        let next = match listed.last() {
            Some(last) if more => Some(next_url(
                &origin,
                &format!("/shopify/admin/api/{version}/orders.json"),
                limit,
                &PageInfo {
                    min,
                    after: (last.updated.timestamp(), last.id),
                },
            )),
            _ => None,
        };
        page(
            "orders",
            listed.iter().map(|o| o.json.as_str()).collect(),
            next,
        )
    })
}

async fn transactions(
    State(sandbox): State<Arc<Sandbox>>,
    Path((version, order)): Path<(String, String)>,
    Origin(origin): Origin,
    RawQuery(raw): RawQuery,
) -> Response {
    let paging = match paging(raw.as_deref()) {
        Ok(paging) => paging,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    with_book(&sandbox, |book, _| {
        let Some(o) = order
            .parse::<u64>()
            .ok()
            .and_then(|id| book.orders.get(&id))
        else {
            return error(StatusCode::NOT_FOUND, "Not Found");
        };
        let after = paging.page_info.as_ref().map_or(0, |p| p.after.1);
        let limit = paging.limit.unwrap_or(usize::MAX);
        let mut listed: Vec<&Transaction> =
            o.transactions.range(after + 1..).map(|(_, t)| t).collect();
        let more = listed.len() > limit;
        listed.truncate(limit);
        let next = match listed.last() {
            Some(last) if more => Some(next_url(
                &origin,
                &format!("/shopify/admin/api/{version}/orders/{order}/transactions.json"),
                limit,
                &PageInfo {
                    min: None,
                    after: (0, last.id),
                },
            )),
            _ => None,
        };
        page(
            "transactions",
            listed.iter().map(|t| t.json.as_str()).collect(),
            next,
        )
    })
}

#[derive(Deserialize)]
struct Count {
    count: usize,
    #[serde(default = "yes")]
    touch_order: bool,
}

fn yes() -> bool {
    true
}

/// Runs one churn operation `count` times, one sandbox second apart, and answers with
/// the ids it touched.
fn churn(
    sandbox: &Sandbox,
    body: &Count,
    mut step: impl FnMut(&mut Book, DateTime<Utc>, bool) -> Option<String>,
) -> Response {
    if body.count > MAX_COUNT {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("count must be at most {MAX_COUNT}"),
        );
    }
    with_book(sandbox, |book, clock| {
        let mut ids = Vec::with_capacity(body.count);
        for _ in 0..body.count {
            if let Some(id) = step(book, clock.now(), body.touch_order) {
                ids.push(id);
            }
            clock.advance(1);
        }
        reply(
            StatusCode::OK,
            serde_json::json!({ "ids": ids, "now": format_time(clock.now()) }).to_string(),
        )
    })
}

/// Moves an order's `updated_at` to `at` and renders it again (its total follows its
/// transactions); with `touch` false the order is left exactly as it was, as by an API
/// that does not mark a parent changed when a sub-resource changes.
fn touched(book: &mut Book, order: u64, at: DateTime<Utc>, touch: bool) {
    let draw = book.rng.next_u64();
    if let Some(o) = book.orders.get_mut(&order)
        && touch
    {
        o.updated = at;
        o.draw = draw;
        o.render();
    }
}

async fn create_orders(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn(&sandbox, &body, |book, at, _| {
        let id = book.create_order(at);
        if book.rng.below(2) == 0 {
            book.create_transaction(id, at);
            touched(book, id, at, true);
        }
        Some(id.to_string())
    })
}

async fn update_orders(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn(&sandbox, &body, |book, at, _| {
        let id = book.pick_order()?;
        touched(book, id, at, true);
        Some(id.to_string())
    })
}

async fn delete_orders(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn(&sandbox, &body, |book, _, _| {
        let id = book.pick_order()?;
        book.orders.remove(&id);
        Some(id.to_string())
    })
}

async fn create_transactions(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn(&sandbox, &body, |book, at, touch| {
        let order = book.pick_order()?;
        let id = book.create_transaction(order, at)?;
        touched(book, order, at, touch);
        Some(format!("{order}/{id}"))
    })
}

async fn update_transactions(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn(&sandbox, &body, |book, at, touch| {
        let (order, id) = book.pick_transaction()?;
        let draw = book.rng.next_u64();
        let t = book.orders.get_mut(&order)?.transactions.get_mut(&id)?;
        t.draw = draw;
        t.render(order);
        touched(book, order, at, touch);
        Some(format!("{order}/{id}"))
    })
}

async fn delete_transactions(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn(&sandbox, &body, |book, at, touch| {
        let (order, id) = book.pick_transaction()?;
        book.orders.get_mut(&order)?.transactions.remove(&id);
        touched(book, order, at, touch);
        Some(format!("{order}/{id}"))
    })
}

/// Every live order and transaction, keyed as tidemark keys them.
async fn truth(State(sandbox): State<Arc<Sandbox>>) -> Response {
    with_book(&sandbox, |book, _| {
        let orders = book
            .orders
            .values()
            .map(|o| format!("\"{}\":{}", o.id, o.json));
        let transactions = book.orders.values().flat_map(|o| {
            o.transactions
                .values()
                .map(move |t| format!("\"{}/{}\":{}", o.id, t.id, t.json))
        });
        let join = |items: Vec<String>| items.join(",");
        reply(
            StatusCode::OK,
            format!(
                "{{\"orders\":{{{}}},\"transactions\":{{{}}}}}",
                join(orders.collect()),
                join(transactions.collect())
            ),
        )
    })
}
