//! The service's own storage credentials, the ones that sign presigned URLs.
//!
//! They come from the standard AWS chain (environment, profile, web identity / IRSA,
//! container and instance metadata) through aws-config. A background task keeps a
//! current snapshot and refreshes it well before it expires, so the signing path reads
//! a snapshot and never waits on the network.

use std::time::SystemTime;

use crate::secret::Secret;

/// One snapshot of the credentials that sign grants.
#[derive(Debug, Clone)]
pub struct SigningCredentials {
    /// Access key id; not secret, it appears in every presigned URL.
    pub access_key_id: String,
    /// Secret access key; only the signer's key derivation reads it.
    pub secret_access_key: Secret<String>,
    /// Session token of temporary credentials; it travels in presigned URLs as
    /// `X-Amz-Security-Token`.
    pub session_token: Option<Secret<String>>,
    /// When temporary credentials expire; `None` for long-lived keys.
    pub expires_at: Option<SystemTime>,
}

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

/// Why no signing credentials are available right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("the service's storage credentials are not available yet")]
    NotLoaded,
    #[error("the service's storage credentials have expired and could not be refreshed")]
    Expired,
}

/// Keeps a current snapshot of the service's credentials, refreshed in the
/// background.
#[derive(Debug)]
pub struct CredentialSource {
    /// Read on every grant, replaced by a refresh: no lock and no shared reference
    /// count on the read path, so calls on several cores do not contend for it.
    current: ArcSwapOption<SigningCredentials>,
    /// Expiry of temporary credentials whose provider reports none.
    env_expiration: Option<SystemTime>,
}

/// The credentials in force, held for one grant (a refresh meanwhile does not change
/// them); see [`CredentialSource::current`]. Meant to be held briefly.
pub struct Current(arc_swap::Guard<Option<Arc<SigningCredentials>>>);

impl std::ops::Deref for Current {
    type Target = SigningCredentials;

    fn deref(&self) -> &SigningCredentials {
        self.0
            .as_deref()
            .expect("a Current is only made from a loaded snapshot")
    }
}

/// Refresh again after this long when the credentials do not expire (profile files
/// and env vars can still change under a long-running process).
const STATIC_REFRESH: Duration = Duration::from_secs(15 * 60);
/// Retry delay after a failed fetch.
const RETRY: Duration = Duration::from_secs(5);

impl CredentialSource {
    /// A source holding fixed credentials; for tests and tools.
    pub fn fixed(credentials: SigningCredentials) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwapOption::from_pointee(credentials),
            env_expiration: None,
        })
    }

    /// Fetches credentials from `provider` (waiting at most `timeout`) and keeps
    /// refreshing them in a background task for as long as the source lives. A failed
    /// first fetch is logged and retried in the background; grants fail with
    /// UNAVAILABLE until it succeeds.
    ///
    /// `env_expiration` is `AWS_CREDENTIAL_EXPIRATION`: the expiry of temporary
    /// credentials whose provider reports none (the environment variables).
    pub async fn start(
        provider: SharedCredentialsProvider,
        timeout: Duration,
        env_expiration: Option<SystemTime>,
    ) -> Arc<Self> {
        let source = Arc::new(Self {
            current: ArcSwapOption::empty(),
            env_expiration,
        });
        let first = source.refresh(&provider, timeout).await;
        let weak = Arc::downgrade(&source);
        tokio::spawn(refresh_loop(weak, provider, timeout, first));
        source
    }

    /// The credentials to sign with now.
    ///
    /// # Errors
    /// [`Error::NotLoaded`] before the first successful fetch; [`Error::Expired`] when
    /// the last snapshot has expired and no refresh has succeeded since.
    pub fn current(&self) -> Result<Current, Error> {
        let snapshot = self.current.load();
        match snapshot.as_deref() {
            None => Err(Error::NotLoaded),
            Some(credentials)
                if credentials
                    .expires_at
                    .is_some_and(|at| at <= SystemTime::now()) =>
            {
                Err(Error::Expired)
            }
            Some(_) => Ok(Current(snapshot)),
        }
    }

    /// Fetches once; returns how long to wait before the next refresh.
    async fn refresh(&self, provider: &SharedCredentialsProvider, timeout: Duration) -> Duration {
        match tokio::time::timeout(timeout, provider.provide_credentials()).await {
            Ok(Ok(c)) => {
                let snapshot = snapshot(&c, self.env_expiration);
                let wait = next_refresh(snapshot.expires_at, SystemTime::now());
                crate::metrics::signing_credentials_expire_at(snapshot.expires_at);
                let replaced = self.current.load();
                let newly_without_expiry = snapshot.session_token.is_some()
                    && snapshot.expires_at.is_none()
                    && replaced
                        .as_deref()
                        .is_none_or(|c| c.session_token.is_none() || c.expires_at.is_some());
                if newly_without_expiry {
                    // Said once, not at every refresh: the cut is documented, but a
                    // service whose grants all live 15 minutes is a surprise to debug.
                    tracing::warn!(
                        "temporary storage credentials without an expiry (a session token \
                         and no AWS_CREDENTIAL_EXPIRATION): every grant is cut to \
                         grants.max_ttl_without_expiry (15m unless set); set \
                         AWS_CREDENTIAL_EXPIRATION to their expiry, or use a provider that \
                         reports one"
                    );
                }
                drop(replaced);
                tracing::info!(
                    access_key_id = %snapshot.access_key_id,
                    temporary = snapshot.session_token.is_some(),
                    refresh_in_secs = wait.as_secs(),
                    "storage credentials loaded"
                );
                self.current.store(Some(Arc::new(snapshot)));
                wait
            }
            Ok(Err(e)) => {
                let held = self.current.load();
                match held.as_deref() {
                    // A refresh that failed: the chain was found before, so this is its
                    // source failing (an endpoint down), not a missing setting.
                    Some(c) => {
                        let left = c
                            .expires_at
                            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
                        if left == Some(Duration::ZERO) {
                            tracing::warn!(
                                error = %crate::core::text::Chain(&e),
                                retry_in_secs = RETRY.as_secs(),
                                "refreshing the storage credentials failed, and the current \
                                 ones have expired: grants are refused (UNAVAILABLE) until a \
                                 refresh succeeds"
                            );
                        } else {
                            tracing::warn!(
                                error = %crate::core::text::Chain(&e),
                                current_expire_in_secs = left.map(|l| l.as_secs()),
                                retry_in_secs = RETRY.as_secs(),
                                "refreshing the storage credentials failed; the current ones \
                                 sign until they expire"
                            );
                        }
                    }
                    None => tracing::warn!(
                        error = %crate::core::text::Chain(&e),
                        "cannot load storage credentials from the AWS chain: set \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE), \
                         web identity (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN), \
                         or run where container or instance metadata serves credentials"
                    ),
                }
                RETRY
            }
            Err(_) => {
                tracing::warn!(
                    timeout_secs = timeout.as_secs(),
                    "loading storage credentials timed out"
                );
                RETRY
            }
        }
    }
}

/// A snapshot of `c`. Temporary credentials (a session token) whose provider reports
/// no expiry take `env_expiration`; without it the grant pipeline caps TTLs instead.
fn snapshot(
    c: &aws_credential_types::Credentials,
    env_expiration: Option<SystemTime>,
) -> SigningCredentials {
    let expires_at = c.expiry().or_else(|| c.session_token().and(env_expiration));
    SigningCredentials {
        access_key_id: c.access_key_id().to_owned(),
        secret_access_key: Secret::new(c.secret_access_key().to_owned()),
        session_token: c.session_token().map(|t| Secret::new(t.to_owned())),
        expires_at,
    }
}

async fn refresh_loop(
    source: Weak<CredentialSource>,
    provider: SharedCredentialsProvider,
    timeout: Duration,
    mut wait: Duration,
) {
    loop {
        tokio::time::sleep(wait).await;
        let Some(source) = source.upgrade() else {
            return;
        };
        wait = source.refresh(&provider, timeout).await;
    }
}

/// When to refresh credentials expiring at `expires_at`: halfway through their
/// remaining life, so a grant signed at any moment can live at least half of it.
fn next_refresh(expires_at: Option<SystemTime>, now: SystemTime) -> Duration {
    match expires_at {
        None => STATIC_REFRESH,
        Some(at) => {
            let left = at.duration_since(now).unwrap_or(Duration::ZERO);
            (left / 2).max(Duration::from_secs(10))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[test]
    fn temporary_credentials_refresh_halfway() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            next_refresh(Some(now + Duration::from_secs(3600)), now),
            Duration::from_secs(1800)
        );
        assert_eq!(next_refresh(Some(now), now), Duration::from_secs(10));
        assert_eq!(next_refresh(None, now), STATIC_REFRESH);
    }

    #[test]
    fn session_token_without_expiry_takes_the_environments_expiration() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let later = at + Duration::from_secs(60);
        let temporary = Credentials::new("AKID", "s", Some("t".into()), None, "env");
        assert_eq!(snapshot(&temporary, Some(at)).expires_at, Some(at));
        assert_eq!(snapshot(&temporary, None).expires_at, None);
        // The provider's own expiry wins; long-lived keys have none whatever the
        // environment says.
        let dated = Credentials::new("AKID", "s", Some("t".into()), Some(later), "sts");
        assert_eq!(snapshot(&dated, Some(at)).expires_at, Some(later));
        let static_keys = Credentials::new("AKID", "s", None, None, "env");
        assert_eq!(snapshot(&static_keys, Some(at)).expires_at, None);
    }

    #[test]
    fn expired_snapshot_is_not_handed_out() {
        let source = CredentialSource::fixed(SigningCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: Secret::new("s".into()),
            session_token: Some(Secret::new("t".into())),
            expires_at: Some(SystemTime::now() - Duration::from_secs(1)),
        });
        assert!(matches!(source.current(), Err(Error::Expired)));
    }
}
