//! Shopify products: `page_info` cursor links, `updated_at_min`, the 400 for a filter
//! beside `page_info`.

use super::*;

const PRODUCTS: &str = "/shopify/admin/api/2024-01/products.json";

#[tokio::test]
async fn paging_by_page_info_returns_the_truth_in_id_order() {
    let upstream = start(31, 230).await;
    let pages = follow_next(&upstream, &upstream.url(PRODUCTS, &[]), async |_| {}).await;
    assert_eq!(pages.len(), 5, "the default limit is 50");
    let records: Vec<String> = pages.iter().flat_map(|p| p.records("products")).collect();
    let numbers: Vec<u64> = ids(&records, "id")
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(ascending(&numbers));
    assert_eq!(mirror(records, "id"), upstream.truth("shopify", "id").await);
    assert_eq!(pages[0].header("x-shopify-api-version").unwrap(), "2024-01");

    // The link carries only page_info and limit; previous appears after the first page.
    let next = link(&pages[0], "next").unwrap();
    assert!(
        next.starts_with(&format!("{}{PRODUCTS}?limit=50&page_info=", upstream.base)),
        "{next}"
    );
    assert_eq!(link(&pages[0], "previous"), None);
    let previous = link(&pages[1], "previous").unwrap();
    assert_eq!(upstream.get_url(&previous).await.body, pages[0].body);
    assert_eq!(link(&pages[4], "next"), None);
    assert!(link(&pages[4], "previous").is_some());

    // One page holding everything has no Link header at all; 250 is the largest page.
    let whole = upstream.get(PRODUCTS, &[("limit", "250")]).await;
    assert_eq!(whole.records("products").len(), 230);
    assert_eq!(whole.header("link"), None);
    let capped = upstream.get(PRODUCTS, &[("limit", "1000")]).await;
    assert_eq!(capped.records("products").len(), 230);
}

#[tokio::test]
async fn page_info_refuses_any_other_filter_but_keeps_the_first_requests() {
    let upstream = start(32, 120).await;
    let (_, at) = upstream.churn("shopify/update", 30).await;
    let first = upstream
        .get(
            PRODUCTS,
            &[("updated_at_min", at.as_str()), ("limit", "10")],
        )
        .await;
    assert_eq!(first.records("products").len(), 10);
    let next = link(&first, "next").unwrap();
    // The filter rides in the token: the next pages hold only recently updated products.
    let pages = follow_next(&upstream, &next, async |_| {}).await;
    let rest: Vec<String> = pages.iter().flat_map(|p| p.records("products")).collect();
    assert_eq!(rest.len(), 20);
    assert!(texts(&rest, "/updated_at").iter().all(|u| *u >= at));

    for (name, value) in [
        ("updated_at_min", at.as_str()),
        ("since_id", "1"),
        ("status", "active"),
    ] {
        let refused = upstream.get_url(&format!("{next}&{name}={value}")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(
            refused.json()["errors"][name].is_string(),
            "{}",
            refused.body
        );
    }
    let with_fields = upstream
        .get_url(&format!("{next}&fields=id,title&limit=5"))
        .await;
    assert_eq!(with_fields.records("products").len(), 5);
    let garbled = upstream
        .get(PRODUCTS, &[("page_info", "not-a-cursor")])
        .await;
    assert_eq!(garbled.status, StatusCode::BAD_REQUEST);
    assert_eq!(garbled.json()["errors"]["page_info"], "Invalid value.");
    let version = upstream
        .get("/shopify/admin/api/latest/products.json", &[])
        .await;
    assert_eq!(version.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn updated_at_min_is_inclusive_in_any_offset() {
    let upstream = start(33, 60).await;
    let (touched, at) = upstream.churn("shopify/mass_update", 3).await;
    let at_time = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
    assert_eq!(
        at_time.offset().local_minus_utc(),
        -5 * 3600,
        "the shop's zone: {at}"
    );
    let since = |time: chrono::DateTime<chrono::FixedOffset>| {
        let text = time.to_rfc3339();
        let upstream = &upstream;
        async move {
            let reply = upstream
                .get(PRODUCTS, &[("updated_at_min", text.as_str())])
                .await;
            ids(&reply.records("products"), "id")
        }
    };
    assert_eq!(since(at_time).await, touched);
    assert_eq!(
        since(at_time.with_timezone(&chrono::FixedOffset::east_opt(0).unwrap())).await,
        touched
    );
    assert!(
        since(at_time + chrono::TimeDelta::seconds(1))
            .await
            .is_empty()
    );
    let max = upstream
        .get(
            PRODUCTS,
            &[("updated_at_max", at.as_str()), ("limit", "250")],
        )
        .await;
    assert_eq!(
        max.records("products").len(),
        60,
        "updated_at_max is inclusive too"
    );
}

#[tokio::test]
async fn a_walk_under_churn_sees_edits_ahead_and_new_products_but_not_edits_behind() {
    let upstream = start(34, 200).await;
    let mut created = Vec::new();
    let mut deleted = Vec::new();
    let mut edited = Vec::new();
    let churn = async |page: usize| {
        if page == 1 {
            edited = upstream.churn("shopify/update", 40).await.0;
            created = upstream.churn("shopify/create", 5).await.0;
            deleted = upstream.churn("shopify/delete", 5).await.0;
        }
    };
    let pages = follow_next(&upstream, &upstream.url(PRODUCTS, &[]), churn).await;
    let first_page = ids(&pages[0].records("products"), "id");
    let read_before: Vec<u64> = first_page.iter().map(|id| id.parse().unwrap()).collect();
    let records: Vec<String> = pages.iter().flat_map(|p| p.records("products")).collect();
    let seen = mirror(records, "id");
    assert!(
        created.iter().all(|id| seen.contains_key(id)),
        "new ids come last"
    );
    let truth = upstream.truth("shopify", "id").await;
    let (behind, ahead): (Vec<&String>, Vec<&String>) = edited
        .iter()
        .filter(|id| truth.contains_key(*id))
        .partition(|id| read_before.contains(&id.parse().unwrap()));
    assert!(!behind.is_empty() && !ahead.is_empty());
    assert!(
        ahead.iter().all(|id| seen[*id] == truth[*id]),
        "edits ahead are read"
    );
    assert!(
        behind.iter().all(|id| seen[*id] != truth[*id]),
        "edits behind are not"
    );
    // Deleted products ahead of the reader are never listed; those behind were read.
    for id in &deleted {
        assert!(!truth.contains_key(id));
        assert_eq!(seen.contains_key(id), first_page.contains(id), "{id}");
    }
}
