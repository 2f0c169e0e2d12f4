//! Stripe customers: newest first, `starting_after` / `ending_before`, `has_more`,
//! `created[...]`, Stripe's refusals.

use super::*;

const CUSTOMERS: &str = "/stripe/v1/customers";

/// Pages with `starting_after` the last id until `has_more` is false, sending `filters`
/// on every page (as a Stripe client does); returns the pages' bodies.
async fn walk(upstream: &Upstream, filters: &[(&str, &str)]) -> Vec<Value> {
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    for _ in 0..MAX_PAGES {
        let mut params = filters.to_vec();
        if let Some(after) = &after {
            params.push(("starting_after", after));
        }
        let page = upstream.get(CUSTOMERS, &params).await.ok();
        let more = page["has_more"].as_bool().unwrap();
        after = page["data"]
            .as_array()
            .unwrap()
            .last()
            .map(|c| id_text(&c["id"]));
        pages.push(page);
        if !more {
            return pages;
        }
    }
    panic!("paging did not end within {MAX_PAGES} pages");
}

fn records(pages: &[Value]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().iter().map(|c| c.to_string()))
        .collect()
}

#[tokio::test]
async fn paging_with_starting_after_returns_the_truth_newest_first() {
    let upstream = start(41, 230).await;
    let pages = walk(&upstream, &[("limit", "100")]).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0]["object"], "list");
    assert_eq!(pages[0]["url"], "/v1/customers");
    assert_eq!(pages[2]["has_more"], false);
    let records = records(&pages);
    let mut created: Vec<i64> = records
        .iter()
        .map(|r| parse(r)["created"].as_i64().unwrap())
        .collect();
    created.reverse();
    assert!(ascending(&created), "reverse chronological");
    assert!(
        ids(&records, "id")
            .iter()
            .all(|id| id.starts_with("cus_") && id.len() == 15)
    );
    // Record texts went through serde_json's Value here: compare as JSON.
    let truth: BTreeMap<String, Value> = upstream
        .truth("stripe", "id")
        .await
        .into_iter()
        .map(|(id, r)| (id, parse(&r)))
        .collect();
    let seen: BTreeMap<String, Value> = records
        .iter()
        .map(|r| (id_text(&parse(r)["id"]), parse(r)))
        .collect();
    assert_eq!(seen, truth);
    // The default page is 10.
    let first = upstream.get(CUSTOMERS, &[]).await;
    assert_eq!(first.records("data").len(), 10);
    // Raw texts are the truth's bytes.
    let raw = first.records("data");
    let truth = upstream.truth("stripe", "id").await;
    assert!(raw.iter().all(|r| truth.values().any(|t| t == r)));
}

#[tokio::test]
async fn created_filters_are_unix_seconds_gte_inclusive_gt_exclusive() {
    let upstream = start(42, 50).await;
    let (made, at) = upstream.churn("stripe/create", 3).await;
    let at: i64 = at.parse().unwrap();
    let listed = |key: &'static str, value: i64| {
        let value = value.to_string();
        let upstream = &upstream;
        async move {
            let page = upstream.get(CUSTOMERS, &[(key, value.as_str())]).await;
            ids(&page.records("data"), "id")
        }
    };
    // Created one a second: the newest first.
    let gte = listed("created[gte]", at).await;
    assert_eq!(gte, made.iter().rev().cloned().collect::<Vec<_>>());
    assert_eq!(listed("created[gt]", at).await.len(), 2);
    assert_eq!(listed("created", at + 1).await.len(), 1);
    assert_eq!(
        listed("created[lt]", at).await.len(),
        10,
        "older ones, a full page"
    );
    // The filter is resent with every page and still applies.
    let pages = walk(
        &upstream,
        &[("limit", "2"), ("created[gte]", &at.to_string())],
    )
    .await;
    assert_eq!(pages.len(), 2);
    assert_eq!(ids(&records(&pages), "id"), gte);
}

#[tokio::test]
async fn ending_before_pages_back_and_churn_moves_only_new_customers() {
    let upstream = start(43, 60).await;
    let first = upstream
        .get(CUSTOMERS, &[("limit", "20")])
        .await
        .records("data");
    let last_of_first = ids(&first, "id")[19].clone();
    let second = upstream
        .get(
            CUSTOMERS,
            &[("limit", "20"), ("starting_after", &last_of_first)],
        )
        .await
        .records("data");
    let back = upstream
        .get(
            CUSTOMERS,
            &[("limit", "20"), ("ending_before", &ids(&second, "id")[0])],
        )
        .await;
    assert_eq!(
        back.records("data"),
        first,
        "the page before, still newest first"
    );
    assert_eq!(back.ok()["has_more"], false, "nothing newer");

    // An update changes content but not the place; a new customer comes first.
    let (updated, _) = upstream.churn("stripe/update", 10).await;
    let (created, _) = upstream.churn("stripe/create", 1).await;
    let all = upstream
        .get(CUSTOMERS, &[("limit", "100")])
        .await
        .records("data");
    assert_eq!(ids(&all, "id")[0], created[0]);
    let before: Vec<String> = ids(&first, "id");
    assert_eq!(ids(&all, "id")[1..21], before[..]);
    assert!(updated.iter().any(|id| {
        let old = first
            .iter()
            .chain(&second)
            .find(|r| parse(r)["id"] == id.as_str());
        old.is_some_and(|old| !all.contains(old))
    }));

    // A deleted customer leaves the list, but a cursor on it still pages on.
    let (deleted, _) = upstream.churn("stripe/delete", 1).await;
    let rest = upstream
        .get(
            CUSTOMERS,
            &[("limit", "100"), ("starting_after", &deleted[0])],
        )
        .await
        .records("data");
    let everything = upstream
        .get(CUSTOMERS, &[("limit", "100")])
        .await
        .records("data");
    assert!(!ids(&everything, "id").contains(&deleted[0]));
    assert_eq!(everything[everything.len() - rest.len()..], rest[..]);
}

#[tokio::test]
async fn misuse_gets_stripes_invalid_request_errors() {
    let upstream = start(44, 5).await;
    let first = ids(&upstream.get(CUSTOMERS, &[]).await.records("data"), "id")[0].clone();
    /// The parameters sent, the error code and the parameter it names.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
    let cases: [Case; 6] = [
        (&[("limit", "101")], None, "limit"),
        (&[("limit", "0")], None, "limit"),
        (&[("page", "2")], Some("parameter_unknown"), "page"),
        (
            &[("starting_after", "cus_nobody")],
            Some("resource_missing"),
            "starting_after",
        ),
        (
            &[("starting_after", &first), ("ending_before", &first)],
            None,
            "starting_after",
        ),
        (
            &[("created[gte]", "yesterday")],
            Some("parameter_invalid_integer"),
            "created[gte]",
        ),
    ];
    for (params, code, param) in cases {
        let reply = upstream.get(CUSTOMERS, params).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{params:?}");
        let error = &reply.json()["error"];
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["param"], param, "{error}");
        assert_eq!(error.get("code").and_then(Value::as_str), code, "{error}");
    }
}
