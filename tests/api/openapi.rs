//! The OpenAPI document and the docs UI.

use serde_json::Value;

use crate::support::spawn;

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_route() {
    let app = spawn().await;
    let doc: Value = app.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("/v1/sources", vec!["get", "post"]),
        ("/v1/sources/{source}", vec!["get", "put", "delete"]),
        ("/v1/sources/{source}/streams/{stream}", vec!["get"]),
        (
            "/v1/sources/{source}/streams/{stream}/cursor",
            vec!["get", "put", "delete"],
        ),
        ("/v1/changes", vec!["get"]),
        ("/v1/changes/head", vec!["get"]),
        ("/v1/changes/stream", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
    ];
    for (path, methods) in expected {
        for method in methods {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is missing");
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert!(
                    responses.contains_key("401"),
                    "{method} {path} documents no 401"
                );
            }
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["schemas"]["SourceSpec"].is_object());
}

#[test]
fn every_reference_of_the_document_resolves() {
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(tidemark::api::openapi()).unwrap();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.contains(&"#/components/schemas/SourceName"));
    for target in found {
        let pointer = target.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
}

#[tokio::test]
async fn the_committed_document_matches_the_code() {
    let generated = tidemark::api::openapi().to_pretty_json().unwrap();
    let committed = include_str!("../../openapi/openapi.json");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn the_docs_ui_is_served_from_the_binary() {
    let app = spawn().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Its scripts come from the binary, not from a CDN.
    assert!(!html.contains("https://"), "{html}");
    let script = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().len() > 100_000);
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    // No call to the public validator service.
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
}
