//! How a stream pages through its upstream endpoint (docs/design.md §4). Every parameter name
//! defaults to the spelling of the API the strategy was modelled on.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::de::{error_at, nested, take_str};
use super::names::{JsonPointer, ParamName, ranged};

ranged!(
    /// Records asked for per page.
    PageLimit,
    u32,
    1,
    10_000
);

ranged!(
    /// Seconds subtracted from a run's start before it is stored as the next resume point,
    /// because upstream timestamps settle late (docs/design.md §4).
    LookbackSeconds,
    u32,
    0,
    86_400
);

/// The pagination strategy of a stream, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Pagination {
    /// `updated_since` + `from_id` keyset paging (InSales style).
    Keyset(Keyset),
    /// An opaque since/until token (POS style), by GET or by a GraphQL POST body.
    Token(Token),
    /// A JSON position such as `[timestamp, id]` (Carrot quest v2 style).
    Position(Position),
    /// Page/offset paging, optionally filtered by a since value (Reqon style).
    Offset(Offset),
    /// A `Link: <...>; rel="next"` header or a next URL in the body.
    Link(Link),
    /// A single request.
    None,
}

impl Pagination {
    /// The strategy's `type`, as stored and shown.
    pub fn kind(&self) -> &'static str {
        match self {
            Pagination::Keyset(_) => "keyset",
            Pagination::Token(_) => "token",
            Pagination::Position(_) => "position",
            Pagination::Offset(_) => "offset",
            Pagination::Link(_) => "link",
            Pagination::None => "none",
        }
    }
}

/// An empty configuration, so that `{"type": "none", "x": 1}` is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl<'de> Deserialize<'de> for Pagination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let kind = take_str(&mut map, "type")?;
        let rest = Value::Object(map);
        Ok(match kind.as_str() {
            "keyset" => Pagination::Keyset(nested(rest)?),
            "token" => Pagination::Token(nested(rest)?),
            "position" => Pagination::Position(nested(rest)?),
            "offset" => {
                let start_page_given = rest.get("start_page").is_some();
                let offset: Offset = nested(rest)?;
                if offset.offset_param.is_some() && offset.page_param.is_some() {
                    return Err(error_at(
                        "/page_param",
                        "give `offset_param` or `page_param`, not both",
                    ));
                }
                if offset.page_param.is_none() && start_page_given {
                    return Err(error_at(
                        "/start_page",
                        "`start_page` needs `page_param` (offset paging starts at 0)",
                    ));
                }
                Pagination::Offset(offset)
            }
            "link" => {
                let link: Link = nested(rest)?;
                if link.limit.is_some() != link.limit_param.is_some() {
                    return Err(error_at(
                        "/limit_param",
                        "give `limit` and `limit_param` together: one without the other is never sent",
                    ));
                }
                Pagination::Link(link)
            }
            "none" => {
                nested::<NoFields, _>(rest)?;
                Pagination::None
            }
            other => {
                return Err(error_at(
                    "/type",
                    format!(
                        "unknown pagination type `{other}`: expected keyset, token, position, offset, link or none"
                    ),
                ));
            }
        })
    }
}

fn param(name: &str) -> ParamName {
    ParamName::try_from(name.to_owned()).expect("default parameter names are valid")
}

/// `?{since_param}=<last updated_at>&{id_param}=<last id>&{limit_param}=<n>`, ordered by
/// `(updated_at, id)`; needs `records.updated_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Keyset {
    #[serde(default = "Keyset::since_param")]
    #[schema(value_type = String, default = "updated_since")]
    pub since_param: ParamName,
    #[serde(default = "Keyset::id_param")]
    #[schema(value_type = String, default = "from_id")]
    pub id_param: ParamName,
    #[serde(default = "Keyset::limit_param")]
    #[schema(value_type = String, default = "per_page")]
    pub limit_param: ParamName,
    #[serde(default = "Keyset::limit")]
    #[schema(default = 250)]
    pub limit: PageLimit,
    /// The since value of the first request; without one such APIs do not sort by
    /// `(updated_at, id)`.
    #[serde(default = "Keyset::initial_since")]
    #[schema(default = "1970-01-01T00:00:00Z")]
    pub initial_since: String,
    #[serde(default = "lookback")]
    #[schema(default = 2)]
    pub lookback_seconds: LookbackSeconds,
}

impl Keyset {
    fn since_param() -> ParamName {
        param("updated_since")
    }
    fn id_param() -> ParamName {
        param("from_id")
    }
    fn limit_param() -> ParamName {
        param("per_page")
    }
    fn limit() -> PageLimit {
        PageLimit(250)
    }
    fn initial_since() -> String {
        "1970-01-01T00:00:00Z".to_owned()
    }
}

fn lookback() -> LookbackSeconds {
    LookbackSeconds(2)
}

/// `since` = the stored token (blank on the first call); the next token is read from
/// the reply at `until`. With a POST `body` template, `"{{since}}"` and `"{{limit}}"`
/// in it are replaced instead of query parameters being sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Token {
    #[serde(default = "Token::since_param")]
    #[schema(value_type = String, default = "since")]
    pub since_param: ParamName,
    #[serde(default = "Token::limit_param")]
    #[schema(value_type = String, default = "first")]
    pub limit_param: ParamName,
    /// Where the next token is in the reply.
    #[schema(value_type = String, example = "/data/sale/until")]
    pub until: JsonPointer,
    #[serde(default = "Token::limit")]
    #[schema(default = 100)]
    pub limit: PageLimit,
    /// An upstream error that means the stored token is no longer valid: the stream's
    /// cursor is reset and it restarts as a full sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_token: Option<InvalidToken>,
}

impl Token {
    fn since_param() -> ParamName {
        param("since")
    }
    fn limit_param() -> ParamName {
        param("first")
    }
    fn limit() -> PageLimit {
        PageLimit(100)
    }
}

ranged!(
    /// An HTTP error status.
    ErrorStatus,
    u16,
    400,
    599
);

/// Matches an upstream reply that rejects a stale token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidToken {
    #[schema(example = 400)]
    pub status: ErrorStatus,
    #[schema(example = "INVALID_SINCE_FORMAT")]
    pub body_contains: String,
}

/// `{position_param}=<compact JSON of the position>`; the next position is read from the
/// reply at `next` and kept as raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    #[serde(default = "Position::position_param")]
    #[schema(value_type = String, default = "paginate_position")]
    pub position_param: ParamName,
    #[serde(default = "Position::next")]
    #[schema(value_type = String, default = "/meta/next_after_position")]
    pub next: JsonPointer,
    #[serde(default = "Position::limit_param")]
    #[schema(value_type = String, default = "paginate_count")]
    pub limit_param: ParamName,
    #[serde(default = "Position::limit")]
    #[schema(default = 50)]
    pub limit: PageLimit,
    /// The position of the first request; without one, the first request sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!([0, 0]))]
    pub initial_position: Option<Value>,
}

impl Position {
    fn position_param() -> ParamName {
        param("paginate_position")
    }
    fn next() -> JsonPointer {
        JsonPointer::try_from("/meta/next_after_position".to_owned())
            .expect("the default pointer is valid")
    }
    fn limit_param() -> ParamName {
        param("paginate_count")
    }
    fn limit() -> PageLimit {
        PageLimit(50)
    }
}

/// Offset (`offset_param`, the default) or page-number (`page_param`) paging, optionally
/// filtered by a since value. Rows shift under offsets, so an interrupted run restarts
/// from its first page; the since high-water is stored only when a run completes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Offset {
    /// The offset parameter; `offset` when neither this nor `page_param` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub offset_param: Option<ParamName>,
    /// The page-number parameter, for page/per_page APIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub page_param: Option<ParamName>,
    /// The number of the first page, with `page_param`.
    #[serde(default = "Offset::start_page")]
    #[schema(default = 1)]
    pub start_page: u32,
    #[serde(default = "Offset::limit_param")]
    #[schema(value_type = String, default = "limit")]
    pub limit_param: ParamName,
    #[serde(default = "Offset::limit")]
    #[schema(default = 100)]
    pub limit: PageLimit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<OffsetSince>,
}

impl Offset {
    fn start_page() -> u32 {
        1
    }
    fn limit_param() -> ParamName {
        param("limit")
    }
    fn limit() -> PageLimit {
        PageLimit(100)
    }
}

/// The since filter of an offset stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetSince {
    #[serde(default = "OffsetSince::param")]
    #[schema(value_type = String, default = "modified_since")]
    pub param: ParamName,
    #[serde(default)]
    pub format: TimeFormat,
    /// Defaults to `max_record` when the stream sets `records.updated_at`, else
    /// `sync_start`; always set once the stream is parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<HighWaterFrom>,
    #[serde(default = "lookback")]
    #[schema(default = 2)]
    pub lookback_seconds: LookbackSeconds,
}

impl OffsetSince {
    fn param() -> ParamName {
        param("modified_since")
    }
}

/// How a since value is written in the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339, e.g. `2024-01-20T10:30:00Z`.
    #[default]
    Iso8601,
    /// `2024-01-20`.
    Date,
    /// Seconds since the epoch.
    Unix,
    /// Milliseconds since the epoch.
    UnixMs,
}

/// Which time a completed offset run stores as its high-water.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HighWaterFrom {
    /// The smaller of the largest record `updated_at` seen and the run's start; needs
    /// `records.updated_at`.
    MaxRecord,
    /// The run's start.
    SyncStart,
}

/// Follows next URLs (same host only) until there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Where the next URL is in the body; without it, the `Link` header's `rel="next"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub next: Option<JsonPointer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub limit_param: Option<ParamName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<PageLimit>,
}
