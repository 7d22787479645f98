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

/// A parse error without the strings it quotes: serde writes the value it refused
/// (`invalid type: string "…"`), and the value may be a token (a dev token in the
/// file, or `STORAGE_GRANTS_IDENTITY__DEV_TOKENS`) that must not reach the start-up log.
pub fn without_values(message: &str) -> String {
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
