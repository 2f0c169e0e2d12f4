//! The run of a child stream (docs/design.md §3, "Child stream"): it drains the queue of
//! parents the parent stream's page commits wrote, reading each parent's listing in full
//! with the child's own pagination and committing it with the queue row it consumes; a
//! parent that is gone (deleted in the mirror, or `404`/`410` upstream) has its children
//! tombstoned, and so has a child its parent's listing no longer holds. A `full` or
//! `reconcile` job then reads the children of every live parent (keyset over the parent's
//! mirror), and a reconcile sweeps the mirror for children it did not see.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::Engine;
use super::run::{Ending, database_failed, fail, guarded, interrupted, record_metrics, sweep};
use crate::paginate::request::RequestTemplate;
use crate::paginate::strategy::Strategy;
use crate::problem::{Problem, ProblemType};
use crate::spec::cursor::CursorWrite;
use crate::spec::de::escape_token;
use crate::spec::job::{JobMode, JobStats};
use crate::store::{ChildWrite, Claim, JobEnd, PageCommit, PageRecord, StoreError};
use crate::upstream::client::{SourceClient, UpstreamError};

/// Queue rows (or parents of the mirror) read per batch.
const BATCH: u32 = 100;
/// The most parents one job reads from the queue; what is left is the next job's (the
/// scheduler queues it once this one ended), so a job ends even while parents keep
/// changing faster than their children can be read.
const MAX_QUEUED_PER_JOB: usize = 100_000;

/// The key of a child record: its parent's key, `/`, and its own key escaped as a JSON
/// pointer token (`~0`, `~1`), so the parent's key is everything before the last `/`.
pub fn child_key(parent: &str, own: &str) -> String {
    format!("{parent}/{}", escape_token(own))
}

/// Runs one claimed job of a child stream to its end.
pub(super) async fn run(
    engine: &Arc<Engine>,
    owner: &str,
    claim: &Claim,
    lost: &mut watch::Receiver<bool>,
    stats: &mut JobStats,
) -> Ending {
    let parent_stream = match engine
        .patiently("reading the parent stream", || {
            engine.store.parent_of(claim.stream_id)
        })
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => {
            return fail(Problem::new(
                ProblemType::Internal,
                "the child stream has no parent stream in the database",
            ));
        }
        Err(e) => return database_failed(&e),
    };
    let template = match RequestTemplate::new(&claim.source.base_url, &claim.stream.request) {
        Ok(template) => template,
        Err(problem) => return fail(problem),
    };
    let client = engine.upstream.source(&claim.source);
    let mut child = Child {
        engine,
        owner,
        claim,
        client: &client,
        template: &template,
        parent_stream,
        lost,
        stats,
    };
    match child.run().await {
        Ok(()) => Ending::End(JobEnd::Succeeded),
        Err(ending) => ending,
    }
}

/// One child job's state.
struct Child<'a> {
    engine: &'a Arc<Engine>,
    owner: &'a str,
    claim: &'a Claim,
    client: &'a SourceClient,
    template: &'a RequestTemplate,
    parent_stream: i64,
    lost: &'a mut watch::Receiver<bool>,
    stats: &'a mut JobStats,
}

impl Child<'_> {
    async fn run(&mut self) -> Result<(), Ending> {
        self.drain().await?;
        if self.claim.job.mode != JobMode::Incremental {
            self.every_parent().await?;
        }
        if self.claim.job.mode == JobMode::Reconcile {
            match sweep(self.engine, self.owner, self.claim, self.stats).await {
                Ok(true) => {}
                Ok(false) => return Err(Ending::Lost),
                Err(e) => return Err(database_failed(&e)),
            }
        }
        Ok(())
    }

    /// Reads the children of the queued parents, oldest change first, until the queue is
    /// empty (or the job has read its share).
    async fn drain(&mut self) -> Result<(), Ending> {
        let engine = self.engine;
        let stream_id = self.claim.stream_id;
        let mut after = 0;
        let mut read = 0;
        while read < MAX_QUEUED_PER_JOB {
            let batch = engine
                .patiently("reading the queue of parents", || {
                    engine.store.queued_parents(stream_id, after, BATCH)
                })
                .await
                .map_err(|e| database_failed(&e))?;
            if batch.is_empty() {
                break;
            }
            for queued in batch {
                self.check_stopping()?;
                after = queued.seq;
                read += 1;
                let parent = if queued.deleted {
                    None
                } else {
                    let parent_stream = self.parent_stream;
                    engine
                        .patiently("reading a parent record", || {
                            engine.store.live_record(parent_stream, &queued.key)
                        })
                        .await
                        .map_err(|e| database_failed(&e))?
                };
                match parent {
                    Some(text) => {
                        self.read_parent(&queued.key, &text, Some(queued.seq))
                            .await?
                    }
                    // Deleted, by this change or a later one (which queued it again).
                    None => {
                        self.tombstone_children(&queued.key, Some(queued.seq))
                            .await?
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the children of every live parent, in key order, a batch at a time.
    async fn every_parent(&mut self) -> Result<(), Ending> {
        let engine = self.engine;
        let parent_stream = self.parent_stream;
        let mut after: Option<String> = None;
        loop {
            let batch = engine
                .patiently("listing the parent's mirror", || {
                    engine
                        .store
                        .live_records_after(parent_stream, after.as_deref(), BATCH)
                })
                .await
                .map_err(|e| database_failed(&e))?;
            let Some((last, _)) = batch.last() else {
                return Ok(());
            };
            let last = last.clone();
            for (key, text) in batch {
                self.check_stopping()?;
                self.read_parent(&key, &text, None).await?;
            }
            after = Some(last);
        }
    }

    fn check_stopping(&self) -> Result<(), Ending> {
        if self.engine.stopping() {
            Err(Ending::Released)
        } else {
            Ok(())
        }
    }

    /// Reads one parent's listing to its end, committing each page; the last page also
    /// tombstones the children the listing no longer holds and consumes the queue row
    /// (`consume`: its position). A `404` or `410` means the parent is gone upstream.
    async fn read_parent(
        &mut self,
        parent_key: &str,
        text: &str,
        consume: Option<i64>,
    ) -> Result<(), Ending> {
        let engine = self.engine;
        let stream = &self.claim.stream;
        let parent: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            fail(Problem::new(
                ProblemType::Internal,
                format!("the stored parent record `{parent_key}` does not parse: {e}"),
            ))
        })?;
        let template = self.template.for_parent(parent);
        let held = self.children(parent_key).await?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut strategy = Strategy::new(&stream.pagination, &stream.request, None)
            .map_err(|e| fail(e.problem()))?;
        let mut ask = strategy.ask();
        loop {
            let fetching =
                self.client
                    .fetch_page(&template, ask, &stream.records, strategy.pointers());
            let Some(fetched) = guarded(engine, &mut self.lost.clone(), fetching).await else {
                return Err(interrupted(engine));
            };
            let fetched = match fetched {
                Ok(fetched) => fetched,
                Err(e) => {
                    self.stats.requests += u64::from(e.attempts());
                    return match &e {
                        UpstreamError::Status {
                            status: 404 | 410, ..
                        } => self.tombstone_children(parent_key, consume).await,
                        _ => Err(fail(e.problem())),
                    };
                }
            };
            self.stats.requests += u64::from(fetched.attempts);
            self.stats.pages += 1;
            self.stats.records_seen += fetched.page.records.len() as u64;
            let step = strategy
                .advance(&fetched.page, &fetched.reply)
                .map_err(|e| fail(e.problem()))?;
            let mut records: Vec<PageRecord> = fetched
                .page
                .records
                .into_iter()
                .map(|item| {
                    let key = child_key(parent_key, &item.key);
                    if item.deleted {
                        PageRecord::delete(key)
                    } else {
                        seen.insert(key.clone());
                        PageRecord::upsert(key, item.text)
                    }
                })
                .collect();
            if step.done {
                let listed: HashSet<&str> = records.iter().map(|r| r.key.as_str()).collect();
                let gone: Vec<PageRecord> = held
                    .iter()
                    .filter(|k| !seen.contains(*k) && !listed.contains(k.as_str()))
                    .map(|k| PageRecord::delete(k.clone()))
                    .collect();
                records.extend(gone);
            }
            let write = ChildWrite {
                parent_key,
                consume: if step.done { consume } else { None },
            };
            self.commit(&records, write).await?;
            if step.done {
                return Ok(());
            }
            if engine.stopping() {
                return Err(Ending::Released);
            }
            ask = strategy.ask();
        }
    }

    /// Tombstones every child of a parent that is gone, consuming its queue row.
    async fn tombstone_children(
        &mut self,
        parent_key: &str,
        consume: Option<i64>,
    ) -> Result<(), Ending> {
        let held = self.children(parent_key).await?;
        let records: Vec<PageRecord> = held.into_iter().map(PageRecord::delete).collect();
        self.commit(
            &records,
            ChildWrite {
                parent_key,
                consume,
            },
        )
        .await
    }

    /// The children the mirror holds for a parent.
    async fn children(&self, parent_key: &str) -> Result<Vec<String>, Ending> {
        let engine = self.engine;
        let stream_id = self.claim.stream_id;
        engine
            .patiently("reading a parent's children", || {
                engine.store.children_of(stream_id, parent_key)
            })
            .await
            .map_err(|e| database_failed(&e))
    }

    /// Commits one page of a parent's listing, fenced by the job's lease.
    async fn commit(
        &mut self,
        records: &[PageRecord],
        child: ChildWrite<'_>,
    ) -> Result<(), Ending> {
        let engine = self.engine;
        let claim = self.claim;
        let owner = self.owner;
        let stats: &JobStats = self.stats;
        let committed: Result<_, StoreError> = engine
            .patiently("committing a child page", || {
                engine.store.commit_page(PageCommit {
                    job: claim.job.id,
                    owner,
                    lease: engine.lease,
                    target_stream_id: claim.target_stream_id,
                    cursor_stream_id: claim.stream_id,
                    records,
                    cursor: &CursorWrite::Keep,
                    stats,
                    child: Some(child),
                })
            })
            .await;
        match committed {
            Ok(Some(outcome)) => {
                outcome.add_to(self.stats);
                record_metrics(claim, &outcome, 1);
                Ok(())
            }
            Ok(None) => Err(Ending::Lost),
            Err(e) => Err(database_failed(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::child_key;

    #[test]
    fn a_child_key_names_its_parent_before_the_last_slash() {
        assert_eq!(child_key("1042", "7"), "1042/7");
        assert_eq!(child_key("a/b", "c/d~e"), "a/b/c~1d~0e");
        let key = child_key("1042/7", "x");
        assert_eq!(key.rsplit_once('/').map(|(p, _)| p), Some("1042/7"));
    }
}
