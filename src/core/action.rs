//! [`Action`]: what a rule can allow and what a grant gives.

use std::fmt;

use serde::Deserialize;

/// What a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Presigned GET (GrantRead).
    Read,
    /// Presigned PUT or POST (GrantWrite).
    Write,
    /// Temporary credentials that read (AssumeScoped).
    AssumeRead,
    /// Temporary credentials that write (AssumeScoped).
    AssumeWrite,
    /// Listing keys under the prefix (AssumeScoped with `list`).
    List,
}

impl Action {
    /// Every action, in a fixed order (metrics index their counters by it).
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Write,
        Action::AssumeRead,
        Action::AssumeWrite,
        Action::List,
    ];

    /// The name rules files and audit events use.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::AssumeRead => "assume-read",
            Action::AssumeWrite => "assume-write",
            Action::List => "list",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
