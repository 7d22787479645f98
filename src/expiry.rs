//! How long a grant lives: the requested TTL cut down by every limit that applies.
//!
//! Expiry = min(requested, rule max, configured ceiling, SigV4's 7 days, remaining
//! life of the signing credentials). A URL signed by temporary credentials stops
//! working when they expire, whatever `X-Amz-Expires` says, so the response must never
//! claim more than the credentials have left.

use std::time::{Duration, SystemTime};

pub use crate::core::limits::SIGV4_MAX;

/// A grant lifetime in whole seconds, between 1 second and 7 days. Built only by
/// [`Ttl::clamp`], so the signer never sees a lifetime SigV4 would reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(u32);

impl Ttl {
    /// Whole seconds, as `X-Amz-Expires` carries them.
    pub fn as_secs(self) -> u32 {
        self.0
    }

    /// As a `Duration`.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }

    /// The lifetime a grant gets: the shortest of `limits` and [`SIGV4_MAX`], in whole
    /// seconds, and at most what the signing credentials have left at `signing_time`.
    ///
    /// # Errors
    /// [`Error::CredentialsExpiring`] when the credentials have less than one second
    /// left: no honest URL can be signed with them.
    pub fn clamp(
        limits: &[Duration],
        signing_time: SystemTime,
        credentials_expire_at: Option<SystemTime>,
    ) -> Result<Ttl, Error> {
        let mut ttl = limits.iter().copied().fold(SIGV4_MAX, Duration::min);
        if let Some(expiry) = credentials_expire_at {
            let left = expiry
                .duration_since(signing_time)
                .unwrap_or(Duration::ZERO);
            ttl = ttl.min(left);
        }
        let secs = ttl.as_secs();
        if secs == 0 {
            return Err(Error::CredentialsExpiring);
        }
        Ok(Ttl(
            u32::try_from(secs).expect("at most 7 days of seconds fits in u32")
        ))
    }
}

/// Why no lifetime could be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the service's signing credentials expire in less than a second")]
    CredentialsExpiring,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn shortest_limit_wins() {
        let ttl = Ttl::clamp(&[secs(600), secs(300), secs(3600)], T0, None).unwrap();
        assert_eq!(ttl.as_secs(), 300);
    }

    #[test]
    fn never_more_than_seven_days() {
        let ttl = Ttl::clamp(&[secs(30 * 24 * 3600)], T0, None).unwrap();
        assert_eq!(ttl.as_duration(), SIGV4_MAX);
    }

    #[test]
    fn temporary_credentials_cap_the_lifetime() {
        let ttl = Ttl::clamp(&[secs(3600)], T0, Some(T0 + secs(120))).unwrap();
        assert_eq!(ttl.as_secs(), 120);
    }

    #[test]
    fn sub_second_parts_are_dropped() {
        let ttl = Ttl::clamp(&[Duration::from_millis(2_900)], T0, None).unwrap();
        assert_eq!(ttl.as_secs(), 2);
    }

    #[test]
    fn expired_or_expiring_credentials_give_no_ttl() {
        assert_eq!(
            Ttl::clamp(&[secs(60)], T0 + secs(10), Some(T0)),
            Err(Error::CredentialsExpiring)
        );
        assert_eq!(
            Ttl::clamp(&[secs(60)], T0, Some(T0 + Duration::from_millis(999))),
            Err(Error::CredentialsExpiring)
        );
    }
}
