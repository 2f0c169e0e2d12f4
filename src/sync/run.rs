//! The page loop (docs/design.md §4): fetch a page, let the strategy read it, commit its
//! records, their changes and the advanced cursor in one transaction, and fetch the next
//! page while that commit runs.

use std::collections::HashSet;
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
use crate::spec::job::{JobMode, JobStats};
use crate::spec::pagination::Pagination;
use crate::store::{Claim, JobEnd, PageCommit, PageOutcome, PageRecord, StoreResult};
use crate::upstream::client::UpstreamError;

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

/// Keys per reconcile batch.
const RECONCILE_BATCH: u32 = 1000;

/// Runs one claimed job to its end. Returns the ending and the job's counters.
pub(super) async fn run(
    engine: &Arc<Engine>,
    owner: &str,
    claim: &Claim,
    mut lost: watch::Receiver<bool>,
) -> (Ending, JobStats) {
    let mut stats = claim.job.stats.clone();
    let ending = run_pages(engine, owner, claim, &mut lost, &mut stats).await;
    (ending, stats)
}

async fn run_pages(
    engine: &Arc<Engine>,
    owner: &str,
    claim: &Claim,
    lost: &mut watch::Receiver<bool>,
    stats: &mut JobStats,
) -> Ending {
    let stream = &claim.stream;
    let start = start_cursor(claim);
    let mut strategy = match Strategy::new(&stream.pagination, &stream.request, start) {
        Ok(strategy) => strategy,
        Err(e) => return fail(e.problem()),
    };
    let client = engine.upstream.source(&claim.source);
    let template = match RequestTemplate::new(&claim.source.base_url, &stream.request) {
        Ok(template) => template,
        Err(problem) => return fail(problem),
    };
    // A deletions stream's records are tombstones; reconciling it means nothing more.
    let mut seen = (claim.job.mode == JobMode::Reconcile && stream.deletes.is_none())
        .then(HashSet::<String>::new);
    let fetch_first = client.fetch_page(
        &template,
        strategy.ask(),
        &stream.records,
        strategy.pointers(),
    );
    let Some(mut next) = guarded(engine, lost, fetch_first).await else {
        return interrupted(engine);
    };
    loop {
        let fetched = match next {
            Ok(fetched) => fetched,
            Err(e) => {
                stats.requests += u64::from(e.attempts());
                return upstream_failed(claim, start.is_some(), &e);
            }
        };
        stats.requests += u64::from(fetched.attempts);
        stats.pages += 1;
        stats.records_seen += fetched.page.records.len() as u64;
        let before = strategy.shifts();
        let step = match strategy.advance(&fetched.page, &fetched.reply) {
            Ok(step) => step,
            Err(e) => return fail(e.problem()),
        };
        let shifts = strategy.shifts().since(before);
        stats.step_backs += shifts.step_backs;
        stats.shifted += shifts.shifted;
        let done = step.done;
        let cursor = match (done, strategy.finish()) {
            (true, CursorWrite::Keep) | (false, _) => step.cursor,
            (true, last) => last,
        };
        if let Some(seen) = &mut seen {
            seen.extend(fetched.page.records.iter().map(|r| r.key.clone()));
        }
        let records = page_records(fetched.page, stream.deletes.is_some());
        let commit = commit(engine, owner, claim, &records, &cursor, stats);
        // The next request depends only on this reply: fetch it while the page commits.
        let ask = (!done).then(|| strategy.ask());
        let prefetch = async {
            match ask {
                Some(ask) if !engine.stopping() => {
                    let pointers = strategy.pointers();
                    let fetching = client.fetch_page(&template, ask, &stream.records, pointers);
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
            Ok(None) => return Ending::Lost,
            Err(e) => return database_failed(&e),
        }
        if done {
            break;
        }
        match prefetched {
            Some(fetched) if !engine.stopping() => next = fetched,
            _ => return interrupted(engine),
        }
    }
    if let Some(seen) = seen {
        match reconcile(engine, owner, claim, &seen, stats).await {
            Ok(true) => {}
            Ok(false) => return Ending::Lost,
            Err(e) => return database_failed(&e),
        }
    }
    Ending::End(JobEnd::Succeeded)
}

/// Where a run starts: an incremental run from the cursor; a full run from the beginning
/// unless it is resuming itself (taken over after a crash); a reconcile always from the
/// beginning, since the keys it saw before the crash are gone.
fn start_cursor(claim: &Claim) -> Option<&Value> {
    let cursor = claim.cursor.as_ref()?;
    match claim.job.mode {
        JobMode::Incremental => Some(&cursor.value),
        JobMode::Full => (cursor.job == Some(claim.job.id)).then_some(&cursor.value),
        JobMode::Reconcile => None,
    }
}

/// Runs `work` unless the job is lost or shutdown begins first (then `None`).
async fn guarded<T>(
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

fn interrupted(engine: &Engine) -> Ending {
    if engine.stopping() {
        Ending::Released
    } else {
        Ending::Lost
    }
}

fn fail(problem: Problem) -> Ending {
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

/// Tombstones the live keys of the mirror a full listing did not see. `false` when the job
/// was lost meanwhile.
async fn reconcile(
    engine: &Engine,
    owner: &str,
    claim: &Claim,
    seen: &HashSet<String>,
    stats: &mut JobStats,
) -> Result<bool, crate::store::StoreError> {
    let mut after: Option<String> = None;
    loop {
        let keys = engine
            .patiently("listing the mirror's keys", || {
                engine
                    .store
                    .live_keys(claim.target_stream_id, after.as_deref(), RECONCILE_BATCH)
            })
            .await?;
        let Some(last) = keys.last().cloned() else {
            return Ok(true);
        };
        let missing: Vec<PageRecord> = keys
            .into_iter()
            .filter(|k| !seen.contains(k))
            .map(PageRecord::delete)
            .collect();
        if !missing.is_empty() {
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
        after = Some(last);
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
            })
        })
        .await
}

fn record_metrics(claim: &Claim, outcome: &PageOutcome) {
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

/// A failed request: a stale token restarts the stream as a full sync (only when this
/// run started from a stored token: a blank one cannot be stale); anything else fails.
fn upstream_failed(claim: &Claim, from_cursor: bool, error: &UpstreamError) -> Ending {
    if let (Pagination::Token(token), UpstreamError::Status { status, body, .. }) =
        (&claim.stream.pagination, error)
        && let Some(rule) = &token.invalid_token
        && from_cursor
        && *status == rule.status.get()
        && body.contains(&rule.body_contains)
    {
        return Ending::End(JobEnd::Resync(Problem::new(
            ProblemType::UpstreamTokenStale,
            format!(
                "the upstream answered {status} with `{}`: the cursor was reset and a full resync queued",
                rule.body_contains
            ),
        )));
    }
    fail(error.problem())
}

/// A store call failed for good. When the database stayed unreachable for a whole lease
/// the job goes back to the queue (it is not the job's fault; if even that write fails,
/// the lease runs out and a worker takes the job over once the database is back);
/// anything else fails the job.
fn database_failed(error: &crate::store::StoreError) -> Ending {
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
