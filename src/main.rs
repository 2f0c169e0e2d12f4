use anyhow::Context;
use clap::{Parser, Subcommand};
use tidemark::config::{Config, LogFormat};
use tidemark::{App, api, store};
use tidemark_sandbox::{self as sandbox, Sandbox};
use tracing_subscriber::EnvFilter;

/// tidemark: a sync gateway with a gap-free change feed.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Serve the simulated upstream on 127.0.0.1 (for the quickstart, tests and benchmarks).
    Sandbox {
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Records each dataset starts with.
        #[arg(long, default_value_t = sandbox::DEFAULT_RECORDS)]
        records: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            println!("{}", api::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Migrate => {
            init_logs(&config)?;
            store::connect(&config.database_url, config.secret_key.as_ref()).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            init_logs(&config)?;
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
        Command::Sandbox { port, records } => {
            init_logs(&config)?;
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

fn init_logs(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log).context("TIDEMARK_LOG")?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Pretty => logs.init(),
        LogFormat::Json => logs.json().init(),
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
