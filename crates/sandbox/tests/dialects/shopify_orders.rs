//! Shopify orders and their transactions (a parent and its sub-resource): orders by
//! `(updated_at, id)` with `updated_at_min` and `page_info` links, one order's
//! transactions (a `404` once the order is gone), and churn of transactions moving their
//! order's `updated_at` unless told not to.

use super::*;

const ORDERS: &str = "/shopify/admin/api/2024-10/orders.json";

fn transactions_of(order: &str) -> String {
    format!("/shopify/admin/api/2024-10/orders/{order}/transactions.json")
}

/// The sandbox's truth: orders by id, transactions by `<order id>/<id>`.
async fn truth(upstream: &Upstream) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let reply = upstream.get("/_control/shopify_orders/truth", &[]).await;
    let both: BTreeMap<String, BTreeMap<String, Box<RawValue>>> =
        serde_json::from_str(&reply.body).unwrap();
    let texts = |name: &str| {
        both[name]
            .iter()
            .map(|(k, v)| (k.clone(), v.get().to_owned()))
            .collect()
    };
    (texts("orders"), texts("transactions"))
}

#[tokio::test]
async fn orders_and_their_transactions_page_to_the_truth() {
    let upstream = start(61, 45).await;
    let pages = follow_next(
        &upstream,
        &upstream.url(ORDERS, &[("limit", "10"), ("status", "any")]),
        async |_| {},
    )
    .await;
    assert_eq!(pages.len(), 5);
    let records: Vec<String> = pages.iter().flat_map(|p| p.records("orders")).collect();
    let (orders, transactions) = truth(&upstream).await;
    assert_eq!(mirror(records, "id"), orders);

    let mut listed = BTreeMap::new();
    for order in orders.keys() {
        let pages = follow_next(
            &upstream,
            &upstream.url(&transactions_of(order), &[("limit", "1")]),
            async |_| {},
        )
        .await;
        for text in pages.iter().flat_map(|p| p.records("transactions")) {
            let value = parse(&text);
            assert_eq!(id_text(&value["order_id"]), *order);
            listed.insert(format!("{order}/{}", id_text(&value["id"])), text);
        }
    }
    assert_eq!(listed, transactions);
    assert!(transactions.len() > 45, "{}", transactions.len());

    let missing = upstream.get(&transactions_of("1"), &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json(), json!({"errors": "Not Found"}));
}

#[tokio::test]
async fn a_transaction_moves_its_order_unless_told_not_to() {
    let upstream = start(62, 10).await;
    let (before, _) = truth(&upstream).await;
    upstream.tick(5).await;
    let touched = upstream
        .control("shopify_orders/transactions/create", json!({"count": 1}))
        .await;
    let key = touched["ids"][0].as_str().unwrap().to_owned();
    let order = key.split('/').next().unwrap().to_owned();
    let (after, transactions) = truth(&upstream).await;
    assert!(transactions.contains_key(&key));
    let updated = |orders: &BTreeMap<String, String>| parse(&orders[&order])["updated_at"].clone();
    assert_ne!(updated(&before), updated(&after));
    // The order is listed again from its new time on.
    let since = updated(&after);
    let fresh = upstream
        .get(ORDERS, &[("updated_at_min", since.as_str().unwrap())])
        .await;
    assert_eq!(ids(&fresh.records("orders"), "id"), vec![order.clone()]);

    let silent = upstream
        .control(
            "shopify_orders/transactions/update",
            json!({"count": 3, "touch_order": false}),
        )
        .await;
    assert_eq!(silent["ids"].as_array().unwrap().len(), 3);
    let (unchanged, _) = truth(&upstream).await;
    assert_eq!(
        unchanged, after,
        "a silent change leaves every order as it was"
    );

    let deleted = upstream
        .control("shopify_orders/delete", json!({"count": 2}))
        .await;
    for id in deleted["ids"].as_array().unwrap() {
        let gone = upstream
            .get(&transactions_of(id.as_str().unwrap()), &[])
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
}
