//! Job history retention (`TIDEMARK_JOB_RETENTION`): finished jobs older than the
//! retention are deleted in bounded batches, the newest 100 of each stream are kept
//! whatever their age, and a queued or running job is never deleted.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use tidemark::config::Period;
use tidemark::spec::job::{JobMode, JobStats, JobStatus, Trigger};
use tidemark::spec::{SourceName, StreamName};
use tidemark::store::{JobEnd, JobFilter, NewSource, Store};
use uuid::Uuid;

use crate::store::{spec, store};
use crate::support::{TestApp, eventually, keyset_source, ready_if, sandbox, spawn_with};

fn name<T: serde::de::DeserializeOwned>(text: &str) -> T {
    tidemark::spec::de::parse(format!("\"{text}\"").as_bytes()).unwrap()
}

/// Every job of `stream`, newest first.
async fn jobs_of(store: &dyn Store, stream: &str) -> Vec<(Uuid, JobStatus)> {
    let filter = JobFilter {
        stream: Some(name::<StreamName>(stream)),
        ..JobFilter::default()
    };
    let jobs = store.list_jobs(&filter, None, 1000).await.unwrap();
    jobs.into_iter().map(|j| (j.id, j.status)).collect()
}

#[tokio::test]
async fn old_jobs_go_in_batches_and_the_newest_100_of_each_stream_and_active_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (source, raw) = spec(&["a", "b"]);
    store
        .create_source(NewSource {
            spec: &source,
            raw: &raw,
        })
        .await
        .unwrap();
    let instance = store.start_instance().await.unwrap();
    let shop: SourceName = name("shop");
    let lease = TimeDelta::seconds(60);
    // 130 finished jobs of `a`, then a running one; 20 of `b`, then a queued one.
    for (stream, finished) in [("a", 130), ("b", 20)] {
        let stream: StreamName = name(stream);
        for _ in 0..finished {
            store
                .enqueue_job(&shop, &stream, JobMode::Incremental, Trigger::Api)
                .await
                .unwrap();
            let claim = store
                .claim_job(instance, "w", lease)
                .await
                .unwrap()
                .unwrap();
            let (stats, end) = (JobStats::default(), JobEnd::Succeeded);
            assert!(
                store
                    .finish_job(claim.job.id, "w", &stats, end)
                    .await
                    .unwrap()
            );
        }
    }
    let a: StreamName = name("a");
    let b: StreamName = name("b");
    store
        .enqueue_job(&shop, &a, JobMode::Full, Trigger::Api)
        .await
        .unwrap();
    store
        .claim_job(instance, "w", lease)
        .await
        .unwrap()
        .unwrap();
    store
        .enqueue_job(&shop, &b, JobMode::Full, Trigger::Api)
        .await
        .unwrap();
    let all_a = jobs_of(&*store, "a").await;
    let all_b = jobs_of(&*store, "b").await;
    assert_eq!((all_a.len(), all_b.len()), (131, 21));
    assert_eq!(all_a[0].1, JobStatus::Running);
    assert_eq!(all_b[0].1, JobStatus::Queued);

    // Nothing finished before an hour ago.
    let an_hour_ago = Utc::now() - TimeDelta::hours(1);
    assert_eq!(store.purge_jobs(an_hour_ago, 100, 7).await.unwrap(), 0);
    // Everything finished is old now: batches of at most 7, until none is left.
    let now = Utc::now() + TimeDelta::seconds(1);
    let mut batches = Vec::new();
    loop {
        let purged = store.purge_jobs(now, 100, 7).await.unwrap();
        if purged == 0 {
            break;
        }
        batches.push(purged);
    }
    assert_eq!(batches, [7, 7, 7, 7, 3]);
    assert_eq!(jobs_of(&*store, "a").await, all_a[..100]);
    assert_eq!(jobs_of(&*store, "b").await, all_b);
}

/// Queues and cancels `n` jobs of `shop/products` through the API; their ids, oldest first.
async fn cancelled_jobs(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let job: Value = app
            .post("/v1/sources/shop/streams/products/sync", &json!({}))
            .await
            .json()
            .await
            .unwrap();
        let id = job["id"].as_str().unwrap().to_owned();
        let cancel = app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
        assert_eq!(cancel.status(), 200);
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn the_app_purges_jobs_past_the_retention_in_the_background() {
    let upstream = sandbox(61, 10).await;
    let app = spawn_with(|c| c.job_retention = "1s".parse::<Period>().unwrap(), None).await;
    assert_eq!(
        app.post("/v1/sources", &keyset_source(&upstream, "shop", 10))
            .await
            .status(),
        201
    );
    let ids = cancelled_jobs(&app, 105).await;
    let kept: Vec<String> = ids.iter().rev().take(100).cloned().collect();
    let listed = eventually(
        Duration::from_secs(15),
        "the 5 oldest jobs to be purged",
        || async {
            let page = app.get_json("/v1/jobs?stream=products&limit=1000").await;
            let listed: Vec<String> = page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned())
                .collect();
            ready_if(listed.len() == 100, format!("{} jobs", listed.len())).map(|_| listed)
        },
    )
    .await;
    assert_eq!(listed, kept);
    let purged = app.get("/metrics").await.text().await.unwrap();
    assert!(purged.contains("tidemark_jobs_purged_total 5"), "{purged}");
}
