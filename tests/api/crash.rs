//! Crash safety: the tidemark process is SIGKILLed in the middle of a sync and started
//! again; the mirror must end exact and the cursor must never be ahead of what was stored.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Sandbox, database_url, eventually, read_mirror, ready_if, sandbox, wait_until_serving,
};

/// A tidemark process (the real binary) on a free loopback port.
pub struct Process {
    child: Child,
    base: String,
    client: reqwest::Client,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Process {
    pub async fn start(database_url: &str) -> Process {
        Process::start_with(database_url, &[]).await
    }

    /// Starts one with these environment variables too (they win over the defaults).
    pub async fn start_with(database_url: &str, env: &[(&str, &str)]) -> Process {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .env("TIDEMARK_BIND", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", database_url)
            .env("TIDEMARK_WORKERS", "1")
            .env("TIDEMARK_JOB_LEASE_SECONDS", "3")
            .env("TIDEMARK_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = Process {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        wait_until_serving(&process.client, &process.base).await;
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
    }

    /// The text of its `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }

    /// SIGKILL: no graceful shutdown, no last commit.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn mirror(&self) -> BTreeMap<String, String> {
        read_mirror(&self.client, &self.base, None, "shop", "products").await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keyset source throttled to about 25 pages a second, so a kill lands mid-sync.
pub fn slow_source(upstream: &Sandbox) -> Value {
    json!({
        "name": "shop",
        "base_url": upstream.base,
        "rate_limit": {"min_interval_ms": 40},
        "streams": [{
            "name": "products",
            "request": {"path": "/insales/products.json", "query": {"with_deleted": "true"}},
            "records": {"path": "", "key": "/id", "updated_at": "/updated_at",
                        "deleted": {"pointer": "/archived", "equals": true}},
            "pagination": {"type": "keyset", "limit": 20}
        }]
    })
}

/// Every truth record at or before the stored cursor is in the mirror: the cursor is never
/// ahead of the data it claims was read.
fn assert_cursor_covered(cursor: &Value, truth: &[Value], mirror: &BTreeMap<String, String>) {
    let Some(since) = cursor["updated_since"].as_str() else {
        return;
    };
    let since = chrono::DateTime::parse_from_str(since, "%Y-%m-%d %H:%M:%S %:z").unwrap();
    let from_id = cursor["from_id"].as_u64();
    for record in truth {
        let updated = chrono::DateTime::parse_from_str(
            record["updated_at"].as_str().unwrap(),
            "%Y-%m-%d %H:%M:%S %:z",
        )
        .unwrap();
        let id = record["id"].as_u64().unwrap();
        let behind = match from_id {
            Some(from) => (updated, id) <= (since, from),
            None => updated < since,
        };
        if behind {
            assert!(
                mirror.contains_key(&id.to_string()),
                "record {id} ({updated}) is behind the cursor {cursor} but not mirrored"
            );
        }
    }
}

#[tokio::test]
async fn a_sync_killed_mid_run_resumes_to_an_exact_mirror() {
    let upstream = sandbox(11, 800).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let truth_text = upstream.truth("keyset").await;
    let truth: Vec<Value> = truth_text
        .values()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();

    let first = Process::start(&database).await;
    first.post("/v1/sources", slow_source(&upstream)).await;
    first
        .post(
            "/v1/sources/shop/streams/products/sync",
            json!({"mode": "full"}),
        )
        .await;
    let mut process = first;
    // Kill it three times at different points of the run; each restart takes the job
    // over at once (its owner's lock went with it) and resumes from the committed cursor.
    for wait_ms in [300u64, 700, 500] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        process.kill();
        let restarted = Process::start(&database).await;
        let cursor = restarted
            .get("/v1/sources/shop/streams/products/cursor")
            .await;
        let mirror = restarted.mirror().await;
        assert_cursor_covered(&cursor["cursor"], &truth, &mirror);
        process = restarted;
    }
    let job = eventually(Duration::from_secs(30), "the job to succeed", || async {
        let jobs = process.get("/v1/jobs?stream=products").await;
        let job = jobs["results"][0].clone();
        if job["status"] == "succeeded" {
            return Ok(job);
        }
        assert_ne!(job["status"], "failed", "{job:#}");
        Err(job)
    })
    .await;
    assert!(job["attempts"].as_u64().unwrap() >= 2, "{job:#}");
    assert_eq!(process.mirror().await, truth_text);
}

#[tokio::test]
async fn sigterm_commits_the_page_in_flight_and_hands_the_job_back() {
    let upstream = sandbox(12, 600).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let mut process = Process::start(&database).await;
    process.post("/v1/sources", slow_source(&upstream)).await;
    let job = process
        .post("/v1/sources/shop/streams/products/sync", json!({}))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(400)).await;

    let term = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = eventually(
        Duration::from_secs(5),
        "tidemark to exit on SIGTERM",
        || std::future::ready(process.child.try_wait().unwrap().ok_or("still running")),
    )
    .await;
    assert!(status.success(), "{status}");

    // The job went back to the queue with what it committed, so a new process resumes
    // it at once (no lease to wait out) and completes the mirror.
    let restarted = Process::start(&database).await;
    let finished = eventually(
        Duration::from_secs(10),
        &format!("job {id} to succeed"),
        || async {
            let job = restarted.get(&format!("/v1/jobs/{id}")).await;
            ready_if(job["status"] == "succeeded", job)
        },
    )
    .await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    assert_eq!(finished["attempts"], 2, "{finished:#}");
    assert_eq!(restarted.mirror().await, upstream.truth("keyset").await);
}
