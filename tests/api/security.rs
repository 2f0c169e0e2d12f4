//! Security: which upstream hosts a source may name and a job may reach.

use serde_json::json;

use crate::support::{assert_problem, database_url, design_source, sandbox, spawn_on, spawn_with};

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
