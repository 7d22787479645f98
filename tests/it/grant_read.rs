//! GrantRead end to end: the service runs in-process, the store is a real s3s-fs on
//! loopback that verifies SigV4, and every grant is proven by using it over plain
//! HTTP.

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use storage_grants::proto::GrantReadRequest;
use support::{OTHER_TOKEN, Service, Setup, TOKEN, authed, demo_store, http_get};
use tonic::Code;
use tonic_types::StatusExt;

fn read(key: &str) -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: key.into(),
        ..Default::default()
    }
}

fn ttl(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Replaces one query parameter's value in a URL.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').expect("presigned URL has a query");
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={value}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

fn param<'a>(url: &'a str, name: &str) -> &'a str {
    url.split_once('?')
        .unwrap()
        .1
        .split('&')
        .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in the URL"))
}

#[tokio::test]
async fn url_downloads_the_object_over_plain_http() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    let before = now_secs();
    let grant = client
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .expect("grant")
        .into_inner();
    assert_eq!(grant.method, "GET");
    assert!(grant.headers.is_empty(), "a plain GET needs no headers");
    assert_eq!(grant.grant_id.len(), 32);
    // Default TTL is 5 minutes.
    let expires = grant.expires_at.expect("expires_at").seconds;
    assert!(
        (before + 300..=now_secs() + 300).contains(&expires),
        "expires_at {expires}"
    );
    assert_eq!(param(&grant.url, "X-Amz-Expires"), "300");

    let response = http_get(&grant.url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello, storage-grants\n");
}

#[tokio::test]
async fn tampered_signature_is_refused_by_the_store() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .unwrap()
        .into_inner();
    let signature = param(&grant.url, "X-Amz-Signature");
    let flipped: String = signature
        .char_indices()
        .map(|(i, c)| {
            if i == 10 {
                if c == '0' { '1' } else { '0' }
            } else {
                c
            }
        })
        .collect();
    let tampered = with_param(&grant.url, "X-Amz-Signature", &flipped);
    assert_eq!(http_get(&tampered).await.status(), 403);
    // The untampered URL still works, so the 403 is the signature's doing.
    assert_eq!(http_get(&grant.url).await.status(), 200);
}

#[tokio::test]
async fn tampered_key_is_refused_by_the_store() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .unwrap()
        .into_inner();
    let tampered = grant
        .url
        .replacen("/public/hello.txt?", "/public/other.txt?", 1);
    assert_ne!(tampered, grant.url);
    assert_eq!(http_get(&tampered).await.status(), 403);
    let tampered = grant
        .url
        .replacen("/public/hello.txt?", "/private/secret.txt?", 1);
    assert_eq!(http_get(&tampered).await.status(), 403);
}

#[tokio::test]
async fn tampered_expiry_is_refused_by_the_store() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .unwrap()
        .into_inner();
    let tampered = with_param(&grant.url, "X-Amz-Expires", "604800");
    assert_eq!(http_get(&tampered).await.status(), 403);
}

#[tokio::test]
async fn url_signed_with_a_wrong_secret_is_refused_by_the_store() {
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.credentials = aws_credential_types::Credentials::new(
        support::ACCESS_KEY,
        "not-the-secret-the-store-knows",
        None,
        None,
        "test",
    );
    let service = Service::start(&store, setup).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(read("public/hello.txt"), &TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_get(&grant.url).await.status(), 403);
}

#[tokio::test]
async fn expired_url_is_refused_by_the_store() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(
            GrantReadRequest {
                ttl: ttl(1),
                ..read("public/hello.txt")
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(param(&grant.url, "X-Amz-Expires"), "1");
    let expires = grant.expires_at.unwrap().seconds;
    // Wait until the URL is past its expiry by a clear margin, then use it.
    while now_secs() <= expires + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(http_get(&grant.url).await.status(), 403);
}

#[tokio::test]
async fn response_overrides_come_back_as_headers() {
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.rules = setup.rules.replacen(
        "max_ttl = \"15m\"",
        "max_ttl = \"15m\"\nallow_response_overrides = true",
        1,
    );
    let service = Service::start(&store, setup).await;
    let request = GrantReadRequest {
        response_content_type: "application/x-report; charset=utf-8".into(),
        response_content_disposition: "attachment; filename=\"hello world.txt\"".into(),
        ..read("public/hello.txt")
    };
    let grant = service
        .client()
        .await
        .grant_read(authed(request, &TOKEN))
        .await
        .unwrap()
        .into_inner();
    let response = http_get(&grant.url).await;
    assert_eq!(response.status(), 200);
    let header = |name| {
        response
            .headers()
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        header("content-type"),
        "application/x-report; charset=utf-8"
    );
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"hello world.txt\""
    );
}

#[tokio::test]
async fn response_overrides_need_the_rule_to_allow_them() {
    // An override can make a stored file render as HTML from the store's origin (one
    // origin for every bucket under path-style addressing): refused unless the rule
    // says allow_response_overrides, except a download as an attachment.
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    for (content_type, disposition) in [
        ("text/html", ""),
        ("", "inline"),
        ("", "inline; filename=\"a.html\""),
        ("text/html", "attachment"),
        ("", "attachmentx"),
    ] {
        let request = GrantReadRequest {
            response_content_type: content_type.into(),
            response_content_disposition: disposition.into(),
            ..read("public/hello.txt")
        };
        let status = client
            .grant_read(authed(request, &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{content_type:?} {disposition:?}: {}",
            status.message()
        );
        assert!(
            status.message().contains("allow_response_overrides"),
            "{}",
            status.message()
        );
    }
    for disposition in ["attachment", "Attachment; filename=\"a.txt\""] {
        let request = GrantReadRequest {
            response_content_disposition: disposition.into(),
            ..read("public/hello.txt")
        };
        let grant = client
            .grant_read(authed(request, &TOKEN))
            .await
            .unwrap_or_else(|s| panic!("{disposition}: {s:?}"))
            .into_inner();
        let response = http_get(&grant.url).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("content-disposition").unwrap(),
            disposition
        );
    }
}

#[tokio::test]
async fn keys_with_spaces_and_unicode_download() {
    let store = demo_store().await;
    let key = "public/reports 2026/q3 résumé+final (1).txt";
    store.put("demo", key, b"unicode body").await;
    let service = Service::start(&store, Setup::new()).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(read(key), &TOKEN))
        .await
        .unwrap()
        .into_inner();
    let response = http_get(&grant.url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "unicode body");
}

#[tokio::test]
async fn key_outside_the_callers_rules_is_not_signed() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    for key in ["private/secret.txt", "public2/x", "other/x"] {
        let status = client
            .grant_read(authed(read(key), &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{key}");
        assert!(
            status.message().contains("'public/'"),
            "{}",
            status.message()
        );
        assert!(!status.message().contains("X-Amz"), "no URL in errors");
    }
    // Another caller's prefix is not revealed to a caller with no rule there.
    let status = client
        .grant_read(authed(
            GrantReadRequest {
                bucket: "elsewhere".into(),
                ..read("x")
            },
            &OTHER_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        !status.message().contains("public/"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    let status = client
        .grant_read(read("public/hello.txt"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("authorization"),
        "{}",
        status.message()
    );

    let status = client
        .grant_read(authed(
            read("public/hello.txt"),
            "dev-token-that-is-wrong-000",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        !status.message().contains("dev-token-that-is-wrong"),
        "token echoed"
    );

    let mut request = tonic::Request::new(read("public/hello.txt"));
    request.metadata_mut().insert(
        "authorization",
        format!("Basic {}", *TOKEN).parse().unwrap(),
    );
    let status = client.grant_read(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
}

#[tokio::test]
async fn bad_fields_are_invalid_argument_with_field_violations() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    let cases = [
        (read("public/../private/secret.txt"), "key"),
        (read(""), "key"),
        (read("public//hello.txt"), "key"),
        (read("public/a\nb"), "key"),
        (read(&format!("public/{}", "a".repeat(1100))), "key"),
        (
            GrantReadRequest {
                bucket: "Not_A_Bucket".into(),
                ..read("public/hello.txt")
            },
            "bucket",
        ),
        (
            GrantReadRequest {
                ttl: ttl(-5),
                ..read("public/hello.txt")
            },
            "ttl",
        ),
        (
            GrantReadRequest {
                ttl: ttl(0),
                ..read("public/hello.txt")
            },
            "ttl",
        ),
        (
            GrantReadRequest {
                response_content_type: "text/plain\r\nx: y".into(),
                ..read("public/hello.txt")
            },
            "response_content_type",
        ),
        (
            GrantReadRequest {
                version_id: "a b".into(),
                ..read("public/hello.txt")
            },
            "version_id",
        ),
    ];
    for (request, field) in cases {
        let status = client
            .grant_read(authed(request, &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("BadRequest details")
            .field_violations;
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, field);
        assert!(!violations[0].description.is_empty());
    }
    // Several bad fields are reported together.
    let status = client
        .grant_read(authed(
            GrantReadRequest {
                bucket: "".into(),
                key: "".into(),
                ttl: ttl(-1),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    let details = status.get_error_details();
    let fields: Vec<_> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["bucket", "key", "ttl"]);
}

#[tokio::test]
async fn ttl_is_cut_to_the_rule_and_reported_honestly() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let before = now_secs();
    let grant = service
        .client()
        .await
        .grant_read(authed(
            GrantReadRequest {
                ttl: ttl(86_400),
                ..read("public/hello.txt")
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // The rule allows 15 minutes.
    assert_eq!(param(&grant.url, "X-Amz-Expires"), "900");
    let expires = grant.expires_at.unwrap().seconds;
    assert!((before + 900..=now_secs() + 900).contains(&expires));
}

#[tokio::test]
async fn temporary_signing_credentials_cap_the_url_lifetime() {
    let store = demo_store().await;
    let mut setup = Setup::new();
    let creds_expire = SystemTime::now() + Duration::from_secs(120);
    setup.credentials = aws_credential_types::Credentials::new(
        support::ACCESS_KEY,
        support::SECRET_KEY.as_str(),
        Some("session-token-value".into()),
        Some(creds_expire),
        "test",
    );
    let service = Service::start(&store, setup).await;
    let grant = service
        .client()
        .await
        .grant_read(authed(
            GrantReadRequest {
                ttl: ttl(900),
                ..read("public/hello.txt")
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let expires = grant.expires_at.unwrap().seconds;
    let limit = creds_expire.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(
        expires <= limit,
        "URL claims {expires}, credentials end {limit}"
    );
    assert!(expires >= limit - 5, "URL lifetime cut more than needed");
    let expires_param: i64 = param(&grant.url, "X-Amz-Expires").parse().unwrap();
    assert!(expires_param <= 120);
    assert!(
        grant
            .url
            .contains("X-Amz-Security-Token=session-token-value")
    );
}

/// A request whose `key` is not UTF-8, as a client with a loose protobuf library (or
/// a hostile one) can send: the same field numbers, `bytes` instead of `string`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGrantReadRequest {
    #[prost(string, tag = "1")]
    bucket: String,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
}

#[tokio::test]
async fn key_that_is_not_utf8_is_invalid_argument() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut grpc = tonic::client::Grpc::new(service.channel().await);
    grpc.ready().await.unwrap();
    let request = authed(
        RawGrantReadRequest {
            bucket: "demo".into(),
            key: b"public/\xff\xfe.txt".to_vec(),
        },
        &TOKEN,
    );
    let status = grpc
        .unary::<_, storage_grants::proto::GrantReadResponse, _>(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/storagegrants.v1.GrantService/GrantRead",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("UTF-8"), "{}", status.message());
}

#[tokio::test]
async fn temporary_credentials_of_unknown_expiry_cap_the_ttl() {
    // A session token without an expiry (environment variables without
    // AWS_CREDENTIAL_EXPIRATION): the credentials may die at any time, so a URL must
    // not claim the rule's hour; grants.max_ttl_without_expiry (15m) bounds it.
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.rules = setup
        .rules
        .replacen("max_ttl = \"15m\"", "max_ttl = \"1h\"", 1);
    setup.credentials = aws_credential_types::Credentials::new(
        support::ACCESS_KEY,
        support::SECRET_KEY.as_str(),
        Some("session-token".into()),
        None,
        "env",
    );
    let service = Service::start(&store, setup).await;
    let before = now_secs();
    let response = service
        .client()
        .await
        .grant_read(authed(
            GrantReadRequest {
                ttl: ttl(3600),
                ..read("public/hello.txt")
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let expires = response.expires_at.unwrap().seconds;
    assert!(
        (before + 900 - 2..=now_secs() + 900 + 2).contains(&expires),
        "expires {expires}s, {}s from now",
        expires - before
    );
    assert_eq!(param(&response.url, "X-Amz-Expires"), "900");
}

/// Each caller has its own budget of grants (`[limits]`), a rule may give its callers
/// another (`grants_per_second`, `grants_burst`), and refusals are spent from the
/// default budget: past it, RESOURCE_EXHAUSTED with a retry delay, and not audited.
#[tokio::test]
async fn grant_budgets_are_per_caller_and_a_rule_may_set_its_own() {
    let audit = support::capture_audit();
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.rules.push_str(
        "\n[[rules]]\ncallers = [\"dev:demo\"]\nbucket = \"demo\"\nprefix = \"batch/\"\n\
         actions = [\"read\"]\ngrants_per_second = 0.01\ngrants_burst = 20\n",
    );
    setup.extra_config = "[limits]\ngrants_per_second = 0.01\ngrants_burst = 3\n".into();
    let service = Service::start(&store, setup).await;
    let client = service.client().await;
    let outcome = |token: &'static str, key: &str| {
        let mut client = client.clone();
        let request = authed(read(key), token);
        async move { client.grant_read(request).await.map(|_| ()) }
    };
    let exhausted = |result: Result<(), tonic::Status>| {
        let status = result.expect_err("over budget");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        let retry = status.get_details_retry_info().expect("a retry delay");
        assert!(
            retry
                .retry_delay
                .is_some_and(|d| d > Duration::from_secs(1))
        );
    };

    // dev:demo: three grants under the default budget, then none.
    for _ in 0..3 {
        outcome(&TOKEN, "public/hello.txt")
            .await
            .expect("within budget");
    }
    exhausted(outcome(&TOKEN, "public/hello.txt").await);
    // Under the rule with its own budget: twenty more, then none.
    for i in 0..20 {
        let grant = outcome(&TOKEN, &format!("batch/{i}.csv")).await;
        assert!(grant.is_ok(), "grant {i} under the batch rule: {grant:?}");
    }
    exhausted(outcome(&TOKEN, "batch/20.csv").await);
    // Each refusal says which budget: the rule's own, or the caller's `[limits]`.
    let ruled = outcome(&TOKEN, "batch/21.csv").await.unwrap_err();
    assert!(
        ruled.message().contains("under the rule on line"),
        "{ruled:?}"
    );
    let limits = outcome(&TOKEN, "public/hello.txt").await.unwrap_err();
    assert!(!limits.message().contains("under the rule"), "{limits:?}");

    // dev:other's budget is its own; its refusals spend it too.
    outcome(&OTHER_TOKEN, "other/a.txt")
        .await
        .expect("its own budget");
    for _ in 0..2 {
        let denied = outcome(&OTHER_TOKEN, "public/hello.txt").await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    }
    exhausted(outcome(&OTHER_TOKEN, "public/hello.txt").await);
    exhausted(outcome(&OTHER_TOKEN, "other/a.txt").await);
    // The two refusals within its budget are audited; the ones past it are not.
    let denials = audit()
        .iter()
        .filter(|l| l.contains("grant denied") && l.contains("\"caller\":\"dev:other\""))
        .count();
    assert_eq!(denials, 2);
}
