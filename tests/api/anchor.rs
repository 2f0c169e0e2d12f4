//! Offset paging that never skips a row (docs/design.md §4), end to end: anchored offsets
//! and page numbers against a small listing that changes between two page requests, a
//! shift the run cannot repair, the clamping page-number API of every size, request
//! economy, seek mode (`since.order: "since"`) on the sandbox's GitHub and clamp
//! dialects under churn, HubSpot's cap of 10,000 results a query read past by
//! `since.max_results`, and the 422s of the new fields. (That the same changes are lost
//! without anchors is shown on the same listings in `src/paginate/shift_tests.rs`, where
//! the walk can be built unanchored.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Json};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{Sandbox, TestApp, assert_problem, sandbox, spawn, spawn_syncing};

async fn register(app: &TestApp, source: &Value) {
    let response = app.post("/v1/sources", source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

fn stat(job: &Value, name: &str) -> u64 {
    job["stats"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: {job:#}"))
}

/// A source of one stream named `name`.
fn source(base: &str, name: &str, stream: Value) -> Value {
    let mut stream = stream;
    stream["name"] = json!(name);
    json!({
        "name": name,
        "base_url": base,
        "retry": {"max_attempts": 2, "initial_backoff_ms": 10, "max_backoff_ms": 20},
        "streams": [stream]
    })
}

async fn cursor(app: &TestApp, name: &str) -> Value {
    app.get_json(&format!("/v1/sources/{name}/streams/{name}/cursor"))
        .await["cursor"]
        .clone()
}

/// 2024-01-20T10:00:00Z.
const T0: i64 = 1_705_744_800;

fn time(at: i64) -> String {
    DateTime::<Utc>::from_timestamp(at, 0)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, Copy)]
struct Row {
    id: u32,
    at: i64,
    v: u32,
}

type Hook = Box<dyn FnMut(usize, &mut Vec<Row>) + Send>;

/// A listing `GET /items?modified_since=&offset=|page=&limit=`, sorted by `updatedAt`
/// (or by id), inclusive on the time; `hook` changes it before the `n`th request.
struct Listing {
    rows: Vec<Row>,
    by_id: bool,
    requests: usize,
    hook: Hook,
}

type Shared = Arc<Mutex<Listing>>;

#[derive(serde::Deserialize)]
struct Params {
    modified_since: Option<String>,
    offset: Option<usize>,
    page: Option<usize>,
    limit: usize,
}

async fn items(State(listing): State<Shared>, Query(params): Query<Params>) -> impl IntoResponse {
    let mut listing = listing.lock().unwrap();
    listing.requests += 1;
    let n = listing.requests;
    let Listing { rows, hook, .. } = &mut *listing;
    hook(n, rows);
    let mut rows = listing.rows.clone();
    if listing.by_id {
        rows.sort_by_key(|r| r.id);
    } else {
        rows.sort_by_key(|r| (r.at, r.id));
    }
    let since = params
        .modified_since
        .map(|s| s.parse::<DateTime<Utc>>().unwrap().timestamp());
    let skip = match (params.offset, params.page) {
        (Some(offset), _) => offset,
        (None, Some(page)) => (page - 1) * params.limit,
        (None, None) => 0,
    };
    let page: Vec<Value> = rows
        .iter()
        .filter(|r| since.is_none_or(|s| r.at >= s))
        .skip(skip)
        .take(params.limit)
        .map(|r| json!({"id": r.id, "updatedAt": time(r.at), "v": r.v}))
        .collect();
    Json(json!({ "items": page }))
}

/// Starts a listing of `count` rows, updated at T0 + id seconds.
async fn listing(count: u32, by_id: bool, hook: Hook) -> (String, Shared) {
    let shared = Arc::new(Mutex::new(Listing {
        rows: (1..=count)
            .map(|id| Row {
                id,
                at: T0 + i64::from(id),
                v: 0,
            })
            .collect(),
        by_id,
        requests: 0,
        hook,
    }));
    let router = axum::Router::new()
        .route("/items", axum::routing::get(items))
        .with_state(shared.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, shared)
}

fn truth(listing: &Shared) -> BTreeMap<String, u32> {
    listing
        .lock()
        .unwrap()
        .rows
        .iter()
        .map(|r| (r.id.to_string(), r.v))
        .collect()
}

async fn mirrored(app: &TestApp, name: &str) -> BTreeMap<String, u32> {
    app.mirror(name, name)
        .await
        .into_iter()
        .map(|(k, text)| {
            let record: Value = serde_json::from_str(&text).unwrap();
            (k, u32::try_from(record["v"].as_u64().unwrap()).unwrap())
        })
        .collect()
}

fn offset_stream(numbered: bool) -> Value {
    let mut pagination = json!({"type": "offset", "limit": 2,
        "since": {"param": "modified_since", "initial": "2024-01-01T00:00:00Z"}});
    if numbered {
        pagination["page_param"] = json!("page");
    }
    json!({"request": {"path": "/items"},
           "records": {"path": "/items", "key": "/id", "updated_at": "/updatedAt"},
           "pagination": pagination})
}

/// 10 rows, pages of 2, `updatedAt` order: row 1, already read, is updated before the
/// third request and moves to the end; the row after it slides onto the page read. The
/// run finds its anchor missing, steps back and reads it; a second run adds nothing.
#[tokio::test]
async fn a_row_moved_by_an_update_mid_run_is_not_skipped() {
    let app = spawn_syncing().await;
    for numbered in [false, true] {
        let name = if numbered { "moved-pages" } else { "moved" };
        let (base, shared) = listing(
            10,
            false,
            Box::new(|n, rows| {
                if n == 3 {
                    rows[0].at = T0 + 100;
                    rows[0].v += 1;
                }
            }),
        )
        .await;
        register(&app, &source(&base, name, offset_stream(numbered))).await;
        let job = app.sync_ok(name, name, "incremental").await;
        // Offsets step back to find the anchor; page numbers find the row that slid on
        // the check of the page before, which lists it after the anchor.
        assert_eq!(stat(&job, "step_backs") >= 1, !numbered, "{job:#}");
        assert_eq!(stat(&job, "shifted"), 0, "{job:#}");
        assert_eq!(mirrored(&app, name).await, truth(&shared), "{name}");
        // The high-water is the moved row's new time: nothing older is left unread.
        assert_eq!(
            cursor(&app, name).await,
            json!({"high_water": time(T0 + 100)})
        );
        let job = app.sync_ok(name, name, "incremental").await;
        assert_eq!(stat(&job, "inserted") + stat(&job, "updated"), 0);
    }
}

/// 10 rows in id order, pages of 2: row 1 is hard-deleted before the third request, so
/// every row after it slides back by one. Nothing is skipped; a reconcile then removes
/// the deleted row, and the mirror is the truth.
#[tokio::test]
async fn a_row_deleted_before_the_offset_mid_run_is_not_skipped() {
    let app = spawn_syncing().await;
    for numbered in [false, true] {
        let name = if numbered { "deleted-pages" } else { "deleted" };
        let (base, shared) = listing(
            10,
            true,
            Box::new(|n, rows| {
                if n == 3 {
                    rows.remove(0);
                }
            }),
        )
        .await;
        register(&app, &source(&base, name, offset_stream(numbered))).await;
        let job = app.sync_ok(name, name, "incremental").await;
        assert_eq!(stat(&job, "step_backs") >= 1, !numbered, "{job:#}");
        assert_eq!(stat(&job, "shifted"), 0);
        assert_eq!(stat(&job, "inserted"), 10);
        app.sync_ok(name, name, "reconcile").await;
        assert_eq!(mirrored(&app, name).await, truth(&shared), "{name}");
    }
}

/// 40 rows vanish at once, far from the start of the listing: the steps back (bounded)
/// find no anchor. The run reads on to the end, succeeds, says `shifted`, and keeps the
/// high-water it started from, so the next run reads again from there.
#[tokio::test]
async fn a_shift_the_run_cannot_repair_keeps_the_old_high_water() {
    let app = spawn_syncing().await;
    let (base, _shared) = listing(
        200,
        true,
        Box::new(|n, rows| {
            if n == 50 {
                rows.drain(..40);
            }
        }),
    )
    .await;
    register(&app, &source(&base, "vanish", offset_stream(false))).await;
    let before = json!({"cursor": {"high_water": "2024-01-01T00:00:00Z"}});
    let response = app
        .put("/v1/sources/vanish/streams/vanish/cursor", &before)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let job = app.sync_ok("vanish", "vanish", "incremental").await;
    assert_eq!(stat(&job, "shifted"), 1, "{job:#}");
    assert_eq!(stat(&job, "step_backs"), 8, "{job:#}");
    assert_eq!(cursor(&app, "vanish").await, before["cursor"]);
}

/// The clamp dialect as a page-number stream: the run ends cleanly whatever the data
/// set's size (whole pages, where a page past the end is the last page again, and not),
/// with `next_page` or without it.
#[tokio::test]
async fn the_clamping_api_ends_its_run_cleanly_at_every_size() {
    let app = spawn_syncing().await;
    for size in [1usize, 9, 10, 20, 37, 40] {
        let upstream = sandbox(41, size).await;
        for next_page in [false, true] {
            let name = format!("clamp-{size}-{next_page}");
            let mut pagination = json!({"type": "offset", "page_param": "page",
                "limit_param": "per_page", "limit": 10,
                "since": {"param": "modified_since", "initial": "2000-01-01T00:00:00Z"}});
            if next_page {
                pagination["next_page"] = json!("/next");
            }
            let stream = json!({"request": {"path": "/clamp/things"},
                "records": {"path": "/things", "key": "/id", "updated_at": "/modified_at"},
                "pagination": pagination});
            register(&app, &source(&upstream.base, &name, stream)).await;
            for _ in 0..3 {
                let job = app.sync_ok(&name, &name, "incremental").await;
                assert_eq!(stat(&job, "shifted"), 0, "{name}: {job:#}");
            }
            assert_eq!(
                app.mirror(&name, &name).await,
                upstream.truth("clamp").await,
                "{name}"
            );
        }
    }
}

/// The clamp dialect under churn (updates move things to the end, deletes are hard):
/// anchored page numbers, and seek mode, converge on the truth.
#[tokio::test]
async fn the_clamping_api_converges_under_churn_anchored_and_in_seek_mode() {
    let app = spawn_syncing().await;
    let upstream = sandbox(42, 95).await;
    let stream = |seek: bool| {
        let mut since = json!({"param": "modified_since", "initial": "2000-01-01T00:00:00Z"});
        if seek {
            since["order"] = json!("since");
        }
        json!({"request": {"path": "/clamp/things"},
            "records": {"path": "/things", "key": "/id", "updated_at": "/modified_at"},
            "pagination": {"type": "offset", "page_param": "page", "limit_param": "per_page",
                           "limit": 10, "next_page": "/next", "since": since}})
    };
    register(&app, &source(&upstream.base, "anchored", stream(false))).await;
    register(&app, &source(&upstream.base, "seek", stream(true))).await;
    let churn = churning(&upstream, "clamp");
    for _ in 0..5 {
        app.sync_ok("anchored", "anchored", "incremental").await;
        app.sync_ok("seek", "seek", "incremental").await;
    }
    churn.stop().await;
    for name in ["anchored", "seek"] {
        app.sync_ok(name, name, "incremental").await;
        app.sync_ok(name, name, "reconcile").await;
        assert_eq!(
            app.mirror(name, name).await,
            upstream.truth("clamp").await,
            "{name}"
        );
    }
}

/// Churn in the background: updates, creates and hard deletes, and now and then a mass
/// update on one timestamp, until stopped. One operation every 20 ms: a run over a listing
/// sorted by update time ends only once it reads to the listing's end, and churn that
/// moves rows to the end faster than a run reads them (a few hundred a second, against a
/// run on PostgreSQL in pages of 10) would keep it reading for ever; a run that finished
/// then did so by skipping rows.
struct Churn {
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

fn churning(upstream: &Sandbox, dialect: &'static str) -> Churn {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let base = upstream.base.clone();
    let done = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for round in 0u32.. {
            let (what, count) = match round % 7 {
                0 | 3 | 5 => ("update", 3),
                1 | 4 => ("create", 2),
                2 => ("delete", 1),
                _ => ("mass_update", 4),
            };
            let response = client
                .post(format!("{base}/_control/{dialect}/{what}"))
                .json(&json!({ "count": count }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{dialect}/{what}");
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    Churn { stop, done }
}

impl Churn {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.done.await.unwrap();
    }
}

/// Request economy on the sandbox's offset style: an idle incremental makes at most 2
/// requests; one after `k` changes at most `ceil(k / page) + 1`, plus the step backs it
/// counts.
#[tokio::test]
async fn anchored_offsets_keep_request_economy() {
    let app = spawn_syncing().await;
    let upstream = sandbox(43, 300).await;
    let stream = json!({
        "request": {"path": "/reqon/items", "query": {"includeDeleted": "true"}},
        "records": {"path": "/items", "key": "/id", "updated_at": "/updatedAt",
                    "deleted": {"pointer": "/deleted", "equals": true}},
        "pagination": {"type": "offset", "limit": 20,
                       "since": {"param": "modified_since", "format": "iso8601"}}
    });
    register(&app, &source(&upstream.base, "items", stream)).await;
    app.sync_ok("items", "items", "incremental").await;
    let idle = app.sync_ok("items", "items", "incremental").await;
    assert!(stat(&idle, "requests") <= 2, "{idle:#}");
    for k in [1u64, 19, 20, 45, 100] {
        upstream
            .control("offset/update", json!({ "count": k }))
            .await;
        let job = app.sync_ok("items", "items", "incremental").await;
        let bound = k.div_ceil(20) + 1 + stat(&job, "step_backs");
        assert!(
            stat(&job, "requests") <= bound,
            "{k} changes: {} requests, at most {bound}: {job:#}",
            stat(&job, "requests")
        );
        assert_eq!(stat(&job, "updated"), k, "{job:#}");
        let idle = app.sync_ok("items", "items", "incremental").await;
        assert!(stat(&idle, "requests") <= 2, "{idle:#}");
    }
    assert_eq!(
        app.mirror("items", "items").await,
        upstream.truth("offset").await
    );
}

/// Seek mode on a page-number API needs no checks: the clamp dialect read from each
/// page's last value costs what plain offsets would.
#[tokio::test]
async fn seek_mode_keeps_request_economy_on_page_numbers() {
    let app = spawn_syncing().await;
    let upstream = sandbox(44, 200).await;
    let stream = json!({"request": {"path": "/clamp/things"},
        "records": {"path": "/things", "key": "/id", "updated_at": "/modified_at"},
        "pagination": {"type": "offset", "page_param": "page", "limit_param": "per_page",
                       "limit": 20, "next_page": "/next",
                       "since": {"param": "modified_since", "initial": "2000-01-01T00:00:00Z",
                                 "order": "since"}}});
    register(&app, &source(&upstream.base, "things", stream)).await;
    app.sync_ok("things", "things", "incremental").await;
    let idle = app.sync_ok("things", "things", "incremental").await;
    assert!(stat(&idle, "requests") <= 2, "{idle:#}");
    for k in [1u64, 19, 45] {
        upstream
            .control("clamp/update", json!({ "count": k }))
            .await;
        let job = app.sync_ok("things", "things", "incremental").await;
        let bound = k.div_ceil(20) + 1 + stat(&job, "step_backs");
        assert!(stat(&job, "requests") <= bound, "{k} changes: {job:#}");
        assert_eq!(stat(&job, "updated"), k, "{job:#}");
    }
    assert_eq!(
        app.mirror("things", "things").await,
        upstream.truth("clamp").await
    );
}

/// GitHub's issue list: page-numbered `Link` pages that shift as issues change, read
/// with a since filter in seek mode, converge under churn.
#[tokio::test]
async fn seek_mode_on_githubs_link_pages_converges_under_churn() {
    let app = spawn_syncing().await;
    let upstream = sandbox(45, 250).await;
    let stream = json!({
        "request": {"path": "/github/repos/tidemark/sandbox/issues",
                    "query": {"state": "all", "sort": "updated", "direction": "asc"}},
        "records": {"path": "", "key": "/id", "updated_at": "/updated_at"},
        "pagination": {"type": "link", "limit_param": "per_page", "limit": 30,
                       "since": {"param": "since", "order": "since",
                                 "initial": "2000-01-01T00:00:00Z"}}
    });
    register(&app, &source(&upstream.base, "issues", stream)).await;
    let first = app.sync_ok("issues", "issues", "incremental").await;
    assert_eq!(stat(&first, "inserted"), 250);
    let churn = churning(&upstream, "github");
    for _ in 0..5 {
        app.sync_ok("issues", "issues", "incremental").await;
    }
    churn.stop().await;
    app.sync_ok("issues", "issues", "incremental").await;
    let idle = app.sync_ok("issues", "issues", "incremental").await;
    assert!(stat(&idle, "requests") <= 2, "{idle:#}");
    app.sync_ok("issues", "issues", "reconcile").await;
    assert_eq!(
        app.mirror("issues", "issues").await,
        upstream.truth("github").await
    );
}

/// HubSpot's search answers the first 10,000 results of a query only (`after` at 10,000
/// is a 400): with `max_results` the run starts a new query from the newest
/// `lastmodifieddate` read and reads every one of more than 10,000 contacts.
#[tokio::test]
async fn hubspots_cap_is_read_past_by_a_new_query() {
    let app = spawn_syncing().await;
    let upstream = sandbox(46, 10_450).await;
    let stream = |max_results: bool| {
        let mut since = json!({"format": "unix_ms", "initial": "0", "order": "since"});
        if max_results {
            since["max_results"] = json!(10_000);
        } else {
            since.as_object_mut().unwrap().remove("order");
        }
        json!({
            "request": {"method": "POST", "path": "/hubspot/crm/v3/objects/contacts/search",
                "body": {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate",
                             "operator": "GTE", "value": "{{since}}"}]}],
                         "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                         "limit": "{{limit}}", "after": "{{cursor}}"}},
            "records": {"path": "/results", "key": "/id", "updated_at": "/updatedAt"},
            "pagination": {"type": "token", "until": "/paging/next/after", "limit": 200,
                           "resume": "restart", "since": since}
        })
    };
    register(&app, &source(&upstream.base, "contacts", stream(true))).await;
    let job = app.sync_ok("contacts", "contacts", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 10_450, "{job:#}");
    // 50 pages reach the cap; the new query lists the last value read again and the
    // 450 after it: 53 requests, and none of them refused.
    assert!(
        stat(&job, "requests") <= 10_450u64.div_ceil(200) + 2,
        "{job:#}"
    );
    let refused = upstream
        .requests()
        .await
        .iter()
        .filter(|r| r["status"] != 200)
        .count();
    assert_eq!(refused, 0);
    let truth = upstream.truth("hubspot").await;
    assert_eq!(app.mirror("contacts", "contacts").await, truth);
    let idle = app.sync_ok("contacts", "contacts", "incremental").await;
    assert!(stat(&idle, "requests") <= 2, "{idle:#}");

    // Without it the run meets the cap's 400 and fails (never a silent stop).
    register(&app, &source(&upstream.base, "capped", stream(false))).await;
    let job = app.sync("capped", "capped", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
}

/// The new fields' misuse is refused with 422 and its pointer.
#[tokio::test]
async fn misused_seek_and_cap_fields_are_refused_with_their_pointer() {
    let app = spawn().await;
    let p = "/streams/0/pagination";
    let spec = |pagination: Value| {
        json!({"name": "bad", "base_url": "http://127.0.0.1:9000",
               "streams": [{"name": "s", "request": {"path": "/x", "query": {"a": "{{since}}"}},
                            "records": {"path": "/data", "key": "/id", "updated_at": "/updated_at"},
                            "pagination": pagination}]})
    };
    let cases = [
        (
            "max_results without order",
            json!({"type": "offset", "since": {"max_results": 100}}),
            format!("{p}/since/max_results"),
        ),
        (
            "max_results on a single request",
            json!({"type": "none", "since": {"order": "since", "max_results": 100}}),
            format!("{p}/since/max_results"),
        ),
        (
            "max_results on a position stream",
            json!({"type": "position", "since": {"order": "since", "max_results": 100}}),
            format!("{p}/since/max_results"),
        ),
        (
            "max_results below the page size",
            json!({"type": "offset", "limit": 100, "since": {"order": "since", "max_results": 50}}),
            format!("{p}/since/max_results"),
        ),
        (
            "max_results zero",
            json!({"type": "offset", "since": {"order": "since", "max_results": 0}}),
            format!("{p}/since/max_results"),
        ),
        (
            "seek mode on a token stream resuming at its last page",
            json!({"type": "token", "until": "/next", "since": {"order": "since"}}),
            format!("{p}/resume"),
        ),
        (
            "seek mode on a position stream",
            json!({"type": "position", "since": {"order": "since"}}),
            format!("{p}/since/order"),
        ),
        (
            "a capped link stream resuming at its last page",
            json!({"type": "link", "resume": "last_page",
                   "since": {"param": "since", "order": "since", "max_results": 1000}}),
            format!("{p}/resume"),
        ),
        (
            "a capped token stream resuming at its last page",
            json!({"type": "token", "until": "/next",
                   "since": {"order": "since", "max_results": 1000}}),
            format!("{p}/resume"),
        ),
    ];
    for (what, pagination, pointer) in cases {
        let problem = assert_problem(
            app.post("/v1/sources", &spec(pagination)).await,
            422,
            "invalid-spec",
        )
        .await;
        assert_eq!(problem["pointer"], pointer, "{what}: {problem}");
    }
    // What is valid: seek mode on a restarting token stream, and a cap on offset, link
    // and token streams in seek mode.
    let response = app
        .post(
            "/v1/sources",
            &json!({"name": "ok-seek",
                    "base_url": "http://127.0.0.1:9000",
                    "streams": [{"name": "s", "request": {"path": "/x", "query": {"a": "{{since}}"}},
                                 "records": {"path": "/data", "key": "/id", "updated_at": "/updated_at"},
                                 "pagination": {"type": "token", "until": "/next", "resume": "restart",
                                                "since": {"order": "since"}}}]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    for pagination in [
        json!({"type": "offset", "since": {"order": "since", "max_results": 10000}}),
        json!({"type": "link", "since": {"order": "since", "max_results": 10000}}),
        json!({"type": "token", "until": "/next", "resume": "restart",
               "since": {"order": "since", "max_results": 10000}}),
    ] {
        let mut source = spec(pagination.clone());
        source["name"] = json!(format!("ok-{}", pagination["type"].as_str().unwrap()));
        let response = app.post("/v1/sources", &source).await;
        assert_eq!(response.status(), 201, "{pagination}");
        let stored: Value = response.json().await.unwrap();
        assert_eq!(
            stored["streams"][0]["pagination"]["since"]["max_results"],
            10000
        );
    }
}
