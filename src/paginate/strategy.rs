//! Pagination strategies as small state machines (docs/design.md §4): *state → next request*,
//! *reply → records + cursor to commit + done?*. They never touch the network or the
//! database; the page loop in `sync` drives them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use url::Url;

use super::extract::Page;
use super::{keyset, link, none, offset, position, token};
use crate::problem::{Problem, ProblemType};
use crate::spec::cursor::CursorWrite;
use crate::spec::names::JsonPointer;
use crate::spec::pagination::Pagination;
use crate::spec::source::RequestSpec;

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

    /// Takes in one reply: its records and the value at [`Paginator::next_pointer`].
    fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError>;

    /// The cursor a completed run leaves for the next one, committed with the last page
    /// instead of that page's own (unless it is `Keep`).
    fn finish(&self) -> CursorWrite {
        CursorWrite::Keep
    }

    /// The pointer of the reply the strategy reads besides the records ([`Page::next`]).
    fn next_pointer(&self) -> Option<&JsonPointer> {
        None
    }
}

/// One stream's strategy, positioned at a start cursor. A trait object rather than an
/// enum: [`Strategy::new`] is the one place that names the strategies, and each method
/// below is one delegation instead of a match over all of them (once per page, the
/// indirection costs nothing next to the request).
#[derive(Debug)]
pub struct Strategy(Box<dyn Paginator>);

impl Strategy {
    /// The strategy for `pagination`, resuming from `cursor` (`None`: from the start).
    pub fn new(
        pagination: &Pagination,
        request: &RequestSpec,
        cursor: Option<&Value>,
    ) -> Result<Self, StrategyError> {
        Ok(Strategy(match pagination {
            Pagination::Keyset(cfg) => Box::new(keyset::Keyset::new(cfg, cursor)?),
            Pagination::Token(cfg) => {
                Box::new(token::Token::new(cfg, request.body.as_ref(), cursor)?)
            }
            Pagination::Position(cfg) => Box::new(position::Position::new(cfg, cursor)?),
            Pagination::Offset(cfg) => Box::new(offset::Offset::new(cfg, cursor)?),
            Pagination::Link(cfg) => Box::new(link::Link::new(cfg, cursor)?),
            Pagination::None => Box::new(none::Single),
        }))
    }

    /// The next request.
    pub fn ask(&self) -> Ask {
        self.0.ask()
    }

    /// The pointer of the reply the strategy reads besides the records.
    pub fn next_pointer(&self) -> Option<&JsonPointer> {
        self.0.next_pointer()
    }

    /// Takes in one reply.
    pub fn advance(&mut self, page: &Page, reply: &ReplyMeta) -> Result<Step, StrategyError> {
        self.0.advance(page, reply)
    }

    /// The cursor a completed run leaves for the next one, committed with the last page.
    pub fn finish(&self) -> CursorWrite {
        self.0.finish()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paginate::extract::Item;

    fn strategy(pagination: Value, request: Value, cursor: Option<Value>) -> Strategy {
        let pagination: Pagination = serde_json::from_value(pagination).unwrap();
        let request: RequestSpec = serde_json::from_value(request).unwrap();
        Strategy::new(&pagination, &request, cursor.as_ref()).unwrap()
    }

    fn page(keys: &[&str], next: Option<Value>) -> Page {
        Page {
            records: keys
                .iter()
                .map(|k| Item {
                    key: (*k).to_owned(),
                    key_value: Value::String((*k).to_owned()),
                    text: format!("{{\"id\":\"{k}\"}}"),
                    updated: Some(Value::String("2024-01-20T10:30:00Z".into())),
                    deleted: false,
                })
                .collect(),
            next,
        }
    }

    fn meta() -> ReplyMeta {
        ReplyMeta {
            upstream_now: DateTime::from_timestamp(1_705_746_700, 0).unwrap(),
            link_next: None,
            request_url: Url::parse("http://127.0.0.1:9/x").unwrap(),
        }
    }

    fn query(ask: &Ask) -> Vec<(&str, &str)> {
        ask.query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn token_templates_get_typed_values_and_runs_end_on_null() {
        let mut s = strategy(
            serde_json::json!({"type": "token", "until": "/until", "limit": 2}),
            serde_json::json!({"method": "POST", "path": "/g",
                "body": {"variables": {"since": "{{since}}", "first": "{{limit}}"}}}),
            None,
        );
        let body = s.ask().body.unwrap();
        assert_eq!(body["variables"]["since"], "");
        assert_eq!(body["variables"]["first"], 2);
        let step = s
            .advance(&page(&["a", "b"], Some("t1".into())), &meta())
            .unwrap();
        assert_eq!(
            step.cursor,
            CursorWrite::Set(serde_json::json!({"token": "t1"}))
        );
        assert_eq!(s.ask().body.unwrap()["variables"]["since"], "t1");
        let last = s.advance(&page(&["c"], None), &meta()).unwrap();
        assert!(last.done);
        assert_eq!(last.cursor, CursorWrite::Keep);
        // A full page that hands back the same token is a loop.
        let mut again = strategy(
            serde_json::json!({"type": "token", "until": "/until", "limit": 2}),
            serde_json::json!({"path": "/g"}),
            Some(serde_json::json!({"token": "t1"})),
        );
        assert_eq!(query(&again.ask()), [("since", "t1"), ("first", "2")]);
        assert!(matches!(
            again.advance(&page(&["a", "b"], Some("t1".into())), &meta()),
            Err(StrategyError::Stuck(_))
        ));
    }

    #[test]
    fn positions_are_sent_as_exact_compact_json() {
        let position: Value =
            serde_json::from_str("[1684739969.358085, 1160406004324630614]").unwrap();
        let mut s = strategy(
            serde_json::json!({"type": "position", "limit": 2}),
            serde_json::json!({"path": "/c"}),
            Some(serde_json::json!({ "position": position })),
        );
        assert_eq!(
            query(&s.ask()),
            [
                (
                    "paginate_position",
                    "[1684739969.358085,1160406004324630614]"
                ),
                ("paginate_count", "2")
            ]
        );
        let next: Value = serde_json::from_str("[1684739970.000001, 1160406004324630999]").unwrap();
        let step = s
            .advance(&page(&["a", "b"], Some(next.clone())), &meta())
            .unwrap();
        assert_eq!(
            step.cursor,
            CursorWrite::Set(serde_json::json!({"position": next}))
        );
        assert!(s.advance(&page(&["c"], None), &meta()).unwrap().done);
    }

    #[test]
    fn offset_runs_store_their_high_water_only_at_the_end() {
        let mut s = strategy(
            serde_json::json!({"type": "offset", "limit": 2,
                "since": {"format": "unix", "lookback_seconds": 5}}),
            serde_json::json!({"path": "/items"}),
            Some(serde_json::json!({"high_water": "1700000000"})),
        );
        assert_eq!(
            query(&s.ask()),
            [
                ("modified_since", "1700000000"),
                ("offset", "0"),
                ("limit", "2")
            ]
        );
        let step = s.advance(&page(&["a", "b"], None), &meta()).unwrap();
        assert_eq!(
            step,
            Step {
                cursor: CursorWrite::Keep,
                done: false
            }
        );
        assert_eq!(query(&s.ask())[1], ("offset", "2"));
        assert!(s.advance(&page(&["c"], None), &meta()).unwrap().done);
        // from = sync_start (no updated_at pointer given to the spec): the run's start
        // (the reply's Date) minus the lookback.
        assert_eq!(
            s.finish(),
            CursorWrite::Set(serde_json::json!({"high_water": "1705746695"}))
        );
    }

    #[test]
    fn pages_of_the_same_records_are_a_loop() {
        let mut s = strategy(
            serde_json::json!({"type": "offset", "page_param": "page", "limit": 2}),
            serde_json::json!({"path": "/items"}),
            None,
        );
        assert_eq!(query(&s.ask()), [("page", "1"), ("limit", "2")]);
        s.advance(&page(&["a", "b"], None), &meta()).unwrap();
        assert_eq!(query(&s.ask()), [("page", "2"), ("limit", "2")]);
        assert!(matches!(
            s.advance(&page(&["a", "b"], None), &meta()),
            Err(StrategyError::Stuck(_))
        ));
    }

    #[test]
    fn links_are_followed_until_there_is_none_then_the_cursor_clears() {
        let mut s = strategy(
            serde_json::json!({"type": "link", "limit_param": "per_page", "limit": 2}),
            serde_json::json!({"path": "/orders"}),
            None,
        );
        assert_eq!(query(&s.ask()), [("per_page", "2")]);
        let mut with_next = meta();
        with_next.link_next = Some(Url::parse("http://127.0.0.1:9/orders?after=2").unwrap());
        let step = s.advance(&page(&["a", "b"], None), &with_next).unwrap();
        assert_eq!(
            step.cursor,
            CursorWrite::Set(serde_json::json!({"next": "http://127.0.0.1:9/orders?after=2"}))
        );
        assert_eq!(
            s.ask().url.unwrap().as_str(),
            "http://127.0.0.1:9/orders?after=2"
        );
        assert!(matches!(
            s.advance(&page(&["c", "d"], None), &with_next),
            Err(StrategyError::Stuck(_))
        ));
        assert!(s.advance(&page(&["c"], None), &meta()).unwrap().done);
        assert_eq!(s.finish(), CursorWrite::Clear);
    }
}
