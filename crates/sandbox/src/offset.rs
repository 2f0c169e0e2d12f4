//! The offset dataset, imitating Reqon's items: offset/limit pages in id order, filtered
//! by an inclusive `modified_since`, so rows shift under a reader when items are hard
//! deleted (the failure plain offset paging has). Soft deletes are `"deleted": true` and
//! listed only with `includeDeleted=true`; hard deletes leave a tombstone in
//! `GET /reqon/items/deleted`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::churn::{self, Count, Dataset};
use super::{
    Clock, JsonBody, Sandbox, SplitMix64, World, bad_request, json_array, json_reply, parse_flag,
    parse_limit, query_pairs,
};

/// The API's page size limits.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
/// A number this large is a time in milliseconds, not seconds (it would be the year
/// 5138 in seconds).
const MIN_UNIX_MS: i64 = 100_000_000_000;
const WAREHOUSES: [&str; 3] = ["MSK-1", "SPB-2", "EKB-1"];

/// One item with its JSON text, rendered once per change.
struct Item {
    id: u64,
    quantity: u64,
    price_cents: u64,
    warehouse: &'static str,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    deleted: bool,
    json: String,
}

impl Item {
    /// Re-renders the stored text; called only when the item changes, so unchanged items
    /// are served byte-identically.
    fn render(&mut self) {
        self.json = serde_json::json!({
            "id": self.id,
            "sku": format!("ITEM-{:07}", self.id),
            "name": format!("Item {}", self.id),
            "quantity": self.quantity,
            "price": format!("{}.{:02}", self.price_cents / 100, self.price_cents % 100),
            "warehouse": self.warehouse,
            "createdAt": format_time(self.created),
            "updatedAt": format_time(self.updated),
            "deleted": self.deleted,
        })
        .to_string();
    }
}

/// Formats a time as the API does: `2024-01-20T10:30:00.000Z`.
fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The offset dataset, with the tombstones of hard-deleted items.
pub(super) struct Items {
    rng: SplitMix64,
    by_id: BTreeMap<u64, Item>,
    /// `(deletedAt in ms, id)` → the tombstone's JSON text.
    deletions: BTreeMap<(i64, u64), String>,
    last_id: u64,
}

impl Items {
    /// Applies `change` to an item and stamps it `at`.
    fn touch(&mut self, id: u64, at: DateTime<Utc>, change: impl FnOnce(&mut Item)) {
        if let Some(item) = self.by_id.get_mut(&id) {
            change(item);
            item.updated = at;
            item.render();
        }
    }

    fn live_items(&self) -> impl Iterator<Item = &Item> {
        self.by_id.values().filter(|i| !i.deleted)
    }

    /// Removes an item for good, leaving a tombstone stamped `at`.
    fn remove(&mut self, id: u64, at: DateTime<Utc>) {
        if self.by_id.remove(&id).is_some() {
            let tombstone = serde_json::json!({ "id": id, "deletedAt": format_time(at) });
            self.deletions
                .insert((at.timestamp_millis(), id), tombstone.to_string());
        }
    }

    /// One page of `GET /reqon/items`, as JSON text.
    fn page(&self, query: &Listing) -> String {
        let matching = || {
            self.by_id.values().filter(|i| {
                i.updated.timestamp_millis() >= query.since && (query.deleted || !i.deleted)
            })
        };
        let items = matching().skip(query.offset).take(query.limit);
        format!(
            r#"{{"items":{},"total":{}}}"#,
            json_array(items.map(|i| i.json.as_str())),
            matching().count(),
        )
    }

    /// One page of `GET /reqon/items/deleted`, as JSON text.
    fn deletions_page(&self, query: &DeletionListing) -> String {
        let tombstones = self
            .deletions
            .range((query.since, 0)..)
            .skip(query.per_page.saturating_mul(query.page - 1))
            .take(query.per_page);
        format!(
            r#"{{"deletions":{}}}"#,
            json_array(tombstones.map(|(_, json)| json.as_str()))
        )
    }
}

impl Dataset for Items {
    type Id = u64;
    type Stamp = DateTime<Utc>;

    fn new(rng: SplitMix64) -> Self {
        Items {
            rng,
            by_id: BTreeMap::new(),
            deletions: BTreeMap::new(),
            last_id: 0,
        }
    }

    fn parts(world: &mut World) -> (&mut Self, &mut Clock) {
        (&mut world.items, &mut world.clock)
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// Reqon's times have whole seconds (written with `.000`).
    fn stamp(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn format_time(at: DateTime<Utc>) -> String {
        format_time(at)
    }

    fn live(&self) -> Vec<u64> {
        self.live_items().map(|i| i.id).collect()
    }

    fn create(&mut self, at: DateTime<Utc>) -> u64 {
        self.last_id += 1 + self.rng.below(5);
        let id = self.last_id;
        let mut item = Item {
            id,
            quantity: self.rng.below(500),
            price_cents: 100 + self.rng.below(100_000),
            warehouse: WAREHOUSES[self.rng.below(WAREHOUSES.len() as u64) as usize],
            created: at,
            updated: at,
            deleted: false,
            json: String::new(),
        };
        item.render();
        self.by_id.insert(id, item);
        id
    }

    /// A stock count: a new quantity.
    fn update(&mut self, id: u64, at: DateTime<Utc>) {
        let quantity = self.rng.below(500);
        self.touch(id, at, |i| i.quantity = quantity);
    }

    fn delete(&mut self, id: u64, at: DateTime<Utc>) {
        self.touch(id, at, |i| i.deleted = true);
    }

    fn truth(&self) -> String {
        json_array(self.live_items().map(|i| i.json.as_str()))
    }
}

/// Parses `modified_since` in any of the four formats the API takes: RFC 3339, a date
/// (midnight UTC), unix seconds or unix milliseconds. Returns unix milliseconds.
fn parse_since(text: &str) -> Result<i64, String> {
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>()
            .ok()
            .and_then(|n| match n >= MIN_UNIX_MS {
                true => Some(n),
                false => n.checked_mul(1000),
            })
    } else if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
            .map(|midnight| midnight.and_utc().timestamp_millis())
    } else {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|time| time.timestamp_millis())
    };
    parsed.ok_or_else(|| {
        format!(
            "modified_since must be an RFC 3339 time, a date, or unix seconds or milliseconds, not {text}"
        )
    })
}

/// The query of `GET /reqon/items`, parsed by hand so every bad value gets a JSON `400`.
struct Listing {
    /// Unix milliseconds; items updated before it are left out.
    since: i64,
    offset: usize,
    limit: usize,
    deleted: bool,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut listing = Listing {
            since: i64::MIN,
            offset: 0,
            limit: DEFAULT_LIMIT,
            deleted: false,
        };
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "modified_since" => listing.since = parse_since(&value)?,
                "offset" => {
                    listing.offset = value
                        .parse()
                        .map_err(|_| format!("offset must be a whole number, not {value}"))?;
                }
                "limit" => listing.limit = parse_limit("limit", &value, MAX_LIMIT)?,
                "includeDeleted" => listing.deleted = parse_flag("includeDeleted", &value)?,
                _ => {}
            }
        }
        Ok(listing)
    }
}

/// The query of `GET /reqon/items/deleted`.
struct DeletionListing {
    since: i64,
    /// Starts at 1.
    page: usize,
    per_page: usize,
}

impl DeletionListing {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut listing = DeletionListing {
            since: i64::MIN,
            page: 1,
            per_page: DEFAULT_LIMIT,
        };
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "modified_since" => listing.since = parse_since(&value)?,
                "page" => listing.page = parse_limit("page", &value, usize::MAX)?,
                "per_page" => listing.per_page = parse_limit("per_page", &value, MAX_LIMIT)?,
                _ => {}
            }
        }
        Ok(listing)
    }
}

/// `GET /reqon/items`: `{"items": [...], "total": n}`.
pub(super) async fn list(State(sandbox): State<Arc<Sandbox>>, RawQuery(raw): RawQuery) -> Response {
    match Listing::parse(raw.as_deref()) {
        Ok(listing) => json_reply(StatusCode::OK, sandbox.world().items.page(&listing)),
        Err(message) => bad_request(&message),
    }
}

/// `GET /reqon/items/deleted`: `{"deletions": [{"id", "deletedAt"}]}`, by deletion time.
pub(super) async fn deletions(
    State(sandbox): State<Arc<Sandbox>>,
    RawQuery(raw): RawQuery,
) -> Response {
    match DeletionListing::parse(raw.as_deref()) {
        Ok(listing) => json_reply(
            StatusCode::OK,
            sandbox.world().items.deletions_page(&listing),
        ),
        Err(message) => bad_request(&message),
    }
}

/// `POST /_control/offset/hard_delete`: removes `count` random live items for good, each
/// in its own second, leaving tombstones.
pub(super) async fn hard_delete(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(body): JsonBody<Count>,
) -> Response {
    churn::churn::<Items>(&sandbox, |items, clock| {
        let ids = items.pick(body.count);
        for &id in &ids {
            items.remove(id, clock.now());
            clock.advance(1);
        }
        Ok(ids)
    })
}
