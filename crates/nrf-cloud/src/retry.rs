//! When to try again: doubling backoff with jitter, and `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The wait before attempt `attempt + 1` after `attempt` failed (1-based):
/// `base * 2^(attempt-1)` capped at `max`, jittered uniformly into its upper
/// half so that stations which failed together do not retry together.
pub fn backoff(attempt: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1));
    let full = base.saturating_mul(doubling).min(max);
    let half = full / 2;
    let spread = (full - half).as_micros().min(u128::from(u64::MAX)) as u64;
    half + Duration::from_micros(rng.gen_range(0..=spread))
}

/// The delay a `Retry-After` value asks for (RFC 9110 §10.2.3): delay-seconds
/// or an HTTP-date (a date in the past means "now"). `None` when the value
/// is neither, so the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate instead of failing.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = at(1_000);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_http_dates_in_all_three_formats() {
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example).
        let now = at(784_111_777 - 30);
        let thirty = Some(Duration::from_secs(30));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            thirty
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            thirty
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), thirty);
    }

    #[test]
    fn retry_after_in_the_past_is_now_and_garbage_is_none() {
        let now = at(784_111_777 + 5);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994", "1 2"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_band_and_is_capped() {
        let mut rng = StdRng::seed_from_u64(7);
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(10);
        for attempt in 1..=10u32 {
            let full = (base * 2u32.pow(attempt - 1)).min(max);
            for _ in 0..50 {
                let wait = backoff(attempt, base, max, &mut rng);
                assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
            }
        }
        assert!(backoff(u32::MAX, base, max, &mut rng) <= max);
    }
}
