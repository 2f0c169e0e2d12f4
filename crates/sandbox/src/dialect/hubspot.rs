//! HubSpot's CRM search, `POST /crm/v3/objects/contacts/search` (real-apis.md §5), at
//! `/hubspot/crm/v3/objects/contacts/search`.
//!
//! Imitated: a JSON body with `filterGroups` (OR of groups, each an AND of filters; at
//! most 5 groups, 6 filters in a group, 18 in all) on `lastmodifieddate` (also spelt
//! `hs_lastmodifieddate`), `createdate` and `hs_object_id`, with the operators `EQ`,
//! `NEQ`, `LT`, `LTE`, `GT` (exclusive), `GTE` (inclusive) and `BETWEEN`; times as Unix
//! milliseconds (a string or a number) or ISO 8601; one `sorts` rule (`ASCENDING` by
//! default); `limit` (default 10, at most 200); `after` (the offset `paging.next.after`
//! named, integer-formatted); `{"total", "results", "paging": {"next": {"after"}}}`, no
//! `paging` on the last page. A query reaches its first 10,000 results only: a page is
//! cut there, and a request with `after` at 10,000 or beyond is a `400` (while
//! `paging.next` still offers it, so a client that follows it meets the error). A body
//! over 3,000 characters and every invalid value are a `400` in HubSpot's error shape
//! `{"status": "error", "message", "correlationId", "category": "VALIDATION_ERROR"}`.
//! Contacts' times have milliseconds. `after` is an offset, so results shift under a
//! reader: an update moves a contact to the end of an ascending `lastmodifieddate` sort.
//!
//! Simplified: without `sorts` the order is by id (creation order, oldest first); ties
//! in the sort key are broken by id (not confirmed); `properties` is ignored (always the
//! default contact properties); no free-text `query` (a `400`); archived contacts never
//! appear in search, so deletes are hard; fresh writes are searchable at once (HubSpot
//! lags "a few moments").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Dialect, Dialects, IdStyle, Precision, Record, Table, email, person, reply, with_table,
};
use crate::{Sandbox, json_array};

const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 200;
/// The most results any one query can reach.
const RESULT_CAP: usize = 10_000;
const MAX_BODY: usize = 3000;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;
const MAX_FILTERS: usize = 18;

pub(super) struct HubSpot;

impl Dialect for HubSpot {
    const NAME: &'static str = "hubspot";
    const STREAM: u64 = 10;
    const FIRST_ID: u64 = 501;
    const ID_GAP: u64 = 3;
    const ID: IdStyle = IdStyle::Text;
    const PRECISION: Precision = Precision::Millis;
    const SOFT_DELETE: bool = false;
    /// Requests refused so far, numbering their correlation ids.
    type State = u64;

    fn slot(dialects: &mut Dialects) -> &mut Option<Table<Self>> {
        &mut dialects.hubspot
    }

    /// `2019-12-07T16:50:06.678Z`.
    fn format_time(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn render(record: &Record) -> String {
        let (first, last) = person(record);
        let id = record.id::<Self>();
        let (created, updated) = (
            Self::format_time(record.created),
            Self::format_time(record.updated),
        );
        serde_json::json!({
            "id": id,
            "properties": {
                "createdate": created,
                "email": email(record),
                "firstname": first,
                "hs_object_id": id,
                "lastmodifieddate": updated,
                "lastname": last,
            },
            "createdAt": created,
            "updatedAt": updated,
            "archived": false,
        })
        .to_string()
    }
}

/// A HubSpot `400`: `{"status": "error", "message", "correlationId", "category"}`.
fn error(refusals: &mut u64, message: &str) -> Response {
    *refusals += 1;
    let body = serde_json::json!({
        "status": "error",
        "message": message,
        "correlationId": IdStyle::Guid.text(*refusals),
        "category": "VALIDATION_ERROR",
    });
    reply(StatusCode::BAD_REQUEST, body.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    filter_groups: Vec<Group>,
    #[serde(default)]
    sorts: Vec<SortRule>,
    limit: Option<Value>,
    after: Option<Value>,
    query: Option<String>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    filters: Vec<FilterBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterBody {
    property_name: String,
    operator: String,
    value: Option<Value>,
    high_value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SortRule {
    property_name: String,
    direction: Option<String>,
}

/// The properties that can be filtered and sorted on, as numbers (times in ms).
#[derive(Clone, Copy)]
enum Property {
    LastModified,
    Created,
    ObjectId,
}

impl Property {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "lastmodifieddate" | "hs_lastmodifieddate" => Ok(Property::LastModified),
            "createdate" => Ok(Property::Created),
            "hs_object_id" => Ok(Property::ObjectId),
            _ => Err(format!(
                "The sandbox cannot filter or sort on {name}: only lastmodifieddate, createdate and hs_object_id"
            )),
        }
    }

    fn of(self, record: &Record) -> i64 {
        match self {
            Property::LastModified => record.updated.timestamp_millis(),
            Property::Created => record.created.timestamp_millis(),
            Property::ObjectId => record.n as i64,
        }
    }

    /// A filter value: an integer (a string or a number), or for times ISO 8601.
    fn value(self, value: &Value) -> Result<i64, String> {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("{other} is not a valid value")),
        };
        text.parse::<i64>()
            .ok()
            .or_else(|| match self {
                Property::ObjectId => None,
                _ => super::rfc3339(&text).map(|t| t.timestamp_millis()),
            })
            .ok_or_else(|| format!("{text} is not a valid value for this property"))
    }
}

#[derive(Clone, Copy)]
enum Operator {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between(i64),
}

struct Filter {
    property: Property,
    operator: Operator,
    value: i64,
}

impl Filter {
    fn parse(body: &FilterBody) -> Result<Self, String> {
        let property = Property::parse(&body.property_name)?;
        let operand = |value: &Option<Value>| {
            value
                .as_ref()
                .ok_or_else(|| format!("{} needs a value", body.operator))
                .and_then(|v| property.value(v))
        };
        let operator = match body.operator.as_str() {
            "EQ" => Operator::Eq,
            "NEQ" => Operator::Neq,
            "LT" => Operator::Lt,
            "LTE" => Operator::Lte,
            "GT" => Operator::Gt,
            "GTE" => Operator::Gte,
            "BETWEEN" => Operator::Between(operand(&body.high_value)?),
            other => return Err(format!("The sandbox does not support the operator {other}")),
        };
        Ok(Filter {
            property,
            operator,
            value: operand(&body.value)?,
        })
    }

    fn admits(&self, record: &Record) -> bool {
        let (x, v) = (self.property.of(record), self.value);
        match self.operator {
            Operator::Eq => x == v,
            Operator::Neq => x != v,
            Operator::Lt => x < v,
            Operator::Lte => x <= v,
            Operator::Gt => x > v,
            Operator::Gte => x >= v,
            Operator::Between(high) => (v..=high).contains(&x),
        }
    }
}

struct Search {
    /// OR of ANDs; no groups admits every contact.
    groups: Vec<Vec<Filter>>,
    sort: Option<(Property, bool)>,
    limit: usize,
    after: usize,
}

impl Search {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_BODY {
            return Err(format!(
                "The request body is {} characters; a search body may have at most {MAX_BODY}",
                bytes.len()
            ));
        }
        let body: Body =
            serde_json::from_slice(bytes).map_err(|e| format!("Invalid input JSON: {e}"))?;
        if body.query.is_some() {
            return Err("The sandbox does not support free-text query".to_owned());
        }
        let filters: usize = body.filter_groups.iter().map(|g| g.filters.len()).sum();
        if body.filter_groups.len() > MAX_GROUPS
            || body
                .filter_groups
                .iter()
                .any(|g| g.filters.len() > MAX_FILTERS_PER_GROUP)
            || filters > MAX_FILTERS
        {
            return Err(format!(
                "At most {MAX_GROUPS} filterGroups of at most {MAX_FILTERS_PER_GROUP} filters each, {MAX_FILTERS} filters in all"
            ));
        }
        let groups = body
            .filter_groups
            .iter()
            .map(|g| g.filters.iter().map(Filter::parse).collect())
            .collect::<Result<_, _>>()?;
        let sort = match body.sorts.as_slice() {
            [] => None,
            [rule] => {
                let descending = match rule.direction.as_deref() {
                    None | Some("ASCENDING") => false,
                    Some("DESCENDING") => true,
                    Some(other) => return Err(format!("{other} is not a sort direction")),
                };
                Some((Property::parse(&rule.property_name)?, descending))
            }
            _ => return Err("A search may have one sort rule only".to_owned()),
        };
        let limit = match &body.limit {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("limit must be between 1 and {MAX_LIMIT}"))?,
        };
        let after = match &body.after {
            None | Some(Value::Null) => 0,
            Some(Value::String(text)) => text
                .parse()
                .map_err(|_| format!("after must be an integer, not {text}"))?,
            Some(value) => value
                .as_u64()
                .ok_or_else(|| format!("after must be an integer, not {value}"))?
                as usize,
        };
        Ok(Search {
            groups,
            sort,
            limit: limit as usize,
            after,
        })
    }

    fn admits(&self, record: &Record) -> bool {
        self.groups.is_empty()
            || self
                .groups
                .iter()
                .any(|group| group.iter().all(|f| f.admits(record)))
    }
}

fn run(table: &mut Table<HubSpot>, bytes: &[u8]) -> Response {
    let search = match Search::parse(bytes) {
        Ok(search) => search,
        Err(message) => return error(&mut table.state, &message),
    };
    if search.after >= RESULT_CAP {
        return error(
            &mut table.state,
            &format!(
                "Search results are limited to {RESULT_CAP} per query (after={}): narrow the query, e.g. by lastmodifieddate",
                search.after
            ),
        );
    }
    let mut matches: Vec<&Record> = table
        .records
        .values()
        .filter(|r| search.admits(r))
        .collect();
    if let Some((property, descending)) = search.sort {
        matches.sort_by_key(|r| {
            let key = property.of(r);
            (if descending { -key } else { key }, r.n)
        });
    }
    let end = matches
        .len()
        .min(search.after + search.limit)
        .min(RESULT_CAP);
    let page = matches.get(search.after..end).unwrap_or_default();
    let paging = match end < matches.len() {
        true => format!(r#","paging":{{"next":{{"after":"{end}"}}}}"#),
        false => String::new(),
    };
    reply(
        StatusCode::OK,
        format!(
            r#"{{"total":{},"results":{}{paging}}}"#,
            matches.len(),
            json_array(page.iter().map(|r| r.json.as_str()))
        ),
    )
}

/// `POST /hubspot/crm/v3/objects/contacts/search`.
pub(super) async fn search(State(sandbox): State<Arc<Sandbox>>, body: Bytes) -> Response {
    with_table::<HubSpot, _>(&sandbox, |table, _| run(table, &body))
}
