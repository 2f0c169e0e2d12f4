//! Security: which upstream hosts a source may name and a job may reach.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    assert_problem, database_url, design_source, eventually, ready_if, sandbox, spawn_on,
    spawn_with, wait_until_serving,
};

#[tokio::test]
async fn sources_naming_refused_hosts_are_not_registered() {
    let app = spawn_with(
        |c| c.upstream_allow = "localhost, *.example.com".parse().unwrap(),
        None,
    )
    .await;
    let cases = [
        // Off the list: `localhost` is a name, 127.0.0.1 another host.
        (
            "base_url",
            json!("http://127.0.0.1:9000"),
            "/base_url",
            "TIDEMARK_UPSTREAM_ALLOW",
        ),
        (
            "base_url",
            json!("https://example.com"),
            "/base_url",
            "TIDEMARK_UPSTREAM_ALLOW",
        ),
        // Refused whatever the list says.
        (
            "base_url",
            json!("http://169.254.169.254"),
            "/base_url",
            "metadata",
        ),
        (
            "base_url",
            json!("http://metadata.google.internal"),
            "/base_url",
            "metadata",
        ),
        (
            "base_url",
            json!("http://[fd00:ec2::254]"),
            "/base_url",
            "metadata",
        ),
        (
            "auth",
            json!({"type": "oauth2", "grant": "client_credentials", "client_id": "c",
                   "client_secret": "s", "token_url": "http://169.254.169.254/token"}),
            "/auth/token_url",
            "metadata",
        ),
        (
            "auth",
            json!({"type": "oauth2", "grant": "client_credentials", "client_id": "c",
                   "client_secret": "s", "token_url": "http://127.0.0.1:9/token"}),
            "/auth/token_url",
            "TIDEMARK_UPSTREAM_ALLOW",
        ),
    ];
    let mut allowed = design_source();
    allowed["base_url"] = json!("http://localhost:9000");
    assert_eq!(app.post("/v1/sources", &allowed).await.status(), 201);
    for (field, value, pointer, why) in cases {
        let mut source = allowed.clone();
        source["name"] = json!("other");
        source[field] = value.clone();
        let problem =
            assert_problem(app.post("/v1/sources", &source).await, 422, "invalid-spec").await;
        assert_eq!(problem["pointer"], pointer, "{value}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("not allowed") && detail.contains(why),
            "{value}: {detail}"
        );

        // Replacing a source is held to the same rule.
        let mut replaced = source.clone();
        replaced["name"] = json!("shop");
        let problem = assert_problem(
            app.put("/v1/sources/shop", &replaced).await,
            422,
            "invalid-spec",
        )
        .await;
        assert_eq!(problem["pointer"], pointer, "{value}: {problem}");
    }
    assert_eq!(
        app.get_json("/v1/sources").await["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let wildcard = json!("https://api.eu.example.com");
    let mut source = allowed.clone();
    source["base_url"] = wildcard;
    assert_eq!(app.put("/v1/sources/shop", &source).await.status(), 200);
}

/// A source registered while its host was allowed is refused at request time once the
/// list no longer allows it: the job fails with `upstream-forbidden-host` and the
/// upstream never hears from it.
#[tokio::test]
async fn a_job_to_a_host_the_list_no_longer_allows_fails_without_a_request() {
    let upstream = sandbox(41, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let before = spawn_on(database.clone(), |_| {}).await;
    assert_eq!(
        before
            .post("/v1/sources", &upstream.example("insales", 10))
            .await
            .status(),
        201
    );
    before.stop().await;
    let after = spawn_on(database, |c| {
        c.workers = 1;
        c.upstream_allow = "localhost".parse().unwrap();
    })
    .await;
    let job = after.sync("insales", "products", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-forbidden-host", "{job:#}");
    assert!(
        job["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("`127.0.0.1` is not allowed"),
        "{job:#}"
    );
    assert_eq!(job["stats"]["requests"], 0, "{job:#}");
    assert!(upstream.requests().await.is_empty());
}

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// The `spec` column of every source, read straight from the database.
async fn stored_specs(database: &str) -> Vec<String> {
    let query = "SELECT spec FROM sources ORDER BY name";
    if database.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database).await.unwrap();
        let specs = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        specs
    } else {
        let pool = sqlx::PgPool::connect(database).await.unwrap();
        let specs = sqlx::query_scalar(query).fetch_all(&pool).await.unwrap();
        pool.close().await;
        specs
    }
}

/// The insales example on `upstream`, named `name`, with an inline bearer token and
/// webhook secret.
fn secret_source(upstream: &crate::support::Sandbox, name: &str, token: &str) -> serde_json::Value {
    let mut source = upstream.example("insales", 10);
    source["name"] = json!(name);
    source["auth"] = json!({"type": "bearer", "token": {"value": token}});
    source["webhook_secret"] = json!("webhook-at-rest-5678");
    source
}

#[tokio::test]
async fn inline_secrets_are_encrypted_at_rest_and_still_authenticate() {
    let token = "token-at-rest-1234";
    let upstream = sandbox(42, 15).await;
    upstream
        .control("auth", json!({"type": "bearer", "token": token}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let app = spawn_on(database.clone(), |c| {
        c.workers = 1;
        c.secret_key = Some(KEY.parse().unwrap());
    })
    .await;
    let created = app
        .post("/v1/sources", &secret_source(&upstream, "shop", token))
        .await;
    assert_eq!(created.status(), 201);
    let mut responses = vec![created.text().await.unwrap()];

    let stored = stored_specs(&database).await;
    assert_eq!(stored.len(), 1);
    for secret in [token, "webhook-at-rest-5678"] {
        assert!(!stored[0].contains(secret), "{}", stored[0]);
    }
    assert_eq!(
        stored[0].matches(r#"{"encrypted":""#).count(),
        2,
        "{}",
        stored[0]
    );
    // Everything else is kept as it was sent.
    assert!(
        stored[0].contains(&format!(r#""base_url":"{}""#, upstream.base)),
        "{}",
        stored[0]
    );

    let job = app.sync_ok("shop", "products", "incremental").await;
    assert_eq!(job["stats"]["inserted"], 15, "{job:#}");
    for path in [
        "/v1/sources",
        "/v1/sources/shop",
        "/v1/sources/shop/streams/products",
    ] {
        responses.push(app.get(path).await.text().await.unwrap());
    }
    responses.push(job.to_string());
    for body in &responses {
        assert!(
            !body.contains(token) && !body.contains("webhook-at-rest"),
            "{body}"
        );
    }
    assert!(
        responses[2].contains(r#""token":{"redacted":true}"#),
        "{}",
        responses[2]
    );

    // The encrypted form is how secrets are stored, never how they are given.
    let mut planted = secret_source(&upstream, "planted", token);
    planted["auth"]["token"] = json!({"encrypted": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
    let problem =
        assert_problem(app.post("/v1/sources", &planted).await, 422, "invalid-spec").await;
    assert_eq!(problem["pointer"], "/auth/token/encrypted");
}

#[tokio::test]
async fn a_wrong_key_fails_reads_and_jobs_with_a_clear_problem() {
    let upstream = sandbox(43, 15).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let first = spawn_on(database.clone(), |c| {
        c.secret_key = Some(KEY.parse().unwrap())
    })
    .await;
    let source = secret_source(&upstream, "shop", "token-wrong-key-1234");
    assert_eq!(first.post("/v1/sources", &source).await.status(), 201);
    first.stop().await;

    for key in [Some(OTHER_KEY), None] {
        let app = spawn_on(database.clone(), |c| {
            c.workers = 1;
            c.secret_key = key.map(|k| k.parse().unwrap());
        })
        .await;
        let problem = assert_problem(
            app.get("/v1/sources/shop").await,
            500,
            "stored-secret-unreadable",
        )
        .await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("`shop`") && detail.contains("TIDEMARK_SECRET_KEY"),
            "{detail}"
        );
        // The job fails saying why, instead of staying queued ahead of every other job.
        let job = app.sync("shop", "products", "incremental").await;
        assert_eq!(job["status"], "failed", "{job:#}");
        assert_eq!(job["error"]["type"], "stored-secret-unreadable", "{job:#}");
        app.stop().await;
    }
    assert!(upstream.requests().await.is_empty());
}

#[tokio::test]
async fn sources_stored_before_the_key_was_set_still_read_and_are_encrypted_when_written() {
    let token = "token-before-the-key-1234";
    let upstream = sandbox(44, 15).await;
    upstream
        .control("auth", json!({"type": "bearer", "token": token}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let plain = spawn_on(database.clone(), |_| {}).await;
    let source = secret_source(&upstream, "shop", token);
    assert_eq!(plain.post("/v1/sources", &source).await.status(), 201);
    // Without a key, secrets are stored as given.
    assert!(stored_specs(&database).await[0].contains(token));
    plain.stop().await;

    let keyed = spawn_on(database.clone(), |c| {
        c.workers = 1;
        c.secret_key = Some(KEY.parse().unwrap());
    })
    .await;
    assert_eq!(keyed.get("/v1/sources/shop").await.status(), 200);
    keyed.sync_ok("shop", "products", "incremental").await;
    assert_eq!(keyed.put("/v1/sources/shop", &source).await.status(), 200);
    let stored = stored_specs(&database).await;
    assert!(!stored[0].contains(token), "{}", stored[0]);
    keyed.sync_ok("shop", "products", "full").await;
}

/// The secrets of the full run below, every one unique so a grep finds it anywhere.
const BEARER: &str = "leak-bearer-1111";
const ENV_TOKEN: &str = "leak-env-2222";
const BASIC: &str = "leak-basic-3333";
const API_KEY: &str = "leak-header-4444";
const QUERY_KEY: &str = "leak+query 5555";
const CLIENT_SECRET: &str = "leak-client-6666";
const ACCESS_TOKEN: &str = "leak-access-7777";
const REFRESH_TOKEN: &str = "leak-refresh-8888";
const WEBHOOK: &str = "leak-webhook-9999";

/// Every form in which the secrets could show: as given, percent-encoded (as in a query
/// string) and, for basic auth, encoded in the header.
fn leak_forms() -> Vec<String> {
    use base64::Engine as _;
    let mut forms: Vec<String> = [
        BEARER,
        ENV_TOKEN,
        BASIC,
        API_KEY,
        QUERY_KEY,
        CLIENT_SECRET,
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        WEBHOOK,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    forms.push(url::form_urlencoded::byte_serialize(QUERY_KEY.as_bytes()).collect());
    forms.push("leak%2Bquery%205555".into());
    forms.push(base64::engine::general_purpose::STANDARD.encode(format!("u:{BASIC}")));
    forms
}

/// An upstream that echoes back everything a request carried (method, URL with its
/// query, every header, the body) in a 401, after a same-origin redirect; its token
/// endpoint issues [`ACCESS_TOKEN`], and `/oauth/refuse` echoes the token request.
async fn echo_upstream() -> String {
    use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
    use axum::response::IntoResponse;

    async fn echo(
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let body = String::from_utf8_lossy(&body).into_owned();
        let json = [(header::CONTENT_TYPE, "application/json")];
        match uri.path() {
            "/oauth/token" => {
                let reply = json!({"access_token": ACCESS_TOKEN, "expires_in": 3600});
                (StatusCode::OK, json, reply.to_string()).into_response()
            }
            "/oauth/refuse" => {
                let reply = json!({"error": "invalid_client", "error_description": format!("you sent {body}")});
                (StatusCode::BAD_REQUEST, json, reply.to_string()).into_response()
            }
            path if !path.starts_with("/echoed") => {
                let to = format!("/echoed{}", uri.path_and_query().map_or("", |p| p.as_str()));
                (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
            }
            _ => {
                let mut echoed = format!("{method} {uri}\n");
                for (name, value) in &headers {
                    echoed.push_str(&format!(
                        "{name}: {}\n",
                        String::from_utf8_lossy(value.as_bytes())
                    ));
                }
                echoed.push_str(&body);
                (StatusCode::UNAUTHORIZED, echoed).into_response()
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, axum::Router::new().fallback(echo)).into_future());
    base
}

/// The real binary, logging at debug level into a file, and the API as a client sees
/// it: every response body is kept, to be searched at the end.
struct Logged {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
    bodies: Vec<String>,
}

impl Logged {
    async fn start(database: &str, log: &std::path::Path, key: Option<&str>) -> Logged {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
        command
            .env("TIDEMARK_BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database)
            .env("TIDEMARK_WORKERS", "2")
            .env("TIDEMARK_LOG", "debug")
            .env("TIDEMARK_TEST_LEAK_ENV", ENV_TOKEN)
            .env_remove("TIDEMARK_SECRET_KEY")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Some(key) = key {
            command.env("TIDEMARK_SECRET_KEY", key);
        }
        let logged = Logged {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            bodies: Vec::new(),
        };
        wait_until_serving(&logged.client, &logged.base).await;
        logged
    }

    /// Sends a request and keeps its response body; returns the status and the body.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        let (status, value, text) = fetch(request).await;
        self.bodies.push(text);
        (status, value)
    }

    async fn get(&mut self, path: &str) -> serde_json::Value {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await.1
    }

    async fn post(&mut self, path: &str, body: &serde_json::Value) -> u16 {
        let request = self.client.post(format!("{}{path}", self.base)).json(body);
        self.send(request).await.0
    }

    async fn put(&mut self, path: &str, body: &serde_json::Value) -> u16 {
        let request = self.client.put(format!("{}{path}", self.base)).json(body);
        self.send(request).await.0
    }

    /// Runs a full sync of `source/products` and returns the finished job.
    async fn sync(&mut self, source: &str) -> serde_json::Value {
        let path = format!("/v1/sources/{source}/streams/products/sync");
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&json!({"mode": "full"}));
        let (status, job) = self.send(request).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_str().unwrap().to_owned();
        // The bodies of the polls are kept too.
        let polled = std::cell::RefCell::new(Vec::new());
        let job = eventually(
            Duration::from_secs(30),
            &format!("job {id} to finish"),
            || async {
                let url = format!("{}/v1/jobs/{id}", self.base);
                let (_, job, text) = fetch(self.client.get(url)).await;
                polled.borrow_mut().push(text);
                let finished = !matches!(job["status"].as_str(), Some("queued" | "running"));
                ready_if(finished, job)
            },
        )
        .await;
        self.bodies.extend(polled.into_inner());
        job
    }

    /// SIGTERM, so the log is complete.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(term.success());
        eventually(
            Duration::from_secs(5),
            "tidemark to stop on SIGTERM",
            || std::future::ready(self.child.try_wait().unwrap().ok_or("still running")),
        )
        .await;
        std::mem::take(&mut self.bodies)
    }
}

/// Sends a request; returns the status, the body as JSON (`Null` if it is not) and as text.
async fn fetch(request: reqwest::RequestBuilder) -> (u16, serde_json::Value, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, value, text)
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upstream credentials never show in a log line or an API response: a full run of every
/// auth kind against the sandbox (which requires each), the same against an upstream
/// that echoes every credential back in its error, OAuth token requests that fail, the
/// webhook, and then the same sources read, rewritten and synced again under a secret key.
#[tokio::test]
async fn secrets_never_show_in_logs_or_responses() {
    let upstream = sandbox(45, 12).await;
    let echo = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let log = dir.path().join("tidemark.log");
    let oauth = |token_url: String, refresh: bool| {
        let mut auth = json!({"type": "oauth2", "client_id": "c", "token_url": token_url,
                              "grant": "client_credentials", "client_secret": CLIENT_SECRET});
        if refresh {
            auth["grant"] = json!("refresh_token");
            auth["refresh_token"] = json!(REFRESH_TOKEN);
        }
        auth
    };
    // (what the sandbox requires, the source's auth for the sandbox, for the echo upstream)
    let cases = [
        (
            json!({"type": "bearer", "token": BEARER}),
            json!({"type": "bearer", "token": {"value": BEARER}}),
        ),
        (
            json!({"type": "bearer", "token": ENV_TOKEN}),
            json!({"type": "bearer", "token": {"env": "TIDEMARK_TEST_LEAK_ENV"}}),
        ),
        (
            json!({"type": "basic", "username": "u", "password": BASIC}),
            json!({"type": "basic", "username": "u", "password": BASIC}),
        ),
        (
            json!({"type": "header", "name": "X-Api-Key", "value": API_KEY}),
            json!({"type": "header", "name": "X-Api-Key", "value": API_KEY}),
        ),
        (
            json!({"type": "query", "name": "api_key", "value": QUERY_KEY}),
            json!({"type": "query", "name": "api_key", "value": QUERY_KEY}),
        ),
        (
            json!({"type": "oauth2", "client_id": "c", "client_secret": CLIENT_SECRET}),
            json!("oauth2"),
        ),
        (
            json!({"type": "oauth2", "client_id": "c", "client_secret": CLIENT_SECRET,
                   "refresh_token": REFRESH_TOKEN}),
            json!("oauth2-refresh"),
        ),
    ];
    let auth_for = |auth: &serde_json::Value, base: &str, token_path: &str| match auth.as_str() {
        Some("oauth2") => oauth(format!("{base}{token_path}"), false),
        Some(_) => oauth(format!("{base}{token_path}"), true),
        None => auth.clone(),
    };
    let mut sources = Vec::new();
    let mut tidemark = Logged::start(&database, &log, None).await;
    for (i, (required, auth)) in cases.iter().enumerate() {
        upstream.control("auth", required.clone()).await;
        let mut source = upstream.example("insales", 5);
        source["name"] = json!(format!("good{i}"));
        source["auth"] = auth_for(auth, &upstream.base, "/oauth/token");
        source["webhook_secret"] = json!(WEBHOOK);
        assert_eq!(tidemark.post("/v1/sources", &source).await, 201);
        let job = tidemark.sync(&format!("good{i}")).await;
        assert_eq!(job["status"], "succeeded", "{required}: {job:#}");
        sources.push(source.clone());

        // The echo upstream sends every credential back; its token endpoint issues a
        // known access token, or refuses and echoes the token request.
        for (name, token_path) in [
            (format!("echo{i}"), "/oauth/token"),
            (format!("refused{i}"), "/oauth/refuse"),
        ] {
            if auth.is_object() && token_path == "/oauth/refuse" {
                continue;
            }
            let mut source = source.clone();
            source["name"] = json!(name);
            source["base_url"] = json!(echo);
            source["auth"] = auth_for(auth, &echo, token_path);
            assert_eq!(tidemark.post("/v1/sources", &source).await, 201);
            let job = tidemark.sync(&name).await;
            assert_eq!(job["status"], "failed", "{job:#}");
            let kind = if token_path == "/oauth/refuse" {
                "upstream-credentials"
            } else {
                "upstream-status"
            };
            assert_eq!(job["error"]["type"], kind, "{job:#}");
            sources.push(source);
        }
    }
    // The echoes did reach the job's problem, with the secrets cut out.
    let echoed = tidemark.get("/v1/jobs?status=failed&limit=100").await;
    let details: Vec<&str> = echoed["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["error"]["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("authorization: Bearer REDACTED")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.contains("x-api-key: REDACTED")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.contains("api_key=REDACTED")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.contains("(invalid_client)")),
        "{details:#?}"
    );
    for (secret, status) in [("wrong-secret", 401), (WEBHOOK, 202)] {
        let request = tidemark
            .client
            .post(format!("{}/v1/sources/good0/webhook", tidemark.base))
            .header("x-webhook-secret", secret);
        assert_eq!(tidemark.send(request).await.0, status);
    }
    tidemark.get("/v1/sources?limit=1000").await;
    let mut bodies = tidemark.stop().await;

    // Again under a secret key: the stored sources read, are rewritten encrypted, and
    // sync; a read of all of them decrypts every secret.
    let mut tidemark = Logged::start(&database, &log, Some(KEY)).await;
    for source in &sources {
        let name = source["name"].as_str().unwrap().to_owned();
        assert_eq!(
            tidemark.put(&format!("/v1/sources/{name}"), source).await,
            200
        );
    }
    upstream.control("auth", cases[0].0.clone()).await;
    let job = tidemark.sync("good0").await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    tidemark.get("/v1/sources?limit=1000").await;
    tidemark.get("/v1/jobs?limit=1000").await;
    bodies.extend(tidemark.stop().await);

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("DEBUG"), "the log is not at debug level");
    assert!(log.lines().count() > 100, "{log}");
    for form in leak_forms() {
        if let Some(line) = log.lines().find(|line| line.contains(&form)) {
            panic!("`{form}` is in the log: {line}");
        }
        if let Some(body) = bodies.iter().find(|body| body.contains(&form)) {
            panic!("`{form}` is in a response: {body}");
        }
    }
    for stored in stored_specs(&database).await {
        for form in leak_forms() {
            assert!(!stored.contains(&form), "{stored}");
        }
    }
}
