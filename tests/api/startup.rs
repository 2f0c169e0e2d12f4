//! Starting the real binary: configuration mistakes stop it with one message that says
//! what is wrong (and no backtrace, whatever `RUST_BACKTRACE` says), logs are coloured on
//! a terminal and carry no colour codes elsewhere, and each command lists only its own
//! options.

use std::process::{Command, Output, Stdio};

use crate::crash::free_port;

/// Runs `tidemark` with `args` and `env` to its end.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    command
        .args(args)
        .env("TIDEMARK_BIND", format!("127.0.0.1:{}", free_port()))
        .env("TIDEMARK_WORKERS", "0")
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// Starts `tidemark serve` on `database`; asserts it exits non-zero with one message
/// containing each of `expected`.
async fn refused(database: &str, expected: &[&str]) {
    let output = run(&["serve"], &[("DATABASE_URL", database)]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{database} started: {stderr}");
    for text in expected {
        assert!(stderr.contains(text), "{database}: no `{text}` in {stderr}");
    }
    assert!(stderr.starts_with("tidemark: "), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn configuration_mistakes_stop_the_start_with_a_clear_message() {
    // No file: SQLite would open a private temporary database per connection.
    refused("sqlite://", &["`sqlite://` names no database file"]).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let file = missing.join("tidemark.db");
    refused(
        &format!("sqlite://{}", file.display()),
        &[
            &file.display().to_string(),
            &format!("the directory {} does not exist", missing.display()),
        ],
    )
    .await;
    let port = free_port();
    refused(
        &format!("postgres://postgres@127.0.0.1:{port}/tidemark"),
        &[&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused"
        )],
    )
    .await;
    // A server that accepts the connection (the kernel does, into the backlog) and never
    // answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    refused(
        &format!("postgres://postgres@127.0.0.1:{port}/tidemark"),
        &[&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port}: timed out"
        )],
    )
    .await;
    drop(silent);
}

#[tokio::test]
async fn logs_that_do_not_go_to_a_terminal_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("t.db").display());
    let output = run(&["migrate"], &[("DATABASE_URL", &database)]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("migrations applied"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
}

/// On a terminal the same log lines are coloured: `script` runs the binary with its
/// output on a pseudo-terminal of its own.
#[tokio::test]
async fn logs_on_a_terminal_are_coloured() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("t.db").display());
    let binary = env!("CARGO_BIN_EXE_tidemark");
    let output =
        run_on_terminal(&format!("{binary} migrate"), &[("DATABASE_URL", &database)]).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("migrations applied"), "{text}");
    assert!(
        text.contains("\u{1b}["),
        "no colour codes on a terminal: {text:?}"
    );
}

/// Runs the shell command `command` with `env` on a pseudo-terminal (util-linux
/// `script`), to its end; its output is what the terminal showed.
async fn run_on_terminal(command: &str, env: &[(&str, &str)]) -> Output {
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--return", "--command", command, "/dev/null"])
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || script.output().expect("util-linux `script` runs"))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sandbox_takes_only_its_own_options() {
    let help = run(&["sandbox", "--help"], &[]).await;
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for own in ["--port", "--records", "--log"] {
        assert!(text.contains(own), "{own}: {text}");
    }
    for server in ["--bind", "--database-url", "--workers", "--api-tokens"] {
        assert!(!text.contains(server), "{server}: {text}");
    }
    let refused = run(&["sandbox", "--bind", "127.0.0.1:9"], &[]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("unexpected argument '--bind'"), "{stderr}");
    // The server's options are `serve`'s, also without the command.
    let serve = run(&["--help"], &[]).await;
    assert!(String::from_utf8_lossy(&serve.stdout).contains("serve"));
    let serve = run(&["serve", "--help"], &[]).await;
    assert!(String::from_utf8_lossy(&serve.stdout).contains("--database-url"));
}
