//! The strategies as the page loop drives them: a stream spec (parsed, so its defaults
//! are settled), the requests its template and strategy make, and what replies do to the
//! cursor. Pure: no network, no database.

use chrono::DateTime;
use serde_json::{Value, json};
use url::Url;

use super::extract::{Item, Page};
use super::request::{Request, RequestTemplate, Target};
use super::strategy::{ReplyMeta, Step, Strategy, StrategyError};
use crate::spec::StreamSpec;
use crate::spec::cursor::CursorWrite;
use crate::spec::names::HttpUrl;

const BASE: &str = "http://127.0.0.1:9";

/// A stream's strategy and request template.
struct Run {
    strategy: Strategy,
    template: RequestTemplate,
}

fn spec(pagination: Value, request: Value, updated_at: bool) -> StreamSpec {
    let mut records = json!({"path": "/items", "key": "/id"});
    if updated_at {
        records["updated_at"] = json!("/updated_at");
    }
    let stream =
        json!({"name": "s", "request": request, "records": records, "pagination": pagination});
    serde_json::from_value(stream).unwrap()
}

fn run_of(spec: &StreamSpec, cursor: Option<Value>) -> Run {
    let base = HttpUrl::try_from(BASE.to_owned()).unwrap();
    Run {
        strategy: Strategy::new(&spec.pagination, &spec.request, cursor.as_ref()).unwrap(),
        template: RequestTemplate::new(&base, &spec.request).unwrap(),
    }
}

fn run(pagination: Value, request: Value, cursor: Option<Value>) -> Run {
    run_of(&spec(pagination, request, true), cursor)
}

impl Run {
    fn request(&self) -> Request {
        self.template.request(self.strategy.ask()).0
    }

    /// The query of the next request, template parameters included.
    fn query(&self) -> Vec<(String, String)> {
        match self.request().target {
            Target::Path { query, .. } => query,
            Target::Url(url) => url.query_pairs().into_owned().collect(),
        }
    }

    fn url(&self) -> String {
        match self.request().target {
            Target::Path { path, query } => {
                let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{path}?{}", query.join("&"))
            }
            Target::Url(url) => url.to_string(),
        }
    }

    fn body(&self) -> Value {
        self.request().body.unwrap_or_default()
    }

    fn advance(&mut self, page: &Page) -> Result<Step, StrategyError> {
        self.strategy.advance(page, &meta(None))
    }

    /// The cursor the page loop commits with the page: the strategy's end-of-run cursor
    /// on the last page, unless it keeps the page's own.
    fn commit(&mut self, page: &Page, reply: &ReplyMeta) -> (CursorWrite, bool) {
        let step = self.strategy.advance(page, reply).unwrap();
        let cursor = match (step.done, self.strategy.finish()) {
            (true, CursorWrite::Keep) | (false, _) => step.cursor,
            (true, last) => last,
        };
        (cursor, step.done)
    }
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A page of records `(id, updated_at)` and reply values `(pointer, value)`.
fn page(records: &[(&str, &str)], values: &[(&str, Value)]) -> Page {
    Page {
        records: records
            .iter()
            .map(|(id, updated)| Item {
                key: (*id).to_owned(),
                key_value: json!(id),
                text: json!({"id": id, "updated_at": updated}).to_string(),
                updated: Some(json!(updated)),
                deleted: false,
            })
            .collect(),
        values: values
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(p, v)| ((*p).to_owned(), v.clone()))
            .collect(),
    }
}

/// Records named `a`, `b`, ... all updated at 2024-01-20T10:00:00Z.
fn keys(ids: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    ids.iter().map(|id| (*id, "2024-01-20T10:00:00Z")).collect()
}

/// A reply at 2024-01-20T10:31:40Z (1705746700), with an optional `Link: rel="next"`.
fn meta(link_next: Option<&str>) -> ReplyMeta {
    ReplyMeta {
        upstream_now: DateTime::from_timestamp(1_705_746_700, 0).unwrap(),
        link_next: link_next.map(|l| Url::parse(l).unwrap()),
        request_url: Url::parse(&format!("{BASE}/x")).unwrap(),
    }
}

fn set(cursor: Value) -> CursorWrite {
    CursorWrite::Set(cursor)
}

#[test]
fn token_templates_get_typed_values_and_runs_end_on_null() {
    let mut s = run(
        json!({"type": "token", "until": "/until", "limit": 2}),
        json!({"method": "POST", "path": "/g",
            "body": {"variables": {"since": "{{since}}", "first": "{{limit}}"}}}),
        None,
    );
    assert_eq!(s.body()["variables"]["since"], "");
    assert_eq!(s.body()["variables"]["first"], 2);
    assert_eq!(s.query(), []);
    let step = s
        .advance(&page(&keys(&["a", "b"]), &[("/until", json!("t1"))]))
        .unwrap();
    assert_eq!(step.cursor, set(json!({"token": "t1"})));
    assert_eq!(s.body()["variables"]["since"], "t1");
    let last = s.advance(&page(&keys(&["c"]), &[])).unwrap();
    assert!(last.done);
    assert_eq!(last.cursor, CursorWrite::Keep);
    assert_eq!(s.strategy.finish(), CursorWrite::Keep);
    // A full page that hands back the same token is a loop.
    let mut again = run(
        json!({"type": "token", "until": "/until", "limit": 2}),
        json!({"path": "/g"}),
        Some(json!({"token": "t1"})),
    );
    assert_eq!(again.query(), q(&[("since", "t1"), ("first", "2")]));
    assert!(matches!(
        again.advance(&page(&keys(&["a", "b"]), &[("/until", json!("t1"))])),
        Err(StrategyError::Stuck(_))
    ));
}

#[test]
fn a_token_streams_first_get_sends_a_blank_token_as_it_always_has() {
    let s = run(
        json!({"type": "token", "until": "/until"}),
        json!({"path": "/g"}),
        None,
    );
    assert_eq!(s.query(), q(&[("since", ""), ("first", "100")]));
}

#[test]
fn positions_are_sent_as_exact_compact_json() {
    let position: Value = serde_json::from_str("[1684739969.358085, 1160406004324630614]").unwrap();
    let mut s = run(
        json!({"type": "position", "limit": 2}),
        json!({"path": "/c"}),
        Some(json!({ "position": position })),
    );
    assert_eq!(
        s.query(),
        q(&[
            (
                "paginate_position",
                "[1684739969.358085,1160406004324630614]"
            ),
            ("paginate_count", "2")
        ])
    );
    let next: Value = serde_json::from_str("[1684739970.000001, 1160406004324630999]").unwrap();
    let step = s
        .advance(&page(
            &keys(&["a", "b"]),
            &[("/meta/next_after_position", next.clone())],
        ))
        .unwrap();
    assert_eq!(step.cursor, set(json!({ "position": next })));
    assert!(s.advance(&page(&keys(&["c"]), &[])).unwrap().done);
}

#[test]
fn offset_runs_store_their_high_water_only_at_the_end() {
    let mut s = run_of(
        &spec(
            json!({"type": "offset", "limit": 2, "since": {"format": "unix", "lookback_seconds": 5}}),
            json!({"path": "/items"}),
            false,
        ),
        Some(json!({"high_water": "1700000000"})),
    );
    assert_eq!(
        s.query(),
        q(&[
            ("modified_since", "1700000000"),
            ("offset", "0"),
            ("limit", "2")
        ])
    );
    let step = s.advance(&page(&keys(&["a", "b"]), &[])).unwrap();
    assert_eq!(
        step,
        Step {
            cursor: CursorWrite::Keep,
            done: false
        }
    );
    // The next page overlaps this one by a row: it must list `b` again (the anchor).
    assert_eq!(s.query()[1], ("offset".into(), "1".into()));
    assert!(s.advance(&page(&keys(&["b"]), &[])).unwrap().done);
    // from = sync_start (the stream has no records.updated_at): the run's start (the
    // reply's Date) minus the lookback.
    assert_eq!(
        s.strategy.finish(),
        set(json!({"high_water": "1705746695"}))
    );
}

/// `min(newest record read, run start − lookback)`: the lookback comes off the run's
/// start, never off a record's own time.
#[test]
fn an_offset_high_water_is_the_newest_record_or_the_start_minus_the_lookback() {
    let pagination = json!({"type": "offset", "limit": 10,
        "since": {"format": "iso8601", "lookback_seconds": 30}});
    let mut old = run(pagination.clone(), json!({"path": "/items"}), None);
    old.advance(&page(
        &[("a", "2024-01-20T09:00:00Z"), ("b", "2024-01-20T10:00:00Z")],
        &[],
    ))
    .unwrap();
    assert_eq!(
        old.strategy.finish(),
        set(json!({"high_water": "2024-01-20T10:00:00Z"}))
    );
    let mut fresh = run(pagination, json!({"path": "/items"}), None);
    fresh
        .advance(&page(&[("a", "2024-01-20T10:31:39Z")], &[]))
        .unwrap();
    assert_eq!(
        fresh.strategy.finish(),
        set(json!({"high_water": "2024-01-20T10:31:10Z"}))
    );
}

/// A page past the end answered with the last page again lists nothing after the
/// anchor: the run ends (it used to fail as a loop).
#[test]
fn a_page_that_lists_nothing_after_the_anchor_ends_the_run() {
    let mut s = run(
        json!({"type": "offset", "page_param": "page", "limit": 2}),
        json!({"path": "/items"}),
        None,
    );
    assert_eq!(s.query(), q(&[("page", "1"), ("limit", "2")]));
    s.advance(&page(&keys(&["a", "b"]), &[])).unwrap();
    assert_eq!(s.query(), q(&[("page", "2"), ("limit", "2")]));
    assert!(s.advance(&page(&keys(&["a", "b"]), &[])).unwrap().done);
}

#[test]
fn links_are_followed_until_there_is_none_then_the_cursor_clears() {
    let mut s = run(
        json!({"type": "link", "limit_param": "per_page", "limit": 2}),
        json!({"path": "/orders"}),
        None,
    );
    assert_eq!(s.query(), q(&[("per_page", "2")]));
    let next = "http://127.0.0.1:9/orders?after=2";
    let step = s
        .strategy
        .advance(&page(&keys(&["a", "b"]), &[]), &meta(Some(next)))
        .unwrap();
    assert_eq!(step.cursor, set(json!({ "next": next })));
    assert_eq!(s.url(), next);
    assert!(matches!(
        s.strategy
            .advance(&page(&keys(&["c", "d"]), &[]), &meta(Some(next))),
        Err(StrategyError::Stuck(_))
    ));
    assert!(s.advance(&page(&keys(&["c"]), &[])).unwrap().done);
    assert_eq!(s.strategy.finish(), CursorWrite::Clear);
}

#[test]
fn a_link_since_filter_goes_on_the_first_request_and_its_high_water_on_the_cursor() {
    let pagination = json!({"type": "link", "limit_param": "per_page", "limit": 2,
        "since": {"param": "since", "format": "iso8601", "initial": "2024-01-01T00:00:00Z"}});
    let mut s = run(pagination.clone(), json!({"path": "/issues"}), None);
    assert_eq!(
        s.query(),
        q(&[("since", "2024-01-01T00:00:00Z"), ("per_page", "2")])
    );
    let next = "http://127.0.0.1:9/issues?page=2";
    let (cursor, done) = s.commit(
        &page(&[("a", "2024-01-20T08:00:00Z")], &[]),
        &meta(Some(next)),
    );
    assert!(!done);
    // Mid-run: where to go on; there is no high-water yet to keep beside it.
    assert_eq!(cursor, set(json!({ "next": next })));
    assert_eq!(s.url(), next);
    let (cursor, done) = s.commit(&page(&[("b", "2024-01-20T09:00:00Z")], &[]), &meta(None));
    assert!(done);
    assert_eq!(cursor, set(json!({"high_water": "2024-01-20T09:00:00Z"})));

    // The next run starts from the first URL with that high-water; mid-run, the cursor
    // keeps it beside the next URL.
    let mut s = run(
        pagination.clone(),
        json!({"path": "/issues"}),
        Some(json!({"high_water": "2024-01-20T09:00:00Z"})),
    );
    assert_eq!(
        s.query()[0],
        ("since".into(), "2024-01-20T09:00:00Z".into())
    );
    let (cursor, _) = s.commit(&page(&keys(&["c"]), &[]), &meta(Some(next)));
    assert_eq!(
        cursor,
        set(json!({"next": next, "high_water": "2024-01-20T09:00:00Z"}))
    );
    // A run that goes on from an interrupted one does not know when that one began: it
    // keeps the high-water it started from.
    let mut resumed = run(
        pagination,
        json!({"path": "/issues"}),
        Some(json!({"next": next, "high_water": "2024-01-20T09:00:00Z"})),
    );
    assert_eq!(resumed.url(), next);
    let (cursor, done) = resumed.commit(&page(&[("d", "2024-01-20T10:00:00Z")], &[]), &meta(None));
    assert!(done);
    assert_eq!(cursor, set(json!({"high_water": "2024-01-20T09:00:00Z"})));
}

#[test]
fn a_link_stream_can_resume_at_its_last_page() {
    let pagination = json!({"type": "link", "resume": "last_page",
        "since": {"param": "updated_after", "initial": "2024-01-01T00:00:00Z"}});
    let mut s = run(pagination.clone(), json!({"path": "/orders"}), None);
    let first = "/orders?updated_after=2024-01-01T00:00:00Z";
    assert_eq!(s.url(), first);
    let next = "http://127.0.0.1:9/orders?cursor=c2";
    s.commit(&page(&keys(&["a"]), &[]), &meta(Some(next)));
    let mut last = meta(None);
    last.request_url = Url::parse(next).unwrap();
    let (cursor, done) = s.commit(&page(&keys(&["b"]), &[]), &last);
    assert!(done);
    assert_eq!(cursor, set(json!({ "next": next })));
    // The next run starts there, and the stored URL wins over the since filter.
    let s = run(
        pagination,
        json!({"path": "/orders"}),
        Some(json!({ "next": next })),
    );
    assert_eq!(s.url(), next);
}

#[test]
fn a_link_stream_can_resume_from_a_delta_link() {
    let pagination = json!({"type": "link", "next": "/@odata.nextLink",
        "resume": {"pointer": "/@odata.deltaLink"}});
    let mut s = run(pagination.clone(), json!({"path": "/users/delta"}), None);
    let (cursor, _) = s.commit(
        &page(
            &keys(&["a"]),
            &[("/@odata.nextLink", json!("/users/delta?$skiptoken=s1"))],
        ),
        &meta(None),
    );
    assert_eq!(
        cursor,
        set(json!({"next": "http://127.0.0.1:9/users/delta?$skiptoken=s1"}))
    );
    let (cursor, done) = s.commit(
        &page(
            &keys(&["b"]),
            &[(
                "/@odata.deltaLink",
                json!("http://127.0.0.1:9/users/delta?$deltatoken=d1"),
            )],
        ),
        &meta(None),
    );
    assert!(done);
    assert_eq!(
        cursor,
        set(json!({"next": "http://127.0.0.1:9/users/delta?$deltatoken=d1"}))
    );
    // A final page that names nothing there: the next run starts from the beginning.
    let mut s = run(pagination, json!({"path": "/users/delta"}), None);
    let (cursor, _) = s.commit(&page(&keys(&["c"]), &[]), &meta(None));
    assert_eq!(cursor, CursorWrite::Clear);
}

/// Stripe: `starting_after` is the id of the page's last record, `has_more` ends the run.
#[test]
fn a_token_can_be_the_last_records_id_and_done_ends_the_run() {
    let pagination = json!({"type": "token", "until": {"last_record": "/id"}, "limit": 2,
        "done": {"pointer": "/has_more", "equals": false}});
    let request = json!({"path": "/v1/customers",
        "query": {"starting_after": "{{cursor}}", "limit": "{{limit}}"}});
    let mut s = run(pagination, request, None);
    // No token yet: the parameter that would hold it is left out.
    assert_eq!(s.query(), q(&[("limit", "2")]));
    let step = s
        .advance(&page(
            &keys(&["cus_1", "cus_2"]),
            &[("/has_more", json!(true))],
        ))
        .unwrap();
    assert_eq!(
        step,
        Step {
            cursor: set(json!({"token": "cus_2"})),
            done: false
        }
    );
    assert_eq!(s.query(), q(&[("limit", "2"), ("starting_after", "cus_2")]));
    let step = s
        .advance(&page(
            &keys(&["cus_3", "cus_4"]),
            &[("/has_more", json!(false))],
        ))
        .unwrap();
    assert!(step.done);
    // The token the last page names is kept: the next run asks for what came after it.
    assert_eq!(step.cursor, set(json!({"token": "cus_4"})));
}

/// Slack: an empty `next_cursor` is no cursor.
#[test]
fn an_empty_token_is_no_token() {
    let mut s = run(
        json!({"type": "token", "since_param": "cursor", "until": "/response_metadata/next_cursor", "limit": 2}),
        json!({"path": "/api/conversations.history"}),
        None,
    );
    let step = s
        .advance(&page(
            &keys(&["a", "b"]),
            &[("/response_metadata/next_cursor", json!("dXNlcjpVMDYx"))],
        ))
        .unwrap();
    assert!(!step.done);
    let step = s
        .advance(&page(
            &keys(&["c", "d"]),
            &[("/response_metadata/next_cursor", json!(""))],
        ))
        .unwrap();
    assert_eq!(step, Step::done());
    assert_eq!(s.strategy.finish(), CursorWrite::Keep);
}

/// Zendesk: `start_time` on the first request, then the cursor; a stored cursor wins.
#[test]
fn a_token_since_filter_goes_on_the_first_request_when_there_is_no_token() {
    let pagination = json!({"type": "token", "since_param": "cursor", "until": "/after_cursor",
        "since": {"param": "start_time", "format": "unix", "initial": "1532034771"},
        "done": {"pointer": "/end_of_stream", "equals": true}});
    let mut s = run(
        pagination.clone(),
        json!({"path": "/api/v2/incremental/tickets/cursor.json"}),
        None,
    );
    assert_eq!(
        s.query(),
        q(&[("start_time", "1532034771"), ("first", "100")])
    );
    s.advance(&page(
        &keys(&["1"]),
        &[
            ("/after_cursor", json!("c1")),
            ("/end_of_stream", json!(false)),
        ],
    ))
    .unwrap();
    assert_eq!(s.query(), q(&[("cursor", "c1"), ("first", "100")]));
    let step = s
        .advance(&page(
            &keys(&["2"]),
            &[
                ("/after_cursor", json!("c2")),
                ("/end_of_stream", json!(true)),
            ],
        ))
        .unwrap();
    assert!(step.done);
    assert_eq!(step.cursor, set(json!({"token": "c2"})));
    let s = run(
        pagination,
        json!({"path": "/t"}),
        Some(json!({"token": "c2"})),
    );
    assert_eq!(s.query(), q(&[("cursor", "c2"), ("first", "100")]));
}

#[test]
fn a_restarting_token_stream_keeps_a_high_water() {
    let pagination = json!({"type": "token", "until": "/next", "resume": "restart",
        "since": {"param": "updated_since", "lookback_seconds": 0}});
    let mut s = run(pagination.clone(), json!({"path": "/t"}), None);
    // Neither a since value nor a token yet: neither is sent.
    assert_eq!(s.query(), q(&[("first", "100")]));
    let (cursor, _) = s.commit(
        &page(&[("a", "2024-01-20T10:00:00Z")], &[("/next", json!("t1"))]),
        &meta(None),
    );
    assert_eq!(cursor, set(json!({"token": "t1"})));
    let (cursor, done) = s.commit(&page(&[("b", "2024-01-20T10:05:00Z")], &[]), &meta(None));
    assert!(done);
    assert_eq!(cursor, set(json!({"high_water": "2024-01-20T10:05:00Z"})));
    let s = run(
        pagination,
        json!({"path": "/t"}),
        Some(json!({"high_water": "2024-01-20T10:05:00Z"})),
    );
    assert_eq!(
        s.query(),
        q(&[("updated_since", "2024-01-20T10:05:00Z"), ("first", "100")])
    );
}

/// Google: the final page names the token to start the next run from.
#[test]
fn a_token_stream_can_resume_from_a_pointer() {
    let pagination = json!({"type": "token", "since_param": "pageToken", "until": "/nextPageToken",
        "resume": {"pointer": "/nextSyncToken"}});
    let mut s = run(pagination, json!({"path": "/events"}), None);
    s.commit(
        &page(&keys(&["a"]), &[("/nextPageToken", json!("p1"))]),
        &meta(None),
    );
    let (cursor, done) = s.commit(
        &page(&keys(&["b"]), &[("/nextSyncToken", json!("s1"))]),
        &meta(None),
    );
    assert!(done);
    assert_eq!(cursor, set(json!({"token": "s1"})));
}

#[test]
fn a_position_since_filter_goes_on_a_streams_first_request_only() {
    let pagination = json!({"type": "position", "limit": 2,
        "since": {"param": "created_after", "format": "unix", "initial": "1700000000"}});
    let mut s = run(pagination.clone(), json!({"path": "/c"}), None);
    assert_eq!(
        s.query(),
        q(&[("created_after", "1700000000"), ("paginate_count", "2")])
    );
    s.advance(&page(
        &keys(&["a", "b"]),
        &[("/meta/next_after_position", json!([1, 2]))],
    ))
    .unwrap();
    assert_eq!(
        s.query(),
        q(&[("paginate_position", "[1,2]"), ("paginate_count", "2")])
    );
    let stored = run(
        pagination,
        json!({"path": "/c"}),
        Some(json!({"position": [1, 2]})),
    );
    assert_eq!(
        stored.query(),
        q(&[("paginate_position", "[1,2]"), ("paginate_count", "2")])
    );
}

#[test]
fn a_single_request_with_a_since_filter_keeps_its_high_water() {
    let pagination = json!({"type": "none", "since": {"param": "since", "format": "unix_ms",
        "from": "sync_start", "lookback_seconds": 10}});
    let mut s = run(pagination.clone(), json!({"path": "/settings"}), None);
    assert_eq!(s.query(), q(&[]));
    let (cursor, done) = s.commit(&page(&keys(&["a"]), &[]), &meta(None));
    assert!(done);
    assert_eq!(cursor, set(json!({"high_water": "1705746690000"})));
    let s = run(
        pagination,
        json!({"path": "/settings"}),
        Some(json!({"high_water": "1705746690000"})),
    );
    assert_eq!(s.query(), q(&[("since", "1705746690000")]));
}

/// `done` is checked on every reply of every strategy; an absent member counts as null.
#[test]
fn done_ends_a_run_of_any_strategy() {
    let done = json!({"pointer": "/isLast", "equals": true});
    let cases = [
        json!({"type": "keyset", "limit": 2, "done": done}),
        json!({"type": "token", "until": "/next", "limit": 2, "done": done}),
        json!({"type": "position", "limit": 2, "done": done}),
        json!({"type": "offset", "limit": 2, "done": done}),
        json!({"type": "link", "next": "/next", "done": done}),
    ];
    for pagination in cases {
        let mut s = run(pagination.clone(), json!({"path": "/x"}), None);
        let values = [
            ("/next", json!("http://127.0.0.1:9/x?p=2")),
            ("/meta/next_after_position", json!([1])),
        ];
        let going = page(&keys(&["a", "b"]), &values);
        assert!(!s.advance(&going).unwrap().done, "{pagination}");
        let mut last = values.to_vec();
        last.push(("/isLast", json!(true)));
        let step = s.advance(&page(&keys(&["c", "d"]), &last)).unwrap();
        assert!(step.done, "{pagination}");
    }
    let mut nulls = run(
        json!({"type": "offset", "limit": 1, "done": {"pointer": "/paging/next", "equals": null}}),
        json!({"path": "/x"}),
        None,
    );
    assert!(
        !nulls
            .advance(&page(
                &keys(&["a"]),
                &[("/paging/next", json!({"after": "1"}))]
            ))
            .unwrap()
            .done
    );
    assert!(nulls.advance(&page(&keys(&["b"]), &[])).unwrap().done);
}

/// A reply that says it is the last ends the run even where the strategy would call the
/// page a loop.
#[test]
fn done_wins_over_a_stuck_cursor() {
    let mut s = run(
        json!({"type": "token", "until": "/next", "limit": 1, "done": {"pointer": "/more", "equals": false}}),
        json!({"path": "/x"}),
        Some(json!({"token": "t"})),
    );
    let step = s
        .advance(&page(
            &keys(&["a"]),
            &[("/next", json!("t")), ("/more", json!(false))],
        ))
        .unwrap();
    assert_eq!(step, Step::done());
}

/// A page-number API that names the next page; one that answers every page past the end
/// with the last one ends where `next_page` is null.
#[test]
fn offset_next_page_is_followed_until_it_is_null() {
    let mut s = run(
        json!({"type": "offset", "page_param": "page", "limit": 2, "next_page": "/meta/next"}),
        json!({"path": "/x"}),
        None,
    );
    assert!(
        !s.advance(&page(&keys(&["a"]), &[("/meta/next", json!(2))]))
            .unwrap()
            .done
    );
    assert_eq!(s.query(), q(&[("page", "2"), ("limit", "2")]));
    // Page numbers as text are numbers too, and a short page does not end the run. A
    // page-number API cannot overlap: page 1 is asked for again, to find `a` still there.
    assert!(
        !s.advance(&page(&keys(&["b"]), &[("/meta/next", json!("5"))]))
            .unwrap()
            .done
    );
    assert_eq!(s.query(), q(&[("page", "1"), ("limit", "2")]));
    assert!(
        !s.advance(&page(&keys(&["a"]), &[("/meta/next", json!(2))]))
            .unwrap()
            .done
    );
    assert_eq!(s.query(), q(&[("page", "5"), ("limit", "2")]));
    // The last page, then the check of the page before it.
    assert!(
        !s.advance(&page(&keys(&["c", "d"]), &[("/meta/next", Value::Null)]))
            .unwrap()
            .done
    );
    assert_eq!(s.query(), q(&[("page", "2"), ("limit", "2")]));
    assert!(
        s.advance(&page(&keys(&["b"]), &[("/meta/next", json!(5))]))
            .unwrap()
            .done
    );
    let mut back = run(
        json!({"type": "offset", "page_param": "page", "start_page": 3, "next_page": "/next"}),
        json!({"path": "/x"}),
        None,
    );
    assert!(matches!(
        back.advance(&page(&keys(&["a"]), &[("/next", json!(3))])),
        Err(StrategyError::Stuck(_))
    ));
    assert!(matches!(
        back.advance(&page(&keys(&["a"]), &[("/next", json!("three"))])),
        Err(StrategyError::Shape(_))
    ));
}

#[test]
fn templates_fill_the_path_query_headers_and_body() {
    let request = json!({"method": "POST", "path": "/p/{{page}}",
        "query": {"from": "{{offset}}", "static": "x", "size": "{{limit}}"},
        "headers": {"X-Since": "{{since}}"},
        "body": {"filter": {"value": "{{since}}"}, "size": "{{limit}}", "page": "{{page}}"}});
    let mut s = run(
        json!({"type": "offset", "page_param": "page", "limit": 3,
            "since": {"format": "unix_ms", "initial": "1579514400000"}}),
        request,
        None,
    );
    let sent = s.request();
    let Target::Path { path, query } = sent.target else {
        panic!("a path");
    };
    assert_eq!(path, "/p/1");
    // The template places the page and the limit: the strategy does not send its own.
    assert_eq!(query, q(&[("from", "0"), ("size", "3"), ("static", "x")]));
    assert_eq!(sent.headers, q(&[("X-Since", "1579514400000")]));
    assert_eq!(
        sent.body.unwrap(),
        json!({"filter": {"value": 1579514400000_u64}, "size": 3, "page": 1})
    );
    s.advance(&page(&keys(&["a", "b", "c"]), &[])).unwrap();
    assert_eq!(s.request().target.path(), "/p/2");
    assert_eq!(s.query()[0], ("from".into(), "3".into()));
}

#[test]
fn a_header_whose_placeholder_has_no_value_is_left_out() {
    let s = run(
        json!({"type": "link", "since": {"format": "iso8601"}}),
        json!({"path": "/x", "headers": {"If-Modified-Since": "{{since}}", "X-Fixed": "1"}}),
        None,
    );
    assert_eq!(s.request().headers, q(&[("X-Fixed", "1")]));
    assert_eq!(s.query(), q(&[]));
}

/// PostgREST: filter expressions instead of two parameters.
#[test]
fn keyset_filter_maps_replace_the_since_and_id_parameters() {
    let pagination = json!({"type": "keyset", "limit_param": "limit", "limit": 2,
        "query": {"since": {"updated_at": "gte.{{since}}"},
                  "after": {"or": "(updated_at.gt.{{since}},and(updated_at.eq.{{since}},id.gt.{{from_id}}))"}}});
    let request = json!({"path": "/items", "query": {"order": "updated_at.asc,id.asc"}});
    let mut s = run(pagination.clone(), request.clone(), None);
    assert_eq!(
        s.query(),
        q(&[
            ("order", "updated_at.asc,id.asc"),
            ("updated_at", "gte.1970-01-01T00:00:00Z"),
            ("limit", "2")
        ])
    );
    s.advance(&page(
        &[("7", "2024-01-20T10:00:00Z"), ("9", "2024-01-20T10:00:00Z")],
        &[],
    ))
    .unwrap();
    assert_eq!(
        s.query(),
        q(&[
            ("order", "updated_at.asc,id.asc"),
            (
                "or",
                "(updated_at.gt.2024-01-20T10:00:00Z,and(updated_at.eq.2024-01-20T10:00:00Z,id.gt.9))"
            ),
            ("limit", "2")
        ])
    );
    // A resume from a time alone: the since map.
    let resumed = run(
        pagination,
        request,
        Some(json!({"updated_since": "2024-01-20T10:00:00Z"})),
    );
    assert_eq!(
        resumed.query()[1],
        ("updated_at".into(), "gte.2024-01-20T10:00:00Z".into())
    );
}

/// HubSpot: the time filter and the cursor share one POST body, resent with every page;
/// `{{since}}` has the run's value on every request, only `param` goes on the first.
#[test]
fn a_since_template_has_its_value_on_every_request_of_the_run() {
    let pagination = json!({"type": "token", "until": "/paging/next/after", "limit": 2,
        "resume": "restart", "since": {"format": "unix_ms", "initial": "0", "lookback_seconds": 0}});
    let request = json!({"method": "POST", "path": "/crm/v3/objects/contacts/search",
        "body": {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate",
                    "operator": "GTE", "value": "{{since}}"}]}],
                 "after": "{{cursor}}", "limit": "{{limit}}"}});
    let mut s = run(pagination, request, None);
    let body = s.body();
    assert_eq!(body["filterGroups"][0]["filters"][0]["value"], json!(0));
    assert_eq!(body["after"], Value::Null);
    assert_eq!(body["limit"], json!(2));
    assert_eq!(s.query(), q(&[]));
    s.advance(&page(
        &keys(&["1", "2"]),
        &[("/paging/next/after", json!("2"))],
    ))
    .unwrap();
    let body = s.body();
    assert_eq!(body["filterGroups"][0]["filters"][0]["value"], json!(0));
    assert_eq!(body["after"], "2");

    // Slack: `oldest` goes with every page, beside the cursor.
    let mut slack = run(
        json!({"type": "token", "until": "/response_metadata/next_cursor", "limit": 2,
            "since": {"format": "unix", "initial": "1733011200"}}),
        json!({"path": "/api/conversations.history",
            "query": {"channel": "C123", "oldest": "{{since}}", "cursor": "{{cursor}}"}}),
        None,
    );
    assert_eq!(
        slack.query(),
        q(&[
            ("channel", "C123"),
            ("oldest", "1733011200"),
            ("first", "2")
        ])
    );
    slack
        .advance(&page(
            &keys(&["a", "b"]),
            &[("/response_metadata/next_cursor", json!("c1"))],
        ))
        .unwrap();
    assert_eq!(
        slack.query(),
        q(&[
            ("channel", "C123"),
            ("cursor", "c1"),
            ("oldest", "1733011200"),
            ("first", "2")
        ])
    );
    // A run that goes on from a stored token has no since value.
    let stored = run(
        json!({"type": "token", "until": "/next", "since": {"param": "oldest", "initial": "1"}}),
        json!({"path": "/x", "headers": {"X-Oldest": "{{since}}"}}),
        Some(json!({"token": "t9"})),
    );
    assert_eq!(stored.request().headers, q(&[]));
    assert_eq!(stored.query(), q(&[("since", "t9"), ("first", "100")]));
}

#[test]
fn an_incremental_keyset_run_ends_on_a_short_page_after_a_full_one() {
    let pagination = json!({"type": "keyset", "limit": 2});
    let stored = json!({"updated_since": "2024-01-20T09:00:00Z", "from_id": "0"});
    let full = page(
        &[("a", "2024-01-20T09:10:00Z"), ("b", "2024-01-20T09:20:00Z")],
        &[],
    );
    let short = page(&[("c", "2024-01-20T09:30:00Z")], &[]);

    // Resumed from a cursor, a short page after a full one is the end.
    let mut incremental = run(
        pagination.clone(),
        json!({"path": "/p"}),
        Some(stored.clone()),
    );
    assert!(!incremental.advance(&full).unwrap().done);
    let (cursor, done) = incremental.commit(&short, &meta(None));
    assert!(done);
    assert_eq!(
        cursor,
        set(json!({"updated_since": "2024-01-20T09:30:00Z", "from_id": "c"}))
    );

    // A short first page may come from an upstream that caps its pages below the limit.
    let mut capped = run(pagination.clone(), json!({"path": "/p"}), Some(stored));
    assert!(!capped.advance(&short).unwrap().done);

    // A run from the beginning (full, reconcile) reads on to the empty page.
    let mut from_start = run(pagination, json!({"path": "/p"}), None);
    assert!(!from_start.advance(&full).unwrap().done);
    assert!(!from_start.advance(&short).unwrap().done);
    assert!(from_start.advance(&page(&[], &[])).unwrap().done);
}
