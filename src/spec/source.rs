//! A source (one upstream API) and its streams (endpoints), as `POST /v1/sources` takes
//! them. A value of these types is a valid spec: every rule is checked while parsing.

use std::collections::{BTreeMap, HashSet};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Auth;
use super::de::{error_at, escape_token};
use super::names::{
    CronExpr, HeaderName, HeaderValue, HttpUrl, JsonPointer, ParamName, RequestPath, SourceName,
    StreamName, ranged,
};
use super::pagination::{HighWaterFrom, Keyset, Pagination, TimeFormat};
use super::secret::Secret;
use super::template::{self, Piece, Placeholder};

const MAX_STREAMS: usize = 100;

/// One upstream API and its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "shop")]
    pub name: SourceName,
    /// Every stream's `request.path` is appended to this URL.
    #[schema(value_type = String, example = "http://127.0.0.1:9000")]
    pub base_url: HttpUrl,
    /// No credentials (`{"type": "none"}`) when not given.
    #[serde(default)]
    pub auth: Auth,
    /// Headers sent with every request to this source.
    #[serde(default, deserialize_with = "source_headers")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: BTreeMap<HeaderName, HeaderValue>,
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Timeout of one upstream request, in milliseconds.
    #[serde(default = "SourceSpec::timeout_ms")]
    #[schema(default = 30000)]
    pub timeout_ms: TimeoutMs,
    #[serde(default, deserialize_with = "retry")]
    pub retry: Retry,
    /// Authenticates `POST /v1/sources/{source}/webhook`; without it the webhook is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    pub streams: Streams,
}

ranged!(
    /// Milliseconds.
    TimeoutMs,
    u32,
    1,
    3_600_000
);

impl SourceSpec {
    fn timeout_ms() -> TimeoutMs {
        TimeoutMs(30_000)
    }
}

fn source_headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<HeaderName, HeaderValue>, D::Error> {
    let headers = BTreeMap::deserialize(d)?;
    check_headers(&headers)
        .map_err(|(name, why)| error_at(&format!("/{}", escape_token(&name)), why))?;
    Ok(headers)
}

fn retry<'de, D: Deserializer<'de>>(d: D) -> Result<Retry, D::Error> {
    let retry = Retry::deserialize(d)?;
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        return Err(error_at(
            "/max_backoff_ms",
            "`max_backoff_ms` must be at least `initial_backoff_ms`",
        ));
    }
    Ok(retry)
}

/// Throttling of requests to one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Minimum time between two requests, in milliseconds.
    #[serde(default)]
    #[schema(default = 0)]
    pub min_interval_ms: u32,
    /// An optional cap on requests per second (fractions allowed, e.g. `0.5`).
    #[serde(default, deserialize_with = "positive_rate")]
    pub max_requests_per_second: Option<f64>,
}

fn positive_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Option::<f64>::deserialize(d)? {
        Some(rate) if !(rate > 0.0 && rate <= 100_000.0) => Err(D::Error::custom(format!(
            "{rate} is out of range: must be greater than 0 and at most 100000"
        ))),
        rate => Ok(rate),
    }
}

ranged!(
    /// Attempts per request, the first included.
    MaxAttempts,
    u32,
    1,
    100
);

ranged!(
    /// Milliseconds of backoff.
    BackoffMs,
    u32,
    1,
    3_600_000
);

/// Retries of transient failures (connect errors, timeouts, 5xx, 429, bad bodies), with
/// exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default = "Retry::max_attempts")]
    #[schema(default = 5)]
    pub max_attempts: MaxAttempts,
    #[serde(default = "Retry::initial_backoff_ms")]
    #[schema(default = 200)]
    pub initial_backoff_ms: BackoffMs,
    #[serde(default = "Retry::max_backoff_ms")]
    #[schema(default = 30000)]
    pub max_backoff_ms: BackoffMs,
}

impl Retry {
    fn max_attempts() -> MaxAttempts {
        MaxAttempts(5)
    }
    fn initial_backoff_ms() -> BackoffMs {
        BackoffMs(200)
    }
    fn max_backoff_ms() -> BackoffMs {
        BackoffMs(30_000)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: Self::max_attempts(),
            initial_backoff_ms: Self::initial_backoff_ms(),
            max_backoff_ms: Self::max_backoff_ms(),
        }
    }
}

/// The streams of a source: unique names, every `deletes` naming another stream of the
/// same source, and every `parent` naming another stream of it without a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Streams(Vec<StreamSpec>);

impl Streams {
    pub fn iter(&self) -> std::slice::Iter<'_, StreamSpec> {
        self.0.iter()
    }

    pub fn get(&self, name: &StreamName) -> Option<&StreamSpec> {
        self.0.iter().find(|s| &s.name == name)
    }
}

impl<'de> Deserialize<'de> for Streams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let streams = Vec::<StreamSpec>::deserialize(d)?;
        if streams.is_empty() || streams.len() > MAX_STREAMS {
            return Err(D::Error::custom(format!(
                "a source has 1 to {MAX_STREAMS} streams"
            )));
        }
        let mut names = HashSet::new();
        for (i, stream) in streams.iter().enumerate() {
            if !names.insert(&stream.name) {
                return Err(error_at(
                    &format!("/{i}/name"),
                    format!("stream name `{}` is used twice", stream.name),
                ));
            }
        }
        for (i, stream) in streams.iter().enumerate() {
            let Some(target) = &stream.deletes else {
                continue;
            };
            let at = format!("/{i}/deletes");
            match streams.iter().find(|s| &s.name == target) {
                None => {
                    return Err(error_at(
                        &at,
                        format!("`{target}` is not a stream of this source"),
                    ));
                }
                Some(t) if t.name == stream.name => {
                    return Err(error_at(&at, "a stream cannot delete its own records"));
                }
                Some(t) if t.deletes.is_some() => {
                    return Err(error_at(
                        &at,
                        format!("`{target}` is itself a deletions stream"),
                    ));
                }
                Some(t) if t.parent.is_some() => {
                    return Err(error_at(
                        &at,
                        format!(
                            "`{target}` is a child stream: its keys are its parent's joined with its own, which a deletions stream cannot name"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        check_parents(&streams)?;
        Ok(Streams(streams))
    }
}

/// Refuses a `parent` that is no other stream of the source, a deletions stream, or a
/// chain of parents that comes back to the stream (a cycle).
fn check_parents<E: serde::de::Error>(streams: &[StreamSpec]) -> Result<(), E> {
    let find = |name: &StreamName| streams.iter().find(|s| &s.name == name);
    for (i, stream) in streams.iter().enumerate() {
        let Some(parent) = &stream.parent else {
            continue;
        };
        let at = format!("/{i}/parent/stream");
        let target = &parent.stream;
        match find(target) {
            None => {
                return Err(error_at(
                    &at,
                    format!("`{target}` is not a stream of this source"),
                ));
            }
            Some(t) if t.name == stream.name => {
                return Err(error_at(&at, "a stream cannot be its own parent"));
            }
            Some(t) if t.deletes.is_some() => {
                return Err(error_at(
                    &at,
                    format!(
                        "`{target}` is a deletions stream: its records are tombstones of another stream, not parents"
                    ),
                ));
            }
            Some(_) => {}
        }
        if stream.deletes.is_some() {
            return Err(error_at(
                &format!("/{i}/deletes"),
                "a child stream cannot also be a deletions stream",
            ));
        }
        // Walk up the chain: at most one step per stream, or it is a cycle.
        let mut chain = vec![stream.name.to_string()];
        let mut up = find(target);
        while let Some(ancestor) = up {
            chain.push(ancestor.name.to_string());
            if ancestor.name == stream.name {
                return Err(error_at(
                    &at,
                    format!("the parents form a cycle: {}", chain.join(" → ")),
                ));
            }
            if chain.len() > streams.len() + 1 {
                break;
            }
            up = ancestor.parent.as_ref().and_then(|p| find(&p.stream));
        }
    }
    Ok(())
}

/// Makes a stream a child stream: it reads one listing per record of the parent stream,
/// whose members its request template names as `{{parent.<JSON pointer>}}`
/// (docs/design.md §3, "Child stream").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentSpec {
    /// Another stream of the same source.
    #[schema(value_type = String, example = "orders")]
    pub stream: StreamName,
}

/// One endpoint of a source that yields records.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StreamSpec {
    #[schema(value_type = String, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "products")]
    pub name: StreamName,
    /// Makes this a deletions stream: each of its records is a tombstone for the record
    /// with the same key in the named stream of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub deletes: Option<StreamName>,
    /// Makes this a child stream: one listing per record of the parent stream, driven by
    /// the parent's committed changes. Its keys are `<parent key>/<own key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentSpec>,
    pub request: RequestSpec,
    pub records: RecordsSpec,
    pub pagination: Pagination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// The fields of a stream as sent; checked against each other to become a [`StreamSpec`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFields {
    name: StreamName,
    #[serde(default)]
    deletes: Option<StreamName>,
    #[serde(default)]
    parent: Option<ParentSpec>,
    request: RequestSpec,
    records: RecordsSpec,
    pagination: Pagination,
    #[serde(default)]
    schedule: Option<Schedule>,
}

impl<'de> Deserialize<'de> for StreamSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut s = StreamFields::deserialize(d)?;
        if s.request.body.is_some() && s.request.method != Method::Post {
            return Err(error_at(
                "/request/body",
                "a body needs `\"method\": \"POST\"`",
            ));
        }
        if s.records.key.as_str().is_empty() {
            return Err(error_at(
                "/records/key",
                "the key must point inside the record, e.g. `/id`",
            ));
        }
        if let (Pagination::Token(token), Some(_)) = (&s.pagination, &s.request.body) {
            let strings = template::request_strings(&s.request);
            let body = strings
                .iter()
                .filter(|(pointer, _)| pointer.starts_with("/request/body"));
            let places = |p: &Placeholder| template::mentions(body.clone().map(|(_, s)| *s), p);
            let placed = places(&Placeholder::Cursor)
                || (token.since.is_none() && places(&Placeholder::Since));
            if !placed {
                let why = match token.since {
                    None => {
                        "a token stream's body must contain \"{{since}}\" (or \"{{cursor}}\") where the token goes"
                    }
                    Some(_) => {
                        "a token stream with a since filter must have \"{{cursor}}\" in its body where the token goes (\"{{since}}\" is the filter's value)"
                    }
                };
                return Err(error_at("/request/body", why));
            }
        }
        check_headers(&s.request.headers).map_err(|(name, why)| {
            error_at(&format!("/request/headers/{}", escape_token(&name)), why)
        })?;
        check_updated_at(&mut s)?;
        check_templates(&s.request, &s.pagination, s.parent.is_some())?;
        settle_since_param(&s.request, &mut s.pagination)?;
        Ok(StreamSpec {
            name: s.name,
            deletes: s.deletes,
            parent: s.parent,
            request: s.request,
            records: s.records,
            pagination: s.pagination,
            schedule: s.schedule,
        })
    }
}

/// Sets a since filter's `from` (by whether records have an updated time) and refuses
/// what needs `records.updated_at` without it.
fn check_updated_at<E: serde::de::Error>(s: &mut StreamFields) -> Result<(), E> {
    let has_updated_at = s.records.updated_at.is_some();
    let needs_updated_at = match &mut s.pagination {
        Pagination::Keyset(_) => Some("keyset pagination"),
        pagination => pagination.since_mut().and_then(|since| {
            let from = *since.from.get_or_insert(if has_updated_at {
                HighWaterFrom::MaxRecord
            } else {
                HighWaterFrom::SyncStart
            });
            if since.format == TimeFormat::Verbatim {
                Some("a since filter in the `verbatim` format (the newest record's own time)")
            } else if since.order.is_some() {
                Some("a since filter in seek mode (`order`)")
            } else {
                (from == HighWaterFrom::MaxRecord)
                    .then_some("a since filter with `from: max_record`")
            }
        }),
    };
    match needs_updated_at {
        Some(why) if !has_updated_at => Err(error_at(
            "/records/updated_at",
            format!("{why} needs `records.updated_at`, the pointer to each record's updated time"),
        )),
        _ => Ok(()),
    }
}

/// Every template string of a stream (the request's, and a keyset stream's filter maps),
/// with its pointer relative to the stream.
fn template_strings<'a>(
    request: &'a RequestSpec,
    pagination: &'a Pagination,
) -> Vec<(String, &'a str)> {
    let mut strings = template::request_strings(request);
    if let Pagination::Keyset(Keyset {
        query: Some(query), ..
    }) = pagination
    {
        strings.extend(template::map_strings(
            "/pagination/query/since",
            &query.since,
        ));
        strings.extend(template::map_strings(
            "/pagination/query/after",
            &query.after,
        ));
    }
    strings
}

/// Refuses a template naming a placeholder the stream's strategy never has a value for,
/// and a child stream whose request names no member of its parent (each parent would
/// read the same listing).
fn check_templates<E: serde::de::Error>(
    request: &RequestSpec,
    pagination: &Pagination,
    child: bool,
) -> Result<(), E> {
    let has = pagination.placeholders();
    if child {
        let names_parent = template_strings(request, pagination)
            .iter()
            .any(|(_, text)| {
                template::pieces(text)
                    .unwrap_or_default()
                    .iter()
                    .any(|piece| matches!(piece, Piece::Slot(Placeholder::Parent(_))))
            });
        if !names_parent {
            return Err(error_at(
                "/request/path",
                "a child stream's request names its parent, e.g. `/orders/{{parent./id}}/lines`",
            ));
        }
    }
    for (pointer, text) in template_strings(request, pagination) {
        // The two body placeholders of the first version (docs/design.md §4) were valid on
        // every strategy: they stay so, `null` where the strategy has no value.
        if pointer.starts_with("/request/body")
            && matches!(
                template::whole(text),
                Some(Placeholder::Since | Placeholder::Limit)
            )
        {
            continue;
        }
        for piece in template::pieces(text).map_err(|why| error_at(&pointer, why))? {
            let Piece::Slot(placeholder) = piece else {
                continue;
            };
            let why = match &placeholder {
                Placeholder::Parent(_) if child => continue,
                Placeholder::Parent(_) => format!(
                    "`{placeholder}` is a member of the parent record: only a child stream (one with `parent`) has one"
                ),
                Placeholder::FromId if pointer.starts_with("/pagination/query/since/") => {
                    "`{{from_id}}` has no value when only a since value is sent: it belongs in `after`"
                        .to_owned()
                }
                p if has.contains(p) => continue,
                Placeholder::Since => format!(
                    "{} streams have a since value only with a `since` filter",
                    pagination.kind()
                ),
                Placeholder::Limit if matches!(pagination, Pagination::Link(_)) => {
                    "a link stream has a limit only with `limit` and `limit_param`".to_owned()
                }
                p => {
                    let names: Vec<String> = has.iter().map(|p| format!("`{p}`")).collect();
                    format!(
                        "{} streams never have a value for `{p}`; they have {}",
                        pagination.kind(),
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    )
                }
            };
            return Err(error_at(&pointer, why));
        }
    }
    Ok(())
}

/// A since filter without `param` is sent only through `{{since}}` in a template; an
/// offset stream with neither sends `modified_since`, as it always has.
fn settle_since_param<E: serde::de::Error>(
    request: &RequestSpec,
    pagination: &mut Pagination,
) -> Result<(), E> {
    let templated = {
        let strings = template_strings(request, pagination);
        template::mentions(strings.iter().map(|(_, s)| *s), &Placeholder::Since)
    };
    let offset = matches!(pagination, Pagination::Offset(_));
    let Some(since) = pagination.since_mut() else {
        return Ok(());
    };
    if since.param.is_some() || templated {
        return Ok(());
    }
    if offset {
        since.param = Some(
            ParamName::try_from("modified_since".to_owned())
                .expect("the default parameter name is valid"),
        );
        return Ok(());
    }
    Err(error_at(
        "/pagination/since/param",
        "a since filter is sent as `param` or through \"{{since}}\" in the request template: give one",
    ))
}

/// Headers that carry credentials belong in `auth` (whose secrets are redacted), and a
/// header given twice in different case would be sent twice.
fn check_headers(headers: &BTreeMap<HeaderName, HeaderValue>) -> Result<(), (String, String)> {
    let mut seen = HashSet::new();
    for name in headers.keys() {
        let lower = name.as_str().to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "authorization" | "proxy-authorization" | "cookie"
        ) {
            return Err((
                name.to_string(),
                format!(
                    "`{name}` carries credentials: configure them in `auth`, whose secrets are never returned"
                ),
            ));
        }
        if !seen.insert(lower) {
            return Err((name.to_string(), format!("header `{name}` is given twice")));
        }
    }
    Ok(())
}

/// The HTTP method of a stream's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
}

/// The request template of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default)]
    #[schema(default = "GET")]
    pub method: Method,
    #[schema(value_type = String, example = "/admin/products.json")]
    pub path: RequestPath,
    /// Query parameters sent with every request of the stream; their values may hold
    /// placeholders, and a parameter whose placeholder has no value on a request is left
    /// out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: BTreeMap<HeaderName, HeaderValue>,
    /// A JSON body template for POST (e.g. GraphQL). Its strings may hold placeholders
    /// (`{{since}}`, `{{limit}}`, ...); a string that is exactly one becomes the typed
    /// value, and `null` when it has none on a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub body: Option<Value>,
}

/// Where the records are in a reply and how to read each one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsSpec {
    /// The array of records in the reply; `""` when the reply is the array.
    #[serde(default)]
    #[schema(value_type = String, default = "", example = "/data")]
    pub path: JsonPointer,
    /// The record's key, unique within the stream.
    #[schema(value_type = String, example = "/id")]
    pub key: JsonPointer,
    /// The record's updated time, as the upstream writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "/updated_at")]
    pub updated_at: Option<JsonPointer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<DeletedPredicate>,
}

/// A record is a deletion when its value at `pointer` equals `equals` (`true` unless
/// given), or, with `"present": true`, when it has any value there but `null` (Graph's
/// `@removed`, whatever its `reason`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletedPredicate {
    #[schema(value_type = String, example = "/archived")]
    pub pointer: JsonPointer,
    /// The value that marks a deletion; `true` when neither this nor `present` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// `true`: any value at `pointer` but `null` marks a deletion (not with `equals`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

impl DeletedPredicate {
    /// Whether a record whose value at the pointer is `found` (`None`: absent) is a
    /// deletion.
    pub fn matches(&self, found: Option<&Value>) -> bool {
        match &self.equals {
            Some(equals) => found == Some(equals),
            None => found.is_some_and(|v| !v.is_null()),
        }
    }
}

/// The members of a deleted predicate as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletedFields {
    pointer: JsonPointer,
    #[serde(default)]
    equals: Option<Value>,
    #[serde(default)]
    present: Option<bool>,
}

impl<'de> Deserialize<'de> for DeletedPredicate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = DeletedFields::deserialize(d)?;
        let equals = match (fields.equals, fields.present) {
            (Some(_), Some(_)) => {
                return Err(error_at("/present", "give `equals` or `present`, not both"));
            }
            (_, Some(false)) => {
                return Err(error_at(
                    "/present",
                    "`present` can only be `true` (a record with a value at `pointer` is a deletion); leave it out to match `equals`",
                ));
            }
            (_, Some(true)) => None,
            (Some(equals), None) => Some(equals),
            (None, None) => Some(Value::Bool(true)),
        };
        Ok(DeletedPredicate {
            pointer: fields.pointer,
            equals,
            present: fields.present,
        })
    }
}

ranged!(
    /// Seconds between scheduled runs.
    EverySeconds,
    u32,
    1,
    31_536_000
);

/// When jobs are queued by themselves: incremental jobs on the stream's clock
/// (`every_seconds` or `cron`), and with `reconcile` reconciles on a clock of their own
/// (docs/design.md §3). A reconcile that falls due while the stream has a job waits until
/// that job ends; it is never skipped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// When incremental jobs are queued.
    #[serde(flatten)]
    pub clock: Clock,
    /// When reconciles are queued (a full listing that also tombstones the records that
    /// vanished upstream without a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Clock>,
}

/// One clock of a schedule: a fixed interval or a cron expression.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// A fixed interval.
    EverySeconds(EverySeconds),
    /// A cron expression with seconds, in UTC.
    Cron(CronExpr),
}

/// The members of a clock as sent; exactly one is given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockFields {
    #[serde(default)]
    every_seconds: Option<EverySeconds>,
    #[serde(default)]
    cron: Option<CronExpr>,
}

impl ClockFields {
    fn clock<E: serde::de::Error>(self) -> Result<Clock, E> {
        match (self.every_seconds, self.cron) {
            (Some(every), None) => Ok(Clock::EverySeconds(every)),
            (None, Some(cron)) => Ok(Clock::Cron(cron)),
            (Some(_), Some(_)) => Err(error_at(
                "/cron",
                "give `every_seconds` or `cron`, not both",
            )),
            (None, None) => Err(error_at("", "a schedule needs `every_seconds` or `cron`")),
        }
    }
}

impl<'de> Deserialize<'de> for Clock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ClockFields::deserialize(d)?.clock()
    }
}

/// The members of a schedule as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFields {
    #[serde(default)]
    every_seconds: Option<EverySeconds>,
    #[serde(default)]
    cron: Option<CronExpr>,
    #[serde(default)]
    reconcile: Option<Clock>,
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = ScheduleFields::deserialize(d)?;
        let clock = ClockFields {
            every_seconds: fields.every_seconds,
            cron: fields.cron,
        }
        .clock()?;
        Ok(Schedule {
            clock,
            reconcile: fields.reconcile,
        })
    }
}

impl utoipa::PartialSchema for Schedule {
    /// One of `{"every_seconds": N}` and `{"cron": "..."}`, each with an optional
    /// `reconcile` clock of the same two shapes.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Ref};
        let shape = |member: &str, schema: &str, description: &str| {
            ObjectBuilder::new()
                .description(Some(description))
                .property(member, Ref::from_schema_name(schema))
                .required(member)
                .property("reconcile", {
                    let mut clock = Ref::from_schema_name("Clock");
                    clock.description = "When reconciles are queued, on their own clock; a reconcile that falls due while the stream has a job waits until it ends".to_owned();
                    clock
                })
                .additional_properties(Some(AdditionalProperties::<utoipa::openapi::schema::Schema>::FreeForm(false)))
        };
        OneOfBuilder::new()
            .description(Some(
                "When jobs are queued by themselves: incremental jobs on the stream's clock, and reconciles on their own",
            ))
            .item(shape(
                "every_seconds",
                "EverySeconds",
                "Incremental jobs at a fixed interval.",
            ))
            .item(shape(
                "cron",
                "CronExpr",
                "Incremental jobs on a cron expression with seconds, in UTC.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Schedule {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "Clock".to_owned(),
            <Clock as utoipa::PartialSchema>::schema(),
        ));
        <Clock as utoipa::ToSchema>::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Schedule, Streams};
    use crate::spec::de::{ParseError, parse};

    fn schedule(value: serde_json::Value) -> Result<Schedule, ParseError> {
        parse(value.to_string().as_bytes())
    }

    #[test]
    fn schedules_read_back_in_the_shapes_they_were_given() {
        for given in [
            json!({"every_seconds": 60}),
            json!({"cron": "0 */15 * * * *"}),
            json!({"every_seconds": 60, "reconcile": {"every_seconds": 86400}}),
            json!({"cron": "0 */15 * * * *", "reconcile": {"cron": "0 30 2 * * *"}}),
        ] {
            let parsed = schedule(given.clone()).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap(), given);
        }
    }

    #[test]
    fn a_schedule_has_one_clock_and_a_reconcile_one_too() {
        let refused = |value, pointer: &str| match schedule(value) {
            Err(ParseError::Invalid { pointer: at, .. }) => assert_eq!(at, pointer),
            other => panic!("{other:?}"),
        };
        refused(json!({}), "");
        refused(json!({"every_seconds": 1, "cron": "0 * * * * *"}), "/cron");
        refused(json!({"reconcile": {"every_seconds": 60}}), "");
        refused(json!({"every_seconds": 1, "reconcile": {}}), "/reconcile");
        refused(
            json!({"every_seconds": 1, "reconcile": {"every_seconds": 0}}),
            "/reconcile/every_seconds",
        );
        refused(
            json!({"every_seconds": 1, "reconcile": {"cron": "nightly"}}),
            "/reconcile/cron",
        );
        refused(
            json!({"every_seconds": 1, "reconcile": {"every_seconds": 1, "reconcile": {}}}),
            "/reconcile/reconcile",
        );
    }

    #[test]
    fn parents_are_other_streams_of_the_source_without_a_cycle() {
        let stream = |name: &str, parent: Option<&str>| {
            let mut stream = json!({
                "name": name,
                "request": {"path": "/things"},
                "records": {"key": "/id"},
                "pagination": {"type": "none"},
            });
            if let Some(parent) = parent {
                stream["parent"] = json!({"stream": parent});
                stream["request"]["path"] = json!("/things/{{parent./id}}");
            }
            stream
        };
        let refused = |streams: serde_json::Value, pointer: &str, says: &str| match parse::<Streams>(
            streams.to_string().as_bytes(),
        ) {
            Err(ParseError::Invalid {
                pointer: at,
                message,
            }) => {
                assert_eq!(at, pointer, "{message}");
                assert!(message.contains(says), "{message}");
            }
            other => panic!("{other:?}"),
        };
        let fine = json!([
            stream("a", None),
            stream("b", Some("a")),
            stream("c", Some("b"))
        ]);
        assert!(parse::<Streams>(fine.to_string().as_bytes()).is_ok());
        refused(
            json!([stream("a", Some("a"))]),
            "/0/parent/stream",
            "its own parent",
        );
        refused(
            json!([
                stream("a", Some("c")),
                stream("b", Some("a")),
                stream("c", Some("b"))
            ]),
            "/0/parent/stream",
            "a → c → b → a",
        );
        let mut deletions = stream("gone", None);
        deletions["deletes"] = json!("a");
        refused(
            json!([stream("a", None), deletions, stream("b", Some("gone"))]),
            "/2/parent/stream",
            "deletions stream",
        );
    }
}
