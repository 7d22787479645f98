//! `jwt`, `jwks` and `xfcc`: who a caller is, from what it presents.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

use super::{bit, flags_and_text, lines};
use crate::caller::{self, Caller, Source, attr};
use crate::identity::jwks::{Algorithm, KeySet, KeyStore, Lookup};
use crate::identity::jwt::{JwtConfig, JwtVerifier};
use crate::identity::spiffe::SpiffeId;
use crate::identity::xfcc::{self, Cidr, Xfcc, XfccConfig};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "storage-grants";
/// The verifiers' clock: 2025-06-15T15:06:40Z.
const NOW: f64 = 1_750_000_000.0;
const LEEWAY: Duration = Duration::from_secs(30);
const TRUST_DOMAIN: &str = "cluster.local";

// === jwt ===

/// Verifies a bearer JWT: the input itself, or one made of the input's header and
/// claims and signed with a key the verifier trusts (so the claim checks are reached,
/// which no random signature would).
///
/// Flags: bit 0 signs (lines: header JSON, claims JSON) rather than taking the rest
/// as the token; bit 1 signs with the second trusted key; bit 2 takes the caller id
/// from `email` rather than `sub`.
///
/// Invariants: an accepted token names the one trusted algorithm and no `crit`
/// header; its claims, read here, have the issuer, an accepted audience and numeric
/// times that hold now; the caller id is that claim, clean (non-empty, at most 1 KiB,
/// no control character) and never in SPIFFE form; namespace and service account
/// are plain names fit for one path segment. A refusal is short and never quotes the
/// token.
pub fn jwt(data: &[u8]) {
    let (flags, text) = flags_and_text(data);
    let fixture = fixture();
    let token = if bit(flags, 0) {
        let [header, claims] = lines::<2>(&text);
        let key = if bit(flags, 1) {
            &fixture.keys[1]
        } else {
            &fixture.keys[0]
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()));
        format!("{signed}.{signature}")
    } else {
        text
    };
    let (verifier, claim) = if bit(flags, 2) {
        (&fixture.by_email, "email")
    } else {
        (&fixture.by_subject, "sub")
    };
    match verifier.verify_at(&token, NOW) {
        Ok(caller) => accepted(&caller, &token, claim),
        Err(refusal) => {
            let message = refusal.error.to_string();
            assert!(message.len() <= 512, "{message}");
            if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() >= 16) {
                assert!(!message.contains(signature), "{message}");
            }
        }
    }
}

/// What must hold of a token the verifier accepted for `caller`.
fn accepted(caller: &Caller, token: &str, claim: &str) {
    assert_eq!(caller.source(), Source::Jwt);
    let id = caller.id();
    assert!(!id.is_empty() && id.len() <= 1024 && !id.chars().any(char::is_control));
    assert!(
        !caller::has_spiffe_form(id),
        "a token never names a workload"
    );
    assert_eq!(caller.attribute(attr::ISSUER), Some(ISSUER));

    let mut parts = token.split('.');
    let mut json = || -> Value {
        let part = URL_SAFE_NO_PAD.decode(parts.next().expect("three parts"));
        serde_json::from_slice(&part.expect("base64url")).expect("JSON")
    };
    let (header, claims) = (json(), json());
    assert_eq!(header["alg"], "EdDSA");
    assert!(header.get("crit").is_none());
    assert_eq!(claims[claim], id);
    assert_eq!(claims["iss"], ISSUER);
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == AUDIENCE,
        Value::Array(list) => list.iter().all(Value::is_string) && list.contains(&json!(AUDIENCE)),
        _ => false,
    };
    assert!(audience_ok, "an accepted audience");
    let time = |name: &str| claims.get(name).map(|t| t.as_f64().expect("a number"));
    let leeway = LEEWAY.as_secs_f64();
    assert!(NOW < time("exp").expect("an expiry") + leeway);
    assert!(time("nbf").is_none_or(|nbf| nbf <= NOW + leeway));
    assert!(time("iat").is_none_or(|iat| iat <= NOW + leeway));
    if let Some(sub) = caller.attribute(attr::SUBJECT) {
        assert_eq!(claims["sub"], sub);
    }
    for name in [attr::NAMESPACE, attr::SERVICE_ACCOUNT] {
        if let Some(value) = caller.attribute(name) {
            assert!(
                !value.is_empty()
                    && value.len() <= 253
                    && value.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"-.".contains(&b))
                    && value != "."
                    && value != "..",
                "{name} {value:?} is not a plain segment"
            );
        }
    }
}

/// Two trusted Ed25519 keys (`ed-1`, `ed-2`) and a verifier per caller claim.
struct Fixture {
    keys: [Ed25519KeyPair; 2],
    by_subject: JwtVerifier,
    by_email: JwtVerifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = [1u8, 2]
            .map(|seed| Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a 32-byte seed"));
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(keys[0].public_key().as_ref())},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-2", "alg": "EdDSA",
             "x": URL_SAFE_NO_PAD.encode(keys[1].public_key().as_ref())},
        ]});
        let store = Arc::new(KeyStore::fixed(
            KeySet::parse(jwks.to_string().as_bytes()).expect("a valid JWKS"),
        ));
        let verifier = |claim: &str| {
            let config = JwtConfig {
                issuer: ISSUER.into(),
                audiences: vec![AUDIENCE.into(), "other-audience".into()],
                jwks_file: None,
                jwks_url: None,
                jwks_ca_file: None,
                jwks_token_file: None,
                leeway: LEEWAY,
                refresh_interval: Duration::from_secs(300),
                min_refresh_interval: Duration::from_secs(30),
                fetch_timeout: Duration::from_secs(5),
                caller_claim: claim.into(),
            };
            JwtVerifier::new(&config, store.clone())
        };
        Fixture {
            by_subject: verifier("sub"),
            by_email: verifier("email"),
            keys,
        }
    })
}

// === jwks ===

/// Parses the input as a JWKS document and looks keys up in it.
///
/// Invariants: an accepted set holds at least one key, and no more than the document
/// has asymmetric signing keys (never a symmetric one); a lookup finds only a key of
/// the algorithm asked for; an unknown `kid` finds nothing.
pub fn jwks(data: &[u8]) {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    assert!(!set.is_empty());
    let doc: Value = serde_json::from_slice(data).expect("an accepted JWKS is JSON");
    let keys = doc["keys"].as_array().expect("a keys array");
    let signing = keys
        .iter()
        .filter(|k| {
            matches!(k["kty"].as_str(), Some("RSA" | "EC" | "OKP"))
                && k.get("use").is_none_or(|u| u == "sig")
        })
        .count();
    assert!(
        set.len() <= signing,
        "only asymmetric signing keys are kept"
    );
    let kids: Vec<&str> = keys.iter().filter_map(|k| k["kid"].as_str()).collect();
    let unknown = (0..)
        .map(|n| format!("unknown-{n}"))
        .find(|k| !kids.contains(&k.as_str()))
        .expect("some name is free");
    for algorithm in [Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa] {
        for kid in kids.iter().take(8).copied().map(Some).chain([None]) {
            if let Lookup::Found(key) = set.find(kid, algorithm) {
                assert_eq!(key.algorithm(), algorithm);
                // Exercises the key material; the outcome is the key's business.
                key.verify(b"header.payload", &data[..data.len().min(64)]);
            }
        }
        assert!(matches!(
            set.find(Some(&unknown), algorithm),
            Lookup::UnknownKid
        ));
    }
}

// === xfcc ===

/// Parses the input as an `x-forwarded-client-cert` value, identifies its caller as
/// a trusting service would, and parses each line as a CIDR block.
///
/// Invariants: a parsed value has at least one element, and parses the same with a
/// trailing separator (when it has none); an element put in front (anyone can send
/// one) changes neither the elements after it nor the caller; the caller is the last
/// element's single URI, a SPIFFE ID in the trusted domain, with plain namespace and
/// service account; a CIDR block prints back to itself and holds its own address.
pub fn xfcc(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let source = xfcc_source();
    let caller = source.caller(&text);
    if let Ok(elements) = xfcc::parse(&text) {
        assert!(!elements.is_empty());
        if text.len() < 60_000 {
            // One trailing separator is tolerated (a second is an empty pair).
            if !text.ends_with([',', ';']) {
                assert_eq!(
                    xfcc::parse(&format!("{text},")).as_ref(),
                    Ok(&elements),
                    "a trailing separator is tolerated"
                );
            }
            let forged = format!(
                "By=spiffe://{TRUST_DOMAIN}/ns/a/sa/b;URI=spiffe://{TRUST_DOMAIN}/ns/admin/sa/root,{text}"
            );
            let with_forged = xfcc::parse(&forged).expect("one more element parses");
            assert_eq!(with_forged[1..], elements[..]);
            assert_eq!(
                source.caller(&forged),
                caller,
                "only the last element counts"
            );
        }
        if let Ok(caller) = &caller {
            let uris: Vec<&str> = elements.last().expect("non-empty").values("uri").collect();
            assert_eq!(uris, [caller.id()]);
        }
    }
    if let Ok(caller) = &caller {
        assert_eq!(caller.source(), Source::ForwardedCert);
        let id: SpiffeId = caller.id().parse().expect("a SPIFFE ID");
        assert_eq!(id.trust_domain(), TRUST_DOMAIN);
        assert_eq!(caller.attribute(attr::TRUST_DOMAIN), Some(TRUST_DOMAIN));
        for name in [attr::NAMESPACE, attr::SERVICE_ACCOUNT] {
            if let Some(value) = caller.attribute(name) {
                assert!(
                    !value.is_empty() && !value.contains('/') && value != "." && value != "..",
                    "{name} {value:?} is not one segment"
                );
            }
        }
    }
    for line in text.lines().take(4) {
        cidr(line);
    }
}

fn xfcc_source() -> &'static Xfcc {
    static SOURCE: OnceLock<Xfcc> = OnceLock::new();
    SOURCE.get_or_init(|| {
        Xfcc::new(&XfccConfig {
            enabled: true,
            trusted_peers: vec!["127.0.0.1/32".parse().expect("a valid block")],
            trust_domains: vec![TRUST_DOMAIN.into()],
        })
    })
}

/// A parsed CIDR block prints back to itself and holds its own network address.
fn cidr(line: &str) {
    let Ok(block) = line.parse::<Cidr>() else {
        return;
    };
    let printed = block.to_string();
    assert_eq!(printed.parse::<Cidr>().as_ref(), Ok(&block));
    let (address, _) = printed.split_once('/').expect("ADDRESS/LENGTH");
    let address: IpAddr = address.parse().expect("an address");
    assert!(block.contains(address));
    if let IpAddr::V4(v4) = address {
        assert!(block.contains(IpAddr::V6(v4.to_ipv6_mapped())));
    }
}
