//! JWTs for tests: an ES256 key that signs Kubernetes-style service-account tokens,
//! and its JWKS for the service's `[identity.jwt]`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// The issuer the tokens carry.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The audience the tokens carry.
pub const AUDIENCE: &str = "storage-grants";

/// An ES256 key that signs service-account tokens, and its JWKS.
pub struct Issuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Issuer {
    pub fn new() -> Issuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Issuer { key, rng }
    }

    pub fn jwks(&self) -> String {
        // Uncompressed point: 0x04 || x || y.
        let point = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
        .to_string()
    }

    /// A projected service-account token for `namespace`/`name`.
    pub fn token(&self, namespace: &str, name: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": [AUDIENCE], "iat": now, "nbf": now, "exp": now + 600,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": "00000000-0000-4000-8000-000000000001"},
            },
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).unwrap();
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

impl Issuer {
    /// The `[identity.jwt]` section for a JWKS written to `jwks_file`.
    pub fn config(&self, jwks_file: &std::path::Path) -> String {
        std::fs::write(jwks_file, self.jwks()).expect("write the JWKS");
        format!(
            "[identity.jwt]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{}\"\n",
            jwks_file.display()
        )
    }
}
