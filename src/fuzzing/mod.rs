//! Entry points for the coverage-guided fuzz targets in `fuzz/`, one per area that
//! reads untrusted or operator-written input.
//!
//! Each `pub fn` takes the fuzzer's bytes, drives the real code (the modules it
//! reaches are crate-private, so the targets go through here rather than making them
//! `pub`) and asserts what must hold for every input. A panic is a finding: a crash,
//! or an input for which a security invariant fails. The checks are written from the
//! outside where that is cheap, as the other side would see it: a presigned URL is
//! verified the way S3 verifies it, a POST form against its own policy, a session
//! policy by reading its JSON back.
//!
//! | target           | drives                                           | input                          |
//! |------------------|--------------------------------------------------|--------------------------------|
//! | `scope`          | bucket, key, prefix and free-text parsing        | text                           |
//! | `presign`        | URI encoding, canonical request, presigned URLs  | flags byte, then lines         |
//! | `post_policy`    | the POST policy and its form                     | flags byte, then lines         |
//! | `session_policy` | the STS session policy builder                   | flags byte, then lines         |
//! | `rules`          | the rules file parser and rule matching          | TOML, with `#? ` probe lines   |
//! | `jwt`            | bearer JWT verification                          | mode byte, then token or JSON  |
//! | `jwks`           | JWKS parsing and key lookup                      | JSON                           |
//! | `xfcc`           | the `x-forwarded-client-cert` header             | text                           |
//! | `request`        | protobuf decoding and request validation         | message byte, then protobuf    |
//!
//! Compiled with the `fuzzing` feature (for `fuzz/`) and in unit tests, which replay
//! every seed under `fuzz/corpus/<target>/`: a plain `cargo test` keeps the seeds and
//! the invariants honest without a fuzzing toolchain.

mod identity;
mod policy;
mod request;
mod rules;
mod scope;
mod sign;

pub use identity::{jwks, jwt, xfcc};
pub use policy::session_policy;
pub use request::request;
pub use rules::rules;
pub use scope::scope;
pub use sign::{post_policy, presign};

/// An entry point: the fuzzer's bytes in, a panic out when an invariant fails.
pub type Target = fn(&[u8]);

/// Every target, by the name of its directory under `fuzz/corpus/` and of its
/// `fuzz/fuzz_targets/` file.
pub const TARGETS: [(&str, Target); 9] = [
    ("scope", scope),
    ("presign", presign),
    ("post_policy", post_policy),
    ("session_policy", session_policy),
    ("rules", rules),
    ("jwt", jwt),
    ("jwks", jwks),
    ("xfcc", xfcc),
    ("request", request),
];

/// The first byte (flags or a selector; 0 when there is none) and the rest as text,
/// invalid UTF-8 replaced: the fuzzer mutates bytes, the code under test takes `&str`.
fn flags_and_text(data: &[u8]) -> (u8, String) {
    let flags = data.first().copied().unwrap_or(0);
    let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default()).into_owned();
    (flags, text)
}

/// The first `N - 1` lines of `text` and the rest (newlines included) as the last;
/// missing lines are empty.
fn lines<const N: usize>(text: &str) -> [&str; N] {
    let mut parts = text.splitn(N, '\n');
    std::array::from_fn(|_| parts.next().unwrap_or(""))
}

/// Whether bit `n` of `flags` is set.
fn bit(flags: u8, n: u8) -> bool {
    flags & (1 << n) != 0
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::TARGETS;

    /// Feeds every committed seed of every target to its entry point.
    #[test]
    fn every_seed_holds_every_invariant() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (target, run) in TARGETS {
            let dir = root.join(target);
            let mut seeds: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.expect("a readable directory entry").path())
                .collect();
            seeds.sort();
            assert!(!seeds.is_empty(), "no seed for {target}");
            for seed in seeds {
                let data = std::fs::read(&seed).expect("a readable seed");
                let outcome = std::panic::catch_unwind(|| run(&data));
                assert!(outcome.is_ok(), "{} fails", seed.display());
            }
        }
    }

    /// Inputs no seed has: empty, one byte, invalid UTF-8.
    #[test]
    fn degenerate_inputs_hold() {
        for (_, run) in TARGETS {
            for data in [&b""[..], b"\0", b"\xff", b"\x07\xff\xfe\n\n\n"] {
                run(data);
            }
        }
    }

    #[test]
    fn lines_fill_missing_fields_and_keep_the_rest_whole() {
        assert_eq!(super::lines::<3>("a\nb\nc\nd"), ["a", "b", "c\nd"]);
        assert_eq!(super::lines::<3>("a"), ["a", "", ""]);
    }
}
