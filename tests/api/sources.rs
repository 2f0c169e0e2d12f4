//! Sources, streams and cursors: the control plane of docs/design.md §6.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{assert_problem, design_source, spawn};

#[tokio::test]
async fn the_design_source_is_accepted_read_replaced_and_deleted() {
    let app = spawn().await;
    let spec = design_source();

    let created = app.post("/v1/sources", &spec).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/sources/shop");
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["name"], "shop");
    let kinds: Vec<&str> = created["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pagination"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["keyset", "token", "position", "offset", "offset", "link"]
    );
    // Defaults are filled in, and the spec's own values are kept.
    assert_eq!(created["streams"][0]["pagination"]["lookback_seconds"], 2);
    assert_eq!(
        created["streams"][4]["pagination"]["since"]["from"],
        "sync_start"
    );
    assert_eq!(
        created["streams"][3]["pagination"]["since"]["from"],
        "max_record"
    );
    assert_eq!(
        created["auth"],
        json!({"type": "bearer", "token": {"env": "SHOP_TOKEN"}})
    );

    let read: Value = app.get_json("/v1/sources/shop").await;
    assert_eq!(read["streams"], created["streams"]);
    assert_eq!(read["created_at"], created["created_at"]);

    let list: Value = app.get_json("/v1/sources").await;
    assert_eq!(list["results"].as_array().unwrap().len(), 1);
    assert_eq!(list["next"], Value::Null);

    for stream in [
        "products",
        "sales",
        "conversations",
        "items",
        "items_deleted",
        "orders",
    ] {
        let s = app.get(&format!("/v1/sources/shop/streams/{stream}")).await;
        assert_eq!(s.status(), 200, "{stream}");
        let s: Value = s.json().await.unwrap();
        assert_eq!(s["source"], "shop");
        assert_eq!(s["name"], stream);
        assert_eq!(s["cursor"], Value::Null);
        assert_eq!(s["last_job"], Value::Null);
    }
    let deletions: Value = app.get_json("/v1/sources/shop/streams/items_deleted").await;
    assert_eq!(deletions["deletes"], "items");

    // Replace: drop `orders`, change `sales` from token to none, add `customers`.
    let products = app
        .put(
            "/v1/sources/shop/streams/products/cursor",
            &json!({"cursor": {"updated_since": "2017-09-04 00:00:00 +03:00", "from_id": 123}}),
        )
        .await;
    assert_eq!(products.status(), 200);
    let sales = app
        .put(
            "/v1/sources/shop/streams/sales/cursor",
            &json!({"cursor": {"token": "abc"}}),
        )
        .await;
    assert_eq!(sales.status(), 200);
    let sales: Value = app.get_json("/v1/sources/shop/streams/sales/cursor").await;
    assert_eq!(sales["cursor"]["token"], "abc");
    let mut replaced = spec.clone();
    let streams = replaced["streams"].as_array_mut().unwrap();
    streams.retain(|s| s["name"] != "orders");
    streams[1]["pagination"] = json!({"type": "none"});
    streams.push(json!({
        "name": "customers",
        "request": {"path": "/customers"},
        "records": {"key": "/id"},
        "pagination": {"type": "link", "next": "/next"}
    }));
    let put = app.put("/v1/sources/shop", &replaced).await;
    assert_eq!(put.status(), 200);
    let put: Value = put.json().await.unwrap();
    assert_eq!(put["created_at"], created["created_at"]);
    assert_ne!(put["updated_at"], created["updated_at"]);

    assert_problem(
        app.get("/v1/sources/shop/streams/orders").await,
        404,
        "not-found",
    )
    .await;
    let customers = app.get("/v1/sources/shop/streams/customers").await;
    assert_eq!(customers.status(), 200);
    // The unchanged stream keeps its cursor; the one whose strategy changed loses it.
    let products: Value = app
        .get_json("/v1/sources/shop/streams/products/cursor")
        .await;
    assert_eq!(products["cursor"]["from_id"], 123);
    let sales: Value = app.get_json("/v1/sources/shop/streams/sales/cursor").await;
    assert_eq!(sales["cursor"], Value::Null);

    let deleted = app.delete("/v1/sources/shop").await;
    assert_eq!(deleted.status(), 204);
    assert_problem(app.get("/v1/sources/shop").await, 404, "not-found").await;
    assert_problem(
        app.get("/v1/sources/shop/streams/products").await,
        404,
        "not-found",
    )
    .await;
    assert_problem(app.delete("/v1/sources/shop").await, 404, "not-found").await;
    assert_problem(app.put("/v1/sources/shop", &spec).await, 404, "not-found").await;
    // The name is free again.
    assert_eq!(app.post("/v1/sources", &spec).await.status(), 201);
}

#[tokio::test]
async fn a_duplicate_name_is_a_conflict() {
    let app = spawn().await;
    assert_eq!(
        app.post("/v1/sources", &design_source()).await.status(),
        201
    );
    let again = app.post("/v1/sources", &design_source()).await;
    let problem = assert_problem(again, 409, "conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("shop"));
}

#[tokio::test]
async fn a_source_cannot_be_renamed_by_put() {
    let app = spawn().await;
    app.post("/v1/sources", &design_source()).await;
    let mut renamed = design_source();
    renamed["name"] = json!("other");
    let problem =
        assert_problem(app.put("/v1/sources/shop", &renamed).await, 409, "conflict").await;
    assert!(problem["detail"].as_str().unwrap().contains("renamed"));
}

fn minimal(name: &str) -> Value {
    json!({
        "name": name,
        "base_url": "http://127.0.0.1:9000",
        "streams": [{"name": "s", "request": {"path": "/x"}, "records": {"key": "/id"}, "pagination": {"type": "none"}}]
    })
}

#[tokio::test]
async fn sources_are_listed_in_pages_by_name() {
    let app = spawn().await;
    for name in ["c", "a", "e", "b", "d"] {
        assert_eq!(app.post("/v1/sources", &minimal(name)).await.status(), 201);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..5 {
        let page: Value = app
            .get_json(&format!("/v1/sources?limit=2&after={after}"))
            .await;
        for s in page["results"].as_array().unwrap() {
            seen.push(s["name"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let problem = assert_problem(
        app.get("/v1/sources?limit=0").await,
        400,
        "invalid-parameter",
    )
    .await;
    assert_eq!(problem["pointer"], "/limit");
    assert_problem(app.get("/v1/sources?limit=x").await, 400, "bad-request").await;
}

#[tokio::test]
async fn cursors_are_set_read_and_reset_verbatim() {
    let app = spawn().await;
    app.post("/v1/sources", &design_source()).await;
    let cases = [
        (
            "products",
            json!({"updated_since": "2017-09-04 00:00:00 +03:00", "from_id": 1160406004324630614_u64}),
        ),
        ("sales", json!({"token": "opaque-token"})),
        ("items", json!({"high_water": "2024-01-20T10:30:00Z"})),
        (
            "orders",
            json!({"next": "http://127.0.0.1:9000/orders?page=2"}),
        ),
    ];
    for (stream, cursor) in cases {
        let path = format!("/v1/sources/shop/streams/{stream}/cursor");
        let put = app.put(&path, &json!({ "cursor": cursor })).await;
        assert_eq!(put.status(), 200, "{stream}");
        let got: Value = app.get_json(&path).await;
        assert_eq!(got["cursor"], cursor, "{stream}");
        assert_eq!(got["stream"], format!("shop/{stream}"));
        assert!(got["updated_at"].is_string());
        assert_eq!(got["job"], Value::Null);
        let view: Value = app
            .get_json(&format!("/v1/sources/shop/streams/{stream}"))
            .await;
        assert_eq!(view["cursor"], cursor);

        assert_eq!(app.delete(&path).await.status(), 204);
        let reset: Value = app.get_json(&path).await;
        assert_eq!(reset["cursor"], Value::Null);
    }

    // Numbers keep their exact text: no float or integer round trip.
    let path = "/v1/sources/shop/streams/conversations/cursor";
    let body = r#"{"cursor": {"position": [1684739969.358085, 1160406004324630614]}}"#;
    let put = app
        .request(Method::PUT, path)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let text = app.get(path).await.text().await.unwrap();
    assert!(
        text.contains("[1684739969.358085,1160406004324630614]"),
        "{text}"
    );

    // `null` resets too.
    let put = app.put(path, &json!({"cursor": null})).await;
    let view: Value = put.json().await.unwrap();
    assert_eq!(view["cursor"], Value::Null);
}

#[tokio::test]
async fn a_cursor_of_the_wrong_shape_is_refused_with_its_pointer() {
    let app = spawn().await;
    app.post("/v1/sources", &design_source()).await;
    let mut none = minimal("single");
    none["streams"][0]["name"] = json!("once");
    app.post("/v1/sources", &none).await;
    let cases = [
        ("shop", "products", json!({"from_id": 1}), "/cursor"),
        (
            "shop",
            "products",
            json!({"updated_since": 5}),
            "/cursor/updated_since",
        ),
        (
            "shop",
            "sales",
            json!({"token": "a", "extra": 1}),
            "/cursor/extra",
        ),
        (
            "shop",
            "conversations",
            json!({"position": null}),
            "/cursor/position",
        ),
        (
            "shop",
            "orders",
            json!({"next": "not a url"}),
            "/cursor/next",
        ),
        (
            "shop",
            "orders",
            json!({"next": "http://169.254.169.254/latest"}),
            "/cursor/next",
        ),
        ("single", "once", json!({"anything": 1}), "/cursor"),
    ];
    for (source, stream, cursor, pointer) in cases {
        let put = app
            .put(
                &format!("/v1/sources/{source}/streams/{stream}/cursor"),
                &json!({ "cursor": cursor }),
            )
            .await;
        let problem = assert_problem(put, 422, "invalid-spec").await;
        assert_eq!(problem["pointer"], pointer, "{stream}: {problem}");
    }
    let missing = app
        .put("/v1/sources/shop/streams/sales/cursor", &json!({}))
        .await;
    assert_problem(missing, 422, "invalid-spec").await;
    let unknown = app
        .put(
            "/v1/sources/shop/streams/nope/cursor",
            &json!({"cursor": null}),
        )
        .await;
    assert_problem(unknown, 404, "not-found").await;
    assert_problem(
        app.delete("/v1/sources/nope/streams/x/cursor").await,
        404,
        "not-found",
    )
    .await;
}

/// Every kind of inline secret, to prove none is ever returned.
fn secret_source(auth: Value) -> Value {
    let mut spec = minimal("secretive");
    spec["auth"] = auth;
    spec["webhook_secret"] = json!({"value": "webhook-SECRET-7"});
    spec
}

#[tokio::test]
async fn inline_secrets_are_never_returned() {
    let app = spawn().await;
    let auths = [
        json!({"type": "bearer", "token": {"value": "bearer-SECRET-1"}}),
        json!({"type": "basic", "username": "u", "password": {"value": "basic-SECRET-2"}}),
        json!({"type": "header", "name": "X-Api-Key", "value": "header-SECRET-3"}),
        json!({"type": "query", "name": "api_key", "value": {"value": "query-SECRET-4"}}),
        json!({"type": "oauth2", "token_url": "http://127.0.0.1:9000/token", "grant": "refresh_token",
               "client_id": "id", "client_secret": {"value": "client-SECRET-5"},
               "refresh_token": {"value": "refresh-SECRET-6"}}),
    ];
    for auth in auths {
        let spec = secret_source(auth);
        let mut bodies = Vec::new();
        bodies.push(app.post("/v1/sources", &spec).await.text().await.unwrap());
        bodies.push(
            app.put("/v1/sources/secretive", &spec)
                .await
                .text()
                .await
                .unwrap(),
        );
        bodies.push(app.get("/v1/sources/secretive").await.text().await.unwrap());
        bodies.push(app.get("/v1/sources").await.text().await.unwrap());
        bodies.push(
            app.get("/v1/sources/secretive/streams/s")
                .await
                .text()
                .await
                .unwrap(),
        );
        for body in &bodies {
            assert!(!body.contains("SECRET"), "a secret leaked: {body}");
        }
        assert!(bodies[2].contains(r#"{"redacted":true}"#), "{}", bodies[2]);
        assert_eq!(app.delete("/v1/sources/secretive").await.status(), 204);
    }
    // A redacted secret sent back is refused, not stored as the secret.
    let echoed = secret_source(json!({"type": "bearer", "token": {"redacted": true}}));
    let problem = assert_problem(app.post("/v1/sources", &echoed).await, 422, "invalid-spec").await;
    assert_eq!(problem["pointer"], "/auth/token/redacted");
}
