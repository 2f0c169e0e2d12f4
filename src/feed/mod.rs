//! The change feed (docs/design.md §5): reads of the compacted mirror through opaque tokens,
//! long-polls woken by commits, Server-Sent Events, and tombstone retention.

pub mod token;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::Stream;
use rand::Rng;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::spec::change::{Change, ChangePage, Op, StreamRef};
use crate::store::Commit;
use crate::store::{FeedQuery, FeedSnapshot, Store, StoreError, StoredChange};
use token::{Epoch, FeedToken, InvalidToken, ScopeHash, TokenKey};

/// Streams one `stream` filter may name.
const MAX_SCOPE: usize = 50;
/// The longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often the head is read again, for commits whose notification never came (another
/// process on SQLite; a PostgreSQL notification lost while the listener reconnected).
const RECHECK: Duration = Duration::from_millis(1500);
/// Changes read at a time for a Server-Sent Events client.
const SSE_BATCH: u32 = 100;
/// How long the server keeps one Server-Sent Events response open; the client reconnects
/// with `Last-Event-ID`, which also spreads long-lived connections over instances.
pub const SSE_MAX: Duration = Duration::from_secs(300);
/// How long a refused waiter is asked to wait before trying again.
const RETRY_AFTER_SECONDS: u32 = 2;

/// Settings keys of the values made at first start.
const EPOCH_SETTING: &str = "feed_epoch";
const KEY_SETTING: &str = "feed_token_key";

/// Why a feed request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(
        "`since` is not a token this server issued: pass an `until` value unchanged, or \
         nothing to read from the beginning"
    )]
    InvalidSince,
    #[error(
        "`since` was issued for another `stream` filter: pass the same filter as when it was \
         issued"
    )]
    ScopeMismatch,
    /// The token is valid but can no longer be followed without missing changes.
    #[error("{0}; read again from a blank `since`")]
    Expired(String),
    #[error("there is no stream `{0}`")]
    NoStream(StreamRef),
    /// The `stream` filter does not parse.
    #[error("{0}")]
    InvalidFilter(String),
    #[error("too many requests are waiting for changes on this instance; retry shortly")]
    TooManyWaiters { retry_after: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A normalized `stream` filter: sorted, without duplicates; empty for the whole feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Vec<StreamRef>);

impl Scope {
    /// Reads `source/stream[,source/stream...]`; missing or blank is the whole feed.
    pub fn parse(filter: Option<&str>) -> Result<Self, FeedError> {
        let mut streams = Vec::new();
        for item in filter.unwrap_or_default().split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            streams.push(
                item.parse::<StreamRef>()
                    .map_err(FeedError::InvalidFilter)?,
            );
        }
        streams.sort();
        streams.dedup();
        if streams.len() > MAX_SCOPE {
            return Err(FeedError::InvalidFilter(format!(
                "a filter names at most {MAX_SCOPE} streams"
            )));
        }
        Ok(Scope(streams))
    }

    pub fn streams(&self) -> &[StreamRef] {
        &self.0
    }

    fn hash(&self) -> ScopeHash {
        let mut hasher = Sha256::new();
        hasher.update(b"tidemark feed scope 1\n");
        for stream in &self.0 {
            hasher.update(stream.to_string().as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&digest[..8]);
        ScopeHash(hash)
    }
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Changes after this position.
    at: i64,
    /// The snapshot that handed the position out; `None` for the beginning.
    issued: Option<Issued>,
}

/// What the snapshot that handed out a position said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Issued {
    head: i64,
    horizon: i64,
}

impl Position {
    const START: Position = Position {
        at: 0,
        issued: None,
    };
}

/// One snapshot's changes after a position.
struct Batch {
    head: i64,
    horizon: i64,
    /// In position order, with their positions.
    changes: Vec<(i64, Change)>,
    has_more: bool,
    /// The ids of the scope's streams (empty: every stream).
    ids: Vec<i64>,
}

impl Batch {
    /// Whether `commit` may have changed something this read would see.
    fn concerns(&self, commit: &Commit) -> bool {
        match commit.stream_id {
            Some(id) => self.ids.is_empty() || self.ids.contains(&id),
            None => true,
        }
    }

    /// Where the next read starts: after the last change handed out, or at the head when
    /// everything up to it was handed out.
    fn next(&self) -> Position {
        let at = match (self.has_more, self.changes.last()) {
            (true, Some((seq, _))) => *seq,
            _ => self.head,
        };
        Position {
            at,
            issued: Some(Issued {
                head: self.head,
                horizon: self.horizon,
            }),
        }
    }
}

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

/// The feed of one instance.
pub struct Feed {
    store: Arc<dyn Store>,
    key: TokenKey,
    epoch: Epoch,
    waiters: Arc<Semaphore>,
    /// Set at shutdown: waiting requests answer at once, event streams end, so that the
    /// server's graceful shutdown does not wait for them.
    closing: watch::Sender<bool>,
}

impl Feed {
    /// Loads the feed epoch and token secret, making them if this database has none yet.
    pub async fn load(store: Arc<dyn Store>, max_waiters: usize) -> Result<Self, StoreError> {
        let mut rng = rand::rng();
        let epoch: [u8; 8] = rng.random();
        let secret: [u8; 32] = rng.random();
        let epoch = store
            .setting_or_insert(EPOCH_SETTING, &URL_SAFE_NO_PAD.encode(epoch))
            .await?;
        let secret = store
            .setting_or_insert(KEY_SETTING, &URL_SAFE_NO_PAD.encode(secret))
            .await?;
        Ok(Feed {
            store,
            epoch: Epoch(decode_setting(EPOCH_SETTING, &epoch)?),
            key: TokenKey::new(decode_setting(KEY_SETTING, &secret)?),
            waiters: Arc::new(Semaphore::new(max_waiters.min(Semaphore::MAX_PERMITS))),
            closing: watch::Sender::new(false),
        })
    }

    /// Ends every wait: long-polls answer with what they have, event streams end.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Feed::close`] was called.
    fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            // An error means the feed is gone, which is closed too.
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// Checks a `since` token against this database and the request's filter. What only
    /// a snapshot can tell (retention, removed streams) is checked by each read.
    pub fn since(&self, text: Option<&str>, scope: &Scope) -> Result<Position, FeedError> {
        let text = text.map(str::trim).unwrap_or_default();
        if text.is_empty() {
            return Ok(Position::START);
        }
        let token = self.key.decode(text).map_err(|e| match e {
            // Its secret is another database's: this one cannot check it, but a token
            // that claims another epoch could at most make its holder start over.
            InvalidToken::Unauthenticated { epoch } if epoch != self.epoch => FeedError::Expired(
                "`since` was issued by another database (its feed epoch differs)".into(),
            ),
            _ => FeedError::InvalidSince,
        })?;
        if token.epoch != self.epoch {
            return Err(FeedError::Expired(
                "`since` was issued by another database (its feed epoch differs)".into(),
            ));
        }
        if token.scope != scope.hash() {
            return Err(FeedError::ScopeMismatch);
        }
        Ok(Position {
            at: token.position,
            issued: Some(Issued {
                head: token.head,
                horizon: token.horizon,
            }),
        })
    }

    /// The token of `position` in the snapshot `batch` was read from.
    fn token(&self, scope: &Scope, position: i64, batch: &Batch) -> String {
        self.key.encode(&FeedToken {
            epoch: self.epoch,
            scope: scope.hash(),
            position,
            head: batch.head,
            horizon: batch.horizon,
        })
    }

    /// A token for "from now on" in `scope`.
    pub async fn head(&self, scope: &Scope) -> Result<String, FeedError> {
        let batch = self.read(scope, Position::START, 0).await?;
        Ok(self.token(scope, batch.head, &batch))
    }

    /// Reads one snapshot: up to `limit` changes after `from`, after checking that the
    /// position can still be followed without missing anything.
    async fn read(&self, scope: &Scope, from: Position, limit: u32) -> Result<Batch, FeedError> {
        let snapshot = self
            .store
            .read_feed(FeedQuery {
                streams: scope.streams(),
                after: from.at,
                // One more than asked tells whether more are waiting.
                limit: if limit == 0 { 0 } else { limit + 1 },
            })
            .await?;
        metrics::gauge!("tidemark_feed_head").set(snapshot.head as f64);
        let FeedSnapshot {
            head,
            horizon,
            streams,
            mut changes,
        } = snapshot;
        let mut ids = Vec::with_capacity(streams.len());
        for (name, found) in scope.streams().iter().zip(streams) {
            match (found, from.issued) {
                (None, None) => return Err(FeedError::NoStream(name.clone())),
                (None, Some(_)) => {
                    return Err(FeedError::Expired(format!(
                        "stream `{name}` of this token's filter no longer exists"
                    )));
                }
                (Some(stream), Some(issued)) if stream.created_seq > issued.head => {
                    return Err(FeedError::Expired(format!(
                        "stream `{name}` was removed and created again since this token was issued"
                    )));
                }
                (Some(stream), _) => ids.push(stream.id),
            }
        }
        // Tombstones purged before the holder started reading were never its concern; a
        // purge since its last read that reached past its position may have taken a
        // deletion it still needs.
        if let Some(issued) = from.issued
            && horizon > issued.horizon
            && horizon > from.at
        {
            return Err(FeedError::Expired(
                "deletions after this token's position were purged (tombstone retention)".into(),
            ));
        }
        if from.at > head {
            return Err(FeedError::Expired(
                "this token is ahead of the feed: the database was restored or reset".into(),
            ));
        }
        let has_more = changes.len() > limit as usize;
        changes.truncate(limit as usize);
        Ok(Batch {
            head,
            horizon,
            changes: changes
                .into_iter()
                .map(|c| Ok((c.seq, change(c)?)))
                .collect::<Result<_, StoreError>>()?,
            has_more,
            ids,
        })
    }

    fn page(&self, scope: &Scope, batch: Batch) -> ChangePage {
        let next = batch.next();
        ChangePage {
            until: self.token(scope, next.at, &batch),
            has_more: batch.has_more,
            results: batch.changes.into_iter().map(|(_, c)| c).collect(),
        }
    }

    /// Takes a waiting slot, or refuses when every slot of this instance is taken.
    fn waiter(&self) -> Result<Waiter, FeedError> {
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
    /// consumers do not come back in lockstep (then answers with no changes).
    pub async fn poll(
        &self,
        scope: &Scope,
        since: Position,
        limit: u32,
        wait: Duration,
    ) -> Result<ChangePage, FeedError> {
        // Subscribed before reading: a commit between the read and the wait still wakes.
        let mut commits = self.store.notifier().subscribe();
        let mut batch = self.read(scope, since, limit).await?;
        if !batch.changes.is_empty() || wait.is_zero() {
            return Ok(self.page(scope, batch));
        }
        let _waiter = self.waiter()?;
        let deadline = Instant::now() + wait.mul_f64(rand::rng().random_range(0.9..=1.0));
        let closed = self.closed();
        tokio::pin!(closed);
        loop {
            let woke = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(self.page(scope, batch)),
                () = &mut closed => return Ok(self.page(scope, batch)),
                commit = commits.recv() => commit,
            };
            let at = match woke {
                Ok(commit) if batch.concerns(&commit) => commit.at,
                Ok(_) => continue,
                // Missed some commits: any of them may concern this scope.
                Err(RecvError::Lagged(_)) => Instant::now(),
                Err(RecvError::Closed) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = &mut closed => {}
                    }
                    return Ok(self.page(scope, batch));
                }
            };
            batch = self.read(scope, since, limit).await?;
            if !batch.changes.is_empty() {
                metrics::histogram!("tidemark_feed_wake_seconds")
                    .record(at.elapsed().as_secs_f64());
                return Ok(self.page(scope, batch));
            }
        }
    }

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

/// A stored change as the feed shows it.
fn change(stored: StoredChange) -> Result<Change, StoreError> {
    let record = stored
        .body
        .map(RawValue::from_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("stored record {}: {e}", stored.key)))?;
    Ok(Change {
        stream: stored.stream.to_string(),
        key: stored.key,
        op: if record.is_some() {
            Op::Upsert
        } else {
            Op::Delete
        },
        rev: stored.rev,
        record,
        changed_at: stored.changed_at,
    })
}

fn decode_setting<const N: usize>(name: &str, text: &str) -> Result<[u8; N], StoreError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("setting {name} is not {N} base64 bytes")))
}

/// The feed's background work: relaying other instances' commits, re-checking the head,
/// and purging tombstones older than `retention`. Stops when the set is dropped.
pub fn background(store: Arc<dyn Store>, retention: Duration) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let relaying = store.clone();
    tasks.spawn(async move {
        loop {
            if let Err(e) = relaying.relay_commits().await {
                tracing::warn!(error = %e, "relaying feed commits failed; retrying");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let checking = store.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(RECHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match checking.feed_head().await {
                Ok(head) => {
                    metrics::gauge!("tidemark_feed_head").set(head as f64);
                    checking.notifier().head_is(head);
                }
                Err(e) => tracing::warn!(error = %e, "reading the feed head failed"),
            }
        }
    });
    tasks.spawn(async move {
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
    });
    tasks
}
