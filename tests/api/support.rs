//! Starts the real application on an ephemeral loopback port, on SQLite by default or on
//! PostgreSQL when `TIDEMARK_TEST_DATABASE_URL` names a server (each app gets a fresh
//! database on it).

use std::collections::BTreeMap;
use std::sync::Once;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::Value;
use serde_json::value::RawValue;
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
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
}

/// A database for one app: a file in a temp dir, or a new PostgreSQL database.
pub async fn database_url(dir: &tempfile::TempDir) -> String {
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

/// Whether the run is on PostgreSQL; if not, says on the terminal that `test`, which
/// needs it, is skipped. libtest has no skip of its own and captures `eprintln!`, so the
/// notice is written to the process's stderr directly, where it shows in the run's
/// output instead of the test passing silently.
pub fn on_postgres(test: &str) -> bool {
    use std::io::Write as _;
    let postgres = std::env::var("TIDEMARK_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty());
    if !postgres {
        let _ = writeln!(
            std::io::stderr(),
            "test {test} ... skipped: it needs PostgreSQL (set TIDEMARK_TEST_DATABASE_URL)"
        );
    }
    postgres
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

/// An app with sync workers, for tests that run jobs.
pub async fn spawn_syncing() -> TestApp {
    spawn_with(|c| c.workers = 2, None).await
}

pub async fn spawn_with(
    configure: impl FnOnce(&mut Config),
    token: Option<&'static str>,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(database_url(&dir).await);
    // No background syncs unless a test asks for them: the control-plane tests register
    // sources with schedules whose upstreams do not exist.
    config.workers = 0;
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::build(config).await.expect("the app builds");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
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
        stop,
        serving,
    }
}

impl TestApp {
    /// Shuts the app down and waits until it has let go of its database (on SQLite, the
    /// file's lock: only then can another app serve the same file).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.expect("the app stops");
    }

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

/// The first pause of [`eventually`] between probes; it doubles up to [`MAX_INTERVAL`].
const FIRST_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_millis(200);

/// Waits until `probe` answers `Ok` and returns its value. The probe runs at once, then
/// 10 ms later, the pause doubling up to 200 ms; an `Err` says what it saw instead. At
/// `timeout` (a probe still running is cut off) it panics, naming `what` was awaited, for
/// how long, and the last `Err`.
///
/// The one way the tests wait for something to happen, so every wait is bounded in time
/// and says what it was waiting for when it fails.
pub async fn eventually<T, E, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let mut last = None;
    let mut probes = 0u32;
    let polling = async {
        let mut interval = FIRST_INTERVAL;
        loop {
            probes += 1;
            match probe().await {
                Ok(value) => return value,
                Err(seen) => last = Some(seen),
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(MAX_INTERVAL);
        }
    };
    match tokio::time::timeout(timeout, polling).await {
        Ok(value) => value,
        Err(_) => match last {
            Some(seen) => panic!(
                "waited {:?} (at most {timeout:?}, {probes} probes) for {what}; last seen: {seen:#}",
                started.elapsed()
            ),
            None => panic!(
                "waited {:?} (at most {timeout:?}) for {what}; the first probe did not answer",
                started.elapsed()
            ),
        },
    }
}

/// A probe's answer for [`eventually`]: `Ok(seen)` once `done`, else `Err(seen)`.
pub fn ready_if<T>(done: bool, seen: T) -> Result<T, T> {
    if done { Ok(seen) } else { Err(seen) }
}

impl TestApp {
    /// Waits until a job has finished (30 s at most); returns it.
    pub async fn wait_job(&self, id: &str) -> Value {
        let path = format!("/v1/jobs/{id}");
        eventually(
            Duration::from_secs(30),
            &format!("job {id} to finish"),
            || async {
                let job = self.get_json(&path).await;
                let finished = !matches!(job["status"].as_str(), Some("queued" | "running"));
                ready_if(finished, job)
            },
        )
        .await
    }

    /// Queues a job of `mode` for `source/stream`, waits for it and returns it.
    pub async fn sync(&self, source: &str, stream: &str, mode: &str) -> Value {
        let path = format!("/v1/sources/{source}/streams/{stream}/sync");
        let response = self.post(&path, &serde_json::json!({ "mode": mode })).await;
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        self.wait_job(job["id"].as_str().unwrap()).await
    }

    /// Like [`TestApp::sync`], and asserts the job succeeded.
    pub async fn sync_ok(&self, source: &str, stream: &str, mode: &str) -> Value {
        let job = self.sync(source, stream, mode).await;
        assert_eq!(job["status"], "succeeded", "{job:#}");
        job
    }

    /// The whole mirror of a stream: key → the record's JSON text.
    pub async fn mirror(&self, source: &str, stream: &str) -> BTreeMap<String, String> {
        read_mirror(&self.client, &self.base, self.token, source, stream).await
    }
}

/// Waits until the tidemark process at `base` answers `/healthz` (10 s at most).
pub async fn wait_until_serving(client: &Client, base: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("tidemark at {base} to start"),
        || async {
            match client.get(format!("{base}/healthz")).send().await {
                Ok(response) if response.status() == 200 => Ok(()),
                Ok(response) => Err(format!("/healthz answered {}", response.status())),
                Err(error) => Err(format!("/healthz: {error}")),
            }
        },
    )
    .await
}

/// Far more pages than any mirror in the tests has, so a paging bug fails instead of looping.
const MAX_PAGES: usize = 3000;

/// The whole mirror of `source/stream` of the tidemark at `base`, paged through
/// `GET .../records`: key → the record's JSON text, byte for byte.
pub async fn read_mirror(
    client: &Client,
    base: &str,
    token: Option<&str>,
    source: &str,
    stream: &str,
) -> BTreeMap<String, String> {
    let mut mirror = BTreeMap::new();
    let mut after = String::new();
    for _ in 0..MAX_PAGES {
        let mut request = client.get(format!(
            "{base}/v1/sources/{source}/streams/{stream}/records?limit=1000&after={after}"
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let page = request.send().await.unwrap();
        assert_eq!(page.status(), 200);
        let page: RecordPage = serde_json::from_str(&page.text().await.unwrap()).unwrap();
        for entry in page.results {
            mirror.insert(entry.key, entry.record.get().to_owned());
        }
        match page.next {
            Some(next) => after = next,
            None => return mirror,
        }
    }
    panic!("the mirror of {source}/{stream} did not end");
}

#[derive(serde::Deserialize)]
struct RecordPage {
    results: Vec<RecordEntry>,
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct RecordEntry {
    key: String,
    record: Box<RawValue>,
}

/// A sandbox upstream on an ephemeral loopback port.
pub struct Sandbox {
    pub base: String,
    client: Client,
}

/// Starts a sandbox whose datasets hold `records` records each.
pub async fn sandbox(seed: u64, records: usize) -> Sandbox {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = tidemark_sandbox::Sandbox::new(seed, records);
    tokio::spawn(tidemark_sandbox::serve(
        listener,
        sandbox,
        std::future::pending(),
    ));
    Sandbox {
        base,
        client: Client::new(),
    }
}

impl Sandbox {
    /// `POST /_control/{path}` with `body`; returns the reply.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/_control/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    /// `GET /_control/{path}`.
    pub async fn read(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/_control/{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    /// The API requests the sandbox has seen (method, path, query, status, fault, at_ms).
    pub async fn requests(&self) -> Vec<Value> {
        self.read("requests").await["requests"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// An example source of `examples/sources/` pointed at this sandbox, without its
    /// schedules (tests queue their own jobs), with pages of `limit` records.
    pub fn example(&self, name: &str, limit: u32) -> Value {
        let path = format!(
            "{}/examples/sources/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut source: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        source["base_url"] = Value::String(self.base.clone());
        source["retry"] =
            serde_json::json!({"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50});
        for stream in source["streams"].as_array_mut().unwrap() {
            stream.as_object_mut().unwrap().remove("schedule");
            stream["pagination"]["limit"] = limit.into();
        }
        source
    }

    /// Every live record of a style, keyed by `/id` (as text): the texts the API serves.
    pub async fn truth(&self, style: &str) -> BTreeMap<String, String> {
        let text = self
            .client
            .get(format!("{}/_control/{style}/truth", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let records: Vec<Box<RawValue>> = serde_json::from_str(&text).unwrap();
        records
            .into_iter()
            .map(|r| {
                let value: Value = serde_json::from_str(r.get()).unwrap();
                let key = match &value["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key, r.get().to_owned())
            })
            .collect()
    }
}

/// A keyset (InSales-style) source `name` on `upstream`, archived products as deletions,
/// pages of `limit`.
pub fn keyset_source(upstream: &Sandbox, name: &str, limit: u32) -> Value {
    serde_json::json!({
        "name": name,
        "base_url": upstream.base,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50},
        "streams": [{
            "name": "products",
            "request": {"path": "/insales/products.json", "query": {"with_deleted": "true"}},
            "records": {"path": "", "key": "/id", "updated_at": "/updated_at",
                        "deleted": {"pointer": "/archived", "equals": true}},
            "pagination": {"type": "keyset", "limit": limit}
        }]
    })
}

/// The source of docs/design.md §6, verbatim.
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

/// An app on an existing database (a restart, or a second instance sharing it); no API
/// tokens.
pub async fn spawn_on(database_url: String, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_with(
        |c| {
            c.database_url = database_url;
            configure(c);
        },
        None,
    )
    .await
}

impl Sandbox {
    /// Every live record of a style or dialect, keyed by the value at `key` (a JSON
    /// pointer; strings as they are, other values as JSON text), the texts the API serves
    /// byte for byte, as a mirror keys them.
    pub async fn truth_by(&self, style: &str, key: &str) -> BTreeMap<String, String> {
        let text = self
            .client
            .get(format!("{}/_control/{style}/truth", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let records: Vec<Box<RawValue>> = serde_json::from_str(&text).unwrap();
        records
            .into_iter()
            .map(|r| {
                let value: Value = serde_json::from_str(r.get()).unwrap();
                let key = match value.pointer(key) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => panic!("a {style} record without {key}: {}", r.get()),
                };
                (key, r.get().to_owned())
            })
            .collect()
    }
}

#[derive(serde::Deserialize)]
struct FeedPage {
    results: Vec<FeedChange>,
    until: String,
    has_more: bool,
}

#[derive(serde::Deserialize)]
struct FeedChange {
    key: String,
    op: String,
    record: Option<Box<RawValue>>,
}

/// A feed consumer: follows `until` through one stream (`source/stream`) with small
/// pages from a blank `since`, applying each change to its replica (upsert or delete by
/// key), until the feed has no more.
pub struct FeedFollower {
    scope: String,
    since: String,
    pub replica: BTreeMap<String, String>,
}

impl FeedFollower {
    pub fn new(source: &str, stream: &str) -> Self {
        FeedFollower {
            scope: format!("{source}/{stream}"),
            since: String::new(),
            replica: BTreeMap::new(),
        }
    }

    /// Reads the feed from where it stopped to its end (at most 10,000 pages).
    pub async fn catch_up(&mut self, app: &TestApp) {
        for _ in 0..10_000 {
            let response = app
                .get(&format!(
                    "/v1/changes?since={}&limit=50&stream={}",
                    self.since, self.scope
                ))
                .await;
            assert_eq!(response.status(), 200);
            let page: FeedPage = serde_json::from_str(&response.text().await.unwrap()).unwrap();
            for change in page.results {
                match (change.op.as_str(), change.record) {
                    ("upsert", Some(record)) => {
                        self.replica.insert(change.key, record.get().to_owned());
                    }
                    ("delete", None) => {
                        self.replica.remove(&change.key);
                    }
                    (op, record) => panic!("change {op} with record {record:?}"),
                }
            }
            self.since = page.until;
            if !page.has_more {
                return;
            }
        }
        panic!("the feed of {} did not end", self.scope);
    }
}
