//! TOML parse errors told without the text they quote: the toml crate's message shows
//! the offending line, and serde's quote the value or name they refused, any of which
//! may be a secret pasted into a config or rules file (or a file that is not TOML at
//! all, such as `/proc/self/environ`). These name the line, the column and the key,
//! and leave the rest out.

/// Where in the file a parse error is: TOML's own error shows the line itself, and
/// that line may hold a secret (a dev token, an upload token key), so the error names
/// the line, the column and the key written on it (when it reads as one), never the
/// line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    line: usize,
    column: usize,
    key: Option<String>,
}

impl Location {
    /// Where `span` (TOML's error span) starts in `text`.
    pub fn of(text: &str, span: Option<std::ops::Range<usize>>) -> Location {
        let start = span.map_or(0, |s| s.start).min(text.len());
        let start = (0..=start)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_text = text[line_start..].lines().next().unwrap_or("");
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            key: key_of(line_text),
        }
    }
}

/// The key a TOML line sets, or the table it opens: `token = "…"` gives `token`,
/// `[grants]` gives `[grants]`. Only the characters keys are written with, so nothing
/// of a value comes through.
pub fn key_of(line: &str) -> Option<String> {
    let line = line.trim();
    let key = if line.starts_with('[') {
        line.rfind(']').map(|end| &line[..=end])
    } else {
        line.split_once('=').map(|(key, _)| key.trim())
    }?;
    let bare = key.trim_matches(['[', ']', ' ']);
    reads_as_key(bare).then(|| key.to_owned())
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)?;
        match &self.key {
            Some(key) => write!(f, " (`{key}`)"),
            None => Ok(()),
        }
    }
}

/// A parse error without the values it quotes: serde writes the value it refused
/// (`invalid type: string "…"`, `integer `…``), and the value may be a token (a dev
/// token in the file, or `STORAGE_GRANTS_IDENTITY__DEV_TOKENS`) that must not reach the
/// start-up log; and with the type it expected in words (serde names Rust's: `u64`).
pub fn without_values(message: &str) -> String {
    let message = plain_types(&without_numbers(message));
    without_strings(&message)
}

/// serde's names of Rust's number types, as a config's reader would say them.
fn plain_types(message: &str) -> String {
    const NUMBERS: [(&str, &str); 10] = [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected isize", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
    ];
    let mut out = message.to_owned();
    for (rust, words) in NUMBERS {
        // Whole words only: `expected u64` must not match inside `expected u640`.
        let mut from = 0;
        while let Some(at) = out[from..].find(rust).map(|i| i + from) {
            let end = at + rust.len();
            if out[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                from = end;
                continue;
            }
            out.replace_range(at..end, words);
            from = at + words.len();
        }
    }
    out
}

/// serde's quoted numbers (`integer `123``, `floating point `1.5``) left out: a token
/// may be all digits.
fn without_numbers(message: &str) -> String {
    let mut out = message.to_owned();
    for (quoted, shown) in [
        ("integer `", "a whole number (not shown)"),
        ("floating point `", "a decimal number (not shown)"),
    ] {
        while let Some(at) = out.find(quoted) {
            let value = at + quoted.len();
            let mut end = out[value..].find('`').map_or(out.len(), |i| value + i + 1);
            // serde says how it read a number too large for its type: `… as i128`.
            if let Some(width) = out[end..].strip_prefix(" as ") {
                end += 4 + width
                    .find(|c: char| !c.is_ascii_alphanumeric())
                    .unwrap_or(width.len());
            }
            out.replace_range(at..end, shown);
        }
    }
    // serde's words for TOML tables and arrays (a datetime reads as a table).
    out.replace("invalid type: map,", "invalid type: a table or a date,")
        .replace("invalid type: sequence,", "invalid type: a list,")
}

/// serde's quoted strings left out.
fn without_strings(message: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(QUOTED) {
        out.push_str(&rest[..at]);
        out.push_str("a string (not shown)");
        // The value as serde writes it (Rust's `Debug`): up to the first unescaped quote.
        let value = &rest[at + QUOTED.len()..];
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            })
            .map_or(value.len(), |(i, _)| i + 1);
        rest = &value[end..];
    }
    out.push_str(rest);
    without_odd_names(&out)
}

/// Whether `name` reads as one of this file's keys (lowercase words joined by `_` or
/// `.`), rather than something pasted in a key's place: a token written where a key
/// goes comes back in serde's "unknown field `…`".
pub fn reads_as_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.')
}

/// `message` with the name serde quotes after `unknown field`, `unknown variant`,
/// `duplicate field` or `duplicate key` left out unless it reads as a key. The name
/// runs to serde's own continuation (`, expected …`, `, there are no …`) or the last
/// backquote, so a backquote inside a pasted token cannot end it early.
pub fn without_odd_names(message: &str) -> String {
    const QUOTING: [&str; 4] = [
        "unknown field `",
        "unknown variant `",
        "duplicate field `",
        "duplicate key `",
    ];
    let Some((start, prefix)) = QUOTING
        .iter()
        .filter_map(|p| message.find(p).map(|at| (at, *p)))
        .min_by_key(|&(at, _)| at)
    else {
        return message.to_owned();
    };
    let name_at = start + prefix.len();
    let rest = &message[name_at..];
    let end = ["`, expected", "`, there are no"]
        .iter()
        .filter_map(|t| rest.rfind(t))
        .max()
        .or_else(|| rest.rfind('`'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    let shown = if reads_as_key(name) {
        name
    } else {
        "(not shown)"
    };
    format!("{}{shown}{}", &message[..name_at], &rest[end..])
}
