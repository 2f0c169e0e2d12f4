//! The clamping page-number API: `next` in the body, the last page again past the end.

use super::*;

const THINGS: &str = "/clamp/things";

/// A page's body as JSON, with its things' texts byte for byte.
struct Page {
    body: Value,
    things: Vec<String>,
}

async fn page(upstream: &Upstream, page: &str, extra: &[(&str, &str)]) -> Page {
    let mut params = vec![("page", page)];
    params.extend_from_slice(extra);
    let reply = upstream.get(THINGS, &params).await;
    Page {
        body: reply.ok(),
        things: reply.records("things"),
    }
}

#[tokio::test]
async fn paging_by_next_until_null_returns_the_truth_and_past_the_end_repeats_the_last_page() {
    let upstream = start(111, 230).await;
    upstream.churn("clamp/delete", 5).await;
    let mut number = "1".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    for _ in 0..MAX_PAGES {
        let page = page(&upstream, &number, &[("per_page", "50")]).await;
        pages += 1;
        seen.extend(page.things);
        match &page.body["next"] {
            Value::Null => break,
            next => number = next.to_string(),
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 225);
    let modified = texts(&seen, "/modified_at");
    assert!(ascending(&modified));
    assert_eq!(mirror(seen, "id"), upstream.truth("clamp", "id").await);

    let last = page(&upstream, "5", &[("per_page", "50")]).await.body;
    assert_eq!(last["next"], Value::Null);
    assert_eq!(last["things"].as_array().unwrap().len(), 25);
    for past in ["6", "7", "1000"] {
        let again = page(&upstream, past, &[("per_page", "50")]).await.body;
        assert_eq!(again, last, "page {past} is the last page again");
    }
    let below = page(&upstream, "0", &[("per_page", "50")]).await.body;
    assert_eq!(
        (below["page"].clone(), below["next"].clone()),
        (json!(1), json!(2))
    );
    // per_page is clamped too: 20 by default, at most 100.
    assert_eq!(upstream.get(THINGS, &[]).await.records("things").len(), 20);
    assert_eq!(
        page(&upstream, "1", &[("per_page", "500")])
            .await
            .things
            .len(),
        100
    );
}

#[tokio::test]
async fn modified_since_is_inclusive_and_an_update_moves_a_thing_to_the_end() {
    let upstream = start(112, 40).await;
    let (touched, at) = upstream.churn("clamp/mass_update", 3).await;
    let since = page(&upstream, "1", &[("modified_since", &at)]).await;
    assert_eq!(ids(&since.things, "id"), touched);
    let later = (chrono::DateTime::parse_from_rfc3339(&at).unwrap()
        + chrono::TimeDelta::seconds(1))
    .to_rfc3339();
    let none = page(&upstream, "1", &[("modified_since", &later)])
        .await
        .body;
    assert_eq!(
        (none["things"].clone(), none["next"].clone()),
        (json!([]), Value::Null)
    );
    let ninth = page(&upstream, "9", &[("modified_since", &later)])
        .await
        .body;
    assert_eq!(ninth, none, "an empty listing's last page is its first");

    let before = ids(
        &page(&upstream, "1", &[("per_page", "100")]).await.things,
        "id",
    );
    let (updated, _) = upstream.churn("clamp/update", 1).await;
    let after = ids(
        &page(&upstream, "1", &[("per_page", "100")]).await.things,
        "id",
    );
    assert_eq!(after.last(), updated.first());
    assert_eq!(
        before
            .iter()
            .filter(|id| **id != updated[0])
            .collect::<Vec<_>>(),
        after[..39].iter().collect::<Vec<_>>()
    );

    for params in [
        &[("page", "two")][..],
        &[("per_page", "x")][..],
        &[("modified_since", "soon")][..],
    ] {
        let reply = upstream.get(THINGS, params).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{params:?}");
        assert!(reply.json()["error"].is_string());
    }
}
