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
