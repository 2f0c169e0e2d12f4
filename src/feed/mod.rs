//! The change feed (docs/design.md §5): reads of the compacted mirror through opaque tokens,
//! long-polls woken by commits, Server-Sent Events, and tombstone retention. The commits
//! that wake waiting readers are announced by the store (`store/notify.rs`).
//!
//! - `token.rs`: the token codec, the text of `since` and `until`.
//! - `scope.rs`: the `stream` filter of a request, and the hash of it a token carries.
//! - `position.rs`: where a read starts: `since` decoded against this database's epoch
//!   and the request's scope, checked against each snapshot's streams, head and purge
//!   horizon; tokens issued, and the "from now on" token.
//! - `read.rs`: one feed read, a snapshot turned into a page of changes.
//! - `shared.rs`: one read shared by the long-polls that one commit wakes and that ask the
//!   same thing.
//! - `wait.rs`: long-poll waiting, the cap on waiting requests, the jitter, and shutdown
//!   ending every wait.
//! - `sse.rs`: the Server-Sent Events follow loop.
//! - `consumers.rs`: named consumers: their reads recorded in the background, their
//!   position and lag.
//! - `tasks.rs`: the background tasks: commit relay, head re-check, tombstone retention
//!   purge.
//!
//! This file: the [`Feed`] of one instance, made from the epoch and token secret stored
//! with the database, and [`FeedError`].

mod consumers;
mod position;
mod read;
mod scope;
mod shared;
mod sse;
mod tasks;
pub mod token;
mod wait;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use tokio::sync::{Semaphore, watch};

pub use consumers::LAG_CAP;
pub use position::Position;
pub use read::FeedPage;
pub use scope::Scope;
pub use sse::SSE_MAX;
pub use tasks::background;
pub use wait::{MAX_WAIT, Waiter};

use crate::spec::change::StreamRef;
use crate::store::{Store, StoreError};
use consumers::{EveryConsumer, Recorder};
use shared::Flights;
use token::{Epoch, TokenKey};

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

/// The feed of one instance.
pub struct Feed {
    store: Arc<dyn Store>,
    key: TokenKey,
    epoch: Epoch,
    waiters: Arc<Semaphore>,
    /// Set at shutdown: waiting requests answer at once, event streams end, so that the
    /// server's graceful shutdown does not wait for them.
    closing: watch::Sender<bool>,
    /// Named consumers' reads, written in the background.
    recorder: Recorder,
    /// The last reading of every consumer, for scrapes.
    every_consumer: EveryConsumer,
    /// Reads that requests asking the same thing share.
    flights: Flights,
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
            recorder: Recorder::start(store.clone()),
            every_consumer: EveryConsumer::default(),
            flights: Flights::default(),
            store,
            epoch: Epoch(decode_setting(EPOCH_SETTING, &epoch)?),
            key: TokenKey::new(decode_setting(KEY_SETTING, &secret)?),
            waiters: Arc::new(Semaphore::new(max_waiters.min(Semaphore::MAX_PERMITS))),
            closing: watch::Sender::new(false),
        })
    }
}

fn decode_setting<const N: usize>(name: &str, text: &str) -> Result<[u8; N], StoreError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(format!("setting {name} is not {N} base64 bytes")))
}
