//! The composable pieces of docs/design.md §4a syncing end to end: on the sandbox's
//! styles where they fit (a since filter with `resume: "last_page"` on link paging, a
//! Stripe-like `last_record` token on the same listing, the offset high-water rule), and
//! on small hand-written upstreams for the shapes the sandbox does not speak (a clamping
//! page-number API with `next_page`, Stripe's `has_more`, Graph's delta link, HubSpot's
//! search body).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{Sandbox, TestApp, sandbox, spawn_syncing};

async fn register(app: &TestApp, source: &Value) {
    let response = app.post("/v1/sources", source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

fn stat(job: &Value, name: &str) -> u64 {
    job["stats"][name].as_u64().unwrap()
}

/// A source of one stream named `name` on `base`.
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

/// The decoded query of a logged sandbox request.
fn query_of(request: &Value) -> BTreeMap<String, String> {
    let query = request["query"].as_str().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The sandbox's requests since the first `skip`.
async fn requests_after(upstream: &Sandbox, skip: usize) -> Vec<Value> {
    upstream.requests().await.into_iter().skip(skip).collect()
}

/// GitHub-style: a since filter on link paging, sent on the first request only; with
/// `resume: "last_page"` the next run starts at the last page, which grows.
#[tokio::test]
async fn a_link_stream_with_a_since_filter_resumes_at_its_last_page() {
    let upstream = sandbox(31, 100).await;
    let app = spawn_syncing().await;
    let stream = json!({
        "request": {"path": "/link/orders"},
        "records": {"path": "", "key": "/id", "updated_at": "/updated_at",
                    "deleted": {"pointer": "/deleted", "equals": true}},
        "pagination": {"type": "link", "limit_param": "per_page", "limit": 40,
                       "resume": "last_page",
                       "since": {"param": "updated_after", "initial": "2017-01-01T00:00:00Z"}}
    });
    register(&app, &source(&upstream.base, "orders", stream)).await;

    let job = app.sync_ok("orders", "orders", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 100);
    assert_eq!(stat(&job, "requests"), 3);
    let requests = upstream.requests().await;
    assert_eq!(requests.len(), 3);
    let first = query_of(&requests[0]);
    assert_eq!(first["updated_after"], "2017-01-01T00:00:00Z");
    assert_eq!(first["per_page"], "40");
    for next in &requests[1..] {
        assert!(!query_of(next).contains_key("updated_after"), "{next}");
    }
    // The URL of the last page fetched, as the previous page's Link named it.
    let last = query_of(&requests[2]);
    let stored = cursor(&app, "orders").await;
    let next = url::Url::parse(stored["next"].as_str().unwrap()).unwrap();
    assert_eq!(next.path(), "/link/orders");
    let stored_query: BTreeMap<String, String> = next.query_pairs().into_owned().collect();
    assert_eq!(stored_query, last);

    // New orders land on the last page: the next run starts there and reads only them.
    upstream.control("link/create", json!({"count": 5})).await;
    let job = app.sync_ok("orders", "orders", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 5);
    assert_eq!(stat(&job, "requests"), 1);
    let again = requests_after(&upstream, 3).await;
    assert_eq!(query_of(&again[0]), last);
    assert_eq!(
        app.mirror("orders", "orders").await,
        upstream.truth("link").await
    );
}

/// Stripe-style: the next token is the id of the page's last record (`starting_after`),
/// placed by a query template that is left out while there is no token.
#[tokio::test]
async fn a_token_can_be_the_last_records_id() {
    let upstream = sandbox(32, 100).await;
    let app = spawn_syncing().await;
    let stream = json!({
        "request": {"path": "/link/orders", "query": {"after": "{{cursor}}"}},
        "records": {"path": "", "key": "/id", "deleted": {"pointer": "/deleted", "equals": true}},
        "pagination": {"type": "token", "until": {"last_record": "/id"},
                       "limit_param": "per_page", "limit": 40}
    });
    register(&app, &source(&upstream.base, "cards", stream)).await;

    let job = app.sync_ok("cards", "cards", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 100);
    // 40 + 40 + 20, and the empty page after the last record.
    assert_eq!(stat(&job, "requests"), 4);
    let requests = upstream.requests().await;
    assert!(!query_of(&requests[0]).contains_key("after"));
    assert!(
        !query_of(&requests[0]).contains_key("since"),
        "no token parameter of its own"
    );
    let truth = upstream.truth("link").await;
    let last_id = truth
        .keys()
        .max_by_key(|k| k.parse::<u64>().unwrap())
        .unwrap()
        .clone();
    assert_eq!(cursor(&app, "cards").await, json!({ "token": last_id }));

    upstream.control("link/create", json!({"count": 3})).await;
    let job = app.sync_ok("cards", "cards", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 3);
    assert_eq!(stat(&job, "requests"), 2);
    let again = requests_after(&upstream, 4).await;
    assert_eq!(query_of(&again[0])["after"], last_id);
    assert_eq!(
        app.mirror("cards", "cards").await,
        upstream.truth("link").await
    );
}

/// The high-water is `min(newest record read, run start − lookback)`: the lookback comes
/// off the run's start (the reply's `Date`), never off a record's own time.
#[tokio::test]
async fn an_offset_high_water_takes_the_lookback_off_the_run_start() {
    let upstream = sandbox(33, 50).await;
    let app = spawn_syncing().await;
    let stream = json!({
        "request": {"path": "/reqon/items", "query": {"includeDeleted": "true"}},
        "records": {"path": "/items", "key": "/id", "updated_at": "/updatedAt",
                    "deleted": {"pointer": "/deleted", "equals": true}},
        "pagination": {"type": "offset", "limit": 100,
                       "since": {"param": "modified_since", "format": "iso8601", "lookback_seconds": 5}}
    });
    register(&app, &source(&upstream.base, "items", stream)).await;
    app.sync_ok("items", "items", "incremental").await;
    let first = cursor(&app, "items").await["high_water"].clone();

    // One item updated at T; the sandbox clock is then T + 1 s, the next run's start.
    let update = upstream.control("offset/update", json!({"count": 1})).await;
    let at: DateTime<Utc> = update["at"].as_str().unwrap().parse().unwrap();
    let now: DateTime<Utc> = update["now"].as_str().unwrap().parse().unwrap();
    assert_eq!(now - at, TimeDelta::seconds(1));
    let skip = upstream.requests().await.len();
    let job = app.sync_ok("items", "items", "incremental").await;
    assert_eq!(stat(&job, "updated"), 1);
    let sent = requests_after(&upstream, skip).await;
    assert_eq!(
        query_of(&sent[0])["modified_since"],
        first.as_str().unwrap()
    );
    // min(T, (T + 1) − 5) = T − 4, where (min(T, T + 1) − 5) would have been T − 5.
    let expected = (now - TimeDelta::seconds(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(
        cursor(&app, "items").await,
        json!({ "high_water": expected })
    );
}

/// A hand-written upstream: `answer` sees each request's path and query and its JSON
/// body, and its reply is sent as JSON. Every request is logged.
struct Stub {
    base: String,
    log: Log,
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: BTreeMap<String, String>,
    body: Option<Value>,
}

type Answer = dyn Fn(&Seen) -> Value + Send + Sync;
type Log = Arc<Mutex<Vec<Seen>>>;

async fn stub(answer: impl Fn(&Seen) -> Value + Send + Sync + 'static) -> Stub {
    async fn handle(
        State((answer, log)): State<(Arc<Answer>, Log)>,
        OriginalUri(uri): OriginalUri,
        body: Bytes,
    ) -> Response {
        let seen = Seen {
            path: uri.path().to_owned(),
            query: url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
            body: serde_json::from_slice(&body).ok(),
        };
        let reply = answer(&seen);
        log.lock().unwrap().push(seen);
        Json(reply).into_response()
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let answer: Arc<Answer> = Arc::new(answer);
    let router = axum::Router::new()
        .fallback(handle)
        .with_state((answer, log.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Stub { base, log }
}

impl Stub {
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

fn number(query: &BTreeMap<String, String>, name: &str, default: usize) -> usize {
    query
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A page-number API that clamps: every page past the end is the last page again. Its
/// `next_page` ends the run where the short-page rule cannot (the last page is full);
/// without it the page past the end, the last again, lists nothing after the anchor.
#[tokio::test]
async fn offset_next_page_ends_a_clamping_page_number_api() {
    let upstream = stub(|seen| {
        let per_page = number(&seen.query, "per_page", 2);
        let pages = 8usize.div_ceil(per_page);
        let page = number(&seen.query, "page", 1).clamp(1, pages);
        let items: Vec<Value> = (1..=8)
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|id| json!({"id": id}))
            .collect();
        let next = if page < pages {
            json!(page + 1)
        } else {
            Value::Null
        };
        json!({"items": items, "meta": {"page": page, "next_page": next}})
    })
    .await;
    let app = spawn_syncing().await;
    let stream = |next_page: bool| {
        let mut pagination =
            json!({"type": "offset", "page_param": "page", "limit_param": "per_page", "limit": 2});
        if next_page {
            pagination["next_page"] = json!("/meta/next_page");
        }
        json!({"request": {"path": "/pages"}, "records": {"path": "/items", "key": "/id"},
               "pagination": pagination})
    };
    register(&app, &source(&upstream.base, "pages", stream(true))).await;
    let job = app.sync_ok("pages", "pages", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 8);
    // Anchored page numbers (docs/design.md §4): each page after the first is followed
    // by the page before it again, to find its last record still there.
    assert_eq!(stat(&job, "requests"), 7);
    let seen = upstream.seen();
    let pages: Vec<&str> = seen.iter().map(|s| s.query["page"].as_str()).collect();
    assert_eq!(pages, ["1", "2", "1", "3", "2", "4", "3"]);

    // Without it the fifth page is page 4 again, which lists nothing after its anchor:
    // the run ends there.
    register(&app, &source(&upstream.base, "clamped", stream(false))).await;
    let job = app.sync_ok("clamped", "clamped", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 8);
    let pages: Vec<String> = upstream.seen()[7..]
        .iter()
        .map(|s| s.query["page"].clone())
        .collect();
    assert_eq!(pages, ["1", "2", "1", "3", "2", "4", "3", "5"]);
}

/// Stripe: `has_more: false` ends the run on the page that says so, without the empty
/// page a token stream otherwise asks for.
#[tokio::test]
async fn done_ends_a_run_on_the_page_that_says_so() {
    let customers = Arc::new(Mutex::new(5usize));
    let count = customers.clone();
    let upstream = stub(move |seen| {
        let total = *count.lock().unwrap();
        let limit = number(&seen.query, "limit", 10);
        let after = seen
            .query
            .get("starting_after")
            .and_then(|id| id.strip_prefix("cus_"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let data: Vec<Value> = (after + 1..=total)
            .take(limit)
            .map(|n| json!({"id": format!("cus_{n}"), "object": "customer"}))
            .collect();
        let has_more = after + data.len() < total;
        json!({"object": "list", "url": "/v1/customers", "has_more": has_more, "data": data})
    })
    .await;
    let app = spawn_syncing().await;
    let stream = json!({
        "request": {"path": "/v1/customers",
                    "query": {"starting_after": "{{cursor}}", "limit": "{{limit}}"}},
        "records": {"path": "/data", "key": "/id"},
        "pagination": {"type": "token", "until": {"last_record": "/id"}, "limit": 2,
                       "done": {"pointer": "/has_more", "equals": false}}
    });
    register(&app, &source(&upstream.base, "customers", stream)).await;
    let job = app.sync_ok("customers", "customers", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 5);
    assert_eq!(stat(&job, "requests"), 3);
    let seen = upstream.seen();
    assert_eq!(
        seen[0].query,
        BTreeMap::from([("limit".to_owned(), "2".to_owned())])
    );
    assert_eq!(seen[2].query["starting_after"], "cus_4");
    assert_eq!(cursor(&app, "customers").await, json!({"token": "cus_5"}));

    *customers.lock().unwrap() = 7;
    let job = app.sync_ok("customers", "customers", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 2);
    assert_eq!(stat(&job, "requests"), 1);
    assert_eq!(upstream.seen()[3].query["starting_after"], "cus_5");
}

/// Microsoft Graph: page links within a run, and a different delta link, named by the
/// final page, to start the next run from.
#[tokio::test]
async fn a_link_stream_resumes_from_the_delta_link_of_its_final_page() {
    let upstream = stub(
        |seen| match seen.query.get("$deltatoken").map(String::as_str) {
            Some("d1") => json!({"value": [{"id": "u4", "displayName": "new"}],
                             "@odata.deltaLink": "/users/delta?$deltatoken=d2"}),
            Some(_) => json!({"value": [], "@odata.deltaLink": "/users/delta?$deltatoken=d2"}),
            None => match seen.query.get("$skiptoken").map(String::as_str) {
                None => json!({"value": [{"id": "u1"}, {"id": "u2"}],
                           "@odata.nextLink": "/users/delta?$skiptoken=s1"}),
                Some(_) => json!({"value": [{"id": "u3"}],
                              "@odata.deltaLink": "/users/delta?$deltatoken=d1"}),
            },
        },
    )
    .await;
    let app = spawn_syncing().await;
    let stream = json!({
        "request": {"path": "/users/delta", "query": {"$select": "displayName"}},
        "records": {"path": "/value", "key": "/id"},
        "pagination": {"type": "link", "next": "/@odata.nextLink",
                       "resume": {"pointer": "/@odata.deltaLink"}}
    });
    register(&app, &source(&upstream.base, "users", stream)).await;
    let job = app.sync_ok("users", "users", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 3);
    assert_eq!(stat(&job, "requests"), 2);
    assert_eq!(
        cursor(&app, "users").await,
        json!({"next": format!("{}/users/delta?$deltatoken=d1", upstream.base)})
    );
    let job = app.sync_ok("users", "users", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 1);
    assert_eq!(stat(&job, "requests"), 1);
    let resumed = &upstream.seen()[2];
    assert_eq!(resumed.path, "/users/delta");
    assert_eq!(resumed.query["$deltatoken"], "d1");
    assert_eq!(
        cursor(&app, "users").await,
        json!({"next": format!("{}/users/delta?$deltatoken=d2", upstream.base)})
    );
}

/// HubSpot: a POST search body with the time filter, the cursor and the page size as
/// typed values, resent with every page; each run re-queries from its high-water.
#[tokio::test]
async fn a_search_body_carries_typed_values_on_every_page() {
    // Contacts modified at 1000, 2000, ... ms.
    let upstream = stub(|seen| {
        let body = seen.body.clone().unwrap_or_default();
        let Some(since) = body["filterGroups"][0]["filters"][0]["value"].as_u64() else {
            return json!({"status": "error", "message": "value must be a number", "results": []});
        };
        let limit = body["limit"].as_u64().unwrap_or(10) as usize;
        let after = match &body["after"] {
            Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        };
        let matching: Vec<u64> = (1..=5u64).filter(|n| n * 1000 >= since).collect();
        let results: Vec<Value> = matching
            .iter()
            .skip(after)
            .take(limit)
            .map(|n| {
                let at = DateTime::from_timestamp_millis(i64::try_from(n * 1000).unwrap()).unwrap();
                json!({"id": n.to_string(),
                       "updatedAt": at.to_rfc3339_opts(SecondsFormat::Millis, true)})
            })
            .collect();
        let mut reply = json!({"total": matching.len(), "results": results});
        if after + limit < matching.len() {
            reply["paging"] = json!({"next": {"after": (after + limit).to_string()}});
        }
        reply
    })
    .await;
    let app = spawn_syncing().await;
    let stream = json!({
        "request": {"method": "POST", "path": "/crm/v3/objects/contacts/search",
                    "body": {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate",
                                 "operator": "GTE", "value": "{{since}}"}]}],
                             "after": "{{cursor}}", "limit": "{{limit}}"}},
        "records": {"path": "/results", "key": "/id", "updated_at": "/updatedAt"},
        "pagination": {"type": "token", "until": "/paging/next/after", "limit": 2,
                       "resume": "restart",
                       "since": {"format": "unix_ms", "initial": "0", "lookback_seconds": 0}}
    });
    register(&app, &source(&upstream.base, "contacts", stream)).await;
    let job = app.sync_ok("contacts", "contacts", "incremental").await;
    assert_eq!(stat(&job, "inserted"), 5);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    for (i, request) in seen.iter().enumerate() {
        let body = request.body.as_ref().unwrap();
        assert_eq!(
            body["filterGroups"][0]["filters"][0]["value"],
            json!(0),
            "page {i}"
        );
        assert_eq!(body["limit"], json!(2), "page {i}");
    }
    assert_eq!(seen[0].body.as_ref().unwrap()["after"], Value::Null);
    assert_eq!(seen[1].body.as_ref().unwrap()["after"], "2");
    // The newest contact (5000 ms) is older than the run's start: it is the high-water.
    assert_eq!(
        cursor(&app, "contacts").await,
        json!({"high_water": "5000"})
    );
    let job = app.sync_ok("contacts", "contacts", "incremental").await;
    assert_eq!(stat(&job, "unchanged"), 1);
    assert_eq!(
        upstream.seen()[3].body.as_ref().unwrap()["filterGroups"][0]["filters"][0]["value"],
        json!(5000)
    );
}
