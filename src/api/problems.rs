//! The problem responses of the OpenAPI document, declared once: one [`IntoResponses`] type
//! per set of errors, listed in an operation's `responses(...)` beside its success
//! response. Each is `application/problem+json` with the [`Problem`] schema, inline (not a
//! `$ref` to `components.responses`, which some client generators do not follow).
//!
//! The sets of one operation must not share a status: the last one listed would win.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, PartialSchema, ToSchema};

use super::error::PROBLEM_JSON;
use crate::problem::Problem;

/// A problem response.
fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .build(),
    )
}

/// The responses of a set, by status, each with an example problem of its status.
fn set<const N: usize>(
    responses: [(u16, ResponseBuilder); N],
) -> BTreeMap<String, RefOr<Response>> {
    responses
        .into_iter()
        .map(|(status, response)| {
            let mut response = response.build();
            let example = example(status, &response.description);
            if let Some(content) = response.content.get_mut(PROBLEM_JSON) {
                content.example = Some(example);
            }
            (status.to_string(), response.into())
        })
        .collect()
}

/// A problem document with this status, for the document's examples (Swagger UI would
/// otherwise make one up from the schema, status and all).
fn example(status: u16, description: &str) -> serde_json::Value {
    use crate::problem::ProblemType::*;
    let kind = match status {
        401 => Unauthorized,
        403 => Forbidden,
        408 => RequestTimeout,
        404 => NotFound,
        409 => Conflict,
        410 => SinceExpired,
        413 => PayloadTooLarge,
        415 => UnsupportedMediaType,
        422 => InvalidSpec,
        429 => TooManyWaiters,
        500 => Internal,
        503 => Unavailable,
        _ => BadRequest,
    };
    let mut problem = Problem::new(kind, description.replace('`', ""));
    problem.status = status;
    serde_json::to_value(problem).unwrap_or_default()
}

fn no_token() -> (u16, ResponseBuilder) {
    (
        401,
        problem("No valid token").header(
            "www-authenticate",
            HeaderBuilder::new()
                .schema(String::schema())
                .description(Some("`Bearer realm=\"tidemark\"`"))
                .build(),
        ),
    )
}

/// Any route that needs a token (a `reader` token or better).
pub struct Reader;

impl IntoResponses for Reader {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([no_token()])
    }
}

/// A route that needs an `admin` token.
pub struct Admin;

impl IntoResponses for Admin {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([no_token(), (403, problem("Not an admin token"))])
    }
}

/// A JSON request body ([`super::extract::ApiJson`], [`super::extract::JsonOrEmpty`]).
pub struct JsonBody;

impl IntoResponses for JsonBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([
            (400, problem("Not JSON")),
            (415, problem("Body is not JSON")),
            (422, problem("Invalid body; `pointer` names the field")),
        ])
    }
}

/// A request body over the size limit (`TIDEMARK_MAX_BODY_BYTES`), or not received within
/// the client timeout (`TIDEMARK_CLIENT_TIMEOUT`).
pub struct BodyTooLarge;

impl IntoResponses for BodyTooLarge {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([
            (
                408,
                problem("The body did not arrive within the client timeout"),
            ),
            (413, problem("Body too large")),
        ])
    }
}

/// Query parameters that do not parse or are out of range.
pub struct BadParameter;

impl IntoResponses for BadParameter {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(400, problem("Invalid parameter"))])
    }
}

/// `{source}` names no source.
pub struct NoSource;

impl IntoResponses for NoSource {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(404, problem("No such source"))])
    }
}

/// `{source}/{stream}` names no stream.
pub struct NoStream;

impl IntoResponses for NoStream {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(404, problem("No such source or stream"))])
    }
}

/// `{source}/{stream}/records/{key}` names no live record.
pub struct NoRecord;

impl IntoResponses for NoRecord {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(
            404,
            problem("No such stream, or no live record with this key"),
        )])
    }
}

/// `{id}` names no job.
pub struct NoJob;

impl IntoResponses for NoJob {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(404, problem("No such job"))])
    }
}

/// `{name}` names no feed consumer.
pub struct NoConsumer;

impl IntoResponses for NoConsumer {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(404, problem("No such consumer"))])
    }
}

/// The request conflicts with what is stored (the problem's `detail` says how).
pub struct Conflict;

impl IntoResponses for Conflict {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(
            409,
            problem("Conflicts with the current state; `detail` says how"),
        )])
    }
}

/// An upstream webhook, authenticated by its source's secret instead of a token.
pub struct Webhook;

impl IntoResponses for Webhook {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([
            (401, problem("Missing or wrong webhook secret")),
            (404, problem("No such source, or it has no webhook")),
        ])
    }
}

fn no_filter_stream() -> (u16, ResponseBuilder) {
    (404, problem("A stream of the filter does not exist"))
}

/// The feed's `stream` filter.
pub struct FeedFilter;

impl IntoResponses for FeedFilter {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(400, problem("Invalid filter")), no_filter_stream()])
    }
}

/// Reading the feed from a token, with its filter, possibly waiting.
pub struct FeedRead;

impl IntoResponses for FeedRead {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([
            (
                400,
                problem(
                    "Invalid parameter or filter, `invalid-since-format` or `since-scope-mismatch`",
                ),
            ),
            no_filter_stream(),
            (
                410,
                problem("`since-expired`: start again from a blank `since`"),
            ),
            (
                429,
                problem("Too many waiting requests on this instance").header(
                    "retry-after",
                    HeaderBuilder::new()
                        .schema(u32::schema())
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                ),
            ),
        ])
    }
}

/// The database does not answer, or is not migrated.
pub struct Unavailable;

impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set([(503, problem("Database unreachable or not migrated"))])
    }
}

/// What any operation that reads or writes the database may answer besides its own
/// responses: added to every such operation of the document by `api::ServerProblems`.
pub fn server_errors() -> BTreeMap<String, RefOr<Response>> {
    set([
        (500, problem("The server failed; the cause is in its logs")),
        (
            503,
            problem("The database is unreachable; try again shortly"),
        ),
    ])
}
