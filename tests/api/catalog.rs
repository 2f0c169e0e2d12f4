//! The catalog (`examples/sources/catalog/`, docs/catalog.md): one ready source per
//! sandbox dialect, written against the real API's documented paths and parameters. Each
//! file is loaded as it is and pointed at a sandbox the way a user points it at the real
//! API: `base_url` becomes the sandbox's dialect prefix, each `{"env": ...}` credential
//! an inline value the sandbox demands (an OAuth 2 token URL the sandbox's own), and, for
//! speed, schedules and rate limits are dropped and retries shortened. GitHub's
//! placeholder repository becomes the sandbox's one. Then, for every dialect:
//!
//! - **convergence under churn**: a full sync, five incremental syncs while the dialect
//!   churns (updates, creates, deletes — soft where the API reports them, hard where it
//!   cannot — and a mass update of three pages on one timestamp), a final sync and, where
//!   the API cannot report hard deletes, a reconcile: the mirror and a feed consumer's
//!   replica (following `until` from a blank `since`) equal the dialect's truth byte for
//!   byte; before the reconcile, the mirror may differ from the truth only by those hard
//!   deletes (Stripe's: and by updates, which its listing never shows);
//! - **rows moving mid-run**, deterministically: the second page of a full sync is held
//!   back (a `slow` fault) while 20 records change, and one incremental later the mirror
//!   equals the truth;
//! - **request economy**, counted in the sandbox's request log: an idle incremental makes
//!   at most 2 requests, k changes at most `ceil(k / page) + 1`.
//!
//! Every wait is an `eventually` (jobs through `TestApp::sync`), every loop bounded.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{
    FeedFollower, Sandbox, TestApp, eventually, ready_if, sandbox, spawn, spawn_syncing,
};

/// Records per page in the tests (Salesforce's smallest batch is 200).
const PAGE: u32 = 40;

/// One catalog entry and what its test needs to know about the API.
struct Entry {
    /// `examples/sources/catalog/{dialect}.json`, the sandbox dialect of the same name and
    /// the source's name.
    dialect: &'static str,
    stream: &'static str,
    /// Where each record's key is: the truth is keyed by it.
    key: &'static str,
    /// The API cannot report hard deletes (or, for Stripe, updates): a reconcile settles
    /// them.
    reconcile: bool,
    /// An incremental read sees updates (not Stripe's: it lists by creation).
    sees_updates: bool,
    /// Seconds the API withholds fresh changes (Zendesk: the last minute).
    settle: u32,
    /// The change an incremental read can see (Stripe lists by creation: `create`).
    change: &'static str,
}

const GITHUB: Entry = Entry {
    dialect: "github",
    stream: "issues",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const SHOPIFY: Entry = Entry {
    dialect: "shopify",
    stream: "products",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const STRIPE: Entry = Entry {
    dialect: "stripe",
    stream: "customers",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "create",
    sees_updates: false,
};
const ZENDESK: Entry = Entry {
    dialect: "zendesk",
    stream: "tickets",
    key: "/id",
    reconcile: false,
    settle: 61,
    change: "update",
    sees_updates: true,
};
const HUBSPOT: Entry = Entry {
    dialect: "hubspot",
    stream: "contacts",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const SALESFORCE: Entry = Entry {
    dialect: "salesforce",
    stream: "accounts",
    key: "/Id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const JIRA: Entry = Entry {
    dialect: "jira",
    stream: "issues",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const GRAPH: Entry = Entry {
    dialect: "graph",
    stream: "users",
    key: "/id",
    reconcile: false,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const POSTGREST: Entry = Entry {
    dialect: "postgrest",
    stream: "items",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};
const CLAMP: Entry = Entry {
    dialect: "clamp",
    stream: "things",
    key: "/id",
    reconcile: true,
    settle: 0,
    change: "update",
    sees_updates: true,
};

const ALL: [&Entry; 10] = [
    &GITHUB,
    &SHOPIFY,
    &STRIPE,
    &ZENDESK,
    &HUBSPOT,
    &SALESFORCE,
    &JIRA,
    &GRAPH,
    &POSTGREST,
    &CLAMP,
];

/// The catalog file of `dialect`, as it is.
fn catalog_file(dialect: &str) -> Value {
    let path = format!(
        "{}/examples/sources/catalog/{dialect}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The members of an `auth` object that hold secrets.
const SECRETS: [&str; 5] = [
    "token",
    "password",
    "value",
    "client_secret",
    "refresh_token",
];

/// `entry`'s catalog source pointed at `upstream` with pages of `page` records, and the
/// credential the sandbox must demand for it (`POST /_control/auth`). Answers the page
/// size in effect (Salesforce batches at least 200).
fn pointed_at(upstream: &Sandbox, entry: &Entry, page: u32) -> (Value, Value, u32) {
    let mut source = catalog_file(entry.dialect);
    assert_eq!(source["name"], entry.dialect);
    source["base_url"] = json!(format!("{}/{}", upstream.base, entry.dialect));
    let object = source.as_object_mut().unwrap();
    object.remove("rate_limit");
    object.insert(
        "retry".into(),
        json!({"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50}),
    );

    // The credentials: every secret is an environment reference in the catalog; the test
    // gives the value the sandbox demands instead.
    let auth = source["auth"].as_object_mut().unwrap();
    for member in SECRETS {
        let Some(secret) = auth.get_mut(member) else {
            continue;
        };
        let env = secret["env"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: auth.{member} is not an env reference", entry.dialect))
            .to_ascii_lowercase();
        *secret = json!({ "value": format!("sandbox-{env}") });
    }
    let inline = |member: &str| auth[member]["value"].clone();
    let credential = match auth["type"].as_str().unwrap() {
        "bearer" => json!({"type": "bearer", "token": inline("token")}),
        "basic" => {
            json!({"type": "basic", "username": auth["username"], "password": inline("password")})
        }
        "header" => json!({"type": "header", "name": auth["name"], "value": inline("value")}),
        "query" => json!({"type": "query", "name": auth["name"], "value": inline("value")}),
        "oauth2" => {
            let mut credential = json!({"type": "oauth2", "client_id": auth["client_id"],
                                        "client_secret": inline("client_secret")});
            if auth.contains_key("refresh_token") {
                credential["refresh_token"] = inline("refresh_token");
            }
            auth.insert(
                "token_url".into(),
                json!(format!("{}/oauth/token", upstream.base)),
            );
            credential
        }
        other => panic!("{}: auth type {other}", entry.dialect),
    };

    let mut effective = page;
    for stream in source["streams"].as_array_mut().unwrap() {
        stream.as_object_mut().unwrap().remove("schedule");
        match entry.dialect {
            // The page size is a request header: Graph's `Prefer`, Salesforce's batch size.
            "graph" => {
                stream["request"]["headers"]["Prefer"] = json!(format!("odata.maxpagesize={page}"))
            }
            "salesforce" => {}
            _ => stream["pagination"]["limit"] = json!(page),
        }
        if entry.dialect == "github" {
            // The one repository of the sandbox, in place of the catalog's placeholder.
            let path = stream["request"]["path"].as_str().unwrap();
            assert_eq!(path, "/repos/octocat/Hello-World/issues");
            stream["request"]["path"] = json!("/repos/tidemark/sandbox/issues");
        }
    }
    if entry.dialect == "salesforce" {
        effective = page.max(200);
        source["headers"]["Sforce-Query-Options"] = json!(format!("batchSize={effective}"));
    }
    (source, credential, effective)
}

/// A sandbox of `records` records per dialect demanding `entry`'s credential, and an app
/// with `entry`'s catalog source registered on it.
async fn setup(entry: &Entry, seed: u64, records: usize, page: u32) -> (Sandbox, TestApp, u32) {
    let upstream = sandbox(seed, records).await;
    let app = spawn_syncing().await;
    let (source, credential, page) = pointed_at(&upstream, entry, page);
    upstream.control("auth", credential).await;
    let response = app.post("/v1/sources", &source).await;
    assert_eq!(
        response.status(),
        201,
        "{}: {}",
        entry.dialect,
        response.text().await.unwrap()
    );
    (upstream, app, page)
}

/// Runs a job of `mode` and asserts it succeeded, naming the dialect.
async fn sync(app: &TestApp, entry: &Entry, mode: &str) -> Value {
    let job = app.sync(entry.dialect, entry.stream, mode).await;
    assert_eq!(
        job["status"], "succeeded",
        "{}: {mode} job: {job:#}",
        entry.dialect
    );
    job
}

async fn tick(upstream: &Sandbox, seconds: u32) {
    if seconds > 0 {
        upstream
            .control("tick", json!({ "seconds": seconds }))
            .await;
    }
}

/// A key as a mirror writes it: strings as they are, other values as JSON text.
fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One round of churn, with a short pause between operations so that it overlaps the
/// sync that runs meanwhile. Deletes are soft or hard as the dialect's API has them;
/// answers the keys deleted.
async fn churn(upstream: &Sandbox, entry: &Entry, round: u64) -> Vec<String> {
    let operations = [
        ("update", 5 + round),
        ("create", 4),
        ("delete", 3),
        ("mass_update", u64::from(PAGE) * 3),
        ("update", 6),
    ];
    let mut deleted = Vec::new();
    for (operation, count) in operations {
        let reply = upstream
            .control(
                &format!("{}/{operation}", entry.dialect),
                json!({ "count": count }),
            )
            .await;
        if operation == "delete" {
            deleted.extend(reply["ids"].as_array().unwrap().iter().map(key_text));
        }
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    deleted
}

/// How `seen` differs from `truth`: keys missing, keys extra, and records whose text
/// differs (the first few, both texts). `None` when they are equal.
fn diff(truth: &BTreeMap<String, String>, seen: &BTreeMap<String, String>) -> Option<String> {
    if truth == seen {
        return None;
    }
    let missing: Vec<&String> = truth.keys().filter(|k| !seen.contains_key(*k)).collect();
    let extra: Vec<&String> = seen.keys().filter(|k| !truth.contains_key(*k)).collect();
    let differing: Vec<&String> = truth
        .iter()
        .filter(|(k, text)| seen.get(*k).is_some_and(|s| s != *text))
        .map(|(k, _)| k)
        .collect();
    let mut out = format!(
        "{} records in the truth, {} seen; missing {missing:?}, extra {extra:?}, {} differ",
        truth.len(),
        seen.len(),
        differing.len()
    );
    for key in differing.iter().take(3) {
        out.push_str(&format!(
            "\n  {key}:\n    truth {}\n    seen  {}",
            truth[*key], seen[*key]
        ));
    }
    Some(out)
}

/// The jobs of the dialect's source, oldest first: mode, status, stats and error.
async fn job_log(app: &TestApp, entry: &Entry) -> String {
    let jobs = app
        .get_json(&format!("/v1/jobs?source={}&limit=100", entry.dialect))
        .await;
    let mut jobs: Vec<Value> = jobs["results"].as_array().cloned().unwrap_or_default();
    jobs.reverse();
    jobs.iter()
        .map(|job| {
            format!(
                "  {} {} {} {}",
                job["mode"],
                job["status"],
                job["stats"],
                if job["error"].is_null() {
                    String::new()
                } else {
                    job["error"].to_string()
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Registers `entry`'s catalog source, syncs it fully, then five times incrementally
/// while the dialect churns, stops the churn and syncs once more. The mirror then holds
/// every live record as the API serves it, and extra only records the API deleted
/// without telling (hard deletes; with Stripe, whose listing shows no updates, new
/// customers only). Where the API cannot report hard deletes a reconcile follows; then
/// the mirror and a feed consumer's replica equal the truth.
async fn converges(entry: &Entry) {
    let (upstream, app, _) = setup(entry, 41, 300, PAGE).await;
    let mut consumer = FeedFollower::new(entry.dialect, entry.stream);
    sync(&app, entry, "full").await;
    let mut deleted = Vec::new();
    for round in 0..5 {
        // What the API withholds from the previous round is exported from now on.
        tick(&upstream, entry.settle).await;
        let (gone, _, _) = tokio::join!(
            churn(&upstream, entry, round),
            sync(&app, entry, "incremental"),
            consumer.catch_up(&app),
        );
        deleted.extend(gone);
    }
    tick(&upstream, entry.settle.max(3)).await;
    sync(&app, entry, "incremental").await;
    let truth = upstream.truth_by(entry.dialect, entry.key).await;

    let mirror = app.mirror(entry.dialect, entry.stream).await;
    let unreported: BTreeMap<String, String> = match entry.reconcile {
        // The hard-deleted records the mirror still holds are no error yet.
        true => mirror
            .iter()
            .filter(|(key, _)| truth.contains_key(*key) || !deleted.contains(*key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        false => mirror,
    };
    let before = match entry.sees_updates {
        true => diff(&truth, &unreported),
        false => {
            let missing: Vec<&String> = truth
                .keys()
                .filter(|k| !unreported.contains_key(*k))
                .collect();
            (!missing.is_empty()).then(|| format!("new customers missing: {missing:?}"))
        }
    };
    if let Some(diff) = before {
        panic!(
            "{}: after the last incremental sync, the mirror: {diff}\njobs:\n{}",
            entry.dialect,
            job_log(&app, entry).await
        );
    }

    if entry.reconcile {
        sync(&app, entry, "reconcile").await;
    }
    let mirror = app.mirror(entry.dialect, entry.stream).await;
    consumer.catch_up(&app).await;
    let mirror_diff = diff(&truth, &mirror);
    let replica_diff = diff(&truth, &consumer.replica);
    if mirror_diff.is_some() || replica_diff.is_some() {
        panic!(
            "{}: the mirror: {}\nthe feed replica: {}\njobs:\n{}",
            entry.dialect,
            mirror_diff.as_deref().unwrap_or("equal"),
            replica_diff.as_deref().unwrap_or("equal"),
            job_log(&app, entry).await
        );
    }
}

/// Logged sandbox requests, one line each (status, method, path, query), for failure
/// messages.
fn request_lines(requests: &[Value]) -> String {
    requests
        .iter()
        .map(|r| {
            format!(
                "  {} {} {} {}",
                r["status"], r["method"], r["path"], r["query"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs an incremental job and answers it with the requests it made, as the sandbox
/// logged them (and asserts the job counted the same).
async fn counted(app: &TestApp, upstream: &Sandbox, entry: &Entry) -> (Value, Vec<Value>) {
    let skip = upstream.requests().await.len();
    let job = sync(app, entry, "incremental").await;
    let requests: Vec<Value> = upstream.requests().await.into_iter().skip(skip).collect();
    assert_eq!(
        job["stats"]["requests"].as_u64(),
        Some(requests.len() as u64),
        "{}: the job's count and the sandbox's log:\n{}",
        entry.dialect,
        request_lines(&requests)
    );
    (job, requests)
}

/// Request economy: after the full sync has settled, an idle incremental makes at most 2
/// requests, and k changes at most `ceil(k / page) + 1`; the mirror then equals the truth
/// (no deletes happened).
async fn reads_only_what_changed(entry: &Entry) {
    let (upstream, app, page) = setup(entry, 42, 200, PAGE).await;
    sync(&app, entry, "full").await;
    // One change well after the dataset's last, alone in its minute (Jira filters to the
    // minute), then past every lookback and settling window.
    tick(&upstream, 120).await;
    upstream
        .control(
            &format!("{}/{}", entry.dialect, entry.change),
            json!({"count": 1}),
        )
        .await;
    tick(&upstream, entry.settle + 10).await;
    sync(&app, entry, "incremental").await;

    let (_, idle) = counted(&app, &upstream, entry).await;
    assert!(
        idle.len() <= 2,
        "{}: {} requests with nothing changed:\n{}",
        entry.dialect,
        idle.len(),
        request_lines(&idle)
    );

    let k = 100u64;
    upstream
        .control(
            &format!("{}/{}", entry.dialect, entry.change),
            json!({ "count": k }),
        )
        .await;
    tick(&upstream, entry.settle + 10).await;
    let (job, changed) = counted(&app, &upstream, entry).await;
    let bound = k.div_ceil(u64::from(page)) + 1;
    assert!(
        changed.len() as u64 <= bound,
        "{}: {} requests for {k} changes in pages of {page} (at most {bound}):\n{}",
        entry.dialect,
        changed.len(),
        request_lines(&changed)
    );
    eprintln!(
        "{}: idle incremental {} requests; {k} changes in pages of {page}: {} requests",
        entry.dialect,
        idle.len(),
        changed.len()
    );
    let stat = |name: &str| job["stats"][name].as_u64().unwrap_or(0);
    assert_eq!(
        stat("inserted") + stat("updated"),
        k,
        "{}: {job:#}",
        entry.dialect
    );
    let truth = upstream.truth_by(entry.dialect, entry.key).await;
    let mirror = app.mirror(entry.dialect, entry.stream).await;
    if let Some(diff) = diff(&truth, &mirror) {
        panic!("{}: the mirror: {diff}", entry.dialect);
    }
}

/// Rows that move while a run pages: the second page of a full sync is held back (a
/// `slow` fault) while 20 records change (updated, so that they move to the end of a
/// listing sorted by update time; Stripe's: created). Nothing is lost for good: after one
/// more incremental sync the mirror equals the truth. Deterministic: one run, one seed,
/// the changes made while the page is held.
async fn loses_nothing_when_rows_move_mid_run(entry: &Entry) {
    // Times spread over 500 s before the sandbox clock's start: the rows right after the
    // first page are minutes older than the run (even Jira's minutes).
    let (upstream, app, _) = setup(entry, 44, 500, PAGE).await;
    tick(&upstream, entry.settle).await;
    upstream
        .control(
            "faults",
            json!({"faults": [{"kind": "slow", "ms": 0}, {"kind": "slow", "ms": 1500}]}),
        )
        .await;
    let path = format!(
        "/v1/sources/{}/streams/{}/sync",
        entry.dialect, entry.stream
    );
    let response = app.post(&path, &json!({"mode": "full"})).await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    eventually(
        std::time::Duration::from_secs(10),
        "the second page's request to arrive",
        || async {
            let seen = upstream.requests().await.len();
            ready_if(seen >= 2, format!("{seen} requests"))
        },
    )
    .await;
    upstream
        .control(
            &format!("{}/{}", entry.dialect, entry.change),
            json!({"count": 20}),
        )
        .await;
    let job = app.wait_job(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{}: {job:#}", entry.dialect);
    let first_run = upstream.requests().await;
    tick(&upstream, entry.settle + 10).await;
    sync(&app, entry, "incremental").await;
    let truth = upstream.truth_by(entry.dialect, entry.key).await;
    let mirror = app.mirror(entry.dialect, entry.stream).await;
    if let Some(diff) = diff(&truth, &mirror) {
        let all = upstream.requests().await;
        panic!(
            "{}: the mirror: {diff}\nthe full run's requests:\n{}\nthe incremental's:\n{}\njobs:\n{}",
            entry.dialect,
            request_lines(&first_run),
            request_lines(&all[first_run.len()..]),
            job_log(&app, entry).await
        );
    }
}

/// Every catalog file registers as it is written, schedules included (no workers: its
/// real hosts are never called).
#[tokio::test]
async fn every_catalog_file_registers_as_written() {
    let app = spawn().await;
    let mut refused = Vec::new();
    for entry in ALL {
        let response = app.post("/v1/sources", &catalog_file(entry.dialect)).await;
        if response.status() != 201 {
            refused.push(format!(
                "{}: {} {}",
                entry.dialect,
                response.status(),
                response.text().await.unwrap()
            ));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

/// The three tests of each dialect; an attribute before a test's name (an `ignore`) is
/// put on it.
macro_rules! catalog_tests {
    ($($entry:ident:
        $(#[$c:meta])* $converges:ident,
        $(#[$s:meta])* $shift:ident,
        $(#[$e:meta])* $economy:ident;)*) => {$(
        #[tokio::test]
        $(#[$c])*
        async fn $converges() {
            converges(&$entry).await;
        }

        #[tokio::test]
        $(#[$s])*
        async fn $shift() {
            loses_nothing_when_rows_move_mid_run(&$entry).await;
        }

        #[tokio::test]
        $(#[$e])*
        async fn $economy() {
            reads_only_what_changed(&$entry).await;
        }
    )*};
}

catalog_tests! {
    GITHUB:
        github_converges_under_churn,
        github_loses_nothing_when_rows_move_mid_run,
        github_reads_only_what_changed;
    SHOPIFY:
        shopify_converges_under_churn,
        shopify_loses_nothing_when_rows_move_mid_run,
        shopify_reads_only_what_changed;
    STRIPE:
        stripe_converges_under_churn,
        stripe_loses_nothing_when_rows_move_mid_run,
        stripe_reads_only_what_changed;
    ZENDESK:
        zendesk_converges_under_churn,
        zendesk_loses_nothing_when_rows_move_mid_run,
        zendesk_reads_only_what_changed;
    HUBSPOT:
        hubspot_converges_under_churn,
        hubspot_loses_nothing_when_rows_move_mid_run,
        hubspot_reads_only_what_changed;
    SALESFORCE:
        salesforce_converges_under_churn,
        salesforce_loses_nothing_when_rows_move_mid_run,
        salesforce_reads_only_what_changed;
    JIRA:
        jira_converges_under_churn,
        jira_loses_nothing_when_rows_move_mid_run,
        jira_reads_only_what_changed;
    GRAPH:
        graph_converges_under_churn,
        graph_loses_nothing_when_rows_move_mid_run,
        graph_reads_only_what_changed;
    POSTGREST:
        postgrest_converges_under_churn,
        postgrest_loses_nothing_when_rows_move_mid_run,
        postgrest_reads_only_what_changed;
    CLAMP:
        clamp_converges_under_churn,
        clamp_loses_nothing_when_rows_move_mid_run,
        clamp_reads_only_what_changed;
}

/// HubSpot answers at most 10,000 results per query: a listing of more must be read by
/// starting new queries from the newest since value read, not by failing at the cap.
#[tokio::test]
async fn hubspot_reads_past_the_result_cap() {
    let (upstream, app, _) = setup(&HUBSPOT, 43, 10_100, 200).await;
    let job = app.sync(HUBSPOT.dialect, HUBSPOT.stream, "full").await;
    assert_eq!(job["status"], "succeeded", "{job:#}");
    let truth = upstream.truth_by(HUBSPOT.dialect, HUBSPOT.key).await;
    let mirror = app.mirror(HUBSPOT.dialect, HUBSPOT.stream).await;
    if let Some(diff) = diff(&truth, &mirror) {
        panic!("hubspot: the mirror: {diff}");
    }
}
