//! The mirror has no foreign key to its stream (on PostgreSQL), so removing a stream or a
//! source must delete its records itself: checked through the feed, on SQLite, or on
//! PostgreSQL when `TIDEMARK_TEST_DATABASE_URL` names a server (a fresh database).

use std::sync::Arc;

use tidemark::spec::cursor::CursorWrite;
use tidemark::spec::job::{JobMode, JobStats, Trigger};
use tidemark::spec::{SourceName, SourceSpec, StreamName};
use tidemark::store::{FeedQuery, JobEnd, NewSource, PageCommit, PageRecord, Store};

use crate::support::database_url;

pub async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    tidemark::store::connect(&database_url(dir).await, None)
        .await
        .unwrap()
}

pub fn spec(streams: &[&str]) -> (SourceSpec, String) {
    let streams: Vec<_> = streams
        .iter()
        .map(|name| {
            serde_json::json!({"name": name, "request": {"path": "/x"},
                               "records": {"path": "", "key": "/id"},
                               "pagination": {"type": "none"}})
        })
        .collect();
    let raw = serde_json::json!({"name": "shop", "base_url": "http://127.0.0.1:9",
                                 "streams": streams})
    .to_string();
    (tidemark::spec::de::parse(raw.as_bytes()).unwrap(), raw)
}

/// Runs one job of `stream` that stores `keys`.
async fn sync(store: &dyn Store, stream: &str, keys: &[&str]) {
    let source: SourceName = tidemark::spec::de::parse(b"\"shop\"").unwrap();
    let stream: StreamName = tidemark::spec::de::parse(format!("\"{stream}\"").as_bytes()).unwrap();
    store
        .enqueue_job(&source, &stream, JobMode::Full, Trigger::Api)
        .await
        .unwrap()
        .unwrap();
    let lease = chrono::TimeDelta::seconds(60);
    let instance = store.start_instance().await.unwrap();
    let claim = store
        .claim_job(instance, "w", lease)
        .await
        .unwrap()
        .unwrap();
    let records: Vec<PageRecord> = keys
        .iter()
        .map(|k| PageRecord::upsert((*k).to_owned(), format!("{{\"id\":{k}}}")))
        .collect();
    let outcome = store
        .commit_page(PageCommit {
            job: claim.job.id,
            owner: "w",
            lease,
            target_stream_id: claim.target_stream_id,
            cursor_stream_id: claim.stream_id,
            records: &records,
            cursor: &CursorWrite::Keep,
            stats: &JobStats::default(),
            child: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.inserted, keys.len() as u64);
    let (stats, end) = (JobStats::default(), JobEnd::Succeeded);
    let finished = store.finish_job(claim.job.id, "w", &stats, end).await;
    assert!(finished.unwrap());
}

/// The keys of every change in the unfiltered feed.
async fn feed_keys(store: &dyn Store) -> Vec<String> {
    let query = FeedQuery {
        streams: &[],
        after: 0,
        limit: 1000,
    };
    let snapshot = store.read_feed(query).await.unwrap();
    snapshot.changes.into_iter().map(|c| c.key).collect()
}

#[tokio::test]
async fn removing_a_stream_or_its_source_removes_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let (both, raw) = spec(&["a", "b"]);
    store
        .create_source(NewSource {
            spec: &both,
            raw: &raw,
        })
        .await
        .unwrap();
    sync(&*store, "a", &["1", "2"]).await;
    sync(&*store, "b", &["3"]).await;
    assert_eq!(feed_keys(&*store).await, ["1", "2", "3"]);

    let (only_b, raw) = spec(&["b"]);
    let replaced = store.replace_source(NewSource {
        spec: &only_b,
        raw: &raw,
    });
    assert!(replaced.await.unwrap().is_some());
    assert_eq!(feed_keys(&*store).await, ["3"]);

    let name: SourceName = tidemark::spec::de::parse(b"\"shop\"").unwrap();
    assert!(store.delete_source(&name).await.unwrap());
    assert!(feed_keys(&*store).await.is_empty());
}
