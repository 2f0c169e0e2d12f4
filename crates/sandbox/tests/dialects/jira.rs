//! Jira search: `startAt` offsets until `total`, JQL dates to the minute, the silent
//! `maxResults` cap, Jira's error shape.

use super::*;

const SEARCH: &str = "/jira/rest/api/3/search";
const SINCE_EPOCH: &str = r#"updated >= "1970/01/01 00:00" ORDER BY updated ASC"#;

async fn search(upstream: &Upstream, jql: &str, start_at: usize, max: usize) -> Reply {
    let (start_at, max) = (start_at.to_string(), max.to_string());
    upstream
        .get(
            SEARCH,
            &[("jql", jql), ("startAt", &start_at), ("maxResults", &max)],
        )
        .await
}

/// Pages by `startAt` until it reaches `total`; returns every page.
async fn walk(upstream: &Upstream, jql: &str, max: usize) -> Vec<Reply> {
    let mut start_at = 0;
    let mut pages = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = search(upstream, jql, start_at, max).await;
        let page = reply.ok();
        start_at += page["issues"].as_array().unwrap().len();
        let total = page["total"].as_u64().unwrap() as usize;
        pages.push(reply);
        if start_at >= total {
            return pages;
        }
    }
    panic!("paging did not end within {MAX_PAGES} pages");
}

#[tokio::test]
async fn start_at_paging_returns_the_truth_in_updated_order() {
    let upstream = start(81, 230).await;
    upstream.churn("jira/delete", 2).await;
    let pages = walk(&upstream, SINCE_EPOCH, 100).await;
    assert_eq!(pages.len(), 3);
    let first = pages[0].json();
    assert_eq!(
        (
            first["startAt"].as_u64(),
            first["maxResults"].as_u64(),
            first["total"].as_u64()
        ),
        (Some(0), Some(100), Some(228))
    );
    assert_eq!(pages[2].json()["startAt"], 200);
    let records: Vec<String> = pages.iter().flat_map(|p| p.records("issues")).collect();
    let updated = texts(&records, "/fields/updated");
    assert!(ascending(&updated));
    assert!(
        updated[0].ends_with("+0000") && updated[0].len() == "2017-09-03T20:59:58.123+0000".len()
    );
    assert!(texts(&records, "/key").iter().all(|k| k.starts_with("TM-")));
    assert_eq!(mirror(records, "id"), upstream.truth("jira", "id").await);

    // More than 100 is 100, and the reply says so; 50 by default; past the end, nothing.
    let capped = search(&upstream, SINCE_EPOCH, 0, 1000).await.ok();
    assert_eq!(capped["maxResults"], 100);
    assert_eq!(capped["issues"].as_array().unwrap().len(), 100);
    let default = upstream.get(SEARCH, &[("jql", SINCE_EPOCH)]).await.ok();
    assert_eq!(default["issues"].as_array().unwrap().len(), 50);
    let past = search(&upstream, SINCE_EPOCH, 500, 50).await.ok();
    assert_eq!(
        (past["issues"].clone(), past["total"].clone()),
        (json!([]), json!(228))
    );
}

#[tokio::test]
async fn the_filter_is_to_the_minute_and_compares_the_full_time() {
    let upstream = start(82, 50).await;
    // Past every generated issue's minute (they are up to 50 s before the start).
    upstream.tick(90).await;
    let (touched, at) = upstream.churn("jira/mass_update", 2).await;
    let at = chrono::DateTime::parse_from_str(&at, "%Y-%m-%dT%H:%M:%S%.3f%z").unwrap();
    assert_eq!(chrono::Timelike::second(&at), 30, "{at}");
    let minute = at.format("%Y/%m/%d %H:%M").to_string();
    let found = |jql: String| {
        let upstream = &upstream;
        async move {
            ids(
                &search(upstream, &jql, 0, 100).await.records("issues"),
                "id",
            )
        }
    };
    // From the start of the minute: every issue updated in it, also before the stamp.
    let in_minute = found(format!(r#"updated >= "{minute}" ORDER BY updated ASC"#)).await;
    assert_eq!(in_minute, touched);
    // ">" the minute is still after 10:15:00.000, so an issue at :30 matches.
    assert_eq!(found(format!(r#"updated > "{minute}""#)).await, touched);
    let next_minute = (at + chrono::TimeDelta::minutes(1))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    assert!(
        found(format!("updated >= '{next_minute}'"))
            .await
            .is_empty()
    );
    let day = at.format("%Y-%m-%d").to_string();
    assert_eq!(
        found(format!("updated >= {day} AND project = TM"))
            .await
            .len(),
        50
    );
    // Epoch milliseconds are exact; a relative period counts from the sandbox clock.
    let stamp = texts(
        &search(&upstream, &format!(r#"updated >= "{minute}""#), 0, 1)
            .await
            .records("issues"),
        "/fields/updated",
    );
    let ms = chrono::DateTime::parse_from_str(&stamp[0], "%Y-%m-%dT%H:%M:%S%.3f%z")
        .unwrap()
        .timestamp_millis();
    assert_eq!(found(format!("updated >= {ms}")).await, touched);
    assert!(found(format!("updated > {ms}")).await.is_empty());
    assert_eq!(found("updated >= -1m".to_owned()).await, touched);
    // Seconds are refused.
    let seconds = search(&upstream, &format!(r#"updated >= "{minute}:30""#), 0, 10).await;
    assert_eq!(seconds.status, StatusCode::BAD_REQUEST);
    assert!(
        seconds.json()["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("yyyy/MM/dd HH:mm")
    );
}

#[tokio::test]
async fn an_update_moves_an_issue_to_the_end_and_start_at_shifts() {
    let upstream = start(83, 60).await;
    let before = ids(
        &search(&upstream, SINCE_EPOCH, 0, 100)
            .await
            .records("issues"),
        "id",
    );
    let (updated, _) = upstream.churn("jira/update", 20).await;
    let after = ids(
        &search(&upstream, SINCE_EPOCH, 0, 100)
            .await
            .records("issues"),
        "id",
    );
    let tail: std::collections::BTreeSet<&String> = after[40..].iter().collect();
    assert_eq!(tail, updated.iter().collect());
    let unchanged: Vec<&String> = before.iter().filter(|id| !updated.contains(id)).collect();
    assert_eq!(after[..40].iter().collect::<Vec<_>>(), unchanged);
    // Descending and by key work as well.
    let newest = ids(
        &search(&upstream, "ORDER BY updated DESC", 0, 1)
            .await
            .records("issues"),
        "id",
    );
    assert_eq!(newest[0], after[59]);
    let keys = texts(
        &search(&upstream, "order by key asc", 0, 60)
            .await
            .records("issues"),
        "/key",
    );
    assert_eq!(keys[0], "TM-1");
}

#[tokio::test]
async fn bad_jql_gets_jiras_error_messages() {
    let upstream = start(84, 5).await;
    for jql in [
        r#"updated >= "2017/09/04 00:00" OR created >= "2017/09/04 00:00""#,
        "summary ~ sync",
        r#"updated >= "yesterday""#,
        "project = OTHER",
        "updated >=",
        "ORDER BY priority",
    ] {
        let reply = search(&upstream, jql, 0, 10).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{jql}");
        let body = reply.json();
        assert!(
            body["errorMessages"][0]
                .as_str()
                .unwrap()
                .starts_with("Error in the JQL Query"),
            "{body}"
        );
        assert_eq!(body["errors"], json!({}));
    }
    let bad = upstream.get(SEARCH, &[("startAt", "-1")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
