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

/// Claims the oldest claimable job; `SKIP LOCKED` lets the workers of every instance
/// claim at once without waiting on each other or taking the same job.
const CLAIM_SQL: &str = "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
     started_at = COALESCE(started_at, $2), lease_owner = $1, lease_expires_at = $3 \
     WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                 OR (status = 'running' AND lease_expires_at < $2) \
                 ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING id";

/// What the mirror holds for a page's keys (bound as one array), locked in key order: a
/// deletions stream and the stream it deletes from may write the same keys at once, and
/// each must see the other's committed revision.
const EXISTING_SQL: &str = "SELECT key, hash, rev FROM records WHERE stream_id = $1 \
     AND key = ANY($2) ORDER BY key FOR UPDATE";

fn key_list(records: &[crate::store::PageRecord]) -> Vec<String> {
    records.iter().map(|r| r.key.clone()).collect()
}

impl_store!(PgStore, MIGRATOR, sqlx::PgConnection);
