//! `schedule.reconcile` (docs/design.md §3, §4 "Deletions"): reconciles on their own
//! clock remove records deleted upstream without a tombstone, with nobody calling the
//! API; one that falls due while the stream has a job waits for it and then runs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Sandbox, TestApp, assert_problem, eventually, ready_if, sandbox, spawn, spawn_syncing,
};

/// The sandbox's offset (Reqon) items without their deletions stream, so that only a
/// reconcile can see a hard delete, with `schedule`.
fn items(upstream: &Sandbox, schedule: Value) -> Value {
    let mut source = upstream.example("reqon", 50);
    let streams = source["streams"].as_array_mut().unwrap();
    streams.retain(|s| s["name"] == "items");
    streams[0]["schedule"] = schedule;
    source
}

async fn jobs(app: &TestApp) -> Vec<Value> {
    let jobs = app.get_json("/v1/jobs?stream=items&limit=100").await;
    jobs["results"].as_array().unwrap().clone()
}

/// Waits (20 s at most) until the mirror equals the upstream's truth, with no API call
/// but reads.
async fn converges(app: &TestApp, upstream: &Sandbox, what: &str) {
    let truth = upstream.truth("offset").await;
    eventually(Duration::from_secs(20), what, || async {
        let mirror = app.mirror("reqon", "items").await;
        ready_if(mirror == truth, mirror.len())
    })
    .await;
}

fn stat(job: &Value, name: &str) -> u64 {
    job["stats"][name].as_u64().unwrap()
}

#[tokio::test]
async fn a_scheduled_reconcile_removes_hard_deleted_records_with_nobody_calling_the_api() {
    let upstream = sandbox(71, 120).await;
    let app = spawn_syncing().await;
    let schedule = json!({"every_seconds": 3600, "reconcile": {"every_seconds": 1}});
    let response = app
        .post("/v1/sources", &items(&upstream, schedule.clone()))
        .await;
    assert_eq!(response.status(), 201);
    // The schedule reads as given.
    let stream = app.get_json("/v1/sources/reqon/streams/items").await;
    assert_eq!(stream["schedule"], schedule, "{stream:#}");
    converges(&app, &upstream, "the first scheduled job").await;

    let deleted = upstream
        .control("offset/hard_delete", json!({"count": 6}))
        .await;
    assert_eq!(deleted["ids"].as_array().unwrap().len(), 6, "{deleted}");
    assert_eq!(upstream.truth("offset").await.len(), 114);
    converges(
        &app,
        &upstream,
        "a scheduled reconcile to remove the hard deletes",
    )
    .await;
    let jobs = jobs(&app).await;
    // Only the scheduler queued jobs: one incremental, then reconciles.
    assert!(jobs.iter().all(|j| j["trigger"] == "schedule"), "{jobs:#?}");
    let reconciles: Vec<&Value> = jobs.iter().filter(|j| j["mode"] == "reconcile").collect();
    assert!(!reconciles.is_empty(), "{jobs:#?}");
    let removed: u64 = reconciles.iter().map(|j| stat(j, "deleted")).sum();
    assert_eq!(removed, 6, "{jobs:#?}");
    assert_eq!(
        jobs.iter().filter(|j| j["mode"] == "incremental").count(),
        1,
        "{jobs:#?}"
    );
    // The feed has the deletions.
    let feed = app.get_json("/v1/changes?limit=1000").await;
    let deletes = feed["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["op"] == "delete")
        .count();
    assert_eq!(deletes, 6, "{feed:#}");
}

#[tokio::test]
async fn a_reconcile_that_falls_due_while_a_job_runs_waits_for_it_and_then_runs() {
    let upstream = sandbox(72, 60).await;
    // The first job's first request takes 3 s: reconciles fall due (every second) while
    // it runs.
    upstream
        .control("faults", json!({"faults": [{"kind": "slow", "ms": 3000}]}))
        .await;
    let app = spawn_syncing().await;
    let schedule = json!({"every_seconds": 3600, "reconcile": {"every_seconds": 1}});
    let response = app.post("/v1/sources", &items(&upstream, schedule)).await;
    assert_eq!(response.status(), 201);
    upstream
        .control("offset/hard_delete", json!({"count": 2}))
        .await;
    let jobs = eventually(
        Duration::from_secs(20),
        "a scheduled reconcile to succeed",
        || async {
            let jobs = jobs(&app).await;
            let done = jobs
                .iter()
                .any(|j| j["mode"] == "reconcile" && j["status"] == "succeeded");
            ready_if(done, Value::Array(jobs))
        },
    )
    .await;
    let jobs = jobs.as_array().unwrap();
    let first = jobs.last().unwrap();
    assert_eq!(first["mode"], "incremental", "{jobs:#?}");
    assert_eq!(first["status"], "succeeded", "{jobs:#?}");
    let (started, finished) = (
        first["started_at"].as_str().unwrap(),
        first["finished_at"].as_str().unwrap(),
    );
    let took = chrono::DateTime::parse_from_rfc3339(finished).unwrap()
        - chrono::DateTime::parse_from_rfc3339(started).unwrap();
    assert!(took >= chrono::TimeDelta::milliseconds(2500), "{first:#}");
    // The first reconcile was queued when that job ended, not skipped and not beside it.
    let reconcile = &jobs[jobs.len() - 2];
    assert_eq!(reconcile["mode"], "reconcile", "{jobs:#?}");
    assert_eq!(reconcile["trigger"], "schedule", "{jobs:#?}");
    assert!(
        reconcile["created_at"].as_str().unwrap() >= finished,
        "{jobs:#?}"
    );
    assert_eq!(stat(reconcile, "deleted"), 0, "{jobs:#?}");
    // The slow job read the listing after the deletes: nothing was left to tombstone.
    assert_eq!(
        app.mirror("reqon", "items").await,
        upstream.truth("offset").await
    );
}

#[tokio::test]
async fn a_reconcile_clock_is_validated_like_the_main_one() {
    let app = spawn().await;
    let upstream = sandbox(73, 10).await;
    for (reconcile, pointer) in [
        (
            json!({"every_seconds": 0}),
            "/streams/0/schedule/reconcile/every_seconds",
        ),
        (
            json!({"cron": "nightly"}),
            "/streams/0/schedule/reconcile/cron",
        ),
        (json!({}), "/streams/0/schedule/reconcile"),
        (
            json!({"every_seconds": 60, "cron": "0 0 * * * *"}),
            "/streams/0/schedule/reconcile/cron",
        ),
        (
            json!({"every_seconds": 60, "lookback": 1}),
            "/streams/0/schedule/reconcile/lookback",
        ),
        (json!(86400), "/streams/0/schedule/reconcile"),
    ] {
        let schedule = json!({"every_seconds": 60, "reconcile": reconcile});
        let response = app.post("/v1/sources", &items(&upstream, schedule)).await;
        let problem = assert_problem(response, 422, "invalid-spec").await;
        assert_eq!(problem["pointer"], pointer, "{reconcile}: {problem}");
    }
    // A reconcile clock needs a main one.
    let response = app
        .post(
            "/v1/sources",
            &items(&upstream, json!({"reconcile": {"every_seconds": 60}})),
        )
        .await;
    let problem = assert_problem(response, 422, "invalid-spec").await;
    assert_eq!(problem["pointer"], "/streams/0/schedule", "{problem}");
    // Cron on both clocks is fine.
    let schedule = json!({"cron": "0 */15 * * * *", "reconcile": {"cron": "0 30 2 * * *"}});
    let response = app
        .post("/v1/sources", &items(&upstream, schedule.clone()))
        .await;
    assert_eq!(response.status(), 201);
    let stream = app.get_json("/v1/sources/reqon/streams/items").await;
    assert_eq!(stream["schedule"], schedule, "{stream:#}");
}
