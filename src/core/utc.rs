//! Calendar time in UTC from Unix time, for the fixed formats this service writes
//! (SigV4's dates, the audit log's timestamps), with the civil-from-days algorithm: no
//! date library, and nothing allocated.

use std::time::{SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z, the last second a four-digit year can write.
pub const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// One second of the proleptic Gregorian calendar, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcSecond {
    /// Four digits at most.
    pub year: u64,
    /// 1 to 12.
    pub month: u64,
    /// 1 to 31.
    pub day: u64,
    /// 0 to 23.
    pub hour: u64,
    /// 0 to 59.
    pub minute: u64,
    /// 0 to 59.
    pub second: u64,
}

impl UtcSecond {
    /// The second `secs` after 1970-01-01T00:00:00Z, clamped to year 9999 (past it, a
    /// four-digit year cannot be written).
    pub fn from_unix_secs(secs: u64) -> UtcSecond {
        let secs = secs.min(MAX_UNIX_SECS);
        let (year, month, day) = civil_from_days(secs / 86_400);
        let rem = secs % 86_400;
        UtcSecond {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// `YYYYMMDDHHMMSS`, the digits every format here is made of.
    pub fn digits(&self) -> [u8; 14] {
        let mut out = [0u8; 14];
        write_digits(&mut out[0..4], self.year);
        write_digits(&mut out[4..6], self.month);
        write_digits(&mut out[6..8], self.day);
        write_digits(&mut out[8..10], self.hour);
        write_digits(&mut out[10..12], self.minute);
        write_digits(&mut out[12..14], self.second);
        out
    }
}

/// `YYYY-MM-DD'T'HH:MM:SS`, the start of an RFC 3339 time, from the digits of
/// [`UtcSecond::digits`].
pub fn rfc3339_seconds(d: &[u8; 14]) -> [u8; 19] {
    let mut out = *b"0000-00-00T00:00:00";
    out[0..4].copy_from_slice(&d[0..4]);
    out[5..7].copy_from_slice(&d[4..6]);
    out[8..10].copy_from_slice(&d[6..8]);
    out[11..13].copy_from_slice(&d[8..10]);
    out[14..16].copy_from_slice(&d[10..12]);
    out[17..19].copy_from_slice(&d[12..14]);
    out
}

/// Seconds and microseconds since the epoch; 0 for a time before it.
fn unix_micros(time: SystemTime) -> (u64, u32) {
    time.duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_micros()))
}

/// `time` as RFC 3339 in UTC with microseconds, `YYYY-MM-DD'T'HH:MM:SS.ffffff'Z'`: the
/// log's timestamps, as the JSON log writes them. Times before 1970 write the epoch.
pub fn rfc3339_micros(time: SystemTime) -> [u8; 27] {
    let (secs, micros) = unix_micros(time);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    out[..19].copy_from_slice(&rfc3339_seconds(&UtcSecond::from_unix_secs(secs).digits()));
    write_digits(&mut out[20..26], u64::from(micros));
    out
}

/// Writes `value` as exactly `out.len()` decimal digits, zero-padded.
fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(value % 10).expect("a decimal digit fits in u8");
        value /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of the proleptic Gregorian
/// calendar for days since 1970-01-01. Restricted to non-negative days, which is all
/// Unix time after the epoch needs, so it needs no signed arithmetic.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rfc3339(micros: u64) -> String {
        let t = UNIX_EPOCH + Duration::from_micros(micros);
        String::from_utf8(rfc3339_micros(t).to_vec()).unwrap()
    }

    #[test]
    fn rfc3339_of_known_instants() {
        for (micros, expected) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (1, "1970-01-01T00:00:00.000001Z"),
            (68_191_628_999_999, "1972-02-29T06:07:08.999999Z"),
            (1_709_251_199_500_000, "2024-02-29T23:59:59.500000Z"),
            (4_107_542_400_000_042, "2100-03-01T00:00:00.000042Z"),
            (
                MAX_UNIX_SECS * 1_000_000 + 123_456,
                "9999-12-31T23:59:59.123456Z",
            ),
        ] {
            assert_eq!(rfc3339(micros), expected, "{micros}");
        }
    }

    #[test]
    fn rfc3339_drops_nanoseconds_and_clamps_what_it_cannot_write() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_709_251_199_000_000_999);
        assert_eq!(&rfc3339_micros(t), b"2024-02-29T23:59:59.000000Z");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(&rfc3339_micros(before), b"1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(MAX_UNIX_SECS + 86_400);
        assert_eq!(&rfc3339_micros(after)[..19], b"9999-12-31T23:59:59");
    }

    #[test]
    fn seconds_split_into_the_time_of_day() {
        let t = UtcSecond::from_unix_secs(1_369_353_600 + 13 * 3600 + 14 * 60 + 15);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2013, 5, 24, 13, 14, 15)
        );
    }
}
