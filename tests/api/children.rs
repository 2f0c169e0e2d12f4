//! Child streams (docs/design.md §3, "Child stream"): Shopify-style orders and their
//! transactions from the sandbox's `shopify_orders` dialect. The child mirror and a feed
//! consumer's replica converge under churn of both; a crash between a parent's commit
//! and its children's reads, or in the middle of a child run, loses nothing; a child run
//! reads the changed parents only; bad specs are refused with a pointer.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::crash::Process;
use crate::support::{
    Sandbox, TestApp, assert_problem, database_url, eventually, ready_if, sandbox, spawn,
    spawn_syncing,
};

const SOURCE: &str = "shopify_orders";
const CHILD: &str = "shopify_orders/transactions";

/// The catalog's orders → transactions source, pointed at the sandbox: no credential, no
/// schedules or rate limit, short retries, `orders_page` orders a page; with
/// `child_page`, transactions are paged by `page_info` links too.
fn source(upstream: &Sandbox, orders_page: u32, child_page: Option<u32>) -> Value {
    let path = format!(
        "{}/examples/sources/catalog/shopify_orders.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut source: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let object = source.as_object_mut().unwrap();
    object.remove("auth");
    object.remove("rate_limit");
    source["base_url"] = Value::String(format!("{}/shopify", upstream.base));
    source["retry"] = json!({"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50});
    for stream in source["streams"].as_array_mut().unwrap() {
        stream.as_object_mut().unwrap().remove("schedule");
    }
    source["streams"][0]["pagination"]["limit"] = orders_page.into();
    if let Some(limit) = child_page {
        source["streams"][1]["pagination"] =
            json!({"type": "link", "limit_param": "limit", "limit": limit});
    }
    source
}

/// The sandbox's live orders and transactions, keyed as tidemark keys them.
async fn truth(upstream: &Sandbox) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let text = reqwest::get(format!("{}/_control/{SOURCE}/truth", upstream.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    #[derive(serde::Deserialize)]
    struct Truth {
        orders: BTreeMap<String, Box<RawValue>>,
        transactions: BTreeMap<String, Box<RawValue>>,
    }
    let truth: Truth = serde_json::from_str(&text).unwrap();
    let texts = |m: BTreeMap<String, Box<RawValue>>| {
        m.into_iter()
            .map(|(k, v)| (k, v.get().to_owned()))
            .collect()
    };
    (texts(truth.orders), texts(truth.transactions))
}

#[derive(serde::Deserialize)]
struct FeedPage {
    results: Vec<FeedItem>,
    until: String,
    has_more: bool,
}

#[derive(serde::Deserialize)]
struct FeedItem {
    key: String,
    op: String,
    parent: Option<String>,
    record: Option<Box<RawValue>>,
}

/// A feed consumer of the child stream: follows `until` from `since`, applying each
/// change to `replica`; every result names its parent. Returns the last `until`.
async fn follow(app: &TestApp, since: &str, replica: &mut BTreeMap<String, String>) -> String {
    let mut since = since.to_owned();
    for _ in 0..1000 {
        let response = app
            .get(&format!(
                "/v1/changes?stream={CHILD}&limit=100&since={since}"
            ))
            .await;
        assert_eq!(response.status(), 200);
        let page: FeedPage = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        for item in page.results {
            let parent = item.key.rsplit_once('/').map(|(p, _)| p.to_owned());
            assert_eq!(item.parent, parent, "{}", item.key);
            match (item.op.as_str(), item.record) {
                ("upsert", Some(record)) => {
                    replica.insert(item.key, record.get().to_owned());
                }
                ("delete", None) => {
                    replica.remove(&item.key);
                }
                (op, record) => panic!("{op} with {record:?}"),
            }
        }
        since = page.until;
        if !page.has_more {
            return since;
        }
    }
    panic!("the feed did not end");
}

/// Waits (30 s at most) until the child's mirror equals the truth and it has no job.
async fn children_converge(app: &TestApp, upstream: &Sandbox, what: &str) {
    let (_, transactions) = truth(upstream).await;
    eventually(Duration::from_secs(30), what, || async {
        let mirror = app.mirror(SOURCE, "transactions").await;
        let jobs = app
            .get_json("/v1/jobs?stream=transactions&status=running")
            .await;
        let queued = app
            .get_json("/v1/jobs?stream=transactions&status=queued")
            .await;
        let idle = jobs["results"].as_array().unwrap().is_empty()
            && queued["results"].as_array().unwrap().is_empty();
        ready_if(
            mirror == transactions && idle,
            format!(
                "{} of {} children, idle: {idle}",
                mirror.len(),
                transactions.len()
            ),
        )
    })
    .await;
}

/// One round of churn of both orders and transactions.
async fn churn(upstream: &Sandbox) {
    for (path, count) in [
        ("create", 3),
        ("update", 3),
        ("delete", 2),
        ("transactions/create", 5),
        ("transactions/update", 4),
        ("transactions/delete", 3),
    ] {
        upstream
            .control(&format!("{SOURCE}/{path}"), json!({"count": count}))
            .await;
    }
}

/// The paths of the transactions requests the sandbox has seen.
async fn child_requests(upstream: &Sandbox) -> Vec<String> {
    upstream
        .requests()
        .await
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .filter(|p| p.ends_with("/transactions.json"))
        .collect()
}

#[tokio::test]
async fn children_converge_under_churn_of_parents_and_children() {
    let upstream = sandbox(13, 40).await;
    let app = spawn_syncing().await;
    let response = app
        .post("/v1/sources", &source(&upstream, 10, Some(2)))
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let mut replica = BTreeMap::new();
    let mut since = String::new();
    app.sync_ok(SOURCE, "orders", "incremental").await;
    children_converge(&app, &upstream, "the first children").await;
    let (orders, transactions) = truth(&upstream).await;
    assert_eq!(app.mirror(SOURCE, "orders").await, orders);
    assert!(transactions.len() > 30, "{}", transactions.len());
    since = follow(&app, &since, &mut replica).await;
    assert_eq!(replica, transactions);
    // The child's jobs were queued by the parent's commits.
    let jobs = app.get_json("/v1/jobs?stream=transactions").await;
    let jobs = jobs["results"].as_array().unwrap();
    assert!(!jobs.is_empty());
    assert!(jobs.iter().all(|j| j["trigger"] == "parent"), "{jobs:#?}");

    for round in 0..4 {
        churn(&upstream).await;
        app.sync_ok(SOURCE, "orders", "incremental").await;
        // Hard-deleted orders only a reconcile of the parent sees.
        app.sync_ok(SOURCE, "orders", "reconcile").await;
        children_converge(&app, &upstream, &format!("round {round}")).await;
        let (orders, transactions) = truth(&upstream).await;
        assert_eq!(app.mirror(SOURCE, "orders").await, orders, "round {round}");
        since = follow(&app, &since, &mut replica).await;
        assert_eq!(replica, transactions, "round {round}");
    }
    // The children of deleted orders are gone, in the mirror and the replica.
    let mirror = app.mirror(SOURCE, "transactions").await;
    let (orders, _) = truth(&upstream).await;
    assert!(
        mirror
            .keys()
            .all(|k| orders.contains_key(k.split('/').next().unwrap()))
    );
    // The records API shows a child by its key.
    let (key, text) = mirror.iter().next().unwrap();
    let record = app
        .get_json(&format!(
            "/v1/sources/{SOURCE}/streams/transactions/records/{}",
            key.replace('/', "%2F")
        ))
        .await;
    assert_eq!(record["key"], key.as_str());
    assert_eq!(
        record["record"],
        serde_json::from_str::<Value>(text).unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_child_run_reads_the_changed_parents_only() {
    let upstream = sandbox(14, 60).await;
    let app = spawn_syncing().await;
    let response = app.post("/v1/sources", &source(&upstream, 25, None)).await;
    assert_eq!(response.status(), 201);
    app.sync_ok(SOURCE, "orders", "incremental").await;
    children_converge(&app, &upstream, "the first children").await;
    assert_eq!(child_requests(&upstream).await.len(), 60);

    // Nothing queued: an incremental run of the child makes no request.
    clear_requests(&upstream).await;
    let idle = app.sync_ok(SOURCE, "transactions", "incremental").await;
    assert_eq!(idle["stats"]["requests"], 0, "{idle:#}");

    // k orders change (a transaction each, which moves the order's updated_at).
    assert!(child_requests(&upstream).await.is_empty());
    let changed = upstream
        .control(
            &format!("{SOURCE}/transactions/create"),
            json!({"count": 4}),
        )
        .await;
    let mut parents: Vec<String> = changed["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().split('/').next().unwrap().to_owned())
        .collect();
    parents.sort();
    parents.dedup();
    app.sync_ok(SOURCE, "orders", "incremental").await;
    children_converge(&app, &upstream, "the changed orders' children").await;
    let mut read: Vec<String> = child_requests(&upstream)
        .await
        .iter()
        .map(|p| p.split('/').rev().nth(1).unwrap().to_owned())
        .collect();
    read.sort();
    assert_eq!(read, parents, "one request per changed order, no other");

    // A full job of the child reads every live parent again, and changes nothing.
    clear_requests(&upstream).await;
    let full = app.sync_ok(SOURCE, "transactions", "full").await;
    assert_eq!(child_requests(&upstream).await.len(), 60);
    assert_eq!(full["stats"]["inserted"], 0, "{full:#}");
    assert_eq!(full["stats"]["updated"], 0, "{full:#}");
    app.stop().await;
}

async fn clear_requests(upstream: &Sandbox) {
    let response = reqwest::Client::new()
        .delete(format!("{}/_control/requests", upstream.base))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

#[tokio::test]
async fn silent_changes_of_children_are_caught_by_a_reconcile_of_the_child() {
    let upstream = sandbox(15, 20).await;
    let app = spawn_syncing().await;
    let response = app.post("/v1/sources", &source(&upstream, 50, None)).await;
    assert_eq!(response.status(), 201);
    app.sync_ok(SOURCE, "orders", "incremental").await;
    children_converge(&app, &upstream, "the first children").await;
    // Changes that leave the orders' updated_at alone: no parent change, nothing queued.
    for path in [
        "transactions/update",
        "transactions/delete",
        "transactions/create",
    ] {
        upstream
            .control(
                &format!("{SOURCE}/{path}"),
                json!({"count": 2, "touch_order": false}),
            )
            .await;
    }
    app.sync_ok(SOURCE, "orders", "incremental").await;
    app.sync_ok(SOURCE, "transactions", "incremental").await;
    let (_, transactions) = truth(&upstream).await;
    assert_ne!(app.mirror(SOURCE, "transactions").await, transactions);
    let reconcile = app.sync_ok(SOURCE, "transactions", "reconcile").await;
    assert_eq!(
        app.mirror(SOURCE, "transactions").await,
        transactions,
        "{reconcile:#}"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_child_specs_are_refused_with_a_pointer() {
    let upstream = sandbox(16, 5).await;
    let app = spawn().await;
    let pointer = |problem: &Value| problem["pointer"].clone();

    let mut missing = source(&upstream, 10, None);
    missing["streams"][1]["parent"]["stream"] = json!("refunds");
    let problem =
        assert_problem(app.post("/v1/sources", &missing).await, 422, "invalid-spec").await;
    assert_eq!(pointer(&problem), "/streams/1/parent/stream", "{problem:#}");

    let mut cycle = source(&upstream, 10, None);
    cycle["streams"][0]["parent"] = json!({"stream": "transactions"});
    cycle["streams"][0]["request"]["path"] =
        json!("/admin/api/2024-10/orders/{{parent./order_id}}.json");
    let problem = assert_problem(app.post("/v1/sources", &cycle).await, 422, "invalid-spec").await;
    assert_eq!(pointer(&problem), "/streams/0/parent/stream", "{problem:#}");
    assert!(problem.to_string().contains("cycle"), "{problem:#}");

    let mut orphan = source(&upstream, 10, None);
    orphan["streams"][1]
        .as_object_mut()
        .unwrap()
        .remove("parent");
    let problem = assert_problem(app.post("/v1/sources", &orphan).await, 422, "invalid-spec").await;
    assert_eq!(pointer(&problem), "/streams/1/request/path", "{problem:#}");

    let mut unnamed = source(&upstream, 10, None);
    unnamed["streams"][1]["request"]["path"] = json!("/admin/api/2024-10/transactions.json");
    let problem =
        assert_problem(app.post("/v1/sources", &unnamed).await, 422, "invalid-spec").await;
    assert_eq!(pointer(&problem), "/streams/1/request/path", "{problem:#}");
    app.stop().await;
}

/// The child's mirror as a process serves it: key → record.
async fn process_children(process: &Process) -> BTreeMap<String, Value> {
    let mut mirror = BTreeMap::new();
    let mut after = String::new();
    for _ in 0..100 {
        let page = process
            .get(&format!(
                "/v1/sources/{SOURCE}/streams/transactions/records?limit=1000&after={after}"
            ))
            .await;
        for entry in page["results"].as_array().unwrap() {
            mirror.insert(
                entry["key"].as_str().unwrap().to_owned(),
                entry["record"].clone(),
            );
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => return mirror,
        }
    }
    panic!("the child mirror did not end");
}

async fn truth_values(upstream: &Sandbox) -> BTreeMap<String, Value> {
    let (_, transactions) = truth(upstream).await;
    transactions
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap()))
        .collect()
}

/// The newest job of `stream` on `process`.
async fn newest_job(process: &Process, stream: &str) -> Value {
    process
        .get(&format!("/v1/jobs?stream={stream}&limit=1"))
        .await["results"][0]
        .clone()
}

#[tokio::test]
async fn a_crash_after_a_parent_commit_or_mid_child_run_loses_no_child() {
    let upstream = sandbox(17, 80).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let mut spec = source(&upstream, 20, None);
    // About 25 requests a second: the children of 80 orders take three seconds.
    spec["rate_limit"] = json!({"min_interval_ms": 40});

    // 1. Killed as soon as the parent's job has committed, before its children are read.
    let first = Process::start(&database).await;
    first.post("/v1/sources", spec).await;
    first
        .post(
            &format!("/v1/sources/{SOURCE}/streams/orders/sync"),
            json!({"mode": "incremental"}),
        )
        .await;
    eventually(Duration::from_secs(20), "the orders job to end", || async {
        let job = newest_job(&first, "orders").await;
        assert_ne!(job["status"], "failed", "{job:#}");
        ready_if(job["status"] == "succeeded", job)
    })
    .await;
    let before = process_children(&first).await.len();
    first.kill();
    let truth = truth_values(&upstream).await;
    assert!(
        before < truth.len() / 2,
        "{before} of {} children were read already",
        truth.len()
    );

    // 2. Restarted: the queue the parent's commit wrote drives the children (no parent
    // job runs again). Churn, a parent job, and a kill in the middle of the child's run.
    let second = Process::start(&database).await;
    for (path, count) in [
        ("transactions/update", 10),
        ("transactions/delete", 5),
        ("transactions/create", 10),
        ("delete", 3),
    ] {
        upstream
            .control(&format!("{SOURCE}/{path}"), json!({"count": count}))
            .await;
    }
    second
        .post(
            &format!("/v1/sources/{SOURCE}/streams/orders/sync"),
            json!({"mode": "reconcile"}),
        )
        .await;
    eventually(Duration::from_secs(30), "a child run under way", || async {
        let job = newest_job(&second, "transactions").await;
        let mid = job["status"] == "running"
            && job["stats"]["pages"].as_u64().unwrap_or(0) >= 3
            && newest_job(&second, "orders").await["status"] == "succeeded";
        ready_if(mid, job)
    })
    .await;
    second.kill();

    // 3. Restarted again: the child job is taken over and its mirror ends exact.
    let third = Process::start(&database).await;
    let truth = truth_values(&upstream).await;
    eventually(
        Duration::from_secs(30),
        "the children to converge",
        || async {
            let mirror = process_children(&third).await;
            ready_if(
                mirror == truth,
                format!("{} of {} children", mirror.len(), truth.len()),
            )
        },
    )
    .await;
    let jobs = third.get("/v1/jobs?stream=orders").await;
    assert_eq!(
        jobs["results"].as_array().unwrap().len(),
        2,
        "no parent job ran again"
    );
    third.kill();
}

#[tokio::test]
async fn a_parent_gone_upstream_has_its_children_tombstoned_and_the_job_goes_on() {
    let upstream = sandbox(18, 15).await;
    let app = spawn_syncing().await;
    let response = app.post("/v1/sources", &source(&upstream, 50, None)).await;
    assert_eq!(response.status(), 201);
    app.sync_ok(SOURCE, "orders", "incremental").await;
    children_converge(&app, &upstream, "the first children").await;
    // Hard deletes the parent stream has not seen: its mirror still has the orders, and
    // the child's listing of each answers 404.
    let deleted = upstream
        .control(&format!("{SOURCE}/delete"), json!({"count": 3}))
        .await;
    let deleted: Vec<String> = deleted["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    let of_deleted = |mirror: &BTreeMap<String, String>| {
        mirror
            .keys()
            .filter(|k| deleted.contains(&k.split('/').next().unwrap().to_owned()))
            .count()
    };
    let before = app.mirror(SOURCE, "transactions").await;
    assert!(
        of_deleted(&before) > 0,
        "the deleted orders had transactions"
    );
    let full = app.sync_ok(SOURCE, "transactions", "full").await;
    let (_, transactions) = truth(&upstream).await;
    let mirror = app.mirror(SOURCE, "transactions").await;
    assert!(mirror == transactions, "{full:#}");
    assert_eq!(of_deleted(&mirror), 0);
    assert_eq!(
        full["stats"]["deleted"],
        of_deleted(&before) as u64,
        "{full:#}"
    );
    let orders = app.mirror(SOURCE, "orders").await;
    assert!(
        deleted.iter().all(|id| orders.contains_key(id)),
        "the parents stay"
    );
    app.stop().await;
}
