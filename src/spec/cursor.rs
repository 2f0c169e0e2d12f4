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
/// `{"high_water": "..."}`, link `{"next": "https://..."}`; a `none` stream has no cursor.
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
#[allow(dead_code)]
struct TokenCursor {
    token: String,
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
    high_water: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LinkCursor {
    next: url::Url,
}

/// Checks that `cursor` (not null) has the shape `pagination` keeps (a link cursor must
/// stay on the source's host); errors point into the `PUT` body.
pub fn check(
    pagination: &Pagination,
    base_url: &HttpUrl,
    cursor: &Value,
) -> Result<(), ParseError> {
    fn shape<T: serde::de::DeserializeOwned>(cursor: &Value) -> Result<(), ParseError> {
        serde_path_to_error::deserialize::<_, T>(cursor)
            .map(|_| ())
            .map_err(|e| {
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
    match pagination {
        Pagination::Keyset(_) => shape::<KeysetCursor>(cursor),
        Pagination::Token(_) => shape::<TokenCursor>(cursor),
        Pagination::Position(_) => {
            shape::<PositionCursor>(cursor)?;
            if cursor.get("position").is_some_and(Value::is_null) {
                return Err(ParseError::Invalid {
                    pointer: "/cursor/position".into(),
                    message: "a position cannot be null: reset the cursor with `\"cursor\": null`"
                        .into(),
                });
            }
            Ok(())
        }
        Pagination::Offset(_) => shape::<OffsetCursor>(cursor),
        Pagination::Link(_) => {
            shape::<LinkCursor>(cursor)?;
            let origin = |url: &str| {
                url::Url::parse(url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .map(|u| u.origin())
            };
            let next = cursor
                .get("next")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match (origin(next), origin(base_url.as_str())) {
                (Some(next), Some(base)) if next == base => Ok(()),
                _ => Err(ParseError::Invalid {
                    pointer: "/cursor/next".into(),
                    message: format!(
                        "the next URL must be an http(s) URL on the source's host, {base_url}"
                    ),
                }),
            }
        }
        Pagination::None => Err(ParseError::Invalid {
            pointer: "/cursor".into(),
            message: "a stream with `none` pagination keeps no cursor; only `null` is accepted"
                .into(),
        }),
    }
}
