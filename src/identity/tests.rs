//! Source ordering, bearer-token routing and configuration validation.

use std::net::SocketAddr;

use tonic::metadata::{MetadataMap, MetadataValue};

use super::jwt::tests::{Signer, k8s_claims, token, verifier};
use super::*;

// === helpers ===

fn config(toml_text: &str) -> IdentityConfig {
    toml::from_str(toml_text).unwrap()
}

const MTLS: &str = r#"
[mtls]
ca_file = "ca.pem"
cert_file = "server.pem"
key_file = "server.key"
trust_domains = ["prod.example"]
"#;

const JWT: &str = r#"
[jwt]
issuer = "https://kubernetes.default.svc.cluster.local"
audiences = ["storage-grants"]
jwks_file = "jwks.json"
"#;

const XFCC: &str = r#"
[xfcc]
enabled = true
trusted_peers = ["127.0.0.1/32"]
trust_domains = ["cluster.local"]
"#;

const DEV: &str = r#"
dev_mode = true
[[dev_tokens]]
token = "dev-token-0123456789"
caller = "dev:demo"
"#;

/// An authenticator for `text` whose JWT source (if any) trusts the test keys.
fn authenticator(text: &str) -> Authenticator {
    let config = config(text);
    config.validate().unwrap();
    let order = config.effective_order();
    let jwt = config.jwt.as_ref().map(|_| verifier());
    Authenticator::assemble(&config, order, jwt, None)
}

/// A valid Kubernetes service-account JWT. Its `exp` is at a fixed test time, so
/// it is re-issued here valid for now.
fn valid_jwt() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = k8s_claims();
    let c = claims.as_object_mut().unwrap();
    c.insert("exp".into(), (now + 600).into());
    c.insert("iat".into(), (now - 10).into());
    c.insert("nbf".into(), (now - 10).into());
    token(
        Signer::ed(),
        &serde_json::json!({"alg": "EdDSA", "kid": "ed-1"}),
        &claims,
    )
}

fn cert_with_uris(uris: &[&str]) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.self_signed(&key).unwrap().der().clone()
}

struct Req {
    metadata: MetadataMap,
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    peer: Option<SocketAddr>,
}

impl Req {
    fn new() -> Self {
        Req {
            metadata: MetadataMap::new(),
            certs: None,
            peer: Some("127.0.0.1:40000".parse().unwrap()),
        }
    }
    fn bearer(mut self, token: &str) -> Self {
        self.metadata.append(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.metadata
            .append(name, MetadataValue::try_from(value).unwrap());
        self
    }
    fn cert(mut self, uris: &[&str]) -> Self {
        self.certs = Some(Arc::new(vec![cert_with_uris(uris)]));
        self
    }
    fn peer(mut self, addr: &str) -> Self {
        self.peer = Some(addr.parse().unwrap());
        self
    }
    fn identify(&self, a: &Authenticator) -> Result<Caller, Error> {
        a.identify(&Presented::new(
            &self.metadata,
            self.certs.clone(),
            self.peer,
        ))
    }
}

const SPIFFE: &str = "spiffe://prod.example/ns/billing/sa/reporter";
const ISTIO: &str =
    "By=spiffe://cluster.local/ns/storage/sa/sg;URI=spiffe://cluster.local/ns/web/sa/frontend";

// === ordering ===

#[test]
fn default_order_is_mtls_jwt_xfcc_dev_token_keeping_configured_ones() {
    let all = config(&format!("{DEV}{MTLS}{JWT}{XFCC}"));
    assert_eq!(
        all.effective_order(),
        [
            SourceKind::Mtls,
            SourceKind::Jwt,
            SourceKind::Xfcc,
            SourceKind::DevToken
        ]
    );
    assert_eq!(config(JWT).effective_order(), [SourceKind::Jwt]);
    assert!(config("").effective_order().is_empty());
    // dev_mode without tokens, or tokens without dev_mode, is no source.
    assert!(config("dev_mode = true").effective_order().is_empty());
}

#[test]
fn first_source_with_a_credential_decides() {
    let a = authenticator(&format!("{MTLS}{JWT}"));
    let caller = Req::new()
        .cert(&[SPIFFE])
        .bearer(&valid_jwt())
        .identify(&a)
        .unwrap();
    assert_eq!(caller.source(), Source::Mtls);
    assert_eq!(caller.id(), SPIFFE);
    assert_eq!(caller.attribute(attr::TRUST_DOMAIN), Some("prod.example"));
    assert_eq!(caller.attribute(attr::NAMESPACE), Some("billing"));
    assert_eq!(caller.attribute(attr::SERVICE_ACCOUNT), Some("reporter"));

    let a = authenticator(&format!("order = [\"jwt\", \"mtls\"]\n{MTLS}{JWT}"));
    let caller = Req::new()
        .cert(&[SPIFFE])
        .bearer(&valid_jwt())
        .identify(&a)
        .unwrap();
    assert_eq!(caller.source(), Source::Jwt);
}

#[test]
fn source_without_a_credential_is_skipped() {
    let a = authenticator(&format!("{MTLS}{JWT}"));
    let caller = Req::new().bearer(&valid_jwt()).identify(&a).unwrap();
    assert_eq!(caller.source(), Source::Jwt);
    assert_eq!(caller.id(), "system:serviceaccount:billing:reporter");
}

#[test]
fn present_but_invalid_credential_is_refused_not_skipped() {
    let a = authenticator(&format!("{MTLS}{JWT}"));
    // A certificate without a URI SAN, plus a perfectly good JWT: still refused.
    let err = Req::new()
        .cert(&[])
        .bearer(&valid_jwt())
        .identify(&a)
        .unwrap_err();
    assert_eq!(err, Error::ClientCertificate(SanError::NoUri));
    // A bad JWT before a trusted XFCC header: refused.
    let a = authenticator(&format!("{JWT}{XFCC}"));
    let err = Req::new()
        .bearer("a.b.c")
        .header(xfcc::HEADER, ISTIO)
        .identify(&a)
        .unwrap_err();
    assert!(
        matches!(err, Error::Jwt(jwt::Error::Malformed(_))),
        "{err:?}"
    );
}

#[test]
fn client_certificate_checks_are_reported() {
    let a = authenticator(MTLS);
    let refuse = |uris: &[&str]| Req::new().cert(uris).identify(&a).unwrap_err();
    assert_eq!(
        refuse(&[SPIFFE, "spiffe://prod.example/ns/x/sa/y"]),
        Error::ClientCertificate(SanError::SeveralUris(2))
    );
    assert!(matches!(
        refuse(&["https://reporter.prod.example"]),
        Error::ClientCertificate(SanError::NotSpiffe(_))
    ));
    let err = refuse(&["spiffe://staging.example/ns/billing/sa/reporter"]);
    assert_eq!(
        err,
        Error::ClientCertificate(SanError::UntrustedDomain("staging.example".into()))
    );
    assert!(
        err.to_string()
            .starts_with("client certificate refused: trust domain 'staging.example'")
    );
}

#[test]
fn a_connections_caller_is_read_from_its_certificate_once() {
    let a = authenticator(MTLS);
    let other = "spiffe://prod.example/ns/payroll/sa/reporter";
    let on = |connection: &mtls::ConnectionCaller, uris: &[&str]| {
        let request = Req::new().cert(uris);
        a.identify(&Presented {
            connection: Some(connection),
            ..Presented::new(&request.metadata, request.certs.clone(), request.peer)
        })
    };
    let first = mtls::ConnectionCaller::default();
    assert_eq!(on(&first, &[SPIFFE]).unwrap().id(), SPIFFE);
    // The server never changes a connection's certificate; were it to, the connection
    // would keep the caller its first call was answered as.
    assert_eq!(on(&first, &[other]).unwrap().id(), SPIFFE);
    // Another connection reads its own.
    assert_eq!(
        on(&mtls::ConnectionCaller::default(), &[other])
            .unwrap()
            .id(),
        other
    );
    // A refusal is answered (and logged) on every call of its connection.
    let refused = mtls::ConnectionCaller::default();
    for _ in 0..2 {
        assert!(matches!(
            on(&refused, &["https://reporter.prod.example"]),
            Err(Error::ClientCertificate(SanError::NotSpiffe(_)))
        ));
    }
}

#[test]
fn xfcc_is_used_only_from_trusted_peers() {
    let a = authenticator(XFCC);
    let caller = Req::new().header(xfcc::HEADER, ISTIO).identify(&a).unwrap();
    assert_eq!(caller.source(), Source::ForwardedCert);
    assert_eq!(caller.id(), "spiffe://cluster.local/ns/web/sa/frontend");

    let err = Req::new()
        .peer("192.168.1.20:5000")
        .header(xfcc::HEADER, ISTIO)
        .identify(&a)
        .unwrap_err();
    assert!(matches!(err, Error::NoCredentials(_)), "{err:?}");

    let err = Req::new().header(xfcc::HEADER, ISTIO);
    let err = Req { peer: None, ..err }.identify(&a).unwrap_err();
    assert!(matches!(err, Error::NoCredentials(_)), "{err:?}");
}

#[test]
fn xfcc_is_ignored_when_disabled() {
    let a = authenticator(JWT);
    let err = Req::new()
        .header(xfcc::HEADER, ISTIO)
        .identify(&a)
        .unwrap_err();
    assert!(matches!(err, Error::NoCredentials(_)));
    // …and does not hide a JWT.
    let caller = Req::new()
        .header(xfcc::HEADER, ISTIO)
        .bearer(&valid_jwt())
        .identify(&a)
        .unwrap();
    assert_eq!(caller.source(), Source::Jwt);
}

#[test]
fn several_xfcc_lines_read_as_one_value() {
    let a = authenticator(XFCC);
    let caller = Req::new()
        .header(xfcc::HEADER, "URI=spiffe://cluster.local/ns/admin/sa/root")
        .header(xfcc::HEADER, ISTIO)
        .identify(&a)
        .unwrap();
    assert_eq!(caller.id(), "spiffe://cluster.local/ns/web/sa/frontend");
}

// === bearer routing ===

#[test]
fn two_dot_tokens_go_to_jwt_others_to_dev_tokens() {
    let a = authenticator(&format!("{DEV}{JWT}"));
    assert_eq!(
        Req::new()
            .bearer(&valid_jwt())
            .identify(&a)
            .unwrap()
            .source(),
        Source::Jwt
    );
    assert_eq!(
        Req::new()
            .bearer("dev-token-0123456789")
            .identify(&a)
            .unwrap()
            .id(),
        "dev:demo"
    );
    assert!(matches!(
        Req::new().bearer("x.y.z").identify(&a),
        Err(Error::Jwt(jwt::Error::Malformed(_)))
    ));
    assert_eq!(
        Req::new().bearer("dev-token-wrong-0123").identify(&a),
        Err(Error::UnknownToken)
    );
}

#[test]
fn with_only_jwt_every_bearer_token_is_a_jwt() {
    let a = authenticator(JWT);
    assert!(matches!(
        Req::new().bearer("dev-token-0123456789").identify(&a),
        Err(Error::Jwt(jwt::Error::Malformed(_)))
    ));
}

#[test]
fn with_only_dev_tokens_a_jwt_is_just_an_unknown_token() {
    let a = authenticator(DEV);
    assert_eq!(
        Req::new().bearer(&valid_jwt()).identify(&a),
        Err(Error::UnknownToken)
    );
}

#[test]
fn malformed_or_repeated_authorization_is_refused() {
    let a = authenticator(&format!("{DEV}{JWT}"));
    let basic = Req::new().header("authorization", "Basic YTpi");
    assert_eq!(basic.identify(&a), Err(Error::Malformed));
    let twice = Req::new()
        .bearer("dev-token-0123456789")
        .bearer(&valid_jwt());
    assert_eq!(twice.identify(&a), Err(Error::Malformed));
}

/// A bare token (the HTTP gateway's) is read exactly as the same token in
/// `authorization: Bearer <token>`.
#[test]
fn a_bare_token_reads_as_its_authorization_header() {
    let a = authenticator(&format!("{DEV}{JWT}"));
    let jwt = valid_jwt();
    for token in [
        "dev-token-0123456789",
        "  dev-token-0123456789 ",
        "dev-token-wrong-0123",
        jwt.as_str(),
        "x.y.z",
        "",
        "   ",
        "dev-token-01234\u{1}56789",
        "dev-token-é123456789",
        "\u{3000}dev-token-0123456789",
        "dev-token-0123456789\u{a0}",
        "dev token",
    ] {
        let as_header = match http::HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(value) => {
                let mut headers = http::HeaderMap::new();
                headers.insert(http::header::AUTHORIZATION, value);
                a.authenticate(&MetadataMap::from_headers(headers))
            }
            Err(_) => Err(Error::Malformed),
        };
        assert_eq!(a.authenticate_token(token), as_header, "{token:?}");
    }
}

#[test]
fn no_credentials_says_what_is_accepted() {
    let a = authenticator(&format!("{MTLS}{JWT}"));
    let err = Req::new().identify(&a).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no credentials: connect with a client certificate carrying your SPIFFE ID, \
         or send 'authorization: Bearer <JWT>' metadata"
    );
    let none = authenticator("");
    assert!(
        Req::new()
            .identify(&none)
            .unwrap_err()
            .to_string()
            .contains("no identity source")
    );
}

#[test]
fn an_authorization_value_that_is_not_header_text_is_malformed() {
    // Bytes a header may carry but text may not: UTF-8 (é, a wide space), Latin-1.
    for value in [
        &b"Bearer dev-token-\xc3\xa9123456789"[..],
        b"Bearer \xe3\x80\x80dev-token-0123456789",
        b"Bearer dev-token-\xe9123456789",
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_bytes(value).unwrap(),
        );
        let metadata = MetadataMap::from_headers(headers);
        assert!(
            matches!(bearer(&metadata), Bearer::Malformed),
            "{}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn bearer_scheme_is_case_insensitive_and_required() {
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("bearer  abc "), Some("abc"));
    assert_eq!(bearer_token("Basic abc"), None);
    assert_eq!(bearer_token("Bearer "), None);
    assert_eq!(bearer_token("abc"), None);
}

#[test]
fn authenticate_reads_a_real_tonic_request() {
    let a = authenticator(XFCC);
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert(xfcc::HEADER, MetadataValue::try_from(ISTIO).unwrap());
    request
        .extensions_mut()
        .insert(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("127.0.0.1:1234".parse().unwrap()),
        });
    assert_eq!(
        a.authenticate(&request).unwrap().id(),
        "spiffe://cluster.local/ns/web/sa/frontend"
    );
}

// === configuration ===

#[test]
fn complete_example_config_parses_and_validates() {
    let c = config(
        r#"
order = ["mtls", "jwt", "xfcc"]
dev_mode = false

[mtls]
ca_file = "/etc/storage-grants/tls/ca.pem"
cert_file = "/etc/storage-grants/tls/tls.crt"
key_file = "/etc/storage-grants/tls/tls.key"
trust_domains = ["prod.example"]
required = false
handshake_timeout = "10s"

[jwt]
issuer = "https://kubernetes.default.svc.cluster.local"
audiences = ["storage-grants"]
jwks_url = "https://kubernetes.default.svc/openid/v1/jwks"
jwks_ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
jwks_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
leeway = "30s"
refresh_interval = "5m"
min_refresh_interval = "30s"
fetch_timeout = "5s"
caller_claim = "sub"

[xfcc]
enabled = true
trusted_peers = ["127.0.0.1/32", "::1/128"]
trust_domains = ["cluster.local"]
"#,
    );
    c.validate().unwrap();
    let m = c.mtls.as_ref().unwrap();
    assert!(!m.required);
    let j = c.jwt.as_ref().unwrap();
    assert_eq!(j.refresh_interval, std::time::Duration::from_secs(300));
}

#[test]
fn defaults_are_safe() {
    let c = config(&format!("{MTLS}{JWT}"));
    assert!(c.mtls.as_ref().unwrap().required);
    let j = c.jwt.as_ref().unwrap();
    assert_eq!(j.leeway, std::time::Duration::from_secs(30));
    assert_eq!(j.caller_claim, "sub");
    assert!(!c.xfcc.enabled);
}

fn invalid(text: &str) -> ConfigError {
    config(text).validate().unwrap_err()
}

#[test]
fn dev_tokens_need_dev_mode() {
    let e = invalid("[[dev_tokens]]\ntoken = \"0123456789abcdef\"\ncaller = \"dev:a\"\n");
    assert_eq!(e.field, "identity.dev_tokens");
    assert!(e.message.contains("dev_mode"));
    let e = invalid("dev_mode = true\n[[dev_tokens]]\ntoken = \"short\"\ncaller = \"dev:a\"\n");
    assert_eq!(e.field, "identity.dev_tokens.token");
    let e = invalid(
        "dev_mode = true\n[[dev_tokens]]\ntoken = \"0123456789abcdef \"\ncaller = \"dev:a\"\n",
    );
    assert_eq!(e.field, "identity.dev_tokens.token");
    assert!(e.message.contains("whitespace"), "{}", e.message);
}

#[test]
fn a_dev_token_listed_twice_is_refused_without_being_shown() {
    let token = "0123456789abcdef-secret";
    let e = invalid(&format!(
        "dev_mode = true\n[[dev_tokens]]\ntoken = \"{token}\"\ncaller = \"dev:a\"\n\
         [[dev_tokens]]\ntoken = \"another-token-0123\"\ncaller = \"dev:b\"\n\
         [[dev_tokens]]\ntoken = \"{token}\"\ncaller = \"dev:c\"\n"
    ));
    assert_eq!(e.field, "identity.dev_tokens.token");
    assert!(e.message.contains("entries 1 and 3"), "{}", e.message);
    assert!(e.message.contains("'dev:a' and 'dev:c'"), "{}", e.message);
    assert!(!e.message.contains(token), "{}", e.message);
}

#[test]
fn development_callers_are_dev_ids_which_no_other_source_may_carry() {
    for caller in [
        "alice",
        "system:serviceaccount:a:b",
        "spiffe://x/y",
        "dev:",
        "DEV:a",
        // TOML's escape: the caller holds a bidi override.
        "dev:a\\u202Eb",
        "dev:a ",
    ] {
        let e = invalid(&format!(
            "dev_mode = true\n[[dev_tokens]]\ntoken = \"0123456789abcdef\"\ncaller = \"{caller}\"\n"
        ));
        assert_eq!(e.field, "identity.dev_tokens.caller", "{caller}");
        assert!(e.message.contains("dev:alice"), "{e}");
    }
    config(
        "dev_mode = true\n[[dev_tokens]]\ntoken = \"0123456789abcdef\"\ncaller = \"dev:alice\"\n",
    )
    .validate()
    .expect("a dev: caller");
}

#[test]
fn order_must_name_exactly_the_configured_sources() {
    let e = invalid(&format!("order = [\"jwt\", \"mtls\"]\n{JWT}"));
    assert_eq!(e.field, "identity.order");
    assert!(e.message.contains("'mtls', which is not configured"), "{e}");
    let e = invalid(&format!("order = [\"jwt\", \"jwt\"]\n{JWT}"));
    assert!(e.message.contains("twice"), "{e}");
    let e = invalid(&format!("order = [\"jwt\"]\n{JWT}{MTLS}"));
    assert!(
        e.message
            .contains("'mtls' is configured but not in identity.order"),
        "{e}"
    );
    assert!(toml::from_str::<IdentityConfig>("order = [\"ldap\"]").is_err());
}

#[test]
fn jwt_needs_exactly_one_key_source_and_a_safe_url() {
    let base = "[jwt]\nissuer = \"i\"\naudiences = [\"a\"]\n";
    assert_eq!(invalid(base).field, "identity.jwt");
    let both = format!("{base}jwks_file = \"f\"\njwks_url = \"https://x/jwks\"\n");
    assert_eq!(invalid(&both).field, "identity.jwt");
    let http = format!("{base}jwks_url = \"http://issuer.example/jwks\"\n");
    let e = invalid(&http);
    assert_eq!(e.field, "identity.jwt.jwks_url");
    assert!(e.message.contains("use https"), "{e}");
    for ok in [
        "https://issuer.example/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost/jwks",
    ] {
        config(&format!("{base}jwks_url = \"{ok}\"\n"))
            .validate()
            .unwrap();
    }
    let no_aud = "[jwt]\nissuer = \"i\"\naudiences = []\njwks_file = \"f\"\n";
    assert_eq!(invalid(no_aud).field, "identity.jwt.audiences");
    assert!(toml::from_str::<IdentityConfig>("[jwt]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_file = \"f\"\nalgorithms = [\"HS256\"]\n").is_err());
}

#[test]
fn trust_domains_must_be_valid_and_present() {
    let e = invalid(
        "[mtls]\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\ntrust_domains = []\n",
    );
    assert_eq!(e.field, "identity.mtls.trust_domains");
    let e = invalid(
        "[mtls]\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\ntrust_domains = [\"Prod.Example\"]\n",
    );
    assert_eq!(e.field, "identity.mtls.trust_domains");
    let e = invalid("[xfcc]\nenabled = true\ntrust_domains = [\"cluster.local\"]\n");
    assert_eq!(e.field, "identity.xfcc.trusted_peers");
    assert!(toml::from_str::<IdentityConfig>("[xfcc]\ntrusted_peers = [\"0.0.0.0/0\"]\n").is_err());
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let mut c = config(&format!("{MTLS}{JWT}"));
    c.resolve_paths(Path::new("/etc/sg"));
    assert_eq!(
        c.mtls.as_ref().unwrap().ca_file,
        Path::new("/etc/sg/ca.pem")
    );
    assert_eq!(
        c.jwt.as_ref().unwrap().jwks_file.as_deref(),
        Some(Path::new("/etc/sg/jwks.json"))
    );
}

#[tokio::test]
async fn start_fails_on_an_unreadable_jwks_file() {
    let c = config(JWT);
    let err = Authenticator::start(&c).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("identity.jwt.jwks_file: cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn start_loads_a_jwks_file_and_verifies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let jwks = serde_json::json!({"keys": [Signer::ed().jwk("ed-1")]});
    std::fs::write(&path, jwks.to_string()).unwrap();
    let mut c = config(JWT);
    c.jwt.as_mut().unwrap().jwks_file = Some(path);
    let a = Authenticator::start(&c).await.unwrap();
    let caller = Req::new().bearer(&valid_jwt()).identify(&a).unwrap();
    assert_eq!(caller.attribute(attr::NAMESPACE), Some("billing"));
}

#[tokio::test]
async fn rotated_key_is_refused_once_then_accepted_after_the_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let write = |kids: &[(&str, &Signer)]| {
        let keys: Vec<_> = kids.iter().map(|(kid, s)| s.jwk(kid)).collect();
        std::fs::write(&path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    };
    write(&[("ec-old", Signer::ec())]);
    let mut c = config(JWT);
    let j = c.jwt.as_mut().unwrap();
    j.jwks_file = Some(path.clone());
    j.min_refresh_interval = std::time::Duration::from_secs(1);
    let a = Authenticator::start(&c).await.unwrap();

    // The issuer starts signing with a new key, published at the same moment.
    write(&[("ec-old", Signer::ec()), ("ed-new", Signer::ed())]);
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            valid_jwt().split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    claims["sub"] = "system:serviceaccount:billing:reporter".into();
    let t = token(
        Signer::ed(),
        &serde_json::json!({"alg": "EdDSA", "kid": "ed-new"}),
        &claims,
    );

    let err = Req::new().bearer(&t).identify(&a).unwrap_err();
    assert_eq!(err, Error::Jwt(jwt::Error::UnknownKey { refreshing: true }));
    assert!(err.to_string().contains("retry"));
    // The refusal woke the refresher; the retry moments later succeeds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Req::new().bearer(&t).identify(&a) {
            Ok(caller) => {
                assert_eq!(caller.source(), Source::Jwt);
                break;
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Jwt(jwt::Error::UnknownKey { .. })),
                    "{e:?}"
                );
                assert!(std::time::Instant::now() < deadline, "key never loaded");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
