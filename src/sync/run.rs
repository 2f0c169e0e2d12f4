//! The page loop (docs/design.md §4): fetch a page, let the strategy read it, commit its
//! records, their changes and the advanced cursor in one transaction, and fetch the next
//! page while that commit runs. A stale stored cursor is reset and the same job reads
//! again from the beginning, once; a reconcile then sweeps the mirror for what it did
//! not see.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::Engine;
use crate::paginate::extract::Page;
use crate::paginate::request::RequestTemplate;
use crate::paginate::strategy::Strategy;
use crate::problem::{Problem, ProblemType};
use crate::spec::cursor::CursorWrite;
use crate::spec::job::{JobMode, JobStats, Resynced};
use crate::spec::pagination::Pagination;
use crate::store::{Claim, JobEnd, PageCommit, PageOutcome, PageRecord, ResyncCommit, StoreResult};
use crate::upstream::client::{SourceClient, UpstreamError};

/// How a run ended.
pub(super) enum Ending {
    /// Record this end on the job.
    End(JobEnd),
    /// The job is no longer ours (cancelled, or the lease was taken over): write nothing.
    Lost,
    /// Shutdown (the page in flight was committed), or a database outage (nothing of the
    /// page in flight was): the job goes back to the queue.
    Released,
}

/// Mirror keys per reconcile sweep batch.
const RECONCILE_BATCH: u32 = 1000;
/// Seen keys deleted per transaction once a reconcile has swept.
const FORGET_BATCH: u32 = 10_000;
/// How much of a stale reply's body a job's `resynced.reason` quotes.
const REASON_EXCERPT: usize = 200;

/// Runs one claimed job to its end. Returns the ending and the job's counters.
pub(super) async fn run(
    engine: &Arc<Engine>,
    owner: &str,
    claim: &Claim,
    mut lost: watch::Receiver<bool>,
) -> (Ending, JobStats) {
    let mut stats = claim.job.stats.clone();
    let ending = if claim.stream.parent.is_some() {
        super::children::run(engine, owner, claim, &mut lost, &mut stats).await
    } else {
        run_pages(engine, owner, claim, &mut lost, &mut stats).await
    };
    (ending, stats)
}

/// How one read of the listing ended.
enum Read {
    /// The last page was committed.
    Done,
    Ended(Ending),
    /// The upstream refused a request for good.
    Refused(UpstreamError),
}

/// Reads the listing (again from the beginning after a stale cursor, once), then, for a
/// reconcile, tombstones what it did not see.
async fn run_pages(
    engine: &Arc<Engine>,
    owner: &str,
    claim: &Claim,
    lost: &mut watch::Receiver<bool>,
    stats: &mut JobStats,
) -> Ending {
    let stream = &claim.stream;
    let client = engine.upstream.source(&claim.source);
    let template = match RequestTemplate::new(&claim.source.base_url, &stream.request) {
        Ok(template) => template,
        Err(problem) => return fail(problem),
    };
    let mut start = start_cursor(claim).cloned();
    // A job taken over after its resync does not resync again.
    let mut resynced = claim.job.resynced.is_some();
    loop {
        let stored = start
            .as_ref()
            .is_some_and(|cursor| holds_upstream_state(&stream.pagination, cursor));
        let reader = Reader {
            engine,
            owner,
            claim,
            client: &client,
            template: &template,
        };
        let error = match reader.read(lost, stats, start.as_ref()).await {
            Read::Done => break,
            Read::Ended(ending) => return ending,
            Read::Refused(error) => error,
        };
        let Some((status, stale)) = stale(&stream.pagination, &error) else {
            return fail(error.problem());
        };
        if resynced {
            return fail(Problem::new(
                ProblemType::UpstreamTokenStale,
                format!(
                    "{stale}, after this job had already reset the cursor and read from the beginning: it does not resync twice"
                ),
            ));
        }
        if !stored {
            // A run that started without a stored token or URL has nothing stale to reset.
            return fail(error.problem());
        }
        let resync = Resynced {
            status,
            reason: stale,
            // At the precision the databases keep, as every other time of a job.
            at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
        };
        tracing::warn!(status, reason = %resync.reason, "the upstream refused the stored cursor: reading from the beginning");
        let written = engine
            .patiently("recording a resync", || {
                engine.store.resync_job(ResyncCommit {
                    job: claim.job.id,
                    owner,
                    lease: engine.lease,
                    cursor_stream_id: claim.stream_id,
                    resynced: &resync,
                })
            })
            .await;
        match written {
            Ok(true) => {}
            Ok(false) => return Ending::Lost,
            Err(e) => return database_failed(&e),
        }
        metrics::counter!("tidemark_resyncs_total", "source" => claim.job.source.to_string())
            .increment(1);
        start = None;
        resynced = true;
    }
    // A deletions stream's records are tombstones; reconciling it means nothing more.
    if claim.job.mode == JobMode::Reconcile && stream.deletes.is_none() {
        match sweep(engine, owner, claim, stats).await {
            Ok(true) => {}
            Ok(false) => return Ending::Lost,
            Err(e) => return database_failed(&e),
        }
    }
    Ending::End(JobEnd::Succeeded)
}

/// What one read of the listing needs.
struct Reader<'a> {
    engine: &'a Arc<Engine>,
    owner: &'a str,
    claim: &'a Claim,
    client: &'a SourceClient,
    template: &'a RequestTemplate,
}

impl Reader<'_> {
    /// Reads the listing from `start` (`None`: the beginning) to its end, fetching on
    /// while pages commit: each commit takes every whole page that has arrived meanwhile
    /// (a group, bounded by [`GROUP_RECORDS`] and [`GROUP_BYTES`]) with the cursor after
    /// its last page.
    async fn read(
        &self,
        lost: &mut watch::Receiver<bool>,
        stats: &mut JobStats,
        start: Option<&Value>,
    ) -> Read {
        let stream = &self.claim.stream;
        let strategy = match Strategy::new(&stream.pagination, &stream.request, start) {
            Ok(strategy) => strategy,
            Err(e) => return Read::Ended(fail(e.problem())),
        };
        let (out, mut arrived) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(BUFFER_BYTES));
        let fetching = self.fetch_pages(strategy, lost.clone(), room, out);
        let committing = self.commit_pages(&mut arrived, stats);
        tokio::pin!(fetching, committing);
        tokio::select! {
            read = &mut committing => read,
            () = &mut fetching => committing.await,
        }
    }

    /// Fetches page after page and reads each with the strategy, handing them to
    /// [`Reader::commit_pages`] in order, until the last page, a refusal, the job's loss
    /// or shutdown. Waits while [`BUFFER_BYTES`] of pages are waiting for their commit.
    async fn fetch_pages(
        &self,
        mut strategy: Strategy,
        mut lost: watch::Receiver<bool>,
        room: Arc<Semaphore>,
        out: mpsc::UnboundedSender<Fetched>,
    ) {
        let Reader {
            engine,
            claim,
            client,
            template,
            ..
        } = *self;
        let stream = &claim.stream;
        // The next request depends only on the previous reply.
        loop {
            if engine.stopping() {
                return;
            }
            let fetching = client.fetch_page(
                template,
                strategy.ask(),
                &stream.records,
                strategy.pointers(),
            );
            let Some(fetched) = guarded(engine, &mut lost, fetching).await else {
                return;
            };
            let fetched = match fetched {
                Ok(fetched) => fetched,
                Err(e) => {
                    let counts = JobStats {
                        requests: u64::from(e.attempts()),
                        ..JobStats::default()
                    };
                    let _ = out.send(Fetched {
                        counts,
                        kind: Kind::Refused(e),
                    });
                    return;
                }
            };
            let mut counts = JobStats {
                requests: u64::from(fetched.attempts),
                pages: 1,
                records_seen: fetched.page.records.len() as u64,
                ..JobStats::default()
            };
            let before = strategy.shifts();
            let step = match strategy.advance(&fetched.page, &fetched.reply) {
                Ok(step) => step,
                Err(e) => {
                    let _ = out.send(Fetched {
                        counts,
                        kind: Kind::Failed(e.problem()),
                    });
                    return;
                }
            };
            let shifts = strategy.shifts().since(before);
            counts.step_backs = shifts.step_backs;
            counts.shifted = shifts.shifted;
            let done = step.done;
            let cursor = match (done, strategy.finish()) {
                (true, CursorWrite::Keep) | (false, _) => step.cursor,
                (true, last) => last,
            };
            let records = page_records(fetched.page, stream.deletes.is_some());
            let bytes = records.iter().map(PageRecord::size).sum::<usize>();
            let permits = u32::try_from(buffer_share(records.len(), bytes)).unwrap_or(u32::MAX);
            let Ok(room) = room.clone().acquire_many_owned(permits).await else {
                return;
            };
            let page = Ready {
                records,
                cursor,
                bytes,
                done,
                _room: room,
            };
            let sent = out.send(Fetched {
                counts,
                kind: Kind::Page(page),
            });
            if done || sent.is_err() {
                return;
            }
        }
    }

    /// Commits the pages [`Reader::fetch_pages`] hands over, in groups, until the last
    /// page is committed or something ends the read.
    async fn commit_pages(
        &self,
        arrived: &mut mpsc::UnboundedReceiver<Fetched>,
        stats: &mut JobStats,
    ) -> Read {
        let Reader {
            engine,
            owner,
            claim,
            ..
        } = *self;
        let mut carried = None;
        loop {
            let first = match carried.take() {
                Some(first) => first,
                None => match arrived.recv().await {
                    Some(first) => first,
                    None => return Read::Ended(interrupted(engine)),
                },
            };
            let mut group = Group::default();
            let mut end = None;
            let mut next = Some(first);
            while let Some(item) = next.take() {
                let page = match item.kind {
                    Kind::Page(page) if group.takes(&page) => page,
                    _ if group.pages > 0 => {
                        carried = Some(item);
                        break;
                    }
                    _ => {
                        end = Some(item);
                        break;
                    }
                };
                add_counts(stats, &item.counts);
                let done = page.done;
                group.push(page);
                if !done {
                    next = arrived.try_recv().ok();
                }
            }
            if group.pages > 0 {
                let committed =
                    commit(engine, owner, claim, &group.records, &group.cursor, stats).await;
                match committed {
                    Ok(Some(outcome)) => {
                        outcome.add_to(stats);
                        record_metrics(claim, &outcome, group.pages);
                    }
                    Ok(None) => return Read::Ended(Ending::Lost),
                    Err(e) => return Read::Ended(database_failed(&e)),
                }
                if group.done {
                    return Read::Done;
                }
                if engine.stopping() {
                    return Read::Ended(interrupted(engine));
                }
            }
            if let Some(end) = end {
                add_counts(stats, &end.counts);
                return match end.kind {
                    Kind::Refused(e) => Read::Refused(e),
                    Kind::Failed(problem) => Read::Ended(fail(problem)),
                    Kind::Page(_) => Read::Ended(interrupted(engine)),
                };
            }
        }
    }
}

/// Records per group commit, at most (a single page larger than that is committed
/// alone). Every transaction writes each index page it dirtied, and a page of random keys
/// dirties about one per record, so larger transactions write several times less: a
/// plain SQLite insert of such rows ran at 50,000 rows/s in transactions of 1,000 and
/// 98,000 in transactions of 20,000. Beyond that the gain is small, while a group holds
/// the one SQLite writer (about 0.2 s for 20,000 records here) and the memory of its
/// records.
const GROUP_RECORDS: usize = 20_000;
/// Bytes of record text (keys included) per group commit, at most: 16 MiB, 40,000 records
/// of the benchmark's 400 bytes, so that records of tens of kilobytes make groups of a
/// few hundred, not 20,000.
const GROUP_BYTES: usize = 16 << 20;
/// Bytes of pages fetched and not yet committed, at most (the group in commit and the
/// pages arriving for the next one): two groups. The reader waits beyond it.
const BUFFER_BYTES: usize = 2 * GROUP_BYTES;

/// A page's share of [`BUFFER_BYTES`]: its bytes, but at least a group's bytes over its
/// records for each record, so that the buffer holds at most two groups of records
/// however small they are (at 32 MiB of 400-byte records it held three, and the memory
/// of the next group's statements besides).
fn buffer_share(records: usize, bytes: usize) -> usize {
    bytes
        .max(records * (GROUP_BYTES / GROUP_RECORDS))
        .clamp(1, BUFFER_BYTES)
}

/// What the reader hands the committer: a page, or the end of the read, with the
/// counters its request(s) added.
struct Fetched {
    counts: JobStats,
    kind: Kind,
}

enum Kind {
    Page(Ready),
    /// The upstream refused a request for good.
    Refused(UpstreamError),
    /// The strategy refused a reply.
    Failed(Problem),
}

/// A page read by the strategy, waiting for its commit.
struct Ready {
    records: Vec<PageRecord>,
    /// The cursor after it.
    cursor: CursorWrite,
    bytes: usize,
    /// The last page of the run.
    done: bool,
    /// Its share of [`BUFFER_BYTES`], given back when its commit ends.
    _room: OwnedSemaphorePermit,
}

/// Consecutive pages committed in one transaction.
struct Group {
    records: Vec<PageRecord>,
    /// The cursor after the last page that moved it.
    cursor: CursorWrite,
    bytes: usize,
    pages: u64,
    done: bool,
    _room: Vec<OwnedSemaphorePermit>,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            records: Vec::new(),
            cursor: CursorWrite::Keep,
            bytes: 0,
            pages: 0,
            done: false,
            _room: Vec::new(),
        }
    }
}

impl Group {
    /// Whether `page` joins the group: the first page always does, another while the
    /// group stays within its bounds.
    fn takes(&self, page: &Ready) -> bool {
        self.pages == 0
            || (self.records.len() + page.records.len() <= GROUP_RECORDS
                && self.bytes + page.bytes <= GROUP_BYTES)
    }

    fn push(&mut self, page: Ready) {
        let Ready {
            mut records,
            cursor,
            bytes,
            done,
            _room,
        } = page;
        if self.records.is_empty() {
            self.records = records;
        } else {
            self.records.append(&mut records);
        }
        // What one commit per page would have left: the last page's cursor, or the last
        // one before it that moved (an offset run keeps it until its last page).
        if !matches!(cursor, CursorWrite::Keep) {
            self.cursor = cursor;
        }
        self.bytes += bytes;
        self.pages += 1;
        self.done = done;
        self._room.push(_room);
    }
}

/// Adds a page's request counters to the job's.
fn add_counts(stats: &mut JobStats, counts: &JobStats) {
    stats.requests += counts.requests;
    stats.pages += counts.pages;
    stats.records_seen += counts.records_seen;
    stats.step_backs += counts.step_backs;
    stats.shifted += counts.shifted;
}

/// Whether a stored cursor holds state the upstream issued and may forget: a token
/// stream's token, a link stream's URL (a delta link, a next link). Only a run that
/// starts from such state can meet a stale cursor.
fn holds_upstream_state(pagination: &Pagination, cursor: &Value) -> bool {
    match pagination {
        Pagination::Token(_) => match cursor.get("token") {
            Some(Value::String(token)) => !token.is_empty(),
            Some(Value::Number(_)) => true,
            _ => false,
        },
        Pagination::Link(_) => cursor.get("next").is_some_and(Value::is_string),
        _ => false,
    }
}

/// Why a refusal means the stored cursor is stale, if it does: a token stream's
/// `invalid_token` rule (`410 Gone` when it gives none), or a link stream's `410 Gone`.
fn stale(pagination: &Pagination, error: &UpstreamError) -> Option<(u16, String)> {
    let UpstreamError::Status { status, body, .. } = error else {
        return None;
    };
    let rule = match pagination {
        Pagination::Token(token) => {
            let rule = token.invalid_token();
            if !rule.matches(*status, body) {
                return None;
            }
            match &token.invalid_token {
                None => format!(
                    "{status} Gone, a token stream's default `invalid_token` rule (`{{\"status\": 410}}`)"
                ),
                Some(rule) if rule.body_contains.is_empty() => {
                    format!("{status}, the stream's `invalid_token` rule (status {status})")
                }
                Some(rule) => format!(
                    "{status} with `{}` in the body, the stream's `invalid_token` rule",
                    rule.body_contains
                ),
            }
        }
        Pagination::Link(_) if *status == 410 => {
            "410 Gone to a link stream's stored URL (a delta or next link the upstream no longer knows)".to_owned()
        }
        _ => return None,
    };
    Some((
        *status,
        format!("{rule}; the upstream said: {}", excerpt(body)),
    ))
}

/// The start of a reply's body, on one line.
fn excerpt(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(REASON_EXCERPT) {
        None if line.is_empty() => "(an empty body)".to_owned(),
        None => line,
        Some((at, _)) => format!("{}…", &line[..at]),
    }
}

/// Where a run starts: an incremental run from the cursor; a full run from the beginning
/// unless it is resuming itself (taken over after a crash); a reconcile always from the
/// beginning (what it saw before a crash stays recorded, see [`sweep`]: only a listing
/// from the start sees every key).
fn start_cursor(claim: &Claim) -> Option<&Value> {
    let cursor = claim.cursor.as_ref()?;
    match claim.job.mode {
        JobMode::Incremental => Some(&cursor.value),
        JobMode::Full => (cursor.job == Some(claim.job.id)).then_some(&cursor.value),
        JobMode::Reconcile => None,
    }
}

/// Runs `work` unless the job is lost or shutdown begins first (then `None`).
pub(super) async fn guarded<T>(
    engine: &Engine,
    lost: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        result = work => Some(result),
        _ = lost.wait_for(|l| *l) => None,
        _ = engine.stopped() => None,
    }
}

pub(super) fn interrupted(engine: &Engine) -> Ending {
    if engine.stopping() {
        Ending::Released
    } else {
        Ending::Lost
    }
}

pub(super) fn fail(problem: Problem) -> Ending {
    Ending::End(JobEnd::Failed(problem))
}

/// The page's records as the mirror takes them: a deletions stream's records, and records
/// matching the deleted predicate, are tombstones.
fn page_records(page: Page, deletions_stream: bool) -> Vec<PageRecord> {
    page.records
        .into_iter()
        .map(|item| {
            if deletions_stream || item.deleted {
                PageRecord::delete(item.key)
            } else {
                PageRecord::upsert(item.key, item.text)
            }
        })
        .collect()
}

/// Tombstones the live keys of the mirror the reconcile did not see, in batches, then
/// deletes the keys it saw. `false` when the job was lost meanwhile.
///
/// A crash anywhere here (or in the listing) is safe: the worker that takes the job over
/// lists again from the beginning, adding to the keys already recorded; a key recorded
/// before the crash was live upstream during this job, so keeping it is what a reconcile
/// that read it a moment later would do, and a tombstone already written stays one.
pub(super) async fn sweep(
    engine: &Engine,
    owner: &str,
    claim: &Claim,
    stats: &mut JobStats,
) -> Result<bool, crate::store::StoreError> {
    let mut after: Option<String> = None;
    loop {
        let batch = engine
            .patiently("listing the mirror's keys", || {
                engine.store.sweep_batch(
                    claim.target_stream_id,
                    claim.job.id,
                    after.as_deref(),
                    RECONCILE_BATCH,
                )
            })
            .await?;
        if !batch.unseen.is_empty() {
            let missing: Vec<PageRecord> =
                batch.unseen.into_iter().map(PageRecord::delete).collect();
            let committed =
                commit(engine, owner, claim, &missing, &CursorWrite::Keep, stats).await?;
            match committed {
                Some(outcome) => {
                    outcome.add_to(stats);
                    record_metrics(claim, &outcome, 1);
                }
                None => return Ok(false),
            }
        }
        match batch.last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    loop {
        let forgotten = engine
            .patiently("deleting a reconcile's seen keys", || {
                engine.store.forget_seen(claim.job.id, owner, FORGET_BATCH)
            })
            .await?;
        match forgotten {
            None => return Ok(false),
            Some(0) => return Ok(true),
            Some(_) => {}
        }
    }
}

/// Commits records, their changes, the cursor and the counters in one transaction,
/// riding out a database outage. Repeating a commit whose outcome was lost with the
/// connection is harmless: the same records with the same content make no change.
async fn commit(
    engine: &Engine,
    owner: &str,
    claim: &Claim,
    records: &[PageRecord],
    cursor: &CursorWrite,
    stats: &JobStats,
) -> StoreResult<Option<PageOutcome>> {
    engine
        .patiently("committing a page", || {
            engine.store.commit_page(PageCommit {
                job: claim.job.id,
                owner,
                lease: engine.lease,
                target_stream_id: claim.target_stream_id,
                cursor_stream_id: claim.stream_id,
                records,
                cursor,
                stats,
                child: None,
            })
        })
        .await
}

pub(super) fn record_metrics(claim: &Claim, outcome: &PageOutcome, pages: u64) {
    let source = claim.job.source.to_string();
    metrics::counter!("tidemark_pages_total", "source" => source.clone()).increment(pages);
    metrics::counter!("tidemark_page_commits_total", "source" => source).increment(1);
    for (name, n) in [
        ("inserted", outcome.inserted),
        ("updated", outcome.updated),
        ("unchanged", outcome.unchanged),
        ("deleted", outcome.deleted),
    ] {
        metrics::counter!("tidemark_records_total", "outcome" => name).increment(n);
    }
}

/// A store call failed for good. When the database stayed unreachable for a whole lease
/// the job goes back to the queue (it is not the job's fault; if even that write fails,
/// the lease runs out and a worker takes the job over once the database is back);
/// anything else fails the job.
pub(super) fn database_failed(error: &crate::store::StoreError) -> Ending {
    if error.is_transient() {
        tracing::warn!(error = %error, "the database stayed unreachable; handing the job back");
        return Ending::Released;
    }
    tracing::error!(error = %error, "committing a page failed");
    fail(Problem::new(
        ProblemType::DatabaseError,
        "committing a page failed; nothing of that page was written",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(records: usize, text: usize, cursor: CursorWrite, done: bool) -> Ready {
        let room = Arc::new(Semaphore::new(1));
        let records: Vec<PageRecord> = (0..records)
            .map(|i| PageRecord::upsert(i.to_string(), "x".repeat(text)))
            .collect();
        Ready {
            bytes: records.iter().map(PageRecord::size).sum(),
            records,
            cursor,
            done,
            _room: room
                .try_acquire_owned()
                .expect("a fresh semaphore has a permit"),
        }
    }

    fn at(n: i64) -> CursorWrite {
        CursorWrite::Set(serde_json::json!({ "page": n }))
    }

    #[test]
    fn a_group_takes_pages_up_to_its_record_bound() {
        let mut group = Group::default();
        let per_page = GROUP_RECORDS / 4;
        for n in 0..4 {
            let next = page(per_page, 10, at(n), false);
            assert!(group.takes(&next), "page {n} fits");
            group.push(next);
        }
        assert!(
            !group.takes(&page(1, 10, at(9), false)),
            "one record more does not"
        );
        assert_eq!(group.pages, 4);
        assert_eq!(group.records.len(), GROUP_RECORDS);
        assert!(matches!(&group.cursor, CursorWrite::Set(v) if v["page"] == 3));
    }

    #[test]
    fn a_group_takes_pages_up_to_its_byte_bound_but_always_one() {
        let mut group = Group::default();
        let large = page(2, GROUP_BYTES, at(1), false);
        assert!(group.takes(&large), "the first page however large");
        group.push(large);
        assert!(!group.takes(&page(1, 1, at(2), false)));
        let mut group = Group::default();
        group.push(page(10, GROUP_BYTES / 20, at(1), false));
        assert!(group.takes(&page(10, GROUP_BYTES / 40, at(2), false)));
        assert!(!group.takes(&page(10, GROUP_BYTES / 10, at(2), false)));
    }

    #[test]
    fn the_buffer_holds_two_groups_of_records_however_small() {
        let per_record = GROUP_BYTES / GROUP_RECORDS;
        assert_eq!(buffer_share(1000, 1000 * 10), 1000 * per_record);
        assert_eq!(buffer_share(1000, 1000 * 4000), 1000 * 4000);
        assert_eq!(buffer_share(3 * GROUP_RECORDS, 0), BUFFER_BYTES);
        assert_eq!(buffer_share(1, 2 * BUFFER_BYTES), BUFFER_BYTES);
        assert_eq!(buffer_share(0, 0), 1);
    }

    #[test]
    fn a_group_keeps_the_last_cursor_that_moved_and_ends_with_its_last_page() {
        let mut group = Group::default();
        group.push(page(1, 1, at(1), false));
        group.push(page(1, 1, CursorWrite::Keep, false));
        assert!(matches!(&group.cursor, CursorWrite::Set(v) if v["page"] == 1));
        assert!(!group.done);
        group.push(page(1, 1, CursorWrite::Clear, true));
        assert!(matches!(group.cursor, CursorWrite::Clear));
        assert!(group.done);
        let mut kept = Group::default();
        kept.push(page(1, 1, CursorWrite::Keep, false));
        assert!(matches!(kept.cursor, CursorWrite::Keep));
    }
}
