//! Window durations: a positive integer and one unit, `s`, `m`, `h` or `d` (`"1s"`, `"90s"`,
//! `"1h"`), at most 365 days.

use crate::{Nanos, SECOND};

/// The longest window.
pub(super) const MAX_WINDOW: Nanos = 365 * 86_400 * SECOND;

/// Parses a window; the error is the reason, for the caller to put behind the field path.
pub(super) fn parse_window(value: &serde_json::Value) -> Result<Nanos, String> {
    let not_a_duration = || format!("{value} is not a duration (use 1s, 1m, 1h, 1d)");
    let text = value.as_str().ok_or_else(not_a_duration)?;
    let split = text.len().saturating_sub(1);
    let (digits, unit) = (
        text.get(..split).unwrap_or(""),
        text.get(split..).unwrap_or(""),
    );
    let unit_nanos = match unit {
        "s" => SECOND,
        "m" => 60 * SECOND,
        "h" => 3_600 * SECOND,
        "d" => 86_400 * SECOND,
        _ => return Err(not_a_duration()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_duration());
    }
    let too_long = || format!("{value} is longer than 365d (use at most 365d)");
    let count: u64 = digits.parse().map_err(|_| too_long())?;
    if count == 0 {
        return Err(format!("{value} is zero (a window must be at least 1s)"));
    }
    let nanos = count.checked_mul(unit_nanos).ok_or_else(too_long)?;
    if nanos > MAX_WINDOW {
        return Err(too_long());
    }
    Ok(nanos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_each_unit() {
        assert_eq!(parse_window(&json!("1s")), Ok(SECOND));
        assert_eq!(parse_window(&json!("90s")), Ok(90 * SECOND));
        assert_eq!(parse_window(&json!("1m")), Ok(60 * SECOND));
        assert_eq!(parse_window(&json!("1h")), Ok(3_600 * SECOND));
        assert_eq!(parse_window(&json!("365d")), Ok(MAX_WINDOW));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            json!("90x"),
            json!("1.5m"),
            json!("m"),
            json!(" 1m"),
            json!("1 m"),
            json!("-1m"),
            json!("1ms"),
            json!(60),
            json!(null),
            json!(""),
        ] {
            let reason = parse_window(&bad).unwrap_err();
            assert!(
                reason.ends_with("is not a duration (use 1s, 1m, 1h, 1d)"),
                "{bad}: {reason}"
            );
        }
        assert_eq!(
            parse_window(&json!("0s")).unwrap_err(),
            "\"0s\" is zero (a window must be at least 1s)"
        );
        assert_eq!(
            parse_window(&json!("366d")).unwrap_err(),
            "\"366d\" is longer than 365d (use at most 365d)"
        );
        assert!(
            parse_window(&json!("99999999999999999999s"))
                .unwrap_err()
                .contains("longer than 365d")
        );
    }
}
