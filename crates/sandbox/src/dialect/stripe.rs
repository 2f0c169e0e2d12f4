//! Stripe's list API, `GET /v1/customers` (real-apis.md §3), at `/stripe/v1/customers`.
//!
//! Imitated: `{"object": "list", "data": [...], "has_more": bool, "url": "/v1/customers"}`,
//! newest first (reverse chronological by `created`); `limit` 1 to 100 (default 10, any
//! other value a `400`); `starting_after=<id>` (the page after that customer, older) and
//! `ending_before=<id>` (the page before it, newer, still newest first), not both;
//! `created` as Unix seconds, exact or `created[gt|gte|lt|lte]`, resent by the client on
//! every page; `email`; any other parameter is a `400 parameter_unknown`, as Stripe
//! answers. A cursor id Stripe never issued is a `400 resource_missing`. Errors have
//! Stripe's shape `{"error": {"type": "invalid_request_error", "message", "param", ...}}`.
//!
//! How the order is modelled: by `(created, id number)` descending, so customers created
//! in the same second come newest-created first (Stripe's same-second order is not
//! confirmed). `created` never changes: an update changes the customer's content but
//! not its place, so `created[gte]` finds new customers only, as on the real API (which
//! reports updates through `/v1/events`, not imitated here). A deleted customer leaves
//! the listing (a hard delete; Stripe keeps it retrievable with `"deleted": true`), but
//! a cursor naming it still pages on from where it stood.

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, base62, email, person, reply,
    stripe_number, with_table,
};
use crate::{Sandbox, json_array, query_pairs};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub(super) struct Stripe;

impl Dialect for Stripe {
    const NAME: &'static str = "stripe";
    const STREAM: u64 = 8;
    const FIRST_ID: u64 = 1;
    const ID_GAP: u64 = 3;
    const ID: IdStyle = IdStyle::Stripe;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = false;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.stripe
    }

    /// Unix seconds, as `created` holds them.
    fn format_time(at: DateTime<Utc>) -> String {
        at.timestamp().to_string()
    }

    fn render(record: &Record) -> String {
        let (first, last) = person(record);
        serde_json::json!({
            "id": record.id::<Self>(),
            "object": "customer",
            "address": null,
            "balance": 0,
            "created": record.created.timestamp(),
            "currency": null,
            "default_source": null,
            "delinquent": false,
            "description": format!("Sandbox customer, revision {}", record.revision),
            "discount": null,
            "email": email(record),
            "invoice_prefix": base62(record.n, 8),
            "livemode": false,
            "metadata": {},
            "name": format!("{first} {last}"),
            "next_invoice_sequence": 1,
            "phone": null,
            "preferred_locales": [],
            "shipping": null,
            "tax_exempt": "none",
            "test_clock": null,
        })
        .to_string()
    }
}

/// A Stripe error: `400` with `{"error": {"type": "invalid_request_error", ...}}`.
struct Error {
    code: Option<&'static str>,
    param: String,
    message: String,
}

fn error(code: Option<&'static str>, param: &str, message: &str) -> Error {
    Error {
        code,
        param: param.to_owned(),
        message: message.to_owned(),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({
            "message": self.message,
            "param": self.param,
            "type": "invalid_request_error",
        });
        if let Some(code) = self.code {
            error["code"] = code.into();
            let page = code.replace('_', "-");
            error["doc_url"] = format!("https://stripe.com/docs/error-codes/{page}").into();
        }
        reply(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": error }).to_string(),
        )
    }
}

/// A `starting_after` or `ending_before`: the customer's number, which of the two, and
/// the parameter as given.
struct Cursor {
    n: u64,
    before: bool,
    param: String,
    id: String,
}

/// What Stripe answers to a cursor naming no customer it ever had.
fn missing(param: &str, id: &str) -> Error {
    error(
        Some("resource_missing"),
        param,
        &format!("No such customer: '{id}'"),
    )
}

struct Listing {
    limit: usize,
    cursor: Option<Cursor>,
    /// Inclusive bounds on `created`, Unix seconds.
    created: (i64, i64),
    email: Option<String>,
}

impl Listing {
    fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let mut listing = Listing {
            limit: DEFAULT_LIMIT,
            cursor: None,
            created: (i64::MIN, i64::MAX),
            email: None,
        };
        let mut cursors = Vec::new();
        for (key, value) in query_pairs(raw) {
            let seconds = || {
                value.parse::<i64>().map_err(|_| {
                    error(
                        Some("parameter_invalid_integer"),
                        &key,
                        &format!("Invalid integer: {value}"),
                    )
                })
            };
            let (low, high) = &mut listing.created;
            match key.as_str() {
                "limit" => {
                    listing.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            error(
                                None,
                                "limit",
                                &format!(
                                    "This value must be greater than or equal to 1 and less than or equal to {MAX_LIMIT}."
                                ),
                            )
                        })?;
                }
                "starting_after" | "ending_before" => cursors.push((key.clone(), value.clone())),
                "created" => {
                    let at = seconds()?;
                    (*low, *high) = ((*low).max(at), (*high).min(at));
                }
                "created[gt]" => *low = (*low).max(seconds()?.saturating_add(1)),
                "created[gte]" => *low = (*low).max(seconds()?),
                "created[lt]" => *high = (*high).min(seconds()?.saturating_sub(1)),
                "created[lte]" => *high = (*high).min(seconds()?),
                "email" => listing.email = Some(value.clone()),
                _ => {
                    return Err(error(
                        Some("parameter_unknown"),
                        &key,
                        &format!("Received unknown parameter: {key}"),
                    ));
                }
            }
        }
        listing.cursor = match cursors.as_slice() {
            [] => None,
            [(key, id)] => Some(Cursor {
                n: stripe_number(id).ok_or_else(|| missing(key, id))?,
                before: key == "ending_before",
                param: key.clone(),
                id: id.clone(),
            }),
            _ => {
                return Err(error(
                    None,
                    "starting_after",
                    "You may only specify one of these parameters: ending_before, starting_after.",
                ));
            }
        };
        Ok(listing)
    }

    fn admit(&self, record: &Record) -> bool {
        let created = record.created.timestamp();
        (self.created.0..=self.created.1).contains(&created)
            && self
                .email
                .as_ref()
                .is_none_or(|e| *e == super::email(record))
    }
}

/// One page, newest first, as the list object's text; `Err` for a cursor naming no
/// customer this API ever had.
fn page(table: &Table<Stripe>, listing: &Listing) -> Result<String, Error> {
    let key_of = |n: u64| {
        table
            .records
            .get(&n)
            .map(|r| r.created)
            .or_else(|| table.removed.get(&n).copied())
            .map(|created| (created, n))
    };
    let admitted = |keys: &mut dyn Iterator<Item = &(DateTime<Utc>, u64)>| -> Vec<&Record> {
        keys.filter_map(|(_, n)| table.records.get(n))
            .filter(|r| listing.admit(r))
            .take(listing.limit + 1)
            .collect()
    };
    let mut customers = match &listing.cursor {
        None => admitted(&mut table.by_created.iter().rev()),
        Some(cursor) => {
            let key = key_of(cursor.n).ok_or_else(|| missing(&cursor.param, &cursor.id))?;
            match cursor.before {
                false => admitted(
                    &mut table
                        .by_created
                        .range((Bound::Unbounded, Bound::Excluded(key)))
                        .rev(),
                ),
                // The newer customers nearest the cursor, then newest first.
                true => admitted(
                    &mut table
                        .by_created
                        .range((Bound::Excluded(key), Bound::Unbounded)),
                ),
            }
        }
    };
    let has_more = customers.len() > listing.limit;
    customers.truncate(listing.limit);
    if listing.cursor.as_ref().is_some_and(|c| c.before) {
        customers.reverse();
    }
    Ok(format!(
        r#"{{"object":"list","data":{},"has_more":{has_more},"url":"/v1/customers"}}"#,
        json_array(customers.iter().map(|r| r.json.as_str()))
    ))
}

/// `GET /stripe/v1/customers`.
pub(super) async fn list(State(sandbox): State<Arc<Sandbox>>, RawQuery(raw): RawQuery) -> Response {
    let listing = match Listing::parse(raw.as_deref()) {
        Ok(listing) => listing,
        Err(refusal) => return refusal.into_response(),
    };
    match with_table::<Stripe, _>(&sandbox, |table, _| page(table, &listing)) {
        Ok(body) => reply(StatusCode::OK, body),
        Err(refusal) => refusal.into_response(),
    }
}
