//! A clamping page-number API (no single real one: the behaviour of several small
//! JSON APIs and of json-server-like tools; docs/design.md §4 names it), at
//! `/clamp/things?page=&per_page=&modified_since=`.
//!
//! Its quirk: a page past the end is answered with the LAST page again (and a page below
//! 1 with the first), so "an empty page" never comes and a client that stops on one
//! loops; the body says what comes next: `{"things": [...], "page": <the page served>,
//! "per_page": n, "next": <page + 1> | null}`, `null` on the last page. Things are
//! ordered by `(modified_at, id)`, so an update moves a thing to the end and the pages
//! shift under a reader. `modified_since` (RFC 3339 or a date, inclusive, to the second)
//! filters on `modified_at`. `per_page` is clamped as well: default 20, 1 to 100. A
//! value that is not a number or a time is a `400 {"error": "..."}`; deletes are hard.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, reply, rfc3339, title, with_table,
};
use crate::{Sandbox, json_array, query_pairs};

const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;
const STATUSES: [&str; 3] = ["active", "paused", "archived"];

pub(super) struct Clamp;

impl Dialect for Clamp {
    const NAME: &'static str = "clamp";
    const STREAM: u64 = 15;
    const FIRST_ID: u64 = 1;
    const ID_GAP: u64 = 1;
    const ID: IdStyle = IdStyle::Number;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = false;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.clamp
    }

    fn format_time(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn render(record: &Record) -> String {
        serde_json::json!({
            "id": record.n,
            "name": title(record),
            "status": record.pick(70, &STATUSES),
            "modified_at": Self::format_time(record.updated),
        })
        .to_string()
    }
}

fn error(message: &str) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "error": message }).to_string(),
    )
}

struct Listing {
    since: Option<DateTime<Utc>>,
    page: usize,
    per_page: usize,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut listing = Listing {
            since: None,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        };
        for (key, value) in query_pairs(raw) {
            let number = || {
                value
                    .parse::<i64>()
                    .map_err(|_| format!("{key} must be a number, not {value}"))
            };
            match key.as_str() {
                "page" => listing.page = number()?.max(1) as usize,
                "per_page" => listing.per_page = number()?.clamp(1, MAX_PER_PAGE as i64) as usize,
                "modified_since" => {
                    let since = rfc3339(&value).or_else(|| {
                        NaiveDate::parse_from_str(&value, "%Y-%m-%d")
                            .ok()?
                            .and_hms_opt(0, 0, 0)
                            .map(|t| t.and_utc())
                    });
                    listing.since = Some(
                        since.ok_or_else(|| format!("modified_since is not a time: {value}"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(listing)
    }
}

fn page(table: &Table<Clamp>, listing: &Listing) -> String {
    let from = match listing.since {
        Some(since) => std::ops::Bound::Included((since, 0)),
        None => std::ops::Bound::Unbounded,
    };
    let things: Vec<&Record> = table.updated_from(from).collect();
    let last = things.len().div_ceil(listing.per_page).max(1);
    let served = listing.page.min(last);
    let next = match served < last {
        true => (served + 1).to_string(),
        false => "null".to_owned(),
    };
    format!(
        r#"{{"things":{},"page":{served},"per_page":{},"next":{next}}}"#,
        json_array(
            things
                .iter()
                .skip((served - 1) * listing.per_page)
                .take(listing.per_page)
                .map(|r| r.json.as_str())
        ),
        listing.per_page,
    )
}

/// `GET /clamp/things`.
pub(super) async fn things(
    State(sandbox): State<Arc<Sandbox>>,
    RawQuery(raw): RawQuery,
) -> Response {
    match Listing::parse(raw.as_deref()) {
        Ok(listing) => reply(
            StatusCode::OK,
            with_table::<Clamp, _>(&sandbox, |table, _| page(table, &listing)),
        ),
        Err(message) => error(&message),
    }
}
