//! tidemark: a sync gateway that keeps a faithful mirror of upstream REST APIs and hands
//! every change on through a gap-free change feed (`docs/design.md`). [`App`] builds the
//! whole service from a [`Config`]; `main` and the integration tests both use it.
//!
//! # Module map
//!
//! Data flows one way: HTTP API → store for the control plane; scheduler → job queue →
//! worker → upstream client → pagination → store (one transaction per page) → commit
//! notifier → waiting feed readers. Each module may use only the ones listed before it,
//! so the graph has no cycles:
//!
//! | module | owns | a change of this kind goes here |
//! |---|---|---|
//! | [`problem`] | the problem catalogue: every `type`, its status and title | a new problem type |
//! | [`spec`] | the public types: source and stream specs, jobs, cursors, changes | a new spec field (and its validation) |
//! | [`store`] | persistence: the `Store` trait, SQL per aggregate, one backend per database (and its liveness lock), the commit notifier, secrets at rest | a new query |
//! | [`paginate`] | pure pagination state machines, since formats, record extraction: no network, no database | a new pagination option |
//! | [`upstream`] | the HTTP client: auth, pacing, retry, SSRF guard, upstream errors | a new auth kind or retry rule |
//! | [`feed`] | feed tokens, reads, long-poll waiting, SSE, named consumers, background tasks | a new feed behaviour |
//! | [`sync`] | scheduler, workers (claim, lease, heartbeat), the page loop, child streams' runs, the job history's retention | how jobs run |
//! | [`config`] | settings from the environment and flags | a new setting |
//! | [`api`] | HTTP only: routes, extractors, auth, handlers, `ApiError`, the OpenAPI document | a new route |
//!
//! Beside the service: `crates/sandbox` (the simulated upstream that `tidemark sandbox`
//! serves; a new sandbox dialect goes there), `tools/` (bench and soak), `tests/api`
//! (integration tests over real HTTP), `migrations/` (one folder per database).

pub mod api;
pub mod config;
pub mod feed;
pub mod paginate;
pub mod problem;
pub mod spec;
pub mod store;
pub mod sync;
pub mod upstream;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use config::Config;

/// The running parts of tidemark, ready to serve.
pub struct App {
    config: Config,
    state: api::AppState,
    workers: sync::Workers,
    /// The feed's background tasks (commit relay, head re-check, retention purge).
    feed_tasks: tokio::task::JoinSet<()>,
}

/// The process-wide metrics recorder (a recorder can be installed only once per process;
/// tests start many apps in one).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("installing the metrics recorder: {e}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

impl App {
    /// Connects to the database (applying migrations) and assembles the service.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = store::connect(&config.database_url, config.secret_key.as_ref())
            .await
            .context("opening the database")?;
        let instance = store
            .start_instance()
            .await
            .context("taking this instance's liveness lock")?;
        let workers = sync::Workers::start(
            store.clone(),
            upstream::client::Upstream::with_policy(config.upstream_allow.clone()),
            instance,
            sync::Settings {
                workers: config.workers,
                lease: Duration::from_secs(u64::from(config.job_lease_seconds)),
                job_retention: config.job_retention.0,
            },
        );
        let feed = feed::Feed::load(store.clone(), config.feed_max_waiters)
            .await
            .context("loading the feed's epoch and token secret")?;
        let feed_tasks = feed::background(store.clone(), config.tombstone_retention.0);
        let state = api::AppState {
            store,
            tokens: Arc::new(config.api_tokens.clone()),
            metrics: metrics_handle()?,
            waker: workers.waker(),
            feed: Arc::new(feed),
            hosts: Arc::new(config.upstream_allow.clone()),
        };
        Ok(App {
            config,
            state,
            workers,
            feed_tasks,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests,
    /// stops the workers (each commits the page in flight and hands its job back to the
    /// queue) and closes the database, letting go of the liveness lock. Refuses a
    /// non-loopback listener when no API token is configured.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        if let Err(e) = self.config.check_exposure(addr) {
            self.workers.stop().await;
            self.state.store.close().await;
            return Err(e);
        }
        let store = self.state.store.clone();
        let feed = self.state.feed.clone();
        let client_timeout = self.config.client_timeout.0;
        let app = api::app(self.state, self.config.max_body_bytes, client_timeout);
        tracing::info!(%addr, "serving");
        api::server::serve(listener, app, client_timeout, async move {
            shutdown.await;
            // Waiting feed requests would hold the drain up to their end.
            feed.close();
        })
        .await;
        self.workers.stop().await;
        tracing::info!("workers stopped");
        drop(self.feed_tasks);
        store.close().await;
        Ok(())
    }
}
