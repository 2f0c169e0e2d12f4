//! Long-poll waiting: a request with nothing to hand out waits for a commit in its scope,
//! holding a waiting slot (their number is capped per instance) but no database
//! connection, with a little jitter on its end; shutdown ends every wait.

use std::time::Duration;

use rand::Rng;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::shared::Shared;
use super::{Feed, FeedError, FeedPage, Position, Scope};
use crate::spec::names::ConsumerName;

/// The longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a refused waiter is asked to wait before trying again.
const RETRY_AFTER_SECONDS: u32 = 2;

/// A feed request that holds a waiting slot; the slot is freed when it is dropped (also
/// when axum drops a handler whose client went away).
pub struct Waiter {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        metrics::gauge!("tidemark_feed_waiters").decrement(1.0);
    }
}

impl Feed {
    /// Ends every wait: long-polls answer with what they have, event streams end.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Feed::close`] was called.
    pub(super) fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            // An error means the feed is gone, which is closed too.
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// Takes a waiting slot, or refuses when every slot of this instance is taken.
    pub(super) fn waiter(&self) -> Result<Waiter, FeedError> {
        let permit =
            self.waiters
                .clone()
                .try_acquire_owned()
                .map_err(|_| FeedError::TooManyWaiters {
                    retry_after: RETRY_AFTER_SECONDS,
                })?;
        metrics::gauge!("tidemark_feed_waiters").increment(1.0);
        Ok(Waiter { _permit: permit })
    }

    /// A page of changes after `since`. With nothing to hand out and a `wait`, the
    /// request waits, holding no database connection, until a commit in its scope (then
    /// answers at once) or the end of the wait, shortened by up to a tenth so that many
    /// consumers do not come back in lockstep (then answers with no changes). A named
    /// `consumer`'s read is recorded once `since` proved followable, before any wait.
    /// Waiters woken by the same commit that ask the same thing share their reads and pages
    /// (`shared.rs`): one commit that wakes many of them costs one read.
    pub async fn poll(
        &self,
        scope: &Scope,
        since: Position,
        limit: u32,
        wait: Duration,
        consumer: Option<&ConsumerName>,
    ) -> Result<FeedPage, FeedError> {
        let notifier = self.store.notifier();
        // Subscribed before reading: a commit between the read and the wait still wakes.
        let mut commits = notifier.subscribe();
        // Its own read: a shared one may have begun before this request did.
        let mut read = Shared::new(self.read(scope, since, limit).await?);
        if let Some(consumer) = consumer {
            self.note_since(consumer, scope, since);
        }
        if !read.batch.changes.is_empty() || wait.is_zero() {
            return Ok(read.page(self, scope));
        }
        let _waiter = self.waiter()?;
        let deadline = Instant::now() + wait.mul_f64(rand::rng().random_range(0.9..=1.0));
        let closed = self.closed();
        tokio::pin!(closed);
        loop {
            let woke = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(read.page(self, scope)),
                () = &mut closed => return Ok(read.page(self, scope)),
                commit = commits.recv() => commit,
            };
            let (at, after) = match woke {
                Ok(commit) if read.batch.concerns(&commit) => (commit.at, commit.number),
                Ok(_) => continue,
                // Missed some commits: any of them may concern this scope.
                Err(RecvError::Lagged(_)) => (Instant::now(), notifier.announcements()),
                Err(RecvError::Closed) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = &mut closed => {}
                    }
                    return Ok(read.page(self, scope));
                }
            };
            read = self.shared_read(scope, since, limit, after).await?;
            if !read.batch.changes.is_empty() {
                metrics::histogram!("tidemark_feed_wake_seconds")
                    .record(at.elapsed().as_secs_f64());
                return Ok(read.page(self, scope));
            }
        }
    }
}
