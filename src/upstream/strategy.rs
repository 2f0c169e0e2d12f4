//! Pagination strategies as small state machines (DESIGN.md §4): *state → next request*,
//! *reply → records + cursor to commit + done?*. They never touch the network or the
//! database; the page loop in `sync` drives them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::extract::Page;
use super::{keyset, link, offset, position, token};
use crate::spec::names::JsonPointer;
use crate::spec::pagination::Pagination;
use crate::spec::source::RequestSpec;
use crate::store::CursorWrite;

/// What the next request adds to the stream's request template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// Query parameters after the template's static ones.
    pub query: Vec<(String, String)>,
    /// The JSON body (a template with its placeholders filled in).
    pub body: Option<Value>,
    /// A full URL that replaces the template's path and query (a `link` next URL).
    pub url: Option<Url>,
}

/// What the reply said besides its body.
#[derive(Debug, Clone)]
pub struct ReplyMeta {
    /// The upstream's clock: the reply's `Date` header, or the gateway's clock without one.
    pub upstream_now: DateTime<Utc>,
    /// The `Link: <...>; rel="next"` target, resolved against the request URL.
    pub link_next: Option<Url>,
    /// The URL the reply answered (relative next URLs resolve against it).
    pub request_url: Url,
}

/// The outcome of one page.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What to commit as the cursor together with this page's records.
    pub cursor: CursorWrite,
    /// No more pages in this run.
    pub done: bool,
}

/// Why a run cannot go on.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategyError {
    /// The reply would leave the position where it was while records keep coming.
    Stuck(String),
    /// The reply lacks what the strategy needs (e.g. an unreadable updated time).
    Shape(String),
}

/// One stream's strategy, positioned at a start cursor.
#[derive(Debug)]
pub enum Strategy {
    Keyset(keyset::Keyset),
    Token(token::Token),
    Position(position::Position),
    Offset(offset::Offset),
    Link(link::Link),
    None { done: bool },
}

impl Strategy {
    /// The strategy for `pagination`, resuming from `cursor` (`None`: from the start).
    pub fn new(
        pagination: &Pagination,
        request: &RequestSpec,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        Ok(match pagination {
            Pagination::Keyset(cfg) => Strategy::Keyset(keyset::Keyset::new(cfg, cursor)?),
            Pagination::Token(cfg) => {
                Strategy::Token(token::Token::new(cfg, request.body.as_ref(), cursor)?)
            }
            Pagination::Position(cfg) => Strategy::Position(position::Position::new(cfg, cursor)?),
            Pagination::Offset(cfg) => Strategy::Offset(offset::Offset::new(cfg, cursor)?),
            Pagination::Link(cfg) => Strategy::Link(link::Link::new(cfg, cursor)?),
            Pagination::None => Strategy::None { done: false },
        })
    }

    /// The next request.
    pub fn ask(&self) -> Ask {
        match self {
            Strategy::Keyset(s) => s.ask(),
            Strategy::Token(s) => s.ask(),
            Strategy::Position(s) => s.ask(),
            Strategy::Offset(s) => s.ask(),
            Strategy::Link(s) => s.ask(),
            Strategy::None { .. } => Ask::default(),
        }
    }

    /// The pointer of the reply the strategy reads besides the records.
    pub fn next_pointer(&self) -> Option<&JsonPointer> {
        match self {
            Strategy::Token(s) => Some(s.until_pointer()),
            Strategy::Position(s) => Some(s.next_pointer()),
            Strategy::Link(s) => s.next_pointer(),
            _ => None,
        }
    }

    /// Takes in one reply.
    pub fn advance(&mut self, page: &Page, meta: &ReplyMeta) -> Result<Step, StrategyError> {
        match self {
            Strategy::Keyset(s) => s.advance(page, meta),
            Strategy::Token(s) => s.advance(page),
            Strategy::Position(s) => s.advance(page),
            Strategy::Offset(s) => s.advance(page, meta),
            Strategy::Link(s) => s.advance(page, meta),
            Strategy::None { done } => {
                *done = true;
                Ok(Step {
                    cursor: CursorWrite::Keep,
                    done: true,
                })
            }
        }
    }

    /// The cursor a completed run leaves for the next one, committed with the last page.
    pub fn finish(&self) -> CursorWrite {
        match self {
            Strategy::Offset(s) => s.finish(),
            Strategy::Link(_) => CursorWrite::Clear,
            _ => CursorWrite::Keep,
        }
    }
}

/// A cursor field as text to send: strings as they are, numbers with their exact digits.
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads a stored cursor of the expected shape.
pub(super) fn field<'a>(
    cursor: Option<&'a Value>,
    name: &str,
) -> Result<Option<&'a Value>, StrategyError> {
    match cursor {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(map.get(name).filter(|v| !v.is_null())),
        Some(other) => Err(StrategyError::Shape(format!(
            "the stored cursor {other} is not an object"
        ))),
    }
}
