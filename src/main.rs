use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tidemark::config::{Config, LogFormat, Logs};
use tidemark::{App, api, store};
use tidemark_sandbox::{self as sandbox, Sandbox};
use tracing_subscriber::EnvFilter;

/// tidemark: a sync gateway with a gap-free change feed.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default: `tidemark [OPTIONS]` is `tidemark serve [OPTIONS]`).
    Serve(Box<Config>),
    /// Apply database migrations and exit.
    Migrate(Migrate),
    /// Print the OpenAPI document.
    Openapi,
    /// Serve the simulated upstream on 127.0.0.1 (for the quickstart, tests and benchmarks).
    Sandbox {
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Records each dataset starts with.
        #[arg(long, default_value_t = sandbox::DEFAULT_RECORDS)]
        records: usize,
        #[command(flatten)]
        logs: Logs,
    },
}

/// What `tidemark migrate` needs: the database, and its logs.
#[derive(clap::Args)]
struct Migrate {
    /// `sqlite://<file>` (created if missing) or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://tidemark.db",
        hide_env_values = true
    )]
    database_url: String,
    #[command(flatten)]
    logs: Logs,
}

/// A failure to start (a setting, the database, the address) is told in one message,
/// without a backtrace whatever `RUST_BACKTRACE` says: it is not a bug, and the message
/// says what to change. (Panics, which are bugs, keep their backtraces.)
fn main() -> ExitCode {
    let cli = Cli::parse_from(with_command(std::env::args_os()));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The arguments with `serve` inserted when they name no command, so that `tidemark` and
/// `tidemark --bind ...` serve, while each command parses only its own options (the
/// sandbox's help lists no server setting, and a server setting in the environment that
/// does not parse does not stop the sandbox).
fn with_command(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = args.collect();
    let names_a_command = args.get(1).and_then(|a| a.to_str()).is_some_and(|first| {
        !first.starts_with('-') || ["-h", "--help", "-V", "--version"].contains(&first)
    });
    if !names_a_command {
        args.insert(1.min(args.len()), "serve".into());
    }
    args
}

fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("tidemark: {error:#}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Openapi => {
            println!("{}", api::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Migrate(migrate) => {
            init_logs(&migrate.logs)?;
            store::connect(&migrate.database_url, None)
                .await
                .context("opening the database")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Sandbox {
            port,
            records,
            logs,
        } => {
            init_logs(&logs)?;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "sandbox serving");
            let sandbox = Sandbox::new(sandbox::DEFAULT_SEED, records);
            sandbox::serve(listener, sandbox, shutdown_signal()).await?;
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(&config.logs)?;
    // Checked before binding (and before touching the database), not only after.
    config.check_exposure(config.bind)?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    App::build(config)
        .await?
        .serve(listener, shutdown_signal())
        .await
}

/// Logs to standard output; colours only when it is a terminal (a log file or a pipe
/// gets no escape codes).
fn init_logs(logs: &Logs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&logs.log).context("TIDEMARK_LOG")?;
    let output = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match logs.log_format {
        LogFormat::Pretty => output.init(),
        LogFormat::Json => output.json().init(),
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
