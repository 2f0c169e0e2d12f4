//! Background work: the scheduler queues jobs, workers claim them (with a lease they keep
//! alive by heartbeats; a job whose instance is gone is taken over at once) and run the
//! page loop (a child stream's job drains its queue of parents instead, `children.rs`),
//! and the job history is purged. Data flows one way: job queue → worker →
//! upstream client → strategy → store, one transaction per page.

mod children;
mod history;
mod run;
mod scheduler;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::store::{InstanceId, Store, StoreResult};
use crate::upstream::client::Upstream;

/// What the workers and the scheduler share.
pub struct Engine {
    store: Arc<dyn Store>,
    upstream: Upstream,
    /// Woken when a job is queued in this process, so an idle worker starts at once.
    wake: Notify,
    /// This process, as job leases name it.
    instance: InstanceId,
    lease: chrono::TimeDelta,
    stopping: watch::Receiver<bool>,
}

/// The running background tasks; [`Workers::stop`] ends them gracefully.
pub struct Workers {
    engine: Arc<Engine>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// How often idle workers look for jobs queued by another instance, and how often the
/// scheduler looks for due streams.
const POLL: Duration = Duration::from_secs(1);

/// How often the workers' instance looks for jobs whose instance is gone (and, finding
/// some, ends their leases; while any job waits to be taken over, whoever ended its lease,
/// it wakes its idle workers): what a takeover waits for, when a worker is free.
const LIVENESS_POLL: Duration = Duration::from_millis(250);

/// How the background work runs.
pub struct Settings {
    /// Concurrent workers (0: none, and no scheduler).
    pub workers: usize,
    /// How long a claim on a job lasts without a heartbeat.
    pub lease: Duration,
    /// How long finished jobs are kept (the newest of each stream stay longer).
    pub job_retention: Duration,
}

impl Workers {
    /// Starts the workers, the scheduler and the job history's purge for `instance`.
    pub fn start(
        store: Arc<dyn Store>,
        upstream: Upstream,
        instance: InstanceId,
        settings: Settings,
    ) -> Self {
        let (stop, stopping) = watch::channel(false);
        let engine = Arc::new(Engine {
            store,
            upstream,
            wake: Notify::new(),
            instance,
            lease: chrono::TimeDelta::from_std(settings.lease)
                .unwrap_or(chrono::TimeDelta::seconds(30)),
            stopping,
        });
        let mut tasks = JoinSet::new();
        for index in 0..settings.workers {
            tasks.spawn(worker::work(engine.clone(), index));
        }
        if settings.workers > 0 {
            tasks.spawn(scheduler::schedule(engine.clone()));
            tasks.spawn(worker::take_over_the_gone(engine.clone()));
        }
        tasks.spawn(history::purge(engine.clone(), settings.job_retention));
        Workers {
            engine,
            stop,
            tasks,
        }
    }

    /// Tells idle workers that a job was queued.
    pub fn waker(&self) -> Waker {
        Waker(Some(self.engine.clone()))
    }

    /// Stops claiming, lets every worker commit the page in flight and hand its job back
    /// to the queue, then returns.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a background task panicked");
            }
        }
    }
}

/// Wakes idle workers of this process after a job is queued.
#[derive(Clone, Default)]
pub struct Waker(Option<Arc<Engine>>);

impl Waker {
    pub fn wake(&self) {
        if let Some(engine) = &self.0 {
            engine.wake.notify_waiters();
        }
    }
}

impl Engine {
    fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves when shutdown begins.
    async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// Runs a store call again while the database is unreachable, so that an outage
    /// pauses a job instead of failing it: with a growing pause, for up to one lease
    /// (past it another worker may own the job: the commit fence would refuse it anyway)
    /// or until shutdown begins. Other errors, and the last transient one, are returned.
    async fn patiently<T, F>(&self, what: &str, mut call: impl FnMut() -> F) -> StoreResult<T>
    where
        F: Future<Output = StoreResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.lease.to_std().unwrap_or(POLL);
        let mut pause = Duration::from_millis(100);
        loop {
            match call().await {
                Err(e)
                    if e.is_transient()
                        && !self.stopping()
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::warn!(error = %e, "{what}: the database is unreachable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = self.stopped() => {}
                    }
                    pause = (pause * 2).min(POLL);
                }
                result => return result,
            }
        }
    }
}
