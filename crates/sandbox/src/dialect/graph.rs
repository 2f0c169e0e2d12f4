//! Microsoft Graph's delta query, `GET /v1.0/users/delta` (real-apis.md §8), at
//! `/graph/v1.0/users/delta`.
//!
//! Imitated: a round starts without a token (every user that exists) or from a
//! `$deltatoken` (what changed since), goes on through `@odata.nextLink`
//! (`$skiptoken`) and ends with `@odata.deltaLink` (`$deltatoken`), never both on a page;
//! `{"@odata.context", "@odata.nextLink" | "@odata.deltaLink", "value": [...]}`; the
//! links are absolute, on the request's host. In later rounds a deleted user is
//! `{"id", "@removed": {"reason": "changed"}}` (a soft delete, restorable in Entra ID) or,
//! one in three (by the user's last revision), `{"reason": "deleted"}` (deleted for
//! good), and an updated one comes again whole. A user changed while a round is read may come in
//! it and again in the next (replays happen, as Graph says). `$deltatoken=latest` gives a
//! delta link and no users. Page size follows `Prefer: odata.maxpagesize=N` (echoed in
//! `Preference-Applied`). A token from before `POST /_control/graph/expire_tokens`, or
//! one the API never issued, is a `410 Gone` (`syncStateNotFound`) whose `Location` is
//! a fresh delta query: the client must sync fully again. `$orderby`, `$expand`, `$top`
//! and `$filter` are a `400`.
//!
//! Simplified: a round lists users in id order (Graph gives no order) and 100 a page by
//! default (not documented); `$select` is accepted and ignored (always the default user
//! properties, and whole objects where Graph may send only the changed ones); the real
//! API answers an expired token with 400 `syncStateNotFound` and a reset with 410, both
//! are 410 here; `$filter` by id is not imitated.

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, opaque, person, reply, unopaque,
    with_header, with_table,
};
use crate::churn::Dataset;
use crate::{Origin, Sandbox, json_array, json_reply, query_pairs};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;
const PATH: &str = "/graph/v1.0/users/delta";
const CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#users";
const JOBS: [&str; 5] = ["Engineer", "Designer", "Analyst", "Manager", "Writer"];
const OFFICES: [&str; 4] = ["18/2111", "20/1101", "131/1104", "Home"];

pub(super) struct Graph;

impl Dialect for Graph {
    const NAME: &'static str = "graph";
    const STREAM: u64 = 13;
    const FIRST_ID: u64 = 1;
    const ID_GAP: u64 = 4;
    const ID: IdStyle = IdStyle::Guid;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = true;
    /// The token epoch: tokens of earlier epochs have expired.
    type State = u32;

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.graph
    }

    fn format_time(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// A user, or once deleted the `@removed` entry later rounds carry.
    fn render(record: &Record) -> String {
        let id = record.id::<Self>();
        if record.deleted {
            let reason = match record.figure(11, 3) {
                0 => "deleted",
                _ => "changed",
            };
            return format!(r#"{{"id":"{id}","@removed":{{"reason":"{reason}"}}}}"#);
        }
        let (first, last) = person(record);
        let login = format!(
            "{}.{}{}",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase(),
            record.ordinal
        );
        // Graph's own property order, by hand; every value is from a fixed vocabulary.
        format!(
            r#"{{"businessPhones":["+1 425 555 {:04}"],"displayName":"{first} {last}","givenName":"{first}","jobTitle":"{}","mail":"{login}@tidemark.onmicrosoft.com","mobilePhone":null,"officeLocation":"{}","preferredLanguage":"en-US","surname":"{last}","userPrincipalName":"{login}@tidemark.onmicrosoft.com","id":"{id}"}}"#,
            record.figure(50, 10_000),
            record.pick(51, &JOBS),
            record.pick(52, &OFFICES),
        )
    }
}

/// Where a round stands: the change number it lists changes after (0: the first round,
/// which lists users that exist), the change number it started at (its delta link's),
/// and the last id listed.
struct Round {
    since: u64,
    until: u64,
    after: u64,
}

fn skip_token(epoch: u32, round: &Round) -> String {
    opaque(&format!(
        "s{epoch}.{}.{}.{}",
        round.since, round.until, round.after
    ))
}

fn delta_token(epoch: u32, seq: u64) -> String {
    opaque(&format!("d{epoch}.{seq}"))
}

/// The numbers in a token of `kind` (`s` or `d`) of the current epoch.
fn read_token(token: &str, kind: char, epoch: u32) -> Option<Vec<u64>> {
    let text = unopaque(token)?;
    let mut parts = text.strip_prefix(kind)?.split('.');
    (parts.next()?.parse::<u32>().ok()? == epoch).then_some(())?;
    parts.map(|p| p.parse().ok()).collect()
}

/// A Graph error body.
fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

/// `410 Gone`: the token cannot be used; start again at `Location`.
fn gone(origin: &str) -> Response {
    let body = error_body(
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    );
    with_header(
        reply(StatusCode::GONE, body),
        header::LOCATION,
        &format!("{origin}{PATH}"),
    )
}

enum Request {
    Start,
    Latest,
    Delta(String),
    Skip(String),
}

/// A Graph `400`: `{"error": {"code", "message"}}`.
struct Error {
    code: &'static str,
    message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        reply(
            StatusCode::BAD_REQUEST,
            error_body(self.code, &self.message),
        )
    }
}

fn parse(raw: Option<&str>) -> Result<Request, Error> {
    let mut request = Request::Start;
    for (key, value) in query_pairs(raw) {
        let next = match key.to_ascii_lowercase().as_str() {
            "$deltatoken" if value == "latest" => Request::Latest,
            "$deltatoken" => Request::Delta(value),
            "$skiptoken" => Request::Skip(value),
            "$orderby" | "$expand" | "$top" | "$filter" => {
                return Err(Error {
                    code: "Request_UnsupportedQuery",
                    message: format!("Unsupported query option '{key}' for delta."),
                });
            }
            _ => continue,
        };
        if !matches!(request, Request::Start) {
            return Err(Error {
                code: "BadRequest",
                message: "Only one of $deltatoken and $skiptoken may be given.".to_owned(),
            });
        }
        request = next;
    }
    Ok(request)
}

/// The page size a `Prefer: odata.maxpagesize=N` asks for, if any.
fn max_page_size(headers: &HeaderMap) -> Option<usize> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("odata.maxpagesize=")?.parse().ok())
        .filter(|&n| n >= 1)
        .map(|n: usize| n.min(MAX_PAGE))
}

/// One page of a round: its body, or `None` for a token that is not (or no longer) good.
fn page(table: &Table<Graph>, request: &Request, size: usize, origin: &str) -> Option<String> {
    let epoch = table.state;
    let round = match request {
        Request::Latest => {
            let link = format!(
                "{origin}{PATH}?$deltatoken={}",
                delta_token(epoch, table.last_seq)
            );
            return Some(format!(
                r#"{{"@odata.context":"{CONTEXT}","@odata.deltaLink":"{link}","value":[]}}"#
            ));
        }
        Request::Start => Round {
            since: 0,
            until: table.last_seq,
            after: 0,
        },
        Request::Delta(token) => match read_token(token, 'd', epoch)?.as_slice() {
            &[since] if since <= table.last_seq => Round {
                since,
                until: table.last_seq,
                after: 0,
            },
            _ => return None,
        },
        Request::Skip(token) => match read_token(token, 's', epoch)?.as_slice() {
            &[since, until, after] if since <= until && until <= table.last_seq => Round {
                since,
                until,
                after,
            },
            _ => return None,
        },
    };
    let mut users: Vec<&Record> = table
        .records
        .range((Bound::Excluded(round.after), Bound::Unbounded))
        .map(|(_, r)| r)
        .filter(|r| r.seq > round.since && (round.since > 0 || !r.deleted))
        .take(size + 1)
        .collect();
    let link = match users.len() > size {
        true => {
            users.truncate(size);
            let next = Round {
                after: users.last().map_or(round.after, |r| r.n),
                ..round
            };
            format!(
                r#""@odata.nextLink":"{origin}{PATH}?$skiptoken={}""#,
                skip_token(epoch, &next)
            )
        }
        false => format!(
            r#""@odata.deltaLink":"{origin}{PATH}?$deltatoken={}""#,
            delta_token(epoch, round.until)
        ),
    };
    Some(format!(
        r#"{{"@odata.context":"{CONTEXT}",{link},"value":{}}}"#,
        json_array(users.iter().map(|r| r.json.as_str()))
    ))
}

/// `GET /graph/v1.0/users/delta`.
pub(super) async fn delta(
    State(sandbox): State<Arc<Sandbox>>,
    Origin(origin): Origin,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let request = match parse(raw.as_deref()) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let preferred = max_page_size(&headers);
    let size = preferred.unwrap_or(DEFAULT_PAGE);
    let body = with_table::<Graph, _>(&sandbox, |table, _| page(table, &request, size, &origin));
    let Some(body) = body else {
        return gone(&origin);
    };
    let response = reply(StatusCode::OK, body);
    match preferred {
        Some(n) => with_header(
            response,
            HeaderName::from_static("preference-applied"),
            &format!("odata.maxpagesize={n}"),
        ),
        None => response,
    }
}

/// `POST /_control/graph/expire_tokens`: every delta and skip token issued so far
/// expires; using one is a `410 Gone`. Answers `{"epoch": n}`.
pub(super) async fn expire_tokens(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let mut world = sandbox.world();
    let (table, _) = Table::<Graph>::parts(&mut world);
    table.state += 1;
    json_reply(
        StatusCode::OK,
        serde_json::json!({ "epoch": table.state }).to_string(),
    )
}
