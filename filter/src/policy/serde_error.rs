//! Turns what serde reports (syntax errors, wrong types, unknown or missing fields) into a
//! [`ConfigError`] with the field path and words a user can act on.

use serde_json::error::Category;
use serde_path_to_error::{Path, Segment};

use super::ConfigError;

/// Reads `bytes` as `T`, reporting the first mistake with its path.
pub(super) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError {
            path: ROOT.into(),
            reason: "the configuration is empty (it must be a JSON object such as {\"rules\": []})"
                .into(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(convert)?;
    deserializer.end().map_err(|e| syntax(&e))?;
    Ok(value)
}

/// How the path of the document itself is written.
pub(super) const ROOT: &str = "(root)";

fn convert(error: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = render(error.path());
    let inner = error.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => syntax(inner),
        Category::Data => data(path, &message(inner)),
    }
}

fn syntax(error: &serde_json::Error) -> ConfigError {
    ConfigError {
        path: ROOT.into(),
        reason: format!(
            "invalid JSON at line {} column {}: {}",
            error.line(),
            error.column(),
            message(error)
        ),
    }
}

/// serde_json's message without the ` at line L column C` it appends.
fn message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// `rules[1].window`, `tenants.key-1.plan`; `(root)` for the document.
fn render(path: &Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => join(&mut out, key),
            Segment::Enum { variant } => join(&mut out, variant),
            Segment::Unknown => join(&mut out, "?"),
        }
    }
    if out.is_empty() { ROOT.into() } else { out }
}

/// Appends a field or map key to a path, quoting keys that would not read as one segment.
pub(super) fn join(path: &mut String, key: &str) {
    if path == ROOT {
        path.clear();
    }
    if !path.is_empty() {
        path.push('.');
    }
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'));
    if plain {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

/// `path` with `key` appended.
pub(super) fn child(path: &str, key: &str) -> String {
    let mut out = path.to_owned();
    join(&mut out, key);
    out
}

fn data(path: String, text: &str) -> ConfigError {
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        return ConfigError {
            path: with_field(path, field),
            reason: unknown_field(field, &known),
        };
    }
    if let Some(rest) = text.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return ConfigError {
            path: child(&path, field),
            reason: format!("missing ({})", missing_hint(field)),
        };
    }
    if let Some(rest) = text.strip_prefix("duplicate field `") {
        let field = rest.trim_end_matches('`');
        return ConfigError {
            path: with_field(path, field),
            reason: "given twice (keep one)".into(),
        };
    }
    ConfigError {
        path,
        reason: readable(text),
    }
}

/// serde_path_to_error may or may not have the offending field in the path already.
fn with_field(path: String, field: &str) -> String {
    if path == field
        || path.ends_with(&format!(".{field}"))
        || path.ends_with(&format!(".{field:?}"))
    {
        path
    } else {
        child(&path, field)
    }
}

/// The reason for an unknown field, with the closest known name when there is one.
pub(super) fn unknown_field(field: &str, known: &[&str]) -> String {
    let list = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    match closest(field, known) {
        Some(guess) => format!("unknown field (did you mean {guess}? known fields: {list})"),
        None => format!("unknown field (known fields: {list})"),
    }
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn missing_hint(field: &str) -> &'static str {
    match field {
        "rules" => "add \"rules\": [] or a list of rules",
        "name" => "name the rule: 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        "key" => "list what a bucket is counted by, e.g. [\"client_ip\"] or [\"tenant\"]",
        "algorithm" => ALGORITHMS_HINT,
        "limit" => LIMIT_HINT,
        "window" => "give a duration such as \"1s\", \"1m\", \"1h\", \"1d\"",
        "cluster" => "name the Envoy cluster that reaches the sidecar",
        "id" => "give the tenant's id",
        "plan" => "name the tenant's plan",
        "requests_per_minute" => "give the plan's requests per minute, a positive integer",
        _ => "this field is required",
    }
}

/// What `algorithm` accepts.
pub(super) const ALGORITHMS_HINT: &str =
    "use fixed_window, sliding_window_log, sliding_window_counter, token_bucket or leaky_bucket";

/// What `limit` accepts.
pub(super) const LIMIT_HINT: &str =
    "use a positive integer, \"plan\", or {\"plan\": {\"<plan>\": n}, \"default\": n}";

/// `invalid type: string "x", expected u64` → `expected a non-negative integer, found string "x"`.
fn readable(text: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return format!("expected {}, found {}", term(expected), term(found));
        }
    }
    text.to_owned()
}

fn term(word: &str) -> &str {
    match word {
        "u64" | "u32" | "usize" => "a non-negative integer",
        "a sequence" => "a list",
        "sequence" => "a list",
        "a map" => "an object",
        "map" => "an object",
        "unit value" => "null",
        other => other,
    }
}

/// The known name within two edits of `word`, if exactly one is closest.
fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (names are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row.first().copied().unwrap_or(0);
        let mut left = i + 1;
        let mut next = Vec::with_capacity(row.len());
        next.push(left);
        for (j, cb) in b.iter().enumerate() {
            let up = row.get(j + 1).copied().unwrap_or(usize::MAX - 1);
            let cost = usize::from(ca != *cb);
            left = (diagonal + cost).min(up + 1).min(left + 1);
            next.push(left);
            diagonal = up;
        }
        row = next;
    }
    row.last().copied().unwrap_or(0)
}
