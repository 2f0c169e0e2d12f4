//! Sending one logical request to an upstream reliably: authentication, the per-source
//! throttle, rate-limit headers, retries with backoff, a body size cap and same-origin
//! redirects. What to ask and how to read the reply is the caller's (the pagination
//! strategy's) business: it builds each [`Request`] and parses each [`Reply`];
//! [`SourceClient::fetch_page`] is that for one page of a stream.

mod auth;
mod error;
mod pace;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::dns::Resolve;
use reqwest::header::{ACCEPT, AUTHORIZATION, DATE, HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::{Action, Attempt, Policy};
use reqwest::{Response, StatusCode};
use tokio::time::Instant;
use url::Url;

pub use error::UpstreamError;

use crate::paginate::request::{Request, Target};
use crate::spec::SourceName;
use crate::spec::auth::Auth;
use crate::spec::source::{Method, SourceSpec};
use crate::upstream::policy::{self, GuardedResolver, HostPolicy, SystemResolver};
use auth::{Credentials, Tokens, Unavailable};
use pace::{MAX_WAIT, Pace, backoff, millis};

/// The default cap on a reply body: larger pages are refused rather than buffered.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// How much of an error reply is read and kept.
const ERROR_BODY_BYTES: u64 = 4096;

/// Redirects followed per request, within the source's origin.
const MAX_REDIRECTS: usize = 5;

/// Secrets shorter than this are not scrubbed from error bodies: they would mangle
/// ordinary words, and are too weak to protect anyway.
const MIN_SCRUBBED_SECRET: usize = 4;

const USER_AGENT: &str = concat!("tidemark/", env!("CARGO_PKG_VERSION"));

/// Shared by all workers of the process; keeps one HTTP client (one connection pool) and
/// the state of each source: its throttle clock, rate-limit pause and cached OAuth 2.0
/// access token.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

struct Shared {
    http: reqwest::Client,
    max_body: u64,
    policy: Arc<HostPolicy>,
    sources: Mutex<HashMap<SourceName, Arc<SourceClient>>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    /// A client for any host but the always refused ones, whose reply bodies are capped
    /// at [`MAX_BODY_BYTES`].
    pub fn new() -> Self {
        Self::with_policy(HostPolicy::default())
    }

    /// A client that sends requests only to the hosts `policy` allows (checked before
    /// each request, so a source registered before the policy changed is held to it too).
    pub fn with_policy(policy: HostPolicy) -> Self {
        Self::build(policy, MAX_BODY_BYTES, Arc::new(SystemResolver))
    }

    /// A client whose reply bodies are capped at `limit` bytes.
    pub fn with_max_body_bytes(limit: u64) -> Self {
        Self::build(HostPolicy::default(), limit, Arc::new(SystemResolver))
    }

    /// A client whose host names are resolved by `resolver` (behind the guard), so tests
    /// can make a name resolve to a refused address without asking any DNS server.
    #[cfg(test)]
    fn with_resolver(policy: HostPolicy, resolver: Arc<dyn Resolve>) -> Self {
        Self::build(policy, MAX_BODY_BYTES, resolver)
    }

    fn build(policy: HostPolicy, limit: u64, resolver: Arc<dyn Resolve>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(Policy::custom(same_origin_redirects))
            // A Referer would repeat the previous URL, query API key included.
            .referer(false)
            // Every name is resolved through the guard: no connection to a link-local or
            // metadata address, whatever led there (DNS answers change after a source is
            // registered).
            .dns_resolver(Arc::new(GuardedResolver::new(resolver)))
            .build()
            // Building fails only when the TLS backend cannot start, which no request
            // could survive either; `reqwest::Client::new` panics alike.
            .expect("the HTTP client (TLS backend) initialises");
        Self {
            shared: Arc::new(Shared {
                http,
                max_body: limit,
                policy: Arc::new(policy),
                sources: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The handle of one source. The same one is returned for the same source name as
    /// long as the spec is equal; a changed spec gets fresh state (throttle, tokens).
    pub fn source(&self, spec: &SourceSpec) -> Arc<SourceClient> {
        // The map is only read and replaced under the lock, never left half-written.
        let mut sources = self
            .shared
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = sources.get(&spec.name)
            && client.spec == *spec
        {
            return client.clone();
        }
        let client = Arc::new(SourceClient {
            spec: spec.clone(),
            http: self.shared.http.clone(),
            max_body: self.shared.max_body,
            policy: self.shared.policy.clone(),
            pace: Pace::new(&spec.rate_limit),
            tokens: Tokens::default(),
        });
        sources.insert(spec.name.clone(), client.clone());
        client
    }
}

/// Follows a redirect only within the origin of the first URL (the source's, or the
/// token endpoint's), at most [`MAX_REDIRECTS`] times; otherwise the 3xx reply itself is
/// returned, and fails the request.
fn same_origin_redirects(attempt: Attempt) -> Action {
    let follow = attempt.previous().first().is_some_and(|first| {
        attempt.previous().len() <= MAX_REDIRECTS && attempt.url().origin() == first.origin()
    });
    if follow {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// One source's handle, shared by all its streams.
pub struct SourceClient {
    spec: SourceSpec,
    http: reqwest::Client,
    max_body: u64,
    policy: Arc<HostPolicy>,
    pace: Pace,
    tokens: Tokens,
}

/// A 2xx reply, as the caller's parser sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `Date` header: the upstream's clock.
    pub date: Option<DateTime<Utc>>,
}

/// What a successful request produced.
#[derive(Debug)]
pub struct Fetched<T> {
    /// What the parser made of the body.
    pub value: T,
    /// The `Date` header of the reply.
    pub reply_date: Option<DateTime<Utc>>,
    pub headers: HeaderMap,
    /// Requests actually sent to the upstream, retries and the OAuth 2.0 renewal included.
    pub attempts: u32,
}

/// Why the caller's parser refused a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Worth another request (a truncated or non-JSON body).
    Transient(String),
    /// Would fail again (e.g. the records path is missing).
    Fatal(String),
}

/// What one attempt came to.
enum Outcome<T> {
    /// A 2xx reply and what the parser made of it.
    Done(Reply, T),
    /// Transient: retry after `wait` (from `Retry-After`) or the backoff, unless the
    /// attempts are spent, in which case `error` is the answer.
    Retry {
        reason: String,
        wait: Option<Duration>,
        error: UpstreamError,
    },
    /// A 401: worth one retry with a new OAuth 2.0 token.
    Unauthorized(UpstreamError),
    Fail(UpstreamError),
}

/// What came back from sending a request once.
enum Answer {
    /// A reply: its head, its body as far as it was read, and how the body ended.
    Reply {
        head: Response,
        body: Bytes,
        end: BodyEnd,
    },
    /// No reply: the connection failed, or the policy refused the address.
    Failed(reqwest::Error),
    /// No complete reply within the source's timeout.
    TimedOut,
}

/// How a reply body ended.
enum BodyEnd {
    Complete,
    /// There was more than the cap; only the cap was read.
    OverCap,
    Broken(reqwest::Error),
}

/// Which attempt this is, as its errors name it.
struct Try<'a> {
    /// Counting from 1, the renewal of an OAuth 2.0 token included.
    number: u32,
    path: &'a str,
}

impl Try<'_> {
    /// A transport failure: retried like any transient one.
    fn transport<T>(&self, detail: String) -> Outcome<T> {
        Outcome::Retry {
            reason: detail.clone(),
            wait: None,
            error: UpstreamError::Transport {
                detail,
                attempts: self.number,
                path: self.path.to_owned(),
            },
        }
    }
}

impl SourceClient {
    /// Sends `request`, retrying per the source's retry policy, and hands the first 2xx
    /// reply to `parse`. A [`BodyError::Transient`] from `parse` is retried like a
    /// transport error; a [`BodyError::Fatal`] fails at once.
    #[tracing::instrument(skip_all, fields(source = %self.spec.name, path = %request.target.path()))]
    pub async fn fetch<T>(
        &self,
        request: &Request,
        parse: impl Fn(&Reply) -> Result<T, BodyError>,
    ) -> Result<Fetched<T>, UpstreamError> {
        let url = self.url(&request.target)?;
        self.check_hosts(&url)?;
        let headers = request_headers(&self.spec, request)?;
        let max_attempts = self.spec.retry.max_attempts.get();
        let mut attempts = 0;
        // The one retry with a renewed OAuth 2.0 token comes on top of `max_attempts`:
        // tokens expiring early is routine, not a failure of the upstream.
        let mut renewed = false;
        loop {
            self.pace.wait_turn().await;
            let credentials = self.credentials(attempts).await?;
            attempts += 1;
            let attempt = Try {
                number: attempts,
                path: url.path(),
            };
            let sent = self.build_request(request, &url, &headers, &credentials);
            let answer = self.send(sent).await;
            let outcome = self.classify(answer, &attempt, &credentials, &parse);
            let (reason, wait, error) = match outcome {
                Outcome::Done(reply, value) => {
                    return Ok(Fetched {
                        value,
                        reply_date: reply.date,
                        headers: reply.headers,
                        attempts,
                    });
                }
                Outcome::Fail(error) => return Err(error),
                Outcome::Unauthorized(error) => {
                    if renewed || !self.forget_token(&credentials).await {
                        return Err(error);
                    }
                    renewed = true;
                    tracing::warn!(attempt = attempts, "access token refused; renewing it");
                    continue;
                }
                Outcome::Retry {
                    reason,
                    wait,
                    error,
                } => (reason, wait, error),
            };
            let failures = attempts - u32::from(renewed);
            if failures >= max_attempts {
                return Err(error);
            }
            let delay = wait.unwrap_or_else(|| backoff(&self.spec.retry, failures));
            tracing::warn!(
                attempt = attempts,
                delay_ms = millis(delay),
                %reason,
                "retrying upstream request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The credentials of the next attempt (an OAuth 2.0 token is fetched when none is
    /// cached); `attempts` were sent before it.
    async fn credentials(&self, attempts: u32) -> Result<Credentials, UpstreamError> {
        let requests = auth::TokenRequests {
            http: &self.http,
            timeout: self.timeout(),
            retry: &self.spec.retry,
        };
        auth::credentials(&self.spec.auth, &self.tokens, requests)
            .await
            .map_err(|e| match e {
                Unavailable::Detail(detail) => UpstreamError::Credentials { detail, attempts },
                Unavailable::Refused(refused) => UpstreamError::ForbiddenHost(refused),
            })
    }

    /// Forgets a refused OAuth 2.0 access token, so that the next attempt fetches a new
    /// one; `false` when the credentials hold no such token.
    async fn forget_token(&self, credentials: &Credentials) -> bool {
        match (&self.spec.auth, credentials.secret()) {
            (Auth::Oauth2(_), Some(token)) => {
                self.tokens.forget(token).await;
                true
            }
            _ => false,
        }
    }

    /// The request as it goes out: `url` and `headers` with the credentials added, and the
    /// JSON body.
    fn build_request(
        &self,
        request: &Request,
        url: &Url,
        headers: &HeaderMap,
        credentials: &Credentials,
    ) -> reqwest::RequestBuilder {
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut url = url.clone();
        let mut headers = headers.clone();
        let mut basic = None;
        match credentials {
            Credentials::None => {}
            Credentials::Header { name, value, .. } => {
                headers.insert(name.clone(), value.clone());
            }
            Credentials::Basic { username, password } => {
                headers.remove(AUTHORIZATION);
                basic = Some((username, password));
            }
            Credentials::Query { name, value } => set_query_param(&mut url, name, Some(value)),
        }
        let mut builder = self.http.request(method, url).headers(headers);
        if let Some((username, password)) = basic {
            builder = builder.basic_auth(username, Some(password));
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        builder
    }

    /// Sends the request once, within the source's timeout, and counts it in the metrics.
    async fn send(&self, builder: reqwest::RequestBuilder) -> Answer {
        let started = Instant::now();
        let exchange = exchange(builder, self.max_body);
        let answer = match tokio::time::timeout(self.timeout(), exchange).await {
            Ok(Ok((head, body, end))) => Answer::Reply { head, body, end },
            Ok(Err(e)) => Answer::Failed(e),
            Err(_) => Answer::TimedOut,
        };
        let status_label = match &answer {
            Answer::Reply { head, .. } => head.status().as_str().to_owned(),
            _ => "error".to_owned(),
        };
        metrics::counter!(
            "tidemark_upstream_requests_total",
            "source" => self.spec.name.to_string(),
            "status" => status_label
        )
        .increment(1);
        metrics::histogram!(
            "tidemark_upstream_request_duration_seconds",
            "source" => self.spec.name.to_string()
        )
        .record(started.elapsed().as_secs_f64());
        answer
    }

    /// What the answer means: a value, a retry, a token renewal or a failure. Every reply
    /// feeds the source's pace (rate-limit headers), whatever its status.
    fn classify<T>(
        &self,
        answer: Answer,
        attempt: &Try,
        credentials: &Credentials,
        parse: &impl Fn(&Reply) -> Result<T, BodyError>,
    ) -> Outcome<T> {
        let (head, body, end) = match answer {
            Answer::Reply { head, body, end } => (head, body, end),
            Answer::Failed(e) => {
                return match policy::refusal(&e) {
                    Some(refused) => Outcome::Fail(UpstreamError::ForbiddenHost(refused.clone())),
                    None => attempt.transport(transport_detail(e)),
                };
            }
            Answer::TimedOut => {
                return attempt.transport(format!(
                    "no complete reply within {} ms",
                    self.spec.timeout_ms.get()
                ));
            }
        };
        self.pace.observe(head.headers());
        if head.status().is_success() {
            self.classify_success(&head, body, end, attempt, parse)
        } else {
            self.classify_error(&head, &body, attempt, credentials)
        }
    }

    /// A 2xx reply: its whole body, under the cap, goes to the parser.
    fn classify_success<T>(
        &self,
        head: &Response,
        body: Bytes,
        end: BodyEnd,
        attempt: &Try,
        parse: &impl Fn(&Reply) -> Result<T, BodyError>,
    ) -> Outcome<T> {
        match end {
            BodyEnd::Complete => {}
            BodyEnd::OverCap => {
                return Outcome::Fail(UpstreamError::TooLarge {
                    limit: self.max_body,
                    attempts: attempt.number,
                    path: attempt.path.to_owned(),
                });
            }
            BodyEnd::Broken(e) => {
                return attempt.transport(format!("the body broke off: {}", transport_detail(e)));
            }
        }
        let reply = Reply {
            status: head.status().as_u16(),
            date: head
                .headers()
                .get(DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(pace::http_date),
            headers: head.headers().clone(),
            body,
        };
        let error = |detail| UpstreamError::Body {
            detail,
            attempts: attempt.number,
            path: attempt.path.to_owned(),
        };
        match parse(&reply) {
            Ok(value) => Outcome::Done(reply, value),
            Err(BodyError::Transient(detail)) => Outcome::Retry {
                reason: format!("unusable body: {detail}"),
                wait: None,
                error: error(detail),
            },
            Err(BodyError::Fatal(detail)) => Outcome::Fail(error(detail)),
        }
    }

    /// A non-2xx reply: a 401 may renew the token; 408, 425, 429 and 5xx are retried,
    /// after the `Retry-After` of a 429 or 503 (which pauses the whole source) unless it
    /// asks for longer than tidemark waits; anything else fails.
    fn classify_error<T>(
        &self,
        head: &Response,
        body: &[u8],
        attempt: &Try,
        credentials: &Credentials,
    ) -> Outcome<T> {
        let status = head.status();
        let error = UpstreamError::Status {
            status: status.as_u16(),
            body: scrub(&String::from_utf8_lossy(body), &credentials.echoes()),
            attempts: attempt.number,
            path: attempt.path.to_owned(),
        };
        if status == StatusCode::UNAUTHORIZED {
            return Outcome::Unauthorized(error);
        }
        if !retryable(status) {
            return Outcome::Fail(error);
        }
        let wait = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                pace::retry_after(head.headers(), Utc::now())
            }
            _ => None,
        };
        if let Some(wait) = wait {
            if wait > MAX_WAIT {
                tracing::warn!(
                    wait_s = wait.as_secs(),
                    "the upstream asks to retry later than tidemark waits"
                );
                return Outcome::Fail(error);
            }
            // The whole source waits, not only this request.
            self.pace.pause_until(Instant::now() + wait);
        }
        Outcome::Retry {
            reason: format!("status {status}"),
            wait,
            error,
        }
    }

    /// The request's URL and the OAuth 2.0 token endpoint must be on hosts the policy
    /// allows now (it may have changed since the source was registered).
    fn check_hosts(&self, url: &Url) -> Result<(), UpstreamError> {
        self.policy
            .check_url(url)
            .map_err(UpstreamError::ForbiddenHost)?;
        if let Auth::Oauth2(oauth) = &self.spec.auth {
            self.policy
                .check(oauth.token_url.as_str())
                .map_err(UpstreamError::ForbiddenHost)?;
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.spec.timeout_ms.get().into())
    }

    /// The URL a target names, checked against the source's origin.
    fn url(&self, target: &Target) -> Result<Url, UpstreamError> {
        let base = Url::parse(self.spec.base_url.as_str()).map_err(|e| UpstreamError::Request {
            detail: format!("the base URL does not parse: {e}"),
        })?;
        match target {
            Target::Path { path, query } => {
                let mut url = base.clone();
                url.set_path(&format!(
                    "{}/{}",
                    base.path().trim_end_matches('/'),
                    path.trim_start_matches('/')
                ));
                let query: Vec<String> = query
                    .iter()
                    .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
                    .collect();
                if !query.is_empty() {
                    url.set_query(Some(&query.join("&")));
                }
                Ok(url)
            }
            Target::Url(url) => {
                let mut url = url.clone();
                if url.origin() != base.origin() {
                    return Err(UpstreamError::ForeignHost {
                        url: self.shown(url),
                    });
                }
                // Credentials come from `auth` only, and fragments are never sent.
                strip_userinfo(&mut url);
                url.set_fragment(None);
                Ok(url)
            }
        }
    }

    /// A URL as it may be shown: no user info, the API key query parameter redacted.
    fn shown(&self, mut url: Url) -> String {
        strip_userinfo(&mut url);
        if let Auth::Query(key) = &self.spec.auth
            && url.query_pairs().any(|(name, _)| name == key.name.as_str())
        {
            set_query_param(&mut url, key.name.as_str(), None);
            let redacted = format!("{}=REDACTED", encode(key.name.as_str()));
            let query = match url.query() {
                Some(rest) if !rest.is_empty() => format!("{rest}&{redacted}"),
                _ => redacted,
            };
            url.set_query(Some(&query));
        }
        url.to_string()
    }
}

/// The source's headers, then the stream's (a stream's value replaces the source's), with
/// `Accept: application/json` unless either gives one.
fn request_headers(spec: &SourceSpec, request: &Request) -> Result<HeaderMap, UpstreamError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    let source = spec
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let stream = request
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    for (name, value) in source.chain(stream) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| UpstreamError::Request {
            detail: format!("`{name}` is not a valid header name"),
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| UpstreamError::Request {
            detail: format!("the value of header `{name}` is not a valid header value"),
        })?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// Sends a request and reads its reply: a 2xx body up to `max_body`, an error body up to
/// [`ERROR_BODY_BYTES`] (enough to say what went wrong).
async fn exchange(
    builder: reqwest::RequestBuilder,
    max_body: u64,
) -> Result<(Response, Bytes, BodyEnd), reqwest::Error> {
    let mut response = builder.send().await?;
    let cap = if response.status().is_success() {
        max_body
    } else {
        ERROR_BODY_BYTES
    };
    let (body, end) = read_capped(&mut response, cap).await;
    Ok((response, body, end))
}

/// Reads a body chunk by chunk, never holding more than `cap` bytes. A declared length
/// above the cap of a 2xx reply is refused before reading.
async fn read_capped(response: &mut Response, cap: u64) -> (Bytes, BodyEnd) {
    if response.status().is_success() && response.content_length().is_some_and(|n| n > cap) {
        return (Bytes::new(), BodyEnd::OverCap);
    }
    let mut body = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(body.len() as u64);
                if chunk.len() as u64 > room {
                    // `room` is below `chunk.len()`, so it fits a usize.
                    body.extend_from_slice(&chunk[..room as usize]);
                    return (body.freeze(), BodyEnd::OverCap);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body.freeze(), BodyEnd::Complete),
            Err(e) => return (body.freeze(), BodyEnd::Broken(e)),
        }
    }
}

/// Statuses worth another try: timeouts, "too early", rate limiting and server errors.
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
    ) || status.is_server_error()
}

/// What went wrong on the wire, with its causes, and without the URL (whose query may
/// hold an API key).
fn transport_detail(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut detail = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        error.to_string()
    };
    let mut cause = std::error::Error::source(&error);
    while let Some(e) = cause {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        cause = e.source();
    }
    detail
}

/// Replaces `name`'s values in the query by `value` (or removes them), keeping the other
/// parameters byte for byte.
fn set_query_param(url: &mut Url, name: &str, value: Option<&str>) {
    let mut pairs: Vec<String> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            !pair.is_empty()
                && url::form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .is_none_or(|(n, _)| n != name)
        })
        .map(str::to_owned)
        .collect();
    if let Some(value) = value {
        pairs.push(format!("{}={}", encode(name), encode(value)));
    }
    url.set_query((!pairs.is_empty()).then(|| pairs.join("&")).as_deref());
}

fn strip_userinfo(url: &mut Url) {
    // These fail only for URLs without a host, which an http(s) origin never is.
    let _ = url.set_username("");
    let _ = url.set_password(None);
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a value reaches
/// the upstream exactly as given (a `+` stays a plus, a space is `%20`).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An error body with the request's secrets removed: upstreams echo back what they were
/// sent ("invalid api_key abc123", the `Authorization` header, the query string), and
/// the body ends up in job errors and logs. Each secret is also removed percent-encoded,
/// as an echoed URL carries it.
fn scrub(body: &str, secrets: &[String]) -> String {
    let mut body = body.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_SCRUBBED_SECRET) {
        body = body.replace(secret.as_str(), "REDACTED");
        let encoded = encode(secret);
        if encoded != *secret {
            body = body.replace(&encoded, "REDACTED");
        }
    }
    body
}
