//! The job history's retention: finished jobs older than `TIDEMARK_JOB_RETENTION` are
//! deleted, in bounded batches, always keeping the newest [`KEEP_PER_STREAM`] of each
//! stream, so thousands of scheduled streams do not grow the database without bound.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;

/// The jobs of each stream kept whatever their age (its recent history stays readable).
const KEEP_PER_STREAM: u32 = 100;

/// Jobs deleted per statement: one short write transaction each, so page commits (on
/// SQLite, which has one writer) wait for at most one batch.
const BATCH: u32 = 500;

/// The pause between two full batches, which lets page commits in.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// Purges the history every so often (a quarter of the retention, between 1 s and 10
/// minutes) until shutdown begins.
pub(super) async fn purge(engine: Arc<Engine>, retention: Duration) {
    let Ok(age) = chrono::TimeDelta::from_std(retention) else {
        return;
    };
    let period = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    while !engine.stopping() {
        let before = chrono::Utc::now() - age;
        let mut purged = 0;
        loop {
            match engine
                .store
                .purge_jobs(before, KEEP_PER_STREAM, BATCH)
                .await
            {
                Ok(n) => {
                    purged += n;
                    if n < u64::from(BATCH) || engine.stopping() {
                        break;
                    }
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging the job history failed");
                    break;
                }
            }
        }
        if purged > 0 {
            metrics::counter!("tidemark_jobs_purged_total").increment(purged);
            tracing::info!(jobs = purged, "purged the job history");
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = engine.stopped() => {}
        }
    }
}
