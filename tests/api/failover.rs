//! Multi-instance failover on PostgreSQL: two tidemark processes share one database; the
//! one running a job is killed; the other takes the job over once its lease expires, and
//! no stream ever has two jobs running at once.

use std::time::Duration;

use serde_json::json;

use crate::crash::{Process, slow_source};
use crate::support::{database_url, eventually, on_postgres, ready_if, sandbox};

#[tokio::test]
async fn a_second_instance_takes_over_the_job_of_a_dead_one() {
    if !on_postgres("failover::a_second_instance_takes_over_the_job_of_a_dead_one") {
        return;
    }
    let upstream = sandbox(14, 800).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let first = Process::start(&database).await;
    first.post("/v1/sources", slow_source(&upstream)).await;
    let job = first
        .post(
            "/v1/sources/shop/streams/products/sync",
            json!({"mode": "full"}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Let the first instance commit a few pages, then start the second and kill the first.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = Process::start(&database).await;
    let before = second.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(before["status"], "running", "{before:#}");
    assert!(before["stats"]["pages"].as_u64().unwrap() > 0, "{before:#}");
    first.kill();

    let done = eventually(
        Duration::from_secs(15),
        &format!("job {id} to stop running"),
        || async {
            let running = second.get("/v1/jobs?stream=products&status=running").await;
            assert!(
                running["results"].as_array().unwrap().len() <= 1,
                "two jobs running for one stream: {running:#}"
            );
            let job = second.get(&format!("/v1/jobs/{id}")).await;
            ready_if(job["status"] != "running", job)
        },
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["attempts"], 2, "{done:#}");
    // The takeover continued the same job rather than queueing another.
    let jobs = second.get("/v1/jobs?stream=products").await;
    assert_eq!(jobs["results"].as_array().unwrap().len(), 1, "{jobs:#}");
    assert_eq!(second.mirror().await, upstream.truth("keyset").await);
}
