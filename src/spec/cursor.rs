//! A stream's checkpoint, in the terms of its pagination strategy. Values are kept
//! verbatim as JSON (an id of `1160406004324630614` stays exactly that).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::de::{ParseError, escape_token};
use super::names::HttpUrl;
use super::pagination::Pagination;

/// What a page does to the stream's cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorWrite {
    Keep,
    Set(Value),
    Clear,
}

/// `GET .../cursor`: the checkpoint and who wrote it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CursorView {
    /// `source/stream`.
    #[schema(example = "shop/products")]
    pub stream: String,
    /// The checkpoint; `null` means the next incremental run starts from the beginning.
    #[schema(value_type = Option<Object>, example = json!({"updated_since": "2017-09-04 00:00:00 +03:00", "from_id": 123}))]
    pub cursor: Option<Value>,
    /// When the cursor was last written.
    pub updated_at: Option<DateTime<Utc>>,
    /// The job that wrote it; `null` when it was set through the API or never written.
    pub job: Option<Uuid>,
}

/// `PUT .../cursor`: the new checkpoint, or `null` to reset it. Its shape depends on the
/// stream's strategy: keyset `{"updated_since": "...", "from_id": 123}` (`from_id`
/// optional), token `{"token": "..."}`, position `{"position": <any JSON>}`, offset
/// `{"high_water": "..."}`, link `{"next": "https://..."}`. Streams with a `since` filter
/// keep its value as `high_water` (link and token beside `next` or `token` within a run);
/// a `none` stream without one has no cursor.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorUpdate {
    #[schema(value_type = Option<Object>, required = true, example = json!({"updated_since": "2017-09-04 00:00:00 +03:00", "from_id": 123}))]
    pub cursor: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only the shape is checked; the value is stored verbatim
struct KeysetCursor {
    updated_since: String,
    #[serde(default)]
    from_id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenCursor {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    high_water: Option<HighWater>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PositionCursor {
    position: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct OffsetCursor {
    high_water: HighWater,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkCursor {
    #[serde(default)]
    next: Option<url::Url>,
    #[serde(default)]
    high_water: Option<HighWater>,
}

/// A since value as sent: text, or a number (a `verbatim` numeric time) kept exactly.
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum HighWater {
    Text(String),
    Number(serde_json::Number),
}

/// Checks that `cursor` (not null) has the shape `pagination` keeps (a link cursor must
/// stay on the source's host); errors point into the `PUT` body.
pub fn check(
    pagination: &Pagination,
    base_url: &HttpUrl,
    cursor: &Value,
) -> Result<(), ParseError> {
    let invalid = |pointer: &str, message: &str| ParseError::Invalid {
        pointer: pointer.into(),
        message: message.into(),
    };
    // A high-water is kept only beside a since filter.
    let high_water = |given: bool| match given && pagination.since().is_none() {
        true => Err(invalid(
            "/cursor/high_water",
            "only a stream with a `since` filter keeps a high-water",
        )),
        false => Ok(()),
    };
    match pagination {
        Pagination::Keyset(_) => shape::<KeysetCursor>(cursor).map(|_| ()),
        Pagination::Token(_) => {
            let token = shape::<TokenCursor>(cursor)?;
            if token.token.is_none() && token.high_water.is_none() {
                return Err(invalid(
                    "/cursor",
                    "a token cursor is `{\"token\": \"...\"}` (or, with a since filter, `{\"high_water\": \"...\"}`)",
                ));
            }
            high_water(token.high_water.is_some())
        }
        Pagination::Position(_) => {
            shape::<PositionCursor>(cursor)?;
            if cursor.get("position").is_some_and(Value::is_null) {
                return Err(invalid(
                    "/cursor/position",
                    "a position cannot be null: reset the cursor with `\"cursor\": null`",
                ));
            }
            Ok(())
        }
        Pagination::Offset(_) => shape::<OffsetCursor>(cursor).map(|_| ()),
        Pagination::Link(_) => {
            let link = shape::<LinkCursor>(cursor)?;
            high_water(link.high_water.is_some())?;
            let Some(next) = link.next else {
                return match link.high_water {
                    Some(_) => Ok(()),
                    None => Err(invalid(
                        "/cursor",
                        "a link cursor is `{\"next\": \"https://...\"}` (or, with a since filter, `{\"high_water\": \"...\"}`)",
                    )),
                };
            };
            let origin =
                |url: &url::Url| matches!(url.scheme(), "http" | "https").then(|| url.origin());
            let base = url::Url::parse(base_url.as_str()).ok();
            match (origin(&next), base.as_ref().and_then(origin)) {
                (Some(next), Some(base)) if next == base => Ok(()),
                _ => Err(ParseError::Invalid {
                    pointer: "/cursor/next".into(),
                    message: format!(
                        "the next URL must be an http(s) URL on the source's host, {base_url}"
                    ),
                }),
            }
        }
        Pagination::None(single) if single.since.is_some() => {
            shape::<OffsetCursor>(cursor).map(|_| ())
        }
        Pagination::None(_) => Err(invalid(
            "/cursor",
            "a stream with `none` pagination and no since filter keeps no cursor; only `null` is accepted",
        )),
    }
}

/// Reads `cursor` as `T`, with errors pointing into the `PUT` body.
fn shape<T: serde::de::DeserializeOwned>(cursor: &Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize::<_, T>(cursor).map_err(|e| {
        let mut pointer = "/cursor".to_owned();
        for segment in e.path().iter() {
            if let serde_path_to_error::Segment::Map { key } = segment {
                pointer.push('/');
                pointer.push_str(&escape_token(key));
            }
        }
        ParseError::Invalid {
            pointer,
            message: e.inner().to_string(),
        }
    })
}
