//! A small evaluator of IAM's documented matching rules, for proving what a session
//! policy means. It is deliberately independent of `storage_grants::policy`: it parses
//! the JSON with serde_json and implements the rules from AWS's documentation, so a
//! mistake in the builder's escaping or patterns shows up here as a wrong decision.
//!
//! Rules implemented, with their sources:
//! - Evaluation: an explicit `Deny` that matches overrides any `Allow`; otherwise a
//!   matching `Allow` allows; otherwise the request is implicitly denied.
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html>
//! - `Action`: a string or array; matched case-insensitively, with `*` and `?`
//!   wildcards. <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html>
//! - `Resource`: a string or array of ARNs; `*` "represents any combination of
//!   characters" and "can expand to replace everything within a segment, including
//!   characters like a forward slash (/)", `?` "represents any single character";
//!   case-sensitive. <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html>
//!   Simplification: here `*` may also cross `:`. AWS lets a segment-final `*` expand
//!   past colons, so this is at most *more* permissive than IAM, which only makes the
//!   "denied" assertions of the property tests stronger.
//! - `Condition`: every operator must hold, every key under it must hold, and a key
//!   holds if any of its values matches. A key missing from the request context makes
//!   `StringLike` and `StringEquals` false ("If the key that you specify in a policy
//!   condition is not present in the request context, the values do not match").
//!   `StringLike` is case-sensitive with `*` and `?` wildcards; `StringEquals` is exact.
//!   Condition key names are case-insensitive.
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html>
//! - Policy variables, in `Resource` and string conditions, only under
//!   `"Version": "2012-10-17"` (without it "variables like `${aws:username}` are treated
//!   as literal strings"). `${*}`, `${?}` and `${$}` stand for a literal `*`, `?`, `$`;
//!   other variables are replaced by the context value (case-insensitive name, optional
//!   `, 'default'`), always as literal text; a variable with no value matches nothing.
//!   <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html>
//!   and its "Special characters" section (`#policy-vars-specialchars`).
//!
//! Anything else (`NotAction`, `NotResource`, `Principal`, other condition operators,
//! `...IfExists`, set operators) makes the evaluator panic: a test must never pass
//! because an element was silently ignored.

use std::collections::HashMap;

use serde_json::Value;

/// The version that understands policy variables, including the `${*}` escapes.
const VARIABLES_VERSION: &str = "2012-10-17";

/// Whether `policy_json` allows `action` on `resource` in a request whose condition
/// context is `context` (e.g. `s3:prefix`).
///
/// # Panics
/// On JSON that is not a policy, or on an element this evaluator does not implement.
pub fn allows(
    policy_json: &str,
    action: &str,
    resource: &str,
    context: &HashMap<&str, &str>,
) -> bool {
    let policy: Value = serde_json::from_str(policy_json).expect("the policy is JSON");
    let policy = policy.as_object().expect("a policy is a JSON object");
    for key in policy.keys() {
        assert!(
            matches!(key.as_str(), "Version" | "Statement" | "Id"),
            "unsupported policy element {key}"
        );
    }
    let variables = policy.get("Version").and_then(Value::as_str) == Some(VARIABLES_VERSION);
    let statements = match policy.get("Statement").expect("a policy has a Statement") {
        Value::Array(items) => items.iter().collect::<Vec<_>>(),
        single @ Value::Object(_) => vec![single],
        other => panic!("Statement must be an object or array, not {other}"),
    };

    let mut allowed = false;
    for statement in statements {
        let statement = statement.as_object().expect("a statement is an object");
        for key in statement.keys() {
            assert!(
                matches!(
                    key.as_str(),
                    "Sid" | "Effect" | "Action" | "Resource" | "Condition"
                ),
                "unsupported statement element {key}"
            );
        }
        let effect = statement
            .get("Effect")
            .and_then(Value::as_str)
            .expect("a statement has an Effect");
        let applies = strings(statement.get("Action").expect("Action"))
            .iter()
            .any(|pattern| action_matches(pattern, action))
            && strings(statement.get("Resource").expect("Resource"))
                .iter()
                .any(|pattern| glob_matches(pattern, resource, variables, context))
            && statement
                .get("Condition")
                .is_none_or(|condition| conditions_hold(condition, variables, context));
        match (effect, applies) {
            ("Deny", true) => return false,
            ("Allow", true) => allowed = true,
            ("Allow" | "Deny", false) => {}
            (other, _) => panic!("unknown Effect {other}"),
        }
    }
    allowed
}

/// A string, or an array of strings, as `Action`, `Resource` and condition values are.
fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().expect("array items are strings"))
            .collect(),
        other => panic!("expected a string or an array of strings, not {other}"),
    }
}

/// Actions are case-insensitive and take `*`/`?` wildcards; they never hold variables.
fn action_matches(pattern: &str, action: &str) -> bool {
    let pattern: Vec<Token> = pattern
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            '*' => Token::Any,
            '?' => Token::One,
            c => Token::Char(c),
        })
        .collect();
    let action: Vec<char> = action.to_ascii_lowercase().chars().collect();
    tokens_match(&pattern, &action)
}

fn conditions_hold(condition: &Value, variables: bool, context: &HashMap<&str, &str>) -> bool {
    let operators = condition.as_object().expect("Condition is an object");
    operators.iter().all(|(operator, keys)| {
        let keys = keys
            .as_object()
            .expect("a condition operator maps keys to values");
        keys.iter().all(|(key, values)| {
            let Some(actual) = lookup(context, key) else {
                // Absent key: the values do not match (not `...IfExists`).
                return false;
            };
            let values = strings(values);
            match operator.as_str() {
                "StringLike" => values
                    .iter()
                    .any(|pattern| glob_matches(pattern, actual, variables, context)),
                "StringEquals" => values.iter().any(|expected| {
                    // Under StringEquals `*` and `?` are plain characters.
                    compile(expected, variables, context, false)
                        .is_some_and(|tokens| tokens_match(&tokens, &chars(actual)))
                }),
                other => panic!("unsupported condition operator {other}"),
            }
        })
    })
}

/// Condition keys and variable names are case-insensitive.
fn lookup<'a>(context: &HashMap<&str, &'a str>, key: &str) -> Option<&'a str> {
    context
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .map(|(_, value)| *value)
}

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// This character, literally.
    Char(char),
    /// `*`: any run of characters, possibly empty.
    Any,
    /// `?`: exactly one character.
    One,
}

/// Resource and `StringLike` matching: case-sensitive, wildcards, and (under
/// 2012-10-17) variables.
fn glob_matches(
    pattern: &str,
    value: &str,
    variables: bool,
    context: &HashMap<&str, &str>,
) -> bool {
    compile(pattern, variables, context, true)
        .is_some_and(|tokens| tokens_match(&tokens, &chars(value)))
}

/// Compiles pattern text into tokens. `None` when a variable has no value, which makes
/// the pattern match nothing.
fn compile(
    pattern: &str,
    variables: bool,
    context: &HashMap<&str, &str>,
    wildcards: bool,
) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if variables
            && rest.starts_with("${")
            && let Some(end) = rest.find('}')
        {
            let inside = &rest[2..end];
            rest = &rest[end + 1..];
            // The three special variables are literal characters, never wildcards.
            let literal = match inside {
                "*" => "*".to_owned(),
                "?" => "?".to_owned(),
                "$" => "$".to_owned(),
                _ => resolve(inside, context)?,
            };
            tokens.extend(literal.chars().map(Token::Char));
            continue;
        }
        rest = &rest[c.len_utf8()..];
        tokens.push(match c {
            '*' if wildcards => Token::Any,
            '?' if wildcards => Token::One,
            c => Token::Char(c),
        });
    }
    Some(tokens)
}

/// The value of a variable such as `aws:username` or `aws:userid, 'anonymous'`.
fn resolve(inside: &str, context: &HashMap<&str, &str>) -> Option<String> {
    let (name, default) = match inside.split_once(", ") {
        Some((name, default)) => {
            let default = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .expect("a default value is in single quotes");
            (name, Some(default))
        }
        None => (inside, None),
    };
    lookup(context, name).or(default).map(str::to_owned)
}

/// Classic wildcard matching with backtracking to the last `*`; linear in practice.
fn tokens_match(pattern: &[Token], value: &[char]) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(Token::Any) => {
                star = Some((p, v));
                p += 1;
            }
            Some(Token::One) => {
                p += 1;
                v += 1;
            }
            Some(Token::Char(c)) if *c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((star_p, star_v)) => {
                    p = star_p + 1;
                    v = star_v + 1;
                    star = Some((star_p, star_v + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> HashMap<&'static str, &'static str> {
        HashMap::new()
    }

    fn policy(statements: &str) -> String {
        format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#)
    }

    fn allow(action: &str, resource: &str) -> String {
        format!(r#"{{"Effect":"Allow","Action":"{action}","Resource":"{resource}"}}"#)
    }

    #[test]
    fn default_is_deny() {
        assert!(!allows(
            &policy(""),
            "s3:GetObject",
            "arn:aws:s3:::demo/x",
            &none()
        ));
    }

    #[test]
    fn exact_resource_is_allowed_and_nothing_else() {
        let p = policy(&allow("s3:GetObject", "arn:aws:s3:::demo/a/x"));
        assert!(allows(&p, "s3:GetObject", "arn:aws:s3:::demo/a/x", &none()));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a/x2",
            &none()
        ));
        assert!(!allows(&p, "s3:GetObject", "arn:aws:s3:::demo/a/", &none()));
        assert!(!allows(
            &p,
            "s3:PutObject",
            "arn:aws:s3:::demo/a/x",
            &none()
        ));
    }

    #[test]
    fn a_star_in_a_resource_can_grant_too_much() {
        // The mistake this evaluator exists to catch: `demo/*` (or `demo/tenant*`)
        // opens other tenants' objects.
        let wide = policy(&allow("s3:GetObject", "arn:aws:s3:::demo/*"));
        assert!(allows(
            &wide,
            "s3:GetObject",
            "arn:aws:s3:::demo/other-tenant/secret",
            &none()
        ));
        let no_slash = policy(&allow("s3:GetObject", "arn:aws:s3:::demo/tenants/a*"));
        assert!(allows(
            &no_slash,
            "s3:GetObject",
            "arn:aws:s3:::demo/tenants/a-old/x",
            &none()
        ));
        assert!(allows(
            &no_slash,
            "s3:GetObject",
            "arn:aws:s3:::demo/tenants/ab/x",
            &none()
        ));
        let scoped = policy(&allow("s3:GetObject", "arn:aws:s3:::demo/tenants/a/*"));
        assert!(!allows(
            &scoped,
            "s3:GetObject",
            "arn:aws:s3:::demo/tenants/a-old/x",
            &none()
        ));
    }

    #[test]
    fn star_crosses_slashes_and_matches_the_empty_string() {
        let p = policy(&allow("s3:GetObject", "arn:aws:s3:::demo/a/*"));
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a/b/c/d",
            &none()
        ));
        assert!(allows(&p, "s3:GetObject", "arn:aws:s3:::demo/a/", &none()));
        assert!(!allows(&p, "s3:GetObject", "arn:aws:s3:::demo/a", &none()));
    }

    #[test]
    fn question_mark_is_exactly_one_character() {
        let p = policy(&allow("s3:GetObject", "arn:aws:s3:::demo/a?/x"));
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/ab/x",
            &none()
        ));
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/aé/x",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a/x",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/abc/x",
            &none()
        ));
    }

    #[test]
    fn resources_are_case_sensitive_and_actions_are_not() {
        let p = policy(&allow("S3:getobject", "arn:aws:s3:::demo/a/*"));
        assert!(allows(&p, "s3:GetObject", "arn:aws:s3:::demo/a/x", &none()));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/A/x",
            &none()
        ));
    }

    #[test]
    fn action_wildcards_match() {
        let p = policy(&allow("s3:Get*", "*"));
        assert!(allows(
            &p,
            "s3:GetObjectVersion",
            "arn:aws:s3:::demo/x",
            &none()
        ));
        assert!(!allows(&p, "s3:PutObject", "arn:aws:s3:::demo/x", &none()));
    }

    #[test]
    fn escapes_match_only_the_literal_character() {
        let p = policy(&allow(
            "s3:GetObject",
            "arn:aws:s3:::demo/a${*}b${?}c${$}/*",
        ));
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a*b?c$/x",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/aXXb?c$/x",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a*bZc$/x",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a*b?c/x",
            &none()
        ));
    }

    #[test]
    fn without_the_2012_version_escapes_are_not_escapes() {
        // Old or missing Version: `${*}` is the text "${", a wildcard, and "}".
        for version in [r#""Version":"2008-10-17","#, ""] {
            let p = format!(
                r#"{{{version}"Statement":[{}]}}"#,
                allow("s3:GetObject", "arn:aws:s3:::demo/a${*}/*")
            );
            assert!(
                !allows(&p, "s3:GetObject", "arn:aws:s3:::demo/a*/x", &none()),
                "{p}"
            );
            assert!(
                allows(
                    &p,
                    "s3:GetObject",
                    "arn:aws:s3:::demo/a${anything}/x",
                    &none()
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn variables_are_substituted_as_literal_text() {
        let p = policy(&allow(
            "s3:GetObject",
            "arn:aws:s3:::demo/${aws:username}/*",
        ));
        let alice = HashMap::from([("aws:username", "alice")]);
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/alice/x",
            &alice
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/bob/x",
            &alice
        ));
        // No value: matches nothing.
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/alice/x",
            &none()
        ));
        // A value with a wildcard in it is still literal.
        let star = HashMap::from([("AWS:UserName", "*")]);
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/bob/x",
            &star
        ));
        assert!(allows(&p, "s3:GetObject", "arn:aws:s3:::demo/*/x", &star));
        let with_default = policy(&allow(
            "s3:GetObject",
            "arn:aws:s3:::demo/${aws:userid, 'anon'}/*",
        ));
        assert!(allows(
            &with_default,
            "s3:GetObject",
            "arn:aws:s3:::demo/anon/x",
            &none()
        ));
    }

    #[test]
    fn explicit_deny_overrides_allow() {
        let p = policy(&format!(
            r#"{},{{"Effect":"Deny","Action":"s3:*","Resource":"arn:aws:s3:::demo/a/secret/*"}}"#,
            allow("s3:GetObject", "arn:aws:s3:::demo/a/*")
        ));
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a/public",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/a/secret/x",
            &none()
        ));
    }

    fn list_policy(condition: &str) -> String {
        policy(&format!(
            r#"{{"Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::demo"],"Condition":{condition}}}"#
        ))
    }

    #[test]
    fn string_like_needs_the_key_and_a_matching_value() {
        let p = list_policy(r#"{"StringLike":{"s3:prefix":["a/*","b/x?"]}}"#);
        let with = |prefix| HashMap::from([("s3:prefix", prefix)]);
        assert!(allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &with("a/")
        ));
        assert!(allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &with("a/deep/er")
        ));
        assert!(allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &with("b/x1")
        ));
        assert!(!allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &with("a")
        ));
        assert!(!allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &with("A/")
        ));
        assert!(!allows(&p, "s3:ListBucket", "arn:aws:s3:::demo", &with("")));
        // A key absent from the request: the condition fails.
        assert!(!allows(&p, "s3:ListBucket", "arn:aws:s3:::demo", &none()));
        // Key names are case-insensitive.
        let upper = HashMap::from([("S3:Prefix", "a/x")]);
        assert!(allows(&p, "s3:ListBucket", "arn:aws:s3:::demo", &upper));
    }

    #[test]
    fn string_equals_is_exact_and_all_keys_must_hold() {
        let p = list_policy(
            r#"{"StringEquals":{"s3:prefix":"a/*","s3:delimiter":"/"},"StringLike":{"s3:prefix":"a*"}}"#,
        );
        let ctx =
            |prefix, delimiter| HashMap::from([("s3:prefix", prefix), ("s3:delimiter", delimiter)]);
        assert!(allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &ctx("a/*", "/")
        ));
        assert!(!allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &ctx("a/x", "/")
        ));
        assert!(!allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &ctx("a/*", ",")
        ));
        let only_prefix = HashMap::from([("s3:prefix", "a/*")]);
        assert!(!allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &only_prefix
        ));
    }

    #[test]
    #[should_panic(expected = "unsupported statement element NotResource")]
    fn unsupported_elements_are_not_silently_ignored() {
        let p = policy(r#"{"Effect":"Allow","Action":"s3:*","NotResource":"arn:aws:s3:::x/*"}"#);
        allows(&p, "s3:GetObject", "arn:aws:s3:::demo/x", &none());
    }

    #[test]
    #[should_panic(expected = "unsupported condition operator StringLikeIfExists")]
    fn unsupported_operators_are_not_silently_ignored() {
        let p = list_policy(r#"{"StringLikeIfExists":{"s3:prefix":"a/*"}}"#);
        allows(
            &p,
            "s3:ListBucket",
            "arn:aws:s3:::demo",
            &HashMap::from([("s3:prefix", "a/")]),
        );
    }

    #[test]
    fn json_unicode_escapes_are_the_characters_they_name() {
        let p = policy(&allow(
            "s3:GetObject",
            r"arn:aws:s3:::demo/donn\u00e9es/\ud83d\ude00/*",
        ));
        assert!(allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/données/😀/x",
            &none()
        ));
        assert!(!allows(
            &p,
            "s3:GetObject",
            "arn:aws:s3:::demo/donnees/😀/x",
            &none()
        ));
    }
}
