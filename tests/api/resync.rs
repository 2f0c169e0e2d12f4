//! Stale cursors resync inside the job (docs/design.md §4, "Stale token"): the job the
//! user asked for resets the cursor, reads from the beginning, ends `succeeded` and says
//! `resynced` with the upstream's status and the reason; a second stale answer within the
//! job fails it instead of looping.

use serde_json::{Value, json};

use crate::support::{Sandbox, TestApp, sandbox, spawn_syncing};

fn stat(job: &Value, name: &str) -> u64 {
    job["stats"][name].as_u64().unwrap()
}

/// The sandbox's token (POS) source, with `invalid_token` as given (`None`: left out).
async fn pos(upstream: &Sandbox, invalid_token: Option<Value>) -> TestApp {
    let app = spawn_syncing().await;
    let mut source = upstream.example("pos", 25);
    let pagination = source["streams"][0]["pagination"].as_object_mut().unwrap();
    match invalid_token {
        Some(rule) => pagination.insert("invalid_token".into(), rule),
        None => pagination.remove("invalid_token"),
    };
    let response = app.post("/v1/sources", &source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    app
}

async fn faults(upstream: &Sandbox, faults: Value) {
    upstream
        .control("faults", json!({ "faults": faults }))
        .await;
}

#[tokio::test]
async fn a_rotated_token_format_resyncs_the_job_under_churn_and_the_mirror_is_exact() {
    let upstream = sandbox(61, 200).await;
    let rule = json!({"status": 400, "body_contains": "INVALID_SINCE_FORMAT"});
    let app = pos(&upstream, Some(rule)).await;
    app.sync_ok("pos", "sales", "incremental").await;
    let before = app.get_json("/v1/sources/pos/streams/sales/cursor").await;
    // Deleted first, so that the updates pick other (live) records.
    upstream.control("token/delete", json!({"count": 3})).await;
    upstream.control("token/update", json!({"count": 12})).await;
    upstream.control("token/create", json!({"count": 5})).await;
    upstream.control("token/rotate_format", json!({})).await;

    let job = app.sync_ok("pos", "sales", "incremental").await;
    assert_eq!(
        (job["mode"].as_str(), job["trigger"].as_str()),
        (Some("incremental"), Some("api"))
    );
    let resynced = &job["resynced"];
    assert_eq!(resynced["status"], 400, "{job:#}");
    let reason = resynced["reason"].as_str().unwrap();
    assert!(reason.contains("`invalid_token` rule"), "{reason}");
    assert!(reason.contains("INVALID_SINCE_FORMAT"), "{reason}");
    let at = resynced["at"].as_str().unwrap();
    assert!(at >= job["started_at"].as_str().unwrap(), "{job:#}");
    assert!(at <= job["finished_at"].as_str().unwrap(), "{job:#}");
    // The stale request, then the whole listing again: 200 + 5 records (the deleted ones
    // are listed as such) in 9 pages of 25 and the empty page that ends it.
    assert_eq!(stat(&job, "records_seen"), 205, "{job:#}");
    assert_eq!(stat(&job, "pages"), 10, "{job:#}");
    assert_eq!(stat(&job, "requests"), 11, "{job:#}");
    // Only the churn changed anything; the rest of the full read was unchanged.
    assert_eq!(stat(&job, "inserted"), 5, "{job:#}");
    assert_eq!(stat(&job, "updated"), 12, "{job:#}");
    assert_eq!(stat(&job, "deleted"), 3, "{job:#}");
    assert_eq!(
        app.mirror("pos", "sales").await,
        upstream.truth("token").await
    );
    // The cursor is a new token, written by this job.
    let after = app.get_json("/v1/sources/pos/streams/sales/cursor").await;
    assert_ne!(after["cursor"], before["cursor"]);
    assert_eq!(after["job"], job["id"]);
    // The next run goes on from it, without a resync.
    let next = app.sync_ok("pos", "sales", "incremental").await;
    assert_eq!(next["resynced"], Value::Null, "{next:#}");
    assert_eq!(
        stat(&next, "inserted") + stat(&next, "updated"),
        0,
        "{next:#}"
    );
}

#[tokio::test]
async fn a_token_stream_takes_410_gone_as_stale_unless_its_rule_says_otherwise() {
    // No rule: 410 Gone is stale.
    let upstream = sandbox(62, 60).await;
    let app = pos(&upstream, None).await;
    app.sync_ok("pos", "sales", "incremental").await;
    faults(&upstream, json!([{"kind": "status", "status": 410}])).await;
    let job = app.sync_ok("pos", "sales", "incremental").await;
    assert_eq!(job["resynced"]["status"], 410, "{job:#}");
    let reason = job["resynced"]["reason"].as_str().unwrap();
    assert!(reason.contains("default `invalid_token` rule"), "{reason}");
    assert_eq!(stat(&job, "unchanged"), 60, "{job:#}");
    assert_eq!(
        app.mirror("pos", "sales").await,
        upstream.truth("token").await
    );

    // A rule of its own replaces the default: 410 is then an error like any other.
    let upstream = sandbox(63, 60).await;
    let rule = json!({"status": 400, "body_contains": "INVALID_SINCE_FORMAT"});
    let app = pos(&upstream, Some(rule)).await;
    app.sync_ok("pos", "sales", "incremental").await;
    faults(&upstream, json!([{"kind": "status", "status": 410}])).await;
    let job = app.sync("pos", "sales", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-status", "{job:#}");
    assert_eq!(job["resynced"], Value::Null, "{job:#}");

    // A rule with a status only matches any body with that status.
    let upstream = sandbox(64, 60).await;
    let app = pos(&upstream, Some(json!({"status": 409}))).await;
    app.sync_ok("pos", "sales", "incremental").await;
    faults(&upstream, json!([{"kind": "status", "status": 409}])).await;
    let job = app.sync_ok("pos", "sales", "incremental").await;
    assert_eq!(job["resynced"]["status"], 409, "{job:#}");
    let stream = app.get_json("/v1/sources/pos").await;
    assert_eq!(
        stream["streams"][0]["pagination"]["invalid_token"],
        json!({"status": 409})
    );
}

#[tokio::test]
async fn a_second_stale_answer_after_the_resync_fails_the_job_instead_of_looping() {
    let upstream = sandbox(65, 60).await;
    let app = pos(&upstream, None).await;
    app.sync_ok("pos", "sales", "incremental").await;
    faults(
        &upstream,
        json!([{"kind": "status", "status": 410}, {"kind": "status", "status": 410}]),
    )
    .await;
    let job = app.sync("pos", "sales", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-token-stale", "{job:#}");
    let detail = job["error"]["detail"].as_str().unwrap();
    assert!(detail.contains("does not resync twice"), "{detail}");
    assert_eq!(job["resynced"]["status"], 410, "{job:#}");
    assert_eq!(stat(&job, "requests"), 2, "{job:#}");
    // The cursor was reset by the resync: the next job reads from the beginning.
    let cursor = app.get_json("/v1/sources/pos/streams/sales/cursor").await;
    assert_eq!(cursor["cursor"], Value::Null, "{cursor:#}");
    let next = app.sync_ok("pos", "sales", "incremental").await;
    assert_eq!(next["resynced"], Value::Null, "{next:#}");
    assert_eq!(stat(&next, "unchanged"), 60, "{next:#}");
}

/// Microsoft Graph's users delta on the sandbox: a stored `@odata.deltaLink` that the
/// upstream forgot (`expire_tokens`) answers `410 Gone`; the job starts a new round.
#[tokio::test]
async fn an_expired_graph_delta_link_resyncs_the_job_and_the_mirror_is_exact() {
    let upstream = sandbox(66, 150).await;
    let app = spawn_syncing().await;
    let source = json!({
        "name": "entra",
        "base_url": format!("{}/graph/v1.0", upstream.base),
        "retry": {"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50},
        "headers": {"Prefer": "odata.maxpagesize=40"},
        "streams": [{
            "name": "users",
            "request": {"path": "/users/delta", "query": {"$select": "displayName,mail"}},
            "records": {"path": "/value", "key": "/id",
                        "deleted": {"pointer": "/@removed/reason", "equals": "changed"}},
            "pagination": {"type": "link", "next": "/@odata.nextLink",
                           "resume": {"pointer": "/@odata.deltaLink"}}
        }]
    });
    let response = app.post("/v1/sources", &source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    app.sync_ok("entra", "users", "incremental").await;
    assert_eq!(
        app.mirror("entra", "users").await,
        upstream.truth("graph").await
    );
    let cursor = app.get_json("/v1/sources/entra/streams/users/cursor").await;
    let delta = cursor["cursor"]["next"].as_str().unwrap();
    assert!(delta.contains("$deltatoken="), "{cursor:#}");

    upstream.control("graph/update", json!({"count": 7})).await;
    upstream.control("graph/create", json!({"count": 4})).await;
    upstream.control("graph/expire_tokens", json!({})).await;
    let job = app.sync_ok("entra", "users", "incremental").await;
    assert_eq!(job["resynced"]["status"], 410, "{job:#}");
    let reason = job["resynced"]["reason"].as_str().unwrap();
    assert!(reason.contains("link stream's stored URL"), "{reason}");
    assert!(reason.contains("syncStateNotFound"), "{reason}");
    // The 410, then a round from no token: every user, 4 pages of 40.
    assert_eq!(stat(&job, "requests"), 5, "{job:#}");
    assert_eq!(stat(&job, "records_seen"), 154, "{job:#}");
    assert_eq!(stat(&job, "inserted"), 4, "{job:#}");
    assert_eq!(stat(&job, "updated"), 7, "{job:#}");
    assert_eq!(
        app.mirror("entra", "users").await,
        upstream.truth("graph").await
    );
    // A new delta link, from the new round.
    let cursor = app.get_json("/v1/sources/entra/streams/users/cursor").await;
    let fresh = cursor["cursor"]["next"].as_str().unwrap();
    assert!(
        fresh.contains("$deltatoken=") && fresh != delta,
        "{cursor:#}"
    );

    // A round from no token lists the users that exist, so a user deleted while the
    // token was expiring is not reported; a reconcile tombstones it (§4 "Deletions").
    upstream.control("graph/delete", json!({"count": 2})).await;
    upstream.control("graph/expire_tokens", json!({})).await;
    let job = app.sync_ok("entra", "users", "incremental").await;
    assert_eq!(job["resynced"]["status"], 410, "{job:#}");
    assert_eq!(app.mirror("entra", "users").await.len(), 154);
    let job = app.sync_ok("entra", "users", "reconcile").await;
    assert_eq!(stat(&job, "deleted"), 2, "{job:#}");
    assert_eq!(
        app.mirror("entra", "users").await,
        upstream.truth("graph").await
    );
}
