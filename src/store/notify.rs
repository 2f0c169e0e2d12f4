//! Wake-ups for waiting feed readers: the page commit path announces each commit that
//! changed something, and waiters whose scope it touches read the feed again.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::sync::broadcast;
use tokio::time::Instant;

/// Commits not yet received by a slow waiter; past this it learns that it lagged and
/// reads the feed again, which is all a wake-up asks of it anyway.
const CAPACITY: usize = 1024;

/// A commit that changed the feed.
#[derive(Debug, Clone, Copy)]
pub struct Commit {
    /// The stream whose records changed; `None` when unknown (a periodic re-check saw the
    /// head move without a notification): every waiter reads again.
    pub stream_id: Option<i64>,
    /// When this process learned of it.
    pub at: Instant,
    /// How many announcements were made up to this one: a read that began after
    /// [`Notifier::announcements`] reached this number sees the commit.
    pub number: u64,
}

/// Announces commits to the feed's waiters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    commits: broadcast::Sender<Commit>,
    /// The highest position announced so far, so the re-check stays quiet when the
    /// notifications already told everything.
    announced: AtomicI64,
    /// How many announcements were made, each counted before it is sent.
    sent: AtomicU64,
}

impl Default for Notifier {
    fn default() -> Self {
        let (commits, _) = broadcast::channel(CAPACITY);
        Notifier(Arc::new(Inner {
            commits,
            announced: AtomicI64::new(0),
            sent: AtomicU64::new(0),
        }))
    }
}

impl Notifier {
    /// A commit of changes to `stream_id` whose last position is `seq` (in this process,
    /// or relayed from another instance).
    pub fn committed(&self, stream_id: i64, seq: i64) {
        self.0.announced.fetch_max(seq, Ordering::Relaxed);
        self.send(Some(stream_id));
    }

    /// The feed head as a periodic re-check read it: when it is past everything announced
    /// (a lost notification, another process), every waiter reads again.
    pub fn head_is(&self, head: i64) {
        let before = self.0.announced.fetch_max(head, Ordering::Relaxed);
        if head > before {
            self.send(None);
        }
    }

    fn send(&self, stream_id: Option<i64>) {
        // Counted before it is sent: whoever receives it, or reads the count, learns of the
        // commit after it was made.
        let number = self.0.sent.fetch_add(1, Ordering::SeqCst) + 1;
        // An error only means that nobody is waiting.
        let _ = self.0.commits.send(Commit {
            stream_id,
            at: Instant::now(),
            number,
        });
    }

    /// How many commits were announced so far. Every commit of the first `n` announcements
    /// is visible to a snapshot that begins after this returned `n` or more.
    pub fn announcements(&self) -> u64 {
        self.0.sent.load(Ordering::SeqCst)
    }

    /// Commits from now on. Subscribe before reading the feed, so a commit that lands
    /// between the read and the wait is not missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Commit> {
        self.0.commits.subscribe()
    }
}
