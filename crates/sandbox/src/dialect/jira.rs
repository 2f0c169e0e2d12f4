//! Jira Cloud's issue search, the older `GET /rest/api/3/search` (real-apis.md §7), at
//! `/jira/rest/api/3/search`, over the issues of project `TM`.
//!
//! Imitated: `jql`, `startAt` (an offset, default 0) and `maxResults` (default 50; more
//! than 100 is silently 100, and the reply says so); `{"expand", "startAt", "maxResults",
//! "total", "issues": [...]}`, the end reached when `startAt` + the issues returned
//! reaches `total`. Pages are offsets, so they shift as issues change. JQL values of
//! `updated` and `created` (also `updatedDate`, `createdDate`) are given to the minute:
//! `"yyyy/MM/dd HH:mm"`, `"yyyy-MM-dd HH:mm"`, `"yyyy/MM/dd"`, `"yyyy-MM-dd"` (quoted or
//! not), a relative period (`-5d`, `-2h`, `-30m`, `-1w`, from the sandbox clock, to the
//! minute) or epoch milliseconds; a value with seconds is refused. The comparison is
//! with the issue's full time (milliseconds), so `updated >= "2024/01/02 10:15"` is every
//! issue from 10:15:00.000 on and a client resuming from a record's time re-reads up to
//! a minute. Issues' times are written `2024-01-02T10:15:47.123+0000`. Errors are a
//! `400` `{"errorMessages": [...], "errors": {}, "warningMessages": []}`.
//!
//! The JQL understood: `[<clause> [AND <clause>]…] [ORDER BY <field> [ASC|DESC], …]`,
//! where a clause is `updated|created <op> <value>` or `project = TM`, and the ORDER BY
//! fields are `updated`, `created` and `key`; anything else (OR, functions, other
//! fields) is refused. Simplified: the user's time zone is UTC; without ORDER BY the
//! order is by id, and ties are broken by id (Jira's are not documented); `fields` and
//! `expand` are ignored (always summary, status, issue type, created, updated); Jira
//! reports no deletions, so deletes are hard. Jira Cloud has since removed this endpoint
//! for `/rest/api/3/search/jql` (`nextPageToken`), which is not imitated.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};

use super::lexer::{Token, Tokens, compare, tokenize};
use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, by_keys, reply, title, with_table,
};
use crate::{Sandbox, json_array, query_pairs};

const PROJECT: &str = "TM";
const DEFAULT_MAX_RESULTS: usize = 50;
const MAX_RESULTS: usize = 100;
const STATUSES: [&str; 3] = ["To Do", "In Progress", "Done"];
const ISSUE_TYPES: [&str; 3] = ["Bug", "Task", "Story"];

pub(super) struct Jira;

impl Dialect for Jira {
    const NAME: &'static str = "jira";
    const STREAM: u64 = 12;
    const FIRST_ID: u64 = 10_001;
    const ID_GAP: u64 = 2;
    const ID: IdStyle = IdStyle::Text;
    const PRECISION: Precision = Precision::Millis;
    const SOFT_DELETE: bool = false;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.jira
    }

    /// `2024-01-02T10:15:47.123+0000`.
    fn format_time(at: DateTime<Utc>) -> String {
        at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
    }

    fn render(record: &Record) -> String {
        let id = record.id::<Self>();
        serde_json::json!({
            "expand": "operations,versionedRepresentations,editmeta,changelog,renderedFields",
            "id": id,
            "self": format!("https://tidemark.atlassian.net/rest/api/3/issue/{id}"),
            "key": key(record),
            "fields": {
                "summary": title(record),
                "status": { "name": record.pick(40, &STATUSES) },
                "issuetype": { "name": record.pick(41, &ISSUE_TYPES) },
                "created": Self::format_time(record.created),
                "updated": Self::format_time(record.updated),
            },
        })
        .to_string()
    }
}

fn key(record: &Record) -> String {
    format!("{PROJECT}-{}", record.ordinal)
}

/// A Jira `400`: `{"errorMessages": [message], "errors": {}, "warningMessages": []}`.
fn error(message: &str) -> Response {
    let body = serde_json::json!({
        "errorMessages": [message],
        "errors": {},
        "warningMessages": [],
    });
    reply(StatusCode::BAD_REQUEST, body.to_string())
}

fn jql_error(message: &str) -> String {
    format!("Error in the JQL Query: {message}")
}

#[derive(Clone, Copy)]
enum Field {
    Updated,
    Created,
    Key,
}

impl Field {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "updated" | "updateddate" => Some(Field::Updated),
            "created" | "createddate" => Some(Field::Created),
            "key" | "issuekey" => Some(Field::Key),
            _ => None,
        }
    }

    /// The value compared and sorted on (a time in ms, or the key's number).
    fn of(self, record: &Record) -> i64 {
        match self {
            Field::Updated => record.updated.timestamp_millis(),
            Field::Created => record.created.timestamp_millis(),
            Field::Key => record.ordinal as i64,
        }
    }
}

struct Clause {
    field: Field,
    op: &'static str,
    /// Epoch milliseconds.
    value: i64,
}

struct Jql {
    clauses: Vec<Clause>,
    order: Vec<(Field, bool)>,
}

impl Jql {
    fn parse(text: &str, now: DateTime<Utc>) -> Result<Self, String> {
        let mut tokens = tokenize(text, &['"', '\''])?;
        let tokens = &mut tokens;
        let mut clauses = Vec::new();
        if !tokens.at_end() && !tokens.keyword("ORDER") {
            loop {
                if let Some(clause) = clause(tokens, now)? {
                    clauses.push(clause);
                }
                if !tokens.keyword("AND") {
                    break;
                }
            }
            if !tokens.at_end() {
                tokens.expect("ORDER")?;
            }
        }
        let mut order = Vec::new();
        // ORDER was taken (at the start or after the clauses) unless at the end.
        if !tokens.at_end() {
            tokens.expect("BY")?;
            loop {
                let field = match tokens.next()? {
                    Token::Word(name) => Field::parse(&name).ok_or_else(|| {
                        format!("Field '{name}' does not exist or cannot be sorted on.")
                    })?,
                    _ => return Err(tokens.unwanted()),
                };
                order.push((field, tokens.direction()));
                if !tokens.comma() {
                    break;
                }
            }
            if !tokens.at_end() {
                return Err(tokens.unexpected());
            }
        }
        Ok(Jql { clauses, order })
    }
}

/// One clause; `None` for `project = TM`, which every issue satisfies.
fn clause(tokens: &mut Tokens, now: DateTime<Utc>) -> Result<Option<Clause>, String> {
    let name = match tokens.next()? {
        Token::Word(name) => name,
        _ => return Err(tokens.unwanted()),
    };
    let op = tokens.op()?;
    let value = tokens.next()?;
    if name.eq_ignore_ascii_case("project") {
        return match (op, value) {
            ("=", Token::Word(p) | Token::Quoted(p)) if p.eq_ignore_ascii_case(PROJECT) => Ok(None),
            (_, other) => Err(format!(
                "The value '{}' does not exist for the field 'project'.",
                other.text()
            )),
        };
    }
    let field = match Field::parse(&name) {
        Some(field @ (Field::Updated | Field::Created)) => field,
        _ => return Err(format!("The sandbox cannot search on the field '{name}'.")),
    };
    let text = match value {
        Token::Literal(text) | Token::Quoted(text) => text,
        other => return Err(format!("Expecting a value but got '{}'.", other.text())),
    };
    let value = parse_time(&text, now).ok_or_else(|| {
        format!(
            "Date value '{text}' for field '{name}' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."
        )
    })?;
    Ok(Some(Clause { field, op, value }))
}

/// A JQL date value in epoch milliseconds: to the minute, or epoch ms as given.
fn parse_time(text: &str, now: DateTime<Utc>) -> Option<i64> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if let Some(period) = text.strip_prefix('-') {
        let (number, unit) = period.split_at(period.len().checked_sub(1)?);
        let number: i64 = number.parse().ok()?;
        let minutes = match unit {
            "m" => number,
            "h" => number.checked_mul(60)?,
            "d" => number.checked_mul(24 * 60)?,
            "w" => number.checked_mul(7 * 24 * 60)?,
            _ => return None,
        };
        let at = now.checked_sub_signed(TimeDelta::try_minutes(minutes)?)?;
        return Some(at.with_second(0)?.with_nanosecond(0)?.timestamp_millis());
    }
    let minute = ["%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok());
    let day = || {
        ["%Y/%m/%d", "%Y-%m-%d"]
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(text, f).ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    };
    Some(minute.or_else(day)?.and_utc().timestamp_millis())
}

struct Search {
    jql: Jql,
    start_at: usize,
    max_results: usize,
}

impl Search {
    fn parse(raw: Option<&str>, now: DateTime<Utc>) -> Result<Self, String> {
        let mut search = Search {
            jql: Jql {
                clauses: Vec::new(),
                order: Vec::new(),
            },
            start_at: 0,
            max_results: DEFAULT_MAX_RESULTS,
        };
        for (key, value) in query_pairs(raw) {
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("The value '{value}' is invalid for {key}."))
            };
            match key.as_str() {
                "jql" => search.jql = Jql::parse(&value, now).map_err(|e| jql_error(&e))?,
                "startAt" => search.start_at = number()?,
                "maxResults" => search.max_results = number()?.min(MAX_RESULTS),
                _ => {}
            }
        }
        Ok(search)
    }
}

fn page(table: &Table<Jira>, search: &Search) -> String {
    let mut issues: Vec<&Record> = table
        .records
        .values()
        .filter(|r| {
            search
                .jql
                .clauses
                .iter()
                .all(|c| compare(c.op, c.field.of(r).cmp(&c.value)))
        })
        .collect();
    issues.sort_by(|a, b| {
        by_keys(&search.jql.order, a, b, |field, a, b| {
            field.of(a).cmp(&field.of(b))
        })
        .then(a.n.cmp(&b.n))
    });
    format!(
        r#"{{"expand":"schema,names","startAt":{},"maxResults":{},"total":{},"issues":{}}}"#,
        search.start_at,
        search.max_results,
        issues.len(),
        json_array(
            issues
                .iter()
                .skip(search.start_at)
                .take(search.max_results)
                .map(|r| r.json.as_str())
        )
    )
}

/// `GET /jira/rest/api/3/search?jql=&startAt=&maxResults=`.
pub(super) async fn search(
    State(sandbox): State<Arc<Sandbox>>,
    RawQuery(raw): RawQuery,
) -> Response {
    with_table::<Jira, _>(&sandbox, |table, now| {
        match Search::parse(raw.as_deref(), now) {
            Ok(search) => reply(StatusCode::OK, page(table, &search)),
            Err(message) => error(&message),
        }
    })
}
