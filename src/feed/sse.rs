//! Following the feed for a Server-Sent Events response: every change after a position,
//! then each new one as it commits, until the response's time is up or the feed closes.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::read::Batch;
use super::{Feed, FeedError, Position, Scope, Waiter};
use crate::spec::change::Change;
use crate::store::Commit;

/// Changes read at a time for a Server-Sent Events client.
const SSE_BATCH: u32 = 100;
/// How long the server keeps one Server-Sent Events response open; the client reconnects
/// with `Last-Event-ID`, which also spreads long-lived connections over instances.
pub const SSE_MAX: Duration = Duration::from_secs(300);

impl Feed {
    /// Every change after `since`, then each new one as it commits, for [`SSE_MAX`]: each
    /// with the token that resumes right after it. Checks `since` and takes a waiting slot
    /// before the first item, so those errors come before any event.
    pub async fn follow(
        self: Arc<Self>,
        scope: Scope,
        since: Position,
    ) -> Result<impl Stream<Item = Result<(String, Change), FeedError>> + Send + 'static, FeedError>
    {
        let waiter = self.waiter()?;
        let commits = self.store.notifier().subscribe();
        let batch = self.read(&scope, since, SSE_BATCH).await?;
        let mut follow = Follow {
            closed: Box::pin(self.closed()),
            feed: self,
            scope,
            position: since,
            more: false,
            ids: Vec::new(),
            pending: VecDeque::new(),
            commits,
            deadline: Instant::now() + SSE_MAX,
            failed: false,
            _waiter: waiter,
        };
        follow.take(batch);
        Ok(futures_util::stream::unfold(follow, Follow::next))
    }
}

/// The state of one Server-Sent Events response.
struct Follow {
    feed: Arc<Feed>,
    scope: Scope,
    /// Where the next read starts.
    position: Position,
    /// The last read was cut at its limit: read again without waiting.
    more: bool,
    ids: Vec<i64>,
    pending: VecDeque<(String, Change)>,
    commits: broadcast::Receiver<Commit>,
    deadline: Instant,
    failed: bool,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    _waiter: Waiter,
}

impl Follow {
    fn take(&mut self, batch: Batch) {
        for (seq, change) in &batch.changes {
            let token = self.feed.token(&self.scope, *seq, &batch);
            self.pending.push_back((token, change.clone()));
        }
        self.position = batch.next();
        self.more = batch.has_more;
        self.ids = batch.ids;
    }

    async fn next(mut self) -> Option<(Result<(String, Change), FeedError>, Self)> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(item) = self.pending.pop_front() {
                return Some((Ok(item), self));
            }
            if !self.more {
                let woke = tokio::select! {
                    () = tokio::time::sleep_until(self.deadline) => return None,
                    () = &mut self.closed => return None,
                    commit = self.commits.recv() => commit,
                };
                match woke {
                    Ok(Commit {
                        stream_id: Some(id),
                        ..
                    }) if !self.ids.is_empty() && !self.ids.contains(&id) => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return None,
                }
            } else if Instant::now() >= self.deadline {
                return None;
            }
            match self.feed.read(&self.scope, self.position, SSE_BATCH).await {
                Ok(batch) => self.take(batch),
                Err(e) => {
                    self.failed = true;
                    return Some((Err(e), self));
                }
            }
        }
    }
}
