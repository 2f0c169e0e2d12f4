//! The child processes (gateway and sandbox) and what `/proc` says about them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tidemark::{App, Config};
use tidemark_sandbox::{self as sandbox, Sandbox};
use tokio::net::TcpListener;

/// How long a child may take to start listening (the sandbox generates its data first).
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Kernel clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The gateway role: tidemark as `tidemark serve` runs it (`TIDEMARK_WORKERS` included),
/// on an ephemeral port. It logs
/// warnings, or what the filter in `BENCH_LOG` selects (`sqlx::query=debug` logs every
/// statement with its time, for profiling the database's share).
pub async fn gateway(database_url: String) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("BENCH_LOG").unwrap_or("warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::new(database_url);
    // As `tidemark serve` reads it: the bench's gateway runs with the default otherwise.
    if let Ok(workers) = std::env::var("TIDEMARK_WORKERS") {
        config.workers = workers.parse().context("TIDEMARK_WORKERS")?;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = App::build(config).await?;
    announce(addr);
    app.serve(listener, terminated()).await
}

/// The sandbox role: the simulated upstream with `records` records per dataset.
pub async fn sandbox(records: usize) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(sandbox::DEFAULT_SEED, records);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    announce(listener.local_addr()?);
    sandbox::serve(listener, sandbox, terminated()).await?;
    Ok(())
}

/// Tells the parent where this child listens: its first line of output.
fn announce(addr: SocketAddr) {
    println!("listening {addr}");
}

async fn terminated() {
    if let Ok(mut signal) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        signal.recv().await;
    }
}

/// A running child; killed when dropped.
pub struct Child {
    process: std::process::Child,
    pub addr: SocketAddr,
    pub base: String,
}

impl Child {
    /// Starts this binary in `role` and waits until it listens.
    pub async fn start(args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the benchmark binary")?;
        let mut process = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a child process")?;
        let stdout = process.stdout.take().context("the child's stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(START_TIMEOUT, line).await {
            Ok(joined) => joined??,
            Err(_) => {
                let _ = process.kill();
                anyhow::bail!("{args:?} did not start within {START_TIMEOUT:?}");
            }
        };
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{args:?} did not start: {line:?}"))?;
        Ok(Child {
            process,
            addr,
            base: format!("http://{addr}"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            Ok(fields
                .get(i)
                .context("a short /proc/<pid>/stat")?
                .parse::<f64>()?)
        };
        // utime and stime are fields 14 and 15: indexes 11 and 12 after the name.
        Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
    }

    /// A `/proc/<pid>/status` memory figure in MB (`VmRSS`, `VmHWM`).
    pub fn memory_mb(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/<pid>/status"))?;
        Ok(kb / 1024.0)
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .context("resetting the peak RSS through /proc/<pid>/clear_refs")
    }

    /// Sends SIGKILL and waits for the child to end.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Sends SIGTERM and waits (a few seconds at most) for the child to end.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
