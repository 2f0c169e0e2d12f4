//! Salesforce's REST query, `GET /services/data/v59.0/query?q=<SOQL>` (real-apis.md §6),
//! at `/salesforce/services/data/v59.0/query`, over Accounts.
//!
//! Imitated: `{"totalSize", "done", "nextRecordsUrl", "records"}` with each record's
//! `attributes` (`type`, `url`) and the selected fields in SELECT order; batches of up to
//! 2,000 (`Sforce-Query-Options: batchSize=N`, 200 to 2,000, as a hint); the next batch
//! at `nextRecordsUrl`, relative to the instance (`/services/data/v59.0/query/01g…-2000`),
//! fetched bare, until `done: true`. A query locator is a server-side cursor: its results
//! are fixed when the query runs, so batches do not shift under churn; it lives two days
//! (of the sandbox clock) and there is no limit on open ones (since API v56.0; before,
//! ten per user), after which its next batch is a `400 INVALID_QUERY_LOCATOR`, as is a
//! locator never issued. Date-times are written `2013-05-20T20:49:32.000+0000` and
//! given in SOQL unquoted (`…Z` or `±hh:mm`); `>` is exclusive, `>=` inclusive. Errors
//! have Salesforce's shape, `[{"message", "errorCode"}]`: `MALFORMED_QUERY`,
//! `INVALID_FIELD` (an unknown field, or a date-time compared with a quoted value) and
//! `INVALID_TYPE` (another sObject). Every reply carries `Sforce-Limit-Info:
//! api-usage=n/15000`.
//!
//! The SOQL understood is one shape only: `SELECT <fields> FROM Account [WHERE <field>
//! <op> <value> [AND …]] [ORDER BY <field> [ASC|DESC] [NULLS FIRST|LAST], …] [LIMIT n]`,
//! with the fields `Id`, `Name`, `Industry`, `CreatedDate`, `LastModifiedDate` and
//! `SystemModstamp` (case-insensitive), the operators `=`, `!=`, `<>`, `<`, `<=`, `>`,
//! `>=`; everything else (OR, parentheses, functions, date literals like `TODAY`,
//! relationship fields, `queryAll`) is a `MALFORMED_QUERY`. Without ORDER BY the order
//! is by Id (Salesforce promises none), and ties of an ORDER BY are broken by Id.
//! `LastModifiedDate` and `SystemModstamp` are always equal here. Deletes are hard: a
//! deleted Account leaves every query (no recycle bin, no `getDeleted`). Truth is what
//! `SELECT Id, Name, Industry, CreatedDate, LastModifiedDate, SystemModstamp FROM
//! Account` serves.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};

use super::lexer::{Token, Tokens, compare, tokenize};
use super::{
    Dialect, Dialects, IdStyle, LAST_NAMES, Precision, Record, Table, by_keys, reply, rfc3339,
    salesforce_id, with_header, with_table,
};
use crate::{Sandbox, json_array, query_pairs};

const DEFAULT_BATCH: usize = 2000;
const MIN_BATCH: usize = 200;
/// How long a query locator and its results live.
const LOCATOR_LIFETIME: TimeDelta = TimeDelta::days(2);
/// The sandbox keeps no more locators than this (the oldest go first): its own bound on
/// memory, since each holds its query's results.
const MAX_LOCATORS: usize = 100;
const DAILY_API_LIMIT: u64 = 15_000;
const API: &str = "/services/data/v59.0";
const INDUSTRIES: [&str; 5] = ["Technology", "Retail", "Energy", "Banking", "Media"];
const SUFFIXES: [&str; 4] = ["Corp", "Inc", "GmbH", "Ltd"];

pub(super) struct Salesforce;

/// Open query locators (oldest first) and the API calls made.
#[derive(Default)]
pub(super) struct Locators {
    open: VecDeque<Locator>,
    issued: u64,
    calls: u64,
}

impl Dialect for Salesforce {
    const NAME: &'static str = "salesforce";
    const STREAM: u64 = 11;
    const FIRST_ID: u64 = 1_000_000_000;
    const ID_GAP: u64 = 1000;
    const ID: IdStyle = IdStyle::Salesforce;
    const PRECISION: Precision = Precision::Seconds;
    const SOFT_DELETE: bool = false;
    type State = Locators;

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.salesforce
    }

    /// `2013-05-20T20:49:32.000+0000`.
    fn format_time(at: DateTime<Utc>) -> String {
        at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
    }

    fn render(record: &Record) -> String {
        render(record, &Field::ALL)
    }
}

/// A query's results beyond its first batch, held for [`LOCATOR_LIFETIME`].
struct Locator {
    id: String,
    opened: DateTime<Utc>,
    records: Vec<String>,
}

/// A record with `fields`, in that order, after its `attributes`.
fn render(record: &Record, fields: &[Field]) -> String {
    let id = record.id::<Salesforce>();
    let mut out =
        format!(r#"{{"attributes":{{"type":"Account","url":"{API}/sobjects/Account/{id}"}}"#);
    for field in fields {
        let value = match field.value(record) {
            Value::Time(at) => Salesforce::format_time(at),
            Value::Text(text) => text,
        };
        // Ids, names and times need no JSON escaping.
        out.push_str(&format!(r#","{}":"{value}""#, field.name()));
    }
    out.push('}');
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Field {
    Id,
    Name,
    Industry,
    CreatedDate,
    LastModifiedDate,
    SystemModstamp,
}

impl Field {
    const ALL: [Field; 6] = [
        Field::Id,
        Field::Name,
        Field::Industry,
        Field::CreatedDate,
        Field::LastModifiedDate,
        Field::SystemModstamp,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Id => "Id",
            Field::Name => "Name",
            Field::Industry => "Industry",
            Field::CreatedDate => "CreatedDate",
            Field::LastModifiedDate => "LastModifiedDate",
            Field::SystemModstamp => "SystemModstamp",
        }
    }

    fn parse(name: &str) -> Result<Self, Error> {
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::new(
                    "INVALID_FIELD",
                    format!(
                        "No such column '{name}' on entity 'Account'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
                    ),
                )
            })
    }

    fn is_time(self) -> bool {
        matches!(
            self,
            Field::CreatedDate | Field::LastModifiedDate | Field::SystemModstamp
        )
    }

    fn value(self, record: &Record) -> Value {
        match self {
            Field::Id => Value::Text(record.id::<Salesforce>()),
            Field::Name => Value::Text(format!(
                "{} {}",
                record.pick(30, &LAST_NAMES),
                record.pick(31, &SUFFIXES)
            )),
            Field::Industry => Value::Text(record.pick(32, &INDUSTRIES).to_owned()),
            Field::CreatedDate => Value::Time(record.created),
            Field::LastModifiedDate | Field::SystemModstamp => Value::Time(record.updated),
        }
    }
}

#[derive(PartialEq, PartialOrd)]
enum Value {
    Time(DateTime<Utc>),
    Text(String),
}

/// A Salesforce error: `400` with `[{"message", "errorCode"}]`.
struct Error {
    code: &'static str,
    message: String,
}

impl Error {
    fn new(code: &'static str, message: String) -> Self {
        Error { code, message }
    }

    fn malformed(message: impl Into<String>) -> Self {
        Error::new("MALFORMED_QUERY", message.into())
    }

    fn reply(&self) -> Response {
        let body = serde_json::json!([{ "message": self.message, "errorCode": self.code }]);
        reply(StatusCode::BAD_REQUEST, body.to_string())
    }
}

struct Condition {
    field: Field,
    op: &'static str,
    value: Value,
}

impl Condition {
    fn admits(&self, record: &Record) -> bool {
        self.field
            .value(record)
            .partial_cmp(&self.value)
            .is_some_and(|ordering| compare(self.op, ordering))
    }
}

/// The one SOQL shape the sandbox runs.
struct Query {
    fields: Vec<Field>,
    conditions: Vec<Condition>,
    /// `(field, descending)`.
    order: Vec<(Field, bool)>,
    limit: Option<usize>,
}

impl Query {
    fn parse(soql: &str) -> Result<Self, Error> {
        let mut tokens = tokenize(soql, &['\'']).map_err(Error::malformed)?;
        let tokens = &mut tokens;
        tokens.expect("SELECT").map_err(Error::malformed)?;
        let mut fields = vec![field(tokens)?];
        while tokens.comma() {
            let field = field(tokens)?;
            if fields.contains(&field) {
                return Err(Error::malformed(format!(
                    "duplicate field selected: {}",
                    field.name()
                )));
            }
            fields.push(field);
        }
        tokens.expect("FROM").map_err(Error::malformed)?;
        match tokens.next().map_err(Error::malformed)? {
            Token::Word(object) if object.eq_ignore_ascii_case("Account") => {}
            Token::Word(object) => {
                return Err(Error::new(
                    "INVALID_TYPE",
                    format!("sObject type '{object}' is not supported."),
                ));
            }
            _ => return Err(Error::malformed(tokens.unwanted())),
        }
        let mut conditions = Vec::new();
        if tokens.keyword("WHERE") {
            conditions.push(condition(tokens)?);
            while tokens.keyword("AND") {
                conditions.push(condition(tokens)?);
            }
        }
        let mut order = Vec::new();
        if tokens.keyword("ORDER") {
            tokens.expect("BY").map_err(Error::malformed)?;
            loop {
                let field = field(tokens)?;
                let descending = tokens.direction();
                if tokens.keyword("NULLS") && !(tokens.keyword("FIRST") || tokens.keyword("LAST")) {
                    return Err(Error::malformed(tokens.unexpected()));
                }
                order.push((field, descending));
                if !tokens.comma() {
                    break;
                }
            }
        }
        let mut limit = None;
        if tokens.keyword("LIMIT") {
            limit = match tokens.next().map_err(Error::malformed)? {
                Token::Literal(n) => Some(n.parse().map_err(|_| {
                    Error::malformed(format!("LIMIT must be a non-negative integer, not {n}"))
                })?),
                _ => return Err(Error::malformed(tokens.unwanted())),
            };
        }
        if !tokens.at_end() {
            return Err(Error::malformed(tokens.unexpected()));
        }
        Ok(Query {
            fields,
            conditions,
            order,
            limit,
        })
    }
}

fn field(tokens: &mut Tokens) -> Result<Field, Error> {
    match tokens.next().map_err(Error::malformed)? {
        Token::Word(name) => Field::parse(&name),
        _ => Err(Error::malformed(tokens.unwanted())),
    }
}

/// `<field> <op> <value>`: a date-time field takes an unquoted date-time, the others a
/// quoted string.
fn condition(tokens: &mut Tokens) -> Result<Condition, Error> {
    let field = field(tokens)?;
    let op = tokens.op().map_err(Error::malformed)?;
    let value = match (field.is_time(), tokens.next().map_err(Error::malformed)?) {
        (true, Token::Literal(text)) => Value::Time(rfc3339(&text).ok_or_else(|| {
            Error::malformed(format!(
                "value of filter criterion for field '{}' must be of type dateTime: {text}",
                field.name()
            ))
        })?),
        (true, Token::Quoted(_)) => {
            return Err(Error::new(
                "INVALID_FIELD",
                format!(
                    "value of filter criterion for field '{}' must be of type dateTime and should not be enclosed in quotes",
                    field.name()
                ),
            ));
        }
        (false, Token::Quoted(text)) => Value::Text(text),
        _ => return Err(Error::malformed(tokens.unwanted())),
    };
    Ok(Condition { field, op, value })
}

/// The batch size a request asks for in `Sforce-Query-Options`.
fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|options| {
            options.split(',').find_map(|option| {
                let (name, value) = option.split_once('=')?;
                (name.trim() == "batchSize").then(|| value.trim().parse::<usize>().ok())?
            })
        })
        .map_or(DEFAULT_BATCH, |n| n.clamp(MIN_BATCH, DEFAULT_BATCH))
}

/// A batch of `records` from `offset`, with the locator's URL when more follow.
fn batch(locator: &str, records: &[String], offset: usize, size: usize) -> String {
    let end = records.len().min(offset + size);
    let done = end == records.len();
    let next = match done {
        true => String::new(),
        false => format!(r#","nextRecordsUrl":"{API}/query/{locator}-{end}""#),
    };
    format!(
        r#"{{"totalSize":{},"done":{done}{next},"records":{}}}"#,
        records.len(),
        json_array(records[offset.min(end)..end].iter().map(String::as_str))
    )
}

/// Runs `query`: its first batch, and a locator holding the rest when there is more.
fn run(table: &mut Table<Salesforce>, query: &Query, size: usize, now: DateTime<Utc>) -> String {
    let mut matches: Vec<&Record> = table
        .records
        .values()
        .filter(|r| query.conditions.iter().all(|c| c.admits(r)))
        .collect();
    matches.sort_by(|a, b| {
        by_keys(&query.order, a, b, |field, a, b| {
            field
                .value(a)
                .partial_cmp(&field.value(b))
                .unwrap_or(Ordering::Equal)
        })
        .then(a.n.cmp(&b.n))
    });
    matches.truncate(query.limit.unwrap_or(usize::MAX));
    let records: Vec<String> = matches.iter().map(|r| render(r, &query.fields)).collect();
    let locators = &mut table.state;
    locators.issued += 1;
    let id = salesforce_id("01gD0", locators.issued);
    let body = batch(&id, &records, 0, size);
    if records.len() > size {
        locators.open.retain(|l| now - l.opened <= LOCATOR_LIFETIME);
        if locators.open.len() == MAX_LOCATORS {
            locators.open.pop_front();
        }
        locators.open.push_back(Locator {
            id,
            opened: now,
            records,
        });
    }
    body
}

/// Counts the call and adds `Sforce-Limit-Info`, as every Salesforce reply has it.
fn counted(table: &mut Table<Salesforce>, response: Response) -> Response {
    table.state.calls += 1;
    let usage = format!("api-usage={}/{DAILY_API_LIMIT}", table.state.calls);
    with_header(
        response,
        HeaderName::from_static("sforce-limit-info"),
        &usage,
    )
}

/// `GET /salesforce/services/data/v59.0/query?q=<SOQL>`.
pub(super) async fn query(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let soql = query_pairs(raw.as_deref()).find_map(|(k, v)| (k == "q").then_some(v));
    let parsed = match soql {
        None => Err(Error::malformed("A query string has to be specified")),
        Some(soql) => Query::parse(&soql),
    };
    let size = batch_size(&headers);
    with_table::<Salesforce, _>(&sandbox, |table, now| {
        let response = match parsed {
            Ok(query) => reply(StatusCode::OK, run(table, &query, size, now)),
            Err(error) => error.reply(),
        };
        counted(table, response)
    })
}

/// `GET …/query/{locator}-{offset}`: the next batch of an open locator.
pub(super) async fn more(
    State(sandbox): State<Arc<Sandbox>>,
    Path(locator): Path<String>,
    headers: HeaderMap,
) -> Response {
    let size = batch_size(&headers);
    with_table::<Salesforce, _>(&sandbox, |table, now| {
        let found = locator.rsplit_once('-').and_then(|(id, offset)| {
            let offset = offset.parse::<usize>().ok()?;
            let open = table.state.open.iter().find(|l| l.id == id)?;
            let live = now - open.opened <= LOCATOR_LIFETIME && offset <= open.records.len();
            live.then(|| batch(id, &open.records, offset, size))
        });
        let response = match found {
            Some(body) => reply(StatusCode::OK, body),
            None => Error::new("INVALID_QUERY_LOCATOR", "invalid query locator".to_owned()).reply(),
        };
        counted(table, response)
    })
}
