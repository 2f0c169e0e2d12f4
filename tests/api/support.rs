//! Starts the real application on an ephemeral loopback port, on SQLite by default or on
//! PostgreSQL when `TIDEMARK_TEST_DATABASE_URL` names a server (each app gets a fresh
//! database on it).

use std::sync::Once;

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use tidemark::{App, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-0123456789";
pub const READER: &str = "reader-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: Client,
    token: Option<&'static str>,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

/// A database for one app: a file in a temp dir, or a new PostgreSQL database.
async fn database_url(dir: &tempfile::TempDir) -> String {
    static NOTICE: Once = Once::new();
    match std::env::var("TIDEMARK_TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            NOTICE.call_once(|| eprintln!("tests run on PostgreSQL (TIDEMARK_TEST_DATABASE_URL)"));
            let name = format!("tidemark_test_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(&admin_url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .expect("create a test database");
            admin.close().await;
            let mut url = url::Url::parse(&admin_url).expect("TIDEMARK_TEST_DATABASE_URL is a URL");
            url.set_path(&name);
            url.to_string()
        }
        _ => {
            NOTICE.call_once(|| {
                eprintln!(
                    "tests run on SQLite; set TIDEMARK_TEST_DATABASE_URL to run them on PostgreSQL"
                )
            });
            format!("sqlite://{}", dir.path().join("tidemark.db").display())
        }
    }
}

/// An app with no API tokens (the open, loopback-only mode).
pub async fn spawn() -> TestApp {
    spawn_with(|_| {}, None).await
}

/// An app with an admin and a reader token; requests carry the admin token.
pub async fn spawn_with_tokens() -> TestApp {
    spawn_with(
        |c| c.api_tokens = format!("admin:{ADMIN},reader:{READER}").parse().unwrap(),
        Some(ADMIN),
    )
    .await
}

pub async fn spawn_with(
    configure: impl FnOnce(&mut Config),
    token: Option<&'static str>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(database_url(&dir).await);
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::build(config).await.expect("the app builds");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        app.serve(listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("the app serves");
    });
    TestApp {
        base: format!("http://{addr}"),
        client: Client::new(),
        token,
        _dir: dir,
        _stop: stop,
    }
}

impl TestApp {
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// GETs `path` and parses its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path).send().await.unwrap()
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path).json(body).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send_json(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.send_json(Method::PUT, path, body).await
    }
}

/// The source of DESIGN.md §6, verbatim.
pub fn design_source() -> Value {
    serde_json::from_str(include_str!("fixtures/design_source.json")).unwrap()
}

/// Asserts a problem+json response with `status` and `type`; returns its body.
pub async fn assert_problem(response: Response, status: u16, kind: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], kind, "{body}");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    body
}
