//! The real-API dialects over real HTTP: for each, a listing paged from start to end
//! returns the truth exactly, its time filter is inclusive or exclusive at the resolution
//! its documentation gives, the end of a listing is signalled as documented, its quirks
//! hold, and churn moves records as the real API would. Every paging loop is bounded by
//! [`MAX_PAGES`].

mod clamp;
mod github;
mod graph;
mod hubspot;
mod jira;
mod postgrest;
mod salesforce;
mod shopify;
mod shopify_orders;
mod stripe;
mod zendesk;

use std::collections::BTreeMap;

use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidemark_sandbox::{self as sandbox, Sandbox};
use tokio::net::TcpListener;

/// Far more pages than any test needs, so a paging bug fails instead of looping.
const MAX_PAGES: usize = 200;

struct Upstream {
    base: String,
    client: Client,
}

/// A sandbox on an ephemeral loopback port, stopped when the test's runtime ends.
async fn start(seed: u64, records: usize) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(sandbox::serve(
        listener,
        Sandbox::new(seed, records),
        std::future::pending(),
    ));
    Upstream {
        base,
        client: Client::new(),
    }
}

/// A reply: status, headers and the body's text.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Self {
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    /// The body as JSON, which a `200` must be.
    fn ok(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.json()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    }

    /// The record texts at `key` of the body (the whole body when `key` is empty), byte
    /// for byte.
    fn records(&self, key: &str) -> Vec<String> {
        let array = match key {
            "" => self.body.clone(),
            key => {
                let object: BTreeMap<String, Box<RawValue>> =
                    serde_json::from_str(&self.body).unwrap();
                object[key].get().to_owned()
            }
        };
        raw_array(&array)
    }
}

impl Upstream {
    fn url(&self, path: &str, params: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        url.into()
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        self.get_url(&self.url(path, params)).await
    }

    /// `GET` an absolute URL exactly as given (a next link).
    async fn get_url(&self, url: &str) -> Reply {
        Reply::read(self.client.get(url).send().await.unwrap()).await
    }

    /// `GET` with one request header.
    async fn get_with(&self, url: &str, header: (&str, &str)) -> Reply {
        let request = self.client.get(url).header(header.0, header.1);
        Reply::read(request.send().await.unwrap()).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let url = format!("{}{path}", self.base);
        Reply::read(self.client.post(url).json(body).send().await.unwrap()).await
    }

    /// `POST /_control/{path}` with `body`, which must succeed.
    async fn control(&self, path: &str, body: Value) -> Value {
        self.post_json(&format!("/_control/{path}"), &body)
            .await
            .ok()
    }

    /// Churns `count` records of a dialect (`operation` is e.g. `github/update`),
    /// returning the touched ids as text and their time as the dialect writes it.
    async fn churn(&self, operation: &str, count: usize) -> (Vec<String>, String) {
        let reply = self.control(operation, json!({ "count": count })).await;
        let ids = reply["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_text)
            .collect();
        (ids, reply["at"].as_str().unwrap().to_owned())
    }

    async fn tick(&self, seconds: u32) {
        self.control("tick", json!({ "seconds": seconds })).await;
    }

    /// A dialect's truth: every live record's text by id (at `id_key` in each record).
    async fn truth(&self, dialect: &str, id_key: &str) -> BTreeMap<String, String> {
        let reply = self.get(&format!("/_control/{dialect}/truth"), &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        mirror(reply.records(""), id_key)
    }
}

/// An id exactly as the upstream wrote it: a number's text, or a string id.
fn id_text(id: &Value) -> String {
    match id {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not an id: {other}"),
    }
}

/// The record texts of a JSON array, byte for byte.
fn raw_array(body: &str) -> Vec<String> {
    let records: Vec<Box<RawValue>> = serde_json::from_str(body).unwrap();
    records.iter().map(|r| r.get().to_owned()).collect()
}

fn parse(record: &str) -> Value {
    serde_json::from_str(record).unwrap()
}

/// Record texts keyed by the id at `id_key`, as a mirror holds them: a later text of an
/// id replaces an earlier one.
fn mirror(records: impl IntoIterator<Item = String>, id_key: &str) -> BTreeMap<String, String> {
    records
        .into_iter()
        .map(|r| (id_text(&parse(&r)[id_key]), r))
        .collect()
}

/// The ids at `id_key` of records, in order.
fn ids(records: &[String], id_key: &str) -> Vec<String> {
    records.iter().map(|r| id_text(&parse(r)[id_key])).collect()
}

/// The string at `pointer` in each record.
fn texts(records: &[String], pointer: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            parse(r)
                .pointer(pointer)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The `(url, rel)` pairs of a `Link` header.
fn links(reply: &Reply) -> Vec<(String, String)> {
    let Some(header) = reply.header("link") else {
        return Vec::new();
    };
    header
        .split(", <")
        .map(|link| {
            let (target, rel) = link.split_once(">; rel=\"").unwrap();
            let target = target.trim_start_matches('<').to_owned();
            (target, rel.trim_end_matches('"').to_owned())
        })
        .collect()
}

/// The target of the link with `rel`, if any.
fn link(reply: &Reply, rel: &str) -> Option<String> {
    links(reply)
        .into_iter()
        .find(|(_, r)| r == rel)
        .map(|(url, _)| url)
}

/// Follows `Link: <…>; rel="next"` from `first` until a page has none, calling `between`
/// with the page number after each page that links on; returns every page.
async fn follow_next(
    upstream: &Upstream,
    first: &str,
    mut between: impl AsyncFnMut(usize),
) -> Vec<Reply> {
    let mut url = first.to_owned();
    let mut pages = Vec::new();
    for page in 1..=MAX_PAGES {
        let reply = upstream.get_url(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let next = link(&reply, "next");
        pages.push(reply);
        match next {
            Some(next) => url = next,
            None => return pages,
        }
        between(page).await;
    }
    panic!("paging did not end within {MAX_PAGES} pages");
}

/// Whether `items` never decreases.
fn ascending<T: PartialOrd>(items: &[T]) -> bool {
    items.windows(2).all(|w| w[0] <= w[1])
}

#[tokio::test]
async fn dialect_data_does_not_depend_on_when_it_is_first_used() {
    let early = start(5, 50).await;
    let late = start(5, 50).await;
    late.tick(3600).await;
    late.churn("keyset/update", 3).await;
    for (dialect, id) in [
        ("github", "id"),
        ("stripe", "id"),
        ("salesforce", "Id"),
        ("graph", "id"),
        ("postgrest", "id"),
    ] {
        assert_eq!(
            early.truth(dialect, id).await,
            late.truth(dialect, id).await,
            "{dialect}"
        );
    }
    let other = start(6, 50).await;
    assert_ne!(
        early.truth("github", "id").await,
        other.truth("github", "id").await
    );
}

#[tokio::test]
async fn dialect_routes_pass_the_gate_faults_credentials_and_request_log() {
    let upstream = start(3, 20).await;
    upstream
        .control(
            "faults",
            json!({ "faults": [{ "kind": "status", "status": 503 }], "path_prefix": "/stripe" }),
        )
        .await;
    assert_eq!(
        upstream.get("/clamp/things", &[]).await.status,
        StatusCode::OK
    );
    let faulted = upstream.get("/stripe/v1/customers", &[]).await;
    assert_eq!(faulted.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        upstream.get("/stripe/v1/customers", &[]).await.status,
        StatusCode::OK
    );

    upstream
        .control("auth", json!({ "type": "bearer", "token": "s3cret" }))
        .await;
    let denied = upstream.get("/graph/v1.0/users/delta", &[]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let url = upstream.url("/graph/v1.0/users/delta", &[]);
    let allowed = upstream
        .get_with(&url, ("authorization", "Bearer s3cret"))
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    // Control endpoints need no credential.
    assert_eq!(upstream.truth("graph", "id").await.len(), 20);

    let log = upstream.get("/_control/requests", &[]).await.ok();
    let log: Vec<(String, String, u64)> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let method = e["method"].as_str().unwrap().to_owned();
            let path = e["path"].as_str().unwrap().to_owned();
            (method, path, e["status"].as_u64().unwrap())
        })
        .collect();
    let expect =
        |method: &str, path: &str, status: u64| (method.to_owned(), path.to_owned(), status);
    assert_eq!(
        log,
        [
            expect("GET", "/clamp/things", 200),
            expect("GET", "/stripe/v1/customers", 503),
            expect("GET", "/stripe/v1/customers", 200),
            expect("GET", "/graph/v1.0/users/delta", 401),
            expect("GET", "/graph/v1.0/users/delta", 200),
        ]
    );
}
