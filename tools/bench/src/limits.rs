//! The limits a sync cannot beat on this machine: how fast the sandbox serves the keyset
//! listing to a plain client, and how fast the database takes the same rows in plain
//! inserts of a page each.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Records per page, in the limits as in the sync.
pub const PAGE: usize = 1000;
/// The keyset listing, archived products included, as the benchmark's stream reads it.
pub const LISTING: &str = "/insales/products.json";

/// A walk over the sandbox's keyset listing, `(updated_at, id)` order, pages of [`PAGE`].
pub struct Walk<'a> {
    client: &'a reqwest::Client,
    url: String,
    since: String,
    from_id: Option<String>,
    pub requests: u64,
}

/// The position of a page's last record.
#[derive(Deserialize)]
struct Last<'a> {
    #[serde(borrow)]
    id: &'a RawValue,
    updated_at: String,
}

impl<'a> Walk<'a> {
    pub fn new(client: &'a reqwest::Client, base: &str) -> Self {
        Walk {
            client,
            url: format!("{base}{LISTING}"),
            since: "1970-01-01T00:00:00Z".into(),
            from_id: None,
            requests: 0,
        }
    }

    /// The rows of up to `n` next pages (fewer at the end of the listing).
    pub async fn pages(&mut self, n: usize) -> anyhow::Result<Vec<Vec<Row>>> {
        let mut pages = Vec::with_capacity(n);
        while pages.len() < n {
            match self.next().await? {
                Some(body) => pages.push(rows(&body)?),
                None => break,
            }
        }
        Ok(pages)
    }

    /// The next page's body; `None` after the last page (an empty one).
    pub async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        let mut query = vec![
            ("with_deleted", "true".to_owned()),
            ("per_page", PAGE.to_string()),
            ("updated_since", self.since.clone()),
        ];
        if let Some(id) = &self.from_id {
            query.push(("from_id", id.clone()));
        }
        let url = url::Url::parse_with_params(&self.url, &query)?;
        let reply = self.client.get(url).send().await?;
        self.requests += 1;
        let reply = reply.error_for_status()?;
        let body = reply.bytes().await?;
        let Some((id, updated_at)) = last_position(&body)? else {
            return Ok(None);
        };
        self.since = updated_at;
        self.from_id = Some(id);
        Ok(Some(body))
    }
}

/// The `(id, updated_at)` of a page's last record, `None` for an empty page. Sandbox
/// products are flat objects, so the last record starts at the body's last `{`; reading
/// only it is what a client that discards the page needs.
fn last_position(body: &[u8]) -> anyhow::Result<Option<(String, String)>> {
    let Some(start) = body.iter().rposition(|&b| b == b'{') else {
        return Ok(None);
    };
    let end = body
        .iter()
        .rposition(|&b| b == b'}')
        .context("a page without a closing brace")?;
    let last: Last =
        serde_json::from_slice(&body[start..=end]).context("reading a page's last record")?;
    Ok(Some((last.id.get().to_owned(), last.updated_at)))
}

/// How fast a plain client reads every page and discards it.
#[derive(Debug, Clone, Serialize)]
pub struct Serve {
    pub records: u64,
    pub requests: u64,
    pub seconds: f64,
    pub records_per_second: f64,
}

pub async fn serve_rate(client: &reqwest::Client, base: &str) -> anyhow::Result<Serve> {
    let mut walk = Walk::new(client, base);
    let mut records = 0u64;
    let started = Instant::now();
    while let Some(body) = walk.next().await? {
        // Counting the records' opening braces: flat objects, one each.
        records += body.iter().filter(|&&b| b == b'{').count() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Serve {
        records,
        requests: walk.requests,
        seconds,
        records_per_second: records as f64 / seconds,
    })
}

/// How fast the database takes the rows in plain inserts, one statement per page, into a
/// scratch table with the mirror's columns, keys and indexes, `pages_per_transaction`
/// pages per transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Insert {
    pub pages_per_transaction: usize,
    pub transactions: u64,
    pub records: u64,
    /// Time spent in the inserts and commits only.
    pub seconds: f64,
    pub records_per_second: f64,
}

/// One row as the mirror stores it.
pub struct Row {
    key: String,
    body: String,
    hash: Vec<u8>,
}

fn rows(body: &[u8]) -> anyhow::Result<Vec<Row>> {
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body).context("a page is not JSON")?;
    items
        .into_iter()
        .map(|raw| {
            let id: Id = serde_json::from_str(raw.get()).context("a record without an id")?;
            Ok(Row {
                key: id.id.get().to_owned(),
                body: raw.get().to_owned(),
                hash: Sha256::digest(raw.get().as_bytes()).to_vec(),
            })
        })
        .collect()
}

const SQLITE_TABLE: &[&str] = &[
    "CREATE TABLE raw_records (stream_id INTEGER NOT NULL, key TEXT NOT NULL, \
     rev INTEGER NOT NULL, seq INTEGER NOT NULL, hash BLOB, body TEXT, \
     synced_at TEXT NOT NULL, changed_at TEXT NOT NULL, PRIMARY KEY (stream_id, key))",
    "CREATE UNIQUE INDEX raw_records_by_seq ON raw_records (seq)",
    "CREATE INDEX raw_records_by_stream_seq ON raw_records (stream_id, seq)",
    "CREATE INDEX raw_records_tombstones ON raw_records (changed_at) WHERE body IS NULL",
];

const POSTGRES_TABLE: &[&str] = &[
    "CREATE TABLE raw_records (stream_id BIGINT NOT NULL, key TEXT COLLATE \"C\" NOT NULL, \
     rev BIGINT NOT NULL, seq BIGINT NOT NULL, hash BYTEA, body TEXT, \
     synced_at TIMESTAMPTZ NOT NULL, changed_at TIMESTAMPTZ NOT NULL, \
     PRIMARY KEY (stream_id, key))",
    "CREATE UNIQUE INDEX raw_records_by_seq ON raw_records (seq)",
    "CREATE INDEX raw_records_by_stream_seq ON raw_records (stream_id, seq)",
    "CREATE INDEX raw_records_tombstones ON raw_records (changed_at) WHERE body IS NULL",
];

/// Inserts one page in transaction `$tx`, as multi-row `VALUES` (SQLite, as tidemark
/// writes there).
macro_rules! insert_page {
    ($tx:expr, $rows:expr, $first_seq:expr) => {{
        let now = chrono::Utc::now();
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO raw_records (stream_id, key, rev, seq, hash, body, synced_at, changed_at) ",
        );
        insert.push_values($rows.iter().enumerate(), |mut row, (i, r)| {
            row.push_bind(1i64)
                .push_bind(r.key.as_str())
                .push_bind(1i64)
                .push_bind($first_seq + i as i64)
                .push_bind(r.hash.as_slice())
                .push_bind(r.body.as_str())
                .push_bind(now)
                .push_bind(now);
        });
        insert.build().execute(&mut *$tx).await?;
    }};
}

/// Inserts one page in a transaction on PostgreSQL, one array per column as tidemark
/// writes there (faster than multi-row `VALUES`, so the limit stays the best plain
/// insert).
async fn insert_page_arrays(
    tx: &mut sqlx::PgConnection,
    rows: &[Row],
    first_seq: i64,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    sqlx::query(
        "INSERT INTO raw_records (stream_id, key, rev, seq, hash, body, synced_at, changed_at) \
         SELECT 1, u.key, 1, $1 + u.n - 1, u.hash, u.body, $2, $2 \
         FROM unnest($3::text[], $4::bytea[], $5::text[]) WITH ORDINALITY AS u (key, hash, body, n)",
    )
    .bind(first_seq)
    .bind(now)
    .bind(keys)
    .bind(hashes)
    .bind(bodies)
    .execute(tx)
    .await?;
    Ok(())
}

/// Where the scratch table goes.
pub enum Scratch {
    /// A directory for SQLite files (one per run of the limit), each opened as tidemark
    /// opens its writer (WAL, synchronous NORMAL, a 64 MiB cache, checkpoints every 16384
    /// pages).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres(String),
}

/// The raw insert rate with `pages_per_transaction` pages (of [`PAGE`] rows) per
/// transaction; only the inserts and commits are timed (the pages of a transaction are
/// fetched before it begins).
pub async fn insert_rate(
    client: &reqwest::Client,
    base: &str,
    scratch: &Scratch,
    pages_per_transaction: usize,
) -> anyhow::Result<Insert> {
    let mut walk = Walk::new(client, base);
    let mut records = 0u64;
    let mut transactions = 0u64;
    let mut spent = Duration::ZERO;
    let pages_per_transaction = pages_per_transaction.max(1);
    match scratch {
        Scratch::Sqlite(dir) => {
            let file = dir.join(format!("raw-{pages_per_transaction}.db"));
            let url = format!("sqlite://{}", file.display());
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .pragma("cache_size", "-65536")
                .pragma("wal_autocheckpoint", "16384");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            for ddl in SQLITE_TABLE {
                sqlx::query(*ddl).execute(&pool).await?;
            }
            loop {
                let group = walk.pages(pages_per_transaction).await?;
                if group.is_empty() {
                    break;
                }
                let started = Instant::now();
                let mut tx = pool.begin().await?;
                for rows in &group {
                    insert_page!(tx, rows, records as i64 + 1);
                    records += rows.len() as u64;
                }
                tx.commit().await?;
                spent += started.elapsed();
                transactions += 1;
            }
            pool.close().await;
        }
        Scratch::Postgres(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await?;
            for ddl in POSTGRES_TABLE {
                sqlx::query(*ddl).execute(&pool).await?;
            }
            loop {
                let group = walk.pages(pages_per_transaction).await?;
                if group.is_empty() {
                    break;
                }
                let started = Instant::now();
                let mut tx = pool.begin().await?;
                for rows in &group {
                    insert_page_arrays(&mut tx, rows, records as i64 + 1).await?;
                    records += rows.len() as u64;
                }
                tx.commit().await?;
                spent += started.elapsed();
                transactions += 1;
            }
            sqlx::query("DROP TABLE raw_records").execute(&pool).await?;
            pool.close().await;
        }
    }
    let seconds = spent.as_secs_f64();
    Ok(Insert {
        pages_per_transaction,
        transactions,
        records,
        seconds,
        records_per_second: records as f64 / seconds,
    })
}
