//! The sandbox upstream over real HTTP: each style's paging semantics (also under churn),
//! the truth endpoints the convergence tests compare against, and the injected faults,
//! credentials and request log the sync engine's tests rely on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidemark_sandbox::{self as sandbox, Sandbox};
use tokio::net::TcpListener;

/// The first `updated_since` of a keyset run (docs/design.md §4).
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// Far more pages than any test needs, so a paging bug fails instead of looping.
const MAX_PAGES: usize = 500;
/// A GraphQL query as a client would send it; the sandbox does not parse it.
const SALES_QUERY: &str = "query($since: String, $first: Int) { sale(since: $since, first: $first) { until results { id updatedAt total deleted } } }";

struct Upstream {
    base: String,
    client: Client,
}

/// A sandbox on an ephemeral loopback port, stopped when the test's runtime ends.
async fn start(seed: u64, records: usize) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sandbox = Sandbox::new(seed, records);
    tokio::spawn(sandbox::serve(listener, sandbox, std::future::pending()));
    Upstream {
        base,
        client: Client::new(),
    }
}

impl Upstream {
    fn url(&self, path: &str, params: &[(&str, &str)]) -> url::Url {
        let mut url = url::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        url
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> reqwest::Response {
        let url = self.url(path, params);
        self.client.get(url).send().await.unwrap()
    }

    /// `GET path?params`, returning the status and raw body.
    async fn get_text(&self, path: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self.get(path, params).await;
        (response.status(), response.text().await.unwrap())
    }

    /// `GET /insales/products.json` with `params`, returning the status and raw body.
    async fn list_raw(&self, params: &[(&str, &str)]) -> (StatusCode, String) {
        self.get_text("/insales/products.json", params).await
    }

    /// A successful listing as records (numbers kept exact by `arbitrary_precision`).
    async fn list(&self, params: &[(&str, &str)]) -> Vec<Value> {
        let (status, body) = self.list_raw(params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `POST /_control/{path}` with `body`, which must succeed.
    async fn control(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/_control/{path}", self.base);
        let response = self.client.post(url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "POST /_control/{path}");
        response.json().await.unwrap()
    }

    /// `GET /_control/{path}`, which must succeed.
    async fn control_get(&self, path: &str) -> Value {
        let url = format!("{}/_control/{path}", self.base);
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET /_control/{path}");
        response.json().await.unwrap()
    }

    async fn control_delete(&self, path: &str) {
        let url = format!("{}/_control/{path}", self.base);
        let response = self.client.delete(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "DELETE /_control/{path}");
    }

    /// Churns `count` records with `operation` (e.g. `keyset/archive`), returning the
    /// touched ids and their time.
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

    async fn truth(&self, style: &str) -> String {
        let url = format!("{}/_control/{style}/truth", self.base);
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Queues faults or sets random ones; answers `{"pending", "injected", "huge_bytes_sent"}`.
    async fn faults(&self, settings: Value) -> Value {
        self.control("faults", settings).await
    }

    async fn requests(&self) -> Vec<Value> {
        let log = self.control_get("requests").await;
        log["requests"].as_array().unwrap().clone()
    }

    /// Pages from `cursor` (or from the epoch) until an empty page, each next request
    /// built from the last record's `updated_at` and `id` verbatim. Returns the raw
    /// record texts, the final cursor and the number of requests made.
    async fn page_all(
        &self,
        per_page: usize,
        mut cursor: Option<(String, String)>,
    ) -> (Vec<String>, Option<(String, String)>, usize) {
        let per_page = per_page.to_string();
        let mut records = Vec::new();
        for request in 1..=MAX_PAGES {
            let mut params = vec![("per_page", per_page.as_str())];
            match &cursor {
                Some((since, id)) => {
                    params.extend([("updated_since", since.as_str()), ("from_id", id.as_str())])
                }
                None => params.push(("updated_since", EPOCH)),
            }
            let (status, body) = self.list_raw(&params).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let page = raw_array(&body);
            let Some(last) = page.last() else {
                return (records, cursor, request);
            };
            let last: Value = serde_json::from_str(last).unwrap();
            cursor = Some((
                last["updated_at"].as_str().unwrap().to_owned(),
                id_text(&last["id"]),
            ));
            records.extend(page);
        }
        panic!("paging did not end within {MAX_PAGES} pages");
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

fn ids(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| id_text(&r["id"])).collect()
}

fn record_id(record: &str) -> String {
    id_text(&serde_json::from_str::<Value>(record).unwrap()["id"])
}

fn raw_ids(records: &[String]) -> Vec<String> {
    records.iter().map(|r| record_id(r)).collect()
}

/// The record texts of a JSON array, byte for byte.
fn raw_array(body: &str) -> Vec<String> {
    let records: Vec<Box<RawValue>> = serde_json::from_str(body).unwrap();
    records.iter().map(|r| r.get().to_owned()).collect()
}

/// The records of a successful response, which must be a JSON array.
async fn json_records(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Record texts keyed by id, as a mirror holds them: a later text of an id replaces an
/// earlier one.
fn mirror(records: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    records.into_iter().map(|r| (record_id(&r), r)).collect()
}

/// The mirror without the records marked `"deleted": true`.
fn live(mirror: BTreeMap<String, String>) -> BTreeMap<String, String> {
    mirror
        .into_iter()
        .filter(|(_, r)| serde_json::from_str::<Value>(r).unwrap()["deleted"] != Value::Bool(true))
        .collect()
}

/// The truth endpoint of `style`, keyed by id.
async fn truth_by_id(upstream: &Upstream, style: &str) -> BTreeMap<String, String> {
    mirror(raw_array(&upstream.truth(style).await))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}
#[tokio::test]
async fn keyset_paging_visits_every_live_record_exactly_once() {
    let upstream = start(7, 1000).await;
    upstream.churn("keyset/archive", 25).await;
    let (records, _, requests) = upstream.page_all(37, None).await;
    let order: Vec<(String, u64)> = records
        .iter()
        .map(|r| {
            let r: Value = serde_json::from_str(r).unwrap();
            let at = r["updated_at"].as_str().unwrap().to_owned();
            (at, id_text(&r["id"]).parse().unwrap())
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "not in (updated_at, id) order"
    );
    assert!(
        order.windows(2).any(|w| w[0].0 == w[1].0),
        "the data has records sharing a second"
    );
    let seen = raw_ids(&records);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a record was read twice");
    assert_eq!(seen.len(), 975);
    let mut truth = raw_ids(&raw_array(&upstream.truth("keyset").await));
    truth.sort();
    let mut seen = seen;
    seen.sort();
    assert_eq!(seen, truth);
    assert_eq!(requests, 975usize.div_ceil(37) + 1);
}

#[tokio::test]
async fn from_id_excludes_only_records_at_exactly_updated_since() {
    let upstream = start(11, 100).await;
    let (earlier, earlier_at) = upstream.churn("keyset/create", 1).await;
    let (mass, mass_at) = upstream.churn("keyset/mass_update", 5).await;
    assert!(!mass.contains(&earlier[0]));

    // At the shared second, ids up to from_id are left out; later ones stay, in id order.
    let page = upstream
        .list(&[("updated_since", &mass_at), ("from_id", &mass[1])])
        .await;
    assert_eq!(ids(&page), mass[2..]);

    // A from_id above every id drops the record at updated_since itself, but no record
    // of a later second.
    let page = upstream
        .list(&[
            ("updated_since", &earlier_at),
            ("from_id", "18446744073709551615"),
        ])
        .await;
    assert_eq!(ids(&page), mass);

    // Without from_id, updated_since is inclusive.
    let page = upstream.list(&[("updated_since", &earlier_at)]).await;
    assert_eq!(ids(&page), [earlier, mass].concat());
}

#[tokio::test]
async fn from_id_is_ignored_without_updated_since_and_order_is_by_id() {
    let upstream = start(3, 200).await;
    upstream.churn("keyset/update", 30).await;
    let first = upstream.list(&[("per_page", "10")]).await;
    let mut truth = raw_ids(&raw_array(&upstream.truth("keyset").await));
    truth.truncate(10);
    assert_eq!(ids(&first), truth);
    let with_from_id = upstream
        .list(&[("per_page", "10"), ("from_id", &ids(&first)[4])])
        .await;
    assert_eq!(with_from_id, first);
}

#[tokio::test]
async fn with_deleted_adds_archived_records_and_deleted_returns_only_them() {
    let upstream = start(5, 50).await;
    let (archived, _) = upstream.churn("keyset/archive", 3).await;
    let all = [("updated_since", EPOCH), ("per_page", "250")];

    let live = upstream.list(&all).await;
    assert_eq!(live.len(), 47);
    assert!(ids(&live).iter().all(|id| !archived.contains(id)));

    let with_deleted = upstream
        .list(&[all[0], all[1], ("with_deleted", "true")])
        .await;
    assert_eq!(with_deleted.len(), 50);
    for record in &with_deleted {
        let is_archived = archived.contains(&id_text(&record["id"]));
        assert_eq!(record["archived"], Value::Bool(is_archived), "{record}");
    }

    let deleted = upstream.list(&[all[0], all[1], ("deleted", "true")]).await;
    let mut deleted = ids(&deleted);
    deleted.sort();
    assert_eq!(deleted, archived);
}

#[tokio::test]
async fn mass_update_of_three_pages_is_fully_visible_through_keyset_paging() {
    let upstream = start(13, 300).await;
    let (_, cursor, _) = upstream.page_all(20, None).await;
    assert!(cursor.is_some());
    let (mass, at) = upstream.churn("keyset/mass_update", 60).await;

    let (records, _, requests) = upstream.page_all(20, cursor).await;
    let mut seen = raw_ids(&records);
    assert_eq!(seen.len(), 60, "each record once");
    seen.sort();
    assert_eq!(seen, mass);
    assert_eq!(requests, 4, "three full pages and an empty one");
    for record in &records {
        let record: Value = serde_json::from_str(record).unwrap();
        assert_eq!(record["updated_at"], Value::String(at.clone()));
    }
}

#[tokio::test]
async fn truth_is_byte_identical_to_a_full_paging_pass_after_churn() {
    let upstream = start(17, 400).await;
    upstream.churn("keyset/update", 20).await;
    upstream.churn("keyset/create", 10).await;
    upstream.churn("keyset/archive", 5).await;
    upstream.churn("keyset/mass_update", 30).await;
    upstream.control("tick", json!({ "seconds": 60 })).await;

    let (mut records, _, _) = upstream.page_all(50, None).await;
    let id_of = |r: &String| {
        id_text(&serde_json::from_str::<Value>(r).unwrap()["id"])
            .parse::<u64>()
            .unwrap()
    };
    records.sort_by_key(id_of);
    let truth = raw_array(&upstream.truth("keyset").await);
    assert_eq!(truth.len(), 405);
    assert_eq!(records, truth);
}

#[tokio::test]
async fn updated_since_is_accepted_in_the_upstream_format_and_rfc_3339() {
    let upstream = start(19, 100).await;
    let (_, at) = upstream.churn("keyset/mass_update", 4).await;
    let native = upstream.list(&[("updated_since", &at)]).await;
    assert_eq!(native.len(), 4);
    let rfc3339 = upstream
        .list(&[("updated_since", "2017-09-03T21:00:00Z")])
        .await;
    assert_eq!(rfc3339, native);
}

#[tokio::test]
async fn bad_parameters_are_a_json_400() {
    let upstream = start(23, 10).await;
    for params in [
        [("per_page", "0")],
        [("per_page", "1001")],
        [("per_page", "ten")],
        [("updated_since", "yesterday")],
        [("from_id", "-1")],
    ] {
        let (status, body) = upstream.list_raw(&params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["errors"][0].is_string(), "{body}");
    }
    let (status, _) = upstream.list_raw(&[("per_page", "1000")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn date_header_follows_the_sandbox_clock() {
    let upstream = start(29, 10).await;
    let date = |r: &reqwest::Response| r.headers()["date"].to_str().unwrap().to_owned();
    let url = format!("{}/insales/products.json", upstream.base);
    let before = upstream.client.get(&url).send().await.unwrap();
    assert_eq!(date(&before), "Sun, 03 Sep 2017 21:00:00 GMT");
    let tick = upstream
        .control("keyset/tick", json!({ "seconds": 90 }))
        .await;
    assert_eq!(tick["now"], "2017-09-04 00:01:30 +03:00");
    let after = upstream.client.get(&url).send().await.unwrap();
    assert_eq!(date(&after), "Sun, 03 Sep 2017 21:01:30 GMT");
}

#[tokio::test]
async fn keyset_delete_is_the_same_as_archive() {
    let upstream = start(31, 20).await;
    let (deleted, _) = upstream.churn("keyset/delete", 2).await;
    let archived = upstream
        .list(&[("updated_since", EPOCH), ("deleted", "true")])
        .await;
    let mut archived = ids(&archived);
    archived.sort();
    assert_eq!(archived, deleted);
}

// ---------------------------------------------------------------------------------------
// token (POS style): POST /pos/graphql, `since` → `until`
// ---------------------------------------------------------------------------------------

/// One `sale` reply.
#[derive(Deserialize)]
struct SaleReply {
    data: SaleData,
}

#[derive(Deserialize)]
struct SaleData {
    sale: SalePage,
}

#[derive(Deserialize)]
struct SalePage {
    until: Option<String>,
    results: Vec<Box<RawValue>>,
}

impl Upstream {
    /// `POST /pos/graphql` with `variables`, returning the status and raw body.
    async fn graphql(&self, variables: Value) -> (StatusCode, String) {
        let body = json!({ "query": SALES_QUERY, "variables": variables });
        let url = format!("{}/pos/graphql", self.base);
        let response = self.client.post(url).json(&body).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// One successful page: the raw results and `until`.
    async fn sales(&self, since: &str, first: usize) -> (Vec<String>, Option<String>) {
        self.sales_with(json!({ "since": since, "first": first }))
            .await
    }

    async fn sales_with(&self, variables: Value) -> (Vec<String>, Option<String>) {
        let (status, body) = self.graphql(variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reply: SaleReply = serde_json::from_str(&body).unwrap();
        let page = reply.data.sale;
        let results = page.results.iter().map(|r| r.get().to_owned()).collect();
        (results, page.until)
    }

    /// Follows `until` from `since` until it is null, as the token strategy does,
    /// calling `between` after each page. Returns the records, the last non-null token
    /// and the number of requests.
    async fn sales_feed(
        &self,
        first: usize,
        since: &str,
        mut between: impl AsyncFnMut(usize),
    ) -> (Vec<String>, String, usize) {
        let mut token = since.to_owned();
        let mut records = Vec::new();
        for request in 1..=MAX_PAGES {
            let (page, until) = self.sales(&token, first).await;
            let Some(until) = until else {
                assert!(page.is_empty(), "a null until comes with an empty page");
                return (records, token, request);
            };
            records.extend(page);
            token = until;
            between(request).await;
        }
        panic!("the feed did not end within {MAX_PAGES} pages");
    }
}

/// A GraphQL error's code.
fn graphql_code(body: &str) -> String {
    let body: Value = serde_json::from_str(body).unwrap();
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn token_feed_from_a_blank_since_lists_every_sale_once() {
    let upstream = start(37, 300).await;
    let (deleted, _) = upstream.churn("token/delete", 10).await;
    let (records, _, requests) = upstream.sales_feed(37, "", async |_| {}).await;

    assert_eq!(
        requests,
        300usize.div_ceil(37) + 1,
        "pages, then a null until"
    );
    let seen = raw_ids(&records);
    assert_eq!(set(&seen).len(), 300, "each sale once");
    assert!(seen[0].starts_with("sale_"), "{}", seen[0]);
    let mirror = mirror(records);
    let tombstones: Vec<String> = mirror
        .iter()
        .filter(|(_, r)| r.contains(r#""deleted":true"#))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(tombstones, deleted, "soft deletes are in the feed");
    assert_eq!(live(mirror), truth_by_id(&upstream, "token").await);

    // A null or missing since also starts from the beginning.
    let (blank, _) = upstream.sales("", 5).await;
    for variables in [json!({ "since": null, "first": 5 }), json!({ "first": 5 })] {
        assert_eq!(upstream.sales_with(variables).await.0, blank);
    }
}

#[tokio::test]
async fn token_feed_after_a_stored_token_lists_each_change_once_at_its_latest_state() {
    let upstream = start(41, 200).await;
    let (initial, token, _) = upstream.sales_feed(100, "", async |_| {}).await;

    let (updated, _) = upstream.churn("token/update", 5).await;
    let (created, _) = upstream.churn("token/create", 3).await;
    let (deleted, _) = upstream.churn("token/delete", 2).await;
    let (mass, _) = upstream.churn("token/mass_update", 4).await;
    let (changes, _, _) = upstream.sales_feed(4, &token, async |_| {}).await;

    let changed = raw_ids(&changes);
    assert_eq!(set(&changed).len(), changed.len(), "each sale once");
    let expected: BTreeSet<String> = [updated, created, deleted.clone(), mass.clone()]
        .concat()
        .into_iter()
        .collect();
    assert_eq!(set(&changed), expected);
    let changes = mirror(changes);
    for id in &deleted {
        assert!(changes[id].contains(r#""deleted":true"#), "{}", changes[id]);
    }
    let updated_at = |id: &String| {
        let sale: Value = serde_json::from_str(&changes[id]).unwrap();
        sale["updatedAt"].as_str().unwrap().to_owned()
    };
    let shared: BTreeSet<String> = mass.iter().map(updated_at).collect();
    assert_eq!(shared.len(), 1, "a mass update shares one updatedAt");

    let mut mirror = mirror(initial);
    mirror.extend(changes);
    assert_eq!(live(mirror), truth_by_id(&upstream, "token").await);
}

#[tokio::test]
async fn token_feed_read_under_churn_converges_on_the_truth() {
    let upstream = start(43, 250).await;
    // Sales change while the feed is read: each change gives the sale a new place at
    // the end of the feed, so nothing is lost and the latest state is read last.
    let churn = async |page: usize| {
        if page <= 3 {
            upstream.churn("token/update", 15).await;
            upstream.churn("token/delete", 3).await;
            upstream.churn("token/create", 2).await;
        }
    };
    let (records, token, _) = upstream.sales_feed(40, "", churn).await;
    assert!(records.len() > 250, "changed sales were read again");
    assert_eq!(live(mirror(records)), truth_by_id(&upstream, "token").await);
    let (nothing, until) = upstream.sales(&token, 10).await;
    assert!(nothing.is_empty());
    assert_eq!(until, None, "an empty page has a null until");
}

#[tokio::test]
async fn token_format_rotation_refuses_older_tokens_with_invalid_since_format() {
    let upstream = start(47, 50).await;
    let (_, Some(old)) = upstream.sales("", 10).await else {
        panic!("a page of 10 has an until");
    };
    let rotated = upstream.control("token/rotate_format", json!({})).await;
    assert_eq!(rotated["version"], 2);

    let (status, body) = upstream.graphql(json!({ "since": old, "first": 10 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("INVALID_SINCE_FORMAT"), "{body}");
    assert_eq!(graphql_code(&body), "INVALID_SINCE_FORMAT");

    // A blank since starts again and hands out tokens of the new format.
    let (_, Some(new)) = upstream.sales("", 10).await else {
        panic!("a page of 10 has an until");
    };
    assert_ne!(new, old);
    let (page, _) = upstream.sales(&new, 10).await;
    assert_eq!(page.len(), 10);

    for garbage in [
        json!("garbage"),
        json!("v2."),
        json!("v2.zzzzzzzzzzzzzzzz"),
        json!(42),
    ] {
        let (status, body) = upstream
            .graphql(json!({ "since": garbage, "first": 10 }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage}");
        assert_eq!(graphql_code(&body), "INVALID_SINCE_FORMAT", "{garbage}");
    }
}

#[tokio::test]
async fn token_first_is_checked() {
    let upstream = start(53, 10).await;
    for first in [json!(0), json!(251), json!("10"), json!(1.5)] {
        let (status, body) = upstream
            .graphql(json!({ "since": "", "first": first }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{first}");
        assert_eq!(graphql_code(&body), "BAD_USER_INPUT", "{first}");
    }
    let (page, _) = upstream.sales("", 250).await;
    assert_eq!(page.len(), 10);

    let url = format!("{}/pos/graphql", upstream.base);
    let response = upstream.client.post(url).body("{").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(body["errors"][0]["message"].is_string(), "{body}");
}

// ---------------------------------------------------------------------------------------
// position (Carrot quest style): paginate_position=[updated, id], meta.next_after_position
// ---------------------------------------------------------------------------------------

/// One conversations reply, with the positions kept as raw JSON text.
#[derive(Deserialize)]
struct ConversationPage {
    data: Vec<Box<RawValue>>,
    meta: PositionMeta,
}

#[derive(Deserialize)]
struct PositionMeta {
    next_after_position: Option<Box<RawValue>>,
    next_before_position: Option<Box<RawValue>>,
}

/// A page: its record texts and the exact texts of the next positions.
struct Conversations {
    records: Vec<String>,
    next: Option<String>,
    before: Option<String>,
}

impl Upstream {
    async fn conversations(&self, params: &[(&str, &str)]) -> Conversations {
        let (status, body) = self.get_text("/carrot/conversations", params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: ConversationPage = serde_json::from_str(&body).unwrap();
        let text = |p: Option<Box<RawValue>>| p.map(|p| p.get().to_owned());
        Conversations {
            records: page.data.iter().map(|r| r.get().to_owned()).collect(),
            next: text(page.meta.next_after_position),
            before: text(page.meta.next_before_position),
        }
    }

    /// Pages after `position` (or from the start) until `next_after_position` is null,
    /// passing each position back verbatim and calling `between` after each page.
    /// Returns the records, the last position and the number of requests.
    async fn position_feed(
        &self,
        count: usize,
        mut position: Option<String>,
        mut between: impl AsyncFnMut(usize),
    ) -> (Vec<String>, Option<String>, usize) {
        let count = count.to_string();
        let mut records = Vec::new();
        for request in 1..=MAX_PAGES {
            let mut params = vec![
                ("paginate_count", count.as_str()),
                ("paginate_direction", "after"),
                ("paginate_page_order", "asc"),
            ];
            if let Some(position) = &position {
                params.push(("paginate_position", position.as_str()));
            }
            let page = self.conversations(&params).await;
            let last = page.records.last().map(|r| position_of(r));
            records.extend(page.records);
            let Some(next) = page.next else {
                return (records, last.or(position), request);
            };
            assert_eq!(
                Some(&next),
                last.as_ref(),
                "the last record's exact position"
            );
            position = Some(next);
            between(request).await;
        }
        panic!("paging did not end within {MAX_PAGES} pages");
    }
}

/// `[updated, id]` from a record's exact number texts.
fn position_of(record: &str) -> String {
    let record: Value = serde_json::from_str(record).unwrap();
    format!("[{},{}]", record["updated"], record["id"])
}

#[tokio::test]
async fn position_paging_returns_every_conversation_with_exact_ids_and_timestamps() {
    let upstream = start(59, 300).await;
    upstream.churn("position/delete", 7).await;
    let (records, _, requests) = upstream.position_feed(50, None, async |_| {}).await;
    assert_eq!(records.len(), 300, "soft-deleted conversations stay listed");
    assert_eq!(
        requests, 7,
        "six full pages, then an empty one without a next position"
    );

    let truth = upstream.truth("position").await;
    assert!(
        truth.starts_with(r#"[{"id":1160406004324630614,"#),
        "{truth}"
    );
    let first = records
        .iter()
        .find(|r| r.starts_with(r#"{"id":1160406004324630614,"#))
        .expect("the first id is served as exact text");
    assert!(truth.contains(first.as_str()));

    let mut order = Vec::new();
    for record in &records {
        let value: Value = serde_json::from_str(record).unwrap();
        let updated = value["updated"].to_string();
        let (seconds, micros) = updated.split_once('.').unwrap();
        assert_eq!(micros.len(), 6, "six decimals, kept: {updated}");
        assert!(record.contains(&format!(r#""updated":{updated}"#)));
        let id: u64 = value["id"].to_string().parse().unwrap();
        assert!(id > 1 << 53, "{id} is beyond an f64's integers");
        order.push((seconds.parse::<i64>().unwrap(), micros.to_owned(), id));
    }
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "in (updated, id) order"
    );
    assert_eq!(live(mirror(records)), mirror(raw_array(&truth)));
}

#[tokio::test]
async fn position_mass_update_shares_one_updated_text_and_pages_through_it_by_id() {
    let upstream = start(61, 200).await;
    let (_, position, _) = upstream.position_feed(50, None, async |_| {}).await;
    let (mass, _) = upstream.churn("position/mass_update", 30).await;

    let (records, _, requests) = upstream.position_feed(7, position, async |_| {}).await;
    assert_eq!(raw_ids(&records), mass, "each once, in id order");
    assert_eq!(requests, 5, "four full pages of 7 and a short one of 2");
    let updated: BTreeSet<String> = records
        .iter()
        .map(|r| serde_json::from_str::<Value>(r).unwrap()["updated"].to_string())
        .collect();
    assert_eq!(updated.len(), 1, "{updated:?}");
}

#[tokio::test]
async fn position_paging_under_churn_converges_on_the_truth() {
    let upstream = start(67, 300).await;
    // A changed conversation moves to the end of (updated, id) order, ahead of the
    // reader, so one pass reads its latest state.
    let churn = async |page: usize| {
        if page <= 2 {
            upstream.churn("position/update", 20).await;
            upstream.churn("position/delete", 5).await;
            upstream.churn("position/create", 3).await;
        }
    };
    let (records, _, _) = upstream.position_feed(50, None, churn).await;
    assert!(records.len() > 306, "changed conversations were read again");
    assert_eq!(
        live(mirror(records)),
        truth_by_id(&upstream, "position").await
    );
}

#[tokio::test]
async fn position_direction_including_and_page_order_follow_the_position() {
    let upstream = start(71, 40).await;
    let all = upstream.conversations(&[("paginate_count", "50")]).await;
    let r = &all.records;
    let at = |i: usize| position_of(&r[i]);
    assert_eq!(r.len(), 40);
    assert_eq!((&all.next, &all.before), (&None, &None), "a short page");
    let ten = upstream.conversations(&[("paginate_count", "10")]).await;
    assert_eq!(ten.records, r[..10]);
    assert_eq!(ten.next, Some(at(9)));
    assert_eq!(ten.before, Some(at(0)));

    let from = async |position: &str, params: &[(&str, &str)]| {
        let mut all = vec![("paginate_position", position)];
        all.extend_from_slice(params);
        upstream.conversations(&all).await
    };
    let after = from(&at(2), &[("paginate_count", "3")]).await;
    assert_eq!(after.records, r[3..6]);
    let including = from(
        &at(2),
        &[("paginate_count", "3"), ("paginate_including", "true")],
    )
    .await;
    assert_eq!(including.records, r[2..5]);
    let before = from(
        &at(3),
        &[("paginate_count", "2"), ("paginate_direction", "before")],
    )
    .await;
    assert_eq!(before.records, r[1..3]);
    assert_eq!(before.before, Some(at(1)));
    let before_desc = from(
        &at(3),
        &[
            ("paginate_count", "2"),
            ("paginate_direction", "before"),
            ("paginate_page_order", "desc"),
        ],
    )
    .await;
    assert_eq!(before_desc.records, [&*r[2], &*r[1]]);
    let after_desc = from(
        &at(0),
        &[("paginate_count", "3"), ("paginate_page_order", "desc")],
    )
    .await;
    assert_eq!(after_desc.records, [&*r[3], &*r[2], &*r[1]]);
    assert_eq!(
        after_desc.next,
        Some(at(3)),
        "the greatest position of the page"
    );

    // A short page has no next position.
    let short = from(&at(35), &[("paginate_count", "50")]).await;
    assert_eq!(short.records, r[36..]);
    assert_eq!(short.next, None);
    // [0, 0] is before everything; 20 is the default count.
    let from_zero = from("[0, 0]", &[]).await;
    assert_eq!(from_zero.records, r[..20]);
    // A position may carry up to nine decimals, compared exactly.
    let value: Value = serde_json::from_str(&r[4]).unwrap();
    let nine = format!("[{}000,{}]", value["updated"], value["id"]);
    let exact = from(&nine, &[("paginate_count", "1")]).await;
    assert_eq!(exact.records, r[5..6]);
}

#[tokio::test]
async fn position_bad_parameters_are_a_json_400() {
    let upstream = start(73, 10).await;
    for (name, value) in [
        ("paginate_position", "yesterday"),
        ("paginate_position", "[1]"),
        ("paginate_position", "[1,2,3]"),
        ("paginate_position", "{}"),
        ("paginate_position", "[1.5e9,1]"),
        ("paginate_position", "[-1,0]"),
        ("paginate_position", "[1,1.5]"),
        ("paginate_position", r#"[1,"1"]"#),
        ("paginate_position", "[1.1234567890,1]"),
        ("paginate_count", "0"),
        ("paginate_count", "51"),
        ("paginate_direction", "sideways"),
        ("paginate_including", "maybe"),
        ("paginate_page_order", "up"),
    ] {
        let (status, body) = upstream
            .get_text("/carrot/conversations", &[(name, value)])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}={value}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["errors"][0].is_string(), "{body}");
    }
}

// ---------------------------------------------------------------------------------------
// offset (Reqon style): offset/limit pages, modified_since, tombstones of hard deletes
// ---------------------------------------------------------------------------------------

/// One items reply.
#[derive(Deserialize)]
struct ItemPage {
    items: Vec<Box<RawValue>>,
    total: u64,
}

impl Upstream {
    async fn items(&self, params: &[(&str, &str)]) -> (Vec<String>, u64) {
        let (status, body) = self.get_text("/reqon/items", params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: ItemPage = serde_json::from_str(&body).unwrap();
        let items = page.items.iter().map(|r| r.get().to_owned()).collect();
        (items, page.total)
    }

    /// Pages by offset from 0 until a short page, with fixed `params`, calling
    /// `between` after each page. Returns the items and the number of requests.
    async fn items_feed(
        &self,
        limit: usize,
        params: &[(&str, &str)],
        mut between: impl AsyncFnMut(usize),
    ) -> (Vec<String>, usize) {
        let mut items = Vec::new();
        for request in 1..=MAX_PAGES {
            let (offset, limit_text) = (items.len().to_string(), limit.to_string());
            let mut all = vec![("offset", offset.as_str()), ("limit", limit_text.as_str())];
            all.extend_from_slice(params);
            let (page, _) = self.items(&all).await;
            let short = page.len() < limit;
            items.extend(page);
            if short {
                return (items, request);
            }
            between(request).await;
        }
        panic!("paging did not end within {MAX_PAGES} pages");
    }

    async fn deletions(&self, params: &[(&str, &str)]) -> Vec<Value> {
        let (status, body) = self.get_text("/reqon/items/deleted", params).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        body["deletions"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn offset_paging_visits_every_live_item_and_total_counts_the_matches() {
    let upstream = start(79, 250).await;
    upstream.churn("offset/delete", 6).await;
    let (items, requests) = upstream.items_feed(100, &[], async |_| {}).await;
    assert_eq!(requests, 3);
    // In id order, byte for byte the truth.
    assert_eq!(items, raw_array(&upstream.truth("offset").await));

    let (_, total) = upstream.items(&[("offset", "200"), ("limit", "1")]).await;
    assert_eq!(total, 244, "total counts every match, not the page");
    let (with_deleted, total) = upstream
        .items(&[("includeDeleted", "true"), ("limit", "500")])
        .await;
    assert_eq!((with_deleted.len(), total), (250, 250));
}

#[tokio::test]
async fn offset_modified_since_is_inclusive_in_all_four_formats() {
    let upstream = start(83, 100).await;
    // The clock starts at 2017-09-03T21:00:00Z: move it to midnight, then change three
    // items at 00:00:00, 00:00:01 and 00:00:02.
    upstream
        .control("tick", json!({ "seconds": 3 * 3600 }))
        .await;
    let (changed, at) = upstream.churn("offset/update", 3).await;
    assert_eq!(at, "2017-09-04T00:00:00.000Z");
    let by_time = |items: &[String]| {
        let mut items: Vec<(String, String)> = items
            .iter()
            .map(|r| {
                let v: Value = serde_json::from_str(r).unwrap();
                (
                    v["updatedAt"].as_str().unwrap().to_owned(),
                    id_text(&v["id"]),
                )
            })
            .collect();
        items.sort();
        items.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    };
    let (all_three, _) = upstream.items(&[("modified_since", &at)]).await;
    assert_eq!(set(&by_time(&all_three)), set(&changed));
    let order = by_time(&all_three);

    for (since, expected) in [
        ("2017-09-04", &order[..]),
        ("1504483200", &order[..]),
        ("1504483200000", &order[..]),
        ("2017-09-04T00:00:00Z", &order[..]),
        ("2017-09-04T03:00:01+03:00", &order[1..]),
        ("1504483201", &order[1..]),
        ("1504483201001", &order[2..]),
        ("2017-09-04T00:00:02.000Z", &order[2..]),
        ("2017-09-05", &[]),
    ] {
        let (items, total) = upstream.items(&[("modified_since", since)]).await;
        assert_eq!(by_time(&items), expected, "modified_since={since}");
        assert_eq!(total, expected.len() as u64);
    }
    for bad in [
        "yesterday",
        "2017-13-01",
        "-5",
        "1.5",
        "2017-09-04 00:00:00",
    ] {
        for path in ["/reqon/items", "/reqon/items/deleted"] {
            let (status, _) = upstream.get_text(path, &[("modified_since", bad)]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {bad}");
        }
    }
}

#[tokio::test]
async fn offset_bad_parameters_are_a_json_400() {
    let upstream = start(87, 10).await;
    for (path, name, value) in [
        ("/reqon/items", "limit", "0"),
        ("/reqon/items", "limit", "501"),
        ("/reqon/items", "offset", "-1"),
        ("/reqon/items", "includeDeleted", "yes"),
        ("/reqon/items/deleted", "page", "0"),
        ("/reqon/items/deleted", "per_page", "501"),
    ] {
        let (status, body) = upstream.get_text(path, &[(name, value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {name}={value}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["errors"][0].is_string(), "{body}");
    }
}

#[tokio::test]
async fn offset_paging_misses_items_when_earlier_ones_are_hard_deleted() {
    let upstream = start(89, 200).await;
    let before = raw_ids(&raw_array(&upstream.truth("offset").await));
    let mut deleted = Vec::new();
    let churn = async |page: usize| {
        if page == 1 {
            let (ids, _) = upstream.churn("offset/hard_delete", 20).await;
            deleted.extend(ids);
        }
    };
    let (items, _) = upstream.items_feed(50, &[], churn).await;

    // Every hard delete among the 50 items already read shifted one unread item back
    // into the first page's rows: plain offset paging never sees it, although it was
    // never deleted.
    let seen = set(&raw_ids(&items));
    let missed: Vec<&String> = before
        .iter()
        .filter(|id| !seen.contains(*id) && !deleted.contains(id))
        .collect();
    let deleted_behind = before[..50]
        .iter()
        .filter(|id| deleted.contains(id))
        .count();
    assert!(
        deleted_behind > 0,
        "the seed deletes some already-read items"
    );
    assert_eq!(missed.len(), deleted_behind, "{missed:?}");
    let truth = set(&raw_ids(&raw_array(&upstream.truth("offset").await)));
    assert!(
        missed.iter().all(|id| truth.contains(*id)),
        "missed live items"
    );
}

#[tokio::test]
async fn offset_soft_deletes_need_include_deleted_and_hard_deletes_leave_tombstones() {
    let upstream = start(97, 60).await;
    let (soft, _) = upstream.churn("offset/delete", 5).await;
    let (live_items, _) = upstream.items(&[("limit", "500")]).await;
    assert_eq!(live_items.len(), 55);
    assert!(raw_ids(&live_items).iter().all(|id| !soft.contains(id)));
    let (all, _) = upstream
        .items(&[("limit", "500"), ("includeDeleted", "true")])
        .await;
    let all = mirror(all);
    for id in &soft {
        assert!(all[id].contains(r#""deleted":true"#), "{}", all[id]);
    }

    let (hard, at) = upstream.churn("offset/hard_delete", 12).await;
    let (all, total) = upstream
        .items(&[("limit", "500"), ("includeDeleted", "true")])
        .await;
    assert_eq!(total, 48);
    assert!(raw_ids(&all).iter().all(|id| !hard.contains(id)));

    let tombstones = upstream.deletions(&[]).await;
    let ids: Vec<String> = tombstones.iter().map(|t| id_text(&t["id"])).collect();
    let times: Vec<&str> = tombstones
        .iter()
        .map(|t| t["deletedAt"].as_str().unwrap())
        .collect();
    assert_eq!(times[0], at);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "by deletion time");
    assert_eq!(set(&ids), set(&hard));

    let mut paged = Vec::new();
    for page in ["1", "2", "3", "4"] {
        let tombstones = upstream
            .deletions(&[("page", page), ("per_page", "5")])
            .await;
        paged.push(tombstones.len());
    }
    assert_eq!(paged, [5, 5, 2, 0]);
    let since_second = upstream.deletions(&[("modified_since", times[1])]).await;
    assert_eq!(since_second.len(), 11, "modified_since is inclusive");
    let second = chrono::DateTime::parse_from_rfc3339(times[1]).unwrap();
    let unix = second.timestamp().to_string();
    assert_eq!(
        upstream.deletions(&[("modified_since", &unix)]).await,
        since_second
    );
}

// ---------------------------------------------------------------------------------------
// link: a bare array, Link: <...>; rel="next" on full pages
// ---------------------------------------------------------------------------------------

/// The target of a `Link` header's `rel="next"`.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = header(headers, "link")?;
    let (target, params) = link.split_once(';')?;
    assert_eq!(params.trim(), r#"rel="next""#, "{link}");
    Some(
        target
            .trim()
            .strip_prefix('<')?
            .strip_suffix('>')?
            .to_owned(),
    )
}

impl Upstream {
    /// Follows `Link: rel="next"` from `first` until a page has none, calling `between`
    /// after each page. Returns the records, the URLs followed and the number of requests.
    async fn orders_feed(
        &self,
        first: &str,
        mut between: impl AsyncFnMut(usize),
    ) -> (Vec<String>, Vec<String>, usize) {
        let mut url = format!("{}{first}", self.base);
        let (mut records, mut followed) = (Vec::new(), Vec::new());
        for request in 1..=MAX_PAGES {
            let response = self.client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let next = next_link(response.headers());
            records.extend(raw_array(&response.text().await.unwrap()));
            let Some(next) = next else {
                return (records, followed, request);
            };
            followed.push(next.clone());
            url = next;
            between(request).await;
        }
        panic!("paging did not end within {MAX_PAGES} pages");
    }
}

#[tokio::test]
async fn link_paging_follows_the_next_link_to_every_order() {
    let upstream = start(101, 230).await;
    let (deleted, _) = upstream.churn("link/delete", 4).await;
    let (records, followed, requests) = upstream
        .orders_feed("/link/orders?per_page=50", async |_| {})
        .await;
    assert_eq!(requests, 5, "four full pages and a short one");
    assert_eq!(records.len(), 230, "soft-deleted orders stay listed");
    let seen = raw_ids(&records);
    assert_eq!(seen.len(), set(&seen).len());
    assert!(
        followed[0].starts_with(&format!("{}/link/orders?per_page=50&after=", upstream.base)),
        "{}",
        followed[0]
    );
    assert!(
        followed[0].ends_with(&seen[49]),
        "after the last id of the page"
    );
    let mirror = mirror(records);
    for id in &deleted {
        assert!(mirror[id].contains(r#""deleted":true"#), "{}", mirror[id]);
    }
    assert_eq!(live(mirror), truth_by_id(&upstream, "link").await);

    // A full last page still links on; the next page is empty and has no link.
    let (_, _, requests) = upstream
        .orders_feed("/link/orders?per_page=23", async |_| {})
        .await;
    assert_eq!(requests, 11);
}

#[tokio::test]
async fn link_next_url_is_built_on_the_requests_host() {
    let upstream = start(103, 10).await;
    let response = upstream
        .client
        .get(format!("{}/link/orders?per_page=5", upstream.base))
        .header("host", "upstream.example:8443")
        .send()
        .await
        .unwrap();
    let next = next_link(response.headers()).unwrap();
    let ids = ids(&json_records(response).await);
    assert_eq!(
        next,
        format!(
            "http://upstream.example:8443/link/orders?per_page=5&after={}",
            ids[4]
        )
    );
    for (name, value) in [("per_page", "0"), ("per_page", "251"), ("after", "x")] {
        let (status, body) = upstream.get_text("/link/orders", &[(name, value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}={value}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["errors"][0].is_string(), "{body}");
    }
}

#[tokio::test]
async fn link_paging_under_churn_sees_new_orders_but_not_edits_behind_it() {
    let upstream = start(107, 200).await;
    let mut edited = Vec::new();
    let mut created = Vec::new();
    let churn = async |page: usize| {
        if page == 2 {
            edited = upstream.churn("link/update", 30).await.0;
            created = upstream.churn("link/create", 5).await.0;
        }
    };
    let (records, _, _) = upstream
        .orders_feed("/link/orders?per_page=50", churn)
        .await;
    let mirror = mirror(records);
    assert!(
        created.iter().all(|id| mirror.contains_key(id)),
        "new ids come last"
    );
    let truth = truth_by_id(&upstream, "link").await;
    let stale: Vec<&String> = edited
        .iter()
        .filter(|id| mirror[*id] != truth[*id])
        .collect();
    assert!(
        !stale.is_empty(),
        "edits behind the reader are missed in this pass"
    );

    // Link paging has no resume point: a pass from the beginning converges.
    let (again, _, _) = upstream
        .orders_feed("/link/orders?per_page=50", async |_| {})
        .await;
    assert_eq!(live(self::mirror(again)), truth);
}

// ---------------------------------------------------------------------------------------
// faults
// ---------------------------------------------------------------------------------------

const PRODUCTS: &str = "/insales/products.json";

#[tokio::test]
async fn queued_faults_apply_in_order_one_per_api_request() {
    let upstream = start(109, 20).await;
    let queued = upstream
        .faults(json!({ "faults": [
            { "kind": "status", "status": 500 },
            { "kind": "retry_after", "status": 429, "seconds": 2 },
            { "kind": "retry_after", "status": 503, "seconds": 1 },
        ] }))
        .await;
    assert_eq!(
        queued,
        json!({ "pending": 3, "injected": 0, "huge_bytes_sent": 0 })
    );
    // Control requests never take a fault.
    upstream.truth("keyset").await;

    let first = upstream.get(PRODUCTS, &[]).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        header(first.headers(), "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = first.json().await.unwrap();
    assert!(body["errors"][0].is_string(), "{body}");

    let second = upstream.get(PRODUCTS, &[]).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(second.headers(), "retry-after").as_deref(),
        Some("2")
    );
    let third = upstream.get("/link/orders", &[]).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(third.headers(), "retry-after").as_deref(), Some("1"));
    assert_eq!(upstream.get(PRODUCTS, &[]).await.status(), StatusCode::OK);

    assert_eq!(
        upstream.control_get("faults").await,
        json!({ "pending": 0, "injected": 3, "huge_bytes_sent": 0 })
    );
    upstream
        .faults(json!({ "faults": [{ "kind": "status", "status": 502 }] }))
        .await;
    upstream.control_delete("faults").await;
    assert_eq!(
        upstream.control_get("faults").await,
        json!({ "pending": 0, "injected": 0, "huge_bytes_sent": 0 })
    );
    assert_eq!(upstream.get(PRODUCTS, &[]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn truncated_fault_is_a_complete_200_whose_json_is_cut_in_half() {
    let upstream = start(113, 20).await;
    let (_, whole) = upstream.list_raw(&[]).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "truncated" }] }))
        .await;
    let response = upstream.get(PRODUCTS, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(response.headers(), "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body = response.text().await.expect("the body is complete");
    assert_eq!(body, whole[..whole.len() / 2]);
    assert!(serde_json::from_str::<Value>(&body).is_err());
}

#[tokio::test]
async fn html_fault_is_an_html_page_instead_of_json() {
    let upstream = start(127, 5).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "html" }, { "kind": "html", "status": 502 }] }))
        .await;
    for status in [StatusCode::OK, StatusCode::BAD_GATEWAY] {
        let response = upstream.get(PRODUCTS, &[]).await;
        assert_eq!(response.status(), status);
        assert!(
            header(response.headers(), "content-type")
                .unwrap()
                .starts_with("text/html")
        );
        let page = response.text().await.unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    }
}

#[tokio::test]
async fn reset_fault_is_a_connection_error_without_a_response() {
    let upstream = start(131, 5).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "reset" }] }))
        .await;
    let error = upstream
        .client
        .get(upstream.url(PRODUCTS, &[]))
        .send()
        .await
        .expect_err("no response at all");
    // A TCP reset under the request, not an HTTP answer of any kind.
    let reset = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(error.is_request() && reset, "{error:?}");
    // The client opens a new connection for the next request.
    assert_eq!(upstream.get(PRODUCTS, &[]).await.status(), StatusCode::OK);
    let log = upstream.requests().await;
    assert_eq!(log[0]["fault"], "reset");
    assert_eq!(log[0]["status"], Value::Null);
    assert_eq!(log[1]["status"], 200);
}

#[tokio::test]
async fn slow_fault_answers_normally_after_the_delay() {
    let upstream = start(137, 5).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "slow", "ms": 300 }] }))
        .await;
    let started = Instant::now();
    let (status, body) = upstream.list_raw(&[]).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw_array(&body).len(), 5);
}

#[tokio::test]
async fn rate_limit_fault_adds_both_spellings_of_the_headers() {
    let upstream = start(139, 5).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "rate_limit", "remaining": 0, "reset": 1 }] }))
        .await;
    let response = upstream.get(PRODUCTS, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    for (name, value) in [
        ("ratelimit-remaining", "0"),
        ("ratelimit-reset", "1"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1"),
    ] {
        assert_eq!(
            header(response.headers(), name).as_deref(),
            Some(value),
            "{name}"
        );
    }
    assert_eq!(json_records(response).await.len(), 5);
    let next = upstream.get(PRODUCTS, &[]).await;
    assert_eq!(header(next.headers(), "ratelimit-remaining"), None);
}

#[tokio::test]
async fn path_prefix_limits_which_requests_take_a_fault() {
    let upstream = start(149, 5).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "status", "status": 500 }], "path_prefix": "/reqon" }))
        .await;
    assert_eq!(upstream.get(PRODUCTS, &[]).await.status(), StatusCode::OK);
    assert_eq!(
        upstream.get("/link/orders", &[]).await.status(),
        StatusCode::OK
    );
    let (status, _) = upstream.get_text("/reqon/items/deleted", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        upstream.get("/reqon/items", &[]).await.status(),
        StatusCode::OK
    );
}

/// The statuses of `n` requests under a random fault rate, and the faults injected.
async fn random_faults(seed: u64, n: usize) -> (Vec<u16>, Value) {
    let upstream = start(seed, 5).await;
    upstream
        .faults(json!({ "rate": 0.5, "kinds": ["status", "html"] }))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..n {
        let response = upstream.get(PRODUCTS, &[]).await;
        let html = header(response.headers(), "content-type")
            .unwrap()
            .starts_with("text/html");
        statuses.push(if html { 1 } else { response.status().as_u16() });
    }
    let counts = upstream.control_get("faults").await;
    upstream.faults(json!({ "rate": 0 })).await;
    for _ in 0..10 {
        assert_eq!(upstream.get(PRODUCTS, &[]).await.status(), StatusCode::OK);
    }
    (statuses, counts)
}

#[tokio::test]
async fn random_faults_follow_the_seeded_rate_and_can_be_turned_off() {
    let (statuses, counts) = random_faults(151, 40).await;
    let faulted = statuses.iter().filter(|&&s| s != 200).count();
    assert!((8..=32).contains(&faulted), "about half: {statuses:?}");
    assert!(statuses.contains(&1), "html pages");
    assert!(statuses.iter().any(|&s| s >= 500), "error statuses");
    assert_eq!(
        counts,
        json!({ "pending": 0, "injected": faulted, "huge_bytes_sent": 0 })
    );
    // The same seed and requests give the same faults.
    assert_eq!(random_faults(151, 40).await.0, statuses);
}

#[tokio::test]
async fn fault_settings_and_control_bodies_are_checked_with_a_json_400() {
    let upstream = start(157, 5).await;
    let post = async |path: &str, body: &str| {
        let response = upstream
            .client
            .post(format!("{}/_control/{path}", upstream.base))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON error body");
        assert!(body["errors"][0].is_string(), "{body}");
        status
    };
    for body in [
        "{",
        r#"{"faults": [{"kind": "teapot"}]}"#,
        r#"{"faults": [{"kind": "status", "status": 200}]}"#,
        r#"{"faults": [{"kind": "status"}]}"#,
        r#"{"faults": [{"kind": "retry_after", "status": 500, "seconds": 1}]}"#,
        r#"{"faults": [{"kind": "slow", "ms": 3000, "extra": 1}]}"#,
        r#"{"rate": 2}"#,
        r#"{"rate": 0.5, "kinds": []}"#,
        r#"{"kinds": ["reset"]}"#,
    ] {
        assert_eq!(
            post("faults", body).await,
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    assert_eq!(upstream.control_get("faults").await["pending"], 0);
    for (path, body) in [
        ("keyset/update", "not json"),
        ("token/create", r#"{"count": -1}"#),
        ("position/delete", r#"{"cnt": 1}"#),
        ("offset/hard_delete", ""),
        ("link/create", r#"{"count": 100001}"#),
        ("tick", "{}"),
        ("auth", r#"{"type": "kerberos"}"#),
        (
            "auth",
            r#"{"type": "header", "name": "bad header", "value": "k"}"#,
        ),
    ] {
        assert_eq!(
            post(path, body).await,
            StatusCode::BAD_REQUEST,
            "{path} {body}"
        );
    }
    // Without a Content-Type (a bare `curl -d`), a good body is still taken.
    let response = upstream
        .client
        .post(format!("{}/_control/link/create", upstream.base))
        .body(r#"{"count": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// credentials
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn each_credential_type_is_required_once_set() {
    let upstream = start(163, 5).await;
    let url = || upstream.url(PRODUCTS, &[]);
    type Sign = fn(&Client, url::Url) -> reqwest::RequestBuilder;
    fn with_key(client: &Client, mut url: url::Url, key: &str) -> reqwest::RequestBuilder {
        url.query_pairs_mut().append_pair("api_key", key);
        client.get(url)
    }
    let cases: [(Value, Sign, Sign, &str); 4] = [
        (
            json!({ "type": "bearer", "token": "t0k3n" }),
            |c, u| c.get(u).bearer_auth("t0k3n"),
            |c, u| c.get(u).bearer_auth("wrong"),
            "Bearer",
        ),
        (
            json!({ "type": "basic", "username": "u", "password": "p ä" }),
            |c, u| c.get(u).basic_auth("u", Some("p ä")),
            |c, u| c.get(u).basic_auth("u", Some("p")),
            "Basic",
        ),
        (
            json!({ "type": "header", "name": "X-Api-Key", "value": "k" }),
            |c, u| c.get(u).header("x-api-key", "k"),
            |c, u| c.get(u).header("x-api-key", "K"),
            "ApiKey",
        ),
        (
            json!({ "type": "query", "name": "api_key", "value": "k&k" }),
            |c, u| with_key(c, u, "k&k"),
            |c, u| with_key(c, u, "k"),
            "ApiKey",
        ),
    ];
    for (credential, sign, wrong, scheme) in cases {
        upstream.control("auth", credential.clone()).await;
        for request in [upstream.client.get(url()), wrong(&upstream.client, url())] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{credential}");
            let challenge = header(response.headers(), "www-authenticate").unwrap();
            assert!(challenge.starts_with(scheme), "{challenge}");
            let body: Value = response.json().await.unwrap();
            assert!(body["errors"][0].is_string(), "{body}");
        }
        let response = sign(&upstream.client, url()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{credential}");
        // Control endpoints never need it.
        upstream.truth("keyset").await;
    }
    upstream.control("auth", json!({ "type": "none" })).await;
    assert_eq!(upstream.get(PRODUCTS, &[]).await.status(), StatusCode::OK);
}

impl Upstream {
    /// `POST /oauth/token` with a form body (and optionally HTTP Basic client auth).
    async fn oauth_token(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (StatusCode, Value) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .client
            .post(format!("{}/oauth/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn get_with_bearer(&self, token: &str) -> StatusCode {
        let request = self.client.get(self.url(PRODUCTS, &[])).bearer_auth(token);
        request.send().await.unwrap().status()
    }
}

#[tokio::test]
async fn oauth2_access_tokens_are_issued_checked_expired_and_revoked() {
    let upstream = start(167, 5).await;
    upstream
        .control(
            "auth",
            json!({
                "type": "oauth2", "client_id": "c", "client_secret": "s",
                "refresh_token": "r", "expires_in": 60,
            }),
        )
        .await;
    assert_eq!(
        upstream.get(PRODUCTS, &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let grant = [
        ("grant_type", "client_credentials"),
        ("client_id", "c"),
        ("client_secret", "s"),
    ];
    let (status, issued) = upstream.oauth_token(&grant, None).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 60);
    let token = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(upstream.get_with_bearer(&token).await, StatusCode::OK);
    assert_eq!(
        upstream.get_with_bearer("made-up").await,
        StatusCode::UNAUTHORIZED
    );

    let (status, in_header) = upstream
        .oauth_token(&[("grant_type", "client_credentials")], Some(("c", "s")))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, refreshed) = upstream
        .oauth_token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "r"),
                ("client_id", "c"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for issued in [&in_header, &refreshed] {
        let token = issued["access_token"].as_str().unwrap();
        assert_eq!(upstream.get_with_bearer(token).await, StatusCode::OK);
    }

    for (form, basic, status, error) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "c"),
                ("client_secret", "x"),
            ],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "client_credentials")],
            Some(("c", "x")),
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "refresh_token"), ("refresh_token", "x")],
            None,
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "r"),
                ("client_id", "x"),
            ],
            None,
            401,
            "invalid_client",
        ),
        (
            vec![("grant_type", "password")],
            None,
            400,
            "unsupported_grant_type",
        ),
        (vec![], None, 400, "invalid_request"),
    ] {
        let (got, body) = upstream.oauth_token(&form, basic).await;
        assert_eq!(
            (got.as_u16(), body["error"].as_str()),
            (status, Some(error)),
            "{form:?}"
        );
    }
    assert_eq!(
        upstream.control_get("auth").await,
        json!({ "token_requests": 9 })
    );

    // Revoked tokens get a 401; a new one works.
    upstream.control("auth/revoke", json!({})).await;
    let response = upstream
        .client
        .get(upstream.url(PRODUCTS, &[]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(response.headers(), "www-authenticate").unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let (_, fresh) = upstream.oauth_token(&grant, None).await;
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_ne!(fresh, token);
    assert_eq!(upstream.get_with_bearer(fresh).await, StatusCode::OK);

    // Tokens expire (`expires_in` 0: at once).
    upstream
        .control(
            "auth",
            json!({ "type": "oauth2", "client_id": "c", "client_secret": "s", "expires_in": 0 }),
        )
        .await;
    assert_eq!(
        upstream.control_get("auth").await,
        json!({ "token_requests": 0 })
    );
    let (_, expired) = upstream.oauth_token(&grant, None).await;
    let expired = expired["access_token"].as_str().unwrap();
    assert_eq!(
        upstream.get_with_bearer(expired).await,
        StatusCode::UNAUTHORIZED
    );
    // Without a configured refresh token, the refresh grant is refused.
    let (status, body) = upstream
        .oauth_token(
            &[("grant_type", "refresh_token"), ("refresh_token", "")],
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
}

// ---------------------------------------------------------------------------------------
// request log
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn request_log_lists_api_requests_in_arrival_order() {
    let upstream = start(173, 5).await;
    upstream
        .list_raw(&[("updated_since", EPOCH), ("per_page", "2")])
        .await;
    upstream.sales("", 3).await;
    upstream.truth("token").await;
    upstream.churn("token/update", 1).await;
    upstream
        .faults(json!({ "faults": [{ "kind": "retry_after", "status": 429, "seconds": 1 }] }))
        .await;
    let throttled = upstream.get("/link/orders", &[]).await;
    let wait: u64 = header(throttled.headers(), "retry-after")
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    upstream.get("/link/orders", &[]).await;
    upstream.get("/no/such/route", &[]).await;

    let log = upstream.requests().await;
    assert_eq!(log.len(), 4, "API requests only: {log:?}");
    assert_eq!(log[0]["method"], "GET");
    assert_eq!(log[0]["path"], PRODUCTS);
    assert_eq!(
        log[0]["query"],
        "updated_since=1970-01-01T00%3A00%3A00Z&per_page=2"
    );
    assert_eq!(log[0]["status"], 200);
    assert_eq!(log[0]["fault"], Value::Null);
    assert_eq!(log[1]["method"], "POST");
    assert_eq!(log[1]["path"], "/pos/graphql");
    assert_eq!(log[1]["query"], Value::Null);
    assert_eq!(log[1]["variables"], json!({ "since": "", "first": 3 }));
    assert_eq!(
        (&log[2]["status"], &log[2]["fault"]),
        (&json!(429), &json!("retry_after"))
    );
    assert_eq!(log[3]["status"], 200);
    let at = |i: usize| log[i]["at_ms"].as_u64().unwrap();
    assert!(at(0) <= at(1) && at(1) <= at(2));
    assert!(at(3) - at(2) >= 1000, "the client waited out Retry-After");

    upstream.control_delete("requests").await;
    assert!(upstream.requests().await.is_empty());
    upstream.get(PRODUCTS, &[]).await;
    assert_eq!(upstream.requests().await.len(), 1);
}
