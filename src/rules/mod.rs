//! The rules file: which caller may be granted what.
//!
//! A rule names callers (exact ids or patterns where `*` stands for any run of
//! characters other than `/`), a bucket, a prefix, the actions it allows and the
//! longest TTL it grants. No rule, no grant.
//!
//! A prefix may be a template over the caller's identity attributes, e.g.
//! `tenants/{namespace}/`: each attribute value must be a single, plain path segment
//! (no `/`, not `.` or `..`, no control or policy metacharacters, not empty), so a
//! crafted namespace or claim can never widen a grant; a caller without the attribute,
//! or with a value that fails these checks, simply does not match the rule.
//!
//! When several rules allow a request, the most specific one applies: the one with
//! the longest prefix, and of equally long ones the first in the file. Its `max_ttl`
//! bounds the grant, so a narrow rule can give a sub-folder a shorter (or longer) TTL
//! than the folder around it.
//!
//! The file is validated as a whole when loaded: a malformed rule stops start-up with
//! the file, the line and what to change.
//!
//! Decisions, and the attack each one answers:
//! - **Caller patterns match in linear time.** A caller picks its own id (a JWT `sub`,
//!   a certificate SAN); a backtracking glob with several `*` in one segment takes
//!   exponential time on a crafted id and stalls a worker per request. The matcher
//!   works segment by segment with a leftmost search, linear in pattern and id.
//! - **Each template attribute fills a whole segment.** `{namespace}-{service_account}`
//!   renders one prefix for `team` + `a-etl` and for `team-a` + `etl`: one tenant
//!   would read another's folder. Refused at load.
//! - **Templates that reach a fixed prefix are reported.** A namespace named `shared`
//!   against `tenants/{namespace}/` gets a fixed `tenants/shared/` folder. Whether
//!   such a namespace can exist only the operator knows, so it is a warning at load,
//!   on reload and in `--check-config`, not a refusal.
//! - **Response overrides are off unless a rule allows them.** A `response-content-type`
//!   of `text/html` (or an `inline` disposition) makes a stored file render as a page
//!   from the store's origin, shared by every bucket under path-style addressing: a
//!   script uploaded by one tenant runs with the origin of all. `attachment` stays
//!   allowed: a download never renders.
//! - **The identity source is part of the match.** A `spiffe://` pattern matches only
//!   callers a certificate identified (mTLS, forwarded certificate): a JWT whose claim
//!   reads `spiffe://…` is not that workload. A rule may also pin `sources` and
//!   `trust_domains`, so one issuer or one trust domain cannot stand in for another.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::caller::{Caller, Source, attr};
pub use crate::core::Action;
use crate::scope::{BucketName, ObjectKey, Prefix};

pub mod reload;

/// What a request asks for: one object, or everything under a prefix.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A single object.
    Key(&'a ObjectKey),
    /// A prefix (for scoped credentials).
    Prefix(&'a Prefix),
}

/// Attributes a prefix template may use.
pub const TEMPLATE_ATTRIBUTES: [&str; 5] = [
    "namespace",
    "service_account",
    "trust_domain",
    "subject",
    "issuer",
];

/// A rule's prefix: fixed, or a template rendered per caller.
#[derive(Debug, Clone)]
enum RulePrefix {
    Fixed(Prefix),
    Template(Vec<Part>),
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Attribute(String),
}

/// One `/`-separated segment of a rule's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    Attribute(&'a str),
}

impl std::fmt::Display for RulePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RulePrefix::Fixed(p) => write!(f, "{p}"),
            RulePrefix::Template(parts) => parts.iter().try_for_each(|part| match part {
                Part::Text(t) => f.write_str(t),
                Part::Attribute(name) => write!(f, "{{{name}}}"),
            }),
        }
    }
}

/// A template rule that renders, for a caller with the right attribute values, a
/// prefix holding another rule's fixed prefix in the same bucket: a namespace named
/// `shared` against `tenants/{namespace}/` gets `tenants/shared/`. Reported at load
/// and by `--check-config`, not refused: the fixed folder may belong to that tenant,
/// which only the operator knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file}:{template_line}: prefix '{template}' renders '{rendered}' for a caller with {values}, \
     which holds '{fixed}', the fixed prefix of the rule at line {fixed_line}; make sure no \
     such caller can exist, or move one of the prefixes"
)]
pub struct Collision {
    file: String,
    template_line: usize,
    template: String,
    rendered: String,
    values: String,
    fixed: String,
    fixed_line: usize,
}

impl RulePrefix {
    fn parse(s: &str) -> Result<RulePrefix, RuleError> {
        let invalid = |problem| RuleError::Prefix {
            prefix: s.to_owned(),
            problem,
        };
        if !s.contains(['{', '}']) {
            return s
                .parse()
                .map(RulePrefix::Fixed)
                .map_err(|source| RuleError::FixedPrefix {
                    prefix: s.to_owned(),
                    source,
                });
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            let (text, after) = rest.split_at(open);
            let close = after
                .find('}')
                .ok_or_else(|| invalid(PrefixProblem::Unclosed))?;
            let name = &after[1..close];
            if !TEMPLATE_ATTRIBUTES.contains(&name) {
                return Err(invalid(PrefixProblem::UnknownAttribute(name.to_owned())));
            }
            if text.contains('}') {
                return Err(invalid(PrefixProblem::Unopened));
            }
            parts.push(Part::Text(text.to_owned()));
            parts.push(Part::Attribute(name.to_owned()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(invalid(PrefixProblem::Unopened));
        }
        parts.push(Part::Text(rest.to_owned()));
        let template = RulePrefix::Template(parts);
        // A sample rendering must be a valid prefix: the template's own text is held to
        // the same rules as any prefix.
        template
            .render(|_| Some("x"))
            .ok_or_else(|| invalid(PrefixProblem::InvalidTemplate))?;
        // Each attribute fills one whole segment: `{namespace}-{service_account}`
        // renders `team-a-etl` for `team` + `a-etl` and for `team-a` + `etl`, two
        // callers sharing one prefix. Parts alternate text, attribute, text, ….
        if let RulePrefix::Template(parts) = &template {
            for (i, part) in parts.iter().enumerate() {
                let Part::Attribute(name) = part else {
                    continue;
                };
                let text = |j: usize| match parts.get(j) {
                    Some(Part::Text(t)) => t.as_str(),
                    _ => "",
                };
                let starts_segment = text(i - 1).ends_with('/') || i == 1 && text(0).is_empty();
                if !starts_segment || !text(i + 1).starts_with('/') {
                    return Err(invalid(PrefixProblem::PartialSegment(name.clone())));
                }
            }
        }
        Ok(template)
    }

    /// The segments of the prefix: literal text, or an attribute filling the whole
    /// segment (as [`RulePrefix::parse`] guarantees).
    fn segments(&self) -> Vec<Segment<'_>> {
        match self {
            RulePrefix::Fixed(p) => p
                .as_str()
                .trim_end_matches('/')
                .split('/')
                .map(Segment::Literal)
                .collect(),
            RulePrefix::Template(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    match part {
                        Part::Attribute(name) => out.push(Segment::Attribute(name)),
                        Part::Text(t) => {
                            out.extend(t.split('/').filter(|s| !s.is_empty()).map(Segment::Literal))
                        }
                    }
                }
                out
            }
        }
    }

    /// The prefix for a caller whose attributes `attribute` looks up; `None` when an
    /// attribute is missing or is not a plain single segment.
    fn render<'a>(&self, attribute: impl Fn(&str) -> Option<&'a str>) -> Option<Cow<'_, Prefix>> {
        match self {
            // Borrowed: a fixed prefix is rendered on every grant, and copying it
            // would be an allocation per call for nothing.
            RulePrefix::Fixed(p) => Some(Cow::Borrowed(p)),
            RulePrefix::Template(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Attribute(name) => {
                            let value = attribute(name)?;
                            // One segment only: a '/' would let a value add segments.
                            // Empty, dot, control and metacharacter values are refused
                            // by the Prefix parse below.
                            if value.contains('/') {
                                return None;
                            }
                            out.push_str(value);
                        }
                    }
                }
                out.parse().ok().map(Cow::Owned)
            }
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    callers: Vec<CallerPattern>,
    bucket: BucketName,
    prefix: RulePrefix,
    actions: Vec<Action>,
    max_ttl: Duration,
    allow_delete: bool,
    max_object_size: Option<u64>,
    allow_response_overrides: bool,
    /// Content types a write under this rule must pin one of; empty: any (or none).
    content_types: Vec<String>,
    /// Identity sources the rule accepts; empty: any.
    sources: Vec<Source>,
    /// SPIFFE trust domains the rule accepts; empty: any.
    trust_domains: Vec<String>,
    /// Each caller's budget of grants under this rule, instead of `[limits]`'s.
    grant_rate: Option<crate::budget::Rate>,
    line: usize,
}

impl Rule {
    /// The largest object a multipart upload under this rule may complete, if bounded.
    pub fn max_object_size(&self) -> Option<u64> {
        self.max_object_size
    }

    /// Longest TTL this rule grants.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The prefix the rule covers for `caller`, if it covers any.
    pub fn prefix_for(&self, caller: &Caller) -> Option<Cow<'_, Prefix>> {
        self.prefix
            .render(|name| caller.attributes().get(name).map(String::as_str))
    }

    /// Whether read grants under this rule may set a response content type or a
    /// disposition other than `attachment`.
    pub fn allow_response_overrides(&self) -> bool {
        self.allow_response_overrides
    }

    /// Whether a write under this rule may pin `content_type` (`None`: none pinned,
    /// which leaves the uploader's own `Content-Type` to the store). Under a rule with
    /// `content_types`, a write must pin exactly one media type that is one of them:
    /// `type/subtype`, or `type/*` for any subtype, in any case, with parameters
    /// (`; charset=utf-8`) of their own grammar. Anything else is refused, since a browser
    /// reads what it can out of a malformed type: `image/png,text/html` is a list whose
    /// last member Chromium renders as a page.
    pub fn allows_content_type(&self, content_type: Option<&str>) -> bool {
        if self.content_types.is_empty() {
            return true;
        }
        let Some((kind, subtype)) = content_type.and_then(single_media_type) else {
            return false;
        };
        self.content_types
            .iter()
            .any(|allowed| match allowed.split_once('/') {
                Some((k, "*")) => k.eq_ignore_ascii_case(kind),
                Some((k, sub)) => k.eq_ignore_ascii_case(kind) && sub.eq_ignore_ascii_case(subtype),
                None => false,
            })
    }

    /// The content types a write under this rule must pin one of (empty: any).
    pub fn content_types(&self) -> &[String] {
        &self.content_types
    }

    /// Whether scoped write credentials under this rule may also delete objects.
    pub fn allow_delete(&self) -> bool {
        self.allow_delete
    }

    /// Line of the rule in its file, for logs and audit.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Each caller's budget of grants under this rule, when the rule sets its own
    /// (`grants_per_second`, `grants_burst`); `None`: `[limits]` applies.
    pub fn grant_rate(&self) -> Option<crate::budget::Rate> {
        self.grant_rate
    }

    fn applies_to(&self, caller: &Caller, action: Action, bucket: &BucketName) -> bool {
        self.bucket == *bucket
            && self.actions.contains(&action)
            && (self.sources.is_empty() || self.sources.contains(&caller.source()))
            && (self.trust_domains.is_empty()
                || caller
                    .attribute(attr::TRUST_DOMAIN)
                    .is_some_and(|d| self.trust_domains.iter().any(|t| t == d)))
            && self.callers.iter().any(|p| p.matches(caller))
    }

    fn covers(prefix: &Prefix, target: Target<'_>) -> bool {
        match target {
            Target::Key(key) => key.is_under(prefix),
            Target::Prefix(p) => prefix.contains(p),
        }
    }
}

/// The loaded rule set.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    source: PathBuf,
}

/// A refusal: the caller's rules do not allow the request.
///
/// Its message names the rules file and what the caller lacked; it lists only this
/// caller's own prefixes, never another caller's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Denied {
    caller: String,
    action: Action,
    bucket: String,
    allowed_prefixes: Vec<String>,
    rules_file: String,
}

impl Denied {
    fn message(&self) -> String {
        let Denied {
            caller,
            action,
            bucket,
            allowed_prefixes,
            rules_file,
        } = self;
        if allowed_prefixes.is_empty() {
            format!(
                "no rule in {rules_file} allows caller '{caller}' to {action} in bucket '{bucket}'; \
                 ask the operator for a rule"
            )
        } else {
            let list = allowed_prefixes
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "caller '{caller}' may {action} in bucket '{bucket}' only under {list} \
                 (rules in {rules_file}); ask for a key or prefix under one of them"
            )
        }
    }
}

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "grants.rules_file: cannot read {}: {source}; create it (an empty file grants \
         nothing) or set grants.rules_file (relative to the config file)",
        .path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed TOML: where, and TOML's message without the text it quotes (the
    /// file may not be rules at all, and its line may hold anything).
    #[error("{path}: {at}: {message}")]
    Parse {
        path: PathBuf,
        at: crate::core::toml_errors::Location,
        message: String,
    },
    /// A rule that parses and makes no sense. Its message quotes what the rule says,
    /// with what could break or hide a log line written as escapes (`\u{200b}`).
    #[error(
        "{path}:{line}: {}",
        crate::core::text::escape_breaks(&source.to_string())
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        #[source]
        source: RuleError,
    },
}

/// What is wrong with one rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("callers: list at least one caller id or pattern")]
    NoCallers,
    #[error("callers: '{pattern}': {problem}")]
    Caller {
        pattern: String,
        problem: PatternProblem,
    },
    #[error("bucket '{name}' {source}")]
    Bucket {
        name: String,
        #[source]
        source: crate::scope::Error,
    },
    #[error("prefix '{prefix}' {source}")]
    FixedPrefix {
        prefix: String,
        #[source]
        source: crate::scope::Error,
    },
    #[error("prefix '{prefix}': {problem}")]
    Prefix {
        prefix: String,
        problem: PrefixProblem,
    },
    #[error("actions: list at least one of read, write, assume-read, assume-write, list")]
    NoActions,
    #[error("max_ttl: must be at least 1s")]
    TtlTooShort,
    #[error(
        "max_ttl: rules with assume-read, assume-write or list need at least 15m, STS's \
         shortest session; split the rule or raise max_ttl"
    )]
    TtlBelowSts,
    #[error("allow_delete: only applies to rules with assume-write")]
    DeleteWithoutWrite,
    #[error("max_object_size: only applies to rules with write")]
    SizeWithoutWrite,
    #[error("max_object_size: must be at least 1 byte")]
    ZeroSize,
    #[error("allow_response_overrides: only applies to rules with read")]
    OverridesWithoutRead,
    #[error("content_types: only applies to rules with write")]
    ContentTypesWithoutWrite,
    #[error(
        "content_types: an empty list would take uploads of any type, not none; name the \
         types, or remove the key to take any"
    )]
    NoContentTypes,
    #[error(
        "content_types: '{0}' is not a content type; write type/subtype (image/png) or \
         type/* (image/*)"
    )]
    BadContentType(String),
    #[error("sources: unknown source '{0}'; use mtls, jwt, xfcc or dev_token")]
    UnknownSource(String),
    #[error("trust_domains: a trust domain must not be empty")]
    EmptyTrustDomain,
    #[error(
        "grants_per_second: must be between 0.0000116 (one grant a day: a slower \
         budget would ask callers to wait days) and 1000000"
    )]
    BadGrantRate,
    #[error("grants_burst: must be at least 1 (and at most 1000000)")]
    BadGrantBurst,
    #[error("grants_burst: only applies with grants_per_second")]
    BurstWithoutRate,
}

/// The type and subtype of `text` when it is exactly one media type (RFC 9110 §8.3.1:
/// `type "/" subtype *( OWS ";" OWS parameter )`, a parameter `token "=" ( token /
/// quoted-string )`), with RFC 6838's restricted names for type and subtype; `None`
/// for anything else: a list, a wildcard, stray characters, an empty parameter.
fn single_media_type(text: &str) -> Option<(&str, &str)> {
    // A comma makes a list to a browser, even inside what reads as a quoted value.
    if text.contains(',') {
        return None;
    }
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let quoted = |s: &str| {
        s.len() >= 2
            && s.starts_with('"')
            && s.ends_with('"')
            && s[1..s.len() - 1]
                .bytes()
                .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\')
    };
    // Only HTTP's own whitespace: `str::trim` would also take a no-break space, which
    // the store keeps and a browser cannot parse.
    fn ows(s: &str) -> &str {
        s.trim_matches([' ', '\t'])
    }
    let mut parts = text.split(';');
    let (kind, subtype) = ows(parts.next()?).split_once('/')?;
    if !restricted_name(kind) || !restricted_name(subtype) {
        return None;
    }
    for parameter in parts {
        let (key, value) = ows(parameter).split_once('=')?;
        if !token(key) || !(token(value) || quoted(value)) {
            return None;
        }
    }
    Some((kind, subtype))
}

/// `type/subtype` or `type/*`: RFC 6838's restricted names (letters, digits and
/// `!#$&-^_.+`), no parameters.
fn is_content_type_pattern(text: &str) -> bool {
    match text.split_once('/') {
        Some((kind, "*")) => restricted_name(kind),
        Some((kind, subtype)) => restricted_name(kind) && restricted_name(subtype),
        None => false,
    }
}

/// A type or subtype name as RFC 6838 restricts them: letters, digits and `!#$&-^_.+`,
/// at most 127 characters.
fn restricted_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 127
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

/// An identity source as a rule names it (the names of `identity.order`).
fn parse_source(name: &str) -> Option<Source> {
    match name {
        "mtls" => Some(Source::Mtls),
        "jwt" => Some(Source::Jwt),
        "xfcc" => Some(Source::ForwardedCert),
        "dev_token" => Some(Source::DevToken),
        _ => None,
    }
}

/// Why a caller pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    #[error("must not be empty")]
    Empty,
    #[error("contains a control or invisible formatting character, which no caller id holds")]
    ControlCharacter,
    #[error("starts or ends with a space; caller ids are matched exactly, so remove it")]
    OuterSpace,
    #[error("matches every caller; name the callers")]
    MatchesEveryone,
}

/// Why a prefix template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixProblem {
    #[error("'{{' without a closing '}}'")]
    Unclosed,
    #[error("'}}' without an opening '{{'")]
    Unopened,
    #[error("unknown attribute '{{{0}}}'; use one of {attributes}", attributes = TEMPLATE_ATTRIBUTES.join(", "))]
    UnknownAttribute(String),
    #[error(
        "is not a valid prefix template (it must end with '/' and hold no empty, '.' or \
         '..' segments)"
    )]
    InvalidTemplate,
    #[error(
        "'{{{0}}}' must fill a whole segment, as in 'tenants/{{{0}}}/': next to other text, \
         two callers' values can render the same prefix"
    )]
    PartialSegment(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    callers: Vec<String>,
    bucket: String,
    prefix: String,
    actions: Vec<Action>,
    #[serde(default = "default_rule_ttl", with = "crate::core::duration")]
    max_ttl: Duration,
    /// Scoped write credentials may also delete (s3:DeleteObject).
    #[serde(default)]
    allow_delete: bool,
    /// Largest object a multipart upload may complete, in bytes.
    #[serde(default)]
    max_object_size: Option<u64>,
    /// Read grants may override the response's content type and disposition.
    #[serde(default)]
    allow_response_overrides: bool,
    /// Content types a write grant must pin one of (`image/png`, `image/*`); unset:
    /// any. Set and empty is refused: it reads as "none", and would mean "any".
    #[serde(default)]
    content_types: Option<Vec<String>>,
    /// Identity sources the rule accepts (`mtls`, `jwt`, `xfcc`, `dev_token`).
    #[serde(default)]
    sources: Vec<String>,
    /// SPIFFE trust domains the rule accepts.
    #[serde(default)]
    trust_domains: Vec<String>,
    /// Grants each caller may be issued under this rule, per second, sustained.
    #[serde(default)]
    grants_per_second: Option<f64>,
    /// Most grants in a burst under this rule (default: twice `grants_per_second`).
    #[serde(default)]
    grants_burst: Option<f64>,
    /// Free text for the operator; not interpreted.
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
}

fn default_rule_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}

impl Rules {
    /// Reads and validates a rules file.
    ///
    /// # Errors
    /// [`Error::Read`] if the file cannot be read, [`Error::Parse`] (with line and
    /// column) for malformed TOML, [`Error::Invalid`] (with the rule's line) for a rule
    /// that parses but cannot be used.
    pub async fn load(path: &Path) -> Result<Rules, Error> {
        let text = crate::core::files::read_text(path, crate::core::files::MAX_CONFIG_FILE)
            .await
            .map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(&text, path)
    }

    /// Validates rules from text; `path` names the source in messages.
    ///
    /// # Errors
    /// As [`Rules::load`], without the read error.
    pub fn parse(text: &str, path: &Path) -> Result<Rules, Error> {
        let raw: RawFile = toml::from_str(text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            at: crate::core::toml_errors::Location::of(text, source.span()),
            message: crate::core::toml_errors::without_values(source.message().trim_end()),
        })?;
        let rules = raw
            .rules
            .into_iter()
            .map(|spanned| {
                let line = text[..spanned.span().start].matches('\n').count() + 1;
                Rule::from_raw(spanned.into_inner(), line).map_err(|source| Error::Invalid {
                    path: path.to_owned(),
                    line,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules {
            rules,
            source: path.to_owned(),
        })
    }

    /// Every template rule that can render a prefix holding another rule's fixed
    /// prefix in the same bucket (see [`Collision`]).
    pub fn collisions(&self) -> Vec<Collision> {
        let mut out = Vec::new();
        for template in &self.rules {
            if !matches!(template.prefix, RulePrefix::Template(_)) {
                continue;
            }
            let t = template.prefix.segments();
            for fixed in &self.rules {
                let RulePrefix::Fixed(fixed_prefix) = &fixed.prefix else {
                    continue;
                };
                let f = fixed.prefix.segments();
                if fixed.bucket != template.bucket || t.len() > f.len() {
                    continue;
                }
                let mut values = Vec::new();
                let reaches = t.iter().zip(&f).all(|(t, f)| match (t, f) {
                    (Segment::Attribute(name), Segment::Literal(value)) => {
                        values.push(format!("{name} '{value}'"));
                        true
                    }
                    (t, f) => t == f,
                });
                // Without an attribute in play the template holds the fixed prefix for
                // every caller (an operator's broad rule), which is no accident.
                if reaches && !values.is_empty() {
                    let rendered: Vec<String> = f[..t.len()]
                        .iter()
                        .map(|s| match s {
                            Segment::Literal(v) | Segment::Attribute(v) => format!("{v}/"),
                        })
                        .collect();
                    out.push(Collision {
                        file: self.file_name(),
                        template_line: template.line,
                        template: template.prefix.to_string(),
                        rendered: rendered.concat(),
                        values: values.join(" and "),
                        fixed: fixed_prefix.to_string(),
                        fixed_line: fixed.line,
                    });
                }
            }
        }
        out
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The warning the server at start and `--check-config` give for a rules file with
    /// no rule (valid, but nothing can be granted), or `None`.
    pub fn empty_warning(&self) -> Option<&'static str> {
        self.is_empty()
            .then_some("the rules file holds no rule: every grant will be refused")
    }

    /// Whether the file holds no rule (then nothing is ever granted).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every bucket some rule names, for the readiness check.
    pub fn buckets(&self) -> Vec<BucketName> {
        let mut buckets: Vec<_> = self.rules.iter().map(|r| r.bucket.clone()).collect();
        buckets.sort();
        buckets.dedup();
        buckets
    }

    /// The rule that allows `caller` to `action` on `target` in `bucket`: the most
    /// specific one (longest prefix, then first in the file).
    ///
    /// # Errors
    /// [`Denied`] when no rule allows it.
    pub fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        bucket: &BucketName,
        target: Target<'_>,
    ) -> Result<&Rule, Denied> {
        let mut best: Option<(&Rule, usize)> = None;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.applies_to(caller, action, bucket))
        {
            let Some(prefix) = rule.prefix_for(caller) else {
                continue;
            };
            let len = prefix.as_str().len();
            if Rule::covers(&prefix, target) && best.is_none_or(|(_, b)| len > b) {
                best = Some((rule, len));
            }
        }
        best.map(|(rule, _)| rule)
            .ok_or_else(|| self.denied(caller, action, bucket))
    }

    /// Where `caller` may write in `bucket` when it does not pick the key itself
    /// (browser uploads): the prefix of the first rule in the file that allows it
    /// `write` there.
    pub fn write_prefix(&self, caller: &Caller, bucket: &BucketName) -> Option<Prefix> {
        self.rules
            .iter()
            .filter(|r| r.applies_to(caller, Action::Write, bucket))
            .find_map(|r| r.prefix_for(caller))
            .map(Cow::into_owned)
    }

    /// The refusal for a caller with no `write` rule in `bucket`.
    pub fn denied_write(&self, caller: &Caller, bucket: &BucketName) -> Denied {
        self.denied(caller, Action::Write, bucket)
    }

    fn denied(&self, caller: &Caller, action: Action, bucket: &BucketName) -> Denied {
        let mut allowed_prefixes: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(caller, action, bucket))
            .filter_map(|r| r.prefix_for(caller))
            .map(|p| p.to_string())
            .collect();
        allowed_prefixes.dedup();
        Denied {
            caller: crate::core::text::echo(caller.id()).into_owned(),
            action,
            bucket: bucket.to_string(),
            allowed_prefixes,
            rules_file: self.file_name(),
        }
    }

    /// The rules file's name, for messages (never the directory).
    fn file_name(&self) -> String {
        self.source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "the rules file".into())
    }
}

impl Rule {
    fn from_raw(raw: RawRule, line: usize) -> Result<Rule, RuleError> {
        if raw.callers.is_empty() {
            return Err(RuleError::NoCallers);
        }
        let callers = raw
            .callers
            .iter()
            .map(|c| {
                c.parse().map_err(|problem| RuleError::Caller {
                    pattern: c.clone(),
                    problem,
                })
            })
            .collect::<Result<Vec<CallerPattern>, _>>()?;
        let bucket = raw.bucket.parse().map_err(|source| RuleError::Bucket {
            name: raw.bucket.clone(),
            source,
        })?;
        let prefix = RulePrefix::parse(&raw.prefix)?;
        if raw.actions.is_empty() {
            return Err(RuleError::NoActions);
        }
        if raw.max_ttl < Duration::from_secs(1) {
            return Err(RuleError::TtlTooShort);
        }
        // `list` is granted only inside scoped credentials, so it shares their floor.
        let assumes = raw
            .actions
            .iter()
            .any(|a| matches!(a, Action::AssumeRead | Action::AssumeWrite | Action::List));
        if assumes && raw.max_ttl < crate::core::limits::STS_MIN_DURATION {
            return Err(RuleError::TtlBelowSts);
        }
        if raw.allow_delete && !raw.actions.contains(&Action::AssumeWrite) {
            return Err(RuleError::DeleteWithoutWrite);
        }
        if raw.max_object_size.is_some() && !raw.actions.contains(&Action::Write) {
            return Err(RuleError::SizeWithoutWrite);
        }
        if raw.max_object_size == Some(0) {
            return Err(RuleError::ZeroSize);
        }
        let sources = raw
            .sources
            .iter()
            .map(|name| parse_source(name).ok_or_else(|| RuleError::UnknownSource(name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if raw.trust_domains.iter().any(String::is_empty) {
            return Err(RuleError::EmptyTrustDomain);
        }
        if raw.allow_response_overrides && !raw.actions.contains(&Action::Read) {
            return Err(RuleError::OverridesWithoutRead);
        }
        if raw.content_types.as_ref().is_some_and(Vec::is_empty) {
            return Err(RuleError::NoContentTypes);
        }
        let content_types = raw.content_types.unwrap_or_default();
        if !content_types.is_empty() && !raw.actions.contains(&Action::Write) {
            return Err(RuleError::ContentTypesWithoutWrite);
        }
        if let Some(bad) = content_types.iter().find(|t| !is_content_type_pattern(t)) {
            return Err(RuleError::BadContentType(bad.clone()));
        }
        let grant_rate = grant_rate(raw.grants_per_second, raw.grants_burst)?;
        Ok(Rule {
            grant_rate,
            allow_response_overrides: raw.allow_response_overrides,
            content_types,
            sources,
            trust_domains: raw.trust_domains,
            callers,
            bucket,
            prefix,
            actions: raw.actions,
            max_ttl: raw.max_ttl,
            allow_delete: raw.allow_delete,
            max_object_size: raw.max_object_size,
            line,
        })
    }
}

/// Largest grant rate or burst a rule may set: beyond it a budget means nothing.
const MAX_GRANT_RATE: f64 = 1_000_000.0;
/// The slowest budget a rule may set: one grant a day (the chart's schema says
/// 0.0000116, just above it).
const MIN_GRANT_RATE: f64 = 1.0 / 86_400.0;

/// A rule's own grant budget from `grants_per_second` and `grants_burst`.
fn grant_rate(
    per_second: Option<f64>,
    burst: Option<f64>,
) -> Result<Option<crate::budget::Rate>, RuleError> {
    let Some(per_second) = per_second else {
        return match burst {
            Some(_) => Err(RuleError::BurstWithoutRate),
            None => Ok(None),
        };
    };
    // A range check that is false for NaN too.
    if !(MIN_GRANT_RATE..=MAX_GRANT_RATE).contains(&per_second) {
        return Err(RuleError::BadGrantRate);
    }
    // Twice the rate by default, within the bounds a burst written out must keep.
    let burst = burst.unwrap_or((per_second * 2.0).clamp(1.0, MAX_GRANT_RATE));
    if !(1.0..=MAX_GRANT_RATE).contains(&burst) {
        return Err(RuleError::BadGrantBurst);
    }
    Ok(Some(crate::budget::Rate { per_second, burst }))
}

// === impl CallerPattern ===

/// A caller id, or a pattern where `*` matches any run of characters except `/` (so
/// `spiffe://prod/ns/*/sa/reporting` matches one namespace segment, never more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerPattern {
    text: String,
    /// No `*`: the pattern is one id, compared whole. Most patterns are; every call
    /// tries its rules' patterns, and a SPIFFE ID has seven segments to match one by one.
    literal: bool,
    /// A `spiffe://` pattern (see [`CallerPattern::matches`]).
    names_a_certificate: bool,
}

impl FromStr for CallerPattern {
    type Err = PatternProblem;

    fn from_str(s: &str) -> Result<Self, PatternProblem> {
        if s.is_empty() {
            return Err(PatternProblem::Empty);
        }
        if crate::core::text::breaks_or_hides(s) {
            return Err(PatternProblem::ControlCharacter);
        }
        if s.trim() != s {
            return Err(PatternProblem::OuterSpace);
        }
        if s.chars().all(|c| c == '*' || c == '/') {
            return Err(PatternProblem::MatchesEveryone);
        }
        Ok(Self {
            text: s.to_owned(),
            literal: !s.contains('*'),
            names_a_certificate: crate::caller::has_spiffe_form(s),
        })
    }
}

impl CallerPattern {
    /// Whether `caller` matches the pattern. A `spiffe://` pattern names a workload
    /// by its certificate, so it matches only callers a certificate identified (mTLS
    /// or a forwarded certificate), never a token whose claim reads the same.
    pub fn matches(&self, caller: &Caller) -> bool {
        if self.names_a_certificate
            && !matches!(caller.source(), Source::Mtls | Source::ForwardedCert)
        {
            return false;
        }
        self.matches_id(caller.id())
    }

    /// Whether `id` matches the pattern, whoever vouched for it.
    fn matches_id(&self, id: &str) -> bool {
        if self.literal {
            self.text == id
        } else {
            glob_match(&self.text, id)
        }
    }
}

/// `*` matches any run of bytes other than `/`; everything else matches itself.
///
/// Linear in the pattern and the id: a backtracking matcher tries every way to split
/// a segment among its stars (`*-*-*:*-reader` against a long id of dashes takes
/// hours), and the caller id is chosen by whoever presents the identity. Since `*`
/// never crosses `/`, pattern and id are matched segment by segment (same count of
/// segments); within one, the text before the first star must begin it, the text
/// after the last star must end it, and each piece between stars is found at its
/// leftmost place after the previous one. Leftmost is always right for `*`-only
/// patterns: an earlier match leaves more room for the pieces after it.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut pattern_segments = pattern.split('/');
    let mut text_segments = text.split('/');
    loop {
        match (pattern_segments.next(), text_segments.next()) {
            (None, None) => return true,
            (Some(p), Some(t)) if segment_match(p, t) => {}
            _ => return false,
        }
    }
}

/// One segment (no `/` in either): see [`glob_match`].
fn segment_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut middle: Vec<&str> = pieces.collect();
    let Some(last) = middle.pop() else {
        // No star: the whole segment is literal.
        return rest.is_empty();
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    for piece in middle {
        // `str::find` is the Two-Way algorithm: linear, even on ids such as `aaaa…ab`.
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_toml_is_located_without_its_text() {
        // What a rules path pointed at `/proc/self/environ` reads.
        let environ = "PATH=/usr/bin\0AWS_SECRET_ACCESS_KEY=sk-live-0123456789\0HOME=/root\0";
        let err = Rules::parse(environ, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rules.toml: line 1, column "), "{err}");
        assert!(
            !err.contains("sk-live") && !err.contains("AWS_SECRET"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = Rules::parse(
            "[[rules]]\ncallers = [\"dev:x\"\nbucket = \"tok-123\"\n",
            Path::new("r.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("r.toml: line "), "{err}");
        assert!(!err.contains("tok-123"), "{err}");
    }
    use crate::identity::Source;

    const FILE: &str = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read", "write"]
max_ttl = "15m"

[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/short/"
actions = ["read"]
max_ttl = "1m"

[[rules]]
callers = ["spiffe://prod.example/ns/*/sa/reporting"]
bucket = "reports"
prefix = "monthly/"
actions = ["read"]
"#;

    fn rules() -> Rules {
        Rules::parse(FILE, Path::new("/etc/sg/rules.toml")).unwrap()
    }

    /// A caller as its id's form says: a certificate for a SPIFFE ID, else a token.
    fn caller(id: &str) -> Caller {
        let source = if id.starts_with("spiffe://") {
            Source::Mtls
        } else {
            Source::DevToken
        };
        Caller::new(id, source)
    }

    fn key(s: &str) -> ObjectKey {
        s.parse().unwrap()
    }

    fn bucket(s: &str) -> BucketName {
        s.parse().unwrap()
    }

    #[test]
    fn key_under_rule_prefix_is_allowed() {
        let r = rules();
        let k = key("public/a.txt");
        let rule = r
            .authorize(
                &caller("dev:demo"),
                Action::Read,
                &bucket("demo"),
                Target::Key(&k),
            )
            .unwrap();
        assert_eq!(rule.max_ttl(), Duration::from_secs(900));
    }

    #[test]
    fn most_specific_rule_sets_the_ttl() {
        let r = rules();
        let k = key("public/short/a.txt");
        let rule = r
            .authorize(
                &caller("dev:demo"),
                Action::Read,
                &bucket("demo"),
                Target::Key(&k),
            )
            .unwrap();
        assert_eq!(rule.max_ttl(), Duration::from_secs(60));
        assert_eq!(
            rule.prefix_for(&caller("dev:demo")).unwrap().as_str(),
            "public/short/"
        );
        // Write is only in the broader rule, which then applies.
        let rule = r
            .authorize(
                &caller("dev:demo"),
                Action::Write,
                &bucket("demo"),
                Target::Key(&k),
            )
            .unwrap();
        assert_eq!(
            rule.prefix_for(&caller("dev:demo")).unwrap().as_str(),
            "public/"
        );
    }

    #[test]
    fn key_outside_prefix_is_denied_and_says_where_it_may_go() {
        let r = rules();
        let k = key("private/a.txt");
        let denied = r
            .authorize(
                &caller("dev:demo"),
                Action::Read,
                &bucket("demo"),
                Target::Key(&k),
            )
            .unwrap_err();
        let msg = denied.to_string();
        assert!(
            msg.contains("'public/'") && msg.contains("rules.toml"),
            "{msg}"
        );
        assert!(
            !msg.contains("monthly/"),
            "another caller's prefix leaked: {msg}"
        );
    }

    #[test]
    fn sibling_prefix_is_denied() {
        let k = key("public2/a.txt");
        assert!(
            rules()
                .authorize(
                    &caller("dev:demo"),
                    Action::Read,
                    &bucket("demo"),
                    Target::Key(&k)
                )
                .is_err()
        );
    }

    #[test]
    fn unknown_caller_gets_nothing_and_learns_nothing() {
        let k = key("public/a.txt");
        let msg = rules()
            .authorize(
                &caller("dev:other"),
                Action::Read,
                &bucket("demo"),
                Target::Key(&k),
            )
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("no rule"), "{msg}");
        assert!(!msg.contains("public/"), "{msg}");
    }

    #[test]
    fn action_not_listed_is_denied() {
        let k = key("public/a.txt");
        assert!(
            rules()
                .authorize(
                    &caller("dev:demo"),
                    Action::AssumeRead,
                    &bucket("demo"),
                    Target::Key(&k)
                )
                .is_err()
        );
    }

    #[test]
    fn pattern_matches_one_segment_only() {
        let r = rules();
        let k = key("monthly/x.csv");
        let b = bucket("reports");
        let ok = caller("spiffe://prod.example/ns/finance/sa/reporting");
        assert!(r.authorize(&ok, Action::Read, &b, Target::Key(&k)).is_ok());
        for bad in [
            "spiffe://prod.example/ns/a/b/sa/reporting",
            "spiffe://prod.example/ns/finance/sa/reporting2",
            "spiffe://prod.example/ns/finance/sa/other",
        ] {
            assert!(
                r.authorize(&caller(bad), Action::Read, &b, Target::Key(&k))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefix_target_must_lie_inside_the_rule() {
        let r = rules();
        let inner: Prefix = "public/jobs/".parse().unwrap();
        let outer: Prefix = "pub/".parse().unwrap();
        let c = caller("dev:demo");
        assert!(
            r.authorize(&c, Action::Read, &bucket("demo"), Target::Prefix(&inner))
                .is_ok()
        );
        assert!(
            r.authorize(&c, Action::Read, &bucket("demo"), Target::Prefix(&outer))
                .is_err()
        );
    }

    #[test]
    fn bad_prefix_is_reported_with_file_and_line() {
        let text = "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x\"\nactions = [\"read\"]\n\n[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x*/\"\nactions = [\"read\"]\n";
        let err = Rules::parse(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rules.toml:1:"), "{err}");
        assert!(err.contains("must end with '/'"), "{err}");
        let second_only = text.replacen("prefix = \"x\"", "prefix = \"x/\"", 1);
        let err = Rules::parse(&second_only, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rules.toml:7:"), "{err}");
        assert!(err.contains("'*'"), "{err}");
    }

    #[test]
    fn unknown_action_is_a_parse_error_with_line() {
        let text = "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"reed\"]\n";
        let err = Rules::parse(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 5") && err.contains("reed"), "{err}");
    }

    #[test]
    fn a_rule_may_set_its_own_grant_budget() {
        let base = "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"read\"]\n";
        let parse = |extra: &str| Rules::parse(&format!("{base}{extra}"), Path::new("rules.toml"));
        let rate = |extra: &str| parse(extra).unwrap().rules[0].grant_rate();
        assert_eq!(rate(""), None);
        assert_eq!(
            rate("grants_per_second = 5000\n"),
            Some(crate::budget::Rate {
                per_second: 5000.0,
                burst: 10000.0
            })
        );
        assert_eq!(
            rate("grants_per_second = 0.5\ngrants_burst = 3\n"),
            Some(crate::budget::Rate {
                per_second: 0.5,
                burst: 3.0
            })
        );
        // Up to the highest rate, the default burst stays within its own bound.
        assert_eq!(
            rate("grants_per_second = 1000000\n"),
            Some(crate::budget::Rate {
                per_second: 1_000_000.0,
                burst: 1_000_000.0
            })
        );
        assert!(rate("grants_per_second = 0.0000116\n").is_some());
        for (extra, says) in [
            ("grants_per_second = 0\n", "grants_per_second"),
            ("grants_per_second = -1\n", "grants_per_second"),
            ("grants_per_second = 1e-9\n", "one grant a day"),
            ("grants_per_second = 1000001\n", "grants_per_second"),
            ("grants_per_second = nan\n", "grants_per_second"),
            ("grants_per_second = inf\n", "grants_per_second"),
            (
                "grants_per_second = 10\ngrants_burst = 0.5\n",
                "grants_burst",
            ),
            ("grants_burst = 10\n", "only applies with grants_per_second"),
        ] {
            let err = parse(extra).unwrap_err().to_string();
            assert!(
                err.starts_with("rules.toml:1:") && err.contains(says),
                "{extra}: {err}"
            );
        }
    }

    #[test]
    fn assume_rules_need_sts_minimum_ttl() {
        let text = "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"assume-read\"]\nmax_ttl = \"5m\"\n";
        let err = Rules::parse(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("15m"), "{err}");
        assert!(Rules::parse(&text.replace("5m", "15m"), Path::new("rules.toml")).is_ok());
    }

    #[test]
    fn list_rules_need_sts_minimum_ttl() {
        // `list` is only ever granted inside scoped credentials, which live at least
        // STS's 15 minutes: a shorter max_ttl would be silently exceeded.
        let text = "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"list\"]\nmax_ttl = \"5m\"\n";
        let err = Rules::parse(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("15m"), "{err}");
        assert!(Rules::parse(&text.replace("5m", "15m"), Path::new("rules.toml")).is_ok());
    }

    #[test]
    fn content_types_bound_writes_to_the_types_they_name() {
        let rule = |types: &str, actions: &str| {
            Rules::parse(
                &format!(
                    "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\n\
                     actions = [{actions}]\ncontent_types = [{types}]\n"
                ),
                Path::new("rules.toml"),
            )
        };
        let rules = rule(r#""image/*", "application/pdf""#, r#""write""#).unwrap();
        let r = &rules.rules[0];
        for allowed in [
            "image/png",
            "IMAGE/JPEG",
            "application/pdf; x=1",
            "Application/PDF",
            " image/png ; charset=utf-8",
            "image/png; name=\"a b.png\"",
        ] {
            assert!(r.allows_content_type(Some(allowed)), "{allowed}");
        }
        for refused in [
            None,
            Some("text/html"),
            Some("image"),
            Some("image/"),
            Some("application/pdfx"),
            Some("imagex/png"),
            // Exactly one media type: a browser reads a list, or what it can of the rest.
            Some("image/png,text/html"),
            Some("image/png; x=\"a,text/html\""),
            Some("image/ png"),
            Some("image/png/x"),
            Some("image/png\""),
            Some("image/*"),
            Some("image/png;;"),
            Some("image/png; x"),
            Some("image/png; x=a b"),
            // Whitespace HTTP does not know: the store would keep the type as sent.
            Some("image/png\u{a0}"),
            Some("\u{3000}image/png"),
            Some("image/png; x=a\u{2003}"),
        ] {
            assert!(!r.allows_content_type(refused), "{refused:?}");
        }
        // Without content_types, any type, or none.
        let any = Rules::parse(
            "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\n\
             actions = [\"write\"]\n",
            Path::new("rules.toml"),
        )
        .unwrap();
        assert!(any.rules[0].allows_content_type(None));
        assert!(any.rules[0].allows_content_type(Some("text/html")));
        // An empty list reads as "none" and would mean "any": refused.
        let err = rule("", r#""write""#).unwrap_err().to_string();
        assert!(
            err.contains("an empty list would take uploads of any type"),
            "{err}"
        );
        // Only on write rules; only types.
        let err = rule(r#""image/*""#, r#""read""#).unwrap_err().to_string();
        assert!(err.contains("only applies to rules with write"), "{err}");
        for bad in ["image", "*/*", "image/png; charset=x", "text/ html", ""] {
            let err = rule(&format!("{bad:?}"), r#""write""#)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a content type"), "{bad}: {err}");
        }
    }

    #[test]
    fn allow_delete_needs_assume_write() {
        let text = "[[rules]]\ncallers = [\"a\"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"read\"]\nallow_delete = true\n";
        assert!(Rules::parse(text, Path::new("rules.toml")).is_err());
    }

    const TEMPLATED: &str = r#"
[[rules]]
callers = ["spiffe://prod.example/ns/*/sa/*"]
bucket = "data"
prefix = "tenants/{namespace}/{service_account}/"
actions = ["read"]
"#;

    fn workload(namespace: &str, sa: &str) -> Caller {
        Caller::new("spiffe://prod.example/ns/x/sa/y", Source::Mtls)
            .with_attribute("namespace", namespace)
            .with_attribute("service_account", sa)
    }

    #[test]
    fn template_prefix_uses_the_callers_own_attributes() {
        let r = Rules::parse(TEMPLATED, Path::new("rules.toml")).unwrap();
        let c = workload("team-a", "etl");
        let b = bucket("data");
        assert!(
            r.authorize(
                &c,
                Action::Read,
                &b,
                Target::Key(&key("tenants/team-a/etl/x"))
            )
            .is_ok()
        );
        assert!(
            r.authorize(
                &c,
                Action::Read,
                &b,
                Target::Key(&key("tenants/team-b/etl/x"))
            )
            .is_err()
        );
        let msg = r
            .authorize(
                &c,
                Action::Read,
                &b,
                Target::Key(&key("tenants/team-b/etl/x")),
            )
            .unwrap_err()
            .to_string();
        assert!(msg.contains("'tenants/team-a/etl/'"), "{msg}");
    }

    #[test]
    fn crafted_attribute_values_never_widen_a_template() {
        let r = Rules::parse(TEMPLATED, Path::new("rules.toml")).unwrap();
        let b = bucket("data");
        let k = key("tenants/team-b/etl/x");
        for (ns, sa) in [
            ("team-b/etl", "x"),
            ("..", "etl"),
            (".", "etl"),
            ("", "etl"),
            ("team-*", "etl"),
            ("team\n", "etl"),
            ("team-b", "etl/.."),
        ] {
            let c = workload(ns, sa);
            assert!(
                r.authorize(&c, Action::Read, &b, Target::Key(&k)).is_err(),
                "{ns:?}/{sa:?}"
            );
            let p = r.rules[0].prefix_for(&c);
            assert!(p.is_none(), "{ns:?}/{sa:?} rendered {p:?}");
        }
        // A caller without the attributes matches nothing.
        let bare = Caller::new("spiffe://prod.example/ns/x/sa/y", Source::Mtls);
        assert!(
            r.authorize(&bare, Action::Read, &b, Target::Key(&k))
                .is_err()
        );
    }

    #[test]
    fn bad_templates_are_refused_at_load() {
        for (prefix, want) in [
            ("tenants/{tenant}/", "unknown attribute"),
            ("tenants/{namespace/", "closing"),
            ("tenants/namespace}/", "opening"),
            ("tenants/{namespace}", "template"),
            ("tenants/{namespace}*/", "template"),
        ] {
            let text = TEMPLATED.replace("tenants/{namespace}/{service_account}/", prefix);
            let err = Rules::parse(&text, Path::new("rules.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{prefix}: {err}");
        }
    }

    #[test]
    fn attribute_must_fill_a_whole_segment() {
        // `team` + `a-etl` and `team-a` + `etl` would both render `tenants/team-a-etl/`.
        for prefix in [
            "tenants/{namespace}-{service_account}/",
            "tenants/x{namespace}/",
            "tenants/{namespace}x/",
            "{namespace}{service_account}/",
        ] {
            let text = TEMPLATED.replace("tenants/{namespace}/{service_account}/", prefix);
            let err = Rules::parse(&text, Path::new("rules.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("whole segment"), "{prefix}: {err}");
        }
        for prefix in ["{namespace}/", "tenants/{namespace}/{service_account}/x/"] {
            let text = TEMPLATED.replace("tenants/{namespace}/{service_account}/", prefix);
            assert!(
                Rules::parse(&text, Path::new("rules.toml")).is_ok(),
                "{prefix}"
            );
        }
    }

    #[test]
    fn template_that_can_render_another_rules_fixed_prefix_is_reported() {
        let text = format!(
            "{TEMPLATED}
[[rules]]
callers = [\"svc:shared\"]
bucket = \"data\"
prefix = \"tenants/shared/etl/\"
actions = [\"read\"]

[[rules]]
callers = [\"svc:other-bucket\"]
bucket = \"other\"
prefix = \"tenants/shared/etl/\"
actions = [\"read\"]

[[rules]]
callers = [\"svc:admin\"]
bucket = \"data\"
prefix = \"tenants/\"
actions = [\"read\"]
"
        );
        let r = Rules::parse(&text, Path::new("rules.toml")).unwrap();
        let reports: Vec<String> = r.collisions().iter().map(ToString::to_string).collect();
        // Only the fixed prefix in the same bucket that a namespace `shared` with a
        // service account `etl` would render; not the other bucket, and not `tenants/`,
        // which holds every rendering whatever the caller.
        assert_eq!(reports.len(), 1, "{reports:?}");
        let report = &reports[0];
        assert!(
            report.contains("rules.toml:2")
                && report.contains("line 8")
                && report.contains("'tenants/shared/etl/'"),
            "{report}"
        );
        assert!(
            Rules::parse(TEMPLATED, Path::new("rules.toml"))
                .unwrap()
                .collisions()
                .is_empty()
        );
    }

    #[test]
    fn spiffe_pattern_matches_only_certificate_callers() {
        let r = rules();
        let k = key("monthly/x.csv");
        let b = bucket("reports");
        let id = "spiffe://prod.example/ns/finance/sa/reporting";
        for source in [Source::Mtls, Source::ForwardedCert] {
            let c = Caller::new(id, source);
            assert!(r.authorize(&c, Action::Read, &b, Target::Key(&k)).is_ok());
        }
        // A token whose claim merely reads like a SPIFFE ID is not that workload.
        for source in [Source::Jwt, Source::DevToken] {
            let c = Caller::new(id, source);
            assert!(
                r.authorize(&c, Action::Read, &b, Target::Key(&k)).is_err(),
                "{source:?}"
            );
        }
    }

    #[test]
    fn rule_may_pin_sources_and_trust_domains() {
        let text = r#"
[[rules]]
callers = ["system:serviceaccount:*:etl"]
sources = ["jwt"]
bucket = "data"
prefix = "etl/"
actions = ["read"]

[[rules]]
callers = ["spiffe://*/ns/*/sa/etl"]
sources = ["mtls"]
trust_domains = ["prod.example"]
bucket = "data"
prefix = "etl/"
actions = ["read"]
"#;
        let r = Rules::parse(text, Path::new("rules.toml")).unwrap();
        let k = key("etl/x");
        let b = bucket("data");
        let allowed = |c: &Caller| r.authorize(c, Action::Read, &b, Target::Key(&k)).is_ok();
        let td = |c: Caller, domain: &str| c.with_attribute("trust_domain", domain);
        assert!(allowed(&Caller::new(
            "system:serviceaccount:a:etl",
            Source::Jwt
        )));
        assert!(!allowed(&Caller::new(
            "system:serviceaccount:a:etl",
            Source::DevToken
        )));
        assert!(allowed(&td(
            Caller::new("spiffe://prod.example/ns/a/sa/etl", Source::Mtls),
            "prod.example"
        )));
        assert!(!allowed(&td(
            Caller::new("spiffe://test.example/ns/a/sa/etl", Source::Mtls),
            "test.example"
        )));
        // Not in `sources`, though its form and trust domain fit.
        assert!(!allowed(&td(
            Caller::new("spiffe://prod.example/ns/a/sa/etl", Source::ForwardedCert),
            "prod.example"
        )));
        let bad = text.replace("[\"jwt\"]", "[\"jwt\", \"kerberos\"]");
        let err = Rules::parse(&bad, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kerberos") && err.contains("dev_token"),
            "{err}"
        );
    }

    #[test]
    fn match_everything_pattern_is_refused() {
        assert!("*".parse::<CallerPattern>().is_err());
        assert!("*/*".parse::<CallerPattern>().is_err());
    }

    #[test]
    fn a_caller_pattern_no_caller_id_could_match_is_refused() {
        for (pattern, problem) in [
            (" dev:demo", PatternProblem::OuterSpace),
            ("dev:demo ", PatternProblem::OuterSpace),
            ("dev:demo\u{3000}", PatternProblem::OuterSpace),
            ("dev:de\u{200B}mo", PatternProblem::ControlCharacter),
            ("dev:demo\u{202E}", PatternProblem::ControlCharacter),
        ] {
            assert_eq!(
                pattern.parse::<CallerPattern>(),
                Err(problem),
                "{pattern:?}"
            );
        }
        // The refusal quotes the pattern with what it hides written out, on one line.
        let text = "[[rules]]\ncallers = [\"dev:de\\u200Bmo\", \"x\\ny\"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"read\"]\n";
        let err = Rules::parse(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dev:de\\u{200b}mo"), "{err}");
        assert!(!err.contains('\u{200B}'), "{err}");
        // Ids may hold inner spaces (a JWT's `sub`), so patterns may too.
        assert!("user:Ada Lovelace".parse::<CallerPattern>().is_ok());
        let text = "[[rules]]\ncallers = [\"dev:demo \"]\nbucket = \"demo\"\nprefix = \"x/\"\nactions = [\"read\"]\n";
        let err = Rules::parse(text, Path::new("rules.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("starts or ends with a space"), "{err}");
    }

    #[test]
    fn many_stars_against_a_long_id_match_in_linear_time() {
        // Backtracking tries every way to split the id among the stars: for five
        // stars and a 400-character segment that is about 10^11 attempts (hours).
        // A linear matcher answers at once; the bound is generous, not a benchmark.
        let p: CallerPattern = "system:serviceaccount:*-*-*-*-*:*-reader".parse().unwrap();
        let id = format!("system:serviceaccount:{}:x-writer", "-".repeat(400));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(p.matches_id(&id));
        });
        let matched = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the match must finish, not backtrack for hours");
        assert!(!matched);
    }

    #[test]
    fn linear_matcher_agrees_with_the_segment_rules() {
        for (pattern, id, want) in [
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a*b*c", "acb", false),
            ("*-reader", "x-reader", true),
            ("*-reader", "-reader-reader", true),
            ("*-reader", "x-reade", false),
            ("ns/*/sa/*", "ns/a/sa/b", true),
            ("ns/*/sa/*", "ns/a/b/sa/c", false),
            ("ns/*/sa/*", "ns//sa/", true),
            ("a**b", "aXYb", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("x*", "x/y", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            let p: CallerPattern = pattern.parse().unwrap();
            assert_eq!(p.matches_id(id), want, "{pattern} vs {id}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_pattern_without_a_star_matches_as_the_segment_matcher_does(
            pattern in "[a-z:/.]{1,12}",
            id in "[a-z:/.]{0,12}",
        ) {
            proptest::prop_assume!(pattern.parse::<CallerPattern>().is_ok());
            let p: CallerPattern = pattern.parse().unwrap();
            proptest::prop_assert!(p.literal);
            proptest::prop_assert_eq!(p.matches_id(&id), glob_match(&pattern, &id));
            proptest::prop_assert!(p.matches_id(&pattern));
            proptest::prop_assert!(!p.matches_id(&pattern[..pattern.len() - 1]));
            let longer = format!("{pattern}x");
            proptest::prop_assert!(!p.matches_id(&longer));
        }
    }

    #[test]
    fn glob_star_stays_within_a_segment() {
        let p: CallerPattern = "team-*".parse().unwrap();
        assert!(p.matches_id("team-a"));
        assert!(p.matches_id("team-"));
        assert!(!p.matches_id("team-a/b"));
        assert!(!p.matches_id("xteam-a"));
    }
}
