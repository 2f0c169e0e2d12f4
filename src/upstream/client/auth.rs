//! Credentials for one request: secrets resolved when the request is made (an `env`
//! reference follows the variable as it changes), and OAuth 2.0 access tokens fetched from
//! the token endpoint and cached until shortly before they expire.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::pace::backoff;
use super::{BodyEnd, read_capped, transport_detail};
use crate::spec::auth::{Auth, Grant, OAuth2};
use crate::spec::secret::Secret;
use crate::spec::source::Retry;
use crate::upstream::policy::{self, Refused};

/// A token endpoint's reply is small; anything larger is not one.
const TOKEN_BODY_BYTES: u64 = 64 * 1024;

/// How long before its expiry a cached access token is renewed, at most: a token must not
/// expire between being taken from the cache and reaching the upstream.
const RENEW_MARGIN: Duration = Duration::from_secs(30);

/// What one request carries to authenticate itself.
pub(super) enum Credentials {
    None,
    /// A header holding the secret: bearer tokens, API key headers, OAuth access tokens.
    Header {
        name: HeaderName,
        value: HeaderValue,
        secret: String,
    },
    Basic {
        username: String,
        password: String,
    },
    /// A query parameter holding the secret.
    Query {
        name: String,
        value: String,
    },
}

impl Credentials {
    /// Every form in which these credentials' secret can come back in a reply (the
    /// secret itself, and for basic auth the encoded `user:password` of the header), to be
    /// scrubbed from anything shown.
    pub(super) fn echoes(&self) -> Vec<String> {
        match self {
            Credentials::Basic { username, password } => {
                use base64::Engine as _;
                let pair = format!("{username}:{password}");
                vec![
                    password.clone(),
                    base64::engine::general_purpose::STANDARD.encode(pair),
                ]
            }
            other => other.secret().map(str::to_owned).into_iter().collect(),
        }
    }

    /// The secret these credentials reveal.
    pub(super) fn secret(&self) -> Option<&str> {
        match self {
            Credentials::None => None,
            Credentials::Header { secret, .. } => Some(secret),
            Credentials::Basic { password, .. } => Some(password),
            Credentials::Query { value, .. } => Some(value),
        }
    }
}

/// Why a request's credentials could not be had.
pub(super) enum Unavailable {
    /// A secret that cannot be resolved, or a token endpoint that failed.
    Detail(String),
    /// The token endpoint's host resolves to an address tidemark never requests.
    Refused(Refused),
}

impl From<String> for Unavailable {
    fn from(detail: String) -> Self {
        Unavailable::Detail(detail)
    }
}

/// The settings a token request shares with the API requests of its source.
pub(super) struct TokenRequests<'a> {
    pub(super) http: &'a reqwest::Client,
    pub(super) timeout: Duration,
    pub(super) retry: &'a Retry,
}

/// The OAuth 2.0 state of one source.
#[derive(Default)]
pub(super) struct Tokens {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    access: Option<Access>,
    /// The refresh token the endpoint rotated to; it replaces the configured one.
    refresh: Option<String>,
}

struct Access {
    token: String,
    /// When to fetch a new one; `None` when the endpoint gave no lifetime (then only a 401
    /// retires it).
    renew_at: Option<Instant>,
}

/// Resolves `auth` for one request.
pub(super) async fn credentials(
    auth: &Auth,
    tokens: &Tokens,
    requests: TokenRequests<'_>,
) -> Result<Credentials, Unavailable> {
    Ok(match auth {
        Auth::None => Credentials::None,
        Auth::Bearer(bearer) => bearer_header(reveal(&bearer.token, "the bearer token")?)?,
        Auth::Basic(basic) => Credentials::Basic {
            username: basic.username.clone(),
            password: reveal(&basic.password, "the basic auth password")?,
        },
        Auth::Header(key) => {
            let secret = reveal(&key.value, "the API key")?;
            Credentials::Header {
                name: HeaderName::from_bytes(key.name.as_str().as_bytes())
                    .map_err(|_| format!("`{}` is not a valid header name", key.name))?,
                value: sensitive(&secret, "the API key")?,
                secret,
            }
        }
        Auth::Query(key) => Credentials::Query {
            name: key.name.to_string(),
            value: reveal(&key.value, "the API key")?,
        },
        Auth::Oauth2(oauth) => bearer_header(tokens.access_token(oauth, requests).await?)?,
    })
}

fn bearer_header(token: String) -> Result<Credentials, String> {
    Ok(Credentials::Header {
        name: reqwest::header::AUTHORIZATION,
        value: sensitive(&format!("Bearer {token}"), "the bearer token")?,
        secret: token,
    })
}

/// A header value hidden from `Debug` output and HTTP/2 header compression.
fn sensitive(value: &str, what: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| format!("{what} contains characters not allowed in a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The value of a secret now. An unset (or empty) variable is a configuration error,
/// reported by name, never by value.
fn reveal(secret: &Secret, what: &str) -> Result<String, String> {
    match secret {
        Secret::Inline(value) => Ok(value.clone()),
        Secret::Env(name) => match std::env::var(name.as_str()) {
            Ok(value) if !value.is_empty() => Ok(value),
            Ok(_) => Err(format!(
                "{what}: the environment variable `{name}` is empty"
            )),
            Err(std::env::VarError::NotPresent) => Err(format!(
                "{what}: the environment variable `{name}` is not set"
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                "{what}: the environment variable `{name}` is not valid UTF-8"
            )),
        },
    }
}

impl Tokens {
    /// A valid access token: the cached one, or a new one from the token endpoint. The
    /// cache stays locked during a fetch, so concurrent requests share it.
    async fn access_token(
        &self,
        oauth: &OAuth2,
        requests: TokenRequests<'_>,
    ) -> Result<String, Unavailable> {
        let mut cache = self.cache.lock().await;
        if let Some(access) = &cache.access
            && access.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(access.token.clone());
        }
        let reply = fetch_token(oauth, cache.refresh.as_deref(), &requests).await?;
        let fetched_at = Instant::now();
        // A lifetime too long to add to an instant is as good as none.
        let renew_at = reply
            .lifetime()
            .and_then(|lifetime| fetched_at.checked_add(lifetime - RENEW_MARGIN.min(lifetime / 2)));
        if let Some(rotated) = reply.refresh_token.filter(|t| !t.is_empty()) {
            cache.refresh = Some(rotated);
        }
        cache.access = Some(Access {
            token: reply.access_token.clone(),
            renew_at,
        });
        Ok(reply.access_token)
    }

    /// Retires `token` after the upstream refused it. A token another request has already
    /// renewed is kept.
    pub(super) async fn forget(&self, token: &str) {
        let mut cache = self.cache.lock().await;
        if cache.access.as_ref().is_some_and(|a| a.token == token) {
            cache.access = None;
        }
    }
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    /// Seconds; some endpoints send it as a string.
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl TokenReply {
    fn lifetime(&self) -> Option<Duration> {
        let seconds = match self.expires_in.as_ref()? {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse().ok()?,
            _ => return None,
        };
        Duration::try_from_secs_f64(seconds).ok()
    }
}

/// Asks the token endpoint for an access token, retrying transient failures like an API
/// request. Only the OAuth client's own credentials go there, never the source's headers.
async fn fetch_token(
    oauth: &OAuth2,
    rotated_refresh: Option<&str>,
    requests: &TokenRequests<'_>,
) -> Result<TokenReply, Unavailable> {
    let form = token_form(oauth, rotated_refresh)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = requests
            .http
            .post(oauth.token_url.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form.clone())
            .send();
        let outcome = tokio::time::timeout(requests.timeout, async {
            let mut response = sent.await?;
            let status = response.status();
            let (body, end) = read_capped(&mut response, TOKEN_BODY_BYTES).await;
            Ok::<_, reqwest::Error>((status, body, end))
        })
        .await;
        let (transient, detail) = match outcome {
            Err(_) => (
                true,
                format!(
                    "the token endpoint did not answer within {} ms",
                    requests.timeout.as_millis()
                ),
            ),
            Ok(Err(e)) => {
                if let Some(refused) = policy::refusal(&e) {
                    return Err(Unavailable::Refused(refused.clone()));
                }
                (true, format!("the token endpoint: {}", transport_detail(e)))
            }
            Ok(Ok((status, body, end))) if status.is_success() => match end {
                BodyEnd::Complete => {
                    // serde's message is left out: it may quote a value of the reply.
                    return serde_json::from_slice::<TokenReply>(&body)
                        .ok()
                        .filter(|reply| !reply.access_token.is_empty())
                        .ok_or_else(|| {
                            Unavailable::Detail(format!(
                                "the token endpoint answered {status} without a usable `access_token`"
                            ))
                        });
                }
                BodyEnd::OverCap => {
                    return Err(Unavailable::Detail(format!(
                        "the token endpoint's reply is larger than {TOKEN_BODY_BYTES} bytes"
                    )));
                }
                BodyEnd::Broken(e) => (
                    true,
                    format!(
                        "the token endpoint's reply broke off: {}",
                        transport_detail(e)
                    ),
                ),
            },
            Ok(Ok((status, body, _))) => (
                super::retryable(status),
                format!(
                    "the token endpoint answered {status}{}",
                    oauth_error_code(&body)
                ),
            ),
        };
        if !transient || attempt >= requests.retry.max_attempts.get() {
            return Err(Unavailable::Detail(detail));
        }
        let delay = backoff(requests.retry, attempt);
        tracing::warn!(attempt, delay_ms = super::pace::millis(delay), %detail, "retrying the token request");
        tokio::time::sleep(delay).await;
    }
}

fn token_form(oauth: &OAuth2, rotated_refresh: Option<&str>) -> Result<String, String> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    match oauth.grant {
        Grant::ClientCredentials => {
            form.append_pair("grant_type", "client_credentials");
        }
        Grant::RefreshToken => {
            let refresh = match (rotated_refresh, &oauth.refresh_token) {
                (Some(rotated), _) => rotated.to_owned(),
                (None, Some(configured)) => reveal(configured, "the refresh token")?,
                // The spec refuses a refresh_token grant without one.
                (None, None) => return Err("the refresh_token grant has no refresh token".into()),
            };
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", &refresh);
        }
    }
    form.append_pair("client_id", &oauth.client_id);
    if let Some(secret) = &oauth.client_secret {
        form.append_pair("client_secret", &reveal(secret, "the client secret")?);
    }
    if let Some(scope) = &oauth.scope {
        form.append_pair("scope", scope);
    }
    Ok(form.finish())
}

/// The standard OAuth error code of an error reply (`invalid_client`, ...), which says
/// what is wrong without echoing anything the endpoint was sent.
fn oauth_error_code(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e)
            if !e.error.is_empty()
                && e.error.len() <= 64
                && e.error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            format!(" ({})", e.error)
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_come_as_numbers_or_strings() {
        let reply = |v: Value| TokenReply {
            access_token: "t".into(),
            expires_in: Some(v),
            refresh_token: None,
        };
        assert_eq!(
            reply(serde_json::json!(3600)).lifetime(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            reply(serde_json::json!("60")).lifetime(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(reply(serde_json::json!(-1)).lifetime(), None);
        assert_eq!(reply(Value::Null).lifetime(), None);
    }

    #[test]
    fn only_standard_error_codes_are_repeated() {
        assert_eq!(
            oauth_error_code(br#"{"error":"invalid_client"}"#),
            " (invalid_client)"
        );
        assert_eq!(oauth_error_code(br#"{"error":"bad secret s3cr3t"}"#), "");
        assert_eq!(oauth_error_code(b"<html>"), "");
    }
}
