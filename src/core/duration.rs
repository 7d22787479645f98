//! Durations as operators write them in config and rules files: `90s`, `15m`, `1h`,
//! `7d`, `500ms`, or a bare number of seconds.

use std::time::Duration;

use serde::Deserializer;

/// Parses a duration written as `90s`, `15m`, `1h`, `7d`, `500ms`, or a bare number of
/// seconds.
///
/// # Errors
/// A message naming what was written and how to write it instead.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; write e.g. 90s, 15m, 1h or 7d"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{s}' is too long"))
    };
    match unit.trim() {
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "ms" => Ok(Duration::from_millis(n)),
        other => Err(format!(
            "'{other}' is not a duration unit; use ms, s, m, h or d"
        )),
    }
}

/// `d` as [`parse`] reads it, in the largest unit that writes it exactly: `25m`,
/// `1h`, `90s`, `1500ms`. For messages that tell an operator what to write.
pub fn display(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    match [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(unit, _)| secs != 0 && secs.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", secs / unit),
        None => format!("{secs}s"),
    }
}

/// `d` rounded up to whole seconds (at least 1s) and written as [`display`] writes it:
/// how long to wait, for a message (`retry in 2s`, not `retry in 1.503s`).
pub fn whole_seconds_up(d: Duration) -> String {
    display(Duration::from_secs(secs_up(d)))
}

/// `d` in whole seconds, rounded up, at least 1: a wait a client can count on (an HTTP
/// `Retry-After`, a message's `retry in`).
pub fn secs_up(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Serde adapter (`#[serde(with = "crate::core::duration")]`): a duration from a
/// string (`15m`) or a number of seconds.
///
/// # Errors
/// The deserializer's error, with [`parse`]'s message, or saying what a duration is
/// for a value of another type (`true`, a table).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Written;
    impl serde::de::Visitor<'_> for Written {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"90s\", \"15m\", \"1h\" or \"7d\" (or a whole number of seconds)")
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(n))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            u64::try_from(n)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{n} is negative; a duration is at least 0s")))
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
            parse(s).map_err(E::custom)
        }
    }
    d.deserialize_any(Written)
}

/// Serde adapter for an optional duration
/// (`#[serde(default, deserialize_with = "crate::core::duration::optional")]`): unset
/// is `None`.
///
/// # Errors
/// As [`deserialize`].
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_written_in_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds_up(Duration::from_millis(975)), "1s");
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), "1s");
        assert_eq!(whole_seconds_up(Duration::ZERO), "1s");
        assert_eq!(whole_seconds_up(Duration::from_millis(60_001)), "61s");
        assert_eq!(whole_seconds_up(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("42"), Ok(Duration::from_secs(42)));
        assert!(parse("1w").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }

    #[test]
    fn durations_display_in_the_largest_exact_unit_and_parse_back() {
        for (d, text) in [
            (Duration::from_secs(1500), "25m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(2 * 86_400), "2d"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(display(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }
}
