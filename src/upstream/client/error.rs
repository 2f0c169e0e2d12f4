//! Why a request to an upstream failed, and the problem document a job records for it.

use crate::problem::{Problem, ProblemType};
use crate::upstream::policy::Refused;

/// How much of an error body a problem's detail repeats; [`UpstreamError::Status`] keeps
/// more for callers to match on.
const DETAIL_BODY_CHARS: usize = 300;

/// A request that did not produce a value. Every message names the URL path, never a
/// query string, header or secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A non-2xx reply that is not retried (4xx other than 408/425/429, a redirect that
    /// was not followed) or a retryable one that outlived `max_attempts`. `body` holds the
    /// first 4 KiB of the reply, with the source's secrets scrubbed (callers match e.g.
    /// `INVALID_SINCE_FORMAT` in it).
    #[error("{path}: the upstream answered {status} after {attempts} attempt(s)")]
    Status {
        status: u16,
        body: String,
        attempts: u32,
        path: String,
    },
    /// Connect errors, resets and timeouts, after retries.
    #[error("{path}: {detail} (after {attempts} attempt(s))")]
    Transport {
        detail: String,
        attempts: u32,
        path: String,
    },
    /// The caller's parser refused the body: transiently on every attempt, or fatally.
    #[error("{path}: unusable reply body after {attempts} attempt(s): {detail}")]
    Body {
        detail: String,
        attempts: u32,
        path: String,
    },
    /// The body is above the size cap (not retried: it would be again).
    #[error("{path}: the reply body is larger than {limit} bytes (attempt {attempts})")]
    TooLarge {
        limit: u64,
        attempts: u32,
        path: String,
    },
    /// A full URL that is not on the source's origin; it was never requested.
    #[error("{url} is not on the source's origin (scheme, host and port); it was not requested")]
    ForeignHost { url: String },
    /// A host the host policy refuses (`TIDEMARK_UPSTREAM_ALLOW`, or a link-local or
    /// metadata address, also after DNS resolution); nothing was sent to it.
    #[error("{0}")]
    ForbiddenHost(Refused),
    /// A secret that cannot be resolved (an unset environment variable) or an OAuth 2.0
    /// token endpoint that refused or kept failing. Not retried further: the configuration
    /// or the token endpoint has to change. `attempts` counts the API requests sent before.
    #[error("upstream credentials unavailable: {detail}")]
    Credentials { detail: String, attempts: u32 },
    /// The caller built a request that cannot be sent (e.g. an invalid header).
    #[error("the upstream request cannot be built: {detail}")]
    Request { detail: String },
}

impl UpstreamError {
    /// Requests actually sent to the upstream (token endpoint requests not included).
    pub fn attempts(&self) -> u32 {
        match self {
            UpstreamError::Status { attempts, .. }
            | UpstreamError::Transport { attempts, .. }
            | UpstreamError::Body { attempts, .. }
            | UpstreamError::TooLarge { attempts, .. }
            | UpstreamError::Credentials { attempts, .. } => *attempts,
            UpstreamError::ForeignHost { .. }
            | UpstreamError::ForbiddenHost(_)
            | UpstreamError::Request { .. } => 0,
        }
    }

    /// The problem document of a job that failed with this error. Its status is 502: the
    /// gateway's upstream failed, whatever status the upstream itself answered.
    pub fn problem(&self) -> Problem {
        let kind = match self {
            UpstreamError::Status { .. } => ProblemType::UpstreamStatus,
            UpstreamError::Transport { .. } => ProblemType::UpstreamUnreachable,
            UpstreamError::Body { .. } => ProblemType::UpstreamBadBody,
            UpstreamError::TooLarge { .. } => ProblemType::UpstreamTooLarge,
            UpstreamError::ForeignHost { .. } => ProblemType::UpstreamForeignHost,
            UpstreamError::ForbiddenHost(_) => ProblemType::UpstreamForbiddenHost,
            UpstreamError::Credentials { .. } => ProblemType::UpstreamCredentials,
            UpstreamError::Request { .. } => ProblemType::UpstreamBadRequest,
        };
        let mut detail = self.to_string();
        if let UpstreamError::Credentials { attempts, .. } = self
            && *attempts > 0
        {
            detail.push_str(&format!(" (after {attempts} attempt(s))"));
        }
        if let UpstreamError::Status { status, body, .. } = self {
            if (300..400).contains(status) {
                detail.push_str(
                    "; redirects are followed only within the source's origin, at most 5",
                );
            }
            let body = body.trim();
            if !body.is_empty() {
                let mut shown: String = body.chars().take(DETAIL_BODY_CHARS).collect();
                if shown.len() < body.len() {
                    shown.push('…');
                }
                detail.push_str(": ");
                detail.push_str(&shown);
            }
        }
        Problem::new(kind, detail)
    }
}
