//! The feed's background tasks: relaying other instances' commits, re-checking the head
//! for commits whose notification never came, and purging tombstones past the retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::store::Store;

/// How often the head is read again, for commits whose notification never came (another
/// instance's, lost while the PostgreSQL listener reconnected).
const RECHECK: Duration = Duration::from_millis(1500);

/// The feed's background work: relaying other instances' commits, re-checking the head,
/// and purging tombstones older than `retention`. Stops when the set is dropped.
pub fn background(store: Arc<dyn Store>, retention: Duration) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(relay_commits(store.clone()));
    tasks.spawn(recheck_head(store.clone()));
    tasks.spawn(purge_tombstones(store, retention));
    tasks
}

/// Relays other instances' commits to this one's waiters, starting again after a failure.
async fn relay_commits(store: Arc<dyn Store>) {
    loop {
        if let Err(e) = store.relay_commits().await {
            tracing::warn!(error = %e, "relaying feed commits failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads the head every [`RECHECK`] and tells the notifier, which wakes every waiter when
/// it moved past what was announced.
async fn recheck_head(store: Arc<dyn Store>) {
    let mut every = tokio::time::interval(RECHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match store.feed_head().await {
            Ok(head) => {
                metrics::gauge!("tidemark_feed_head").set(head as f64);
                store.notifier().head_is(head);
            }
            Err(e) => tracing::warn!(error = %e, "reading the feed head failed"),
        }
    }
}

/// Purges the tombstones older than `retention`, which raises the feed's horizon.
async fn purge_tombstones(store: Arc<dyn Store>, retention: Duration) {
    // Often enough that a tombstone outlives the retention by at most a quarter of it.
    let period = (retention / 4).clamp(Duration::from_millis(250), Duration::from_secs(600));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Ok(age) = chrono::TimeDelta::from_std(retention) else {
            return;
        };
        match store.purge_tombstones(chrono::Utc::now() - age).await {
            Ok(purged) if purged.tombstones > 0 => {
                metrics::counter!("tidemark_feed_tombstones_purged_total")
                    .increment(purged.tombstones);
                tracing::info!(
                    tombstones = purged.tombstones,
                    horizon = purged.horizon,
                    "purged tombstones"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging tombstones failed"),
        }
    }
}
