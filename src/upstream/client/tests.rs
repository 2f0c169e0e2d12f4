//! The client against small scripted upstreams on loopback: each test starts its own
//! server(s) on `127.0.0.1:0`, sends a bounded number of requests and uses millisecond
//! backoffs, so each takes well under 3 s.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::upstream::policy::HostPolicy;

/// A reply the fake upstream gives, in script order.
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn canned(status: u16, body: &str) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

impl Canned {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the fake upstream received.
#[derive(Clone)]
struct Seen {
    at: Instant,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A fake upstream: answers every path from its script, then `{"ok": true}`.
#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Canned>>,
    seen: Mutex<Vec<Seen>>,
}

impl Fake {
    fn script(&self, replies: impl IntoIterator<Item = Canned>) {
        self.script.lock().unwrap().extend(replies);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn scripted(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        uri,
        headers,
        body,
    });
    let next = fake.script.lock().unwrap().pop_front();
    let next = next.unwrap_or_else(|| canned(200, r#"{"ok":true}"#));
    tokio::time::sleep(next.delay).await;
    let mut response = (StatusCode::from_u16(next.status).unwrap(), next.body).into_response();
    for (name, value) in next.headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    response
}

/// Starts a fake upstream; returns it and its base URL.
async fn start() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new().fallback(scripted).with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, base)
}

/// A base URL on which nothing listens.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    base
}

/// A valid source on `base` with tiny backoffs; `extra` overrides top-level fields.
fn spec(base: &str, extra: Value) -> SourceSpec {
    let mut doc = json!({
        "name": "src",
        "base_url": base,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 10},
        "streams": [{"name": "s", "request": {"path": "/x"}, "records": {"key": "/id"},
                     "pagination": {"type": "none"}}]
    });
    if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
        doc.extend(extra);
    }
    serde_json::from_value(doc).unwrap()
}

fn client(base: &str, extra: Value) -> Arc<SourceClient> {
    Upstream::new().source(&spec(base, extra))
}

fn get(path: &str) -> Request {
    Request {
        method: Method::Get,
        target: Target::Path {
            path: path.to_owned(),
            query: Vec::new(),
        },
        headers: Vec::new(),
        body: None,
    }
}

fn get_url(url: &str) -> Request {
    Request {
        target: Target::Url(Url::parse(url).unwrap()),
        ..get("/")
    }
}

fn json_body(reply: &Reply) -> Result<Value, BodyError> {
    serde_json::from_slice(&reply.body).map_err(|e| BodyError::Transient(e.to_string()))
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

fn form(seen: &Seen) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&seen.body)
        .into_owned()
        .collect()
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

#[tokio::test]
async fn bearer_tokens_are_sent() {
    let (fake, base) = start().await;
    let src = client(
        &base,
        json!({"auth": {"type": "bearer", "token": {"value": "t0ken-abc"}}}),
    );
    let fetched = src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fetched.value, json!({"ok": true}));
    assert_eq!(fetched.attempts, 1);
    assert_eq!(
        header(&fake.seen()[0], "authorization"),
        Some("Bearer t0ken-abc")
    );
}

#[tokio::test]
async fn basic_auth_is_sent() {
    let (fake, base) = start().await;
    let src = client(
        &base,
        json!({"auth": {"type": "basic", "username": "user", "password": "pa55w0rd"}}),
    );
    src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(
        header(&fake.seen()[0], "authorization"),
        Some("Basic dXNlcjpwYTU1dzByZA==")
    );
}

#[tokio::test]
async fn header_api_keys_are_sent() {
    let (fake, base) = start().await;
    let src = client(
        &base,
        json!({"auth": {"type": "header", "name": "X-Api-Key", "value": "k3y-value"}}),
    );
    let request = Request {
        // The credential wins over a stream header of the same name.
        headers: vec![pair("x-api-key", "stream")],
        ..get("/x")
    };
    src.fetch(&request, json_body).await.unwrap();
    let seen = &fake.seen()[0];
    assert_eq!(header(seen, "x-api-key"), Some("k3y-value"));
    assert_eq!(seen.headers.get_all("x-api-key").iter().count(), 1);
    assert_eq!(header(seen, "authorization"), None);
}

#[tokio::test]
async fn query_api_keys_are_sent_and_never_shown() {
    let (fake, base) = start().await;
    let src = client(
        &base,
        json!({"auth": {"type": "query", "name": "api_key", "value": "s3cret-key"}}),
    );
    let request = Request {
        target: Target::Path {
            path: "/x".into(),
            query: vec![
                pair("updated_since", "2017-09-04 00:00:00 +03:00"),
                pair("from_id", "12"),
            ],
        },
        ..get("/")
    };
    src.fetch(&request, json_body).await.unwrap();
    let seen = &fake.seen()[0];
    assert_eq!(
        seen.uri.query(),
        Some("updated_since=2017-09-04%2000%3A00%3A00%20%2B03%3A00&from_id=12&api_key=s3cret-key")
    );

    // A next URL that already carries a key gets the configured one, once.
    src.fetch(&get_url(&format!("{base}/x?page=2&api_key=old")), json_body)
        .await
        .unwrap();
    assert_eq!(
        fake.seen()[1].uri.query(),
        Some("page=2&api_key=s3cret-key")
    );

    // An upstream that echoes the key back does not get it into errors.
    fake.script([canned(404, r#"{"error":"unknown key s3cret-key"}"#)]);
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    let UpstreamError::Status { status, body, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*status, 404);
    assert_eq!(body, r#"{"error":"unknown key REDACTED"}"#);
    let shown = format!("{err} {:?}", err.problem());
    assert!(!shown.contains("s3cret-key"), "{shown}");

    let err = src
        .fetch(
            &get_url("http://127.0.0.1:1/x?api_key=s3cret-key&a=1"),
            json_body,
        )
        .await
        .unwrap_err();
    let shown = format!("{err} {:?}", err.problem());
    assert!(!shown.contains("s3cret-key"), "{shown}");
    assert!(shown.contains("api_key=REDACTED"), "{shown}");
}

#[tokio::test]
async fn env_secrets_are_read_at_request_time() {
    const NAME: &str = "TIDEMARK_TEST_CLIENT_BEARER_FROM_ENV";
    const UNSET: &str = "TIDEMARK_TEST_CLIENT_NEVER_SET";
    // SAFETY: each test uses its own variable names, and std serialises its own
    // environment accesses; nothing in this process reads these through libc.
    unsafe { std::env::set_var(NAME, "env-t0ken") };
    let (fake, base) = start().await;
    let src = client(
        &base,
        json!({"auth": {"type": "bearer", "token": {"env": NAME}}}),
    );
    src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(
        header(&fake.seen()[0], "authorization"),
        Some("Bearer env-t0ken")
    );

    let src = client(
        &base,
        json!({"auth": {"type": "bearer", "token": {"env": UNSET}}}),
    );
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Credentials { detail, attempts: 0 } if detail.contains(UNSET)),
        "{err:?}"
    );
    assert_eq!(err.problem().kind, "upstream-credentials");
    assert_eq!(fake.seen().len(), 1, "nothing is sent without credentials");
}

#[tokio::test]
async fn oauth2_client_credentials_are_fetched_once_and_cached() {
    let (api, base) = start().await;
    let (auth, auth_base) = start().await;
    auth.script([canned(
        200,
        r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#,
    )]);
    let src = client(
        &base,
        json!({
            "headers": {"X-Source": "only-for-the-api"},
            "auth": {"type": "oauth2", "token_url": format!("{auth_base}/oauth/token"),
                     "grant": "client_credentials", "client_id": "cid",
                     "client_secret": "csecret", "scope": "read write"}
        }),
    );
    // Concurrent requests share one token fetch.
    let (x, y) = (get("/x"), get("/y"));
    let (a, b) = tokio::join!(src.fetch(&x, json_body), src.fetch(&y, json_body));
    a.unwrap();
    b.unwrap();
    src.fetch(&get("/z"), json_body).await.unwrap();

    let tokens = auth.seen();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].uri.path(), "/oauth/token");
    assert_eq!(
        form(&tokens[0]),
        vec![
            pair("grant_type", "client_credentials"),
            pair("client_id", "cid"),
            pair("client_secret", "csecret"),
            pair("scope", "read write"),
        ]
    );
    assert_eq!(header(&tokens[0], "x-source"), None);
    assert_eq!(header(&tokens[0], "authorization"), None);
    let seen = api.seen();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(header(request, "authorization"), Some("Bearer tok-1"));
    }
}

#[tokio::test]
async fn oauth2_refresh_tokens_rotate_and_a_401_renews_the_token() {
    let (api, base) = start().await;
    let (auth, auth_base) = start().await;
    auth.script([
        canned(
            200,
            r#"{"access_token":"tok-1","expires_in":"3600","refresh_token":"rot-1"}"#,
        ),
        canned(200, r#"{"access_token":"tok-2","expires_in":3600}"#),
        canned(200, r#"{"access_token":"tok-3","expires_in":3600}"#),
    ]);
    api.script([canned(401, r#"{"error":"token expired"}"#)]);
    let src = client(
        &base,
        json!({
            // The renewal comes on top of the attempts.
            "retry": {"max_attempts": 1, "initial_backoff_ms": 1, "max_backoff_ms": 1},
            "auth": {"type": "oauth2", "token_url": format!("{auth_base}/token"),
                     "grant": "refresh_token", "client_id": "cid", "refresh_token": "r0"}
        }),
    );
    let fetched = src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fetched.attempts, 2);

    let tokens = auth.seen();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        form(&tokens[0]),
        vec![
            pair("grant_type", "refresh_token"),
            pair("refresh_token", "r0"),
            pair("client_id", "cid"),
        ]
    );
    // The rotated refresh token replaces the configured one.
    assert!(form(&tokens[1]).contains(&pair("refresh_token", "rot-1")));
    let seen = api.seen();
    assert_eq!(header(&seen[0], "authorization"), Some("Bearer tok-1"));
    assert_eq!(header(&seen[1], "authorization"), Some("Bearer tok-2"));

    // A token refused again after the renewal is an error, not a loop.
    api.script([canned(401, "no"), canned(401, "still no")]);
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                status: 401,
                attempts: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(auth.seen().len(), 3);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_credentials_error() {
    let (api, base) = start().await;
    let (auth, auth_base) = start().await;
    auth.script([
        canned(503, "busy"),
        canned(
            401,
            r#"{"error":"invalid_client","error_description":"csecret is wrong"}"#,
        ),
    ]);
    let src = client(
        &base,
        json!({
            "auth": {"type": "oauth2", "token_url": format!("{auth_base}/token"),
                     "grant": "client_credentials", "client_id": "cid", "client_secret": "csecret"}
        }),
    );
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    let UpstreamError::Credentials { detail, attempts } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*attempts, 0);
    assert!(
        detail.contains("401") && detail.contains("invalid_client"),
        "{detail}"
    );
    assert!(!format!("{:?}", err.problem()).contains("csecret"));
    assert_eq!(auth.seen().len(), 2, "the 503 was retried, the 401 was not");

    auth.script([canned(200, r#"{"access_token": 12345}"#)]);
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Credentials { detail, .. } if detail.contains("usable `access_token`")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("12345"));
    assert!(api.seen().is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let (fake, base) = start().await;
    fake.script([canned(500, "oops"), canned(502, "bad gateway")]);
    let src = client(&base, json!({}));
    // Spawned, as workers run it: the future must be Send.
    let fetched = tokio::spawn(async move { src.fetch(&get("/x"), json_body).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.attempts, 3);
    assert_eq!(fake.seen().len(), 3);
}

#[tokio::test]
async fn exhausted_attempts_fail_with_the_last_status() {
    let (fake, base) = start().await;
    fake.script((0..3).map(|_| canned(503, "down for maintenance")));
    let src = client(&base, json!({}));
    let err = src.fetch(&get("/items"), json_body).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.attempts(), 3);
    assert_eq!(fake.seen().len(), 3);
    let problem = err.problem();
    assert_eq!(problem.kind, "upstream-status");
    assert_eq!(problem.status, 502);
    for part in ["/items", "503", "3 attempt", "down for maintenance"] {
        assert!(problem.detail.contains(part), "{part}: {}", problem.detail);
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (fake, base) = start().await;
    fake.script([canned(404, r#"{"error":"INVALID_SINCE_FORMAT"}"#)]);
    let src = client(&base, json!({}));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    let UpstreamError::Status {
        status,
        body,
        attempts,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*status, *attempts), (404, 1));
    assert!(body.contains("INVALID_SINCE_FORMAT"));
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (fake, base) = start().await;
    fake.script([canned(429, "slow down").header("retry-after", "1")]);
    let src = client(&base, json!({}));
    let fetched = src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fetched.attempts, 2);
    let seen = fake.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_at_once() {
    let (fake, base) = start().await;
    fake.script([canned(503, "later").header("retry-after", "86400")]);
    let src = client(&base, json!({}));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                status: 503,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn transient_bodies_are_retried_and_fatal_ones_are_not() {
    let (fake, base) = start().await;
    fake.script([canned(200, r#"{"items": [1, 2"#)]);
    let src = client(&base, json!({}));
    let fetched = src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fetched.attempts, 2);
    assert_eq!(fetched.value, json!({"ok": true}));

    let err = src
        .fetch(&get("/x"), |_| {
            Err::<(), _>(BodyError::Fatal("no records at /items".into()))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UpstreamError::Body { attempts: 1, detail, .. } if detail.contains("/items")),
        "{err:?}"
    );
    assert_eq!(err.problem().kind, "upstream-bad-body");

    fake.script((0..3).map(|_| canned(200, "<html>")));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Body { attempts: 3, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn bodies_above_the_cap_are_refused() {
    let (fake, base) = start().await;
    fake.script([canned(200, &"a".repeat(2000))]);
    let src = Upstream::with_max_body_bytes(1024).source(&spec(&base, json!({})));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::TooLarge {
                limit: 1024,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.problem().kind, "upstream-too-large");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn chunked_bodies_are_cut_at_the_cap() {
    // A chunked reply declares no length, so only counting while reading catches it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65_536 {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..4 {
            reply.extend_from_slice(format!("258\r\n{}\r\n", "b".repeat(600)).as_bytes());
        }
        reply.extend_from_slice(b"0\r\n\r\n");
        // The client may hang up once it has read enough.
        let _ = socket.write_all(&reply).await;
    });
    let src = Upstream::with_max_body_bytes(1024).source(&spec(&base, json!({})));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::TooLarge {
                limit: 1024,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_origin() {
    let (fake, base) = start().await;
    let (elsewhere, other_base) = start().await;
    fake.script([canned(302, "").header("location", "/moved")]);
    let src = client(&base, json!({}));
    let fetched = src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fetched.attempts, 1);
    let paths: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/x", "/moved"]);

    fake.script([canned(302, "").header("location", format!("{other_base}/x"))]);
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Status {
                status: 302,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.problem().detail.contains("redirects"));
    assert!(elsewhere.seen().is_empty());

    fake.script((0..7).map(|i| canned(302, "").header("location", format!("/loop{i}"))));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Status { status: 302, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn foreign_urls_are_never_requested() {
    let (fake, base) = start().await;
    let (_, other_base) = start().await;
    let src = client(&base, json!({}));
    for url in [
        format!("{other_base}/x"),
        "http://example.com/x".to_owned(),
        base.replace("http:", "https:") + "/x",
    ] {
        let err = src.fetch(&get_url(&url), json_body).await.unwrap_err();
        assert!(matches!(err, UpstreamError::ForeignHost { .. }), "{err:?}");
        assert_eq!(err.problem().kind, "upstream-foreign-host");
        assert_eq!(err.attempts(), 0);
    }
    assert!(fake.seen().is_empty());

    src.fetch(&get_url(&format!("{base}/next?cursor=abc#frag")), json_body)
        .await
        .unwrap();
    assert_eq!(fake.seen()[0].uri.to_string(), "/next?cursor=abc");
}

#[tokio::test]
async fn the_throttle_spaces_request_starts() {
    let (fake, base) = start().await;
    let src = client(&base, json!({"rate_limit": {"min_interval_ms": 200}}));
    let x = get("/x");
    let (a, b, c) = tokio::join!(
        src.fetch(&x, json_body),
        src.fetch(&x, json_body),
        src.fetch(&x, json_body)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let mut times: Vec<Instant> = fake.seen().iter().map(|s| s.at).collect();
    times.sort();
    for gap in times.windows(2).map(|w| w[1] - w[0]) {
        // 200 ms apart when sent; loopback delivery may shift each by a little.
        assert!(gap >= Duration::from_millis(150), "{gap:?}");
    }
}

#[tokio::test]
async fn a_spent_rate_limit_delays_the_next_request() {
    let (fake, base) = start().await;
    fake.script([canned(200, "{}")
        .header("ratelimit-remaining", "0")
        .header("ratelimit-reset", "1")]);
    let src = client(&base, json!({}));
    src.fetch(&get("/x"), json_body).await.unwrap();
    src.fetch(&get("/x"), json_body).await.unwrap();
    let seen = fake.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(950));
}

#[tokio::test]
async fn connect_errors_fail_after_max_attempts() {
    let base = closed_port().await;
    let src = client(&base, json!({}));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::Transport { attempts: 3, .. }),
        "{err:?}"
    );
    let problem = err.problem();
    assert_eq!(problem.kind, "upstream-unreachable");
    assert!(problem.detail.contains("/x"), "{}", problem.detail);
}

#[tokio::test]
async fn slow_replies_time_out_and_are_retried() {
    let (fake, base) = start().await;
    fake.script([canned(200, "{}").delayed(Duration::from_millis(500))]);
    let src = client(&base, json!({"timeout_ms": 100}));
    let fetched = src.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fetched.attempts, 2);
}

#[tokio::test]
async fn headers_and_json_bodies_are_sent_as_given() {
    let (fake, base) = start().await;
    let src = client(
        &base,
        json!({"base_url": format!("{base}/api/"),
               "headers": {"X-Source": "a", "X-Both": "source"}}),
    );
    let body: Value =
        serde_json::from_str(r#"{"since":"","n":1684739969.358085,"id":1160406004324630614}"#)
            .unwrap();
    let request = Request {
        method: Method::Post,
        headers: vec![pair("X-Both", "stream"), pair("X-Stream", "b")],
        body: Some(body),
        ..get("/graphql")
    };
    let fetched = src.fetch(&request, json_body).await.unwrap();
    let seen = &fake.seen()[0];
    assert_eq!(seen.uri.path(), "/api/graphql");
    assert_eq!(header(seen, "x-source"), Some("a"));
    assert_eq!(header(seen, "x-both"), Some("stream"));
    assert_eq!(header(seen, "x-stream"), Some("b"));
    assert_eq!(header(seen, "accept"), Some("application/json"));
    assert_eq!(header(seen, "content-type"), Some("application/json"));
    assert!(header(seen, "user-agent").is_some_and(|ua| ua.starts_with("tidemark/")));
    // Numbers go out exactly as written, no float round-trip.
    let sent = std::str::from_utf8(&seen.body).unwrap();
    assert!(sent.contains(r#""n":1684739969.358085"#), "{sent}");
    assert!(sent.contains(r#""id":1160406004324630614"#), "{sent}");
    // The server's clock, from its Date header.
    let date = fetched.reply_date.unwrap();
    assert!((Utc::now() - date).num_seconds().abs() <= 5);
}

#[tokio::test]
async fn an_equal_spec_keeps_its_handle() {
    let upstream = Upstream::new();
    let a = upstream.source(&spec("http://127.0.0.1:9", json!({})));
    let b = upstream.source(&spec("http://127.0.0.1:9", json!({})));
    assert!(Arc::ptr_eq(&a, &b));
    let c = upstream.source(&spec("http://127.0.0.1:9", json!({"timeout_ms": 5})));
    assert!(!Arc::ptr_eq(&a, &c));
    let d = upstream
        .clone()
        .source(&spec("http://127.0.0.1:9", json!({"timeout_ms": 5})));
    assert!(Arc::ptr_eq(&c, &d));
}

#[test]
fn every_error_has_a_stable_problem() {
    let path = || "/p".to_owned();
    let cases = [
        (
            UpstreamError::Status {
                status: 400,
                body: String::new(),
                attempts: 1,
                path: path(),
            },
            "upstream-status",
        ),
        (
            UpstreamError::Transport {
                detail: "reset".into(),
                attempts: 2,
                path: path(),
            },
            "upstream-unreachable",
        ),
        (
            UpstreamError::Body {
                detail: "eof".into(),
                attempts: 3,
                path: path(),
            },
            "upstream-bad-body",
        ),
        (
            UpstreamError::TooLarge {
                limit: 1,
                attempts: 1,
                path: path(),
            },
            "upstream-too-large",
        ),
        (
            UpstreamError::ForeignHost {
                url: "http://x/p".into(),
            },
            "upstream-foreign-host",
        ),
        (
            UpstreamError::ForbiddenHost(
                HostPolicy::default()
                    .check("http://169.254.169.254/p")
                    .unwrap_err(),
            ),
            "upstream-forbidden-host",
        ),
        (
            UpstreamError::Credentials {
                detail: "unset".into(),
                attempts: 0,
            },
            "upstream-credentials",
        ),
        (
            UpstreamError::Request {
                detail: "bad header".into(),
            },
            "upstream-bad-request",
        ),
    ];
    for (error, kind) in cases {
        let problem = error.problem();
        assert_eq!(problem.kind, kind);
        assert_eq!(problem.status, 502);
        assert!(
            problem.detail.contains("/p") || error.attempts() == 0,
            "{problem:?}"
        );
    }
}

#[test]
fn query_values_are_encoded_verbatim() {
    assert_eq!(encode("a b+c/é~"), "a%20b%2Bc%2F%C3%A9~");
    let mut url = Url::parse("http://h/p?a=1&key=old&b=%20").unwrap();
    set_query_param(&mut url, "key", Some("n&w"));
    assert_eq!(url.query(), Some("a=1&b=%20&key=n%26w"));
    set_query_param(&mut url, "key", None);
    assert_eq!(url.query(), Some("a=1&b=%20"));
}

#[test]
fn secrets_are_scrubbed_from_error_bodies() {
    let secrets = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        scrub("bad key abcd1234", &secrets(&["abcd1234"])),
        "bad key REDACTED"
    );
    assert_eq!(scrub("a b c", &secrets(&["a"])), "a b c");
    assert_eq!(scrub("x", &[]), "x");
    assert_eq!(
        scrub("GET /x?key=k%2By%20z&key=k+y z", &secrets(&["k+y z"])),
        "GET /x?key=REDACTED&key=REDACTED"
    );
    let basic = Credentials::Basic {
        username: "u".into(),
        password: "pass-1234".into(),
    };
    assert_eq!(
        scrub(
            "you sent Basic dTpwYXNzLTEyMzQ= (pass-1234)",
            &basic.echoes()
        ),
        "you sent Basic REDACTED (REDACTED)"
    );
}

/// A DNS server under an attacker's control, answering from a fixed table (every other
/// name does not resolve), so no test asks a real DNS server.
struct Table(Vec<(&'static str, &'static str)>);

impl Resolve for Table {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found: Vec<std::net::SocketAddr> = self
            .0
            .iter()
            .filter(|(host, _)| *host == name.as_str())
            .map(|(_, ip)| std::net::SocketAddr::new(ip.parse().unwrap(), 0))
            .collect();
        Box::pin(async move {
            if found.is_empty() {
                return Err("no such name".into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn guarded(policy: &str) -> Upstream {
    Upstream::with_resolver(
        policy.parse().unwrap(),
        Arc::new(Table(vec![
            ("api.test", "127.0.0.1"),
            ("evil.test", "169.254.169.254"),
            ("rebind.test", "127.0.0.1"),
            ("rebind.test", "fd00:ec2::254"),
        ])),
    )
}

fn assert_forbidden(err: &UpstreamError, host: &str) {
    assert!(matches!(err, UpstreamError::ForbiddenHost(_)), "{err:?}");
    let problem = err.problem();
    assert_eq!(problem.kind, "upstream-forbidden-host");
    assert!(problem.detail.contains(host), "{problem:?}");
    assert_eq!(err.attempts(), 0);
}

#[tokio::test]
async fn names_that_resolve_to_metadata_addresses_are_never_connected_to() {
    let (fake, base) = start().await;
    let port = Url::parse(&base).unwrap().port().unwrap();
    let upstream = guarded("");
    // A name resolving to loopback goes through the guard to the upstream.
    let fine = upstream.source(&spec(&format!("http://api.test:{port}"), json!({})));
    fine.fetch(&get("/x"), json_body).await.unwrap();
    assert_eq!(fake.seen().len(), 1);
    // One resolving to a metadata address is refused at once: no retry, no connection.
    for host in ["evil.test", "rebind.test"] {
        let src = upstream.source(&spec(&format!("http://{host}:{port}"), json!({})));
        let started = Instant::now();
        let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
        assert_forbidden(&err, host);
        assert!(err.problem().detail.contains("resolves to"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Written as an address or as a metadata name, it is refused before any lookup.
    for base in ["http://169.254.169.254", "http://metadata.google.internal"] {
        let src = upstream.source(&spec(base, json!({})));
        let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
        assert_forbidden(&err, &base[7..]);
    }
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn a_token_endpoint_on_a_refused_host_gets_no_credentials() {
    let (fake, base) = start().await;
    let port = Url::parse(&base).unwrap().port().unwrap();
    for token_url in [
        format!("http://evil.test:{port}/oauth/token"),
        "http://169.254.169.254/oauth/token".to_owned(),
    ] {
        let src = guarded("").source(&spec(
            &base,
            json!({"auth": {"type": "oauth2", "grant": "client_credentials",
                "client_id": "c", "client_secret": "s3cret", "token_url": token_url}}),
        ));
        let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
        let host = Url::parse(&token_url)
            .unwrap()
            .host_str()
            .unwrap()
            .to_owned();
        assert_forbidden(&err, &host);
    }
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn the_allowlist_is_applied_to_every_request() {
    let (fake, base) = start().await;
    let port = Url::parse(&base).unwrap().port().unwrap();
    // The source was registered when any host was allowed; the list changed since.
    let upstream = guarded("api.test");
    let src = upstream.source(&spec(&base, json!({})));
    let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
    assert_forbidden(&err, "127.0.0.1");
    assert!(err.problem().detail.contains("TIDEMARK_UPSTREAM_ALLOW"));
    assert!(fake.seen().is_empty());
    let named = upstream.source(&spec(&format!("http://api.test:{port}"), json!({})));
    named.fetch(&get("/x"), json_body).await.unwrap();
    // A token endpoint off the list is refused as well, before the API is asked.
    let oauth = upstream.source(&spec(
        &format!("http://api.test:{port}"),
        json!({"auth": {"type": "oauth2", "grant": "client_credentials",
            "client_id": "c", "client_secret": "s3cret", "token_url": format!("{base}/token")}}),
    ));
    let err = oauth.fetch(&get("/x"), json_body).await.unwrap_err();
    assert_forbidden(&err, "127.0.0.1");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn redirects_to_metadata_addresses_are_not_followed() {
    let (fake, base) = start().await;
    let src = guarded("").source(&spec(&base, json!({})));
    for location in [
        "http://169.254.169.254/latest/meta-data/",
        "http://evil.test/latest/meta-data/",
    ] {
        fake.script([canned(302, "").header("location", location)]);
        let err = src.fetch(&get("/x"), json_body).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::Status { status: 302, .. }),
            "{err:?}"
        );
    }
}
