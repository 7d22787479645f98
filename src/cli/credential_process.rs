//! `storage-grants credential-process`: prints the JSON the AWS CLI and SDKs read from
//! a `credential_process` in `~/.aws/config`:
//!
//! ```ini
//! [profile tenant-a]
//! credential_process = storage-grants credential-process --endpoint https://sg:50051 --token-file /var/run/secrets/tokens/sg --bucket data --prefix tenants/a/ --access read-write --list
//! ```

use serde::Serialize;

use super::{Error, Upstream};
use crate::proto;

/// What to ask for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Bucket.
    pub bucket: String,
    /// Prefix, ending in `/`.
    pub prefix: String,
    /// Access.
    pub access: proto::Access,
    /// Also list the prefix.
    pub list: bool,
}

/// `credential_process` output, version 1.
// No `Debug`: it carries a credential (a presigned URL or keys) that must never
// be printed.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    version: u8,
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    account_id: String,
}

/// The JSON to print.
///
/// # Errors
/// As [`Upstream::assume`].
pub async fn run(upstream: &Upstream, ask: &Ask) -> Result<String, Error> {
    let answer = assume_retrying(upstream, ask).await?;
    let credentials = answer
        .credentials
        .ok_or_else(|| Error::Usage("the service answered without credentials".into()))?;
    let expiration = credentials
        .expires_at
        .as_ref()
        .and_then(crate::gateway::credentials_expiration)
        .ok_or_else(|| Error::Usage("the service answered credentials without an expiry".into()))?;
    let output = Output {
        version: 1,
        access_key_id: credentials.access_key_id,
        secret_access_key: credentials.secret_access_key,
        session_token: credentials.session_token,
        expiration,
        account_id: answer.account_id,
    };
    Ok(serde_json::to_string(&output).expect("strings serialise"))
}

/// Longest the service's retry hints are followed, in all: the AWS CLI and SDKs wait
/// for a `credential_process` without a bound of their own.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(20);

/// The credentials, asked again while the service answers UNAVAILABLE with a retry
/// hint (STS slower than the call's deadline: the credentials are still being made,
/// and the retry gets them from its cache), within [`RETRY_FOR`]: the SDK that runs
/// this process would fail the command on the first answer.
async fn assume_retrying(
    upstream: &Upstream,
    ask: &Ask,
) -> Result<proto::AssumeScopedResponse, Error> {
    use tonic_types::StatusExt;
    let until = tokio::time::Instant::now() + RETRY_FOR;
    loop {
        let error = match upstream
            .assume(&ask.bucket, &ask.prefix, ask.access, ask.list)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(error) => error,
        };
        let retry_in = match &error {
            Error::Refused(status) if status.code() == tonic::Code::Unavailable => status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
            _ => None,
        };
        match retry_in {
            Some(delay) if tokio::time::Instant::now() + delay < until => {
                tokio::time::sleep(delay).await;
            }
            _ => return Err(error),
        }
    }
}
