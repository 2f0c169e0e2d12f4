//! Settings, loaded once from flags and environment variables (every setting is both).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::SecretKey;
use crate::upstream::policy::HostPolicy;

/// How tidemark runs.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve the API on.
    #[arg(long, env = "TIDEMARK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// `sqlite://<file>` (created if missing) or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://tidemark.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// API bearer tokens, `admin:<token>,reader:<token>,...`. Without any, the API is open
    /// and tidemark refuses to bind to a non-loopback address.
    #[arg(
        long,
        env = "TIDEMARK_API_TOKENS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true,
        value_parser = Quiet::<ApiTokens>::new()
    )]
    pub api_tokens: ApiTokens,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TIDEMARK_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long a client may take to send a request's head, then its body, and how long an
    /// idle keep-alive connection stays open; slower clients are cut off. Long-polls and
    /// event streams are not affected: the limit is on what the client sends.
    #[arg(long, env = "TIDEMARK_CLIENT_TIMEOUT", default_value = "30s")]
    pub client_timeout: Period,

    /// Concurrent sync workers of this instance (0: this instance only serves the API).
    #[arg(long, env = "TIDEMARK_WORKERS", default_value_t = 4)]
    pub workers: usize,

    /// How long a worker's claim on a job lasts without a heartbeat. A job whose process
    /// died is taken over at once (its liveness lock is gone); the lease is for a process
    /// that lives but hangs: its job is taken over after this long.
    #[arg(long, env = "TIDEMARK_JOB_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(3..=3600))]
    pub job_lease_seconds: u32,

    /// How long the feed keeps tombstones (deleted records) before purging them; a feed
    /// token older than a purged tombstone gets `410 since-expired`. A number with a unit:
    /// `s`, `m`, `h` or `d` (e.g. `30d`, `12h`).
    #[arg(long, env = "TIDEMARK_TOMBSTONE_RETENTION", default_value = "30d")]
    pub tombstone_retention: Period,

    /// How long finished jobs are kept before they are deleted; the newest 100 jobs of
    /// each stream are kept whatever their age. A number with a unit: `s`, `m`, `h` or `d`.
    #[arg(long, env = "TIDEMARK_JOB_RETENTION", default_value = "7d")]
    pub job_retention: Period,

    /// Feed requests of this instance that may wait (long-poll or Server-Sent Events) at
    /// once; beyond it they are answered `429` with `Retry-After`.
    #[arg(long, env = "TIDEMARK_FEED_MAX_WAITERS", default_value_t = 10_000)]
    pub feed_max_waiters: usize,

    /// Encrypts the inline upstream secrets of stored sources (AES-256-GCM): 32 bytes, as
    /// 64 hex characters or base64 (e.g. `openssl rand -base64 32`). Without it they are
    /// stored as given.
    #[arg(
        long,
        env = "TIDEMARK_SECRET_KEY",
        hide_env_values = true,
        value_parser = Quiet::<SecretKey>::new()
    )]
    pub secret_key: Option<SecretKey>,

    /// Hosts upstream requests may go to, comma-separated: `api.example.com`, `*.example.com`
    /// (any name under it), either with an optional `:port`; IP addresses as written
    /// (IPv6 in brackets). Empty: any host. Link-local and cloud metadata addresses are
    /// refused either way, also when a name resolves to one.
    #[arg(
        long,
        env = "TIDEMARK_UPSTREAM_ALLOW",
        default_value = "",
        hide_default_value = true
    )]
    pub upstream_allow: HostPolicy,

    #[command(flatten)]
    pub logs: Logs,
}

/// What is logged, and how (logs go to standard output, coloured only on a terminal).
#[derive(Debug, Clone, clap::Args)]
pub struct Logs {
    /// Log filter, in `tracing` `EnvFilter` syntax (e.g. `info,tidemark=debug`).
    #[arg(long, env = "TIDEMARK_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "TIDEMARK_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            log: "info".into(),
            log_format: LogFormat::Pretty,
        }
    }
}

/// Parses a setting that holds secrets without repeating it when it is invalid (clap's
/// own parsers quote the value in their error, which ends up in terminals and logs).
#[derive(Clone)]
struct Quiet<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Quiet<T> {
    fn new() -> Self {
        Quiet(std::marker::PhantomData)
    }
}

impl<T> clap::builder::TypedValueParser for Quiet<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = match (
            arg.and_then(|a| a.get_long()),
            arg.and_then(|a| a.get_env()),
        ) {
            (Some(long), Some(env)) => format!("--{long} ({})", env.to_string_lossy()),
            (Some(long), None) => format!("--{long}"),
            _ => "value".to_owned(),
        };
        let invalid = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid {name}: {why} (the value is not repeated: it is secret)\n"),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| invalid("it is not valid UTF-8".into()))?
            .parse()
            .map_err(invalid)
    }
}

/// A length of time written as a number and a unit: `45s`, `90m`, `12h`, `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.len() - s.chars().last().map_or(0, char::len_utf8);
        let (number, unit) = s.split_at(split);
        let seconds_per = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(format!("`{s}`: end with a unit, s, m, h or d (e.g. `30d`)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{s}`: a whole number, then s, m, h or d (e.g. `30d`)"))?;
        match n.checked_mul(seconds_per) {
            Some(seconds) if seconds > 0 => Ok(Period(Duration::from_secs(seconds))),
            Some(_) => Err("the period must be longer than zero".into()),
            None => Err(format!("`{s}` is too long")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The feed and every read.
    Reader,
    /// Everything.
    Admin,
}

/// The configured API tokens, kept only as SHA-256 digests so they can be compared in
/// constant time and never show up in a debug print.
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<(Role, [u8; 32])>);

impl ApiTokens {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The role of `token`, comparing against every configured token in constant time.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (role, expected) in &self.0 {
            if bool::from(digest.ct_eq(expected)) {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} configured)", self.0.len())
    }
}

impl FromStr for ApiTokens {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (role, token) = entry
                .split_once(':')
                .ok_or("each token is written `role:token`, e.g. `admin:s3cret`")?;
            let role = match role {
                "admin" => Role::Admin,
                "reader" => Role::Reader,
                other => return Err(format!("unknown role `{other}`: use admin or reader")),
            };
            if token.len() < 8 {
                return Err("an API token must be at least 8 characters long".into());
            }
            tokens.push((role, Sha256::digest(token.as_bytes()).into()));
        }
        Ok(ApiTokens(tokens))
    }
}

impl Config {
    /// Refuses to expose an open API: without tokens, only loopback addresses are served.
    pub fn check_exposure(&self, addr: SocketAddr) -> anyhow::Result<()> {
        if self.api_tokens.is_empty() && !addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve on {addr} without API tokens: set TIDEMARK_API_TOKENS \
                 (e.g. admin:<token>) or bind to a loopback address"
            );
        }
        Ok(())
    }

    /// The defaults, as `tidemark serve` with no flags and no environment would use.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: database_url.into(),
            api_tokens: ApiTokens::default(),
            max_body_bytes: 1024 * 1024,
            client_timeout: Period(Duration::from_secs(30)),
            workers: 4,
            job_lease_seconds: 30,
            tombstone_retention: Period(Duration::from_secs(30 * 86_400)),
            job_retention: Period(Duration::from_secs(7 * 86_400)),
            feed_max_waiters: 10_000,
            secret_key: None,
            upstream_allow: HostPolicy::default(),
            logs: Logs::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match() {
        let t: ApiTokens = "admin:aaaaaaaa, reader:bbbbbbbb".parse().unwrap();
        assert_eq!(t.role_of("aaaaaaaa"), Some(Role::Admin));
        assert_eq!(t.role_of("bbbbbbbb"), Some(Role::Reader));
        assert_eq!(t.role_of("cccccccc"), None);
        assert!(!format!("{t:?}").contains("aaaa"));
        assert!("root:aaaaaaaa".parse::<ApiTokens>().is_err());
        assert!("admin".parse::<ApiTokens>().is_err());
        assert!("admin:short".parse::<ApiTokens>().is_err());
        assert!("".parse::<ApiTokens>().unwrap().is_empty());
    }

    #[test]
    fn invalid_secret_settings_are_not_repeated() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        use clap::Parser as _;
        for args in [
            ["t", "--secret-key", "typo-of-a-real-key-0123"],
            ["t", "--api-tokens", "admin:typo"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(e.contains(args[1]) && !e.contains("typo"), "{e}");
        }
        let ok = Cli::try_parse_from(["t", "--secret-key", &"ab".repeat(32)]).unwrap();
        assert!(ok.config.secret_key.is_some());
    }

    #[test]
    fn periods_parse_with_their_unit() {
        let secs = |s: &str| s.parse::<Period>().map(|p| p.0.as_secs());
        assert_eq!(secs("30d"), Ok(30 * 86_400));
        assert_eq!(secs("12h"), Ok(43_200));
        assert_eq!(secs("90m"), Ok(5_400));
        assert_eq!(secs(" 45s "), Ok(45));
        for bad in [
            "",
            "30",
            "d",
            "0s",
            "-1d",
            "1.5h",
            "3w",
            "1é",
            "99999999999999999d",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }
}
