//! How syncs fail, each against the sandbox's injected faults: never a lost change, never
//! a cursor moved past what was stored, always a clear problem.

use serde_json::{Value, json};

use crate::support::{Sandbox, TestApp, sandbox, spawn_syncing};

async fn app_with(upstream: &Sandbox, example: &str, limit: u32) -> (TestApp, Value) {
    let app = spawn_syncing().await;
    let source = upstream.example(example, limit);
    let response = app.post("/v1/sources", &source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    (app, source)
}

async fn faults(upstream: &Sandbox, faults: Value) {
    upstream
        .control("faults", json!({ "faults": faults }))
        .await;
}

fn stat(job: &Value, name: &str) -> u64 {
    job["stats"][name].as_u64().unwrap()
}

#[tokio::test]
async fn retry_after_is_waited_for_before_the_next_request() {
    let upstream = sandbox(31, 30).await;
    let (app, _) = app_with(&upstream, "insales", 10).await;
    faults(
        &upstream,
        json!([{"kind": "retry_after", "status": 429, "seconds": 1}]),
    )
    .await;
    let job = app.sync_ok("insales", "products", "incremental").await;
    let log = upstream.requests().await;
    assert_eq!(log[0]["status"], 429);
    let gap = log[1]["at_ms"].as_u64().unwrap() - log[0]["at_ms"].as_u64().unwrap();
    assert!(gap >= 1000, "the retry came {gap} ms after the 429");
    assert_eq!(stat(&job, "requests"), log.len() as u64);
    assert_eq!(
        app.mirror("insales", "products").await,
        upstream.truth("keyset").await
    );
}

#[tokio::test]
async fn repeated_server_errors_fail_after_max_attempts_with_the_cursor_unchanged() {
    let upstream = sandbox(32, 60).await;
    let (app, _) = app_with(&upstream, "insales", 10).await;
    app.sync_ok("insales", "products", "incremental").await;
    let before = app
        .get_json("/v1/sources/insales/streams/products/cursor")
        .await;
    upstream.control("keyset/update", json!({"count": 5})).await;
    upstream.control("tick", json!({"seconds": 5})).await;
    faults(&upstream, json!([{"kind": "status", "status": 500}, {"kind": "status", "status": 500}, {"kind": "status", "status": 502}])).await;
    let job = app.sync("insales", "products", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-status", "{job:#}");
    assert!(
        job["error"]["detail"].as_str().unwrap().contains("502"),
        "{job:#}"
    );
    assert_eq!(stat(&job, "requests"), 3);
    let after = app
        .get_json("/v1/sources/insales/streams/products/cursor")
        .await;
    assert_eq!(after, before);
    // The next run picks up what the failed one could not read.
    app.sync_ok("insales", "products", "incremental").await;
    assert_eq!(
        app.mirror("insales", "products").await,
        upstream.truth("keyset").await
    );
}

#[tokio::test]
async fn truncated_json_and_html_pages_are_retried_then_reported() {
    let upstream = sandbox(33, 30).await;
    let (app, _) = app_with(&upstream, "insales", 10).await;
    faults(&upstream, json!([{"kind": "truncated"}, {"kind": "html"}])).await;
    let job = app.sync_ok("insales", "products", "incremental").await;
    // 3 pages, the empty last page, and the 2 bad replies retried.
    assert_eq!(stat(&job, "requests"), 6, "{job:#}");
    assert_eq!(stat(&job, "pages"), 4, "{job:#}");
    assert_eq!(
        app.mirror("insales", "products").await,
        upstream.truth("keyset").await
    );

    faults(
        &upstream,
        json!([{"kind": "truncated"}, {"kind": "html"}, {"kind": "truncated"}]),
    )
    .await;
    let job = app.sync("insales", "products", "full").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-bad-body", "{job:#}");
    assert!(
        job["error"]["detail"].as_str().unwrap().contains("JSON"),
        "{job:#}"
    );
}

#[tokio::test]
async fn a_one_gigabyte_reply_fails_the_job_cleanly_after_reading_only_the_cap() {
    let upstream = sandbox(34, 60).await;
    let (app, _) = app_with(&upstream, "insales", 10).await;
    app.sync_ok("insales", "products", "incremental").await;
    let cursor = app
        .get_json("/v1/sources/insales/streams/products/cursor")
        .await;
    let mirror = app.mirror("insales", "products").await;
    upstream.control("keyset/update", json!({"count": 5})).await;
    upstream.control("tick", json!({"seconds": 5})).await;
    faults(&upstream, json!([{"kind": "huge", "bytes": 1_u64 << 30}])).await;
    let job = app.sync("insales", "products", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-too-large", "{job:#}");
    // Not retried: the same request would get the same reply.
    assert_eq!(stat(&job, "requests"), 1, "{job:#}");
    // The gateway hung up at its 64 MiB cap: what the sandbox could hand to the
    // connection beyond that is only what the socket buffers took.
    let sent = upstream.read("faults").await["huge_bytes_sent"]
        .as_u64()
        .unwrap();
    assert!(sent >= 64 << 20, "only {sent} bytes were sent");
    assert!(
        sent < 128 << 20,
        "{sent} bytes of the 1 GiB reply were sent"
    );
    assert_eq!(
        app.get_json("/v1/sources/insales/streams/products/cursor")
            .await,
        cursor
    );
    assert_eq!(app.mirror("insales", "products").await, mirror);
    // The next run, with a sane upstream, reads the changes.
    app.sync_ok("insales", "products", "incremental").await;
    assert_eq!(
        app.mirror("insales", "products").await,
        upstream.truth("keyset").await
    );
}

#[tokio::test]
async fn connection_resets_and_slow_replies_are_retried() {
    let upstream = sandbox(34, 30).await;
    let app = spawn_syncing().await;
    let mut source = upstream.example("insales", 10);
    source["timeout_ms"] = json!(300);
    assert_eq!(app.post("/v1/sources", &source).await.status(), 201);
    faults(
        &upstream,
        json!([{"kind": "reset"}, {"kind": "slow", "ms": 1000}]),
    )
    .await;
    let job = app.sync_ok("insales", "products", "incremental").await;
    assert_eq!(stat(&job, "requests"), 6, "{job:#}");
    assert_eq!(
        app.mirror("insales", "products").await,
        upstream.truth("keyset").await
    );
}

/// The same job resyncs (docs/design.md §4, "Stale token"): it used to end `failed` and
/// queue a `full` job with trigger `resync`; it now resets the cursor, reads from the
/// beginning and succeeds, saying so in `resynced`.
#[tokio::test]
async fn a_stale_token_resets_the_cursor_and_the_same_job_resyncs() {
    let upstream = sandbox(35, 120).await;
    let (app, _) = app_with(&upstream, "pos", 25).await;
    app.sync_ok("pos", "sales", "incremental").await;
    upstream.control("token/update", json!({"count": 10})).await;
    upstream.control("token/rotate_format", json!({})).await;
    let job = app.sync_ok("pos", "sales", "incremental").await;
    assert_eq!(job["trigger"], "api", "{job:#}");
    assert_eq!(job["mode"], "incremental");
    assert_eq!(job["error"], Value::Null, "{job:#}");
    assert_eq!(job["resynced"]["status"], 400, "{job:#}");
    let reason = job["resynced"]["reason"].as_str().unwrap();
    assert!(reason.contains("INVALID_SINCE_FORMAT"), "{reason}");
    assert_eq!(stat(&job, "updated"), 10, "{job:#}");
    // No second job: the one asked for did it all.
    let jobs = app.get_json("/v1/jobs?stream=sales").await;
    assert_eq!(jobs["results"].as_array().unwrap().len(), 2, "{jobs:#}");
    assert_eq!(
        app.mirror("pos", "sales").await,
        upstream.truth("token").await
    );
}

/// The id `1160406004324630614` and a microsecond timestamp travel byte-identically:
/// upstream → stored record → cursor → the next request's query string.
#[tokio::test]
async fn big_ids_and_microsecond_times_round_trip_exactly() {
    let upstream = sandbox(36, 30).await;
    let (app, _) = app_with(&upstream, "carrot", 10).await;
    app.sync_ok("carrot", "conversations", "incremental").await;
    let mirror = app.mirror("carrot", "conversations").await;
    let first = &mirror["1160406004324630614"];
    assert!(
        first.starts_with(r#"{"id":1160406004324630614,"#),
        "{first}"
    );
    assert_eq!(mirror, upstream.truth("position").await);

    let cursor = app
        .get("/v1/sources/carrot/streams/conversations/cursor")
        .await
        .text()
        .await
        .unwrap();
    // The position is the last full page's last record, as the upstream wrote it.
    let position = cursor
        .split(r#""position":"#)
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .map(|p| format!("{p}]"))
        .unwrap();
    let record = mirror.values().find(|r| {
        let (ts, id) = position.trim_matches(['[', ']']).split_once(',').unwrap();
        r.contains(&format!(r#""id":{id},"#)) && r.contains(&format!(r#""updated":{ts},"#))
    });
    assert!(record.is_some(), "no record at position {position}");

    let earlier = upstream.requests().await.len();
    app.sync_ok("carrot", "conversations", "incremental").await;
    let first_request = &upstream.requests().await[earlier];
    let query = first_request["query"].as_str().unwrap();
    let sent: String = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "paginate_position")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(sent, position);
}

/// Every kind of upstream credential really reaches the upstream.
#[tokio::test]
async fn every_auth_kind_reaches_the_upstream() {
    let upstream = sandbox(37, 15).await;
    let app = spawn_syncing().await;
    // SAFETY: set once, before any request reads it; the name is unique to this test.
    unsafe { std::env::set_var("TIDEMARK_TEST_SHOP_TOKEN", "env-token-1234") };
    let cases = [
        (
            json!({"type": "bearer", "token": "tok-1234"}),
            json!({"type": "bearer", "token": {"value": "tok-1234"}}),
        ),
        (
            json!({"type": "bearer", "token": "env-token-1234"}),
            json!({"type": "bearer", "token": {"env": "TIDEMARK_TEST_SHOP_TOKEN"}}),
        ),
        (
            json!({"type": "basic", "username": "u", "password": "p-1234"}),
            json!({"type": "basic", "username": "u", "password": "p-1234"}),
        ),
        (
            json!({"type": "header", "name": "X-Api-Key", "value": "k-1234"}),
            json!({"type": "header", "name": "X-Api-Key", "value": "k-1234"}),
        ),
        (
            json!({"type": "query", "name": "api_key", "value": "q-1234"}),
            json!({"type": "query", "name": "api_key", "value": "q-1234"}),
        ),
        (
            json!({"type": "oauth2", "client_id": "c", "client_secret": "s-1234", "expires_in": 3600}),
            json!({"type": "oauth2", "grant": "client_credentials", "client_id": "c",
                "client_secret": "s-1234", "token_url": format!("{}/oauth/token", upstream.base)}),
        ),
        (
            json!({"type": "oauth2", "client_id": "c", "client_secret": "s-1234",
                "refresh_token": "r-1234", "expires_in": 3600}),
            json!({"type": "oauth2", "grant": "refresh_token", "client_id": "c",
                "refresh_token": "r-1234", "token_url": format!("{}/oauth/token", upstream.base)}),
        ),
    ];
    for (i, (required, auth)) in cases.into_iter().enumerate() {
        upstream.control("auth", required.clone()).await;
        let mut source = upstream.example("insales", 10);
        let name = format!("shop{i}");
        source["name"] = json!(name);
        source["auth"] = auth;
        assert_eq!(app.post("/v1/sources", &source).await.status(), 201);
        let job = app.sync_ok(&name, "products", "incremental").await;
        assert_eq!(stat(&job, "inserted"), 15, "{required}: {job:#}");

        // Without the credential the same upstream refuses, and the job says so.
        let mut bare = upstream.example("insales", 10);
        bare["name"] = json!(format!("bare{i}"));
        assert_eq!(app.post("/v1/sources", &bare).await.status(), 201);
        let refused = app
            .sync(&format!("bare{i}"), "products", "incremental")
            .await;
        assert_eq!(refused["error"]["type"], "upstream-status", "{refused:#}");
        assert!(refused["error"]["detail"].as_str().unwrap().contains("401"));
    }
    // OAuth2: revoked access tokens are renewed on the 401, once.
    upstream.control("auth/revoke", json!({})).await;
    let job = app.sync_ok("shop6", "products", "full").await;
    assert_eq!(stat(&job, "unchanged"), 15);
    let auth = upstream.read("auth").await;
    assert_eq!(auth["token_requests"], 2, "{auth}");
}
