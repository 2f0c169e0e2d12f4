//! The sync engine end to end: the real app syncing from the sandbox upstream over
//! loopback HTTP, compared with the sandbox's truth.

use serde_json::{Value, json};

use crate::support::{TestApp, eventually, keyset_source, sandbox, spawn_syncing};

async fn register(app: &TestApp, source: &Value) {
    let response = app.post("/v1/sources", source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

fn stat(job: &Value, name: &str) -> u64 {
    job["stats"][name].as_u64().unwrap()
}

#[tokio::test]
async fn a_full_keyset_sync_mirrors_the_upstream_byte_for_byte() {
    let upstream = sandbox(1, 450).await;
    let app = spawn_syncing().await;
    register(&app, &keyset_source(&upstream, "shop", 100)).await;

    let job = app.sync_ok("shop", "products", "incremental").await;
    let truth = upstream.truth("keyset").await;
    assert_eq!(truth.len(), 450);
    assert_eq!(app.mirror("shop", "products").await, truth);
    assert_eq!(stat(&job, "inserted"), 450);
    assert_eq!(stat(&job, "records_seen"), 450);
    // 5 pages of records and the empty page that ends the run.
    assert_eq!(stat(&job, "pages"), 6);
    assert_eq!(stat(&job, "requests"), 6);

    // The cursor is the upstream's own text, never later than its clock minus 2 s.
    let cursor = app
        .get_json("/v1/sources/shop/streams/products/cursor")
        .await;
    assert_eq!(cursor["job"], job["id"]);
    let since = cursor["cursor"]["updated_since"].as_str().unwrap();
    assert!(since.ends_with(" +03:00"), "{cursor}");

    // Nothing changed: re-reading the lookback window changes nothing.
    let again = app.sync_ok("shop", "products", "incremental").await;
    assert_eq!(stat(&again, "inserted") + stat(&again, "updated"), 0);
    assert!(stat(&again, "requests") <= 2, "{again:#}");
}

#[tokio::test]
async fn keyset_syncs_converge_under_churn_and_mass_updates() {
    let upstream = sandbox(2, 600).await;
    let app = spawn_syncing().await;
    register(&app, &keyset_source(&upstream, "shop", 100)).await;
    app.sync_ok("shop", "products", "incremental").await;

    for round in 0..5 {
        // Churn while the sync runs, including 3 pages' worth sharing one timestamp.
        let churn = async {
            for op in ["update", "create", "archive", "mass_update", "update"] {
                let count = if op == "mass_update" { 300 } else { 7 + round };
                upstream
                    .control(&format!("keyset/{op}"), json!({ "count": count }))
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        let (_, job) = tokio::join!(churn, app.sync("shop", "products", "incremental"));
        assert_eq!(job["status"], "succeeded", "{job:#}");
    }
    let last = app.sync_ok("shop", "products", "incremental").await;
    let truth = upstream.truth("keyset").await;
    let mirror = app.mirror("shop", "products").await;
    assert_eq!(mirror.len(), truth.len());
    assert_eq!(mirror, truth);
    assert!(stat(&last, "requests") >= 1);
}

#[tokio::test]
async fn an_incremental_sync_reads_only_what_changed() {
    let upstream = sandbox(3, 500).await;
    let app = spawn_syncing().await;
    register(&app, &keyset_source(&upstream, "shop", 50)).await;
    app.sync_ok("shop", "products", "incremental").await;
    // Move the upstream clock past the lookback window of the first run.
    upstream
        .control("keyset/tick", json!({ "seconds": 10 }))
        .await;
    app.sync_ok("shop", "products", "incremental").await;

    let quiet = app.sync_ok("shop", "products", "incremental").await;
    assert!(stat(&quiet, "requests") <= 2, "{quiet:#}");
    assert_eq!(stat(&quiet, "inserted") + stat(&quiet, "updated"), 0);

    let k = 120u64;
    upstream
        .control("keyset/update", json!({ "count": k }))
        .await;
    let job = app.sync_ok("shop", "products", "incremental").await;
    assert_eq!(stat(&job, "updated"), k);
    // Whole pages of 50, then the short page that ends an incremental (no empty page
    // after it); only when the records read fill their last page is one more needed.
    let seen = stat(&job, "records_seen");
    assert!(seen >= k, "{job:#}");
    assert_eq!(
        stat(&job, "requests"),
        seen / 50 + 1,
        "{seen} records read for {k} changes: {job:#}"
    );
    assert_eq!(
        app.mirror("shop", "products").await,
        upstream.truth("keyset").await
    );
}

#[tokio::test]
async fn asking_twice_returns_the_active_job_and_jobs_are_listed() {
    let upstream = sandbox(4, 50).await;
    let app = spawn_syncing().await;
    register(&app, &keyset_source(&upstream, "shop", 10)).await;
    let first: Value = app
        .post("/v1/sources/shop/sync", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = first["jobs"][0]["id"].as_str().unwrap().to_owned();
    let job = app.wait_job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    assert_eq!(job["trigger"], "api");
    assert_eq!(job["mode"], "incremental");
    assert_eq!(job["source"], "shop");
    assert_eq!(job["stream"], "products");
    assert_eq!(job["attempts"], 1);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());

    let list = app.get_json("/v1/jobs?source=shop&status=succeeded").await;
    assert_eq!(list["results"][0]["id"], job["id"]);
    let none = app.get_json("/v1/jobs?source=other").await;
    assert_eq!(none["results"], json!([]));
    let record = app
        .get_json(&format!(
            "/v1/sources/shop/streams/products/records/{}",
            app.mirror("shop", "products").await.keys().next().unwrap()
        ))
        .await;
    assert_eq!(record["rev"], 1);
}

#[tokio::test]
async fn cancel_stops_a_running_job_at_a_page_boundary() {
    let upstream = sandbox(5, 400).await;
    let app = spawn_syncing().await;
    let mut source = keyset_source(&upstream, "shop", 10);
    source["rate_limit"] = json!({"min_interval_ms": 50});
    register(&app, &source).await;
    let job: Value = app
        .post("/v1/sources/shop/streams/products/sync", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let cancelled = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let pages = stat(&cancelled, "pages");
    assert!((1..40).contains(&pages), "{cancelled:#}");

    // Nothing more is committed for it, and the mirror holds exactly its pages.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let later = app.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(later["status"], "cancelled");
    assert_eq!(later["stats"], cancelled["stats"]);
    let mirrored = app.mirror("shop", "products").await.len() as u64;
    assert_eq!(mirrored, stat(&later, "inserted"));
    let again = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    crate::support::assert_problem(again, 409, "conflict").await;

    // The stream is free again, and the next run resumes and completes the mirror.
    app.sync_ok("shop", "products", "incremental").await;
    assert_eq!(
        app.mirror("shop", "products").await,
        upstream.truth("keyset").await
    );
}

#[tokio::test]
async fn a_webhook_with_the_right_secret_queues_a_sync() {
    let upstream = sandbox(6, 30).await;
    let app = crate::support::spawn_with(
        |c| {
            c.workers = 1;
            c.api_tokens = format!("admin:{}", crate::support::ADMIN).parse().unwrap();
        },
        Some(crate::support::ADMIN),
    )
    .await;
    let mut source = keyset_source(&upstream, "shop", 10);
    source["webhook_secret"] = json!({"value": "hook-secret-1"});
    register(&app, &source).await;
    let url = format!("{}/v1/sources/shop/webhook", app.base);
    // No API token is needed, but the secret is.
    for secret in [None, Some("wrong")] {
        let mut request = app.client.post(&url).body("{}");
        if let Some(s) = secret {
            request = request.header("x-webhook-secret", s);
        }
        crate::support::assert_problem(request.send().await.unwrap(), 401, "unauthorized").await;
    }
    let response = app
        .client
        .post(&url)
        .header("x-webhook-secret", "hook-secret-1")
        .body(r#"{"event": "products.updated"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let job = &body["jobs"][0];
    assert_eq!(job["trigger"], "webhook");
    let done = app.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(app.mirror("shop", "products").await.len(), 30);
}

#[tokio::test]
async fn a_scheduled_stream_syncs_by_itself() {
    let upstream = sandbox(7, 25).await;
    let app = spawn_syncing().await;
    let mut source = keyset_source(&upstream, "shop", 10);
    source["streams"][0]["schedule"] = json!({"every_seconds": 1});
    register(&app, &source).await;
    let runs = eventually(
        std::time::Duration::from_secs(5),
        "two scheduled runs to succeed",
        || async {
            let jobs = app
                .get_json("/v1/jobs?stream=products&status=succeeded")
                .await;
            let runs = jobs["results"].as_array().unwrap().clone();
            if runs.len() >= 2 { Ok(runs) } else { Err(jobs) }
        },
    )
    .await;
    assert!(runs.len() >= 2, "{runs:#?}");
    assert!(runs.iter().all(|j| j["trigger"] == "schedule"));
    assert_eq!(app.mirror("shop", "products").await.len(), 25);
}

#[tokio::test]
async fn more_records_on_one_timestamp_than_a_page_on_a_since_only_api_fail_as_stuck() {
    let upstream = sandbox(8, 100).await;
    let app = spawn_syncing().await;
    let mut source = keyset_source(&upstream, "shop", 50);
    // The upstream does not know this parameter: to it, the stream is since-only.
    source["streams"][0]["pagination"]["id_param"] = json!("ignored_from_id");
    register(&app, &source).await;
    app.sync_ok("shop", "products", "incremental").await;
    upstream
        .control("keyset/mass_update", json!({ "count": 80 }))
        .await;
    let job = app.sync("shop", "products", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-cursor-stuck", "{job:#}");
    assert!(stat(&job, "requests") < 10, "{job:#}");
}

#[tokio::test]
async fn a_reply_without_the_records_path_fails_and_keeps_the_cursor() {
    let upstream = sandbox(9, 40).await;
    let app = spawn_syncing().await;
    register(&app, &keyset_source(&upstream, "shop", 10)).await;
    app.sync_ok("shop", "products", "incremental").await;
    let before = app
        .get_json("/v1/sources/shop/streams/products/cursor")
        .await;

    let mut source = keyset_source(&upstream, "shop", 10);
    source["streams"][0]["records"]["path"] = json!("/products");
    assert_eq!(app.put("/v1/sources/shop", &source).await.status(), 200);
    let job = app.sync("shop", "products", "incremental").await;
    assert_eq!(job["status"], "failed", "{job:#}");
    assert_eq!(job["error"]["type"], "upstream-bad-body", "{job:#}");
    assert!(
        job["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("/products"),
        "{job:#}"
    );
    // Refused, not retried: the same reply would come back.
    assert_eq!(stat(&job, "requests"), 1);
    let after = app
        .get_json("/v1/sources/shop/streams/products/cursor")
        .await;
    assert_eq!(after, before);
    assert_eq!(app.mirror("shop", "products").await.len(), 40);
}
