//! The problem catalogue: every problem `type` tidemark reports, with its HTTP status and
//! title, and the problem document itself (RFC 9457). API responses and failed jobs both
//! carry these documents; clients switch on `type`, never on `title` or `detail`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A problem document (RFC 9457). `type` is a stable, relative URI reference naming the
/// kind of problem (for example `invalid-spec`); clients switch on it, never on `title`
/// or `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `invalid-spec`, `not-found`.
    #[serde(rename = "type")]
    #[schema(example = "invalid-spec")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    #[schema(example = "Invalid request body")]
    pub title: String,
    /// The HTTP status code.
    #[schema(minimum = 100, maximum = 599, example = 422)]
    pub status: u16,
    /// Human-readable explanation of this occurrence.
    #[schema(example = "20000 is out of range: must be 1 to 10000")]
    pub detail: String,
    /// JSON pointer (RFC 6901) to the field of the request body at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "/streams/0/pagination/limit")]
    pub pointer: Option<String>,
}

impl Problem {
    /// A problem of kind `kind` with this occurrence's `detail`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            kind: kind.type_name().to_owned(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: detail.into(),
            pointer: None,
        }
    }

    /// The same problem, naming the field at fault.
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
}

/// Every kind of problem. A new kind is a new variant here and a row in `ProblemType::row`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    // The API's own: the request is at fault, or the server is.
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Conflict,
    InvalidSpec,
    InvalidParameter,
    MalformedJson,
    PayloadTooLarge,
    UnsupportedMediaType,
    RequestTimeout,
    Unauthorized,
    Forbidden,
    TooManyWaiters,
    Unavailable,
    Internal,
    StoredSecretUnreadable,
    // The feed's tokens.
    InvalidSinceFormat,
    SinceScopeMismatch,
    SinceExpired,
    // A job's failure: the upstream, the stream's spec or the database.
    UpstreamStatus,
    UpstreamUnreachable,
    UpstreamBadBody,
    UpstreamTooLarge,
    UpstreamForeignHost,
    UpstreamForbiddenHost,
    UpstreamCredentials,
    UpstreamBadRequest,
    UpstreamTokenStale,
    UpstreamCursorStuck,
    InvalidRequest,
    DatabaseError,
}

impl ProblemType {
    /// `type`, status and title. A job's upstream problems are 502 (the gateway's upstream
    /// failed, whatever status the upstream itself answered).
    const fn row(self) -> (&'static str, u16, &'static str) {
        use ProblemType::*;
        match self {
            BadRequest => ("bad-request", 400, "Bad request"),
            NotFound => ("not-found", 404, "Not found"),
            MethodNotAllowed => ("method-not-allowed", 405, "Method not allowed"),
            Conflict => ("conflict", 409, "Conflict"),
            InvalidSpec => ("invalid-spec", 422, "Invalid request body"),
            InvalidParameter => ("invalid-parameter", 400, "Invalid query parameter"),
            MalformedJson => ("malformed-json", 400, "Malformed JSON"),
            PayloadTooLarge => ("payload-too-large", 413, "Payload too large"),
            UnsupportedMediaType => ("unsupported-media-type", 415, "Unsupported media type"),
            RequestTimeout => ("request-timeout", 408, "Request timeout"),
            Unauthorized => ("unauthorized", 401, "Unauthorized"),
            Forbidden => ("forbidden", 403, "Forbidden"),
            TooManyWaiters => ("too-many-waiters", 429, "Too many waiting requests"),
            Unavailable => ("unavailable", 503, "Service unavailable"),
            Internal => ("internal", 500, "Internal server error"),
            StoredSecretUnreadable => (
                "stored-secret-unreadable",
                500,
                "Stored secret cannot be decrypted",
            ),
            InvalidSinceFormat => ("invalid-since-format", 400, "Invalid since token"),
            SinceScopeMismatch => (
                "since-scope-mismatch",
                400,
                "Token issued for another stream filter",
            ),
            SinceExpired => ("since-expired", 410, "Token expired"),
            UpstreamStatus => ("upstream-status", 502, "Upstream answered an error"),
            UpstreamUnreachable => ("upstream-unreachable", 502, "Upstream unreachable"),
            UpstreamBadBody => ("upstream-bad-body", 502, "Upstream sent an unusable body"),
            UpstreamTooLarge => ("upstream-too-large", 502, "Upstream body too large"),
            UpstreamForeignHost => (
                "upstream-foreign-host",
                502,
                "URL outside the source's origin",
            ),
            UpstreamForbiddenHost => ("upstream-forbidden-host", 502, "Upstream host not allowed"),
            UpstreamCredentials => (
                "upstream-credentials",
                502,
                "Upstream credentials unavailable",
            ),
            UpstreamBadRequest => ("upstream-bad-request", 502, "Invalid upstream request"),
            UpstreamTokenStale => (
                "upstream-token-stale",
                502,
                "The upstream refused the stored token",
            ),
            UpstreamCursorStuck => (
                "upstream-cursor-stuck",
                502,
                "The upstream's paging does not advance",
            ),
            InvalidRequest => ("invalid-request", 422, "The stream's URL is not valid"),
            DatabaseError => ("database-error", 503, "The database failed"),
        }
    }

    /// The `type` member.
    pub const fn type_name(self) -> &'static str {
        self.row().0
    }

    pub const fn status(self) -> u16 {
        self.row().1
    }

    pub const fn title(self) -> &'static str {
        self.row().2
    }
}
