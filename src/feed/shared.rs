//! Reads shared by long-polls that ask the same thing: when one commit wakes many waiters
//! of the same scope at the same position with the same limit, one snapshot read and one
//! page of JSON answer them all, instead of one read each through the pool.
//!
//! A read may only answer a woken waiter if its snapshot began after the commit that woke
//! it (or, when it lagged, after every commit announced so far). Each read notes the
//! notifier's announcement count before it begins, and a waiter joins a read, running or
//! done, only when that count reaches the announcement it must see; otherwise it starts a
//! new one. Such a snapshot also began after the waiter's request did (it heard of that
//! commit while waiting), so the answer is one the request could have had from a read of
//! its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use tokio::sync::OnceCell;

use super::read::Batch;
use super::{Feed, FeedError, FeedPage, Position, Scope};

/// Past this many remembered reads, the ones nobody holds any more are forgotten.
const PRUNE_AT: usize = 64;

/// What a shared read asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Ask {
    scope: Scope,
    from: Position,
    limit: u32,
}

/// One snapshot's batch and, once one of its readers needs it, its page.
pub(super) struct Shared {
    pub(super) batch: Batch,
    page: OnceLock<FeedPage>,
}

impl Shared {
    pub(super) fn new(batch: Batch) -> Arc<Self> {
        Arc::new(Shared {
            batch,
            page: OnceLock::new(),
        })
    }

    /// The page of this batch, written once for every request it answers.
    pub(super) fn page(&self, feed: &Feed, scope: &Scope) -> FeedPage {
        self.page
            .get_or_init(|| feed.page(scope, &self.batch))
            .clone()
    }
}

/// A read, started or done.
struct Flight {
    /// The announcement count before its snapshot began.
    seen: u64,
    /// `None` when it failed (each request then reads for itself).
    result: OnceCell<Option<Arc<Shared>>>,
}

/// The latest read of each [`Ask`] still held by a request.
#[derive(Default)]
pub(super) struct Flights(Mutex<Remembered>);

#[derive(Default)]
struct Remembered {
    reads: HashMap<Ask, Weak<Flight>>,
    prune_at: usize,
}

impl Flights {
    /// The latest read of `ask` if it began after `after` announcements, else a new one,
    /// which notes the count `announcements` gives as it is made.
    fn join(&self, ask: Ask, after: u64, announcements: impl FnOnce() -> u64) -> Arc<Flight> {
        let mut remembered = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = remembered.reads.get(&ask).and_then(Weak::upgrade)
            && flight.seen >= after
        {
            return flight;
        }
        let flight = Arc::new(Flight {
            seen: announcements(),
            result: OnceCell::new(),
        });
        remembered.reads.insert(ask, Arc::downgrade(&flight));
        if remembered.reads.len() > remembered.prune_at.max(PRUNE_AT) {
            remembered.reads.retain(|_, read| read.strong_count() > 0);
            remembered.prune_at = remembered.reads.len() * 2;
        }
        flight
    }
}

impl Feed {
    /// Up to `limit` changes after `from` (as [`Feed::read`]) for a waiter woken by the
    /// `after`-th commit announcement: from a snapshot that began after it, shared with the
    /// waiters that ask the same.
    pub(super) async fn shared_read(
        &self,
        scope: &Scope,
        from: Position,
        limit: u32,
        after: u64,
    ) -> Result<Arc<Shared>, FeedError> {
        let ask = Ask {
            scope: scope.clone(),
            from,
            limit,
        };
        let notifier = self.store.notifier();
        let flight = self.flights.join(ask, after, || notifier.announcements());
        let mut failed = None;
        let error = &mut failed;
        let result = flight
            .result
            .get_or_init(|| async move {
                match self.read(scope, from, limit).await {
                    Ok(batch) => Some(Shared::new(batch)),
                    Err(e) => {
                        *error = Some(e);
                        None
                    }
                }
            })
            .await;
        match (result, failed) {
            (Some(shared), _) => Ok(shared.clone()),
            (None, Some(e)) => Err(e),
            // Another request's read failed: this one reads for itself, for its own error.
            (None, None) => Ok(Shared::new(self.read(scope, from, limit).await?)),
        }
    }
}
