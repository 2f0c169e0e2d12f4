//! Credentials: the one credential every upstream API request must carry (none by
//! default), in each of the ways real APIs ask for one, and an OAuth 2 token endpoint
//! whose access tokens expire and can be revoked, so the gateway's token cache and
//! refresh-on-401 can be tested.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::base64::STANDARD;
use super::{JsonBody, Sandbox, SplitMix64, bad_request, json_reply};

/// The lifetime of issued access tokens when `expires_in` is not given.
const DEFAULT_EXPIRES_IN: u32 = 3600;

/// The credential API requests must carry, as `POST /_control/auth` takes it.
#[derive(Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Credential {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: String },
    /// `Authorization: Basic <base64 of username:password>`.
    Basic { username: String, password: String },
    /// An API key in a header.
    Header { name: String, value: String },
    /// An API key in a query parameter.
    Query { name: String, value: String },
    /// `Authorization: Bearer <token>` with a token issued by `POST /oauth/token`.
    Oauth2 {
        client_id: String,
        client_secret: String,
        refresh_token: Option<String>,
        #[serde(default = "default_expires_in")]
        expires_in: u32,
    },
}

fn default_expires_in() -> u32 {
    DEFAULT_EXPIRES_IN
}

/// Why a request was refused: the `401` it gets.
pub(super) struct Denial {
    challenge: String,
    message: &'static str,
}

impl IntoResponse for Denial {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": [self.message] }).to_string();
        let mut response = json_reply(StatusCode::UNAUTHORIZED, body);
        if let Ok(challenge) = HeaderValue::from_str(&self.challenge) {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The configured credential and the access tokens issued for it.
#[derive(Default)]
pub(super) struct Credentials {
    required: Credential,
    /// Access token → when it expires (real time: it is about the client's cache).
    issued: HashMap<String, Instant>,
    token_requests: u64,
}

impl Credentials {
    /// Whether a request with `headers` and `query` carries the credential, at `now`.
    pub(super) fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: Instant,
    ) -> Result<(), Denial> {
        let deny = |challenge: String, message| Err(Denial { challenge, message });
        match &self.required {
            Credential::None => Ok(()),
            Credential::Bearer { token } => match authorization(headers, "Bearer") {
                Some(given) if given == token => Ok(()),
                Some(_) => deny(bearer_challenge(true), "invalid bearer token"),
                None => deny(bearer_challenge(false), "a bearer token is required"),
            },
            Credential::Basic { username, password } => match authorization(headers, "Basic") {
                Some(given)
                    if given == STANDARD.encode(format!("{username}:{password}").as_bytes()) =>
                {
                    Ok(())
                }
                _ => deny(
                    r#"Basic realm="sandbox""#.to_owned(),
                    "a valid username and password are required",
                ),
            },
            Credential::Header { name, value } => {
                match headers.get(name.as_str()).map(HeaderValue::as_bytes) {
                    Some(given) if given == value.as_bytes() => Ok(()),
                    _ => deny(
                        format!(r#"ApiKey realm="sandbox", header="{name}""#),
                        "a valid API key header is required",
                    ),
                }
            }
            Credential::Query { name, value } => {
                let given = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                    .find(|(key, _)| key == name.as_str())
                    .map(|(_, given)| given);
                match given {
                    Some(given) if given == value.as_str() => Ok(()),
                    _ => deny(
                        format!(r#"ApiKey realm="sandbox", query="{name}""#),
                        "a valid API key query parameter is required",
                    ),
                }
            }
            Credential::Oauth2 { .. } => match authorization(headers, "Bearer") {
                Some(given) if self.issued.get(given).is_some_and(|&until| now < until) => Ok(()),
                Some(_) => deny(
                    bearer_challenge(true),
                    "the access token is unknown, expired or revoked",
                ),
                None => deny(bearer_challenge(false), "an access token is required"),
            },
        }
    }

    fn status(&self) -> Response {
        let body = serde_json::json!({ "token_requests": self.token_requests });
        json_reply(StatusCode::OK, body.to_string())
    }
}

fn bearer_challenge(given: bool) -> String {
    match given {
        true => r#"Bearer realm="sandbox", error="invalid_token""#.to_owned(),
        false => r#"Bearer realm="sandbox""#.to_owned(),
    }
}

/// The credentials of an `Authorization` header with `scheme` (case-insensitive).
fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (given, credentials) = value.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then_some(credentials.trim())
}

/// `POST /_control/auth`: sets the credential. Issued access tokens and the token
/// request count start again from nothing.
pub(super) async fn set(
    State(sandbox): State<Arc<Sandbox>>,
    JsonBody(credential): JsonBody<Credential>,
) -> Response {
    if let Credential::Header { name, .. } = &credential
        && HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        return bad_request(&format!("not a header name: {name}"));
    }
    let mut world = sandbox.world();
    world.credentials = Credentials {
        required: credential,
        ..Credentials::default()
    };
    world.credentials.status()
}

/// `GET /_control/auth`: `{"token_requests": n}`.
pub(super) async fn status(State(sandbox): State<Arc<Sandbox>>) -> Response {
    sandbox.world().credentials.status()
}

/// `POST /_control/auth/revoke`: every issued access token stops working, so the next
/// API request gets a `401` and the client must fetch a new one.
pub(super) async fn revoke(State(sandbox): State<Arc<Sandbox>>) -> Response {
    let mut world = sandbox.world();
    world.credentials.issued.clear();
    world.credentials.status()
}

/// An OAuth 2 error reply (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str) -> Response {
    let mut response = json_reply(status, serde_json::json!({ "error": error }).to_string());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="sandbox""#),
        );
    }
    response
}

/// `POST /oauth/token` (form-encoded): the `client_credentials` grant, with the client
/// in the form or in HTTP Basic auth, and the `refresh_token` grant. Answers
/// `{"access_token", "token_type": "Bearer", "expires_in"}`.
pub(super) async fn token(
    State(sandbox): State<Arc<Sandbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str);
    let mut world = sandbox.world();
    let world = &mut *world;
    world.credentials.token_requests += 1;
    let Credential::Oauth2 {
        client_id,
        client_secret,
        refresh_token,
        expires_in,
    } = &world.credentials.required
    else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    };
    let basic = STANDARD.encode(format!("{client_id}:{client_secret}").as_bytes());
    let client_in_header = authorization(&headers, "Basic") == Some(basic.as_str());
    let client_in_form =
        field("client_id") == Some(client_id) && field("client_secret") == Some(client_secret);
    match field("grant_type") {
        Some("client_credentials") if client_in_header || client_in_form => {}
        Some("client_credentials") => {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        Some("refresh_token") => {
            // A public client sends only its id; whatever it sends must be right.
            let wrong_client = field("client_id").is_some_and(|id| id != client_id)
                || field("client_secret").is_some_and(|secret| secret != client_secret);
            if wrong_client {
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
            }
            if refresh_token.is_none() || field("refresh_token") != refresh_token.as_deref() {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
        }
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    }
    let expires_in = *expires_in;
    let access_token = access_token(&mut world.noise);
    let now = Instant::now();
    let issued = &mut world.credentials.issued;
    issued.retain(|_, until| *until > now);
    issued.insert(
        access_token.clone(),
        now + Duration::from_secs(u64::from(expires_in)),
    );
    let body = serde_json::json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    });
    let mut response = json_reply(StatusCode::OK, body.to_string());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn access_token(rng: &mut SplitMix64) -> String {
    format!("sbx_{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}
