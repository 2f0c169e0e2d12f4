//! The keyset dataset, imitating InSales' `GET /admin/products.json`: ordered by
//! `(updated_at, id)` when `updated_since` is given (by id alone otherwise, the real API's
//! quirk), `updated_since` inclusive, and records at exactly `updated_since` with
//! `id <= from_id` left out. Soft deletes are `"archived": true`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, FixedOffset, Utc};

use super::churn::Dataset;
use super::{
    Clock, Sandbox, SplitMix64, World, bad_request, json_array, json_reply, parse_flag,
    parse_limit, query_pairs,
};

/// InSales' default page size. Its maximum is 250; the sandbox allows pages of 1000 so
/// that the benchmark can sync in pages of that size.
const DEFAULT_PER_PAGE: usize = 100;
const MAX_PER_PAGE: usize = 1000;
/// The upstream writes times in Moscow time (checked at compile time).
const OFFSET: FixedOffset = match FixedOffset::east_opt(3 * 3600) {
    Some(offset) => offset,
    None => panic!("+03:00 is a valid offset"),
};
/// Product ids start in InSales' realistic range, not at 1.
const FIRST_ID: u64 = 150_000_000;

/// One product with its JSON text, rendered once per change.
struct Product {
    id: u64,
    title: String,
    price_cents: u64,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    archived: bool,
    json: String,
}

impl Product {
    /// Re-renders the stored text; called only when the product changes, so unchanged
    /// products are served byte-identically.
    fn render(&mut self) {
        self.json = serde_json::json!({
            "id": self.id,
            "category_id": 4_200_000 + self.id % 17,
            "title": self.title,
            "short_description": "A product of the tidemark sandbox, padded to a realistic size.",
            "permalink": format!("product-{}", self.id),
            "sku": format!("SKU-{:010}", self.id),
            "price": format!("{}.{:02}", self.price_cents / 100, self.price_cents % 100),
            "currency_code": "RUR",
            "is_hidden": false,
            "available": true,
            "unit": "pce",
            "created_at": format_time(self.created),
            "updated_at": format_time(self.updated),
            "archived": self.archived,
        })
        .to_string();
    }
}

/// Formats a time the way the upstream does: `2017-09-04 00:00:00 +03:00`.
pub(super) fn format_time(time: DateTime<Utc>) -> String {
    time.with_timezone(&OFFSET)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// The keyset dataset, indexed both by id and by `(updated_at, id)`.
pub(super) struct Products {
    rng: SplitMix64,
    by_id: BTreeMap<u64, Product>,
    by_time: BTreeSet<(i64, u64)>,
    last_id: u64,
}

impl Products {
    /// Applies `change` to a product and stamps it `at`, keeping the time index in step.
    fn touch(&mut self, id: u64, at: DateTime<Utc>, change: impl FnOnce(&mut Product)) {
        if let Some(product) = self.by_id.get_mut(&id) {
            self.by_time.remove(&(product.updated.timestamp(), id));
            change(product);
            product.updated = at;
            product.render();
            self.by_time.insert((at.timestamp(), id));
        }
    }

    fn live_products(&self) -> impl Iterator<Item = &Product> {
        self.by_id.values().filter(|p| !p.archived)
    }

    /// One page of the listing, as JSON text.
    fn page(&self, query: &Listing) -> String {
        let products: Box<dyn Iterator<Item = &Product>> = match query.since {
            Some(since) => Box::new(
                self.by_time
                    .range((since.lower_bound(query.from_id), Bound::Unbounded))
                    .filter_map(|(_, id)| self.by_id.get(id)),
            ),
            None => Box::new(self.by_id.values()),
        };
        json_array(
            products
                .filter(|p| query.visibility.admits(p.archived))
                .take(query.per_page)
                .map(|p| p.json.as_str()),
        )
    }
}

impl Dataset for Products {
    type Id = u64;
    type Stamp = DateTime<Utc>;

    fn new(rng: SplitMix64) -> Self {
        Products {
            rng,
            by_id: BTreeMap::new(),
            by_time: BTreeSet::new(),
            last_id: FIRST_ID,
        }
    }

    fn parts(world: &mut World) -> (&mut Self, &mut Clock) {
        (&mut world.products, &mut world.clock)
    }

    fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }

    /// InSales times have whole seconds, like the sandbox clock.
    fn stamp(&mut self, at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }

    fn format_time(at: DateTime<Utc>) -> String {
        format_time(at)
    }

    fn live(&self) -> Vec<u64> {
        self.live_products().map(|p| p.id).collect()
    }

    fn create(&mut self, at: DateTime<Utc>) -> u64 {
        self.last_id += 1 + self.rng.below(1000);
        let id = self.last_id;
        let mut product = Product {
            id,
            title: title(id, &mut self.rng),
            price_cents: price(&mut self.rng),
            created: at,
            updated: at,
            archived: false,
            json: String::new(),
        };
        product.render();
        self.by_time.insert((at.timestamp(), id));
        self.by_id.insert(id, product);
        id
    }

    /// A new title and price.
    fn update(&mut self, id: u64, at: DateTime<Utc>) {
        let (title, price) = (title(id, &mut self.rng), price(&mut self.rng));
        self.touch(id, at, |p| {
            p.title = title;
            p.price_cents = price;
        });
    }

    /// Archiving stamps a new `updated_at`, as InSales does.
    fn delete(&mut self, id: u64, at: DateTime<Utc>) {
        self.touch(id, at, |p| p.archived = true);
    }

    fn truth(&self) -> String {
        json_array(self.live_products().map(|p| p.json.as_str()))
    }
}

fn title(id: u64, rng: &mut SplitMix64) -> String {
    format!("Product {id} rev {}", rng.below(1_000_000))
}

fn price(rng: &mut SplitMix64) -> u64 {
    100 + rng.below(1_000_000)
}

/// Which products a listing shows (`with_deleted`, `deleted`).
#[derive(Clone, Copy)]
enum Visibility {
    Live,
    All,
    ArchivedOnly,
}

impl Visibility {
    fn admits(self, archived: bool) -> bool {
        match self {
            Visibility::Live => !archived,
            Visibility::All => true,
            Visibility::ArchivedOnly => archived,
        }
    }
}

/// A parsed `updated_since`. Products have whole seconds, so a fractional value starts
/// at the next second and can never equal a product's time.
#[derive(Clone, Copy)]
struct Since {
    seconds: i64,
    whole: bool,
}

impl Since {
    fn parse(text: &str) -> Option<Self> {
        let time = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S %:z")
            .or_else(|_| DateTime::parse_from_rfc3339(text))
            .ok()?;
        Some(Since {
            seconds: time.timestamp(),
            whole: time.timestamp_subsec_nanos() == 0,
        })
    }

    /// Where in `(updated_at, id)` order the page starts.
    fn lower_bound(self, from_id: Option<u64>) -> Bound<(i64, u64)> {
        match (self.whole, from_id) {
            (true, Some(id)) => Bound::Excluded((self.seconds, id)),
            (true, None) => Bound::Included((self.seconds, 0)),
            (false, _) => Bound::Included((self.seconds.saturating_add(1), 0)),
        }
    }
}

/// The listing's query, parsed by hand so every bad value gets a JSON `400`.
struct Listing {
    since: Option<Since>,
    from_id: Option<u64>,
    per_page: usize,
    visibility: Visibility,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut listing = Listing {
            since: None,
            from_id: None,
            per_page: DEFAULT_PER_PAGE,
            visibility: Visibility::Live,
        };
        let (mut with_deleted, mut deleted) = (false, false);
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "updated_since" => {
                    listing.since = Some(
                        Since::parse(&value)
                            .ok_or_else(|| format!("updated_since is not a time: {value}"))?,
                    );
                }
                "from_id" => {
                    listing.from_id = Some(
                        value
                            .parse()
                            .map_err(|_| format!("from_id is not an id: {value}"))?,
                    );
                }
                "per_page" => listing.per_page = parse_limit("per_page", &value, MAX_PER_PAGE)?,
                "with_deleted" => with_deleted = parse_flag("with_deleted", &value)?,
                "deleted" => deleted = parse_flag("deleted", &value)?,
                _ => {}
            }
        }
        listing.visibility = match (deleted, with_deleted) {
            (true, _) => Visibility::ArchivedOnly,
            (false, true) => Visibility::All,
            (false, false) => Visibility::Live,
        };
        Ok(listing)
    }
}

/// `GET /insales/products.json`: a bare JSON array of products.
pub(super) async fn list(State(sandbox): State<Arc<Sandbox>>, RawQuery(raw): RawQuery) -> Response {
    match Listing::parse(raw.as_deref()) {
        Ok(listing) => json_reply(StatusCode::OK, sandbox.world().products.page(&listing)),
        Err(message) => bad_request(&message),
    }
}
