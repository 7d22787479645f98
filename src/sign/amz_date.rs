//! SigV4's two time formats, `X-Amz-Date` (`YYYYMMDD'T'HHMMSS'Z'`, UTC) and the scope
//! date (`YYYYMMDD`), computed from Unix seconds ([`crate::core::utc`]), so the signer
//! needs no date library and formats without allocating.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::utc::{self, UtcSecond};

/// A signing time, truncated to whole seconds, in both SigV4 formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AmzDate {
    /// `YYYYMMDD'T'HHMMSS'Z'`: the `X-Amz-Date` value.
    date_time: [u8; 16],
}

impl AmzDate {
    /// Formats `time`, dropping fractions of a second (as SigV4 and the SDK do).
    ///
    /// Times before 1970 or after year 9999 cannot be written in these formats; they
    /// are clamped to the nearest writable second rather than failing, because a URL
    /// signed with a clock that wrong fails verification anyway, and signing stays
    /// infallible for typed input.
    pub(crate) fn new(time: SystemTime) -> AmzDate {
        let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let d = UtcSecond::from_unix_secs(secs).digits();
        let mut date_time = *b"00000000T000000Z";
        date_time[0..8].copy_from_slice(&d[0..8]);
        date_time[9..15].copy_from_slice(&d[8..14]);
        AmzDate { date_time }
    }

    /// `YYYYMMDD'T'HHMMSS'Z'`.
    pub(crate) fn date_time(&self) -> &str {
        std::str::from_utf8(&self.date_time).expect("built from ASCII digits")
    }

    /// `YYYYMMDD`: the date of the credential scope and of the signing key.
    pub(crate) fn date(&self) -> &str {
        &self.date_time()[..8]
    }

    /// ISO 8601 in UTC with milliseconds, `YYYY-MM-DD'T'HH:MM:SS.000Z`: the form of a
    /// POST policy's `expiration` in the AWS docs. The milliseconds are always zero,
    /// since the time was truncated to whole seconds.
    pub(crate) fn iso8601_millis(&self) -> [u8; 24] {
        let mut digits = [0u8; 14];
        digits[..8].copy_from_slice(&self.date_time[0..8]);
        digits[8..].copy_from_slice(&self.date_time[9..15]);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        out[..19].copy_from_slice(&utc::rfc3339_seconds(&digits));
        out
    }

    /// The scope date as bytes, the signing-key cache's key.
    pub(crate) fn date_bytes(&self) -> [u8; 8] {
        let mut date = [0u8; 8];
        date.copy_from_slice(&self.date_time[..8]);
        date
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::utc::MAX_UNIX_SECS;
    use std::time::Duration;

    fn at(secs: u64) -> String {
        AmzDate::new(UNIX_EPOCH + Duration::from_secs(secs))
            .date_time()
            .to_owned()
    }

    #[test]
    fn formats_known_instants() {
        for (secs, expected) in [
            (0, "19700101T000000Z"),
            (68_191_628, "19720229T060708Z"), // first leap day after the epoch
            (946_684_799, "19991231T235959Z"),
            (951_825_600, "20000229T120000Z"), // 2000 is a leap year (divisible by 400)
            (1_369_353_600, "20130524T000000Z"), // the AWS docs' example
            (1_709_251_199, "20240229T235959Z"),
            (1_709_251_200, "20240301T000000Z"),
            (2_147_483_648, "20380119T031408Z"), // one past i32::MAX
            (4_107_542_399, "21000228T235959Z"), // 2100 is not a leap year...
            (4_107_542_400, "21000301T000000Z"), // ...so March follows February 28
            (253_402_300_799, "99991231T235959Z"),
        ] {
            assert_eq!(at(secs), expected, "{secs}");
        }
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk 1970..2101 day by day: dates strictly increase, days run 1..=last day
        // of the month, and February has 29 days exactly in leap years.
        let mut previous = at(0);
        for day in 1..(131 * 366) {
            let current = at(day * 86_400);
            assert!(current > previous, "{previous} then {current}");
            let year: u32 = current[0..4].parse().unwrap();
            let month: u32 = current[4..6].parse().unwrap();
            let dom: u32 = current[6..8].parse().unwrap();
            let leap =
                year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
            let last = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            assert!(
                (1..=12).contains(&month) && (1..=last).contains(&dom),
                "{current}"
            );
            previous = current;
        }
    }

    #[test]
    fn fractions_of_a_second_are_dropped() {
        let t = UNIX_EPOCH + Duration::from_millis(1_369_353_600_999);
        assert_eq!(AmzDate::new(t).date_time(), "20130524T000000Z");
    }

    #[test]
    fn scope_date_is_the_first_eight_characters() {
        let d = AmzDate::new(UNIX_EPOCH + Duration::from_secs(1_709_251_199));
        assert_eq!(d.date(), "20240229");
        assert_eq!(&d.date_bytes(), b"20240229");
    }

    #[test]
    fn iso8601_has_separators_and_zero_milliseconds() {
        for (secs, expected) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_451_476_800, "2015-12-30T12:00:00.000Z"), // the AWS POST example's expiration
            (1_709_251_199, "2024-02-29T23:59:59.000Z"),
            (MAX_UNIX_SECS, "9999-12-31T23:59:59.000Z"),
        ] {
            let d = AmzDate::new(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(std::str::from_utf8(&d.iso8601_millis()).unwrap(), expected);
        }
        let fraction = UNIX_EPOCH + Duration::from_millis(1_451_476_800_999);
        assert_eq!(
            &AmzDate::new(fraction).iso8601_millis(),
            b"2015-12-30T12:00:00.000Z"
        );
    }

    #[test]
    fn unwritable_times_are_clamped() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(AmzDate::new(before).date_time(), "19700101T000000Z");
        assert_eq!(at(MAX_UNIX_SECS + 1), "99991231T235959Z");
    }
}
