//! When to retry a registry request and how long to wait: exponential backoff with
//! jitter for 5xx replies and broken connections, the server's `Retry-After` for 429
//! and 503 (capped, so a hostile registry cannot park the agent). Pure.

use std::time::{Duration, SystemTime};

/// Retry settings for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of the backoff delay.
    pub max_delay: Duration,
    /// Upper bound of a server-requested `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over roughly four seconds: enough to ride out a registry restart
    /// or a flaky link, short enough that a reconcile pass is not held up for long
    /// (the controller retries the whole pull with its own, longer backoff).
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0 for the first retry), without jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before retry number `retry`: `Retry-After` if the server sent one
    /// (capped), else the backoff with up to 50% jitter taken off (so clients that
    /// failed together do not retry together). `seed` supplies the randomness.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, seed: u64) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let full = self.backoff(retry);
        let jitter = full.mul_f64((seed % 1000) as f64 / 2000.0);
        full.saturating_sub(jitter)
    }
}

/// True for HTTP statuses worth retrying: 408, 429 and the 5xx gateway/overload
/// family. 501 and 505 are permanent.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), relative
/// to `now`. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A cheap jitter seed: the sub-second clock. Good enough to spread retries.
pub fn jitter_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) / 1000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::default();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            (0..7).map(|r| ms(p.backoff(r))).collect::<Vec<_>>(),
            vec![250, 500, 1000, 2000, 4000, 8000, 8000]
        );
        assert_eq!(p.backoff(u32::MAX), p.max_delay);
        // Jitter takes off at most half.
        for seed in [0, 1, 499, 999, 123_456_789] {
            let d = p.delay(2, None, seed);
            assert!(
                d <= Duration::from_millis(1000) && d >= Duration::from_millis(500),
                "{d:?}"
            );
        }
        // Retry-After wins, capped.
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3)), 7),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600)), 7),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 416, 501, 505] {
            assert!(!is_transient_status(s), "{s}");
        }
    }
}
