//! Who may be granted what, cell by cell: several identities (Kubernetes
//! service-account JWTs from two tenants, a second workload of one tenant, a
//! development token) × targets × every RPC, against the running service with real
//! JWT verification (ES256 keys generated here, served from a JWKS file) and moto as
//! STS and store. The expected outcome of every cell is written out by hand below,
//! not derived from the rules code.

use crate::support;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use storage_grants::proto::{Access, AssumeScopedRequest, GrantReadRequest, GrantWriteRequest};
use support::jwt::{AUDIENCE, ISSUER, Issuer};
use support::{Moto, Service, Setup, TOKEN, authed};
use tonic::Code;

const RULES: &str = r#"
# Every tenant's "etl" workload reads, writes and assumes under its own namespace.
[[rules]]
callers = ["system:serviceaccount:*:etl"]
bucket = "demo"
prefix = "tenants/{namespace}/"
actions = ["read", "write", "assume-read"]
max_ttl = "30m"

# team-a's web workload may only read team-a's public folder.
[[rules]]
callers = ["system:serviceaccount:team-a:web"]
bucket = "demo"
prefix = "tenants/team-a/public/"
actions = ["read"]
max_ttl = "30m"

[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read", "write"]
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rpc {
    Read,
    Write,
    Assume,
}

#[tokio::test]
async fn every_identity_gets_exactly_its_own_cells() {
    let issuer = Issuer::new();
    let moto = Moto::start();
    let (key, secret, role_arn) = moto.service_with_s3_role("matrix").await;
    let jwks_dir = tempfile::tempdir().unwrap();
    let jwks_file = jwks_dir.path().join("jwks.json");
    std::fs::write(&jwks_file, issuer.jwks()).unwrap();

    let mut setup = Setup::new();
    setup.rules = RULES.into();
    setup.credentials = aws_credential_types::Credentials::new(key, secret, None, None, "moto");
    setup.extra_config = format!(
        r#"
[identity.jwt]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{jwks}"

[sts]
role_arn = "{role_arn}"
endpoint = "{endpoint}"
role_chaining = false
"#,
        jwks = jwks_file.display(),
        endpoint = moto.endpoint,
    );
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;

    let identities = [
        ("a-etl", issuer.token("team-a", "etl")),
        ("b-etl", issuer.token("team-b", "etl")),
        ("a-web", issuer.token("team-a", "web")),
        ("dev", TOKEN.to_string()),
    ];
    let targets = [
        "tenants/team-a/",
        "tenants/team-b/",
        "tenants/team-a/public/",
        "public/",
    ];

    // (identity, target) -> the RPCs that must succeed; every other cell is denied.
    use Rpc::*;
    let allowed: BTreeMap<(&str, &str), Vec<Rpc>> = [
        (("a-etl", "tenants/team-a/"), vec![Read, Write, Assume]),
        (
            ("a-etl", "tenants/team-a/public/"),
            vec![Read, Write, Assume],
        ),
        (("b-etl", "tenants/team-b/"), vec![Read, Write, Assume]),
        (("a-web", "tenants/team-a/public/"), vec![Read]),
        (("dev", "public/"), vec![Read, Write]),
    ]
    .into_iter()
    .collect();

    let mut cells = 0;
    for (who, token) in &identities {
        for target in targets {
            let key = format!("{target}report.csv");
            for rpc in [Read, Write, Assume] {
                let result = match rpc {
                    Read => client
                        .grant_read(authed(
                            GrantReadRequest {
                                bucket: "demo".into(),
                                key: key.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await
                        .map(|r| r.into_inner().url),
                    Write => client
                        .grant_write(authed(
                            GrantWriteRequest {
                                bucket: "demo".into(),
                                key: key.clone(),
                                ..Default::default()
                            },
                            token,
                        ))
                        .await
                        .map(|r| r.into_inner().url),
                    Assume => client
                        .assume_scoped(authed(
                            AssumeScopedRequest {
                                bucket: "demo".into(),
                                prefix: target.into(),
                                access: Access::Read as i32,
                                ..Default::default()
                            },
                            token,
                        ))
                        .await
                        .map(|r| r.into_inner().prefix),
                };
                let expected = allowed
                    .get(&(*who, target))
                    .is_some_and(|rpcs| rpcs.contains(&rpc));
                match result {
                    Ok(granted) => {
                        assert!(expected, "{who} was granted {rpc:?} on {target}");
                        // What was granted is the asked target, nothing wider.
                        assert!(
                            granted.contains(target),
                            "{who} {rpc:?} {target}: granted something else"
                        );
                    }
                    Err(status) => {
                        assert!(
                            !expected,
                            "{who} was refused {rpc:?} on {target}: {}",
                            status.message()
                        );
                        assert_eq!(
                            status.code(),
                            Code::PermissionDenied,
                            "{who} {rpc:?} {target}"
                        );
                        // A refusal never names another tenant's prefix.
                        let other = if who.starts_with("a-") {
                            "team-b"
                        } else {
                            "team-a"
                        };
                        if *who != "dev" {
                            assert!(!status.message().contains(other), "{}", status.message());
                        }
                    }
                }
                cells += 1;
            }
        }
    }
    assert_eq!(cells, identities.len() * targets.len() * 3);

    // A token from the right issuer but for another audience, and a tampered one,
    // are not identities at all.
    let tampered = {
        let t = issuer.token("team-a", "etl");
        let (head, _sig) = t.rsplit_once('.').unwrap();
        format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]))
    };
    let status = client
        .grant_read(authed(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "tenants/team-a/x".into(),
                ..Default::default()
            },
            &tampered,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
