//! [`RoleArn`]: the IAM role AssumeScoped narrows, validated once when the settings
//! load, so that the STS broker never sees a string it would have to check again.

use std::fmt;
use std::str::FromStr;

use crate::policy::Partition;

/// Why a role ARN was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not of the form `arn:PARTITION:iam::ACCOUNT:role/NAME`.
    #[error(
        "is not a role ARN (arn:aws:iam::123456789012:role/NAME, with a 12-digit account \
         and a name of letters, digits and +=,.@_-/)"
    )]
    Malformed,
    /// The partition is not one this service knows.
    #[error("names an unknown partition; use aws, aws-cn or aws-us-gov")]
    UnknownPartition,
}

/// `arn:{partition}:iam::{account}:role/{path/}{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    text: String,
    partition: Partition,
}

impl RoleArn {
    /// The ARN as STS takes it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The partition the role lives in.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The 12-digit account the role belongs to.
    pub fn account(&self) -> &str {
        // Checked when parsed: `arn:P:iam::ACCOUNT:role/NAME`.
        self.text.split(':').nth(4).unwrap_or_default()
    }
}

impl FromStr for RoleArn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let rest = s.strip_prefix("arn:").ok_or(Error::Malformed)?;
        let (partition, rest) = rest.split_once(':').ok_or(Error::Malformed)?;
        let partition: Partition = partition.parse().map_err(|_| Error::UnknownPartition)?;
        let rest = rest.strip_prefix("iam::").ok_or(Error::Malformed)?;
        let (account, name) = rest.split_once(":role/").ok_or(Error::Malformed)?;
        let valid = account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
        if !valid {
            return Err(Error::Malformed);
        }
        Ok(RoleArn {
            text: s.to_owned(),
            partition,
        })
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_of_each_partition_parses() {
        let arn: RoleArn = "arn:aws-cn:iam::123456789012:role/path/r+=,.@_-"
            .parse()
            .unwrap();
        assert_eq!(arn.partition(), Partition::AwsCn);
        assert_eq!(arn.account(), "123456789012");
        assert_eq!(
            arn.to_string(),
            "arn:aws-cn:iam::123456789012:role/path/r+=,.@_-"
        );
    }

    #[test]
    fn malformed_role_arns_are_refused() {
        for bad in [
            "",
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:iam::123456789012:user/r",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a*b",
            "arn:aws:s3:::bucket",
        ] {
            assert_eq!(bad.parse::<RoleArn>(), Err(Error::Malformed), "{bad}");
        }
        assert_eq!(
            "arn:moon:iam::123456789012:role/r".parse::<RoleArn>(),
            Err(Error::UnknownPartition)
        );
    }
}
