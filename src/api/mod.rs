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

/// Makes the unions of the component schemas plain, for the client generators people use
/// (docs/design.md §9; openapi-python-client cannot read a `oneOf` member that is an
/// `allOf`, and a `discriminator` maps its tags to components). Applied to the collected
/// document, so that every union, derived or hand-written, gets the same shape. In each
/// component `oneOf`:
/// - a member that is, or refers to, `allOf: [{$ref: options}, {the type tag}]` (what serde
///   tagged enums derive) becomes one object: the tag, then the options' properties;
/// - an inline object member becomes a component named after its tag (`BearerAuth`, as
///   `KeysetPagination`) or, when it is an externally tagged variant (a single required
///   member, optional ones beside it), after that member (`EnvSecret`,
///   `EverySecondsSchedule`);
/// - string members of one value each are merged into one string enum (`TimeFormat`'s
///   names), their descriptions listed in its description;
/// - members that all require the same single-value property get a `discriminator`.
///
/// Option components that no longer have a reference (`Keyset`, `Bearer`, ...) are dropped.
struct PlainUnions;

impl Modify for PlainUnions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let schemas = &mut components.schemas;
        let unions: Vec<String> = schemas
            .iter()
            .filter(|(_, schema)| matches!(schema, RefOr::T(Schema::OneOf(_))))
            .map(|(name, _)| name.clone())
            .collect();
        let mut merged = std::collections::BTreeSet::new();
        for union in unions {
            let Some(RefOr::T(Schema::OneOf(mut one_of))) = schemas.remove(&union) else {
                continue;
            };
            merge_string_members(&mut one_of.items);
            for item in &mut one_of.items {
                match item {
                    RefOr::Ref(reference) => {
                        let Some(name) = schema_name(&reference.ref_location) else {
                            continue;
                        };
                        if let Some(RefOr::T(Schema::AllOf(all_of))) = schemas.get(name)
                            && let Some((object, options)) = flatten(all_of, schemas)
                        {
                            merged.insert(options);
                            let name = name.to_owned();
                            schemas.insert(name, object.into());
                        }
                    }
                    RefOr::T(schema) => {
                        let object = match schema {
                            Schema::AllOf(all_of) => match flatten(all_of, schemas) {
                                Some((object, options)) => {
                                    merged.insert(options);
                                    object
                                }
                                None => continue,
                            },
                            Schema::Object(object) if is_object(object) => object.clone(),
                            _ => continue,
                        };
                        let Some(name) = member_name(&object, &union) else {
                            continue;
                        };
                        if schemas.contains_key(&name) {
                            continue;
                        }
                        *item = utoipa::openapi::Ref::from_schema_name(&name).into();
                        schemas.insert(name, object.into());
                    }
                }
            }
            if one_of.discriminator.is_none() {
                one_of.discriminator = discriminator(&one_of.items, schemas);
            }
            schemas.insert(union, RefOr::T(Schema::OneOf(one_of)));
        }
        let mut referenced = std::collections::BTreeSet::new();
        if let Ok(doc) = serde_json::to_value(&*openapi) {
            collect_refs(&doc, &mut referenced);
        }
        if let Some(components) = openapi.components.as_mut() {
            components
                .schemas
                .retain(|name, _| !merged.contains(name) || referenced.contains(name));
        }
    }
}

fn schema_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/components/schemas/")
}

fn is_object(object: &utoipa::openapi::schema::Object) -> bool {
    use utoipa::openapi::schema::{SchemaType, Type};
    matches!(object.schema_type, SchemaType::Type(Type::Object))
}

/// The value of a string schema of exactly one value (a serde tag).
fn single_value(schema: &utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>) -> Option<&str> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    match schema {
        RefOr::T(Schema::Object(object))
            if matches!(object.schema_type, SchemaType::Type(Type::String)) =>
        {
            match object.enum_values.as_deref() {
                Some([serde_json::Value::String(value)]) => Some(value),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The required properties of `object` whose schema is a single string value, with it.
fn tags(object: &utoipa::openapi::schema::Object) -> Vec<(&str, &str)> {
    object
        .properties
        .iter()
        .filter(|(name, _)| object.required.contains(name))
        .filter_map(|(name, schema)| Some((name.as_str(), single_value(schema)?)))
        .collect()
}

/// `allOf: [{$ref: options}, {a tag}]` as one object (the tag's properties first), with
/// the name of the options' component.
fn flatten(
    all_of: &utoipa::openapi::schema::AllOf,
    schemas: &std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    >,
) -> Option<(utoipa::openapi::schema::Object, String)> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Object, Schema, Type};
    let [RefOr::Ref(options), RefOr::T(Schema::Object(tag))] = all_of.items.as_slice() else {
        return None;
    };
    let name = schema_name(&options.ref_location)?;
    let Some(RefOr::T(Schema::Object(options))) = schemas.get(name) else {
        return None;
    };
    if !is_object(tag) || tags(tag).len() != 1 || tag.properties.len() != 1 {
        return None;
    }
    let mut object = Object::with_type(Type::Object);
    object.description = [
        all_of.description.as_deref(),
        options.description.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("\n\n")
    .into();
    object.description = object.description.filter(|d| !d.is_empty());
    object.properties = tag.properties.clone();
    object.properties.extend(options.properties.clone());
    object.required = tag.required.clone();
    object.required.extend(options.required.iter().cloned());
    object.additional_properties = options.additional_properties.clone();
    object.example = options.example.clone();
    Some((object, name.to_owned()))
}

/// The component name of an inline member of `union`: `{Tag}{Union}` for a tagged
/// variant, `{Member}{Union}` for an externally tagged one.
fn member_name(object: &utoipa::openapi::schema::Object, union: &str) -> Option<String> {
    let word = match tags(object).as_slice() {
        [(_, tag)] => *tag,
        // An externally tagged variant: its one required member (optional ones beside it).
        _ if object.required.len() == 1 => &object.required[0],
        _ => return None,
    };
    let pascal: String = word
        .split(['_', '-'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    Some(pascal + union)
}

/// Merges the members that are one string value each into one string enum (at the first
/// one's place), their descriptions listed in its description.
fn merge_string_members(items: &mut Vec<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Object, Schema, Type};
    let values: Vec<(String, Option<String>)> = items
        .iter()
        .filter_map(|item| {
            let value = single_value(item)?;
            let RefOr::T(Schema::Object(object)) = item else {
                return None;
            };
            Some((value.to_owned(), object.description.clone()))
        })
        .collect();
    if values.len() < 2 {
        return;
    }
    let Some(first) = items.iter().position(|item| single_value(item).is_some()) else {
        return;
    };
    let mut names = Object::with_type(Type::String);
    names.enum_values = Some(values.iter().map(|(v, _)| v.as_str().into()).collect());
    names.description = Some(
        values
            .iter()
            .map(|(value, doc)| match doc {
                Some(doc) => format!("- `{value}`: {}", doc.replace('\n', " ")),
                None => format!("- `{value}`"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let mut index = 0;
    items.retain(|item| {
        let keep = index == first || single_value(item).is_none();
        index += 1;
        keep
    });
    items[first] = names.into();
}

/// A discriminator for `items` when each refers to an object that requires the same
/// single-value property (serde's `tag`), with a distinct value each.
fn discriminator(
    items: &[utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>],
    schemas: &std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    >,
) -> Option<utoipa::openapi::schema::Discriminator> {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{Discriminator, Schema};
    let mut property: Option<&str> = None;
    let mut discriminator = Discriminator::new("");
    for item in items {
        let RefOr::Ref(reference) = item else {
            return None;
        };
        let Some(RefOr::T(Schema::Object(object))) =
            schemas.get(schema_name(&reference.ref_location)?)
        else {
            return None;
        };
        let &[(name, value)] = tags(object).as_slice() else {
            return None;
        };
        if property.is_some_and(|p| p != name) {
            return None;
        }
        property = Some(name);
        let previous = discriminator
            .mapping
            .insert(value.to_owned(), reference.ref_location.clone());
        if previous.is_some() {
            return None;
        }
    }
    discriminator.property_name = property?.to_owned();
    Some(discriminator)
}

/// Every local schema reference in `value`.
fn collect_refs(value: &serde_json::Value, found: &mut std::collections::BTreeSet<String>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(schema_name)
            {
                found.insert(name.to_owned());
            }
            if let Some(Value::Object(mapping)) = map.get("mapping") {
                found.extend(
                    mapping
                        .values()
                        .filter_map(|v| v.as_str().and_then(schema_name).map(str::to_owned)),
                );
            }
            map.values().for_each(|v| collect_refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

/// Every operation that reads or writes the database may fail as the server's fault
/// (`500`) or the database's (`503`): the document says so once here rather than in each
/// handler. The operations routes answer without the database (`/healthz`, `/metrics`)
/// or declare their own `503` (`/readyz`).
struct ServerProblems;

impl Modify for ServerProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let errors = problems::server_errors();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let tags = operation.tags.as_deref().unwrap_or_default();
                if tags.iter().any(|tag| tag == "operations") {
                    continue;
                }
                for (status, response) in &errors {
                    operation
                        .responses
                        .responses
                        .entry(status.clone())
                        .or_insert_with(|| response.clone());
                }
            }
        }
    }
}

/// Swagger UI shows an operation's summary as plain text (backticks and all) and its
/// description as Markdown, while utoipa makes a handler's first doc paragraph its
/// summary. So the summary keeps the paragraph's first sentence without backticks, and
/// the description gets the whole paragraph when that dropped anything.
struct PlainSummaries;

impl Modify for PlainSummaries {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let Some(summary) = operation.summary.take() else {
                    continue;
                };
                let text = summary.split_whitespace().collect::<Vec<_>>().join(" ");
                let first = first_sentence(&text).replace('`', "");
                if first != text {
                    operation.description = Some(match operation.description.take() {
                        Some(rest) => format!("{summary}\n\n{rest}"),
                        None => summary,
                    });
                }
                operation.summary = Some(first);
            }
        }
    }
}

/// Up to the first full stop that ends a sentence (not one inside backticks).
fn first_sentence(text: &str) -> &str {
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '`' => quoted = !quoted,
            '.' if !quoted && text[i + 1..].starts_with(' ') => return &text[..=i],
            _ => {}
        }
    }
    text
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
    PlainUnions.modify(&mut api);
    OpenObjects.modify(&mut api);
    PlainSummaries.modify(&mut api);
    ServerProblems.modify(&mut api);
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
