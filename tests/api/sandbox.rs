//! The sandbox upstream over real HTTP: each style's paging semantics (also under churn)
//! and the truth endpoints the convergence tests compare against.

use std::collections::BTreeSet;

use reqwest::{Client, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidemark::sandbox::{self, Sandbox};
use tokio::net::TcpListener;

/// The first `updated_since` of a keyset run (DESIGN.md §4).
const EPOCH: &str = "1970-01-01T00:00:00Z";
/// Far more pages than any test needs, so a paging bug fails instead of looping.
const MAX_PAGES: usize = 500;

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
        [("per_page", "251")],
        [("per_page", "ten")],
        [("updated_since", "yesterday")],
        [("from_id", "-1")],
    ] {
        let (status, body) = upstream.list_raw(&params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body["errors"][0].is_string(), "{body}");
    }
    let (status, _) = upstream.list_raw(&[("per_page", "250")]).await;
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
