//! Keeps the current rule set, and replaces it without a restart when the rules file
//! changes on disk or the process gets SIGHUP.
//!
//! A reload is all or nothing: the new file is parsed and validated in full first; a
//! bad one keeps the rules in force, logs why (file and line) and counts the failure.
//!
//! A missing or unreadable file keeps the last good rules too, and is retried (and
//! logged at error level, and counted) on every poll until it can be read: a deleted
//! ConfigMap key or a failed mount must not revoke every grant in the fleet, nor
//! fail quietly. An empty file is a valid rule set with no rules: the way to revoke
//! everything on purpose. `storage_grants_rules_stale` is 1 while the rules in force
//! are not the file's, for an alert to watch.
//! Requests read a snapshot (`arc_swap`: no lock, no shared reference count, so calls
//! on several cores do not contend for it), so a reload never changes the rules under
//! a request in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::{self as rules, Rules};

/// The rules in force, and how to reload them.
#[derive(Debug)]
pub struct RulesHandle {
    path: PathBuf,
    current: ArcSwap<Rules>,
    /// The file's version when the rules in force were read, so that a change made
    /// at any time after that, even before the watcher starts, is noticed.
    loaded_version: Version,
}

/// What identifies a version of the file on disk, to notice changes by polling.
pub type Version = Option<(SystemTime, u64)>;

/// The version of the file at `path` now (modification time and length).
pub async fn file_version(path: &Path) -> Version {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl RulesHandle {
    /// Starts with `rules`, read from `path` when the file was at `version` (taken
    /// with [`file_version`] before reading it).
    pub fn new(rules: Rules, path: PathBuf, version: Version) -> Arc<Self> {
        report_collisions(&rules);
        Arc::new(Self {
            path,
            loaded_version: version,
            current: ArcSwap::from_pointee(rules),
        })
    }

    /// The rules in force now, for one request: a reload meanwhile does not change
    /// them. Meant to be held briefly (not across a wait on the network).
    pub fn current(&self) -> arc_swap::Guard<Arc<Rules>> {
        self.current.load()
    }

    /// Loads the file again and puts it in force if it is valid.
    ///
    /// # Errors
    /// Why the file was refused; the previous rules stay in force.
    pub async fn reload(&self) -> Result<(), rules::Error> {
        match Rules::load(&self.path).await {
            Ok(rules) => {
                report_collisions(&rules);
                if let Some(warning) = rules.empty_warning() {
                    // On purpose, a revocation; by accident (a file written in place
                    // and read half-way, a bad render), an outage: said loudly.
                    tracing::warn!(
                        file = %self.path.display(),
                        "{warning}; if that was not meant, write the file whole \
                         elsewhere and rename it into place"
                    );
                }
                let count = rules.len();
                self.current.store(Arc::new(rules));
                crate::metrics::rules_reload(true);
                tracing::info!(file = %self.path.display(), rules = count, "rules reloaded");
                Ok(())
            }
            Err(e) => {
                crate::metrics::rules_reload(false);
                tracing::error!(
                    // One line, for line-based log shippers: TOML's message quotes the
                    // file's line with a caret under it.
                    error = %crate::core::text::escape_breaks(&e.to_string()),
                    "rules reload refused; the previous rules stay in force"
                );
                Err(e)
            }
        }
    }

    /// Polls the file every `interval` and reloads when it changed; reloads on each
    /// signal `hangup` delivers ([`hangup_signal`]). Runs until the task is dropped.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut hangup: Hangup) {
        let mut seen = self.loaded_version;
        // Whether the last attempt could not read the file: then every poll retries,
        // whether or not the file seems to have changed.
        let mut unreadable = false;
        // The first poll is one interval from now: anything changed since the load is
        // caught by comparing with the loaded version then.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = file_version(&self.path).await;
                    if now != seen || now.is_none() || unreadable {
                        seen = now;
                        unreadable = matches!(self.reload().await, Err(rules::Error::Read { .. }));
                    }
                }
                Some(()) = next(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading rules");
                    seen = file_version(&self.path).await;
                    unreadable = matches!(self.reload().await, Err(rules::Error::Read { .. }));
                }
            }
        }
    }
}

/// Logs every template that can render another rule's fixed prefix: worth an
/// operator's look each time the rules are put in force.
fn report_collisions(rules: &Rules) {
    for collision in rules.collisions() {
        tracing::warn!(%collision, "rule prefixes may collide");
    }
}

/// The SIGHUP stream (absent where there are no Unix signals).
#[cfg(unix)]
pub type Hangup = Option<tokio::signal::unix::Signal>;
/// The SIGHUP stream (absent where there are no Unix signals).
#[cfg(not(unix))]
pub type Hangup = Option<()>;

/// Takes over SIGHUP. Call it before serving, not inside the watcher task: until it
/// runs, SIGHUP's default action would terminate the process.
#[cfg(unix)]
pub fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// Takes over SIGHUP (nothing to take over here).
#[cfg(not(unix))]
pub fn hangup_signal() -> Hangup {
    None
}

/// The next SIGHUP; never completes where there is no signal stream.
async fn next(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}
