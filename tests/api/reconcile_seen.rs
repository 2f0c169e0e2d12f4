//! A reconcile's seen keys live in the database (docs/design.md §4, "Deletions"): written
//! with each page the job commits, kept across a takeover of the job (a crashed worker's
//! pages stay seen; its later writes are refused), fenced like pages, deleted at the end.

use std::sync::Arc;
use std::time::Duration;

use tidemark::spec::cursor::CursorWrite;
use tidemark::spec::job::{JobMode, JobStats, Trigger};
use tidemark::spec::{SourceName, SourceSpec, StreamName};
use tidemark::store::{Claim, JobEnd, NewSource, PageCommit, PageRecord, Store};

use crate::support::database_url;

fn spec() -> (SourceSpec, String) {
    let raw = serde_json::json!({"name": "shop", "base_url": "http://127.0.0.1:9",
        "streams": [{"name": "items", "request": {"path": "/x"},
                     "records": {"path": "", "key": "/id"}, "pagination": {"type": "none"}}]})
    .to_string();
    (tidemark::spec::de::parse(raw.as_bytes()).unwrap(), raw)
}

fn names() -> (SourceName, StreamName) {
    (
        tidemark::spec::de::parse(b"\"shop\"").unwrap(),
        tidemark::spec::de::parse(b"\"items\"").unwrap(),
    )
}

/// Commits `keys` as one page of `claim`'s job under `owner`: `None` when refused.
async fn page(store: &dyn Store, claim: &Claim, owner: &str, keys: &[&str]) -> Option<u64> {
    let records: Vec<PageRecord> = keys
        .iter()
        .map(|k| PageRecord::upsert((*k).to_owned(), format!("{{\"id\":\"{k}\"}}")))
        .collect();
    let outcome = store
        .commit_page(PageCommit {
            job: claim.job.id,
            owner,
            lease: chrono::TimeDelta::milliseconds(300),
            target_stream_id: claim.target_stream_id,
            cursor_stream_id: claim.stream_id,
            records: &records,
            cursor: &CursorWrite::Keep,
            stats: &JobStats::default(),
            child: None,
        })
        .await
        .unwrap()?;
    Some(outcome.inserted + outcome.unchanged)
}

async fn job(store: &dyn Store, mode: JobMode, owner: &str) -> Claim {
    let (source, stream) = names();
    store
        .enqueue_job(&source, &stream, mode, Trigger::Api)
        .await
        .unwrap()
        .unwrap();
    let lease = chrono::TimeDelta::milliseconds(300);
    let instance = store.start_instance().await.unwrap();
    store
        .claim_job(instance, owner, lease)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn seen_keys_outlive_a_takeover_and_are_fenced_like_pages() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(&dir).await;
    let store: Arc<dyn Store> = tidemark::store::connect(&url, None).await.unwrap();
    let (spec, raw) = spec();
    store
        .create_source(NewSource {
            spec: &spec,
            raw: &raw,
        })
        .await
        .unwrap();
    let full = job(&*store, JobMode::Full, "w0").await;
    assert_eq!(
        page(&*store, &full, "w0", &["a", "b", "c", "d", "e"]).await,
        Some(5)
    );
    let stats = JobStats::default();
    assert!(
        store
            .finish_job(full.job.id, "w0", &stats, JobEnd::Succeeded)
            .await
            .unwrap()
    );

    // A reconcile lists a and b, then its worker dies.
    let reconcile = job(&*store, JobMode::Reconcile, "w1").await;
    assert_eq!(page(&*store, &reconcile, "w1", &["a", "b"]).await, Some(2));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let instance = store.start_instance().await.unwrap();
    let taken = store
        .claim_job(instance, "w2", chrono::TimeDelta::seconds(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.job.id, reconcile.job.id);
    // The dead worker's late page and cleanup are refused; what it committed stays seen.
    assert_eq!(page(&*store, &reconcile, "w1", &["d"]).await, None);
    assert_eq!(
        store.forget_seen(reconcile.job.id, "w1", 10).await.unwrap(),
        None
    );
    // The new owner lists from the beginning again and sees only c this time (a and b
    // vanished meanwhile, after the first worker had seen them: kept, as a reconcile
    // that read them a moment later would keep them).
    assert_eq!(page(&*store, &taken, "w2", &["c"]).await, Some(1));
    let mut unseen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let batch = store
            .sweep_batch(taken.target_stream_id, taken.job.id, after.as_deref(), 2)
            .await
            .unwrap();
        unseen.extend(batch.unseen);
        match batch.last {
            Some(last) => after = Some(last),
            None => break,
        }
    }
    assert_eq!(unseen, ["d", "e"]);
    assert_eq!(
        store.forget_seen(taken.job.id, "w2", 2).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        store.forget_seen(taken.job.id, "w2", 2).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        store.forget_seen(taken.job.id, "w2", 2).await.unwrap(),
        Some(0)
    );
    let stats = JobStats::default();
    assert!(
        store
            .finish_job(taken.job.id, "w2", &stats, JobEnd::Succeeded)
            .await
            .unwrap()
    );
    assert_eq!(seen_rows(&url).await, 0);

    // A failed reconcile's keys go with its end: the next reconcile starts with none.
    let failed = job(&*store, JobMode::Reconcile, "w3").await;
    assert_eq!(
        page(&*store, &failed, "w3", &["a", "b", "c"]).await,
        Some(3)
    );
    let problem =
        tidemark::problem::Problem::new(tidemark::problem::ProblemType::UpstreamStatus, "test");
    let end = JobEnd::Failed(problem);
    assert!(
        store
            .finish_job(failed.job.id, "w3", &stats, end)
            .await
            .unwrap()
    );
    assert_eq!(seen_rows(&url).await, 0);
    assert_eq!(
        store.forget_seen(failed.job.id, "w3", 10).await.unwrap(),
        None
    );
    // So do a cancelled one's.
    let cancelled = job(&*store, JobMode::Reconcile, "w4").await;
    assert_eq!(page(&*store, &cancelled, "w4", &["a"]).await, Some(1));
    assert_eq!(seen_rows(&url).await, 1);
    store.cancel_job(cancelled.job.id).await.unwrap();
    assert_eq!(seen_rows(&url).await, 0);
}

/// Rows of the seen-keys table, read beside the store.
async fn seen_rows(url: &str) -> i64 {
    const COUNT: &str = "SELECT COUNT(*) FROM reconcile_seen";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let n = sqlx::query_scalar(COUNT).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let n = sqlx::query_scalar(COUNT).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}
