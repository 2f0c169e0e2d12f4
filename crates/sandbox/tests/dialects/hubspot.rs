//! HubSpot CRM search: a POST body with filters, sorts and `after`, `paging.next.after`,
//! the 10,000-result cap, HubSpot's validation errors.

use super::*;

const SEARCH: &str = "/hubspot/crm/v3/objects/contacts/search";

/// The usual incremental search: `lastmodifieddate` `operator` `since` (ms), ascending.
fn body(operator: &str, since: i64, limit: u64, after: Option<&str>) -> Value {
    let mut body = json!({
        "filterGroups": [{ "filters": [
            { "propertyName": "lastmodifieddate", "operator": operator, "value": since.to_string() }
        ] }],
        "sorts": [{ "propertyName": "lastmodifieddate", "direction": "ASCENDING" }],
        "limit": limit,
    });
    if let Some(after) = after {
        body["after"] = after.into();
    }
    body
}

/// Pages through a search by `paging.next.after` until there is none.
async fn walk(upstream: &Upstream, operator: &str, since: i64, limit: u64) -> Vec<Reply> {
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = upstream
            .post_json(SEARCH, &body(operator, since, limit, after.as_deref()))
            .await;
        let page = reply.ok();
        after = page
            .pointer("/paging/next/after")
            .map(|a| a.as_str().unwrap().to_owned());
        pages.push(reply);
        if after.is_none() {
            return pages;
        }
    }
    panic!("paging did not end within {MAX_PAGES} pages");
}

fn millis(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn paging_by_after_returns_the_truth_in_lastmodifieddate_order() {
    let upstream = start(61, 230).await;
    upstream.churn("hubspot/delete", 5).await;
    let pages = walk(&upstream, "GTE", 0, 100).await;
    assert_eq!(pages.len(), 3);
    assert!(pages.iter().all(|p| p.json()["total"] == 225));
    assert_eq!(pages[0].json()["paging"]["next"]["after"], "100");
    assert!(
        pages[2].json().get("paging").is_none(),
        "no paging on the last page"
    );
    let records: Vec<String> = pages.iter().flat_map(|p| p.records("results")).collect();
    let modified = texts(&records, "/properties/lastmodifieddate");
    assert!(ascending(&modified));
    assert!(
        modified
            .iter()
            .all(|m| m.len() == "2017-09-03T20:59:58.123Z".len()),
        "milliseconds"
    );
    assert_eq!(mirror(records, "id"), upstream.truth("hubspot", "id").await);

    // Without sorts, by creation (id); ten a page by default.
    let default = upstream.post_json(SEARCH, &json!({})).await;
    let numbers: Vec<u64> = ids(&default.records("results"), "id")
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 10);
    assert!(ascending(&numbers));
}

#[tokio::test]
async fn gte_is_inclusive_and_gt_exclusive_to_the_millisecond() {
    let upstream = start(62, 80).await;
    let (touched, at) = upstream.churn("hubspot/mass_update", 3).await;
    let at = millis(&at);
    let stamp = {
        let truth = upstream.truth("hubspot", "id").await;
        millis(
            parse(&truth[&touched[0]])["properties"]["lastmodifieddate"]
                .as_str()
                .unwrap(),
        )
    };
    assert!(
        stamp >= at && stamp < at + 1000,
        "a shared stamp with milliseconds"
    );
    let found = |operator: &'static str, value: i64| {
        let upstream = &upstream;
        async move {
            let reply = upstream
                .post_json(SEARCH, &body(operator, value, 200, None))
                .await;
            ids(&reply.records("results"), "id")
        }
    };
    assert_eq!(found("GTE", stamp).await, touched);
    assert!(found("GT", stamp).await.is_empty());
    assert_eq!(found("GTE", stamp + 1).await, Vec::<String>::new());
    assert_eq!(found("LT", stamp).await.len(), 77);
    // ISO 8601 values are taken as well.
    let iso = chrono::DateTime::from_timestamp_millis(stamp)
        .unwrap()
        .to_rfc3339();
    let reply = upstream
        .post_json(
            SEARCH,
            &json!({ "filterGroups": [{ "filters": [
            { "propertyName": "hs_lastmodifieddate", "operator": "EQ", "value": iso }
        ] }] }),
        )
        .await;
    assert_eq!(ids(&reply.records("results"), "id"), touched);
}

#[tokio::test]
async fn a_query_reaches_ten_thousand_results_and_then_refuses() {
    let upstream = start(63, 10_050).await;
    let page = |after: &str, limit: u64| {
        let body = body("GTE", 0, limit, Some(after));
        let upstream = &upstream;
        async move { upstream.post_json(SEARCH, &body).await }
    };
    let near = page("9800", 200).await.ok();
    assert_eq!(near["total"], 10_050, "total counts past the cap");
    assert_eq!(near["results"].as_array().unwrap().len(), 200);
    assert_eq!(near["paging"]["next"]["after"], "10000");
    let cut = page("9900", 200).await.ok();
    assert_eq!(
        cut["results"].as_array().unwrap().len(),
        100,
        "cut at 10,000"
    );
    assert_eq!(cut["paging"]["next"]["after"], "10000");
    let refused = page("10000", 200).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let error = refused.json();
    assert_eq!(error["status"], "error");
    assert_eq!(error["category"], "VALIDATION_ERROR");
    assert!(
        error["message"].as_str().unwrap().contains("10000"),
        "{error}"
    );
    assert!(error["correlationId"].as_str().unwrap().len() == 36);
}

#[tokio::test]
async fn an_update_moves_a_contact_to_the_end_and_offsets_shift() {
    let upstream = start(64, 60).await;
    let before = ids(
        &upstream
            .post_json(SEARCH, &body("GTE", 0, 60, None))
            .await
            .records("results"),
        "id",
    );
    let (updated, _) = upstream.churn("hubspot/update", 30).await;
    let after = ids(
        &upstream
            .post_json(SEARCH, &body("GTE", 0, 60, None))
            .await
            .records("results"),
        "id",
    );
    let tail: std::collections::BTreeSet<&String> = after[30..].iter().collect();
    assert_eq!(tail, updated.iter().collect());
    let unchanged: Vec<&String> = before.iter().filter(|id| !updated.contains(id)).collect();
    assert_eq!(after[..30].iter().collect::<Vec<_>>(), unchanged);
}

#[tokio::test]
async fn misuse_is_a_validation_error() {
    let upstream = start(65, 5).await;
    let filter = json!({ "propertyName": "lastmodifieddate", "operator": "GTE", "value": "0" });
    let sort = json!({ "propertyName": "lastmodifieddate" });
    let cases = [
        json!({ "limit": 201 }),
        json!({ "limit": 0 }),
        json!({ "after": "ten" }),
        json!({ "sorts": [sort, sort] }),
        json!({ "filterGroups": vec![json!({ "filters": [filter] }); 6] }),
        json!({ "filterGroups": [{ "filters": vec![filter.clone(); 7] }] }),
        json!({ "filterGroups": vec![json!({ "filters": vec![filter.clone(); 5] }); 4] }),
        json!({ "filterGroups": [{ "filters": [{ "propertyName": "email", "operator": "EQ", "value": "x" }] }] }),
        json!({ "filterGroups": [{ "filters": [{ "propertyName": "createdate", "operator": "CONTAINS_TOKEN", "value": "1" }] }] }),
        json!({ "query": "ada" }),
        json!({ "sorts": [{ "propertyName": "lastmodifieddate", "direction": "UP" }] }),
        json!({ "padding": "x".repeat(3000) }),
    ];
    for body in cases {
        let reply = upstream.post_json(SEARCH, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.json()["category"], "VALIDATION_ERROR");
    }
    let broken = upstream
        .client
        .post(format!("{}{SEARCH}", upstream.base))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
}
