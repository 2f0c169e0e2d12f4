//! When a request may be sent: the per-source throttle, pauses asked for by the upstream
//! (rate-limit headers, `Retry-After`) and the backoff between retries.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use crate::spec::source::{RateLimit, Retry};

/// The longest the upstream may make us wait: beyond it a `Retry-After` fails the request
/// (a job that sleeps for hours holds a worker for nothing), and a rate-limit reset is cut
/// to it (the reset is only a hint; a 429 would still be honoured).
pub(super) const MAX_WAIT: Duration = Duration::from_secs(600);

/// The longest throttle interval: `max_requests_per_second` may be tiny, and an interval
/// has to stay addable to an instant.
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

/// The throttle of one source, shared by all its streams.
pub(super) struct Pace {
    interval: Duration,
    gate: Mutex<Gate>,
}

struct Gate {
    /// The earliest start of the next request; each caller takes a slot and moves it on,
    /// so concurrent callers go in the order they asked.
    next_start: Instant,
    /// No request starts before this (rate-limit headers, `Retry-After`).
    paused_until: Instant,
}

impl Pace {
    pub(super) fn new(rate: &RateLimit) -> Self {
        let now = Instant::now();
        Self {
            interval: interval(rate),
            gate: Mutex::new(Gate {
                next_start: now,
                paused_until: now,
            }),
        }
    }

    /// Waits until this source may send its next request. The lock is held only to take a
    /// slot, never while sleeping.
    pub(super) async fn wait_turn(&self) {
        loop {
            let slot = {
                let mut gate = self.lock();
                let slot = Instant::now().max(gate.next_start).max(gate.paused_until);
                gate.next_start = slot + self.interval;
                slot
            };
            tokio::time::sleep_until(slot).await;
            // A pause that arrived while we slept (another stream's reply said the quota is
            // spent) applies to a slot taken before it: take a new one after the pause.
            if self.lock().paused_until <= Instant::now() {
                return;
            }
        }
    }

    /// Holds every request of this source until `until`.
    pub(super) fn pause_until(&self, until: Instant) {
        let mut gate = self.lock();
        gate.paused_until = gate.paused_until.max(until);
    }

    /// Pauses the source when a reply says its rate-limit quota is spent.
    pub(super) fn observe(&self, headers: &HeaderMap) {
        if let Some(wait) = rate_limit_reset(headers, Utc::now()) {
            tracing::debug!(wait_ms = millis(wait), "rate-limit quota spent; pausing");
            self.pause_until(Instant::now() + wait);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        // The gate holds two instants and is always left consistent.
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The minimum time between two request starts: the larger of `min_interval_ms` and
/// `1 / max_requests_per_second`.
fn interval(rate: &RateLimit) -> Duration {
    let by_rate = rate
        .max_requests_per_second
        .and_then(|rps| Duration::try_from_secs_f64(1.0 / rps).ok())
        .unwrap_or(Duration::ZERO);
    Duration::from_millis(rate.min_interval_ms.into())
        .max(by_rate)
        .min(MAX_INTERVAL)
}

/// The wait before retry number `failures` (1 for the first retry): exponential from
/// `initial_backoff_ms`, capped at `max_backoff_ms`, with equal jitter (half fixed, half
/// random) so that workers failing together do not retry in lockstep, yet never retry at
/// once.
pub(super) fn backoff(retry: &Retry, failures: u32) -> Duration {
    let initial = u64::from(retry.initial_backoff_ms.get());
    let max = u64::from(retry.max_backoff_ms.get());
    let exp = initial
        .saturating_mul(2u64.saturating_pow(failures.saturating_sub(1)))
        .min(max);
    let fixed = exp / 2;
    Duration::from_millis(fixed + rand::rng().random_range(0..=exp - fixed))
}

/// The wait a `Retry-After` header asks for: delta-seconds or an HTTP date.
pub(super) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = http_date(value)?;
    // A date in the past means "now".
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// How long to wait before the next request when the reply says the quota is spent
/// (`RateLimit-Remaining: 0` with `RateLimit-Reset` in delta seconds, IETF draft; or
/// `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` in delta seconds or, above 10⁹,
/// epoch seconds), capped at [`MAX_WAIT`]. `None` while quota remains or no reset is given.
pub(super) fn rate_limit_reset(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value = headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()?;
        value.is_finite().then_some(value)
    };
    let seconds = if number("ratelimit-remaining") == Some(0.0) {
        number("ratelimit-reset")?
    } else if number("x-ratelimit-remaining") == Some(0.0) {
        let reset = number("x-ratelimit-reset")?;
        if reset > 1_000_000_000.0 {
            // Epoch seconds, to the millisecond.
            reset - now.timestamp_millis() as f64 / 1000.0
        } else {
            reset
        }
    } else {
        return None;
    };
    Some(
        Duration::try_from_secs_f64(seconds.max(0.0))
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT),
    )
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's preferred format).
pub(super) fn http_date(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(value.trim())
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// Milliseconds, for logs.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn interval_takes_the_stricter_limit() {
        let rate = |ms, rps| RateLimit {
            min_interval_ms: ms,
            max_requests_per_second: rps,
        };
        assert_eq!(interval(&rate(0, None)), Duration::ZERO);
        assert_eq!(interval(&rate(50, None)), Duration::from_millis(50));
        assert_eq!(interval(&rate(50, Some(4.0))), Duration::from_millis(250));
        assert_eq!(interval(&rate(500, Some(4.0))), Duration::from_millis(500));
        assert_eq!(interval(&rate(0, Some(1e-9))), MAX_INTERVAL);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let retry: Retry = serde_json::from_value(serde_json::json!({
            "max_attempts": 10, "initial_backoff_ms": 100, "max_backoff_ms": 1000
        }))
        .unwrap();
        for _ in 0..50 {
            let first = millis(backoff(&retry, 1));
            assert!((50..=100).contains(&first), "{first}");
            let third = millis(backoff(&retry, 3));
            assert!((200..=400).contains(&third), "{third}");
            let late = millis(backoff(&retry, 99));
            assert!((500..=1000).contains(&late), "{late}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let at = |v: &str| retry_after(&headers(&[("retry-after", v)]), now());
        assert_eq!(at("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            at("Mon, 23 Nov 2026 10:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(at("Mon, 23 Nov 2026 09:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(at("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn rate_limit_headers_pause_only_when_spent() {
        let reset = |pairs: &[(&'static str, &str)]| rate_limit_reset(&headers(pairs), now());
        assert_eq!(
            reset(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "3")]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            reset(&[("ratelimit-remaining", "5"), ("ratelimit-reset", "3")]),
            None
        );
        assert_eq!(
            reset(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "2")]),
            Some(Duration::from_secs(2))
        );
        let epoch = (now().timestamp() + 4).to_string();
        assert_eq!(
            reset(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &epoch)
            ]),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            reset(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "86400")]),
            Some(MAX_WAIT)
        );
        assert_eq!(reset(&[("x-ratelimit-remaining", "0")]), None);
        assert_eq!(reset(&[]), None);
    }

    #[tokio::test]
    async fn a_pause_holds_back_slots_taken_before_it() {
        let pace = Pace::new(&RateLimit {
            min_interval_ms: 30,
            max_requests_per_second: None,
        });
        let start = Instant::now();
        pace.wait_turn().await;
        // The second caller takes the slot at +30 ms, then a reply asks for a pause.
        let pause = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            pace.pause_until(start + Duration::from_millis(100));
        };
        tokio::join!(pace.wait_turn(), pause);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
