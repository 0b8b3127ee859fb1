//! RFC 3339 times (UTC) for the alerts' payloads and `alerts run --now`.

use tollgate_filter::usage::{format_date, parse_date};

const DAY: u64 = 86_400;

/// `secs` (Unix seconds) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / DAY).unwrap_or(i64::MAX);
    let rest = secs % DAY;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        format_date(days),
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Parses an RFC 3339 time (`2026-12-30T00:00:00Z`, `…T01:00:00+01:00`, fractions of a second
/// ignored) into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not an RFC 3339 time (2026-12-30T00:00:00Z)");
    let date = text.get(..10).ok_or_else(bad)?;
    let days = parse_date(date).ok_or_else(bad)?;
    if !matches!(text.get(10..11), Some("T" | "t" | " ")) {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (hours, minutes, seconds) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if text.get(13..14) != Some(":") || text.get(16..17) != Some(":") {
        return Err(bad());
    }
    if hours > 23 || minutes > 59 || seconds > 60 {
        return Err(bad());
    }
    let mut rest = text.get(19..).ok_or_else(bad)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = fraction.get(digits..).ok_or_else(bad)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1) {
                Some("+") => 1,
                Some("-") => -1,
                _ => return Err(bad()),
            };
            let zone = rest.get(1..).ok_or_else(bad)?;
            let (h, m) = zone.split_once(':').ok_or_else(bad)?;
            let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h.to_string().len() > 2 || h > 23 || m > 59 || zone.len() != 5 {
                return Err(bad());
            }
            sign * (h * 3_600 + m * 60)
        }
    };
    let secs = days * 86_400 + hours * 3_600 + minutes * 60 + seconds - offset;
    u64::try_from(secs).map_err(|_| bad())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_083_200 + 3_661), "2026-12-01T01:01:01Z");
        for (text, secs) in [
            ("2026-12-01T00:00:00Z", 1_796_083_200),
            ("2026-12-01T01:01:01Z", 1_796_083_200 + 3_661),
            ("2026-12-01T01:01:01.250Z", 1_796_083_200 + 3_661),
            ("2026-12-01T02:00:00+01:00", 1_796_083_200 + 3_600),
            ("2026-11-30T23:00:00-01:00", 1_796_083_200),
        ] {
            assert_eq!(parse_rfc3339(text).unwrap(), secs, "{text}");
        }
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:00:00",
            "2026-12-01T00:00:00+1:00",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
