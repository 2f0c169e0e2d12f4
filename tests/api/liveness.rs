//! Liveness locks (docs/design.md §7, "Failover without waiting out a lease"): a job whose
//! process died is taken over at once, not after its lease; a process that lives (holds
//! its lock) keeps its job, and one that hangs is fenced by its lease; a second process
//! is refused on a SQLite file that one already serves.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidemark::spec::job::{JobMode, Trigger};
use tidemark::spec::{SourceName, StreamName};
use tidemark::store::{GoneLeases, NewSource};

use crate::crash::{Process, free_port, slow_source};
use crate::store::spec;
use crate::support::{database_url, eventually, on_postgres, ready_if, sandbox};

/// A lease no takeover in these tests may wait for.
const LONG_LEASE: (&str, &str) = ("TIDEMARK_JOB_LEASE_SECONDS", "60");

/// Starts a full sync of `shop/products` on `process` and waits until it has committed a
/// page; returns the job's id.
async fn running_job(process: &Process) -> String {
    let job = process
        .post(
            "/v1/sources/shop/streams/products/sync",
            json!({"mode": "full"}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "the job to commit a page",
        || async {
            let job = process.get(&format!("/v1/jobs/{id}")).await;
            let pages = job["stats"]["pages"].as_u64().unwrap_or_default();
            ready_if(job["status"] == "running" && pages > 0, job)
        },
    )
    .await;
    id
}

/// Waits until `job` is running (or done) under attempt `attempt`; returns how long that
/// took.
async fn taken_over(process: &Process, job: &str, attempt: u64, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(within, &format!("job {job} to be taken over"), || async {
        let job = process.get(&format!("/v1/jobs/{job}")).await;
        let resumed = job["attempts"].as_u64() == Some(attempt);
        ready_if(resumed && job["status"] != "queued", job)
    })
    .await;
    started.elapsed()
}

async fn succeeded(process: &Process, job: &str) -> Value {
    let done = eventually(
        Duration::from_secs(30),
        &format!("job {job} to finish"),
        || async {
            let job = process.get(&format!("/v1/jobs/{job}")).await;
            ready_if(
                !matches!(job["status"].as_str(), Some("queued" | "running")),
                job,
            )
        },
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    done
}

#[tokio::test]
async fn a_second_serve_on_the_same_sqlite_file_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidemark.db");
    let database = format!("sqlite://{}", file.display());
    let first = Process::start(&database).await;
    for command in ["serve", "migrate"] {
        let output = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .arg(command)
            .env("TIDEMARK_BIND", format!("127.0.0.1:{}", free_port()))
            .env("DATABASE_URL", &database)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("PID {}", first.pid()))
                && stderr.contains(&file.display().to_string()),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("backtrace"), "{command}: {stderr}");
    }
    // The first one serves on, undisturbed.
    assert_eq!(first.get("/v1/sources").await["results"], json!([]));
}

/// With a lease of a minute, a restart on the same database (SQLite: the one process of
/// the file; PostgreSQL: its session, and lock, ended with it) resumes the job in the
/// time a restart takes.
#[tokio::test]
async fn a_restart_takes_the_dead_process_s_job_over_at_once() {
    let upstream = sandbox(15, 800).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let first = Process::start_with(&database, &[LONG_LEASE]).await;
    first.post("/v1/sources", slow_source(&upstream)).await;
    let job = running_job(&first).await;
    first.kill();
    let killed = Instant::now();
    let second = Process::start_with(&database, &[LONG_LEASE]).await;
    taken_over(&second, &job, 2, Duration::from_secs(10)).await;
    let takeover = killed.elapsed();
    eprintln!("kill to takeover, restart included: {takeover:?}");
    assert!(takeover < Duration::from_secs(10), "{takeover:?}");
    let done = succeeded(&second, &job).await;
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(second.mirror().await, upstream.truth("keyset").await);
}

/// Two instances on one PostgreSQL database: the job of the one that lives stays with it
/// (its lease is a minute; the other's workers poll every second); once it is killed,
/// the other takes the job over within a poll, not a lease.
#[tokio::test]
async fn a_live_instance_keeps_its_job_and_a_killed_one_loses_it_at_once() {
    if !on_postgres("liveness::a_live_instance_keeps_its_job_and_a_killed_one_loses_it_at_once") {
        return;
    }
    let upstream = sandbox(16, 4000).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let first = Process::start_with(&database, &[LONG_LEASE]).await;
    first.post("/v1/sources", slow_source(&upstream)).await;
    let job = running_job(&first).await;
    let second = Process::start_with(&database, &[LONG_LEASE]).await;
    // Several polls of the second instance's worker.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let kept = second.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(kept["attempts"], 1, "{kept:#}");
    first.kill();
    let takeover = taken_over(&second, &job, 2, Duration::from_secs(5)).await;
    eprintln!("kill to takeover by the other instance: {takeover:?}");
    assert!(takeover < Duration::from_secs(3), "{takeover:?}");
    let done = succeeded(&second, &job).await;
    assert_eq!(done["attempts"], 2, "{done:#}");
    let jobs = second.get("/v1/jobs?stream=products").await;
    assert_eq!(jobs["results"].as_array().unwrap().len(), 1, "{jobs:#}");
    assert_eq!(second.mirror().await, upstream.truth("keyset").await);
}

/// A process that hangs (SIGSTOP) still holds its liveness lock: its job is taken over
/// only when its lease runs out, and when it wakes up its next commit (or heartbeat) is
/// refused, so the job is never run by two processes at once.
#[tokio::test]
async fn a_stopped_process_keeps_its_lock_and_is_fenced_by_its_lease() {
    if !on_postgres("liveness::a_stopped_process_keeps_its_lock_and_is_fenced_by_its_lease") {
        return;
    }
    let upstream = sandbox(17, 5000).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let lease = ("TIDEMARK_JOB_LEASE_SECONDS", "4");
    let first = Process::start_with(&database, &[lease]).await;
    first.post("/v1/sources", slow_source(&upstream)).await;
    let job = running_job(&first).await;
    let second = Process::start_with(&database, &[lease]).await;
    first.signal("STOP");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = second.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(
        held["attempts"], 1,
        "taken over before the lease ran out: {held:#}"
    );
    // The lease (4 s), or, when it was stopped inside a page's transaction, the server's
    // end of that session (10 s), which releases the job's row.
    taken_over(&second, &job, 2, Duration::from_secs(20)).await;
    let waited = stopped.elapsed();
    eprintln!("stop to takeover (lease 4 s): {waited:?}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    first.signal("CONT");
    // Woken up, the first process finds its job is no longer its own: its run ends (its
    // commit or heartbeat is refused, or its transaction was ended meanwhile) and every
    // write it tries (a page, the job's end, handing it back) is fenced by the lease, so
    // the job is neither finished nor queued again by it (that would be a third attempt).
    let ended = eventually(
        Duration::from_secs(10),
        "the stopped process's run to end",
        || async {
            let metrics = first.metrics().await;
            let ended: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("tidemark_jobs_total"))
                .collect();
            ready_if(!ended.is_empty(), ended.join("\n"))
        },
    )
    .await;
    assert!(!ended.contains("succeeded"), "{ended}");
    let done = succeeded(&second, &job).await;
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(second.mirror().await, upstream.truth("keyset").await);
}

/// Whichever instance ends the lease of a job whose instance is gone, the next look of
/// every instance finds the job waiting, so that an idle worker of any instance takes it
/// over, not only one of the instance that ended the lease (whose workers may all be
/// busy). Store-level: the dead instance's store is closed (its lock goes with it), then
/// the live instances look: on PostgreSQL two, each on a store of its own; on SQLite the
/// one process that serves the file, twice.
#[tokio::test]
async fn every_instance_sees_a_job_waiting_to_be_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let dead_store = tidemark::store::connect(&database, None).await.unwrap();
    let (source, raw) = spec(&["a"]);
    let spec = NewSource {
        spec: &source,
        raw: &raw,
    };
    dead_store.create_source(spec).await.unwrap();
    let dead = dead_store.start_instance().await.unwrap();
    let shop: SourceName = tidemark::spec::de::parse(b"\"shop\"").unwrap();
    let a: StreamName = tidemark::spec::de::parse(b"\"a\"").unwrap();
    dead_store
        .enqueue_job(&shop, &a, JobMode::Full, Trigger::Api)
        .await
        .unwrap();
    let lease = chrono::TimeDelta::seconds(60);
    let claimed = dead_store.claim_job(dead, "dead/0", lease).await.unwrap();
    let job = claimed.unwrap().job.id;
    dead_store.close().await;

    let instances = if database.starts_with("sqlite:") {
        1
    } else {
        2
    };
    let mut live = Vec::new();
    for _ in 0..instances {
        let store = tidemark::store::connect(&database, None).await.unwrap();
        let instance = store.start_instance().await.unwrap();
        live.push((store, instance));
    }
    // The server ends the closed session's lock a moment after the close.
    let (first, instance) = &live[0];
    let gone = eventually(
        Duration::from_secs(5),
        "a live instance to end the dead one's lease",
        || async {
            let gone = first.expire_gone_leases(*instance).await.unwrap();
            ready_if(gone.ended > 0, format!("{gone:?}")).map(|_| gone)
        },
    )
    .await;
    assert_eq!(
        gone,
        GoneLeases {
            ended: 1,
            waiting: 1
        }
    );
    // The other instance (on SQLite the same one, looking again) ends nothing, and sees
    // the job waiting.
    let (last, instance) = live.last().unwrap();
    let seen = last.expire_gone_leases(*instance).await.unwrap();
    assert_eq!(
        seen,
        GoneLeases {
            ended: 0,
            waiting: 1
        }
    );
    let taken = last.claim_job(*instance, "live/0", lease).await;
    let taken = taken.unwrap().unwrap().job;
    assert_eq!((taken.id, taken.attempts), (job, 2));
    // A job under a live instance's lease waits for nobody.
    for (store, instance) in &live {
        let seen = store.expire_gone_leases(*instance).await.unwrap();
        assert_eq!(
            seen,
            GoneLeases {
                ended: 0,
                waiting: 0
            }
        );
    }
}

/// A process killed while its page commit waits for a lock (here the feed's position
/// counter, held by the test as another commit would) leaves a session that holds its
/// job's row; the server ends that session within its client check (250 ms), not when
/// the wait ends, so the other instance takes the job over while the lock is still held.
#[tokio::test]
async fn a_process_killed_while_its_commit_waits_for_a_lock_is_taken_over_at_once() {
    if !on_postgres(
        "liveness::a_process_killed_while_its_commit_waits_for_a_lock_is_taken_over_at_once",
    ) {
        return;
    }
    let upstream = sandbox(18, 4000).await;
    let dir = tempfile::tempdir().unwrap();
    let database = database_url(&dir).await;
    let first = Process::start_with(&database, &[LONG_LEASE]).await;
    first.post("/v1/sources", slow_source(&upstream)).await;
    let job = running_job(&first).await;
    let second = Process::start_with(&database, &[LONG_LEASE]).await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("UPDATE feed_head SET last_seq = last_seq WHERE id = 1")
        .execute(&mut *holder)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the first process's page commit to wait for the feed's counter",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE 'UPDATE feed_head%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            ready_if(waiting > 0, format!("{waiting} waiting"))
        },
    )
    .await;
    first.kill();
    let takeover = taken_over(&second, &job, 2, Duration::from_secs(5)).await;
    eprintln!("kill to takeover, the killed commit waiting for a lock: {takeover:?}");
    assert!(takeover < Duration::from_secs(3), "{takeover:?}");
    holder.rollback().await.unwrap();
    let done = succeeded(&second, &job).await;
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(second.mirror().await, upstream.truth("keyset").await);
    pool.close().await;
}
