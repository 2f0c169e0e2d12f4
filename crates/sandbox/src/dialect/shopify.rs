//! Shopify Admin REST's `GET /admin/api/{version}/products.json` (real-apis.md §2), at
//! `/shopify/admin/api/{version}/products.json` (any `YYYY-MM` version, echoed in
//! `X-Shopify-API-Version`).
//!
//! Imitated: `{"products": [...]}` in id order; the first request's filters
//! `updated_at_min`, `updated_at_max` (ISO 8601, any offset) and `since_id`; `limit`
//! (default 50, at most 250); cursor paging by `Link: <…?limit=n&page_info=…>;
//! rel="next"` (and `rel="previous"` after the first page), no `Link` at all when one
//! page holds everything. `page_info` is an opaque token (base64 of the filters and the
//! last id, as Shopify's is) that carries the filters, and a request with `page_info`
//! and any parameter but `limit` and `fields` is a `400`, as is a `page_info` that is not
//! one. Times are written in the shop's zone, `2024-01-02T05:15:47-05:00`.
//!
//! Simplified: `updated_at_min` and `updated_at_max` are inclusive (not confirmed); the
//! shop's zone is a fixed -05:00 (no daylight saving time); `fields` is accepted and
//! ignored (always the whole product); a `limit` above 250 is taken as 250 (not
//! confirmed); products have no variants, options or images; deletes are hard (the
//! listing never shows deleted products; Shopify reports them by webhook only); no
//! `X-Shopify-Shop-Api-Call-Limit` (the rate-limit faults stand in).

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, link_header, opaque, reply, rfc3339,
    title, unopaque, with_header, with_table,
};
use crate::{Origin, Sandbox, json_array, query_pairs};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;
/// The shop's time zone (America/New_York in winter).
const ZONE: FixedOffset = match FixedOffset::west_opt(5 * 3600) {
    Some(zone) => zone,
    None => panic!("-05:00 is a valid offset"),
};
const VENDORS: [&str; 5] = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"];
const TYPES: [&str; 4] = ["Gadgets", "Cult Products", "Snowboards", "Gift Cards"];

pub(super) struct Shopify;

impl Dialect for Shopify {
    const NAME: &'static str = "shopify";
    const STREAM: u64 = 7;
    const FIRST_ID: u64 = 632_910_392;
    const ID_GAP: u64 = 100_000;
    const ID: IdStyle = IdStyle::Number;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = false;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.shopify
    }

    /// `2024-01-02T05:15:47-05:00`.
    fn format_time(at: DateTime<Utc>) -> String {
        at.with_timezone(&ZONE)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }

    fn render(record: &Record) -> String {
        let title = title(record);
        serde_json::json!({
            "id": record.n,
            "title": title,
            "body_html": format!("<p>{title}, revision {}.</p>", record.revision),
            "vendor": record.pick(10, &VENDORS),
            "product_type": record.pick(11, &TYPES),
            "created_at": Self::format_time(record.created),
            "handle": format!("{}-{}", title.replace(' ', "-"), record.ordinal),
            "updated_at": Self::format_time(record.updated),
            "published_at": Self::format_time(record.created),
            "template_suffix": null,
            "published_scope": "web",
            "tags": record.pick(12, &super::WORDS),
            "status": "active",
            "admin_graphql_api_id": format!("gid://shopify/Product/{}", record.n),
        })
        .to_string()
    }
}

/// A Shopify `400`: `{"errors": {"<param>": "<message>"}}`.
struct Error {
    param: String,
    message: String,
}

impl Error {
    fn new(param: &str, message: &str) -> Self {
        Error {
            param: param.to_owned(),
            message: message.to_owned(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": { self.param: self.message } });
        reply(StatusCode::BAD_REQUEST, body.to_string())
    }
}

/// The filters of a listing: given on its first request, carried in its `page_info`.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Filters {
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at_min: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at_max: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since_id: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Next,
    Prev,
}

/// What a `page_info` holds: the filters, where the page starts and which way it goes.
#[derive(Serialize, Deserialize)]
struct PageInfo {
    filters: Filters,
    last_id: u64,
    last_value: String,
    direction: Direction,
}

impl PageInfo {
    fn token(&self) -> String {
        opaque(&serde_json::to_string(self).unwrap_or_default())
    }

    fn read(token: &str) -> Option<Self> {
        serde_json::from_str(&unopaque(token)?).ok()
    }
}

/// The parsed filters, as bounds on `updated_at` and the id.
struct Bounds {
    min: Option<DateTime<Utc>>,
    max: Option<DateTime<Utc>>,
    since_id: u64,
}

impl Bounds {
    fn new(filters: &Filters) -> Result<Self, Error> {
        let time = |name: &str, value: &Option<String>| match value {
            None => Ok(None),
            Some(text) => rfc3339(text)
                .map(Some)
                .ok_or_else(|| Error::new(name, "must be an ISO 8601 time")),
        };
        Ok(Bounds {
            min: time("updated_at_min", &filters.updated_at_min)?,
            max: time("updated_at_max", &filters.updated_at_max)?,
            since_id: filters.since_id.unwrap_or(0),
        })
    }

    fn admit(&self, record: &Record) -> bool {
        record.n > self.since_id
            && self.min.is_none_or(|min| record.updated >= min)
            && self.max.is_none_or(|max| record.updated <= max)
    }
}

/// A request: its filters and, when it follows a link, where it starts.
struct Listing {
    filters: Filters,
    from: Option<(u64, Direction)>,
    limit: usize,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let pairs: Vec<(String, String)> = query_pairs(raw).collect();
        let mut limit = DEFAULT_LIMIT;
        let mut page_info = None;
        let mut filters = Filters::default();
        for (key, value) in &pairs {
            match key.as_str() {
                "limit" => {
                    limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| Error::new("limit", "must be a positive integer"))?
                        .min(MAX_LIMIT);
                }
                "page_info" => page_info = Some(value.clone()),
                "updated_at_min" => filters.updated_at_min = Some(value.clone()),
                "updated_at_max" => filters.updated_at_max = Some(value.clone()),
                "since_id" => {
                    filters.since_id = Some(
                        value
                            .parse()
                            .map_err(|_| Error::new("since_id", "must be an id"))?,
                    );
                }
                _ => {}
            }
        }
        let Some(token) = page_info else {
            return Ok(Listing {
                filters,
                from: None,
                limit,
            });
        };
        // With page_info, the filters are the token's: nothing else but limit and fields.
        if let Some((key, _)) = pairs
            .iter()
            .find(|(key, _)| !matches!(key.as_str(), "page_info" | "limit" | "fields"))
        {
            return Err(Error::new(
                key,
                &format!("{key} cannot be passed with page_info."),
            ));
        }
        let info =
            PageInfo::read(&token).ok_or_else(|| Error::new("page_info", "Invalid value."))?;
        Ok(Listing {
            filters: info.filters,
            from: Some((info.last_id, info.direction)),
            limit,
        })
    }
}

/// One page, with the ids a `previous` and a `next` link start from (if any).
struct Page {
    body: String,
    previous: Option<u64>,
    next: Option<u64>,
}

fn page(table: &Table<Shopify>, listing: &Listing, bounds: &Bounds) -> Page {
    let admitted = |range: (Bound<u64>, Bound<u64>)| {
        table
            .records
            .range(range)
            .map(|(_, r)| r)
            .filter(|r| bounds.admit(r))
    };
    let products: Vec<&Record> = match listing.from {
        None => admitted((Bound::Unbounded, Bound::Unbounded))
            .take(listing.limit)
            .collect(),
        Some((after, Direction::Next)) => admitted((Bound::Excluded(after), Bound::Unbounded))
            .take(listing.limit)
            .collect(),
        Some((before, Direction::Prev)) => {
            let mut back: Vec<&Record> = admitted((Bound::Unbounded, Bound::Excluded(before)))
                .rev()
                .take(listing.limit)
                .collect();
            back.reverse();
            back
        }
    };
    let (first, last) = match (products.first(), products.last()) {
        (Some(first), Some(last)) => (first.n, last.n),
        _ => {
            return Page {
                body: r#"{"products":[]}"#.to_owned(),
                previous: None,
                next: None,
            };
        }
    };
    let more_after = admitted((Bound::Excluded(last), Bound::Unbounded))
        .next()
        .is_some();
    let more_before = admitted((Bound::Unbounded, Bound::Excluded(first)))
        .next()
        .is_some();
    Page {
        body: format!(
            r#"{{"products":{}}}"#,
            json_array(products.iter().map(|r| r.json.as_str()))
        ),
        previous: (listing.from.is_some() && more_before).then_some(first),
        next: more_after.then_some(last),
    }
}

/// `GET /shopify/admin/api/{version}/products.json`.
pub(super) async fn list(
    State(sandbox): State<Arc<Sandbox>>,
    Path(version): Path<String>,
    Origin(origin): Origin,
    RawQuery(raw): RawQuery,
) -> Response {
    let well_formed = version.len() == 7
        && version.bytes().enumerate().all(|(i, b)| {
            if i == 4 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !well_formed {
        return reply(
            StatusCode::NOT_FOUND,
            r#"{"errors":"Not Found"}"#.to_owned(),
        );
    }
    let listing = match Listing::parse(raw.as_deref()) {
        Ok(listing) => listing,
        Err(refusal) => return refusal.into_response(),
    };
    let bounds = match Bounds::new(&listing.filters) {
        Ok(bounds) => bounds,
        Err(refusal) => return refusal.into_response(),
    };
    let page = with_table::<Shopify, _>(&sandbox, |table, _| page(table, &listing, &bounds));
    let link = |id: u64, direction: Direction| {
        let info = PageInfo {
            filters: listing.filters.clone(),
            last_id: id,
            last_value: id.to_string(),
            direction,
        };
        format!(
            "{origin}/shopify/admin/api/{version}/products.json?limit={}&page_info={}",
            listing.limit,
            info.token()
        )
    };
    let mut links = Vec::new();
    if let Some(first) = page.previous {
        links.push((link(first, Direction::Prev), "previous"));
    }
    if let Some(last) = page.next {
        links.push((link(last, Direction::Next), "next"));
    }
    let mut response = with_header(
        reply(StatusCode::OK, page.body),
        HeaderName::from_static("x-shopify-api-version"),
        &version,
    );
    if !links.is_empty() {
        response = with_header(response, header::LINK, &link_header(&links));
    }
    response
}
