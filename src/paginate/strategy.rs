//! Pagination strategies as small state machines (docs/design.md §4): *state → next request*,
//! *reply → records + cursor to commit + done?*. They never touch the network or the
//! database; the page loop in `sync` drives them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::anchor::Shifts;
use super::extract::Page;
use super::template::{Placed, Values};
use super::{keyset, link, none, offset, position, token};
use crate::problem::{Problem, ProblemType};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::{JsonPointer, ParamName};
use crate::spec::pagination::{Done, NextCursor, PageLimit, Pagination};
use crate::spec::source::RequestSpec;
use crate::spec::template::Placeholder;

/// What the next request adds to the stream's request template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// The strategy's own query parameters, after the template's.
    pub query: Vec<(String, String)>,
    /// A full URL that replaces the template's path and query (a `link` next URL).
    pub url: Option<Url>,
    /// The values of the template's placeholders on this request.
    pub values: Values,
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

impl Step {
    /// The last page of a run, leaving the cursor to [`Paginator::finish`].
    pub(super) fn done() -> Self {
        Step {
            cursor: CursorWrite::Keep,
            done: true,
        }
    }
}

/// Why a run cannot go on.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategyError {
    /// The reply would leave the position where it was while records keep coming.
    Stuck(String),
    /// The reply lacks what the strategy needs (e.g. an unreadable updated time).
    Shape(String),
}

impl StrategyError {
    /// The problem document of a job that fails with this error.
    pub fn problem(&self) -> Problem {
        match self {
            StrategyError::Stuck(detail) => Problem::new(ProblemType::UpstreamCursorStuck, detail),
            StrategyError::Shape(detail) => Problem::new(ProblemType::UpstreamBadBody, detail),
        }
    }
}

/// One strategy's state machine (one file per strategy in [`crate::paginate`]): what to
/// ask next, and what a reply does to the run. The page loop reaches it only through
/// [`Strategy`].
pub trait Paginator: std::fmt::Debug + Send + Sync {
    /// The next request.
    fn ask(&self) -> Ask;

    /// Takes in one reply: its records and the values at [`Paginator::pointers`].
    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError>;

    /// The cursor a completed run leaves for the next one, committed with the last page
    /// instead of that page's own (unless it is `Keep`).
    fn finish(&self) -> CursorWrite {
        CursorWrite::Keep
    }

    /// The pointers of the reply the strategy reads besides the records ([`Page::value`]).
    fn pointers(&self) -> Vec<JsonPointer> {
        Vec::new()
    }

    /// What the run found shifting under it so far (offset paging, docs/design.md §4).
    fn shifts(&self) -> Shifts {
        Shifts::default()
    }
}

/// One stream's strategy, positioned at a start cursor. A trait object rather than an
/// enum: [`Strategy::new`] is the one place that names the strategies, and each method
/// below is one delegation instead of a match over all of them (once per page, the
/// indirection costs nothing next to the request). The options every strategy takes
/// (`done`) are applied here, around the paginator.
#[derive(Debug)]
pub struct Strategy {
    paginator: Box<dyn Paginator>,
    done: Option<Done>,
    pointers: Vec<JsonPointer>,
}

impl Strategy {
    /// The strategy for `pagination`, resuming from `cursor` (`None`: from the start).
    pub fn new(
        pagination: &Pagination,
        request: &RequestSpec,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        let placed = Placed::of(request);
        let paginator: Box<dyn Paginator> = match pagination {
            Pagination::Keyset(cfg) => Box::new(keyset::Keyset::new(cfg, &placed, cursor)?),
            Pagination::Token(cfg) => Box::new(token::Token::new(
                cfg,
                request.body.is_some(),
                &placed,
                cursor,
            )?),
            Pagination::Position(cfg) => Box::new(position::Position::new(cfg, &placed, cursor)?),
            Pagination::Offset(cfg) => Box::new(offset::Offset::new(cfg, &placed, cursor)?),
            Pagination::Link(cfg) => Box::new(link::Link::new(cfg, &placed, cursor)?),
            Pagination::None(cfg) => Box::new(none::Single::new(cfg, cursor)?),
        };
        let done = pagination.done().cloned();
        let mut pointers = paginator.pointers();
        if let Some(done) = &done
            && !pointers.contains(&done.pointer)
        {
            pointers.push(done.pointer.clone());
        }
        Ok(Strategy {
            paginator,
            done,
            pointers,
        })
    }

    /// The next request.
    pub fn ask(&self) -> Ask {
        self.paginator.ask()
    }

    /// The pointers of the reply the strategy reads besides the records.
    pub fn pointers(&self) -> &[JsonPointer] {
        &self.pointers
    }

    /// Takes in one reply. A reply that says it is the last (`done`) ends the run, even
    /// one the strategy would have found stuck: nothing loops after the last page.
    pub fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        let last = self
            .done
            .as_ref()
            .is_some_and(|done| page.value(&done.pointer).unwrap_or(&Value::Null) == &done.equals);
        match self.paginator.advance(page, reply) {
            Ok(step) => Ok(Step {
                done: step.done || last,
                ..step
            }),
            Err(StrategyError::Stuck(_)) if last => Ok(Step::done()),
            Err(e) => Err(e),
        }
    }

    /// The cursor a completed run leaves for the next one, committed with the last page.
    pub fn finish(&self) -> CursorWrite {
        self.paginator.finish()
    }

    /// What the run found shifting under it so far: step backs, and shifts it could not
    /// repair (which keep the old high-water).
    pub fn shifts(&self) -> Shifts {
        self.paginator.shifts()
    }
}

/// The strategy's own page-size parameter, unless a template places `{{limit}}`.
pub(super) fn own_limit(
    placed: &Placed,
    param: &ParamName,
    limit: PageLimit,
) -> Option<(String, String)> {
    (!placed.has(&Placeholder::Limit)).then(|| (param.to_string(), limit.get().to_string()))
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

/// The next token or position a page names: the value at a pointer of the reply, or at a
/// pointer of the page's last record; `None` when absent or `null`.
pub(super) fn next_cursor(next: &NextCursor, page: &Page) -> Result<Option<Value>, StrategyError> {
    match next {
        NextCursor::Pointer(pointer) => Ok(page.value(pointer).cloned()),
        NextCursor::LastRecord(pointer) => {
            let Some(last) = page.records.last() else {
                return Ok(None);
            };
            let record: Value = serde_json::from_str(&last.text).map_err(|e| {
                StrategyError::Shape(format!("record {} does not read as JSON: {e}", last.key))
            })?;
            Ok(record
                .pointer(pointer.as_str())
                .filter(|v| !v.is_null())
                .cloned())
        }
    }
}

/// The pointer of the reply a next cursor is read at, if it is one.
pub(super) fn reply_pointer(next: &NextCursor) -> Option<JsonPointer> {
    match next {
        NextCursor::Pointer(pointer) => Some(pointer.clone()),
        NextCursor::LastRecord(_) => None,
    }
}

/// A cursor object of the given members, those with no value left out.
pub(super) fn cursor_of(members: &[(&str, Option<Value>)]) -> serde_json::Map<String, Value> {
    members
        .iter()
        .filter_map(|(name, value)| Some(((*name).to_owned(), value.clone()?)))
        .collect()
}
