//! [`Caller`]: who is asking, as every identity source reports it and as rules,
//! the grant pipeline and the audit log see it. The sources themselves live in
//! `identity`; this type depends on nothing but the standard library.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Names of the attributes identity sources set on a [`Caller`].
pub mod attr {
    /// SPIFFE trust domain (mTLS, XFCC).
    pub const TRUST_DOMAIN: &str = "trust_domain";
    /// Kubernetes namespace (SPIFFE `/ns/NS/sa/NAME`, or a service-account JWT).
    pub const NAMESPACE: &str = "namespace";
    /// Kubernetes service account name.
    pub const SERVICE_ACCOUNT: &str = "service_account";
    /// JWT `iss`.
    pub const ISSUER: &str = "issuer";
    /// JWT `sub`.
    pub const SUBJECT: &str = "subject";
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    id: String,
    source: Source,
    /// Shared, not copied, by the caller's clones: a verified JWT's caller is cloned
    /// out of the verifier's memory on every call. `None` when there are none (a
    /// development token's caller), so such a clone touches no shared count.
    attributes: Option<Arc<BTreeMap<String, String>>>,
}

/// The attributes of a caller that has none.
static NO_ATTRIBUTES: BTreeMap<String, String> = BTreeMap::new();

/// Which identity source vouched for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A static development token.
    DevToken,
    /// A client certificate verified by this service's TLS.
    Mtls,
    /// A bearer JWT verified against the issuer's keys.
    Jwt,
    /// A client certificate forwarded by a trusted mesh proxy (XFCC).
    ForwardedCert,
}

impl Source {
    /// The name the audit log writes: the variant's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::DevToken => "DevToken",
            Source::Mtls => "Mtls",
            Source::Jwt => "Jwt",
            Source::ForwardedCert => "ForwardedCert",
        }
    }
}

impl Caller {
    /// A caller with `id`, vouched for by `source`.
    pub fn new(id: impl Into<String>, source: Source) -> Self {
        Self {
            id: id.into(),
            source,
            attributes: None,
        }
    }

    /// This caller with attribute `name` set to `value`.
    pub fn with_attribute(mut self, name: &str, value: impl Into<String>) -> Self {
        Arc::make_mut(self.attributes.get_or_insert_default())
            .insert(name.to_owned(), value.into());
        self
    }

    /// The caller id that rules match against.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which source identified the caller.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Attributes from the identity (see [`attr`]).
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        self.attributes.as_deref().unwrap_or(&NO_ATTRIBUTES)
    }

    /// One attribute, if set.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes().get(name).map(String::as_str)
    }
}

/// Whether `id` reads as a SPIFFE ID, a name only a certificate may carry (the URI
/// scheme is case-insensitive).
pub fn has_spiffe_form(id: &str) -> bool {
    starts_with_ignoring_case(id, "spiffe://")
}

/// What every development token's caller id starts with: the ids no other source may
/// carry, so that a token from another source cannot name a development caller and
/// borrow its rules (as a certificate's `spiffe://` ids are kept to certificates).
pub const DEV_PREFIX: &str = "dev:";

/// Whether `id` reads as a development token's caller id (`dev:…`, any case).
pub fn has_dev_form(id: &str) -> bool {
    starts_with_ignoring_case(id, DEV_PREFIX)
}

fn starts_with_ignoring_case(id: &str, prefix: &str) -> bool {
    id.trim_start()
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_written_by_its_variant_name() {
        // The audit log's `identity_source` values, which collectors match on.
        for source in [
            Source::DevToken,
            Source::Mtls,
            Source::Jwt,
            Source::ForwardedCert,
        ] {
            assert_eq!(source.as_str(), format!("{source:?}"));
        }
    }
}
