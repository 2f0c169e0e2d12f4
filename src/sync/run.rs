//! The page loop (docs/design.md §4): fetch a page, let the strategy read it, commit its
//! records, their changes and the advanced cursor in one transaction, and fetch the next
//! page while that commit runs. A stale stored cursor is reset and the same job reads
//! again from the beginning, once; a reconcile then sweeps the mirror for what it did
//! not see.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

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
    /// Reads the listing from `start` (`None`: the beginning) to its end, one commit per
    /// page, fetching the next page while the last one commits.
    async fn read(
        &self,
        lost: &mut watch::Receiver<bool>,
        stats: &mut JobStats,
        start: Option<&Value>,
    ) -> Read {
        let Reader {
            engine,
            owner,
            claim,
            client,
            template,
        } = *self;
        let stream = &claim.stream;
        let mut strategy = match Strategy::new(&stream.pagination, &stream.request, start) {
            Ok(strategy) => strategy,
            Err(e) => return Read::Ended(fail(e.problem())),
        };
        let fetch_first = client.fetch_page(
            template,
            strategy.ask(),
            &stream.records,
            strategy.pointers(),
        );
        let Some(mut next) = guarded(engine, lost, fetch_first).await else {
            return Read::Ended(interrupted(engine));
        };
        loop {
            let fetched = match next {
                Ok(fetched) => fetched,
                Err(e) => {
                    stats.requests += u64::from(e.attempts());
                    return Read::Refused(e);
                }
            };
            stats.requests += u64::from(fetched.attempts);
            stats.pages += 1;
            stats.records_seen += fetched.page.records.len() as u64;
            let before = strategy.shifts();
            let step = match strategy.advance(&fetched.page, &fetched.reply) {
                Ok(step) => step,
                Err(e) => return Read::Ended(fail(e.problem())),
            };
            let shifts = strategy.shifts().since(before);
            stats.step_backs += shifts.step_backs;
            stats.shifted += shifts.shifted;
            let done = step.done;
            let cursor = match (done, strategy.finish()) {
                (true, CursorWrite::Keep) | (false, _) => step.cursor,
                (true, last) => last,
            };
            let records = page_records(fetched.page, stream.deletes.is_some());
            let commit = commit(engine, owner, claim, &records, &cursor, stats);
            // The next request depends only on this reply: fetch it while the page commits.
            let ask = (!done).then(|| strategy.ask());
            let prefetch = async {
                match ask {
                    Some(ask) if !engine.stopping() => {
                        let pointers = strategy.pointers();
                        let fetching = client.fetch_page(template, ask, &stream.records, pointers);
                        guarded(engine, &mut lost.clone(), fetching).await
                    }
                    _ => None,
                }
            };
            let (committed, prefetched) = tokio::join!(commit, prefetch);
            match committed {
                Ok(Some(outcome)) => {
                    outcome.add_to(stats);
                    record_metrics(claim, &outcome);
                }
                Ok(None) => return Read::Ended(Ending::Lost),
                Err(e) => return Read::Ended(database_failed(&e)),
            }
            if done {
                return Read::Done;
            }
            match prefetched {
                Some(fetched) if !engine.stopping() => next = fetched,
                _ => return Read::Ended(interrupted(engine)),
            }
        }
    }
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
                    record_metrics(claim, &outcome);
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

pub(super) fn record_metrics(claim: &Claim, outcome: &PageOutcome) {
    let source = claim.job.source.to_string();
    metrics::counter!("tidemark_pages_total", "source" => source).increment(1);
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
