//! Convergence under churn for every pagination style: the example sources of
//! `examples/sources/` sync from the sandbox while it churns (updates, creates, soft
//! deletes, hard deletes where the API has them, and mass updates of three pages' worth
//! sharing one timestamp); after churn stops and one more sync, the mirror equals the
//! sandbox's truth byte for byte.

use serde_json::{Value, json};

use crate::support::{FeedFollower, Sandbox, TestApp, sandbox, spawn_syncing};

const PAGE: u32 = 40;

/// Queues a sync of every stream of `source` in `mode` and waits for all of them.
async fn sync_source(app: &TestApp, source: &str, mode: &str) -> Vec<Value> {
    let response = app
        .post(
            &format!("/v1/sources/{source}/sync"),
            &json!({ "mode": mode }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let queued: Value = response.json().await.unwrap();
    let mut jobs = Vec::new();
    for job in queued["jobs"].as_array().unwrap() {
        let done = app.wait_job(job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        jobs.push(done);
    }
    jobs
}

/// One round of churn on `style`, with a short pause between operations so it overlaps
/// the sync that runs meanwhile.
async fn churn(upstream: &Sandbox, style: &str, round: u64, hard_deletes: bool) {
    let mut operations = vec![
        ("update", 5 + round),
        ("create", 4),
        ("delete", 3),
        ("mass_update", u64::from(PAGE) * 3),
        ("update", 6),
    ];
    if hard_deletes {
        operations.push(("hard_delete", 3));
    }
    for (operation, count) in operations {
        upstream
            .control(&format!("{style}/{operation}"), json!({ "count": count }))
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
}

/// Registers `example`, syncs it five times while `style` churns, stops the churn, syncs
/// once more (then runs `finally`, if any, as a last job mode) and compares `stream`'s
/// mirror with the truth, and so does a feed consumer that followed from a blank `since`
/// all along.
async fn converges(
    example: &str,
    style: &str,
    stream: &str,
    hard_deletes: bool,
    finally: Option<&str>,
) {
    let upstream = sandbox(21, 300).await;
    let app = spawn_syncing().await;
    let source = upstream.example(example, PAGE);
    let name = source["name"].as_str().unwrap().to_owned();
    let response = app.post("/v1/sources", &source).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let mut consumer = FeedFollower::new(&name, stream);
    sync_source(&app, &name, "incremental").await;
    for round in 0..5 {
        tokio::join!(
            churn(&upstream, style, round, hard_deletes),
            sync_source(&app, &name, "incremental"),
            consumer.catch_up(&app),
        );
    }
    sync_source(&app, &name, "incremental").await;
    if let Some(mode) = finally {
        sync_source(&app, &name, mode).await;
    }
    let truth = upstream.truth(style).await;
    let mirror = app.mirror(&name, stream).await;
    let missing: Vec<_> = truth.keys().filter(|k| !mirror.contains_key(*k)).collect();
    let extra: Vec<_> = mirror.keys().filter(|k| !truth.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{style}: missing {missing:?}, extra {extra:?}"
    );
    for (key, text) in &truth {
        assert_eq!(&mirror[key], text, "{style}: record {key}");
    }
    consumer.catch_up(&app).await;
    assert!(
        consumer.replica == truth,
        "{style}: the feed replica differs from the truth"
    );
}

#[tokio::test]
async fn keyset_converges_under_churn() {
    converges("insales", "keyset", "products", false, None).await;
}

#[tokio::test]
async fn token_converges_under_churn() {
    converges("pos", "token", "sales", false, None).await;
}

#[tokio::test]
async fn position_converges_under_churn() {
    converges("carrot", "position", "conversations", false, None).await;
}

#[tokio::test]
async fn link_converges_under_churn() {
    converges("link", "link", "orders", false, None).await;
}

/// Offset paging under churn can skip rows that shift; the deletions stream carries the
/// hard deletes, and a reconcile (a full listing) settles what shifting hid.
#[tokio::test]
async fn offset_converges_under_churn_after_a_reconcile() {
    converges("reqon", "offset", "items", true, Some("reconcile")).await;
}

/// Request economy: a quiet incremental sync costs at most 2 requests, and k changes at
/// most `ceil(k / page) + 1`, for keyset, token and position streams.
#[tokio::test]
async fn incremental_syncs_read_only_what_changed() {
    for (example, style, stream) in [
        ("insales", "keyset", "products"),
        ("pos", "token", "sales"),
        ("carrot", "position", "conversations"),
    ] {
        let upstream = sandbox(22, 200).await;
        let app = spawn_syncing().await;
        let source = upstream.example(example, PAGE);
        let name = source["name"].as_str().unwrap().to_owned();
        assert_eq!(app.post("/v1/sources", &source).await.status(), 201);
        app.sync_ok(&name, stream, "incremental").await;
        // Past the keyset lookback window of the first run.
        upstream.control("tick", json!({"seconds": 10})).await;
        app.sync_ok(&name, stream, "incremental").await;

        let quiet = app.sync_ok(&name, stream, "incremental").await;
        let requests = quiet["stats"]["requests"].as_u64().unwrap();
        assert!(
            requests <= 2,
            "{style}: {requests} requests with nothing changed"
        );

        let k = 100u64;
        upstream
            .control(&format!("{style}/update"), json!({ "count": k }))
            .await;
        upstream.control("tick", json!({"seconds": 10})).await;
        let job = app.sync_ok(&name, stream, "incremental").await;
        let requests = job["stats"]["requests"].as_u64().unwrap();
        assert_eq!(job["stats"]["updated"], k, "{style}: {job:#}");
        assert!(
            requests <= k.div_ceil(u64::from(PAGE)) + 1,
            "{style}: {requests} requests for {k} changes"
        );
        assert_eq!(app.mirror(&name, stream).await, upstream.truth(style).await);
    }
}
