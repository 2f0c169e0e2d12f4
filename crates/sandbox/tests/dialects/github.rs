//! GitHub issues: page-numbered `Link` paging, `since`, state and sort, shifting pages.

use super::*;

const ISSUES: &str = "/github/repos/tidemark/sandbox/issues";

fn all_updated_asc(upstream: &Upstream, per_page: &str) -> String {
    upstream.url(
        ISSUES,
        &[
            ("state", "all"),
            ("sort", "updated"),
            ("direction", "asc"),
            ("per_page", per_page),
        ],
    )
}

#[tokio::test]
async fn paging_by_next_link_returns_the_truth_in_updated_order() {
    let upstream = start(21, 230).await;
    upstream.churn("github/delete", 3).await;
    let pages = follow_next(&upstream, &all_updated_asc(&upstream, "50"), async |_| {}).await;
    assert_eq!(pages.len(), 5, "227 issues in pages of 50");
    let records: Vec<String> = pages.iter().flat_map(|p| p.records("")).collect();
    assert_eq!(records.len(), 227);
    let updated = texts(&records, "/updated_at");
    assert!(ascending(&updated));
    assert!(
        updated.windows(2).any(|w| w[0] == w[1]),
        "issues share seconds"
    );
    assert_eq!(mirror(records, "id"), upstream.truth("github", "id").await);

    // The first page links next and last; the last one prev and first; pages are numbers.
    let rels =
        |reply: &Reply| -> Vec<String> { links(reply).into_iter().map(|(_, r)| r).collect() };
    assert_eq!(rels(&pages[0]), ["next", "last"]);
    assert_eq!(rels(&pages[2]), ["prev", "next", "last", "first"]);
    assert_eq!(rels(&pages[4]), ["prev", "first"]);
    let next = link(&pages[0], "next").unwrap();
    assert!(
        next.starts_with(&format!("{}{ISSUES}?", upstream.base)),
        "{next}"
    );
    assert!(
        next.contains("state=all") && next.ends_with("&page=2"),
        "{next}"
    );
    assert!(link(&pages[0], "last").unwrap().ends_with("&page=5"));

    // A page past the end is empty, and links back only.
    let past = upstream.get_url(&format!("{next}0")).await;
    assert_eq!(past.ok(), json!([]));
    assert_eq!(link(&past, "next"), None);
    assert!(link(&past, "prev").unwrap().ends_with("&page=5"));
}

#[tokio::test]
async fn defaults_are_open_issues_newest_created_first_thirty_a_page() {
    let upstream = start(22, 120).await;
    let truth = upstream.truth("github", "id").await;
    let open = truth
        .values()
        .filter(|r| parse(r)["state"] == "open")
        .count();
    let closed = truth
        .values()
        .filter(|r| parse(r)["state"] == "closed")
        .count();
    assert!(open > 0 && closed > 0 && open + closed == 120);

    let first = upstream.get(ISSUES, &[]).await;
    let records = first.records("");
    assert_eq!(records.len(), 30);
    assert!(records.iter().all(|r| parse(r)["state"] == "open"));
    let mut created = texts(&records, "/created_at");
    created.reverse();
    assert!(ascending(&created), "newest first");
    let opened: Vec<Reply> = follow_next(&upstream, &upstream.url(ISSUES, &[]), async |_| {}).await;
    let opened: usize = opened.iter().map(|p| p.records("").len()).sum();
    assert_eq!(opened, open);

    let closed_only = upstream
        .get(ISSUES, &[("state", "closed"), ("per_page", "100")])
        .await;
    assert_eq!(closed_only.records("").len(), closed);
    // Pull requests are issues too, with a pull_request key.
    let pulls = truth
        .values()
        .filter(|r| parse(r).get("pull_request").is_some())
        .count();
    assert_eq!(pulls, 30, "every fourth issue");
    // per_page is capped at 100.
    let capped = upstream
        .get(ISSUES, &[("state", "all"), ("per_page", "500")])
        .await;
    assert_eq!(capped.records("").len(), 100);
}

#[tokio::test]
async fn since_is_inclusive_to_the_second_on_the_updated_time() {
    let upstream = start(23, 200).await;
    let (earlier, _) = upstream.churn("github/update", 2).await;
    let (touched, at) = upstream.churn("github/mass_update", 4).await;
    let since = |value: &str| {
        upstream.url(
            ISSUES,
            &[
                ("state", "all"),
                ("sort", "updated"),
                ("direction", "asc"),
                ("since", value),
            ],
        )
    };
    let at_second = upstream.get_url(&since(&at)).await.records("");
    assert_eq!(ids(&at_second, "id"), touched, "the tie, by id");
    let later = chrono::DateTime::parse_from_rfc3339(&at).unwrap() + chrono::TimeDelta::seconds(1);
    let after = upstream
        .get_url(&since(&later.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .await;
    assert_eq!(after.ok(), json!([]));
    let before = chrono::DateTime::parse_from_rfc3339(&at).unwrap() - chrono::TimeDelta::seconds(2);
    // Other offsets name the same instant.
    let shifted = before.with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap());
    let from_earlier = upstream
        .get_url(&since(&shifted.to_rfc3339()))
        .await
        .records("");
    let mut expected: Vec<&String> = earlier.iter().chain(&touched).collect();
    expected.sort();
    expected.dedup();
    let mut seen = ids(&from_earlier, "id");
    seen.sort();
    assert_eq!(seen.iter().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn an_update_moves_an_issue_to_the_end_and_page_numbers_shift() {
    let upstream = start(24, 100).await;
    let listing = |per_page: &str, page: &str| {
        let mut url = all_updated_asc(&upstream, per_page);
        url.push_str(&format!("&page={page}"));
        url
    };
    let before = ids(
        &upstream.get_url(&listing("100", "1")).await.records(""),
        "id",
    );
    let page_one = ids(
        &upstream.get_url(&listing("10", "1")).await.records(""),
        "id",
    );
    assert_eq!(page_one, before[..10]);
    let (updated, _) = upstream.churn("github/update", 50).await;
    let after = ids(
        &upstream.get_url(&listing("100", "1")).await.records(""),
        "id",
    );
    // The updated issues come last, in the order they were updated (one a second).
    let tail: std::collections::BTreeSet<&String> = after[50..].iter().collect();
    assert_eq!(tail, updated.iter().collect());
    let page_two = ids(
        &upstream.get_url(&listing("10", "2")).await.records(""),
        "id",
    );
    assert_eq!(
        page_two,
        after[10..20],
        "pages are offsets into today's order"
    );
    // What slid onto the page already read is never seen in this pass.
    let missed: Vec<&String> = after[..10]
        .iter()
        .filter(|id| !page_one.contains(id))
        .collect();
    assert!(
        !missed.is_empty(),
        "rows slid back onto the page already read"
    );
}

#[tokio::test]
async fn bad_values_are_a_422_and_other_repositories_a_404() {
    let upstream = start(25, 5).await;
    for (name, value) in [
        ("state", "gone"),
        ("sort", "id"),
        ("direction", "up"),
        ("since", "yesterday"),
    ] {
        let reply = upstream.get(ISSUES, &[(name, value)]).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}={value}"
        );
        let body = reply.json();
        assert_eq!(body["message"], "Validation Failed");
        assert_eq!(body["errors"][0]["field"], name);
    }
    let missing = upstream
        .get("/github/repos/octocat/hello/issues", &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["message"], "Not Found");
}
