//! Named feed consumers (docs/design.md §5) end to end: changes get into the feed by real
//! syncs from the sandbox, consumers read them with `consumer=<name>` over HTTP, and
//! `/v1/consumers` shows where each one read from, when, and how far behind it is.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::feed::sse_events;
use crate::support::{
    READER, Sandbox, TestApp, assert_problem, eventually, keyset_source, ready_if, sandbox,
    spawn_syncing, spawn_with_tokens,
};

/// How long a recorded read may take to show (it is written in the background).
const RECORDED: Duration = Duration::from_secs(10);

/// A source `name` on a new sandbox of `records` products, synced once.
async fn synced(app: &TestApp, name: &str, seed: u64, records: usize) -> Sandbox {
    let upstream = sandbox(seed, records).await;
    let response = app
        .post("/v1/sources", &keyset_source(&upstream, name, 50))
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    app.sync_ok(name, "products", "incremental").await;
    upstream
}

/// `GET /v1/changes?{query}`, which must succeed: the body as sent, and parsed.
async fn changes(app: &TestApp, query: &str) -> (String, Value) {
    let response = app.get(&format!("/v1/changes?{query}")).await;
    assert_eq!(response.status(), 200, "{query}");
    let text = response.text().await.unwrap();
    let page = serde_json::from_str(&text).unwrap();
    (text, page)
}

/// `GET /v1/consumers/{name}`: the status and the body.
async fn consumer(app: &TestApp, name: &str) -> (u16, Value) {
    let response = app.get(&format!("/v1/consumers/{name}")).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits until consumer `name` is shown and `done` holds for it; returns it.
async fn shown(app: &TestApp, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(RECORDED, &format!("consumer {name} {what}"), || async {
        let (status, body) = consumer(app, name).await;
        ready_if(status == 200 && done(&body), body)
    })
    .await
}

/// A request with the reader token.
async fn as_reader(app: &TestApp, method: Method, path: &str) -> Response {
    app.client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_read_records_the_position_it_came_with_and_lag_counts_what_came_after() {
    let app = spawn_syncing().await;
    let upstream = synced(&app, "shop", 31, 20).await;
    let list = app.get_json("/v1/consumers").await;
    assert_eq!(list, json!({"results": [], "next": null}));

    // From the beginning: nothing read yet, so all 20 changes are ahead of it.
    let (_, first) = changes(&app, "consumer=billing&limit=15").await;
    assert_eq!(first["results"].as_array().unwrap().len(), 15);
    let billing = shown(&app, "billing", "at the beginning", |c| {
        c["lag"]["changes"] == 20
    })
    .await;
    assert_eq!(billing["name"], "billing");
    assert_eq!(billing["position"], json!({"since": null, "stream": null}));
    assert_eq!(billing["lag"]["exact"], true);
    assert!(billing["lag"]["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(billing["first_read_at"], billing["last_read_at"]);
    let first_read = time(&billing["last_read_at"]);

    // The next request came with the first page's `until`: it has read those 15.
    let until = first["until"].as_str().unwrap().to_owned();
    let (_, second) = changes(&app, &format!("since={until}&consumer=billing")).await;
    assert_eq!(second["results"].as_array().unwrap().len(), 5);
    let billing = shown(&app, "billing", "at the first page's until", |c| {
        c["position"]["since"] == until.as_str()
    })
    .await;
    assert_eq!(billing["lag"]["changes"], 5);
    assert_eq!(billing["lag"]["exact"], true);
    assert!(time(&billing["last_read_at"]) > first_read);
    assert_eq!(time(&billing["first_read_at"]), first_read);

    // Caught up; then the upstream changes and a sync commits: behind by those, without
    // reading again.
    let caught_up = second["until"].as_str().unwrap().to_owned();
    changes(&app, &format!("since={caught_up}&consumer=billing")).await;
    shown(&app, "billing", "caught up", |c| c["lag"]["changes"] == 0).await;
    upstream.control("keyset/update", json!({"count": 3})).await;
    upstream
        .control("keyset/archive", json!({"count": 1}))
        .await;
    app.sync_ok("shop", "products", "incremental").await;
    let (status, billing) = consumer(&app, "billing").await;
    assert_eq!(status, 200);
    assert_eq!(billing["lag"]["changes"], 4, "{billing:#}");
    assert_eq!(billing["position"]["since"], caught_up.as_str());

    // The position is a token the feed takes: reading from it hands out exactly the lag.
    let (_, next) = changes(&app, &format!("since={caught_up}")).await;
    assert_eq!(next["results"].as_array().unwrap().len(), 4);

    // Listed by name, paged as every list.
    changes(&app, "consumer=audit&limit=1").await;
    shown(&app, "audit", "recorded", |_| true).await;
    let page = app.get_json("/v1/consumers?limit=1").await;
    assert_eq!(page["results"][0]["name"], "audit");
    assert_eq!(page["next"], "audit");
    let page = app.get_json("/v1/consumers?limit=1&after=audit").await;
    assert_eq!(page["results"][0]["name"], "billing");
    assert_eq!(page["results"][0]["lag"]["changes"], 4);
    let last = app.get_json("/v1/consumers?limit=1&after=billing").await;
    assert_eq!(last, json!({"results": [], "next": null}));
    let all = app.get_json("/v1/consumers").await;
    assert_eq!(all["results"].as_array().unwrap().len(), 2);
    assert_eq!(all["next"], Value::Null);
}

#[tokio::test]
async fn lag_counts_only_the_consumers_filter_and_the_latest_request_wins() {
    let app = spawn_syncing().await;
    synced(&app, "alpha", 32, 20).await;
    let beta = synced(&app, "beta", 33, 30).await;

    let (_, page) = changes(
        &app,
        "stream=beta/products,alpha/products&consumer=etl&limit=1000",
    )
    .await;
    assert_eq!(page["results"].as_array().unwrap().len(), 50);
    let scoped = page["until"].as_str().unwrap().to_owned();
    changes(
        &app,
        &format!("since={scoped}&stream=alpha/products,beta/products&consumer=etl"),
    )
    .await;
    let etl = shown(&app, "etl", "at the end of its filter", |c| {
        c["position"]["since"] == scoped.as_str()
    })
    .await;
    // Normalized: sorted, as a request would give it.
    assert_eq!(etl["position"]["stream"], "alpha/products,beta/products");
    assert_eq!(etl["lag"]["changes"], 0);

    // The same consumer now reads one stream from the beginning: the latest request wins.
    changes(&app, "stream=alpha/products&consumer=etl&limit=5").await;
    let etl = shown(&app, "etl", "with its new filter", |c| {
        c["position"]["stream"] == "alpha/products"
    })
    .await;
    assert_eq!(etl["position"]["since"], Value::Null);
    assert_eq!(etl["lag"]["changes"], 20);

    // Changes outside its filter are not its lag.
    beta.control("keyset/update", json!({"count": 4})).await;
    app.sync_ok("beta", "products", "incremental").await;
    assert_eq!(consumer(&app, "etl").await.1["lag"]["changes"], 20);
    // The whole feed's consumer counts them.
    changes(&app, "consumer=everything&limit=1").await;
    let everything = shown(&app, "everything", "recorded", |_| true).await;
    assert_eq!(everything["position"]["stream"], Value::Null);
    assert_eq!(everything["lag"]["changes"], 50);
}

#[tokio::test]
async fn a_consumer_never_changes_what_the_feed_returns() {
    let app = spawn_syncing().await;
    let upstream = synced(&app, "shop", 34, 40).await;
    upstream.control("keyset/update", json!({"count": 5})).await;
    upstream
        .control("keyset/archive", json!({"count": 2}))
        .await;
    app.sync_ok("shop", "products", "incremental").await;

    for filter in ["", "shop/products"] {
        let mut since = String::new();
        let mut pages = 0;
        loop {
            let query = format!("since={since}&stream={filter}&limit=7");
            let (plain, page) = changes(&app, &query).await;
            let (named, _) = changes(&app, &format!("{query}&consumer=twin")).await;
            assert_eq!(plain, named, "{query}");
            // Blank is nobody in particular.
            let (blank, _) = changes(&app, &format!("{query}&consumer=")).await;
            assert_eq!(plain, blank, "{query}");
            pages += 1;
            since = page["until"].as_str().unwrap().to_owned();
            if page["has_more"] == false {
                break;
            }
        }
        assert_eq!(pages, 6);
    }
    // A long-poll is the same too: answered at once when there is something to hand out.
    let (plain, _) = changes(&app, "limit=3&wait=5").await;
    let (named, _) = changes(&app, "limit=3&wait=5&consumer=twin").await;
    assert_eq!(plain, named);
}

#[tokio::test]
async fn a_long_poll_is_recorded_when_it_starts_waiting() {
    let app = spawn_syncing().await;
    let upstream = synced(&app, "shop", 35, 10).await;
    let (_, page) = changes(&app, "limit=100").await;
    let until = page["until"].as_str().unwrap().to_owned();

    let poll = {
        let request = app
            .request(
                Method::GET,
                &format!("/v1/changes?since={until}&wait=30&consumer=waiter"),
            )
            .send();
        tokio::spawn(request)
    };
    // Shown while it waits.
    let waiter = shown(&app, "waiter", "while it waits", |c| {
        c["position"]["since"] == until.as_str()
    })
    .await;
    assert_eq!(waiter["lag"]["changes"], 0);
    assert!(!poll.is_finished());
    upstream.control("keyset/update", json!({"count": 1})).await;
    app.sync_ok("shop", "products", "incremental").await;
    let answered = poll.await.unwrap().unwrap();
    assert_eq!(answered.status(), 200);
    let answered: Value = answered.json().await.unwrap();
    assert_eq!(answered["results"].as_array().unwrap().len(), 1);
    // It has not come back yet: one change behind.
    assert_eq!(consumer(&app, "waiter").await.1["lag"]["changes"], 1);
}

#[tokio::test]
async fn an_event_stream_records_where_it_started_and_the_last_event_it_was_sent() {
    let app = spawn_syncing().await;
    let upstream = synced(&app, "shop", 36, 20).await;
    let mut stream = app
        .get("/v1/changes/stream?stream=shop/products&consumer=live")
        .await;
    assert_eq!(stream.status(), 200);
    let mut buffer = String::new();
    let first = sse_events(&mut stream, &mut buffer, 20).await;
    let last = first.last().unwrap().id.clone().unwrap();
    // Sent the whole feed at once: shown at its last event, caught up.
    let live = shown(&app, "live", "at the last event it was sent", |c| {
        c["position"]["since"] == last.as_str()
    })
    .await;
    assert_eq!(live["position"]["stream"], "shop/products");
    assert_eq!(live["lag"]["changes"], 0);

    // New commits reach the open stream, and its position follows.
    upstream.control("keyset/update", json!({"count": 2})).await;
    app.sync_ok("shop", "products", "incremental").await;
    let more = sse_events(&mut stream, &mut buffer, 2).await;
    let last = more.last().unwrap().id.clone().unwrap();
    shown(&app, "live", "at the newest event", |c| {
        c["position"]["since"] == last.as_str() && c["lag"]["changes"] == 0
    })
    .await;
    drop(stream);

    // Resuming from an earlier event: recorded there (then at what it is sent again).
    let resume = first[9].id.clone().unwrap();
    let mut stream = app
        .request(
            Method::GET,
            "/v1/changes/stream?stream=shop/products&consumer=again",
        )
        .header("last-event-id", &resume)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // What is left after that event (compacted: the updated keys moved to the end).
    let (_, left) = changes(&app, &format!("since={resume}&stream=shop/products")).await;
    let left = left["results"].as_array().unwrap().len();
    let rest = sse_events(&mut stream, &mut String::new(), left).await;
    let last = rest.last().unwrap().id.clone().unwrap();
    let again = shown(&app, "again", "at the last event it was sent", |c| {
        c["position"]["since"] == last.as_str()
    })
    .await;
    assert_eq!(again["lag"]["changes"], 0);
}

#[tokio::test]
async fn a_forgotten_consumer_is_gone_until_it_reads_again() {
    let app = spawn_with_tokens().await;
    // A reader may name itself and see the consumers; only an admin may forget one.
    let read = as_reader(&app, Method::GET, "/v1/changes?consumer=gone").await;
    assert_eq!(read.status(), 200);
    shown(&app, "gone", "recorded", |_| true).await;
    let listed = as_reader(&app, Method::GET, "/v1/consumers").await;
    assert_eq!(listed.status(), 200);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["results"][0]["name"], "gone");
    let refused = as_reader(&app, Method::DELETE, "/v1/consumers/gone").await;
    assert_problem(refused, 403, "forbidden").await;
    let anonymous = app
        .client
        .get(format!("{}/v1/consumers", app.base))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "unauthorized").await;

    let forgotten = app.delete("/v1/consumers/gone").await;
    assert_eq!(forgotten.status(), 204);
    assert_eq!(forgotten.headers().get("content-type"), None);
    assert_problem(app.get("/v1/consumers/gone").await, 404, "not-found").await;
    assert_problem(app.delete("/v1/consumers/gone").await, 404, "not-found").await;
    let list = app.get_json("/v1/consumers").await;
    assert_eq!(list["results"], json!([]));

    // Reading again under the name records it anew.
    let read = app.get("/v1/changes?consumer=gone").await;
    assert_eq!(read.status(), 200);
    let gone = shown(&app, "gone", "recorded again", |_| true).await;
    assert_eq!(gone["first_read_at"], gone["last_read_at"]);
}

#[tokio::test]
async fn bad_names_are_problems_with_a_pointer_and_record_nothing() {
    let app = spawn_syncing().await;
    let long = "a".repeat(65);
    for name in [
        "Billing",
        "-billing",
        "bill%20ing",
        "bill/ing",
        "b%C3%BCro",
        long.as_str(),
    ] {
        for path in ["/v1/changes", "/v1/changes/stream"] {
            let response = app.get(&format!("{path}?consumer={name}")).await;
            let problem = assert_problem(response, 400, "invalid-parameter").await;
            assert_eq!(problem["pointer"], "/consumer", "{path} {name}");
        }
    }
    // 64 characters is a name.
    let longest = "a".repeat(64);
    let response = app.get(&format!("/v1/changes?consumer={longest}")).await;
    assert_eq!(response.status(), 200);

    // A request the feed refuses records nothing: not its name, not its token.
    let refused = app
        .get("/v1/changes?since=not-a-token&consumer=refused")
        .await;
    assert_problem(refused, 400, "invalid-since-format").await;
    let refused = app
        .get("/v1/changes?stream=ghost/products&consumer=refused")
        .await;
    assert_problem(refused, 404, "not-found").await;
    // Reads are written in order, so once a later one shows, an earlier one would have.
    changes(&app, "consumer=later").await;
    shown(&app, "later", "recorded", |_| true).await;
    shown(&app, &longest, "recorded", |_| true).await;
    assert_problem(app.get("/v1/consumers/refused").await, 404, "not-found").await;

    // A path name that is not a name cannot exist; `after` must be one.
    assert_problem(app.get("/v1/consumers/Nobody").await, 404, "not-found").await;
    assert_problem(app.get("/v1/consumers/nobody").await, 404, "not-found").await;
    let bad_after = app.get("/v1/consumers?after=Nobody").await;
    let problem = assert_problem(bad_after, 400, "invalid-parameter").await;
    assert_eq!(problem["pointer"], "/after");
    for bad in ["limit=0", "limit=1001"] {
        let response = app.get(&format!("/v1/consumers?{bad}")).await;
        let problem = assert_problem(response, 400, "invalid-parameter").await;
        assert_eq!(problem["pointer"], "/limit");
    }
}

#[tokio::test]
async fn metrics_show_each_consumers_lag() {
    let app = spawn_syncing().await;
    synced(&app, "shop", 37, 20).await;
    changes(&app, "consumer=metered&limit=5").await;
    let line = "tidemark_consumer_lag_changes{consumer=\"metered\"} 20";
    let metrics = eventually(RECORDED, "the consumer's lag on /metrics", || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        ready_if(text.contains(line), text)
    })
    .await;
    assert!(metrics.contains("# TYPE tidemark_consumer_lag_changes gauge"));
    assert!(metrics.contains("tidemark_consumer_lag_seconds{consumer=\"metered\"} "));

    // Forgotten: no series left behind.
    assert_eq!(app.delete("/v1/consumers/metered").await.status(), 204);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("consumer=\"metered\""), "{metrics}");
}

#[tokio::test]
async fn lag_stops_counting_at_its_cap() {
    let app = spawn_syncing().await;
    let upstream = sandbox(38, 10_001).await;
    let response = app
        .post("/v1/sources", &keyset_source(&upstream, "big", 1000))
        .await;
    assert_eq!(response.status(), 201);
    app.sync_ok("big", "products", "incremental").await;
    changes(&app, "consumer=slow&limit=1").await;
    let slow = shown(&app, "slow", "recorded", |_| true).await;
    assert_eq!(slow["lag"]["changes"], 10_000);
    assert_eq!(slow["lag"]["exact"], false);
    // One change fewer ahead of it: exact again.
    let (_, page) = changes(&app, "limit=1").await;
    let since = page["until"].as_str().unwrap();
    changes(&app, &format!("since={since}&consumer=slow&limit=1")).await;
    let slow = shown(&app, "slow", "one change on", |c| c["lag"]["exact"] == true).await;
    assert_eq!(slow["lag"]["changes"], 10_000);
}
