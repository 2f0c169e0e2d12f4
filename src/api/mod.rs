//! HTTP only: routes, extractors, auth, handlers and the OpenAPI document.

mod auth;
mod consumers;
pub mod error;
mod extract;
mod feed;
mod jobs;
mod middleware;
mod ops;
mod problems;
mod records;
pub mod server;
mod sources;
mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ApiTokens;
use crate::feed::Feed;
use crate::store::Store;
use crate::sync::Waker;
use crate::upstream::policy::HostPolicy;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<ApiTokens>,
    pub metrics: PrometheusHandle,
    /// Wakes idle workers when a job is queued.
    pub waker: Waker,
    /// The change feed: tokens, reads and waiting slots.
    pub feed: Arc<Feed>,
    /// The upstream hosts a source may name (`TIDEMARK_UPSTREAM_ALLOW`).
    pub hosts: Arc<HostPolicy>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidemark",
        description = "A sync gateway: a faithful mirror of upstream REST APIs and a gap-free \
                       change feed of it.\n\nErrors are `application/problem+json` (RFC 9457); \
                       switch on their `type`. Send `Authorization: Bearer <token>`: `reader` \
                       tokens may read, `admin` tokens may do everything."
    ),
    // Path parameters and the problem responses refer to these by `$ref`, which does not
    // collect them.
    components(schemas(
        crate::spec::SourceName,
        crate::spec::StreamName,
        crate::problem::Problem
    )),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "sources", description = "Upstream APIs and their streams"),
        (name = "streams", description = "One endpoint of a source, and its checkpoint"),
        (name = "jobs", description = "Sync runs: queue, follow, cancel"),
        (name = "records", description = "The mirror of each stream"),
        (name = "feed", description = "The change feed: every change of the mirror, in commit order"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from TIDEMARK_API_TOKENS: `reader` for reads, `admin` for everything",
                    ))
                    .build(),
            ),
        );
    }
}

/// Drops `additionalProperties: false` from the component schemas that are parts of an
/// `allOf` (applied after the routes' schemas are collected, which happens after
/// `#[openapi(modifiers)]` run). The server refuses unknown fields itself (with a 422
/// naming them), but in the document the flag breaks composition: `allOf` a struct schema
/// plus a `type` tag (tagged enums) or plus timestamps (views) would then refuse every
/// valid document. Schemas used on their own keep it.
struct OpenObjects;

impl Modify for OpenObjects {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let mut parts = std::collections::BTreeSet::new();
        if let Ok(serde_json::Value::Object(schemas)) = serde_json::to_value(&components.schemas) {
            collect_all_of_refs(&serde_json::Value::Object(schemas), &mut parts);
        }
        for (name, schema) in components.schemas.iter_mut() {
            if let RefOr::T(Schema::Object(object)) = schema
                && parts.contains(name)
                && matches!(
                    object.additional_properties.as_deref(),
                    Some(AdditionalProperties::FreeForm(false))
                )
            {
                object.additional_properties = None;
            }
        }
    }
}

/// The names of the component schemas that some `allOf` refers to.
fn collect_all_of_refs(value: &serde_json::Value, found: &mut std::collections::BTreeSet<String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get("allOf") {
                found.extend(items.iter().filter_map(|item| {
                    item.get("$ref")?
                        .as_str()?
                        .strip_prefix("#/components/schemas/")
                        .map(str::to_owned)
                }));
            }
            map.values().for_each(|v| collect_all_of_refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_all_of_refs(v, found)),
        _ => {}
    }
}

/// The routes and the OpenAPI document describing them.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(sources::router())
        .merge(jobs::router())
        .merge(records::router())
        .merge(feed::router())
        .merge(consumers::router())
        .merge(ops::router())
        .split_for_parts();
    OpenObjects.modify(&mut api);
    (router, api)
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application.
pub fn app(state: AppState, max_body_bytes: usize, client_timeout: Duration) -> Router {
    let (router, api) = routes();
    let router = router
        .merge(
            SwaggerUi::new("/docs")
                .url("/openapi.json", api)
                // Swagger UI otherwise sends the spec's URL to validator.swagger.io: a
                // leak online, a broken badge offline.
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        .merge(ui::router())
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed);
    let layers = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(feed::no_store))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(axum::middleware::from_fn(middleware::problem_json))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(client_timeout));
    router.layer(layers).with_state(state)
}
