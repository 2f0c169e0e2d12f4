//! Named consumers (docs/design.md §5): a feed request may carry `consumer=<name>`; the
//! feed then records where that consumer read from (the `since` it came with: it has read
//! everything before it), with which `stream` filter and when, so that operators can see
//! which downstream service is behind. Recording never changes what the feed returns, and
//! never holds a feed request up: reads are noted in memory and one background task per
//! instance writes them, the latest read of each consumer once, however many came in
//! while the previous write was in flight.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use tokio::sync::mpsc;

use super::{Feed, FeedError, Position, Scope};
use crate::spec::consumer::{Consumer, ConsumerLag, ConsumerPosition};
use crate::spec::names::ConsumerName;
use crate::store::{ConsumerRead, Store, StoredConsumer};

/// Lag is counted up to this many changes: the count is an index range scan, so a
/// consumer far behind costs no more than this to report.
pub const LAG_CAP: u64 = 10_000;

/// How long the list of every consumer (for `/metrics`) is reused: scrapes that come
/// together (several Prometheus servers, or anyone: `/metrics` takes no token) cost one
/// read of the database.
const REUSE_EVERY_CONSUMER: Duration = Duration::from_secs(1);
/// Consumers read per query for [`Feed::every_consumer`].
const EVERY_CONSUMER_PAGE: u32 = 1000;

/// The last reading of every consumer, behind a lock that one reading holds at a time.
#[derive(Default)]
pub(super) struct EveryConsumer(tokio::sync::Mutex<Option<(Instant, Arc<Vec<Consumer>>)>>);

/// Reads noted and not yet written, at most one per consumer, and the one task that
/// writes them.
pub(super) struct Recorder {
    pending: Arc<Mutex<HashMap<String, ConsumerRead>>>,
    /// Wakes the writer; holds one wake-up at most (more would write nothing more).
    wake: mpsc::Sender<()>,
}

impl Recorder {
    /// Starts the writer, which ends (after writing what is still pending) when the
    /// recorder is dropped.
    pub(super) fn start(store: Arc<dyn Store>) -> Self {
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let (wake, woken) = mpsc::channel(1);
        tokio::spawn(write(store, pending.clone(), woken));
        Recorder { pending, wake }
    }

    fn note(&self, read: ConsumerRead) {
        match lock(&self.pending).entry(read.name.clone()) {
            Entry::Occupied(mut noted) if noted.get().read_at <= read.read_at => {
                noted.insert(read);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(read);
            }
        }
        // Full: a wake-up is already waiting, and that write takes this read too.
        let _ = self.wake.try_send(());
    }

    /// Drops a consumer's read not yet written, so that it is not written after the
    /// consumer was forgotten.
    fn forget(&self, name: &ConsumerName) {
        lock(&self.pending).remove(name.as_str());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map is whole between statements; a panic elsewhere cannot leave it half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the pending reads each time it is woken, all of them in one transaction.
async fn write(
    store: Arc<dyn Store>,
    pending: Arc<Mutex<HashMap<String, ConsumerRead>>>,
    mut woken: mpsc::Receiver<()>,
) {
    while woken.recv().await.is_some() {
        let reads: Vec<ConsumerRead> = std::mem::take(&mut *lock(&pending)).into_values().collect();
        if reads.is_empty() {
            continue;
        }
        // Not retried: each consumer's next read records it again.
        if let Err(e) = store.record_consumers(&reads).await {
            tracing::warn!(error = %e, consumers = reads.len(), "recording feed consumers failed");
        }
    }
}

impl Feed {
    /// Notes that `consumer` read `scope` from `since` (`None`: from the beginning) at
    /// `position`. Costs a map insert; the write happens in the background.
    pub(super) fn note(
        &self,
        consumer: &ConsumerName,
        scope: &Scope,
        since: Option<String>,
        position: i64,
    ) {
        self.recorder.note(ConsumerRead {
            name: consumer.to_string(),
            scope: scope.to_string(),
            since,
            position,
            read_at: Utc::now().trunc_subsecs(6),
        });
    }

    /// Notes a read from `since`, a position that came from a request's token.
    pub(super) fn note_since(&self, consumer: &ConsumerName, scope: &Scope, since: Position) {
        self.note(consumer, scope, self.since_token(scope, since), since.at);
    }

    /// Consumers ordered by name, after `after`, with their lag.
    pub async fn consumers(
        &self,
        after: Option<&ConsumerName>,
        limit: u32,
    ) -> Result<Vec<Consumer>, FeedError> {
        let stored = self
            .store
            .list_consumers(after.map(ConsumerName::as_str), limit)
            .await?;
        let mut consumers = Vec::with_capacity(stored.len());
        for consumer in stored {
            consumers.push(self.consumer_of(consumer).await?);
        }
        Ok(consumers)
    }

    /// One consumer with its lag; `None` when no consumer of this name has read the feed
    /// (since it was last forgotten).
    pub async fn consumer(&self, name: &ConsumerName) -> Result<Option<Consumer>, FeedError> {
        match self.store.get_consumer(name.as_str()).await? {
            Some(stored) => Ok(Some(self.consumer_of(stored).await?)),
            None => Ok(None),
        }
    }

    /// Every consumer with its lag, as read from the database at most
    /// [`REUSE_EVERY_CONSUMER`] ago; callers that come while it is read wait for that
    /// reading.
    pub async fn every_consumer(&self) -> Result<Arc<Vec<Consumer>>, FeedError> {
        let mut last = self.every_consumer.0.lock().await;
        if let Some((at, consumers)) = &*last
            && at.elapsed() < REUSE_EVERY_CONSUMER
        {
            return Ok(consumers.clone());
        }
        let mut all = Vec::new();
        loop {
            let page = self
                .consumers(all.last().map(|c: &Consumer| &c.name), EVERY_CONSUMER_PAGE)
                .await?;
            let full = page.len() == EVERY_CONSUMER_PAGE as usize;
            all.extend(page);
            if !full {
                break;
            }
        }
        let all = Arc::new(all);
        *last = Some((Instant::now(), all.clone()));
        Ok(all)
    }

    /// Forgets a consumer; `false` when there was none. Its next read records it again.
    pub async fn forget(&self, name: &ConsumerName) -> Result<bool, FeedError> {
        self.recorder.forget(name);
        let forgotten = self.store.delete_consumer(name.as_str()).await?;
        // Not shown by this instance's next scrape either.
        *self.every_consumer.0.lock().await = None;
        Ok(forgotten)
    }

    async fn consumer_of(&self, stored: StoredConsumer) -> Result<Consumer, FeedError> {
        let StoredConsumer {
            last,
            first_read_at,
        } = stored;
        let corrupt =
            |what: String| crate::store::StoreError::Corrupt(format!("stored consumer {what}"));
        let name = ConsumerName::try_from(last.name).map_err(corrupt)?;
        let scope = Scope::parse(Some(&last.scope))
            .map_err(|e| corrupt(format!("`{name}`'s filter: {e}")))?;
        // One more than the cap tells whether the count stopped there.
        let behind = self
            .store
            .count_changes(scope.streams(), last.position, LAG_CAP + 1)
            .await?;
        let seconds = (Utc::now() - last.read_at).num_milliseconds().max(0) as f64 / 1000.0;
        Ok(Consumer {
            name,
            position: ConsumerPosition {
                since: last.since,
                stream: (!scope.streams().is_empty()).then(|| scope.to_string()),
            },
            first_read_at,
            last_read_at: last.read_at,
            lag: ConsumerLag {
                changes: behind.min(LAG_CAP),
                exact: behind <= LAG_CAP,
                seconds,
            },
        })
    }
}
