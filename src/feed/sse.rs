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

use super::read::{Batch, change};
use super::{Feed, FeedError, Position, Scope, Waiter};
use crate::spec::change::Change;
use crate::spec::names::ConsumerName;
use crate::store::Commit;

/// Changes read at a time for a Server-Sent Events client.
const SSE_BATCH: u32 = 100;
/// How long the server keeps one Server-Sent Events response open; the client reconnects
/// with `Last-Event-ID`, which also spreads long-lived connections over instances.
pub const SSE_MAX: Duration = Duration::from_secs(300);
/// How often at most a named consumer's event stream records the last event it was sent.
const NOTE_EVERY: Duration = Duration::from_secs(1);

impl Feed {
    /// Every change after `since`, then each new one as it commits, for [`SSE_MAX`]: each
    /// with the token that resumes right after it. Checks `since` and takes a waiting slot
    /// before the first item, so those errors come before any event. A named `consumer` is
    /// recorded at `since` once it proved followable, then at the last event it was sent:
    /// at most every [`NOTE_EVERY`] while events are sent, and when the response ends.
    pub async fn follow(
        self: Arc<Self>,
        scope: Scope,
        since: Position,
        consumer: Option<ConsumerName>,
    ) -> Result<impl Stream<Item = Result<(String, Change), FeedError>> + Send + 'static, FeedError>
    {
        let waiter = self.waiter()?;
        let commits = self.store.notifier().subscribe();
        let batch = self.read(&scope, since, SSE_BATCH).await?;
        if let Some(consumer) = &consumer {
            self.note_since(consumer, &scope, since);
        }
        let mut follow = Follow {
            consumer,
            noted: Instant::now(),
            unnoted: None,
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
        follow.take(batch)?;
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
    /// Changes to send, each with its position and the token that resumes after it.
    pending: VecDeque<(i64, String, Change)>,
    commits: broadcast::Receiver<Commit>,
    deadline: Instant,
    failed: bool,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The named consumer following, if any.
    consumer: Option<ConsumerName>,
    /// When its position was last noted.
    noted: Instant,
    /// The last event sent to it, when sent after that: (position, token).
    unnoted: Option<(i64, String)>,
    _waiter: Waiter,
}

impl Drop for Follow {
    /// However the response ends (its time is up, the client left), the consumer's position
    /// is the last event it was sent.
    fn drop(&mut self) {
        self.note_unnoted();
    }
}

impl Follow {
    fn take(&mut self, batch: Batch) -> Result<(), FeedError> {
        for stored in &batch.changes {
            let token = self.feed.token(&self.scope, stored.seq, &batch);
            self.pending.push_back((stored.seq, token, change(stored)?));
        }
        self.position = batch.next();
        self.more = batch.has_more;
        self.ids = batch.ids;
        Ok(())
    }

    /// Keeps the consumer's new position to note, at once when [`NOTE_EVERY`] has passed
    /// since the last time.
    fn sent(&mut self, seq: i64, token: &str) {
        if self.consumer.is_some() {
            self.unnoted = Some((seq, token.to_owned()));
            if self.noted.elapsed() >= NOTE_EVERY {
                self.note_unnoted();
            }
        }
    }

    fn note_unnoted(&mut self) {
        if let (Some(consumer), Some((seq, token))) = (&self.consumer, self.unnoted.take()) {
            self.feed.note(consumer, &self.scope, Some(token), seq);
            self.noted = Instant::now();
        }
    }

    async fn next(mut self) -> Option<(Result<(String, Change), FeedError>, Self)> {
        loop {
            if self.failed {
                return None;
            }
            if let Some((seq, token, change)) = self.pending.pop_front() {
                self.sent(seq, &token);
                return Some((Ok((token, change)), self));
            }
            if !self.more {
                let woke = tokio::select! {
                    () = tokio::time::sleep_until(self.deadline) => return None,
                    () = &mut self.closed => return None,
                    // Caught up after a burst: its end is the position, not the event that
                    // happened to be sent a second after the last note.
                    () = tokio::time::sleep_until(self.noted + NOTE_EVERY),
                        if self.unnoted.is_some() =>
                    {
                        self.note_unnoted();
                        continue;
                    }
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
            let taken = match self.feed.read(&self.scope, self.position, SSE_BATCH).await {
                Ok(batch) => self.take(batch),
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                self.failed = true;
                return Some((Err(e), self));
            }
        }
    }
}
