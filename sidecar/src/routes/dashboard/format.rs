//! The dashboard's small formatting helpers, shared by the page ([`super::page`]) and the
//! usage graph ([`super::chart`]): HTML escaping, grouped digits, money and times.

/// `text` safe inside HTML text and attributes.
pub fn esc(text: &str) -> String {
    crate::html::escape(text)
}

/// `n` with thousands separators: `1,234,567`.
pub fn int(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn money(amount: u64, currency: &str) -> String {
    format!(
        "{}.{:02} {}",
        int(amount / 100),
        amount % 100,
        esc(&currency.to_uppercase())
    )
}

pub(super) fn time(at: u64) -> String {
    let days = i64::try_from(at / 86_400).unwrap_or(i64::MAX);
    let seconds = at % 86_400;
    format!(
        "{} {:02}:{:02} UTC",
        tollgate_filter::usage::format_date(days),
        seconds / 3_600,
        seconds / 60 % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_groups_digits() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(int(n), text);
        }
        assert_eq!(money(12_345, "usd"), "123.45 USD");
        assert_eq!(time(1_796_083_200 + 3_600 + 120), "2026-12-01 01:02 UTC");
    }
}
