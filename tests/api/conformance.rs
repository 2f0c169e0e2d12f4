//! Answers that must match the OpenAPI document exactly: the cases API fuzzing
//! (`.ci/schemathesis.sh`) found where the server and the document disagreed.

use serde_json::{Value, json};

use crate::support::{assert_problem, design_source, spawn};

/// The bounds and patterns the document states for a query parameter.
fn param<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{path} has no parameter {name}"))
}

#[tokio::test]
async fn page_sizes_and_waits_are_bounded_in_the_document_as_on_the_server() {
    let app = spawn().await;
    let doc = serde_json::to_value(tidemark::api::openapi()).unwrap();
    for path in ["/v1/sources", "/v1/jobs", "/v1/changes"] {
        let limit = &param(&doc, path, "limit")["schema"];
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(1000))
        );
        assert_problem(
            app.get(&format!("{path}?limit=0")).await,
            400,
            "invalid-parameter",
        )
        .await;
        assert_problem(
            app.get(&format!("{path}?limit=1001")).await,
            400,
            "invalid-parameter",
        )
        .await;
        assert_eq!(app.get(&format!("{path}?limit=1000")).await.status(), 200);
    }
    let wait = &param(&doc, "/v1/changes", "wait")["schema"];
    assert_eq!(
        (&wait["minimum"], &wait["maximum"]),
        (&json!(0), &json!(60))
    );
    assert_problem(
        app.get("/v1/changes?wait=60.5").await,
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test]
async fn a_stream_filter_is_names_commas_and_spaces_only() {
    let app = spawn().await;
    app.post("/v1/sources", &design_source()).await;
    for ok in ["shop/products", "shop/products, shop/sales", "", " , "] {
        let response = app.get(&format!("/v1/changes/head?stream={ok}")).await;
        assert_eq!(response.status(), 200, "{ok:?}");
    }
    // Whitespace other than spaces was trimmed before; the document's pattern refuses it.
    for bad in ["shop/products%09", "%0Ashop/products", "Shop/products"] {
        let response = app.get(&format!("/v1/changes?stream={bad}")).await;
        let problem = assert_problem(response, 400, "invalid-parameter").await;
        assert_eq!(problem["pointer"], "/stream");
    }
}

#[tokio::test]
async fn a_sync_body_may_be_empty_null_or_a_request() {
    let app = spawn().await;
    app.post("/v1/sources", &design_source()).await;
    for body in [json!(null), json!({}), json!({"mode": "full"})] {
        let response = app
            .post("/v1/sources/shop/streams/products/sync", &body)
            .await;
        assert_eq!(response.status(), 202, "{body}");
    }
    let response = app
        .request(reqwest::Method::POST, "/v1/sources/shop/sync")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let response = app.post("/v1/sources/shop/sync", &json!("full")).await;
    assert_problem(response, 422, "invalid-spec").await;
}

#[tokio::test]
async fn the_job_list_takes_the_next_values_it_hands_out_only() {
    let app = spawn().await;
    app.post("/v1/sources", &design_source()).await;
    app.post("/v1/sources/shop/sync", &json!(null)).await;
    let page = app.get_json("/v1/jobs?limit=1").await;
    let next = page["next"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/jobs?after={next}")).await.status(),
        200
    );
    let simple = next.replace('-', "");
    let response = app.get(&format!("/v1/jobs?after={simple}")).await;
    assert_problem(response, 400, "invalid-parameter").await;
}

#[tokio::test]
async fn bodies_without_composition_refuse_unknown_fields_in_the_document_too() {
    let doc = serde_json::to_value(tidemark::api::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    for closed in ["SyncRequest", "CursorUpdate", "RequestSpec", "Retry"] {
        assert_eq!(
            schemas[closed]["additionalProperties"],
            json!(false),
            "{closed}"
        );
    }
    // Parts of an `allOf` stay open: the whole is checked by the server.
    assert!(schemas["SourceSpec"].get("additionalProperties").is_none());
    assert_eq!(schemas["CursorUpdate"]["required"], json!(["cursor"]));
}
