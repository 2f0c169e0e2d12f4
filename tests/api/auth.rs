//! The 401/403 matrix over every route of the OpenAPI document, for both roles.

use reqwest::Method;
use serde_json::Value;

use crate::support::{ADMIN, READER, assert_problem, design_source, spawn_with_tokens};

/// Every `(method, path)` of the served OpenAPI document that needs an API token, with
/// path parameters filled in. Operations whose `security` is `[{}]` (the upstream webhook,
/// which carries its own secret) are left out.
async fn routes(app: &crate::support::TestApp) -> Vec<(Method, String)> {
    let doc: Value = app.get_json("/openapi.json").await;
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if operation["security"] == serde_json::json!([{}]) {
                continue;
            }
            let concrete = path
                .replace("{source}", "shop")
                .replace("{stream}", "products")
                .replace("{id}", "6f1c2d1e-0000-4000-8000-000000000000")
                .replace("{key}", "1");
            routes.push((method, concrete));
        }
    }
    routes
}

#[tokio::test]
async fn every_v1_route_needs_a_token_of_the_right_role() {
    let app = spawn_with_tokens().await;
    assert_eq!(
        app.post("/v1/sources", &design_source()).await.status(),
        201
    );
    let routes = routes(&app).await;
    let v1: Vec<_> = routes
        .iter()
        .filter(|(_, p)| p.starts_with("/v1/"))
        .collect();
    assert!(v1.len() >= 9, "{v1:?}");
    let body = design_source();
    let send = |method: &Method, path: &str, token: Option<&str>| {
        let mut req = app
            .client
            .request(method.clone(), format!("{}{path}", app.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if matches!(*method, Method::POST | Method::PUT) {
            req = req.json(&body);
        }
        req.send()
    };
    for (method, path) in &v1 {
        let none = send(method, path, None).await.unwrap();
        assert!(
            none.headers().contains_key("www-authenticate"),
            "{method} {path}"
        );
        assert_problem(none, 401, "unauthorized").await;
        let wrong = send(method, path, Some("not-a-valid-token")).await.unwrap();
        assert_problem(wrong, 401, "unauthorized").await;

        let reader = send(method, path, Some(READER)).await.unwrap();
        if *method == Method::GET {
            assert!(
                ![401, 403].contains(&reader.status().as_u16()),
                "reader {method} {path}: {}",
                reader.status()
            );
        } else {
            assert_problem(reader, 403, "forbidden").await;
        }
    }
    // The admin token passes everywhere (deletions last, so every route finds its source).
    let mut ordered = v1.clone();
    ordered.sort_by_key(|(m, _)| *m == Method::DELETE);
    for (method, path) in ordered {
        let admin = send(method, path, Some(ADMIN)).await.unwrap();
        assert!(
            ![401, 403].contains(&admin.status().as_u16()),
            "admin {method} {path}: {}",
            admin.status()
        );
    }
}

#[tokio::test]
async fn operations_and_docs_are_public() {
    let app = spawn_with_tokens().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs/"] {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_malformed_authorization_header_is_refused() {
    let app = spawn_with_tokens().await;
    for value in ["Basic YWRtaW46eA==", ADMIN, "Bearer", "Bearer "] {
        let response = app
            .client
            .get(format!("{}/v1/sources", app.base))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "unauthorized").await;
    }
}
