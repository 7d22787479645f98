//! Limits that AWS sets, in one place, so that config validation, the rules loader,
//! the expiry clamp and the STS broker agree on them.

use std::time::Duration;

/// SigV4's hard limit on a presigned URL's lifetime.
pub const SIGV4_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest session STS issues.
pub const STS_MIN_DURATION: Duration = Duration::from_secs(900);

/// The longest session STS issues to role-chained credentials (an assumed role
/// assuming another role).
pub const STS_ROLE_CHAINING_MAX: Duration = Duration::from_secs(3600);

/// The longest `MaxSessionDuration` IAM lets a role have.
pub const IAM_ROLE_MAX_DURATION: Duration = Duration::from_secs(12 * 3600);
