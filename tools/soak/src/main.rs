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
//!
//! The chaos run (issue 14): `--kill-every 3-6` SIGKILLs a gateway at random every 3 to 6
//! seconds for the whole run (restarting it at once) and times, for each job the killed
//! gateway was running, how long until another worker took it over and where the time
//! went (until the dead lease was ended, then until a claim, by which gateway, with how
//! many of the survivors' workers busy); `--instances 2` runs
//! two gateways on one PostgreSQL database; `--stop-seconds 40` ends with one gateway
//! SIGSTOPped while it runs a job (its job must wait for the lease, and it must write
//! nothing when it wakes; on SQLite, a second gateway must be refused meanwhile). It also
//! counts completed syncs and compares every mirror, not only the replica, with the truth.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
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
const CHILD_LEASE: &str = "TIDEMARK_SOAK_CHILD_LEASE";

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
    /// SIGKILL a gateway at random every MIN-MAX seconds (e.g. `3-6`) for the whole run,
    /// restarting it at once, instead of `--restarts` kills spread over it.
    #[arg(long)]
    kill_every: Option<Between>,
    /// Gateways serving the database at once (more than one: PostgreSQL only).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// The gateways' job lease (`TIDEMARK_JOB_LEASE_SECONDS`).
    #[arg(long, default_value_t = 3)]
    lease_seconds: u32,
    /// After the kills, SIGSTOP a gateway that runs a job for this many seconds (more
    /// than the lease), then SIGCONT it.
    #[arg(long)]
    stop_seconds: Option<u64>,
}

/// A range of seconds, `MIN-MAX`.
#[derive(Clone, Copy)]
struct Between(f64, f64);

impl FromStr for Between {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (min, max) = s.split_once('-').ok_or("write MIN-MAX, e.g. 3-6")?;
        let (min, max): (f64, f64) = (
            min.parse().map_err(|_| "MIN is not a number")?,
            max.parse().map_err(|_| "MAX is not a number")?,
        );
        if !(0.0 < min && min <= max) {
            return Err("need 0 < MIN <= MAX".into());
        }
        Ok(Between(min, max))
    }
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
        if let Err(e) = runtime.block_on(child(database)) {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let args = Args::parse();
    let ok = runtime.block_on(soak(args))?;
    std::process::exit(if ok { 0 } else { 1 });
}

/// The gateway, as the child process runs it.
async fn child(database: String) -> anyhow::Result<()> {
    let mut config = Config::new(database);
    config.bind = std::env::var(CHILD_BIND)?.parse()?;
    config.job_lease_seconds = std::env::var(CHILD_LEASE)?.parse()?;
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

fn gateway_command(database: &str, port: u16, lease: u32) -> anyhow::Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env(CHILD_DATABASE, database)
        .env(CHILD_BIND, format!("127.0.0.1:{port}"))
        .env(CHILD_LEASE, lease.to_string())
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(command)
}

fn start_gateway(database: &str, port: u16, lease: u32) -> anyhow::Result<Gateway> {
    let child = gateway_command(database, port, lease)?.spawn()?;
    Ok(Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sends `signal` (`STOP`, `CONT`) to `pid`.
fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid}: {status}");
    Ok(())
}

/// The database, read directly: which jobs a gateway (by PID) runs, and how they go on.
#[derive(Clone)]
enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Running jobs with their attempt and the PID of the instance whose lease they are under.
const RUNNING_SQL: &str = "SELECT j.id, j.attempts, i.pid FROM jobs j \
     JOIN instances i ON i.id = j.lease_instance WHERE j.status = 'running'";

impl Db {
    async fn open(url: &str) -> anyhow::Result<Db> {
        Ok(if url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?.read_only(true);
            Db::Sqlite(sqlx::SqlitePool::connect_with(options).await?)
        } else {
            Db::Postgres(sqlx::PgPool::connect(url).await?)
        })
    }

    /// `(job, attempts, pid)` of every running job.
    async fn running(&self) -> anyhow::Result<Vec<(String, i32, i32)>> {
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query_as(RUNNING_SQL).fetch_all(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(RUNNING_SQL).fetch_all(pool).await?,
        })
    }

    /// A job's attempts and status.
    async fn job(&self, id: &str) -> anyhow::Result<Option<(i32, String)>> {
        let sql = "SELECT attempts, status FROM jobs WHERE id = $1";
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?,
        })
    }

    /// Seconds since the Unix epoch of the timestamp column `column`, in SQL.
    fn epoch(&self, column: &str) -> String {
        match self {
            Db::Sqlite(_) => format!("((julianday({column}) - 2440587.5) * 86400.0)"),
            Db::Postgres(_) => format!("EXTRACT(EPOCH FROM {column})::float8"),
        }
    }

    /// A job's lease: attempts, status, when the lease ends (seconds since the epoch, as
    /// the gateway's clock wrote it) and the PID of the instance it names.
    async fn lease(&self, id: &str) -> anyhow::Result<Option<Lease>> {
        let sql = format!(
            "SELECT j.attempts, j.status, {}, i.pid FROM jobs j \
             LEFT JOIN instances i ON i.id = j.lease_instance WHERE j.id = $1",
            self.epoch("j.lease_expires_at")
        );
        let sql = sqlx::AssertSqlSafe(sql);
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?,
        })
    }

    /// Jobs first started (claimed fresh from the queue) between two moments (seconds
    /// since the epoch).
    async fn started_between(&self, from: f64, to: f64) -> anyhow::Result<i64> {
        let started = self.epoch("started_at");
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM jobs WHERE {started} > $1 AND {started} < $2"
        ));
        Ok(match self {
            Db::Sqlite(pool) => {
                sqlx::query_scalar(sql)
                    .bind(from)
                    .bind(to)
                    .fetch_one(pool)
                    .await?
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(from)
                    .bind(to)
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// The newest instance id of `pid`.
    async fn instance_of(&self, pid: u32) -> anyhow::Result<Option<i32>> {
        let sql = "SELECT MAX(id) FROM instances WHERE pid = $1";
        let pid = i32::try_from(pid)?;
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).bind(pid).fetch_one(pool).await?,
            Db::Postgres(pool) => sqlx::query_scalar(sql).bind(pid).fetch_one(pool).await?,
        })
    }

    /// Whether any session holds `instance`'s liveness lock (PostgreSQL).
    async fn lock_held(&self, instance: i32) -> anyhow::Result<bool> {
        let sql = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                   AND classid = 1952738667 AND objid::int8 = $1 AND objsubid = 2)";
        Ok(match self {
            Db::Sqlite(_) => false,
            Db::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(i64::from(instance))
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// Jobs that succeeded: completed syncs.
    async fn succeeded(&self) -> anyhow::Result<i64> {
        let sql = "SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'";
        Ok(match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }
}

/// A job's lease as the database holds it: attempts, status, when the lease ends (seconds
/// since the Unix epoch, by the clock of the gateway that wrote it) and the PID of the
/// instance it names.
type Lease = (i32, String, Option<f64>, Option<i32>);

/// Now, in seconds since the Unix epoch (the clock the gateways write leases by).
fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// How one job of a killed gateway was taken over.
struct Takeover {
    /// From the SIGKILL to another worker's claim (as the 10 ms polls saw it).
    after: Duration,
    /// From the SIGKILL to the moment the dead instance's lease was ended (the sweep's
    /// time, as written into the lease), when a poll saw it ended before the claim.
    ended: Option<Duration>,
    /// Whether a gateway that was up at the kill claimed it (else the restarted one).
    by_survivor: bool,
    /// Jobs claimed fresh from the queue between the lease's end and this claim.
    fresh_ahead: i64,
    /// Running jobs of the gateways that were up at the kill, when a poll saw the lease
    /// ended.
    survivors_busy: Option<usize>,
}

/// What the kills showed.
#[derive(Default)]
struct Takeovers {
    /// Per job the killed gateway ran, how it was taken over.
    taken: Vec<Takeover>,
    /// Jobs not taken over within a minute.
    missed: u32,
    /// From the SIGKILL to the killed instance's liveness lock being gone (PostgreSQL).
    unlocked: Vec<Duration>,
    /// From spawning a gateway to its `/healthz` answering.
    restarts: Vec<Duration>,
}

/// The `q` quantile of `sorted` (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `p50 / p99 / max` of `times`, in milliseconds.
fn spread(mut times: Vec<Duration>) -> String {
    times.sort_unstable();
    let ms = |d: Duration| d.as_millis();
    format!(
        "{} / {} / {} ms",
        ms(quantile(&times, 0.5)),
        ms(quantile(&times, 0.99)),
        ms(times.last().copied().unwrap_or_default())
    )
}

/// The job that the gateway with PID `victim` ran (`id` under attempt `before`) when it
/// was SIGKILLed at `killed` (`killed_at` since the epoch): waits (a minute at most) until
/// another worker has claimed it, and records how long that took and where the time
/// went. `survivors` are the PIDs of the gateways that were up.
#[allow(clippy::too_many_arguments)]
async fn time_takeover(
    db: Db,
    (id, before): (String, i32),
    victim: u32,
    survivors: Vec<u32>,
    (killed, killed_at): (Instant, f64),
    lease_seconds: u32,
    takeovers: Arc<Mutex<Takeovers>>,
) {
    let (mut ended_at, mut survivors_busy) = (None, None);
    let mut taken = None;
    while killed.elapsed() < Duration::from_secs(60) {
        match db.lease(&id).await {
            Ok(Some((attempts, _, lease, pid))) if attempts > before => {
                let by_survivor = pid
                    .and_then(|p| u32::try_from(p).ok())
                    .is_some_and(|p| survivors.contains(&p));
                // The claim wrote its lease as its clock plus the lease.
                let claimed_at = lease.map(|l| l - f64::from(lease_seconds));
                taken = Some((killed.elapsed(), by_survivor, claimed_at));
                break;
            }
            // Finished before the kill landed, or its source is gone: no takeover.
            Ok(Some((_, status, _, _))) if status != "running" => return,
            Ok(None) => return,
            Ok(Some((_, _, Some(lease), pid)))
                if ended_at.is_none()
                    && pid.and_then(|p| u32::try_from(p).ok()) == Some(victim)
                    && lease <= epoch_now() =>
            {
                ended_at = Some(lease);
                survivors_busy = db.running().await.ok().map(|running| {
                    running
                        .iter()
                        .filter(|(_, _, p)| u32::try_from(*p).is_ok_and(|p| survivors.contains(&p)))
                        .count()
                });
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some((after, by_survivor, claimed_at)) = taken else {
        takeovers.lock().await.missed += 1;
        return;
    };
    let fresh_ahead = match (ended_at, claimed_at) {
        (Some(from), Some(to)) => db.started_between(from, to).await.unwrap_or_default(),
        _ => 0,
    };
    let ended = ended_at.map(|at| Duration::from_secs_f64((at - killed_at).max(0.0)));
    eprintln!(
        "takeover of {id}: claimed {} ms after the kill by {}; lease ended after {}; \
         the survivors ran {} jobs then; {fresh_ahead} fresh jobs claimed meanwhile",
        after.as_millis(),
        if by_survivor {
            "a survivor"
        } else {
            "the restarted gateway"
        },
        ended.map_or("(not seen)".to_owned(), |e| format!("{} ms", e.as_millis())),
        survivors_busy.map_or("?".to_owned(), |n| n.to_string()),
    );
    takeovers.lock().await.taken.push(Takeover {
        after,
        ended,
        by_survivor,
        fresh_ahead,
        survivors_busy,
    });
}

/// SIGKILLs a gateway (at random among `gateways`) every `every` seconds until
/// `deadline`, restarting it at once; each killed gateway's running jobs are timed until
/// another worker claims them.
#[allow(clippy::too_many_arguments)]
async fn kill_at_random(
    http: &reqwest::Client,
    db: &Db,
    gateways: &mut [Gateway],
    database: &str,
    ports: &[u16],
    args: &Args,
    every: Between,
    deadline: Instant,
    counters: &Counters,
) -> anyhow::Result<Takeovers> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x6b11);
    let takeovers = Arc::new(Mutex::new(Takeovers::default()));
    let mut timers = tokio::task::JoinSet::new();
    loop {
        let pause = Duration::from_secs_f64(rng.random_range(every.0..=every.1));
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        let victim = rng.random_range(0..gateways.len());
        let pid = gateways[victim].child.id();
        let running: Vec<(String, i32)> = db
            .running()
            .await?
            .into_iter()
            .filter(|(_, _, owner)| u32::try_from(*owner).ok() == Some(pid))
            .map(|(id, attempts, _)| (id, attempts))
            .collect();
        let instance = db.instance_of(pid).await?;
        let survivors: Vec<u32> = gateways
            .iter()
            .map(|g| g.child.id())
            .filter(|p| *p != pid)
            .collect();
        gateways[victim].child.kill()?;
        let killed = Instant::now();
        let killed_at = epoch_now();
        gateways[victim].child.wait()?;
        if let (Db::Postgres(_), Some(instance)) = (db, instance) {
            let (db, takeovers) = (db.clone(), takeovers.clone());
            timers.spawn(async move {
                while killed.elapsed() < Duration::from_secs(60) {
                    if !db.lock_held(instance).await.unwrap_or(true) {
                        takeovers.lock().await.unlocked.push(killed.elapsed());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        counters.restarts.fetch_add(1, Ordering::Relaxed);
        for job in running {
            timers.spawn(time_takeover(
                db.clone(),
                job,
                pid,
                survivors.clone(),
                (killed, killed_at),
                args.lease_seconds,
                takeovers.clone(),
            ));
        }
        let spawned = Instant::now();
        gateways[victim] = start_gateway(database, ports[victim], args.lease_seconds)?;
        wait_healthy(http, &gateways[victim].base).await?;
        takeovers.lock().await.restarts.push(spawned.elapsed());
    }
    while timers.join_next().await.is_some() {}
    let mut takeovers = takeovers.lock().await;
    Ok(std::mem::take(&mut *takeovers))
}

/// What the SIGSTOP showed.
struct Stopped {
    lines: Vec<String>,
    /// The stopped job and its attempt when it was stopped, for the final check.
    job: Option<(String, i32)>,
}

/// PostgreSQL, two or more gateways: SIGSTOPs one that runs a job, times the takeover
/// (it must wait for the lease: the stopped process still holds its liveness lock), then
/// SIGCONTs it and reads how its run ended. SQLite: SIGSTOPs the gateway and starts a
/// second on the same file, which must be refused, naming the holder.
async fn stop_phase(
    http: &reqwest::Client,
    db: &Db,
    gateways: &[Gateway],
    database: &str,
    args: &Args,
    seconds: u64,
) -> anyhow::Result<Stopped> {
    if gateways.len() == 1 {
        let pid = gateways[0].child.id();
        signal(pid, "STOP")?;
        let mut second = gateway_command(database, free_port()?, args.lease_seconds)?;
        let refused = second.stderr(Stdio::piped()).output();
        signal(pid, "CONT")?;
        let refused = refused?;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        let message = stderr.lines().next().unwrap_or_default().to_owned();
        return Ok(Stopped {
            lines: vec![format!(
                "| a second gateway started while the first was stopped | exit code {}: {message} |",
                refused.status.code().unwrap_or_default()
            )],
            job: None,
        });
    }
    let pids: Vec<u32> = gateways.iter().map(|g| g.child.id()).collect();
    for _ in 0..100 {
        let running = db.running().await?;
        let Some((job, attempts, pid)) = running
            .into_iter()
            .find(|(_, _, pid)| pids.contains(&u32::try_from(*pid).unwrap_or_default()))
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let pid = u32::try_from(pid)?;
        signal(pid, "STOP")?;
        let stopped = Instant::now();
        let still = db
            .running()
            .await?
            .into_iter()
            .any(|(id, a, p)| id == job && a == attempts && u32::try_from(p).ok() == Some(pid));
        if !still {
            signal(pid, "CONT")?;
            continue;
        }
        let mut taken = None;
        while stopped.elapsed() < Duration::from_secs(seconds) {
            if taken.is_none() && db.job(&job).await?.is_some_and(|(now, _)| now > attempts) {
                taken = Some(stopped.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal(pid, "CONT")?;
        // A heartbeat (a third of the lease) or the page in flight tells it.
        tokio::time::sleep(Duration::from_secs(u64::from(args.lease_seconds) / 3 + 3)).await;
        let base = &gateways[pids.iter().position(|p| *p == pid).unwrap_or_default()].base;
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let ended: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("tidemark_jobs_total"))
            .collect();
        let taken = taken.map_or("not within the stop".to_owned(), |t| {
            format!("{:.1} s", t.as_secs_f64())
        });
        return Ok(Stopped {
            lines: vec![
                format!(
                    "| SIGSTOP of a gateway running a job, for {seconds} s: taken over after | {taken} (lease {} s) |",
                    args.lease_seconds
                ),
                format!(
                    "| the stopped gateway's job runs, by how they ended, after SIGCONT | {} |",
                    ended.join(", ")
                ),
            ],
            job: Some((job, attempts)),
        });
    }
    anyhow::bail!("no gateway ran a job to stop within 10 s")
}

/// Every live record of `source/stream` in the mirror, by key.
async fn mirror(
    http: &reqwest::Client,
    base: &str,
    source: &str,
    stream: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        key: String,
        record: Box<RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Page {
        results: Vec<Entry>,
        next: Option<String>,
    }
    let mut records = BTreeMap::new();
    let mut after = String::new();
    for _ in 0..10_000 {
        let text = http
            .get(format!(
                "{base}/v1/sources/{source}/streams/{stream}/records?limit=1000&after={after}"
            ))
            .send()
            .await?
            .text()
            .await?;
        let page: Page = serde_json::from_str(&text)?;
        for entry in page.results {
            records.insert(entry.key, entry.record.get().to_owned());
        }
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    Ok(records)
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
        let stream = replica.entry(change.stream.clone()).or_default();
        match change.record {
            Some(record) => {
                let text = record.get().to_owned();
                if stream.get(&change.key) == Some(&text) {
                    counters.unchanged.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "delivered with unchanged content: {} {}",
                        change.stream, change.key
                    );
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

    anyhow::ensure!(
        args.instances == 1 || args.postgres_url.is_some(),
        "one SQLite file is served by one gateway: --instances needs --postgres-url"
    );
    let ports = (0..args.instances.max(1))
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let mut gateways = Vec::new();
    for port in &ports {
        let gateway = start_gateway(&database, *port, args.lease_seconds)?;
        wait_healthy(&http, &gateway.base).await?;
        gateways.push(gateway);
    }
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    let base = bases[0].clone();
    let db = Db::open(&database).await?;
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

    // The consumer follows the feed throughout, across restarts (and from one gateway to
    // the next while one is down).
    let consumer = {
        let (http, bases, counters, stop, replica) = (
            http.clone(),
            bases.clone(),
            counters.clone(),
            stop.clone(),
            replica.clone(),
        );
        tokio::spawn(async move {
            let mut at = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut state = replica.lock().await;
                let (since, replica) = &mut *state;
                if consume(&http, &bases[at], since, 1, replica, &counters)
                    .await
                    .is_none()
                {
                    drop(state);
                    at = (at + 1) % bases.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };

    // Completed syncs, every 30 s.
    let sampler = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut every = tokio::time::interval(Duration::from_secs(30));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                if let Ok(n) = db.succeeded().await {
                    samples.push(n);
                }
            }
            samples
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
    let mut takeovers = Takeovers::default();
    if let Some(every) = args.kill_every {
        takeovers = kill_at_random(
            &http,
            &db,
            &mut gateways,
            &database,
            &ports,
            &args,
            every,
            deadline,
            &counters,
        )
        .await?;
    } else {
        for outage in events {
            let pause = slot.mul_f64(rng.random_range(0.5..1.5));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            if outage {
                outages.run(&http, &base, &args).await?;
                continue;
            }
            gateways[0].child.kill()?;
            gateways[0].child.wait()?;
            gateways[0] = start_gateway(&database, ports[0], args.lease_seconds)?;
            wait_healthy(&http, &base).await?;
            counters.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    let stopped = match args.stop_seconds {
        Some(seconds) => Some(stop_phase(&http, &db, &gateways, &database, &args, seconds).await?),
        None => None,
    };

    // Churn stops, faults stop; one more sync of everything (a reconcile for offset).
    stop.store(true, Ordering::Relaxed);
    churn.await?;
    consumer.await?;
    let samples = sampler.await?;
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

    // Compare every stream's replica, and its mirror, with the truth.
    let differ = |truth: &BTreeMap<String, String>, mine: &BTreeMap<String, String>| {
        truth
            .iter()
            .filter(|(k, v)| mine.get(*k) != Some(*v))
            .count()
            + mine.keys().filter(|k| !truth.contains_key(*k)).count()
    };
    let (mut lost, mut unmirrored) = (0usize, 0usize);
    for (_, source, style, stream) in STYLES {
        let truth = truth(&http, &upstream, style).await?;
        let mine = replica
            .get(&format!("{source}/{stream}"))
            .cloned()
            .unwrap_or_default();
        let mirrored = mirror(&http, &base, source, stream).await?;
        let (differing, mirror_differing) = (differ(&truth, &mine), differ(&truth, &mirrored));
        println!(
            "{style:<9} truth {:>6}  replica {:>6}  differing {differing}  mirror {:>6}  differing {mirror_differing}",
            truth.len(),
            mine.len(),
            mirrored.len()
        );
        lost += differing;
        unmirrored += mirror_differing;
    }
    // The stopped gateway's job went on as one more attempt, never a second one of its.
    let mut fenced = true;
    if let Some((job, attempts)) = stopped.as_ref().and_then(|s| s.job.clone()) {
        fenced = db
            .job(&job)
            .await?
            .is_some_and(|(now, _)| now == attempts + 1);
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
    println!("| mirror ≠ truth | {unmirrored} |");
    println!("| delivered with unchanged content | {unchanged} |");
    if args.kill_every.is_some() {
        let windows: Vec<i64> = samples.windows(2).map(|w| w[1] - w[0]).collect();
        let mut sorted = windows.clone();
        sorted.sort_unstable();
        println!(
            "| gateways / job lease | {} / {} s |",
            gateways.len(),
            args.lease_seconds
        );
        println!(
            "| syncs completed (jobs succeeded) | {} |",
            db.succeeded().await?
        );
        println!(
            "| syncs completed per 30 s: fewest / median | {} / {} |",
            sorted.first().copied().unwrap_or_default(),
            sorted.get(sorted.len() / 2).copied().unwrap_or_default()
        );
        let taken = &takeovers.taken;
        println!(
            "| kill to takeover, {} jobs: p50 / p99 / max | {} |",
            taken.len(),
            spread(taken.iter().map(|t| t.after).collect())
        );
        println!(
            "| kill to the dead instance's lease ended, {} seen: p50 / p99 / max | {} |",
            taken.iter().filter(|t| t.ended.is_some()).count(),
            spread(taken.iter().filter_map(|t| t.ended).collect())
        );
        println!(
            "| claimed by a gateway that was up / by the restarted one | {} / {} |",
            taken.iter().filter(|t| t.by_survivor).count(),
            taken.iter().filter(|t| !t.by_survivor).count()
        );
        let slow: Vec<&Takeover> = taken
            .iter()
            .filter(|t| t.after > Duration::from_secs(1))
            .collect();
        println!(
            "| takeovers over 1 s / of them claimed after fresh jobs / survivors' running jobs at the lease's end (where seen) | {} / {} / {:?} |",
            slow.len(),
            slow.iter().filter(|t| t.fresh_ahead > 0).count(),
            slow.iter()
                .filter_map(|t| t.survivors_busy)
                .collect::<Vec<_>>()
        );
        println!("| jobs not taken over within 60 s | {} |", takeovers.missed);
        if !takeovers.unlocked.is_empty() {
            println!(
                "| kill to the liveness lock gone, {} kills: p50 / p99 / max | {} |",
                takeovers.unlocked.len(),
                spread(takeovers.unlocked.clone())
            );
        }
        let mut times: Vec<u128> = taken.iter().map(|t| t.after.as_millis()).collect();
        times.sort_unstable();
        eprintln!("takeovers (ms): {times:?}");
        println!(
            "| restart, spawn to `/healthz`: p50 / p99 / max | {} |",
            spread(takeovers.restarts.clone())
        );
    }
    if let Some(stopped) = &stopped {
        for line in &stopped.lines {
            println!("{line}");
        }
        println!("| the stopped job ran one more attempt, not two | {fenced} |");
    }
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
    for gateway in &mut gateways {
        gateway.child.kill()?;
        gateway.child.wait()?;
    }
    Ok(lost == 0 && unmirrored == 0 && unchanged == 0 && outages.held() && fenced)
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
