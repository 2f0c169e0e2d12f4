//! Zendesk's cursor-based incremental ticket export,
//! `GET /api/v2/incremental/tickets/cursor.json` (real-apis.md §4), at
//! `/zendesk/api/v2/incremental/tickets/cursor.json`.
//!
//! Imitated: the first request gives `start_time` (Unix seconds; tickets created or
//! changed on or after it), every later one `cursor=<after_cursor>` (a cursor wins over
//! a `start_time` sent beside it); `{"tickets": [...], "after_url", "after_cursor",
//! "before_url", "before_cursor", "end_of_stream"}`; `per_page` up to 1000 (the
//! default); tickets changed within the minute before the request are never returned,
//! and a `start_time` less than a minute old is a `400`; after `end_of_stream: true` the
//! last `after_cursor` is kept and polled with later, and returns what changed since.
//! The cursor reads like Zendesk's (base64 of `"<time>.0||<id>|"`) and is opaque.
//! Deleted tickets stay in the export with `"status": "deleted"` (a soft delete, at a new
//! `updated_at`) unless `exclude_deleted=true`; `after_url` carries only the cursor, so
//! the client resends `exclude_deleted` and `per_page` itself.
//!
//! Simplified: the export is ordered by `(updated_at, id)` (Zendesk's order is not
//! documented); `before_cursor` and `before_url` are always `null` (no paging backwards);
//! a `per_page` above 1000 is taken as 1000; no side-loading (`include`), no permanently
//! deleted (scrubbed) tickets, no time-based export.

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, opaque, reply, title, unopaque,
    with_table,
};
use crate::{Origin, Sandbox, json_array, parse_flag, query_pairs};

const MAX_PER_PAGE: usize = 1000;
/// Changes younger than this are left out of every export.
const SETTLE_SECONDS: i64 = 60;
const STATUSES: [&str; 5] = ["new", "open", "pending", "solved", "closed"];
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const TYPES: [&str; 4] = ["question", "incident", "problem", "task"];
const CHANNELS: [&str; 3] = ["web", "email", "api"];

pub(super) struct Zendesk;

impl Dialect for Zendesk {
    const NAME: &'static str = "zendesk";
    const STREAM: u64 = 9;
    const FIRST_ID: u64 = 35_436;
    const ID_GAP: u64 = 3;
    const ID: IdStyle = IdStyle::Number;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = true;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.zendesk
    }

    /// `2011-05-05T10:38:52Z`.
    fn format_time(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn render(record: &Record) -> String {
        let subject = title(record);
        let status = match record.deleted {
            true => "deleted",
            false => record.pick(20, &STATUSES),
        };
        serde_json::json!({
            "url": format!("https://tidemark.zendesk.com/api/v2/tickets/{}.json", record.n),
            "id": record.n,
            "external_id": null,
            "via": { "channel": record.pick(21, &CHANNELS) },
            "created_at": Self::format_time(record.created),
            "updated_at": Self::format_time(record.updated),
            "generated_timestamp": record.updated.timestamp(),
            "type": record.pick(22, &TYPES),
            "subject": subject,
            "raw_subject": subject,
            "description": format!("{subject}, reported in revision {}.", record.revision),
            "priority": record.pick(23, &PRIORITIES),
            "status": status,
            "requester_id": 20_978_392 + record.figure(24, 50),
            "submitter_id": 76_872 + record.figure(25, 5),
            "assignee_id": 235_323 + record.figure(26, 5),
            "organization_id": null,
            "group_id": 98_738,
            "tags": [record.pick(27, &super::WORDS)],
        })
        .to_string()
    }
}

/// A Zendesk `400`: `{"error": "InvalidValue", "description"}`.
struct Error(String);

fn error(description: &str) -> Error {
    Error(description.to_owned())
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": "InvalidValue", "description": self.0 });
        reply(StatusCode::BAD_REQUEST, body.to_string())
    }
}

/// A place in `(updated_at, id)` order; the export goes on strictly after it.
type Position = (DateTime<Utc>, u64);

fn cursor(position: Position) -> String {
    opaque(&format!("{}.0||{}|", position.0.timestamp(), position.1))
}

fn read_cursor(token: &str) -> Option<Position> {
    let text = unopaque(token)?;
    let (time, rest) = text.split_once(".0||")?;
    let id = rest.strip_suffix('|')?.parse().ok()?;
    Some((DateTime::from_timestamp(time.parse().ok()?, 0)?, id))
}

struct Export {
    after: Position,
    per_page: usize,
    exclude_deleted: bool,
}

impl Export {
    fn parse(raw: Option<&str>, now: DateTime<Utc>) -> Result<Self, Error> {
        let (mut start_time, mut after) = (None, None);
        let mut export = Export {
            after: (DateTime::<Utc>::MIN_UTC, 0),
            per_page: MAX_PER_PAGE,
            exclude_deleted: false,
        };
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "start_time" => {
                    start_time = Some(
                        value
                            .parse::<i64>()
                            .ok()
                            .and_then(|s| DateTime::from_timestamp(s, 0))
                            .ok_or_else(|| error("start_time must be a Unix time in seconds"))?,
                    );
                }
                "cursor" => {
                    after = Some(read_cursor(&value).ok_or_else(|| error("Invalid cursor"))?)
                }
                "per_page" => {
                    export.per_page = value
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| error("per_page must be a positive integer"))?
                        .min(MAX_PER_PAGE);
                }
                "exclude_deleted" => {
                    export.exclude_deleted =
                        parse_flag("exclude_deleted", &value).map_err(|e| error(&e))?;
                }
                _ => {}
            }
        }
        export.after = match (after, start_time) {
            (Some(after), _) => after,
            (None, Some(start)) if start > now - TimeDelta::seconds(SETTLE_SECONDS) => {
                return Err(error(
                    "Too recent start_time. Use a start_time older than 1 minute",
                ));
            }
            // On or after start_time: no ticket has id 0.
            (None, Some(start)) => (start, 0),
            (None, None) => return Err(error("start_time or cursor is required")),
        };
        Ok(export)
    }
}

/// One page: the tickets' JSON array, the place it reached and whether the stream ended.
fn page(table: &Table<Zendesk>, export: &Export, now: DateTime<Utc>) -> (String, Position, bool) {
    let horizon = now - TimeDelta::seconds(SETTLE_SECONDS);
    let mut settled = table
        .updated_from(Bound::Excluded(export.after))
        .take_while(|r| r.updated <= horizon);
    let (mut tickets, mut reached) = (Vec::new(), export.after);
    for record in settled.by_ref() {
        reached = (record.updated, record.n);
        if export.exclude_deleted && record.deleted {
            continue;
        }
        tickets.push(record.json.as_str());
        if tickets.len() == export.per_page {
            break;
        }
    }
    let more = settled.any(|r| !(export.exclude_deleted && r.deleted));
    (json_array(tickets.into_iter()), reached, !more)
}

/// `GET /zendesk/api/v2/incremental/tickets/cursor.json`.
pub(super) async fn export(
    State(sandbox): State<Arc<Sandbox>>,
    Origin(origin): Origin,
    RawQuery(raw): RawQuery,
) -> Response {
    let page = with_table::<Zendesk, _>(&sandbox, |table, now| {
        Export::parse(raw.as_deref(), now).map(|export| page(table, &export, now))
    });
    let (tickets, reached, end) = match page {
        Ok(page) => page,
        Err(refusal) => return refusal.into_response(),
    };
    let after = cursor(reached);
    let body = serde_json::json!({
        "after_url": format!("{origin}/zendesk/api/v2/incremental/tickets/cursor.json?cursor={after}"),
        "after_cursor": after,
        "before_url": null,
        "before_cursor": null,
        "end_of_stream": end,
    });
    // The tickets go first, written as stored.
    let rest = body.to_string();
    reply(
        StatusCode::OK,
        format!(r#"{{"tickets":{tickets},{}"#, &rest[1..]),
    )
}
