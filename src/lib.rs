//! tidemark: a sync gateway. [`App`] builds the whole service from a [`Config`]; `main`
//! and the integration tests both use it.

pub mod api;
pub mod config;
pub mod error;
pub mod sandbox;
pub mod spec;
pub mod store;

use std::sync::{Arc, OnceLock};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use config::Config;

/// The running parts of tidemark, ready to serve.
pub struct App {
    config: Config,
    state: api::AppState,
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
        let store = store::connect(&config.database_url)
            .await
            .context("opening the database")?;
        let state = api::AppState {
            store,
            tokens: Arc::new(config.api_tokens.clone()),
            metrics: metrics_handle()?,
        };
        Ok(App { config, state })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests.
    /// Refuses a non-loopback listener when no API token is configured.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        self.config.check_exposure(addr)?;
        let app = api::app(self.state, self.config.max_body_bytes);
        tracing::info!(%addr, "serving");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
