//! One run on one database: the limits, then tidemark's phases against a fresh sandbox.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::RunArgs;
use crate::child::Child;
use crate::limits::{self, Insert, PAGE, Scratch, Serve};

/// The source and stream every phase syncs.
const SOURCE: &str = "bench";
const STREAM: &str = "products";
/// How long the idle long-pollers are watched.
const IDLE_WATCH: Duration = Duration::from_secs(10);
/// The gateway's count of page transactions.
const COMMITS: &str = "tidemark_page_commits_total";
/// The interval of the scheduled sources.
const SCHEDULE_EVERY: u64 = 60;
/// Sources registered at once in the scheduled phase.
const REGISTER_CONCURRENCY: usize = 8;

pub enum Database {
    Sqlite,
    /// The URL of a server where a fresh database is created.
    Postgres(String),
}

impl Database {
    pub fn name(&self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }
}

/// Everything measured on one database.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub records: usize,
    pub sandbox_start_seconds: f64,
    pub serve_limit: Serve,
    /// The raw insert in transactions of one page each.
    pub insert_limit: Insert,
    /// The raw insert in transactions of as many pages as tidemark's full sync committed
    /// on average in each (its group commits).
    pub insert_limit_grouped: Insert,
    pub full: Full,
    pub reconcile: Reconcile,
    pub incremental: Incremental,
    pub feed: FeedRead,
    pub wake: Wake,
    pub idle: Idle,
    pub fanout: Option<Fanout>,
    pub takeover: Option<Takeover>,
    pub scheduled: Option<Scheduled>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Full {
    pub records: u64,
    /// Page transactions (group commits) the sync took, from the gateway's metrics.
    pub commits: u64,
    pub records_per_commit: f64,
    /// From the job's creation to its end, as the job reports them.
    pub seconds: f64,
    pub records_per_second: f64,
    pub requests: u64,
    pub gateway_cpu_seconds: f64,
    pub gateway_peak_rss_mb: f64,
    /// The gateway's RSS once it had started, before the sync.
    pub gateway_start_rss_mb: f64,
}

/// A reconcile of the whole listing right after the full sync: every key is seen (and
/// recorded as seen), the mirror swept for keys not seen, the seen keys deleted.
#[derive(Debug, Clone, Serialize)]
pub struct Reconcile {
    pub records_seen: u64,
    pub deleted: u64,
    /// From the job's creation to its end, as the job reports them.
    pub seconds: f64,
    pub gateway_cpu_seconds: f64,
    /// The gateway's RSS when the reconcile was queued.
    pub gateway_start_rss_mb: f64,
    /// Its peak RSS during the reconcile (`VmHWM`, reset when it was queued).
    pub gateway_peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Incremental {
    /// Records changed upstream before the run (1%).
    pub changed: u64,
    pub records_seen: u64,
    /// From the sync request until the client saw the job finished (polling every 2 ms).
    pub wall_seconds: f64,
    /// From the job's creation to its end, as the job reports them.
    pub job_seconds: f64,
    pub requests: u64,
    /// `ceil(changed / page) + 1`, the target.
    pub target_requests: u64,
    pub gateway_cpu_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeedRead {
    pub changes: u64,
    pub requests: u64,
    pub seconds: f64,
    pub changes_per_second: f64,
    pub gateway_cpu_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Wake {
    pub samples: usize,
    /// The change's commit (its `changed_at`) to the waiting consumer having the response.
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub commit_max_ms: f64,
    /// The sync request (after the upstream change) to the consumer having the response.
    pub trigger_p50_ms: f64,
    pub trigger_p99_ms: f64,
}

/// `consumers` long-polls from the head, all woken by one commit, `commits` times.
#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    pub consumers: usize,
    pub commits: usize,
    /// Per commit: from the change's commit (`changed_at`) until the last consumer has
    /// its response; p50 and p99 over the commits.
    pub last_p50_ms: f64,
    pub last_p99_ms: f64,
    /// Every consumer's latency, over all commits.
    pub each_p50_ms: f64,
    pub each_p99_ms: f64,
}

/// SIGKILLs of the gateway running a full sync, each timed until another instance had
/// claimed the job.
#[derive(Debug, Clone, Serialize)]
pub struct Takeover {
    pub kills: usize,
    /// Whether the instance that took over was already up and idle at the kill
    /// (PostgreSQL), or was started after it (SQLite: one process serves one file).
    pub standby: bool,
    /// From the SIGKILL until the job's `attempts` went up (polled every 5 ms).
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// Many sources of one stream each on a schedule, watched for a while.
#[derive(Debug, Clone, Serialize)]
pub struct Scheduled {
    pub sources: usize,
    pub every_seconds: u64,
    pub register_seconds: f64,
    pub watched_seconds: f64,
    pub jobs_started: u64,
    pub jobs_per_second: f64,
    /// The gateway's CPU over the watch, as a share of one core.
    pub gateway_cpu_share: f64,
    pub gateway_rss_mb: f64,
    pub gateway_peak_rss_mb: f64,
    /// From a job's due time (its stream's previous scheduled job's creation plus the
    /// interval) to its start, over the jobs after each stream's first.
    pub delay_samples: usize,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub pollers: usize,
    pub watched_seconds: f64,
    pub gateway_cpu_seconds: f64,
    pub gateway_rss_before_mb: f64,
    pub gateway_rss_mb: f64,
}

/// A job as the API returns it (the fields the benchmark reads).
#[derive(Debug, Deserialize)]
struct Job {
    id: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    trigger: String,
    status: String,
    #[serde(default)]
    attempts: u32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    stats: Stats,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Stats {
    requests: u64,
    #[serde(default)]
    pages: u64,
    records_seen: u64,
    deleted: u64,
}

impl Job {
    fn seconds(&self) -> f64 {
        self.finished_at
            .map(|f| (f - self.created_at).as_seconds_f64())
            .unwrap_or(f64::NAN)
    }
}

/// A feed page, read as a consumer that only counts would read it.
#[derive(Deserialize)]
struct FeedPage {
    results: Vec<IgnoredAny>,
    until: String,
    has_more: bool,
}

/// A feed page with the commit time of its changes.
#[derive(Deserialize)]
struct WokenPage {
    results: Vec<Woken>,
    until: String,
}

#[derive(Deserialize)]
struct Woken {
    changed_at: DateTime<Utc>,
}

pub async fn run(database: &Database, args: &RunArgs) -> anyhow::Result<Results> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let dir = tempfile::tempdir()?;
    let (gateway_url, scratch, dropper) = match database {
        Database::Sqlite => (
            format!("sqlite://{}", dir.path().join("tidemark.db").display()),
            Scratch::Sqlite(dir.path().to_path_buf()),
            None,
        ),
        Database::Postgres(admin) => {
            let name = format!("tidemark_bench_{}", uuid::Uuid::new_v4().simple());
            let admin_pool = sqlx::PgPool::connect(admin)
                .await
                .context("connecting to --postgres-url")?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin_pool)
                .await?;
            let mut url = url::Url::parse(admin)?;
            url.set_path(&name);
            (
                url.to_string(),
                Scratch::Postgres(url.to_string()),
                Some((admin_pool, name)),
            )
        }
    };
    let result = run_on(&client, &gateway_url, &scratch, args).await;
    if let Some((admin_pool, name)) = dropper {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin_pool)
        .await?;
    }
    result
}

/// Bounds a phase in time.
async fn bounded<T>(
    phase: &str,
    limit: Duration,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    eprintln!("-- {phase}");
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result.with_context(|| format!("phase `{phase}`")),
        Err(_) => bail!("phase `{phase}` took longer than {limit:?}"),
    }
}

async fn run_on(
    client: &reqwest::Client,
    gateway_url: &str,
    scratch: &Scratch,
    args: &RunArgs,
) -> anyhow::Result<Results> {
    let n = args.records;
    // Generous bounds: far above any figure seen here, far below "hung".
    let per_record =
        |micros: u64| Duration::from_secs(60) + Duration::from_micros(micros) * n as u32;
    let started = Instant::now();
    let sandbox = Child::start(&["sandbox".into(), "--records".into(), n.to_string()]).await?;
    let sandbox_start_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "sandbox with {n} records per dataset started in {sandbox_start_seconds:.1} s at {}",
        sandbox.addr
    );
    let serve_limit = bounded(
        "limit: sandbox raw serve rate",
        per_record(100),
        limits::serve_rate(client, &sandbox.base),
    )
    .await?;
    eprintln!("{serve_limit:?}");
    let insert_limit = bounded(
        "limit: database raw insert rate, one page per transaction",
        per_record(200),
        limits::insert_rate(client, &sandbox.base, scratch, 1),
    )
    .await?;
    eprintln!("{insert_limit:?}");

    let gateway = Child::start(&[
        "gateway".into(),
        "--database-url".into(),
        gateway_url.to_owned(),
    ])
    .await?;
    let api = Api {
        client,
        base: &gateway.base,
    };
    api.register(&sandbox.base).await?;

    let full = bounded("full sync", per_record(200), async {
        let gateway_start_rss_mb = gateway.memory_mb("VmRSS")?;
        gateway.reset_peak()?;
        let cpu = gateway.cpu_seconds()?;
        let commits_before = api.metric(COMMITS).await?;
        let job = api.sync("full", Duration::from_millis(100)).await?;
        let records = job.stats.records_seen;
        if records != n as u64 {
            bail!("the full sync saw {records} records, not {n}");
        }
        let commits = (api.metric(COMMITS).await? - commits_before) as u64;
        Ok(Full {
            records,
            commits,
            records_per_commit: records as f64 / commits.max(1) as f64,
            seconds: job.seconds(),
            records_per_second: records as f64 / job.seconds(),
            requests: job.stats.requests,
            gateway_cpu_seconds: gateway.cpu_seconds()? - cpu,
            gateway_peak_rss_mb: gateway.memory_mb("VmHWM")?,
            gateway_start_rss_mb,
        })
    })
    .await?;
    eprintln!("{full:?}");

    // The same transaction sizes as the sync's: its mean pages per commit.
    let pages_per_transaction = (full.records_per_commit / PAGE as f64).round().max(1.0) as usize;
    let insert_limit_grouped = bounded(
        "limit: database raw insert rate, the sync's pages per transaction",
        per_record(200),
        limits::insert_rate(client, &sandbox.base, scratch, pages_per_transaction),
    )
    .await?;
    eprintln!("{insert_limit_grouped:?}");

    let reconcile = bounded("reconcile of the whole listing", per_record(300), async {
        let gateway_start_rss_mb = gateway.memory_mb("VmRSS")?;
        gateway.reset_peak()?;
        let cpu = gateway.cpu_seconds()?;
        let job = api.sync("reconcile", Duration::from_millis(100)).await?;
        let records = job.stats.records_seen;
        if records != n as u64 {
            bail!("the reconcile saw {records} records, not {n}");
        }
        Ok(Reconcile {
            records_seen: records,
            deleted: job.stats.deleted,
            seconds: job.seconds(),
            gateway_cpu_seconds: gateway.cpu_seconds()? - cpu,
            gateway_start_rss_mb,
            gateway_peak_rss_mb: gateway.memory_mb("VmHWM")?,
        })
    })
    .await?;
    eprintln!("{reconcile:?}");

    let incremental = bounded("incremental sync after 1% changed", per_record(20), async {
        let changed = (n / 100) as u64;
        api.control(&sandbox.base, "keyset/update", json!({ "count": changed }))
            .await?;
        let cpu = gateway.cpu_seconds()?;
        let started = Instant::now();
        let job = api.sync("incremental", Duration::from_millis(2)).await?;
        let wall_seconds = started.elapsed().as_secs_f64();
        Ok(Incremental {
            changed,
            records_seen: job.stats.records_seen,
            wall_seconds,
            job_seconds: job.seconds(),
            requests: job.stats.requests,
            target_requests: changed.div_ceil(PAGE as u64) + 1,
            gateway_cpu_seconds: gateway.cpu_seconds()? - cpu,
        })
    })
    .await?;
    eprintln!("{incremental:?}");

    let feed = bounded("feed read from a blank since", per_record(100), async {
        let cpu = gateway.cpu_seconds()?;
        let started = Instant::now();
        let (mut changes, mut requests, mut since) = (0u64, 0u64, String::new());
        loop {
            let page: FeedPage = api
                .get(&format!("/v1/changes?limit=1000&since={since}"))
                .await?;
            requests += 1;
            changes += page.results.len() as u64;
            since = page.until;
            if !page.has_more {
                break;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if changes != n as u64 {
            bail!("the feed handed out {changes} changes, not {n}");
        }
        Ok(FeedRead {
            changes,
            requests,
            seconds,
            changes_per_second: changes as f64 / seconds,
            gateway_cpu_seconds: gateway.cpu_seconds()? - cpu,
        })
    })
    .await?;
    eprintln!("{feed:?}");

    let wake_bound = Duration::from_secs(60) + Duration::from_millis(200) * args.wakes as u32;
    let wake = bounded(
        "long-poll wake latency",
        wake_bound,
        wake(&api, &sandbox.base, args.wakes),
    )
    .await?;
    eprintln!("{wake:?}");

    let idle = bounded(
        "idle long-pollers",
        Duration::from_secs(120),
        idle(&api, &gateway, args.pollers),
    )
    .await?;
    eprintln!("{idle:?}");

    let fanout = match args.fanout {
        0 => None,
        consumers => {
            let bound = Duration::from_secs(60) * (args.fanout_commits as u32 + 1);
            let fanout = bounded(
                "fan-out to many long-pollers",
                bound,
                fanout(&api, &sandbox.base, consumers, args.fanout_commits),
            )
            .await?;
            eprintln!("{fanout:?}");
            Some(fanout)
        }
    };

    let (gateway, takeover) = match args.kills {
        0 => (gateway, None),
        kills => {
            let bound = Duration::from_secs(60) * (kills as u32 + 2);
            let (gateway, takeover) = bounded(
                "kill to takeover",
                bound,
                takeover(client, gateway, gateway_url, kills),
            )
            .await?;
            eprintln!("{takeover:?}");
            (gateway, Some(takeover))
        }
    };
    let api = Api {
        client,
        base: &gateway.base,
    };

    let scheduled = match args.scheduled {
        0 => None,
        sources => {
            let watch = Duration::from_secs(args.scheduled_seconds);
            let scheduled = bounded(
                "many scheduled sources",
                watch + Duration::from_secs(600),
                scheduled(&api, &gateway, &sandbox.base, sources, watch),
            )
            .await?;
            eprintln!("{scheduled:?}");
            Some(scheduled)
        }
    };

    gateway.stop();
    sandbox.stop();
    Ok(Results {
        records: n,
        sandbox_start_seconds,
        serve_limit,
        insert_limit,
        insert_limit_grouped,
        full,
        reconcile,
        incremental,
        feed,
        wake,
        idle,
        fanout,
        takeover,
        scheduled,
    })
}

/// Starts a gateway on `url`.
async fn start_gateway(url: &str) -> anyhow::Result<Child> {
    Child::start(&["gateway".into(), "--database-url".into(), url.to_owned()]).await
}

/// Kill-to-takeover (design §7): `kills` times, while a full sync runs and has committed
/// since its last claim, the gateway running it is SIGKILLed, and the time runs until
/// another instance has claimed the job (its `attempts` went up). On PostgreSQL a standby
/// gateway is started before each kill and is idle when it lands; on SQLite, where one
/// process serves one file, the new gateway starts after the kill, so its start is part
/// of the time. The job is cancelled at the end; the gateway that has it is returned.
async fn takeover(
    client: &reqwest::Client,
    mut gateway: Child,
    url: &str,
    kills: usize,
) -> anyhow::Result<(Child, Takeover)> {
    let standby = !url.starts_with("sqlite:");
    let mut job = Api {
        client,
        base: &gateway.base,
    }
    .start("full")
    .await?;
    let mut times = Vec::new();
    // Progress the job made under its current claim before it may be killed.
    let mut pages_at_claim = 0;
    let deadline = Instant::now() + Duration::from_secs(60) * kills as u32;
    while times.len() < kills {
        if Instant::now() > deadline {
            bail!(
                "only {} of {kills} kills landed on a running job",
                times.len()
            );
        }
        let api = Api {
            client,
            base: &gateway.base,
        };
        let now: Job = api.get(&format!("/v1/jobs/{}", job.id)).await?;
        match now.status.as_str() {
            "running" if now.stats.pages > pages_at_claim => {}
            "queued" | "running" => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            // Ended before a kill could land: another full sync.
            "succeeded" => {
                job = api.start("full").await?;
                pages_at_claim = 0;
                continue;
            }
            other => bail!("the full sync ended {other}: {:?}", now.error),
        }
        let waiting = match standby {
            true => Some(start_gateway(url).await?),
            false => None,
        };
        let killed = Instant::now();
        gateway.kill();
        gateway = match waiting {
            Some(waiting) => waiting,
            None => start_gateway(url).await?,
        };
        let api = Api {
            client,
            base: &gateway.base,
        };
        loop {
            let seen: Job = api.get(&format!("/v1/jobs/{}", job.id)).await?;
            if seen.attempts > now.attempts {
                times.push(killed.elapsed().as_secs_f64() * 1000.0);
                pages_at_claim = seen.stats.pages;
                break;
            }
            // Its last commit landed before the kill: nothing to take over.
            if !matches!(seen.status.as_str(), "queued" | "running") {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!(
                    "job {} was not taken over within a minute of the kill",
                    job.id
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let api = Api {
        client,
        base: &gateway.base,
    };
    let cancel = format!("{}/v1/jobs/{}/cancel", gateway.base, job.id);
    client.post(cancel).send().await?.error_for_status()?;
    loop {
        let now: Job = api.get(&format!("/v1/jobs/{}", job.id)).await?;
        if !matches!(now.status.as_str(), "queued" | "running") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    times.sort_by(f64::total_cmp);
    Ok((
        gateway,
        Takeover {
            kills,
            standby,
            p50_ms: percentile(&times, 0.50),
            max_ms: times.last().copied().unwrap_or(f64::NAN),
        },
    ))
}

/// `wakes` times: a consumer long-polls from the head, one record changes upstream, an
/// incremental sync commits it, and the consumer's response arrives.
async fn wake(api: &Api<'_>, sandbox: &str, wakes: usize) -> anyhow::Result<Wake> {
    #[derive(Deserialize)]
    struct Head {
        until: String,
    }
    let mut since = api.get::<Head>("/v1/changes/head").await?.until;
    let (mut from_commit, mut from_trigger) = (Vec::new(), Vec::new());
    for _ in 0..wakes {
        let poll = {
            let request = api.client.get(format!(
                "{}/v1/changes?limit=1000&wait=30&since={since}",
                api.base
            ));
            tokio::spawn(async move {
                let body = request.send().await?.error_for_status()?.bytes().await?;
                let received = SystemTime::now();
                Ok::<_, anyhow::Error>((body, received))
            })
        };
        // Let the request reach the gateway and start waiting.
        tokio::time::sleep(Duration::from_millis(5)).await;
        api.control(sandbox, "keyset/update", json!({ "count": 1 }))
            .await?;
        let triggered = Instant::now();
        let job = api.start("incremental").await?;
        let (body, received) = poll.await??;
        from_trigger.push(triggered.elapsed().as_secs_f64() * 1000.0);
        let page: WokenPage = serde_json::from_slice(&body)?;
        let Some(change) = page.results.first() else {
            bail!("a long-poll ended without the change");
        };
        let committed = SystemTime::from(change.changed_at);
        let latency = received.duration_since(committed).unwrap_or(Duration::ZERO);
        from_commit.push(latency.as_secs_f64() * 1000.0);
        since = page.until;
        api.finish(&job, Duration::from_millis(2)).await?;
    }
    from_commit.sort_by(f64::total_cmp);
    from_trigger.sort_by(f64::total_cmp);
    Ok(Wake {
        samples: from_commit.len(),
        commit_p50_ms: percentile(&from_commit, 0.50),
        commit_p99_ms: percentile(&from_commit, 0.99),
        commit_max_ms: from_commit.last().copied().unwrap_or(f64::NAN),
        trigger_p50_ms: percentile(&from_trigger, 0.50),
        trigger_p99_ms: percentile(&from_trigger, 0.99),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `pollers` long-polls wait at once from the head; the gateway is watched while they do.
async fn idle(api: &Api<'_>, gateway: &Child, pollers: usize) -> anyhow::Result<Idle> {
    #[derive(Deserialize)]
    struct Head {
        until: String,
    }
    let since = api.get::<Head>("/v1/changes/head").await?.until;
    let rss_before = gateway.memory_mb("VmRSS")?;
    // Its own client: one connection per waiting request.
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut waiting = JoinSet::new();
    for _ in 0..pollers {
        let request = client.get(format!("{}/v1/changes?wait=60&since={since}", api.base));
        waiting.spawn(async move { request.send().await });
    }
    let mut held = 0.0;
    for _ in 0..300 {
        held = api.waiters().await?;
        if held >= pollers as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if held < pollers as f64 {
        bail!("only {held} of {pollers} long-polls are waiting");
    }
    let cpu = gateway.cpu_seconds()?;
    tokio::time::sleep(IDLE_WATCH).await;
    let result = Idle {
        pollers,
        watched_seconds: IDLE_WATCH.as_secs_f64(),
        gateway_cpu_seconds: gateway.cpu_seconds()? - cpu,
        gateway_rss_before_mb: rss_before,
        gateway_rss_mb: gateway.memory_mb("VmRSS")?,
    };
    waiting.abort_all();
    Ok(result)
}

/// The gateway's API, as the benchmark uses it.
struct Api<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
}

impl Api<'_> {
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let reply = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .error_for_status()?;
        Ok(serde_json::from_slice(&reply.bytes().await?)?)
    }

    async fn register(&self, upstream: &str) -> anyhow::Result<()> {
        let source = json!({
            "name": SOURCE,
            "base_url": upstream,
            "streams": [{
                "name": STREAM,
                "request": {"path": limits::LISTING, "query": {"with_deleted": "true"}},
                "records": {"path": "", "key": "/id", "updated_at": "/updated_at",
                            "deleted": {"pointer": "/archived", "equals": true}},
                "pagination": {"type": "keyset", "limit": PAGE},
            }],
        });
        let reply = self
            .client
            .post(format!("{}/v1/sources", self.base))
            .json(&source)
            .send()
            .await?;
        if reply.status() != 201 {
            bail!("registering the source: {}", reply.text().await?);
        }
        Ok(())
    }

    /// Queues a sync of the stream; the job.
    async fn start(&self, mode: &str) -> anyhow::Result<Job> {
        let reply = self
            .client
            .post(format!(
                "{}/v1/sources/{SOURCE}/streams/{STREAM}/sync",
                self.base
            ))
            .json(&json!({ "mode": mode }))
            .send()
            .await?
            .error_for_status()?;
        Ok(reply.json().await?)
    }

    /// Polls a job every `every` until it ends; fails unless it succeeded.
    async fn finish(&self, job: &Job, every: Duration) -> anyhow::Result<Job> {
        loop {
            let now: Job = self.get(&format!("/v1/jobs/{}", job.id)).await?;
            match now.status.as_str() {
                "queued" | "running" => tokio::time::sleep(every).await,
                "succeeded" => return Ok(now),
                other => bail!("job {} ended {other}: {:?}", now.id, now.error),
            }
        }
    }

    async fn sync(&self, mode: &str, every: Duration) -> anyhow::Result<Job> {
        let job = self.start(mode).await?;
        self.finish(&job, every).await
    }

    async fn control(&self, sandbox: &str, path: &str, body: Value) -> anyhow::Result<()> {
        self.client
            .post(format!("{sandbox}/_control/{path}"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The gateway's count of waiting feed requests, from its metrics.
    async fn waiters(&self) -> anyhow::Result<f64> {
        self.metric("tidemark_feed_waiters").await
    }

    /// A metric of the gateway's, summed over its labels (0 when it has none yet).
    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter_map(|rest| match rest.as_bytes().first() {
                Some(b' ') => rest.trim().parse::<f64>().ok(),
                Some(b'{') => rest.rsplit(' ').next()?.parse::<f64>().ok(),
                _ => None,
            })
            .sum())
    }

    /// Every job, newest pages first as the API lists them.
    async fn jobs(&self) -> anyhow::Result<Vec<Job>> {
        #[derive(Deserialize)]
        struct List {
            results: Vec<Job>,
            next: Option<String>,
        }
        let mut jobs = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100_000 {
            let path = match &after {
                Some(after) => format!("/v1/jobs?limit=1000&after={after}"),
                None => "/v1/jobs?limit=1000".to_owned(),
            };
            let list: List = self.get(&path).await?;
            jobs.extend(list.results);
            match list.next {
                Some(next) => after = Some(next),
                None => return Ok(jobs),
            }
        }
        bail!("the job list did not end")
    }
}

/// `commits` times: `consumers` long-polls wait from the head, one record changes upstream
/// and an incremental sync commits it; each time, how long after the commit the last
/// consumer had its response.
async fn fanout(
    api: &Api<'_>,
    sandbox: &str,
    consumers: usize,
    commits: usize,
) -> anyhow::Result<Fanout> {
    #[derive(Deserialize)]
    struct Head {
        until: String,
    }
    // Its own client: one connection per waiting request.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let (mut lasts, mut each) = (Vec::new(), Vec::new());
    for _ in 0..commits {
        let since = api.get::<Head>("/v1/changes/head").await?.until;
        let mut waiting = JoinSet::new();
        for _ in 0..consumers {
            let request = client.get(format!(
                "{}/v1/changes?limit=1000&wait=30&since={since}",
                api.base
            ));
            waiting.spawn(async move {
                let body = request.send().await?.error_for_status()?.bytes().await?;
                let received = SystemTime::now();
                Ok::<_, anyhow::Error>((body, received))
            });
        }
        let mut held = 0.0;
        for _ in 0..300 {
            held = api.waiters().await?;
            if held >= consumers as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if held < consumers as f64 {
            bail!("only {held} of {consumers} long-polls are waiting");
        }
        api.control(sandbox, "keyset/update", json!({ "count": 1 }))
            .await?;
        let job = api.start("incremental").await?;
        let mut last = Duration::ZERO;
        while let Some(answer) = waiting.join_next().await {
            let (body, received) = answer??;
            let page: WokenPage = serde_json::from_slice(&body)?;
            let Some(change) = page.results.first() else {
                bail!("a long-poll ended without the change");
            };
            let latency = received
                .duration_since(SystemTime::from(change.changed_at))
                .unwrap_or(Duration::ZERO);
            each.push(latency.as_secs_f64() * 1000.0);
            last = last.max(latency);
        }
        lasts.push(last.as_secs_f64() * 1000.0);
        api.finish(&job, Duration::from_millis(2)).await?;
    }
    lasts.sort_by(f64::total_cmp);
    each.sort_by(f64::total_cmp);
    Ok(Fanout {
        consumers,
        commits,
        last_p50_ms: percentile(&lasts, 0.50),
        last_p99_ms: percentile(&lasts, 0.99),
        each_p50_ms: percentile(&each, 0.50),
        each_p99_ms: percentile(&each, 0.99),
    })
}

/// `sources` sources of one keyset stream each, every [`SCHEDULE_EVERY`] seconds, whose
/// listing is empty (its first `updated_since` lies in the future): each job is one
/// request and one commit, so what is measured is the scheduler, the queue and the
/// workers. Registered, then watched for `watch`.
async fn scheduled(
    api: &Api<'_>,
    gateway: &Child,
    sandbox: &str,
    sources: usize,
    watch: Duration,
) -> anyhow::Result<Scheduled> {
    let started = Instant::now();
    let mut registering = JoinSet::new();
    let mut next = 0;
    while next < sources || !registering.is_empty() {
        while next < sources && registering.len() < REGISTER_CONCURRENCY {
            let source = json!({
                "name": format!("sched-{next}"),
                "base_url": sandbox,
                "streams": [{
                    "name": "s",
                    "request": {"path": limits::LISTING},
                    "records": {"path": "", "key": "/id", "updated_at": "/updated_at"},
                    "pagination": {"type": "keyset", "limit": PAGE,
                                   "initial_since": "2100-01-01T00:00:00Z"},
                    "schedule": {"every_seconds": SCHEDULE_EVERY},
                }],
            });
            let request = api
                .client
                .post(format!("{}/v1/sources", api.base))
                .json(&source);
            registering.spawn(async move {
                let reply = request.send().await?;
                if reply.status() != 201 {
                    bail!("registering a scheduled source: {}", reply.text().await?);
                }
                Ok(())
            });
            next += 1;
        }
        if let Some(done) = registering.join_next().await {
            done??;
        }
    }
    let register_seconds = started.elapsed().as_secs_f64();
    let from = Utc::now();
    let cpu = gateway.cpu_seconds()?;
    gateway.reset_peak()?;
    tokio::time::sleep(watch).await;
    let gateway_cpu = gateway.cpu_seconds()? - cpu;
    let until = Utc::now();
    let gateway_rss_mb = gateway.memory_mb("VmRSS")?;
    let gateway_peak_rss_mb = gateway.memory_mb("VmHWM")?;
    let mut by_source: std::collections::HashMap<String, Vec<Job>> =
        std::collections::HashMap::new();
    for job in api.jobs().await? {
        if job.trigger == "schedule" && job.source.starts_with("sched-") {
            by_source.entry(job.source.clone()).or_default().push(job);
        }
    }
    let (mut delays, mut started_in_watch) = (Vec::new(), 0u64);
    for jobs in by_source.values_mut() {
        jobs.sort_by_key(|j| j.created_at);
        for pair in jobs.windows(2) {
            let (Some(start), due) = (
                pair[1].started_at,
                pair[0].created_at + chrono::TimeDelta::seconds(SCHEDULE_EVERY as i64),
            ) else {
                continue;
            };
            if start >= from && start < until {
                delays.push((start - due).as_seconds_f64().max(0.0) * 1000.0);
            }
        }
        started_in_watch += jobs
            .iter()
            .filter(|j| j.started_at.is_some_and(|s| s >= from && s < until))
            .count() as u64;
    }
    delays.sort_by(f64::total_cmp);
    let watched_seconds = (until - from).as_seconds_f64();
    Ok(Scheduled {
        sources,
        every_seconds: SCHEDULE_EVERY,
        register_seconds,
        watched_seconds,
        jobs_started: started_in_watch,
        jobs_per_second: started_in_watch as f64 / watched_seconds,
        gateway_cpu_share: gateway_cpu / watched_seconds,
        gateway_rss_mb,
        gateway_peak_rss_mb,
        delay_samples: delays.len(),
        delay_p50_ms: percentile(&delays, 0.50),
        delay_p99_ms: percentile(&delays, 0.99),
        delay_max_ms: delays.last().copied().unwrap_or(f64::NAN),
    })
}
