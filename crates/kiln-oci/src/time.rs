//! The two time formats kiln reads and writes, in one place (with `jiff`): RFC 3339 for image
//! configs and history (`2026-12-06T21:00:00Z`), and HTTP's IMF-fixdate for `Last-Modified`.

/// `secs` since the epoch as an RFC 3339 UTC time with whole seconds. Out of jiff's range
/// (beyond the years -9999 to 9999) it is clamped to that range's end.
pub fn rfc3339(secs: i64) -> String {
    let timestamp = jiff::Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    // Whole seconds: the bounds carry nanoseconds, which configs never show.
    let whole = jiff::Timestamp::from_second(timestamp.as_second()).unwrap_or(timestamp);
    whole.to_string()
}

/// An HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`, as in `Last-Modified`) in seconds since the
/// epoch; `None` when it is not one.
pub fn parse_http_date(text: &str) -> Option<i64> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text.trim())
        .ok()
        .map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-86_400), "1969-12-31T00:00:00Z");
        // Far out of range: clamped, never a panic.
        assert!(
            rfc3339(i64::MAX).starts_with("9999-12-"),
            "{}",
            rfc3339(i64::MAX)
        );
        assert!(
            rfc3339(i64::MIN).starts_with("-009999-01-"),
            "{}",
            rfc3339(i64::MIN)
        );
        assert!(!rfc3339(i64::MAX).contains('.'), "whole seconds");
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date(""), None);
    }
}
