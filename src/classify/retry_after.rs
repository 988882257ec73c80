//! Reading how long an upstream asks to wait before the next request.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The longest wait [`retry_after`] returns: larger values are clamped to one day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the upstream asks to wait, from its response headers.
///
/// Same as [`retry_after_at`] with `now` = [`SystemTime::now`] for `Retry-After` dates.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_llm_router::classify::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "20".parse().unwrap());
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(20)));
///
/// // Azure's millisecond header is more precise and wins.
/// headers.insert("x-ms-retry-after-ms", "1500.5".parse().unwrap());
/// assert_eq!(retry_after(&headers), Some(Duration::from_micros(1_500_500)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// How long the upstream asks to wait, reading `Retry-After` dates relative to `now`.
///
/// * `retry-after-ms` (OpenAI, Azure) and `x-ms-retry-after-ms` (Azure) hold milliseconds,
///   possibly fractional. When any of them holds a valid value, the smallest one is used.
/// * Otherwise `Retry-After` holds delta-seconds (a fraction is accepted) or an HTTP-date; a
///   date in the past means "now" (`Duration::ZERO`). With several values, the smallest wins.
/// * Garbage, negative, NaN or infinite values are ignored; values over [`MAX_RETRY_AFTER`]
///   are clamped to it.
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use http::HeaderMap;
/// use tower_llm_router::classify::retry_after_at;
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_717); // Sun, 06 Nov 1994 08:48:37 GMT
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
/// assert_eq!(retry_after_at(&headers, now), Some(Duration::from_secs(60)));
///
/// headers.insert("retry-after", "soon".parse().unwrap());
/// assert_eq!(retry_after_at(&headers, now), None);
/// ```
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let millis = ["retry-after-ms", "x-ms-retry-after-ms"]
        .into_iter()
        .flat_map(|name| headers.get_all(name))
        .filter_map(|value| parse_number(value.to_str().ok()?))
        .map(|ms| ms / 1000.0)
        .reduce(f64::min);
    if let Some(secs) = millis {
        return Some(clamp_secs(secs));
    }
    headers
        .get_all(http::header::RETRY_AFTER)
        .iter()
        .filter_map(|value| {
            let value = value.to_str().ok()?.trim();
            match parse_number(value) {
                Some(secs) => Some(clamp_secs(secs)),
                None => {
                    let date = httpdate::parse_http_date(value).ok()?;
                    Some(
                        date.duration_since(now)
                            .unwrap_or(Duration::ZERO)
                            .min(MAX_RETRY_AFTER),
                    )
                }
            }
        })
        .min()
}

/// A non-negative decimal number (digits with an optional fraction), or `None`.
fn parse_number(value: &str) -> Option<f64> {
    let value = value.trim();
    let plain = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().any(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    // Digits only, so the result is never NaN; an overflow gives +inf, which clamps.
    value.parse::<f64>().ok()
}

fn clamp_secs(secs: f64) -> Duration {
    if secs >= MAX_RETRY_AFTER.as_secs_f64() {
        MAX_RETRY_AFTER
    } else {
        Duration::from_secs_f64(secs.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn at(pairs: &[(&'static str, &str)]) -> Option<Duration> {
        retry_after_at(
            &headers(pairs),
            UNIX_EPOCH + Duration::from_secs(784_111_717),
        )
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(at(&[("retry-after", "0")]), Some(Duration::ZERO));
        assert_eq!(at(&[("retry-after", " 7 ")]), Some(Duration::from_secs(7)));
        assert_eq!(
            at(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            at(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            minute
        );
        assert_eq!(
            at(&[("retry-after", "Sunday, 06-Nov-94 08:49:37 GMT")]),
            minute
        );
        assert_eq!(at(&[("retry-after", "Sun Nov  6 08:49:37 1994")]), minute);
        assert_eq!(
            at(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn millisecond_headers_win_and_smallest_is_used() {
        assert_eq!(
            at(&[("retry-after", "30"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            at(&[("x-ms-retry-after-ms", "900"), ("retry-after-ms", "1200.0")]),
            Some(Duration::from_millis(900))
        );
        assert_eq!(
            at(&[("retry-after", "30"), ("retry-after-ms", "oops")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            at(&[("retry-after", "30"), ("retry-after", "4")]),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn garbage_and_negative_are_ignored() {
        for bad in [
            "",
            "soon",
            "-5",
            "1e3",
            "NaN",
            "inf",
            ".",
            "5 seconds",
            "0x10",
        ] {
            assert_eq!(at(&[("retry-after", bad)]), None, "{bad:?}");
            assert_eq!(at(&[("retry-after-ms", bad)]), None, "{bad:?}");
        }
        assert_eq!(at(&[]), None);
    }

    #[test]
    fn absurd_values_are_clamped() {
        assert_eq!(
            at(&[("retry-after", "99999999999999999999")]),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            at(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            Some(MAX_RETRY_AFTER)
        );
        let huge = "9".repeat(400);
        assert_eq!(at(&[("retry-after-ms", &huge)]), Some(MAX_RETRY_AFTER));
    }
}
