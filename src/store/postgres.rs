//! PostgreSQL: one pool shared by every instance's API and workers.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use super::shared::impl_store;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

const CONNECTIONS: u32 = 16;

pub struct PgStore {
    read: PgPool,
    write: PgPool,
}

impl PgStore {
    /// Connects and applies migrations (sqlx serializes concurrent migrators with an
    /// advisory lock, so several instances may start at once).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}

impl_store!(PgStore, MIGRATOR);
