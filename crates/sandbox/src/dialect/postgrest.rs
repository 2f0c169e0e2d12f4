//! PostgREST over a table `items` (real-apis.md §10), at `/postgrest/items`.
//!
//! Imitated: a bare JSON array of rows `{"id", "name", "quantity", "created_at",
//! "updated_at"}` (`timestamptz` as PostgreSQL writes it in JSON: microseconds, trailing
//! zeros dropped, `+00:00`, e.g. `2017-09-03T20:59:58.12+00:00`); filters
//! `column=[not.]op.value` with `eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `in.(a,b)` and
//! `is.null`, ANDed; logic trees `or=(…)`, `and=(…)`, `not.or=(…)`, nested
//! `and(…)`/`or(…)`, values optionally double-quoted, so the keyset form
//! `or=(updated_at.gt.X,and(updated_at.eq.X,id.gt.Y))` works; `order=col.asc|desc`
//! (`.nullsfirst`/`.nullslast` accepted), several columns; `limit` and `offset`;
//! `Content-Range: 0-24/*` on every reply, `…/<total>` and `206 Partial Content` with
//! `Prefer: count=exact`; an offset past the rows is a `416` `PGRST103`. Times are
//! compared at microseconds (a value with more digits is rounded, as PostgreSQL rounds);
//! a `+` sent unescaped is a space, so the time does not parse (`22007`). Errors are
//! PostgreSQL's and PostgREST's `{"code", "details", "hint", "message"}`: `42703` for an
//! unknown column (any parameter that is not a reserved one is a filter on a column),
//! `22P02`/`22007` for values that are not an integer or a time, `PGRST100` for what
//! does not parse.
//!
//! Simplified: without `order` rows come in last-change order (PostgreSQL promises no
//! order; a heap table often gives about this); `select` is accepted and ignored (all
//! columns); no `Range` request header, no `like`/`ilike`/`fts` operators, no
//! `db-max-rows`; rows have no nulls; deletes are hard (a deleted row is gone).

use std::cmp::Ordering;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::lexer::compare;
use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, WORDS, by_keys, reply, with_header,
    with_table,
};
use crate::{Sandbox, json_array, query_pairs};

pub(super) struct PostgRest;

impl Dialect for PostgRest {
    const NAME: &'static str = "postgrest";
    const STREAM: u64 = 14;
    const FIRST_ID: u64 = 1;
    const ID_GAP: u64 = 2;
    const ID: IdStyle = IdStyle::Number;
    const PRECISION: Precision = Precision::Micros;
    const SOFT_DELETE: bool = false;
    type State = ();

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.postgrest
    }

    /// `2017-09-03T20:59:58.12+00:00`: PostgreSQL drops trailing zeros of the fraction.
    fn format_time(at: DateTime<Utc>) -> String {
        let mut text = at.format("%Y-%m-%dT%H:%M:%S").to_string();
        let micros = at.timestamp_subsec_micros();
        if micros > 0 {
            text.push('.');
            text.push_str(format!("{micros:06}").trim_end_matches('0'));
        }
        text + "+00:00"
    }

    fn render(record: &Record) -> String {
        format!(
            r#"{{"id":{},"name":"{}","quantity":{},"created_at":"{}","updated_at":"{}"}}"#,
            record.n,
            name(record),
            quantity(record),
            Self::format_time(record.created),
            Self::format_time(record.updated),
        )
    }
}

fn name(record: &Record) -> String {
    format!("{} {}", record.pick(60, &WORDS), record.pick(61, &WORDS))
}

fn quantity(record: &Record) -> i64 {
    record.figure(62, 1000) as i64
}

/// A PostgREST error: `400` with `{"code", "details", "hint", "message"}`.
struct Error {
    status: StatusCode,
    code: &'static str,
    details: Option<String>,
    message: String,
}

impl Error {
    fn new(code: &'static str, message: String) -> Self {
        Error {
            status: StatusCode::BAD_REQUEST,
            code,
            details: None,
            message,
        }
    }

    fn parse(what: &str, text: &str) -> Self {
        Error::new(
            "PGRST100",
            format!("\"failed to parse {what} ({text})\" (line 1, column 1)"),
        )
    }

    fn reply(self) -> Response {
        let body = serde_json::json!({
            "code": self.code,
            "details": self.details,
            "hint": null,
            "message": self.message,
        });
        reply(self.status, body.to_string())
    }
}

#[derive(Clone, Copy)]
enum Column {
    Id,
    Name,
    Quantity,
    CreatedAt,
    UpdatedAt,
}

#[derive(PartialEq, PartialOrd)]
enum Scalar {
    Int(i64),
    Text(String),
    Time(DateTime<Utc>),
}

impl Column {
    fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "id" => Ok(Column::Id),
            "name" => Ok(Column::Name),
            "quantity" => Ok(Column::Quantity),
            "created_at" => Ok(Column::CreatedAt),
            "updated_at" => Ok(Column::UpdatedAt),
            _ => Err(Error::new(
                "42703",
                format!("column items.{name} does not exist"),
            )),
        }
    }

    fn of(self, record: &Record) -> Scalar {
        match self {
            Column::Id => Scalar::Int(record.n as i64),
            Column::Name => Scalar::Text(name(record)),
            Column::Quantity => Scalar::Int(quantity(record)),
            Column::CreatedAt => Scalar::Time(record.created),
            Column::UpdatedAt => Scalar::Time(record.updated),
        }
    }

    /// A value given for this column, typed as PostgreSQL would cast it.
    fn scalar(self, text: &str) -> Result<Scalar, Error> {
        let invalid = |kind: &str, code| {
            Error::new(
                code,
                format!("invalid input syntax for type {kind}: \"{text}\""),
            )
        };
        match self {
            Column::Id => text
                .parse()
                .map(Scalar::Int)
                .map_err(|_| invalid("bigint", "22P02")),
            Column::Quantity => text
                .parse()
                .map(Scalar::Int)
                .map_err(|_| invalid("integer", "22P02")),
            Column::Name => Ok(Scalar::Text(text.to_owned())),
            Column::CreatedAt | Column::UpdatedAt => parse_time(text)
                .map(Scalar::Time)
                .ok_or_else(|| invalid("timestamp with time zone", "22007")),
        }
    }
}

/// A `timestamptz` input: ISO 8601 with `T` or a space, an offset (`Z`, `+hh`, `+hhmm`,
/// `+hh:mm`) or none (UTC, the session's zone), or a date; rounded to microseconds.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.replacen(' ', "T", 1);
    let time = DateTime::parse_from_rfc3339(&text)
        .or_else(|_| DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .ok()?
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
        })?;
    let nanos = time.timestamp_nanos_opt()?;
    DateTime::from_timestamp_micros((nanos + 500).div_euclid(1000))
}

enum Test {
    /// A comparison operator of [`compare`] and its operand.
    Compare(&'static str, Scalar),
    In(Vec<Scalar>),
    IsNull,
}

enum Expr {
    Condition {
        column: Column,
        negated: bool,
        test: Test,
    },
    Group {
        any: bool,
        negated: bool,
        items: Vec<Expr>,
    },
}

impl Expr {
    fn admits(&self, record: &Record) -> bool {
        match self {
            Expr::Condition {
                column,
                negated,
                test,
            } => {
                let value = column.of(record);
                let holds = match test {
                    Test::Compare(op, operand) => {
                        value.partial_cmp(operand).is_some_and(|o| compare(op, o))
                    }
                    Test::In(values) => values.contains(&value),
                    Test::IsNull => false,
                };
                holds != *negated
            }
            Expr::Group {
                any,
                negated,
                items,
            } => {
                let holds = match any {
                    true => items.iter().any(|e| e.admits(record)),
                    false => items.iter().all(|e| e.admits(record)),
                };
                holds != *negated
            }
        }
    }
}

/// A value, without the double quotes that may protect reserved characters.
fn unquote(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => text.to_owned(),
    }
}

/// The items of `(a,b,…)`, split at the commas outside parentheses and quotes.
fn split_items(text: &str) -> Option<Vec<&str>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0usize, false, 0);
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.checked_sub(1)?,
            ',' if !quoted && depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0 && !quoted).then_some(())?;
    parts.push(&inner[start..]);
    Some(parts)
}

/// `[not.]op.value` for `column`.
fn condition(column: Column, spec: &str) -> Result<Expr, Error> {
    let (negated, spec) = match spec.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, spec),
    };
    let (op, operand) = spec
        .split_once('.')
        .ok_or_else(|| Error::parse("filter", spec))?;
    let op = match op {
        "eq" => "=",
        "neq" => "!=",
        "gt" => ">",
        "gte" => ">=",
        "lt" => "<",
        "lte" => "<=",
        "in" => {
            let values = split_items(operand)
                .ok_or_else(|| Error::parse("filter", spec))?
                .into_iter()
                .map(|v| column.scalar(&unquote(v)))
                .collect::<Result<_, _>>()?;
            return Ok(Expr::Condition {
                column,
                negated,
                test: Test::In(values),
            });
        }
        "is" if operand == "null" => {
            return Ok(Expr::Condition {
                column,
                negated,
                test: Test::IsNull,
            });
        }
        _ => return Err(Error::parse("filter", spec)),
    };
    Ok(Expr::Condition {
        column,
        negated,
        test: Test::Compare(op, column.scalar(&unquote(operand))?),
    })
}

/// A logic tree `(item,…)` of `[not.]and`/`[not.]or`, the items conditions
/// `column.[not.]op.value` or nested `[not.]and(…)`/`[not.]or(…)`.
fn group(kind: &str, tree: &str) -> Result<Expr, Error> {
    let (negated, kind) = match kind.strip_prefix("not.") {
        Some(rest) => (true, rest),
        None => (false, kind),
    };
    let any = match kind {
        "or" => true,
        "and" => false,
        _ => return Err(Error::parse("logic tree", tree)),
    };
    let items = split_items(tree)
        .ok_or_else(|| Error::parse("logic tree", tree))?
        .into_iter()
        .map(|item| {
            let nested = ["and(", "or(", "not.and(", "not.or("]
                .iter()
                .find(|prefix| item.starts_with(*prefix));
            match nested {
                Some(prefix) => {
                    let kind = &prefix[..prefix.len() - 1];
                    group(kind, &item[kind.len()..])
                }
                None => {
                    let (column, spec) = item
                        .split_once('.')
                        .ok_or_else(|| Error::parse("logic tree", tree))?;
                    condition(Column::parse(column)?, spec)
                }
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Expr::Group {
        any,
        negated,
        items,
    })
}

struct Read {
    filters: Vec<Expr>,
    /// `(column, descending)`.
    order: Vec<(Column, bool)>,
    limit: Option<usize>,
    offset: usize,
}

impl Read {
    fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let mut read = Read {
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: 0,
        };
        for (key, value) in query_pairs(raw) {
            let count = |what: &str| {
                value
                    .parse::<usize>()
                    .map_err(|_| Error::parse(what, &value))
            };
            match key.as_str() {
                "select" => {}
                "limit" => read.limit = Some(count("limit")?),
                "offset" => read.offset = count("offset")?,
                "order" => {
                    for term in value.split(',') {
                        let mut parts = term.split('.');
                        let column = Column::parse(parts.next().unwrap_or_default())?;
                        let mut descending = false;
                        for modifier in parts {
                            match modifier {
                                "asc" | "nullsfirst" | "nullslast" => {}
                                "desc" => descending = true,
                                _ => return Err(Error::parse("order", &value)),
                            }
                        }
                        read.order.push((column, descending));
                    }
                }
                "or" | "and" | "not.or" | "not.and" => read.filters.push(group(&key, &value)?),
                column => read
                    .filters
                    .push(condition(Column::parse(column)?, &value)?),
            }
        }
        Ok(read)
    }
}

/// Whether the request asks for a count (`Prefer: count=exact|planned|estimated`).
fn wants_count(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().starts_with("count="))
}

fn run(table: &Table<PostgRest>, read: &Read, count: bool) -> Response {
    let mut rows: Vec<&Record> = table
        .by_seq
        .values()
        .filter_map(|n| table.records.get(n))
        .filter(|r| read.filters.iter().all(|f| f.admits(r)))
        .collect();
    // A stable sort: rows equal in every key keep their last-change order.
    rows.sort_by(|a, b| {
        by_keys(&read.order, a, b, |column, a, b| {
            column
                .of(a)
                .partial_cmp(&column.of(b))
                .unwrap_or(Ordering::Equal)
        })
    });
    let total = rows.len();
    let shown_total = match count {
        true => total.to_string(),
        false => "*".to_owned(),
    };
    if read.offset > total {
        let error = Error {
            status: StatusCode::RANGE_NOT_SATISFIABLE,
            code: "PGRST103",
            details: Some(format!(
                "An offset of {} was requested, but there are only {total} rows.",
                read.offset
            )),
            message: "Requested range not satisfiable".to_owned(),
        };
        return with_header(error.reply(), header::CONTENT_RANGE, &format!("*/{total}"));
    }
    let page: Vec<&Record> = rows
        .into_iter()
        .skip(read.offset)
        .take(read.limit.unwrap_or(usize::MAX))
        .collect();
    let range = match page.len() {
        0 => format!("*/{shown_total}"),
        n => format!("{}-{}/{shown_total}", read.offset, read.offset + n - 1),
    };
    let status = match count && page.len() < total {
        true => StatusCode::PARTIAL_CONTENT,
        false => StatusCode::OK,
    };
    let body = json_array(page.iter().map(|r| r.json.as_str()));
    with_header(reply(status, body), header::CONTENT_RANGE, &range)
}

/// `GET /postgrest/items`.
pub(super) async fn items(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let read = match Read::parse(raw.as_deref()) {
        Ok(read) => read,
        Err(error) => return error.reply(),
    };
    let count = wants_count(&headers);
    with_table::<PostgRest, _>(&sandbox, |table, _| run(table, &read, count))
}
