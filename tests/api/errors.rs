//! Bad input of every kind gets a problem document naming what is wrong.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{assert_problem, design_source, spawn, spawn_with};

/// Applies `edit` to the docs/design.md source.
fn edited(edit: impl FnOnce(&mut Value)) -> Value {
    let mut spec = design_source();
    edit(&mut spec);
    spec
}

#[tokio::test]
async fn invalid_specs_are_refused_with_the_pointer_of_the_field_at_fault() {
    let app = spawn().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "unknown top-level field",
            edited(|s| s["colour"] = json!("blue")),
            "/colour",
        ),
        (
            "unknown stream field",
            edited(|s| s["streams"][2]["extra"] = json!(1)),
            "/streams/2/extra",
        ),
        (
            "unknown pagination field",
            edited(|s| s["streams"][0]["pagination"]["page_size"] = json!(5)),
            "/streams/0/pagination/page_size",
        ),
        (
            "wrong type",
            edited(|s| s["timeout_ms"] = json!("slow")),
            "/timeout_ms",
        ),
        (
            "key not a JSON pointer",
            edited(|s| s["streams"][1]["records"]["key"] = json!("id")),
            "/streams/1/records/key",
        ),
        (
            "limit out of range",
            edited(|s| s["streams"][0]["pagination"]["limit"] = json!(0)),
            "/streams/0/pagination/limit",
        ),
        (
            "limit far out of range",
            edited(|s| s["streams"][3]["pagination"]["limit"] = json!(1_000_000)),
            "/streams/3/pagination/limit",
        ),
        (
            "deletes names no stream",
            edited(|s| s["streams"][4]["deletes"] = json!("ghosts")),
            "/streams/4/deletes",
        ),
        (
            "duplicate stream names",
            edited(|s| s["streams"][5]["name"] = json!("products")),
            "/streams/5/name",
        ),
        (
            "bad source name",
            edited(|s| s["name"] = json!("Shop!")),
            "/name",
        ),
        (
            "bad stream name",
            edited(|s| s["streams"][3]["name"] = json!("")),
            "/streams/3/name",
        ),
        (
            "unknown pagination type",
            edited(|s| s["streams"][5]["pagination"]["type"] = json!("cursor")),
            "/streams/5/pagination/type",
        ),
        (
            "missing required field",
            edited(|s| {
                s["streams"][1]["pagination"]
                    .as_object_mut()
                    .unwrap()
                    .remove("until");
            }),
            "/streams/1/pagination",
        ),
        (
            "base_url not http",
            edited(|s| s["base_url"] = json!("ftp://example.com")),
            "/base_url",
        ),
        (
            "unknown auth type",
            edited(|s| s["auth"] = json!({"type": "magic"})),
            "/auth/type",
        ),
        (
            "env name invalid",
            edited(|s| s["auth"]["token"] = json!({"env": "1 BAD"})),
            "/auth/token/env",
        ),
        (
            "refresh grant without token",
            edited(
                |s| s["auth"] = json!({"type": "oauth2", "token_url": "http://127.0.0.1:1/t", "grant": "refresh_token", "client_id": "c"}),
            ),
            "/auth/refresh_token",
        ),
        (
            "bad cron",
            edited(|s| s["streams"][0]["schedule"] = json!({"cron": "every day"})),
            "/streams/0/schedule/cron",
        ),
        (
            "zero interval",
            edited(|s| s["streams"][0]["schedule"] = json!({"every_seconds": 0})),
            "/streams/0/schedule/every_seconds",
        ),
        (
            "keyset without updated_at",
            edited(|s| {
                s["streams"][0]["records"]
                    .as_object_mut()
                    .unwrap()
                    .remove("updated_at");
            }),
            "/streams/0/records/updated_at",
        ),
        (
            "body on a GET",
            edited(|s| s["streams"][0]["request"]["body"] = json!({"q": 1})),
            "/streams/0/request/body",
        ),
        (
            "path without slash",
            edited(|s| s["streams"][5]["request"]["path"] = json!("orders")),
            "/streams/5/request/path",
        ),
        (
            "bad header name",
            edited(|s| s["headers"] = json!({"Bad Header": "x"})),
            "/headers/Bad Header",
        ),
        (
            "offset and page params",
            edited(|s| s["streams"][4]["pagination"]["offset_param"] = json!("offset")),
            "/streams/4/pagination/page_param",
        ),
        (
            "no streams",
            edited(|s| s["streams"] = json!([])),
            "/streams",
        ),
        (
            "deletions stream deletes itself",
            edited(|s| s["streams"][4]["deletes"] = json!("items_deleted")),
            "/streams/4/deletes",
        ),
        (
            "retry attempts zero",
            edited(|s| s["retry"]["max_attempts"] = json!(0)),
            "/retry/max_attempts",
        ),
        (
            "number for an enum",
            edited(|s| s["streams"][0]["request"]["method"] = json!(5)),
            "/streams/0/request/method",
        ),
        (
            "number for a schedule",
            edited(|s| s["streams"][0]["schedule"] = json!(900)),
            "/streams/0/schedule",
        ),
        (
            "client credentials without secret",
            edited(
                |s| s["auth"] = json!({"type": "oauth2", "token_url": "http://127.0.0.1:1/t", "grant": "client_credentials", "client_id": "c"}),
            ),
            "/auth/client_secret",
        ),
        (
            "empty key pointer",
            edited(|s| s["streams"][2]["records"]["key"] = json!("")),
            "/streams/2/records/key",
        ),
        (
            "token body without since",
            edited(|s| s["streams"][1]["request"]["body"]["variables"]["since"] = json!("x")),
            "/streams/1/request/body",
        ),
        (
            "credentials in headers",
            edited(|s| s["headers"]["Authorization"] = json!("Bearer x")),
            "/headers/Authorization",
        ),
        (
            "credentials in stream headers",
            edited(|s| s["streams"][0]["request"]["headers"] = json!({"cookie": "a=b"})),
            "/streams/0/request/headers/cookie",
        ),
        (
            "backoff bounds reversed",
            edited(|s| s["retry"]["initial_backoff_ms"] = json!(60000)),
            "/retry/max_backoff_ms",
        ),
        (
            "start_page without page_param",
            edited(|s| s["streams"][3]["pagination"]["start_page"] = json!(1)),
            "/streams/3/pagination/start_page",
        ),
        (
            "link limit without its parameter",
            edited(|s| {
                s["streams"][5]["pagination"]
                    .as_object_mut()
                    .unwrap()
                    .remove("limit_param");
            }),
            "/streams/5/pagination/limit_param",
        ),
        (
            "negative rate",
            edited(|s| s["rate_limit"]["max_requests_per_second"] = json!(-1)),
            "/rate_limit/max_requests_per_second",
        ),
    ];
    assert!(cases.len() >= 10);
    for (what, spec, pointer) in cases {
        let problem =
            assert_problem(app.post("/v1/sources", &spec).await, 422, "invalid-spec").await;
        assert_eq!(problem["pointer"], pointer, "{what}: {problem}");
    }
    // Nothing was stored by any of them.
    let list: Value = app.get_json("/v1/sources").await;
    assert_eq!(list["results"], json!([]));
}

#[tokio::test]
async fn malformed_bodies_get_problem_documents() {
    let app = spawn().await;
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app.request(Method::POST, "/v1/sources").body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    assert_problem(
        send("{\"name\": ", Some("application/json")).await.unwrap(),
        400,
        "malformed-json",
    )
    .await;
    assert_problem(
        send("{} trailing", Some("application/json")).await.unwrap(),
        400,
        "malformed-json",
    )
    .await;
    assert_problem(
        send("", Some("application/json")).await.unwrap(),
        400,
        "malformed-json",
    )
    .await;
    assert_problem(
        send("name=shop", Some("application/x-www-form-urlencoded"))
            .await
            .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    assert_problem(
        send("{}", None).await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    // A JSON document of the wrong kind is well-formed but invalid.
    let problem = assert_problem(
        send("\"shop\"", Some("application/json")).await.unwrap(),
        422,
        "invalid-spec",
    )
    .await;
    assert_eq!(problem["pointer"], "");
    // `+json` media types and charset parameters are JSON too.
    let ok = app
        .request(Method::POST, "/v1/sources")
        .header("content-type", "application/vnd.api+json; charset=utf-8")
        .body(design_source().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = spawn_with(|c| c.max_body_bytes = 4096, None).await;
    let mut spec = design_source();
    spec["headers"]["X-Padding"] = json!("x".repeat(8192));
    assert_problem(
        app.post("/v1/sources", &spec).await,
        413,
        "payload-too-large",
    )
    .await;
    // Also without a Content-Length: a chunked body, written by hand over TCP.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST /v1/sources HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..10 {
        request.push_str(&format!("3e8\r\n{}\r\n", "x".repeat(1000)));
    }
    request.push_str("0\r\n\r\n");
    // The server may answer and close before the whole body is written.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_documents() {
    let app = spawn().await;
    assert_problem(app.get("/nope").await, 404, "not-found").await;
    assert_problem(app.get("/v1/nope").await, 404, "not-found").await;
    assert_problem(
        app.get("/v1/sources/Not%20A%20Name").await,
        404,
        "not-found",
    )
    .await;
    let patch = app
        .request(Method::PATCH, "/v1/sources")
        .send()
        .await
        .unwrap();
    assert!(patch.headers().contains_key("allow"));
    assert_problem(patch, 405, "method-not-allowed").await;
    let post = app.request(Method::POST, "/healthz").send().await.unwrap();
    assert_problem(post, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = spawn().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let ready: Value = app.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready");

    // A request id sent in is echoed back.
    let echoed = app
        .request(Method::GET, "/healthz")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");

    app.get("/v1/sources").await;
    let metrics = app.get("/metrics").await;
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("http_requests_total{"), "{text}");
    assert!(text.contains("route=\"/v1/sources\""), "{text}");
    assert!(text.contains("http_request_duration_seconds"), "{text}");
}

#[tokio::test]
async fn without_tokens_only_loopback_addresses_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let app = tidemark::App::build(tidemark::Config::new(url))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = app.serve(listener, async {}).await;
    let message = refused
        .expect_err("an open API on a public address is refused")
        .to_string();
    assert!(message.contains("TIDEMARK_API_TOKENS"), "{message}");
}

/// Reads what the server sends until it closes the connection; `None` when it is still
/// open after `within`.
async fn read_until_closed(
    tcp: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    match tokio::time::timeout(within, tcp.read_to_end(&mut received)).await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_but_long_polls_are_not() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let app = spawn_with(
        |c| c.client_timeout = tidemark::config::Period(Duration::from_secs(1)),
        None,
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(addr.clone());

    // A long-poll outlasts the client timeout: the limit is on what the client sends.
    let long_poll = app.get("/v1/changes?wait=3");

    // Connects and sends nothing.
    let started = Instant::now();
    let mut silent = connect().await.unwrap();
    let sent = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(
        sent.is_some(),
        "a silent connection is still open after 10 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // Sends its request head a byte every 100 ms: it never finishes within the timeout.
    let started = Instant::now();
    let mut slow = connect().await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(40)
    );
    for byte in head.as_bytes() {
        if slow.write_all(&[*byte]).await.is_err() || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let answer = answer.expect("a slow head is still open after 10 s");
    assert!(
        !answer.contains("200 OK"),
        "a head that took {:?} was served: {answer}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    // Sends its head and part of the body, then stalls.
    let mut stalled = connect().await.unwrap();
    let request = format!(
        "POST /v1/sources HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"name\": "
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    let answer = answer.expect("a stalled body is still open after 10 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // An idle keep-alive connection is closed after the timeout too.
    let mut idle = connect().await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(
        answer
            .expect("an idle keep-alive connection is still open after 10 s")
            .starts_with("HTTP/1.1 200")
    );

    let long_poll = long_poll.await;
    assert_eq!(long_poll.status(), 200);
}
