//! Soak run (issue 6): the sandbox churns every API style while a share of its replies
//! are faults; tidemark runs as a child process that is SIGKILLed and restarted at random
//! moments; a consumer follows the change feed throughout. At the end the consumer's
//! replica must equal the sandbox's truth for every strategy.
//!
//! `cargo run --release -p tidemark-soak -- --seconds 120 --restarts 10`
//! (`--postgres-url postgres://...` to run on a fresh PostgreSQL database instead of a
//! SQLite file; with `--outages N --db-stop CMD --db-start CMD` the PostgreSQL server is
//! also stopped and started again N times, between the kills). Loopback only; every phase
//! is bounded in time. Exits non-zero when a change was lost, a change was delivered for
//! content that did not change, or readiness did not follow an outage.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidemark::{App, Config};
use tidemark_sandbox::{self as sandbox, Sandbox};
use tokio::sync::Mutex;

/// The child runs the gateway when this variable names its database.
const CHILD_DATABASE: &str = "TIDEMARK_SOAK_CHILD_DATABASE";
const CHILD_BIND: &str = "TIDEMARK_SOAK_CHILD_BIND";

#[derive(Parser)]
struct Args {
    /// How long the churn, faults and kills go on.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// How many times tidemark is killed and restarted.
    #[arg(long, default_value_t = 10)]
    restarts: u32,
    /// Records per sandbox dataset at the start.
    #[arg(long, default_value_t = 2000)]
    records: usize,
    /// Share of upstream requests that get a fault.
    #[arg(long, default_value_t = 0.1)]
    fault_rate: f64,
    /// A PostgreSQL server URL (a fresh database is created on it); SQLite otherwise.
    #[arg(long)]
    postgres_url: Option<String>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How many times the database server is stopped and started again (PostgreSQL only).
    #[arg(long, default_value_t = 0, requires_all = ["db_stop", "db_start", "postgres_url"])]
    outages: u32,
    /// How long each outage lasts, in seconds.
    #[arg(long, default_value_t = 8)]
    outage_seconds: u64,
    /// A shell command that stops the database server, e.g.
    /// `runuser -u postgres -- pg_ctl -D DIR -m fast stop`.
    #[arg(long)]
    db_stop: Option<String>,
    /// A shell command that starts it again and returns once it accepts connections.
    #[arg(long)]
    db_start: Option<String>,
}

/// Runs a shell command (the database's stop or start), which must succeed.
fn shell(command: &str) -> anyhow::Result<()> {
    let status = Command::new("sh")
        .args(["-c", command])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    Ok(())
}

/// What the outages showed.
#[derive(Default)]
struct Outages {
    count: u32,
    /// `/readyz` polls while the database was down, and how many of them said 503.
    polls: u32,
    unready: u32,
    /// `/healthz` polls while the database was down that did not say 200.
    dead: u32,
    /// The longest time from the database's start to `/readyz` saying 200 again.
    slowest_recovery: Duration,
}

impl Outages {
    /// Stops the database for `down`, polling the gateway's readiness and liveness, then
    /// starts it and waits until the gateway is ready again.
    async fn run(&mut self, http: &reqwest::Client, base: &str, args: &Args) -> anyhow::Result<()> {
        let (Some(stop), Some(start)) = (&args.db_stop, &args.db_start) else {
            anyhow::bail!("--outages needs --db-stop and --db-start");
        };
        shell(stop)?;
        self.count += 1;
        let back = Instant::now() + Duration::from_secs(args.outage_seconds);
        while Instant::now() < back {
            let ready = http.get(format!("{base}/readyz")).send().await;
            self.polls += 1;
            self.unready += u32::from(ready.is_ok_and(|r| r.status() == 503));
            let alive = http.get(format!("{base}/healthz")).send().await;
            self.dead += u32::from(!alive.is_ok_and(|r| r.status().is_success()));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        shell(start)?;
        let started = Instant::now();
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                self.slowest_recovery = self.slowest_recovery.max(started.elapsed());
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the gateway was not ready 30 s after the database started")
    }

    fn held(&self) -> bool {
        self.unready == self.polls && self.dead == 0
    }
}

/// The example source files (`examples/sources/`), the source each registers, its sandbox
/// style and the stream whose replica is compared.
const STYLES: [(&str, &str, &str, &str); 5] = [
    ("insales", "insales", "keyset", "products"),
    ("pos", "pos", "token", "sales"),
    ("carrot", "carrot", "position", "conversations"),
    ("reqon", "reqon", "offset", "items"),
    ("link", "orders", "link", "orders"),
];

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let Ok(database) = std::env::var(CHILD_DATABASE) {
        return runtime.block_on(child(database));
    }
    let args = Args::parse();
    let ok = runtime.block_on(soak(args))?;
    std::process::exit(if ok { 0 } else { 1 });
}

/// The gateway, as the child process runs it.
async fn child(database: String) -> anyhow::Result<()> {
    let mut config = Config::new(database);
    config.bind = std::env::var(CHILD_BIND)?.parse()?;
    config.job_lease_seconds = 3;
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    App::build(config)
        .await?
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

struct Gateway {
    child: Child,
    base: String,
}

fn start_gateway(database: &str, port: u16) -> anyhow::Result<Gateway> {
    let child = Command::new(std::env::current_exe()?)
        .env(CHILD_DATABASE, database)
        .env(CHILD_BIND, format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the gateway did not start within 15 s")
}

#[derive(Default)]
struct Counters {
    restarts: AtomicU64,
    delivered: AtomicU64,
    unchanged: AtomicU64,
}

#[derive(serde::Deserialize)]
struct FeedPage {
    results: Vec<Change>,
    until: String,
    has_more: bool,
}

#[derive(serde::Deserialize)]
struct Change {
    stream: String,
    key: String,
    record: Option<Box<RawValue>>,
}

/// The consumer's replica: `source/stream` → key → record text.
type Replica = BTreeMap<String, BTreeMap<String, String>>;

/// Reads one feed page (long-polling up to `wait` seconds) and applies it; `None` while
/// the gateway is down.
async fn consume(
    http: &reqwest::Client,
    base: &str,
    since: &mut String,
    wait: u32,
    replica: &mut Replica,
    counters: &Counters,
) -> Option<bool> {
    let response = http
        .get(format!(
            "{base}/v1/changes?since={since}&limit=500&wait={wait}"
        ))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let page: FeedPage = serde_json::from_str(&response.text().await.ok()?).ok()?;
    for change in page.results {
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        let stream = replica.entry(change.stream).or_default();
        match change.record {
            Some(record) => {
                let text = record.get().to_owned();
                if stream.get(&change.key) == Some(&text) {
                    counters.unchanged.fetch_add(1, Ordering::Relaxed);
                }
                stream.insert(change.key, text);
            }
            None => {
                stream.remove(&change.key);
            }
        }
    }
    *since = page.until;
    Some(page.has_more)
}

async fn soak(args: Args) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let dir = tempfile::tempdir()?;
    let database = match &args.postgres_url {
        Some(url) => {
            let name = format!("tidemark_soak_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await?;
            let mut url = url::Url::parse(url)?;
            url.set_path(&name);
            url.to_string()
        }
        None => format!("sqlite://{}", dir.path().join("soak.db").display()),
    };

    // The upstream, in this process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::new(args.seed, args.records);
    tokio::spawn(sandbox::serve(listener, sandbox, std::future::pending()));
    let control = |path: &str, body: Value| {
        let request = http.post(format!("{upstream}/_control/{path}")).json(&body);
        async move {
            let response = request.send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "control {}",
                response.status()
            );
            Ok::<Value, anyhow::Error>(response.json().await?)
        }
    };

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut gateway = start_gateway(&database, port)?;
    wait_healthy(&http, &gateway.base).await?;
    let base = gateway.base.clone();
    for (example, _, _, _) in STYLES {
        let path = format!(
            "{}/../../examples/sources/{example}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut source: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        source["base_url"] = json!(upstream);
        source["timeout_ms"] = json!(1000);
        source["retry"] =
            json!({"max_attempts": 4, "initial_backoff_ms": 50, "max_backoff_ms": 500});
        for stream in source["streams"].as_array_mut().into_iter().flatten() {
            stream["schedule"] = json!({"every_seconds": 1});
        }
        let response = http
            .post(format!("{base}/v1/sources"))
            .json(&source)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "registering {example}");
    }
    control(
        "faults",
        json!({"rate": args.fault_rate, "kinds": ["status", "retry_after", "truncated", "html", "reset", "slow"], "slow_ms": 1500}),
    )
    .await?;

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let replica = Arc::new(Mutex::new((String::new(), Replica::new())));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    // The consumer follows the feed throughout, across restarts.
    let consumer = {
        let (http, base, counters, stop, replica) = (
            http.clone(),
            base.clone(),
            counters.clone(),
            stop.clone(),
            replica.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut state = replica.lock().await;
                let (since, replica) = &mut *state;
                if consume(&http, &base, since, 1, replica, &counters)
                    .await
                    .is_none()
                {
                    drop(state);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };

    // Churn on every style, a few operations a second.
    let churn = {
        let (stop, upstream, http) = (stop.clone(), upstream.clone(), http.clone());
        let seed = args.seed;
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            while !stop.load(Ordering::Relaxed) {
                let (_, _, style, _) = STYLES[rng.random_range(0..STYLES.len())];
                let mut operations = vec!["update", "create", "delete", "mass_update"];
                if style == "offset" {
                    operations.push("hard_delete");
                }
                let operation = operations[rng.random_range(0..operations.len())];
                let count = if operation == "mass_update" {
                    150
                } else {
                    rng.random_range(1..8)
                };
                let _ = http
                    .post(format!("{upstream}/_control/{style}/{operation}"))
                    .json(&json!({ "count": count }))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Kill and restart the gateway, and stop and start the database, at random moments
    // (never both at once: a gateway does not start without its database).
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let mut events: Vec<bool> = (0..args.restarts)
        .map(|_| false)
        .chain((0..args.outages).map(|_| true))
        .collect();
    for i in (1..events.len()).rev() {
        events.swap(i, rng.random_range(0..=i));
    }
    let slot = Duration::from_secs(args.seconds) / (events.len() as u32 + 1);
    let mut outages = Outages::default();
    for outage in events {
        let pause = slot.mul_f64(rng.random_range(0.5..1.5));
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        if outage {
            outages.run(&http, &base, &args).await?;
            continue;
        }
        gateway.child.kill()?;
        gateway.child.wait()?;
        gateway = start_gateway(&database, port)?;
        wait_healthy(&http, &base).await?;
        counters.restarts.fetch_add(1, Ordering::Relaxed);
    }
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;

    // Churn stops, faults stop; one more sync of everything (a reconcile for offset).
    stop.store(true, Ordering::Relaxed);
    churn.await?;
    consumer.await?;
    control("faults", json!({"rate": 0})).await?;
    let injected = http
        .get(format!("{upstream}/_control/faults"))
        .send()
        .await?
        .json::<Value>()
        .await?["injected"]
        .as_u64()
        .unwrap_or_default();
    for (_, source, style, _) in STYLES {
        let mode = if style == "offset" {
            "reconcile"
        } else {
            "incremental"
        };
        settle(&http, &base, source, "incremental").await?;
        settle(&http, &base, source, mode).await?;
    }
    let mut state = replica.lock().await;
    let (since, replica) = &mut *state;
    for _ in 0..10_000 {
        match consume(&http, &base, since, 0, replica, &counters).await {
            Some(false) => break,
            Some(true) => {}
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    // Compare every stream's replica with the truth.
    let mut lost = 0usize;
    for (_, source, style, stream) in STYLES {
        let truth = truth(&http, &upstream, style).await?;
        let mine = replica
            .get(&format!("{source}/{stream}"))
            .cloned()
            .unwrap_or_default();
        let differing = truth
            .iter()
            .filter(|(k, v)| mine.get(*k) != Some(*v))
            .count()
            + mine.keys().filter(|k| !truth.contains_key(*k)).count();
        println!(
            "{style:<9} truth {:>6}  replica {:>6}  differing {differing}",
            truth.len(),
            mine.len()
        );
        lost += differing;
    }
    let jobs = job_counts(&http, &base).await?;
    let unchanged = counters.unchanged.load(Ordering::Relaxed);
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| duration | {} s |", started.elapsed().as_secs());
    println!(
        "| restarts (SIGKILL) | {} |",
        counters.restarts.load(Ordering::Relaxed)
    );
    println!("| faults injected | {injected} |");
    println!("| jobs | {} |", jobs.0);
    println!("| jobs failed | {} |", jobs.1);
    println!(
        "| jobs taken over after a kill (attempts > 1) | {} |",
        jobs.2
    );
    println!(
        "| changes delivered | {} |",
        counters.delivered.load(Ordering::Relaxed)
    );
    println!("| upstream requests retried | {} |", jobs.3);
    println!("| lost (replica ≠ truth) | {lost} |");
    println!("| delivered with unchanged content | {unchanged} |");
    if outages.count > 0 {
        println!(
            "| database outages ({} s each) | {} |",
            args.outage_seconds, outages.count
        );
        println!(
            "| `/readyz` 503 while the database was down | {} of {} polls |",
            outages.unready, outages.polls
        );
        println!(
            "| `/healthz` not 200 while the database was down | {} |",
            outages.dead
        );
        println!(
            "| slowest return to ready after the database started | {} ms |",
            outages.slowest_recovery.as_millis()
        );
    }
    gateway.child.kill()?;
    gateway.child.wait()?;
    Ok(lost == 0 && unchanged == 0 && outages.held())
}

/// Queues a sync of every stream of `source` and waits (at most 2 minutes) until each has
/// finished; failed jobs are retried (faults are off by now).
async fn settle(
    http: &reqwest::Client,
    base: &str,
    source: &str,
    mode: &str,
) -> anyhow::Result<()> {
    for _ in 0..5 {
        let queued: Value = http
            .post(format!("{base}/v1/sources/{source}/sync"))
            .json(&json!({ "mode": mode }))
            .send()
            .await?
            .json()
            .await?;
        let mut all_ok = true;
        for job in queued["jobs"].as_array().into_iter().flatten() {
            let id = job["id"].as_str().unwrap_or_default();
            let mut status = String::new();
            for _ in 0..1200 {
                let job: Value = http
                    .get(format!("{base}/v1/jobs/{id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                status = job["status"].as_str().unwrap_or_default().to_owned();
                if status != "queued" && status != "running" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            all_ok &= status == "succeeded";
        }
        if all_ok {
            return Ok(());
        }
    }
    anyhow::bail!("`{source}` did not sync cleanly after the churn stopped")
}

async fn truth(
    http: &reqwest::Client,
    upstream: &str,
    style: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let text = http
        .get(format!("{upstream}/_control/{style}/truth"))
        .send()
        .await?
        .text()
        .await?;
    let records: Vec<Box<RawValue>> = serde_json::from_str(&text)?;
    let mut truth = BTreeMap::new();
    for record in records {
        let value: Value = serde_json::from_str(record.get())?;
        let key = match &value["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        truth.insert(key, record.get().to_owned());
    }
    Ok(truth)
}

/// (jobs, failed, taken over, requests retried) over the whole job log.
async fn job_counts(http: &reqwest::Client, base: &str) -> anyhow::Result<(u64, u64, u64, u64)> {
    let (mut jobs, mut failed, mut taken_over, mut retried) = (0, 0, 0, 0);
    let mut after = String::new();
    for _ in 0..10_000 {
        let page: Value = http
            .get(format!("{base}/v1/jobs?limit=1000&after={after}"))
            .send()
            .await?
            .json()
            .await?;
        for job in page["results"].as_array().into_iter().flatten() {
            jobs += 1;
            failed += u64::from(job["status"] == "failed");
            taken_over += u64::from(job["attempts"].as_u64().unwrap_or_default() > 1);
            let stat = |name: &str| job["stats"][name].as_u64().unwrap_or_default();
            retried += stat("requests").saturating_sub(stat("pages"));
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    Ok((jobs, failed, taken_over, retried))
}
