//! A worker: claims a job, keeps its lease alive, runs it, records how it ended; and the
//! task that hands the jobs of instances that are gone to the workers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::run::{self, Ending};
use super::{Engine, LIVENESS_POLL, POLL};
use crate::store::{Claim, JobEnd};

pub(super) async fn work(engine: Arc<Engine>, index: usize) {
    let owner = format!("{}/{index}", engine.instance);
    while !engine.stopping() {
        // Registered before claiming, so a job queued meanwhile still wakes this worker.
        let woken = engine.wake.notified();
        let claimed = engine
            .store
            .claim_job(engine.instance, &owner, engine.lease)
            .await;
        match claimed {
            Ok(Some(claim)) => run_claim(&engine, &owner, claim).await,
            Ok(None) => {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = engine.stopped() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = engine.stopped() => {}
                }
            }
        }
    }
}

/// Ends the leases of jobs whose instance no longer holds its liveness lock (its process
/// died), every [`LIVENESS_POLL`], and wakes the idle workers while any job waits to be
/// taken over: also one whose lease another instance ended (every worker of that one
/// may be busy) or that ran out.
pub(super) async fn take_over_the_gone(engine: Arc<Engine>) {
    while !engine.stopping() {
        match engine.store.expire_gone_leases(engine.instance).await {
            Ok(gone) => {
                if gone.ended > 0 {
                    tracing::info!(
                        jobs = gone.ended,
                        "taking over the jobs of instances that are gone"
                    );
                }
                if gone.waiting > 0 {
                    engine.wake.notify_waiters();
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for the jobs of instances that are gone"),
        }
        tokio::select! {
            _ = tokio::time::sleep(LIVENESS_POLL) => {}
            _ = engine.stopped() => {}
        }
    }
}

#[tracing::instrument(skip_all, fields(job = %claim.job.id, source = %claim.job.source, stream = %claim.job.stream, mode = ?claim.job.mode))]
async fn run_claim(engine: &Arc<Engine>, owner: &str, claim: Claim) {
    let job = claim.job.id;
    let (lost_tx, lost) = watch::channel(false);
    let heartbeat = {
        let engine = engine.clone();
        let owner = owner.to_owned();
        let every = (engine.lease / 3)
            .to_std()
            .unwrap_or(Duration::from_secs(10));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match engine.store.heartbeat(job, &owner, engine.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = lost_tx.send(true);
                        return;
                    }
                    // A database hiccup: the lease may still hold; the next commit tells.
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        })
    };
    tracing::info!(attempt = claim.job.attempts, "job started");
    let (ending, stats) = run::run(engine, owner, &claim, lost).await;
    heartbeat.abort();
    let outcome = match &ending {
        Ending::End(JobEnd::Succeeded) => "succeeded",
        Ending::End(JobEnd::Failed(_)) => "failed",
        Ending::Lost => "lost",
        Ending::Released => "released",
    };
    metrics::counter!("tidemark_jobs_total", "outcome" => outcome).increment(1);
    let result = match ending {
        Ending::End(end) => {
            if let JobEnd::Failed(problem) = &end {
                tracing::warn!(kind = %problem.kind, detail = %problem.detail, "job failed");
            }
            engine
                .patiently("recording the end of a job", || {
                    engine.store.finish_job(job, owner, &stats, end.clone())
                })
                .await
                .map(|_| ())
        }
        Ending::Released => {
            engine
                .patiently("handing a job back", || {
                    engine.store.release_job(job, owner)
                })
                .await
        }
        Ending::Lost => Ok(()),
    };
    match result {
        Ok(()) => tracing::info!(outcome, ?stats, "job ended"),
        // The lease runs out and another worker takes the job over.
        Err(e) => tracing::error!(error = %e, "recording the end of a job failed"),
    }
    // A rerun or a waiting reconcile may have queued the next job.
    engine.wake.notify_waiters();
}
