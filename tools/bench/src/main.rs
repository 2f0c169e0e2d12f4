//! The benchmark of issue 5: a full sync, an incremental sync, a feed read, long-poll wake
//! latency and idle long-pollers, measured against the limits of the same machine (the
//! sandbox's raw serve rate and the database's raw bulk-insert rate).
//!
//! ```sh
//! cargo run --release -p tidemark-bench -- --records 1000000 [--database sqlite|postgres|both] \
//!     [--postgres-url postgres://postgres@127.0.0.1:5432/postgres] [--out bench.json]
//! ```
//!
//! The sandbox and the gateway run as child processes (this binary again, in a hidden
//! role), so that the gateway's CPU seconds and peak RSS are its own, read from
//! `/proc/<pid>`. Everything listens on 127.0.0.1 and every phase has a time bound.

mod child;
mod limits;
mod phases;
mod report;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "tidemark's benchmark: sync, feed and long-poll figures against the limits")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    run: RunArgs,
}

/// What a child process of the benchmark serves.
#[derive(Subcommand)]
enum Role {
    /// The gateway, on an ephemeral loopback port.
    #[command(hide = true)]
    Gateway {
        #[arg(long)]
        database_url: String,
    },
    /// The sandbox upstream, on an ephemeral loopback port.
    #[command(hide = true)]
    Sandbox {
        #[arg(long)]
        records: usize,
    },
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Records of the keyset dataset (~300-byte products), synced in pages of 1000.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Which database(s) to run on.
    #[arg(long, value_enum, default_value_t = Databases::Sqlite)]
    pub database: Databases,
    /// A PostgreSQL server where the user may create databases (each run creates a fresh
    /// one and drops it at the end). Needed for `--database postgres|both`.
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Where the results are written as JSON.
    #[arg(long, default_value = "bench.json")]
    pub out: PathBuf,
    /// Single-record changes whose long-poll wake latency is measured.
    #[arg(long, default_value_t = 1000)]
    pub wakes: usize,
    /// Idle long-pollers held at once.
    #[arg(long, default_value_t = 1000)]
    pub pollers: usize,
    /// Long-pollers woken by one commit in the fan-out phase (0: no fan-out phase).
    #[arg(long, default_value_t = 1000)]
    pub fanout: usize,
    /// Commits of the fan-out phase.
    #[arg(long, default_value_t = 20)]
    pub fanout_commits: usize,
    /// SIGKILLs of the gateway during a full sync, each timed until another instance has
    /// taken the job over (0: no takeover phase).
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Sources of one scheduled stream each (every 60 s) in the last phase (0: none).
    #[arg(long, default_value_t = 10_000)]
    pub scheduled: usize,
    /// How long the scheduled sources are watched, in seconds.
    #[arg(long, default_value_t = 180)]
    pub scheduled_seconds: u64,
    /// Afterwards, run dlt on the same data (`tools/bench/peers/dlt/run.sh`, which
    /// installs it in a venv) and print it beside tidemark.
    #[arg(long)]
    pub dlt: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Databases {
    Sqlite,
    Postgres,
    Both,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    match cli.role {
        Some(Role::Gateway { database_url }) => runtime.block_on(child::gateway(database_url)),
        Some(Role::Sandbox { records }) => runtime.block_on(child::sandbox(records)),
        None => runtime.block_on(run(cli.run)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.records < 1000 {
        anyhow::bail!("--records must be at least 1000 (one page)");
    }
    let mut databases = Vec::new();
    if matches!(args.database, Databases::Sqlite | Databases::Both) {
        databases.push(phases::Database::Sqlite);
    }
    if matches!(args.database, Databases::Postgres | Databases::Both) {
        let url = args
            .postgres_url
            .clone()
            .context("--database postgres needs --postgres-url")?;
        databases.push(phases::Database::Postgres(url));
    }
    let load_start = report::load_average();
    let mut results = Vec::new();
    for database in databases {
        eprintln!("== {} ==", database.name());
        let result = phases::run(&database, &args).await?;
        results.push((database.name(), result));
    }
    let report = report::Report::new(&args, load_start, results);
    println!("{}", report.table());
    let json = serde_json::to_string_pretty(&report).context("encoding the results")?;
    std::fs::write(&args.out, json + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("results written to {}", args.out.display());
    if args.dlt {
        eprintln!("== dlt ==");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/dlt/run.sh");
        let out = std::fs::canonicalize(&args.out)?;
        let status = std::process::Command::new("bash")
            .arg(script)
            .arg(out)
            .status()
            .context("running the dlt peer")?;
        if !status.success() {
            anyhow::bail!("the dlt peer failed: {status}");
        }
    }
    Ok(())
}
