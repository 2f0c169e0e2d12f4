//! A database outage on PostgreSQL: the app reaches its database through a TCP proxy the
//! test controls, and the proxy cuts every connection and refuses new ones while a full
//! sync runs and a consumer follows the feed. Readiness turns 503 at once, requests get a
//! clear 503 problem, the job pauses through a short outage and is handed back through a
//! long one; when the database is back, work resumes by itself and the mirror and the
//! consumer's replica converge on the upstream's truth.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::crash::slow_source;
use crate::support::{
    Sandbox, TestApp, assert_problem, database_url, eventually, on_postgres, ready_if, sandbox,
    spawn_on,
};

/// A loopback TCP proxy to the database that can be cut and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    up: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, is_up) = watch::channel(true);
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*is_up.borrow() {
                    // The database is "down": the connection closes at once.
                    continue;
                }
                let mut is_up = is_up.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = is_up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            accepting,
        }
    }

    /// Closes every proxied connection and refuses new ones.
    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/v1/jobs/{id}")).await
}

/// Waits until the job is as `ready` says (the database may be down meanwhile: failed
/// reads are retried); panics after `within`, saying `what` it waited for.
async fn wait_job(
    app: &TestApp,
    id: &str,
    within: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    eventually(within, &format!("job {id} {what}"), || async {
        let response = app.get(&format!("/v1/jobs/{id}")).await;
        if response.status() != 200 {
            return Err(format!("the job read answered {}", response.status()));
        }
        let job: Value = response.json().await.unwrap();
        ready_if(ready(&job), job).map_err(|job| format!("{job:#}"))
    })
    .await
}

/// Follows the feed with long-polls until told to stop (120 s at most), riding out the
/// outage (a failed request is retried with the same token), and returns the replica
/// (key → record text) and how many reads failed.
async fn consume(base: String, stop: watch::Receiver<bool>) -> (BTreeMap<String, String>, u32) {
    #[derive(serde::Deserialize)]
    struct Change {
        key: String,
        op: String,
        record: Option<Box<RawValue>>,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        results: Vec<Change>,
        until: String,
        has_more: bool,
    }
    let client = reqwest::Client::new();
    // The replica and the token to read on from, kept between the reads.
    let follower = Mutex::new((BTreeMap::new(), String::new()));
    let failed = AtomicU32::new(0);
    eventually(
        Duration::from_secs(120),
        "the consumer to catch up once told to stop",
        || async {
            // Only a read that began after the stop was asked for can end the wait: it
            // sees every commit made before.
            let stopping = *stop.borrow();
            let since = follower.lock().unwrap().1.clone();
            let request = client
                .get(format!("{base}/v1/changes?since={since}&limit=100&wait=1"))
                .send();
            let page = match request.await {
                Ok(response) if response.status() == 200 => response.json::<Page>().await.ok(),
                _ => None,
            };
            let Some(page) = page else {
                failed.fetch_add(1, Ordering::Relaxed);
                return Err(format!("the read from since={since} failed"));
            };
            let (replica, since) = &mut *follower.lock().unwrap();
            for change in page.results {
                match (change.op.as_str(), change.record) {
                    ("upsert", Some(record)) => {
                        replica.insert(change.key, record.get().to_owned());
                    }
                    _ => {
                        replica.remove(&change.key);
                    }
                }
            }
            *since = page.until;
            ready_if(!page.has_more && stopping, ()).map_err(|()| {
                format!(
                    "since={since}, has_more: {}, stopping: {stopping}",
                    page.has_more
                )
            })
        },
    )
    .await;
    let (replica, _) = follower.into_inner().unwrap();
    (replica, failed.into_inner())
}

async fn cut_for(proxy: &Proxy, app: &TestApp, outage: Duration) {
    proxy.cut();
    let cut = Instant::now();
    // Readiness says so at once, within its 2 s bound, while liveness holds.
    let ready = app.get("/readyz").await;
    let not_ready_in = cut.elapsed();
    assert!(not_ready_in < Duration::from_secs(3), "{not_ready_in:?}");
    assert_problem(ready, 503, "unavailable").await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    // The control plane answers a clear 503 problem, not a 500.
    let sources = assert_problem(app.get("/v1/sources").await, 503, "unavailable").await;
    assert!(
        sources["detail"].as_str().unwrap().contains("unreachable"),
        "{sources:#}"
    );
    tokio::time::sleep(outage.saturating_sub(cut.elapsed())).await;
    proxy.restore();
    let restored = Instant::now();
    eventually(
        Duration::from_secs(15),
        "readiness after the database came back",
        || async {
            let status = app.get("/readyz").await.status();
            ready_if(status == 200, status)
        },
    )
    .await;
    eprintln!(
        "outage of {outage:?}: /readyz answered 503 in {not_ready_in:?}, 200 again {:?} after the database came back",
        restored.elapsed()
    );
}

async fn truth_changes(upstream: &Sandbox) {
    upstream
        .control("keyset/update", json!({"count": 30}))
        .await;
    upstream.control("tick", json!({"seconds": 5})).await;
}

#[tokio::test]
async fn a_database_outage_pauses_work_which_resumes_by_itself_and_converges() {
    if !on_postgres("outage::a_database_outage_pauses_work_which_resumes_by_itself_and_converges") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let mut proxied = url::Url::parse(&database).unwrap();
    let target = format!(
        "{}:{}",
        proxied.host_str().unwrap(),
        proxied.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(target).await;
    proxied.set_port(Some(proxy.addr.port())).unwrap();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    let app = spawn_on(proxied.to_string(), |c| {
        c.workers = 2;
        c.job_lease_seconds = 6;
    })
    .await;
    let upstream = sandbox(42, 3000).await;
    assert_eq!(
        app.post("/v1/sources", &slow_source(&upstream))
            .await
            .status(),
        201
    );
    let (stop, stopping) = watch::channel(false);
    let consumer = tokio::spawn(consume(app.base.clone(), stopping));

    let queued = app
        .post(
            "/v1/sources/shop/streams/products/sync",
            &json!({"mode": "full"}),
        )
        .await;
    assert_eq!(queued.status(), 202);
    let id = queued.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let running =
        |job: &Value| job["status"] == "running" && job["stats"]["pages"].as_u64() > Some(10);
    wait_job(
        &app,
        &id,
        Duration::from_secs(30),
        "to run past page 10",
        running,
    )
    .await;

    // A short outage (well within the 6 s lease): the job pauses and goes on.
    cut_for(&proxy, &app, Duration::from_millis(1500)).await;
    let before = job(&app, &id).await["stats"]["pages"].as_u64().unwrap();
    let after_short = wait_job(
        &app,
        &id,
        Duration::from_secs(30),
        "to commit 5 more pages",
        |job| job["stats"]["pages"].as_u64() > Some(before + 5) || job["status"] != "running",
    )
    .await;
    assert_eq!(after_short["status"], "running", "{after_short:#}");
    assert_eq!(
        after_short["attempts"], 1,
        "the short outage did not pause the job: {after_short:#}"
    );

    // A long outage (longer than the lease), with changes upstream meanwhile: the job is
    // handed back or its lease runs out, and a worker takes it over once the database is
    // back.
    truth_changes(&upstream).await;
    cut_for(&proxy, &app, Duration::from_secs(9)).await;
    let done = wait_job(&app, &id, Duration::from_secs(60), "to finish", |job| {
        !matches!(job["status"].as_str(), Some("running" | "queued"))
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(done["attempts"].as_u64() >= Some(2), "{done:#}");
    assert!(done["error"].is_null(), "{done:#}");
    let failed = app.get_json("/v1/jobs?status=failed").await;
    assert_eq!(failed["results"], json!([]), "{failed:#}");

    // The next incremental run picks up what the full run's pages had passed.
    app.sync_ok("shop", "products", "incremental").await;
    let truth = upstream.truth("keyset").await;
    assert_eq!(app.mirror("shop", "products").await, truth);
    stop.send_replace(true);
    let (replica, failed_reads) = consumer.await.unwrap();
    assert!(failed_reads > 0, "the consumer never saw the outage");
    eprintln!(
        "outage: job {} pages, {} attempts; the consumer retried {failed_reads} reads; {} records converged",
        done["stats"]["pages"],
        done["attempts"],
        truth.len()
    );
    assert_eq!(replica, truth);
}
