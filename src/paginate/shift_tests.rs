//! Offset paging under rows that shift (docs/design.md §4, "Offset paging never skips a
//! row"), seek mode and result caps, driven against small in-memory listings: the
//! strategy's requests are answered from a listing that changes between two of them,
//! and the runs' high-waters carry on to the next run as the page loop would. Pure: no
//! network, no database.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use url::Url;

use super::extract::{Item, Page};
use super::offset::Offset;
use super::strategy::{Ask, Paginator, ReplyMeta, Strategy, StrategyError};
use super::template::Placed;
use crate::spec::StreamSpec;
use crate::spec::cursor::CursorWrite;
use crate::spec::pagination::Pagination;

/// 2024-01-20T10:00:00Z.
const T0: i64 = 1_705_744_800;

fn time(at: i64) -> String {
    DateTime::from_timestamp(at, 0)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A record of the listing: id, updated time (seconds), content version.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    id: u32,
    at: i64,
    v: u32,
}

/// How the listing is sorted.
#[derive(Debug, Clone, Copy)]
enum Order {
    Updated,
    Id,
}

/// An upstream listing `?modified_since=&offset=|page=&limit=`, inclusive on the time.
struct Listing {
    rows: Vec<Row>,
    order: Order,
    requests: usize,
}

impl Listing {
    fn new(count: u32, order: Order) -> Self {
        Listing {
            rows: (1..=count)
                .map(|id| Row {
                    id,
                    at: T0 + i64::from(id),
                    v: 0,
                })
                .collect(),
            order,
            requests: 0,
        }
    }

    fn sorted(&self) -> Vec<Row> {
        let mut rows = self.rows.clone();
        match self.order {
            Order::Updated => rows.sort_by_key(|r| (r.at, r.id)),
            Order::Id => rows.sort_by_key(|r| r.id),
        }
        rows
    }

    fn update(&mut self, id: u32, at: i64) {
        let row = self.rows.iter_mut().find(|r| r.id == id).unwrap();
        row.at = at;
        row.v += 1;
    }

    fn delete(&mut self, id: u32) {
        self.rows.retain(|r| r.id != id);
    }

    fn answer(&mut self, ask: &Ask) -> Page {
        self.requests += 1;
        let param = |name: &str| {
            ask.query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let since: Option<DateTime<Utc>> = param("modified_since").map(|s| s.parse().unwrap());
        let limit: usize = param("limit").unwrap().parse().unwrap();
        let offset = match (param("offset"), param("page")) {
            (Some(offset), _) => offset.parse().unwrap(),
            (None, Some(page)) => (page.parse::<usize>().unwrap() - 1) * limit,
            (None, None) => panic!("neither an offset nor a page: {ask:?}"),
        };
        let rows: Vec<Row> = self
            .sorted()
            .into_iter()
            .filter(|r| since.is_none_or(|s| r.at >= s.timestamp()))
            .skip(offset)
            .take(limit)
            .collect();
        Page {
            records: rows.iter().map(item).collect(),
            ..Page::default()
        }
    }

    fn truth(&self) -> BTreeMap<u32, u32> {
        self.rows.iter().map(|r| (r.id, r.v)).collect()
    }
}

fn item(row: &Row) -> Item {
    Item {
        key: row.id.to_string(),
        key_value: json!(row.id),
        text: json!({"id": row.id, "v": row.v}).to_string(),
        updated: Some(json!(time(row.at))),
        deleted: false,
    }
}

/// Replies at T0 + 1000 s: every row's time is older than the run's start.
fn meta() -> ReplyMeta {
    ReplyMeta {
        upstream_now: DateTime::from_timestamp(T0 + 1000, 0).unwrap(),
        link_next: None,
        request_url: Url::parse("http://127.0.0.1:9/items").unwrap(),
    }
}

fn offset_spec(numbered: bool) -> StreamSpec {
    let mut pagination = json!({"type": "offset", "limit": 2,
        "since": {"param": "modified_since", "initial": "2024-01-01T00:00:00Z"}});
    if numbered {
        pagination["page_param"] = json!("page");
    }
    serde_json::from_value(json!({"name": "s", "request": {"path": "/items"},
        "records": {"path": "", "key": "/id", "updated_at": "/updatedAt"},
        "pagination": pagination}))
    .unwrap()
}

/// One run of `paginator` over `listing`, `change` running before each request (by its
/// number in the run, from 1); the records read go into `mirror`. Returns the cursor
/// the run leaves.
fn run(
    mut paginator: Box<dyn Paginator>,
    listing: &mut Listing,
    mirror: &mut BTreeMap<u32, u32>,
    mut change: impl FnMut(usize, &mut Listing),
) -> (CursorWrite, Box<dyn Paginator>) {
    for n in 1..1000 {
        change(n, listing);
        let page = listing.answer(&paginator.ask());
        for item in &page.records {
            let record: Value = serde_json::from_str(&item.text).unwrap();
            mirror.insert(
                item.key.parse().unwrap(),
                u32::try_from(record["v"].as_u64().unwrap()).unwrap(),
            );
        }
        if paginator.advance(&page, &meta()).unwrap().done {
            return (paginator.finish(), paginator);
        }
    }
    panic!("the run did not end");
}

fn offset_cfg(spec: &StreamSpec) -> &crate::spec::pagination::Offset {
    match &spec.pagination {
        Pagination::Offset(cfg) => cfg,
        _ => unreachable!(),
    }
}

/// A run from `cursor`, anchored or not.
fn paginator(spec: &StreamSpec, cursor: Option<&Value>, anchored: bool) -> Box<dyn Paginator> {
    let placed = Placed::of(&spec.request);
    let cfg = offset_cfg(spec);
    Box::new(match anchored {
        true => Offset::new(cfg, &placed, cursor).unwrap(),
        false => Offset::unanchored(cfg, &placed, cursor).unwrap(),
    })
}

fn cursor_value(cursor: CursorWrite, before: Option<Value>) -> Option<Value> {
    match cursor {
        CursorWrite::Set(value) => Some(value),
        CursorWrite::Keep => before,
        CursorWrite::Clear => None,
    }
}

/// A first run with `change` during it, then two quiet incremental runs: the mirror
/// afterwards, and the listing's truth.
fn three_runs(
    numbered: bool,
    order: Order,
    anchored: bool,
    change: impl FnMut(usize, &mut Listing),
) -> (BTreeMap<u32, u32>, BTreeMap<u32, u32>) {
    let spec = offset_spec(numbered);
    let mut listing = Listing::new(10, order);
    let mut mirror = BTreeMap::new();
    let (cursor, _) = run(
        paginator(&spec, None, anchored),
        &mut listing,
        &mut mirror,
        change,
    );
    let mut cursor = cursor_value(cursor, None);
    for _ in 0..2 {
        let (next, _) = run(
            paginator(&spec, cursor.as_ref(), anchored),
            &mut listing,
            &mut mirror,
            |_, _| {},
        );
        cursor = cursor_value(next, cursor);
    }
    (mirror, listing.truth())
}

/// A row already read is updated between two page requests and moves to the end of the
/// `updatedAt`-ordered listing: the row after it slides onto the page already read.
/// Without anchors it is never read, and the high-water (the moved row's new time)
/// passes it for good; with anchors the run steps back and reads it.
#[test]
fn a_row_moved_by_an_update_is_lost_without_anchors_and_not_with_them() {
    let move_first = |n: usize, l: &mut Listing| {
        if n == 2 {
            l.update(1, T0 + 100);
        }
    };
    for numbered in [false, true] {
        let (mirror, truth) = three_runs(numbered, Order::Updated, false, move_first);
        assert!(!mirror.contains_key(&3), "numbered {numbered}: {mirror:?}");
        assert_ne!(mirror, truth);
        let (mirror, truth) = three_runs(numbered, Order::Updated, true, move_first);
        assert_eq!(mirror, truth, "numbered {numbered}");
    }
}

/// Rows already read are updated and move to the end, where the next page finds one of
/// them: by its key alone it would pass for the anchor found further on (rows inserted
/// before it), and the row it passed (3, older than the high-water) would be skipped for
/// good. Changed, it is no anchor: the run steps back and reads 3.
#[test]
fn a_row_that_moved_to_the_end_is_no_anchor() {
    let spec = offset_spec(false);
    let mut listing = Listing::new(4, Order::Updated);
    let mut mirror = BTreeMap::new();
    let (cursor, paginator) = run(
        paginator(&spec, None, true),
        &mut listing,
        &mut mirror,
        |n, l| {
            if n == 2 {
                l.update(1, T0 + 100);
                l.update(2, T0 + 101);
            }
        },
    );
    assert_eq!(mirror, listing.truth());
    assert!(paginator.shifts().step_backs > 0);
    assert_eq!(
        cursor,
        CursorWrite::Set(json!({"high_water": time(T0 + 101)}))
    );
}

/// A row before the offset is hard-deleted between two page requests of an id-ordered
/// listing: the same loss without anchors, none with them.
#[test]
fn a_row_deleted_before_the_offset_is_lost_without_anchors_and_not_with_them() {
    let delete_first = |n: usize, l: &mut Listing| {
        if n == 2 {
            l.delete(1);
        }
    };
    for numbered in [false, true] {
        let (mirror, truth) = three_runs(numbered, Order::Id, false, delete_first);
        let lost: Vec<&u32> = truth.keys().filter(|k| !mirror.contains_key(k)).collect();
        assert_eq!(lost, [&3], "numbered {numbered}");
        let (mut mirror, truth) = three_runs(numbered, Order::Id, true, delete_first);
        // The deleted row stays in the mirror (a hard delete is a reconcile's to find).
        mirror.remove(&1);
        assert_eq!(mirror, truth, "numbered {numbered}");
    }
}

/// A shift the run cannot repair (many rows vanish far from the start): it reads on to
/// the end and keeps its old high-water, so the next run reads again from there.
#[test]
fn a_shift_that_cannot_be_repaired_keeps_the_old_high_water() {
    let spec = offset_spec(false);
    let mut listing = Listing::new(200, Order::Id);
    let mut mirror = BTreeMap::new();
    let stored = json!({"high_water": "2024-01-01T00:00:00Z"});
    let (cursor, paginator) = run(
        paginator(&spec, Some(&stored), true),
        &mut listing,
        &mut mirror,
        |n, l| {
            if n == 50 {
                for id in 1..=40 {
                    l.delete(id);
                }
            }
        },
    );
    assert_eq!(paginator.shifts().shifted, 1);
    assert_eq!(cursor, CursorWrite::Keep);
}

/// Request economy: a listing of `k` changes in pages of `limit` takes
/// `ceil((k - 1) / (limit - 1)) + 1` requests at most with overlapping offsets, and a
/// quiet run one or two.
#[test]
fn anchored_offsets_cost_one_row_a_page() {
    let spec: StreamSpec = serde_json::from_value(json!({"name": "s",
        "request": {"path": "/items"},
        "records": {"path": "", "key": "/id", "updated_at": "/updatedAt"},
        "pagination": {"type": "offset", "limit": 100,
            "since": {"param": "modified_since", "initial": "2024-01-01T00:00:00Z"}}}))
    .unwrap();
    for k in [1u32, 99, 100, 101, 250, 1000] {
        let mut listing = Listing::new(k, Order::Updated);
        let (_, _) = run(
            paginator(&spec, None, true),
            &mut listing,
            &mut BTreeMap::new(),
            |_, _| {},
        );
        let bound = (u64::from(k).saturating_sub(1)).div_ceil(99) + 1;
        assert!(
            listing.requests as u64 <= bound,
            "{k} records: {} requests",
            listing.requests
        );
        assert!(listing.requests as u64 <= u64::from(k).div_ceil(100) + 1);
    }
}

/// Seek mode on offsets: each query asks from the last record's value, the offset
/// counting only its records of that value already read (less the overlap row).
#[test]
fn seek_mode_asks_each_query_from_the_last_records_value() {
    let spec: StreamSpec = serde_json::from_value(json!({"name": "s",
        "request": {"path": "/items"},
        "records": {"path": "", "key": "/id", "updated_at": "/updatedAt"},
        "pagination": {"type": "offset", "limit": 3,
            "since": {"param": "modified_since", "initial": "2024-01-01T00:00:00Z",
                      "order": "since", "lookback_seconds": 0}}}))
    .unwrap();
    let mut listing = Listing::new(10, Order::Updated);
    // 2, 3 and 4 share one second: the tie the offset counts in.
    for id in [2, 3, 4] {
        listing.rows[id - 1].at = T0 + 3;
    }
    let mut s = Strategy::new(&spec.pagination, &spec.request, None).unwrap();
    let mut asked = Vec::new();
    let mut read = Vec::new();
    loop {
        let ask = s.ask();
        asked.push(
            ask.query
                .iter()
                .filter(|(k, _)| k != "limit")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
        );
        let page = listing.answer(&ask);
        read.extend(page.records.iter().map(|r| r.key.clone()));
        if s.advance(&page, &meta()).unwrap().done {
            break;
        }
    }
    assert_eq!(
        asked,
        [
            "modified_since=2024-01-01T00:00:00Z&offset=0",
            // 1, 2, 3: the tie at :03 holds 2 and 3; 3 is the anchor.
            "modified_since=2024-01-20T10:00:03Z&offset=1",
            // 3, 4, 5: on from 5.
            "modified_since=2024-01-20T10:00:05Z&offset=0",
            "modified_since=2024-01-20T10:00:07Z&offset=0",
            "modified_since=2024-01-20T10:00:09Z&offset=0",
        ]
    );
    for id in 1..=10 {
        assert!(read.contains(&id.to_string()), "{id}: {read:?}");
    }
}

/// A stream's cursor, as `Strategy` and the test pages see it.
fn link_page(rows: &[(&str, &str)]) -> Page {
    Page {
        records: rows
            .iter()
            .map(|(id, at)| Item {
                key: (*id).to_owned(),
                key_value: json!(id),
                text: json!({"id": id, "updated_at": at}).to_string(),
                updated: Some(json!(at)),
                deleted: false,
            })
            .collect(),
        ..Page::default()
    }
}

fn link_meta(next: Option<&str>) -> ReplyMeta {
    ReplyMeta {
        link_next: next.map(|n| Url::parse(n).unwrap()),
        ..meta()
    }
}

fn spec_of(pagination: Value, request: Value) -> StreamSpec {
    serde_json::from_value(json!({"name": "s", "request": request,
        "records": {"path": "", "key": "/id", "updated_at": "/updated_at"},
        "pagination": pagination}))
    .unwrap()
}

/// GitHub's page-numbered Link listings with a since filter: seek mode asks for the
/// listing again from the last record's value instead of following the next link, which
/// it follows only within a tie; a page without one ends the run.
#[test]
fn seek_mode_on_link_restarts_the_listing_at_the_last_records_value() {
    let spec = spec_of(
        json!({"type": "link", "limit_param": "per_page", "limit": 2,
            "since": {"param": "since", "initial": "2024-01-01T00:00:00Z", "order": "since"}}),
        json!({"path": "/issues", "query": {"sort": "updated", "direction": "asc"}}),
    );
    let mut s = Strategy::new(&spec.pagination, &spec.request, None).unwrap();
    let since = |s: &Strategy| {
        let ask = s.ask();
        assert!(ask.url.is_none(), "a new query from the template: {ask:?}");
        ask.query
            .iter()
            .find(|(k, _)| k == "since")
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(since(&s), "2024-01-01T00:00:00Z");
    let page2 = "http://127.0.0.1:9/issues?page=2";
    let step = s
        .advance(
            &link_page(&[("1", "2024-01-20T10:00:01Z"), ("2", "2024-01-20T10:00:02Z")]),
            &link_meta(Some(page2)),
        )
        .unwrap();
    assert!(!step.done);
    assert_eq!(step.cursor, CursorWrite::Keep);
    assert_eq!(since(&s), "2024-01-20T10:00:02Z");
    // 2 again, then 3 and 4 of one second: a tie, whose next page the next link holds.
    s.advance(
        &link_page(&[("2", "2024-01-20T10:00:02Z"), ("3", "2024-01-20T10:00:05Z")]),
        &link_meta(Some(page2)),
    )
    .unwrap();
    assert_eq!(since(&s), "2024-01-20T10:00:05Z");
    s.advance(
        &link_page(&[("3", "2024-01-20T10:00:05Z"), ("4", "2024-01-20T10:00:05Z")]),
        &link_meta(Some(page2)),
    )
    .unwrap();
    assert_eq!(s.ask().url.unwrap().as_str(), page2);
    // Past a tie read over two pages: it is read again from its value, since records
    // that left it while it was read would have shifted rows onto pages already read.
    let step = s
        .advance(
            &link_page(&[("5", "2024-01-20T10:00:06Z")]),
            &link_meta(None),
        )
        .unwrap();
    assert!(!step.done);
    assert_eq!(since(&s), "2024-01-20T10:00:05Z");
    s.advance(
        &link_page(&[("3", "2024-01-20T10:00:05Z"), ("4", "2024-01-20T10:00:05Z")]),
        &link_meta(Some(page2)),
    )
    .unwrap();
    assert_eq!(s.ask().url.unwrap().as_str(), page2);
    // The same records as the pass before: the listing is asked for afresh from just
    // after the tie (the next second), and a page without a next link ends the run.
    s.advance(
        &link_page(&[("5", "2024-01-20T10:00:06Z")]),
        &link_meta(None),
    )
    .unwrap();
    assert_eq!(since(&s), "2024-01-20T10:00:06Z");
    let step = s
        .advance(
            &link_page(&[("5", "2024-01-20T10:00:06Z")]),
            &link_meta(None),
        )
        .unwrap();
    assert!(step.done);
    assert_eq!(
        s.finish(),
        CursorWrite::Set(json!({"high_water": "2024-01-20T10:00:06Z"}))
    );
}

/// A tie read over several pages loses records to a shift while it is read (one leaves
/// it, the row behind slides onto a page already read): the pass after lists it.
#[test]
fn seek_mode_reads_a_tie_again_until_two_passes_agree() {
    let spec = spec_of(
        json!({"type": "link", "limit_param": "per_page", "limit": 2,
            "since": {"param": "since", "initial": "2024-01-20T10:00:05Z", "order": "since"}}),
        json!({"path": "/issues"}),
    );
    let mut s = Strategy::new(&spec.pagination, &spec.request, None).unwrap();
    let page2 = "http://127.0.0.1:9/issues?page=2";
    let tie = "2024-01-20T10:00:05Z";
    let read = |s: &mut Strategy, rows: &[(&str, &str)], next: Option<&str>| {
        let step = s.advance(&link_page(rows), &link_meta(next)).unwrap();
        assert!(!step.done, "{rows:?}");
        s.ask()
    };
    // Pass 1: 1 and 2, then 1 left the tie (updated): page 2 lists 4 and 5, 3 slid away.
    read(&mut s, &[("1", tie), ("2", tie)], Some(page2));
    let ask = read(
        &mut s,
        &[("4", tie), ("5", "2024-01-20T10:00:09Z")],
        Some(page2),
    );
    assert!(ask.url.is_none());
    // Pass 2 lists 2, 3, 4 (other records than pass 1: 3 is new, 1 is gone).
    read(&mut s, &[("2", tie), ("3", tie)], Some(page2));
    let ask = read(&mut s, &[("4", tie), ("5", "2024-01-20T10:00:09Z")], None);
    assert_eq!(ask.query[0], ("since".to_owned(), tie.to_owned()));
    // Pass 3 agrees with pass 2: on from just after the tie.
    read(&mut s, &[("2", tie), ("3", tie)], Some(page2));
    let ask = read(&mut s, &[("4", tie), ("1", "2024-01-20T10:00:09Z")], None);
    assert_eq!(
        ask.query[0],
        ("since".to_owned(), "2024-01-20T10:00:06Z".to_owned())
    );
}

/// HubSpot's search in seek mode: each page that ends past its query's value starts a new
/// query from its last record's value, without a token (so no query comes near the
/// 10,000 cap); the token is followed only within a tie, which cannot be read past the
/// cap. Pages commit no token.
#[test]
fn seek_mode_on_a_token_stream_starts_a_new_query_at_every_page() {
    let spec = spec_of(
        json!({"type": "token", "until": "/paging/next/after", "limit": 2, "resume": "restart",
            "since": {"format": "unix_ms", "initial": "0", "lookback_seconds": 0,
                      "order": "since", "max_results": 4}}),
        json!({"method": "POST", "path": "/search",
            "body": {"filters": [{"value": "{{since}}"}], "after": "{{cursor}}", "limit": "{{limit}}"}}),
    );
    let mut s = Strategy::new(&spec.pagination, &spec.request, None).unwrap();
    let body = |s: &Strategy| s.ask().values;
    let with_next = |rows: &[(&str, &str)], after: &str| {
        let mut page = link_page(rows);
        page.values
            .insert("/paging/next/after".into(), json!(after));
        page
    };
    assert_eq!(body(&s).since, Some(json!(0)));
    let step = s
        .advance(
            &with_next(
                &[
                    ("1", "2024-01-20T10:00:01.000Z"),
                    ("2", "2024-01-20T10:00:02.000Z"),
                ],
                "2",
            ),
            &meta(),
        )
        .unwrap();
    // A new query from 2's time, no token; an interrupted run would start again from the
    // high-water it started from (none).
    assert!(!step.done);
    assert_eq!(step.cursor, CursorWrite::Clear);
    assert_eq!(body(&s).since, Some(json!(1_705_744_802_000_i64)));
    assert_eq!(body(&s).cursor, None);
    // A page of one value: its token, within the query.
    s.advance(
        &with_next(
            &[
                ("2", "2024-01-20T10:00:02.000Z"),
                ("3", "2024-01-20T10:00:02.000Z"),
            ],
            "2",
        ),
        &meta(),
    )
    .unwrap();
    assert_eq!(body(&s).since, Some(json!(1_705_744_802_000_i64)));
    assert_eq!(body(&s).cursor, Some(json!("2")));
    // A query of one value throughout cannot be read past its cap.
    assert!(matches!(
        s.advance(
            &with_next(
                &[
                    ("4", "2024-01-20T10:00:02.000Z"),
                    ("5", "2024-01-20T10:00:02.000Z")
                ],
                "4",
            ),
            &meta(),
        ),
        Err(StrategyError::Stuck(_))
    ));
}
