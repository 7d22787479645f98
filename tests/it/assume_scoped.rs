//! AssumeScoped end to end against moto's STS, IAM and S3 on loopback.
//!
//! moto issues real temporary credentials and, with its auth checks on, verifies
//! signatures and session tokens and evaluates the role's identity policy; it does not
//! evaluate session policies. So each scope is proven three ways: the credentials
//! work inside the prefix (use), moto received exactly the policy the builder made
//! (what was sent), and, with that same document attached to the role, moto refuses
//! everything outside the prefix (real 403s). The policy's meaning for all prefixes is
//! proven separately by the IAM evaluator's property tests (tests/policy_meaning.rs).

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use storage_grants::policy::{self, Access, Partition};
use storage_grants::proto::{Access as ProtoAccess, AssumeScopedRequest, AssumeScopedResponse};
use support::{Moto, OTHER_TOKEN, Service, Setup, TOKEN, authed};
use tonic::Code;
use tonic_types::StatusExt;

const ROLE: &str = "scoped-test";

fn rules() -> String {
    r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "tenants/a/"
actions = ["assume-read", "assume-write", "list"]
max_ttl = "30m"

[[rules]]
callers = ["dev:other"]
bucket = "demo"
prefix = "tenants/b/"
actions = ["assume-read"]
max_ttl = "1h"
"#
    .into()
}

/// moto with the service's IAM user, a role whose permissions are `role_policy`, and
/// bucket `demo` holding one object in each tenant's prefix.
async fn moto(role_policy: &str) -> (Moto, Setup) {
    let moto = Moto::start();
    let (key, secret) = moto.service_identity().await;
    let role_arn = moto.create_role(ROLE, role_policy).await;
    let mut setup = Setup::new();
    setup.rules = rules();
    setup.credentials = Credentials::new(key, secret, None, None, "moto");
    setup.extra_config = format!(
        r#"
[sts]
role_arn = "{role_arn}"
endpoint = "{endpoint}"
call_timeout = "2s"
max_attempts = 2
role_chaining = false
"#,
        endpoint = moto.endpoint
    );
    let admin = s3_client(&moto.endpoint, setup.credentials.clone());
    admin
        .create_bucket()
        .bucket("demo")
        .send()
        .await
        .expect("create bucket");
    for key in [
        "tenants/a/existing.txt",
        "tenants/b/secret.txt",
        "tenants/a2/sibling.txt",
    ] {
        admin
            .put_object()
            .bucket("demo")
            .key(key)
            .body(b"data".to_vec().into())
            .send()
            .await
            .expect("put fixture");
    }
    (moto, setup)
}

fn s3_client(endpoint: &str, credentials: Credentials) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(credentials)
            .http_client(storage_grants::aws::http_client())
            .build(),
    )
}

/// An S3 client configured from the AssumeScoped response alone.
fn client_from(response: &AssumeScopedResponse) -> aws_sdk_s3::Client {
    let c = response.credentials.as_ref().expect("credentials");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(response.region.clone()))
            .endpoint_url(&response.endpoint)
            .force_path_style(response.force_path_style)
            .credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                Some(c.session_token.clone()),
                None,
                "assume-scoped",
            ))
            .http_client(storage_grants::aws::http_client())
            .build(),
    )
}

fn request(prefix: &str, access: ProtoAccess, list: bool) -> AssumeScopedRequest {
    AssumeScopedRequest {
        bucket: "demo".into(),
        prefix: prefix.into(),
        access: access as i32,
        list,
        duration: None,
        ..Default::default()
    }
}

fn tenant_a_policy() -> String {
    policy::session_policy(
        Partition::Aws,
        &"demo".parse().unwrap(),
        &"tenants/a/".parse().unwrap(),
        &Access {
            read: true,
            write: true,
            list: true,
            delete: false,
        },
        None,
    )
    .unwrap()
    .as_str()
    .to_owned()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn status_of<T, E: std::fmt::Debug>(r: Result<T, aws_sdk_s3::error::SdkError<E>>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
    }
}

#[tokio::test]
async fn credentials_work_inside_the_prefix_and_nowhere_else() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    moto.enable_auth().await;
    let response = service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::ReadWrite, true),
            &TOKEN,
        ))
        .await
        .expect("assume scoped")
        .into_inner();
    assert_eq!(response.bucket, "demo");
    assert_eq!(response.prefix, "tenants/a/");
    assert_eq!(response.region, "us-east-1");
    assert_eq!(response.endpoint, moto.endpoint);
    assert!(response.force_path_style);
    assert_eq!(response.grant_id.len(), 32);

    let s3 = client_from(&response);
    // Inside the prefix: write, read back, list.
    s3.put_object()
        .bucket("demo")
        .key("tenants/a/new.txt")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .expect("put inside the prefix");
    let got = s3
        .get_object()
        .bucket("demo")
        .key("tenants/a/new.txt")
        .send()
        .await
        .expect("get");
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello"
    );
    let listed = s3
        .list_objects_v2()
        .bucket("demo")
        .prefix("tenants/a/")
        .send()
        .await
        .expect("list inside the prefix");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        keys.contains(&"tenants/a/new.txt") && keys.contains(&"tenants/a/existing.txt"),
        "{keys:?}"
    );

    // Outside: another tenant, a sibling that shares the text prefix, the parent.
    let outside = s3
        .get_object()
        .bucket("demo")
        .key("tenants/b/secret.txt")
        .send()
        .await;
    assert_eq!(status_of(outside), 403);
    let sibling = s3
        .get_object()
        .bucket("demo")
        .key("tenants/a2/sibling.txt")
        .send()
        .await;
    assert_eq!(status_of(sibling), 403);
    let write_outside = s3
        .put_object()
        .bucket("demo")
        .key("tenants/new.txt")
        .body(b"x".to_vec().into())
        .send()
        .await;
    assert_eq!(status_of(write_outside), 403);
    // Listing the parent ("tenants/") is refused by IAM through the policy's
    // `s3:prefix` condition, which moto does not evaluate (its access control checks
    // Action and Resource only), so that refusal is proven by the IAM evaluator in
    // tests/policy_meaning.rs (list_bucket_* properties), not here.

    // A bogus session token is refused.
    let mut forged = response.clone();
    forged.credentials.as_mut().unwrap().session_token = "bogus-token".into();
    let refused = client_from(&forged)
        .get_object()
        .bucket("demo")
        .key("tenants/a/new.txt")
        .send()
        .await;
    // S3 answers 400 InvalidToken for a token it cannot parse, 403 for one it rejects.
    assert!(
        matches!(status_of(refused), 400 | 403),
        "a bogus session token was accepted"
    );
}

#[tokio::test]
async fn sts_receives_exactly_the_built_policy_and_session_names() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let response = service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::ReadWrite, true),
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let roles = moto.assumed_roles().await;
    assert_eq!(roles.len(), 1);
    let role = &roles[0];
    assert_eq!(role["policy"].as_str().unwrap(), tenant_a_policy());
    assert!(
        role["role_arn"]
            .as_str()
            .unwrap()
            .ends_with(":role/scoped-test")
    );
    let session = role["session_name"].as_str().unwrap();
    assert_eq!(session, format!("sg-{}-dev-demo", response.grant_id));
    assert_eq!(
        role["access_key_id"],
        response.credentials.unwrap().access_key_id
    );

    // A narrower request sends a narrower policy: read only, no list.
    let response = service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/a/jobs/", ProtoAccess::Read, false),
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let expected = policy::session_policy(
        Partition::Aws,
        &"demo".parse().unwrap(),
        &"tenants/a/jobs/".parse().unwrap(),
        &Access {
            read: true,
            write: false,
            list: false,
            delete: false,
        },
        None,
    )
    .unwrap();
    let roles = moto.assumed_roles().await;
    let sent = roles
        .iter()
        .find(|r| r["access_key_id"] == response.credentials.as_ref().unwrap().access_key_id)
        .expect("the second session");
    assert_eq!(sent["policy"].as_str().unwrap(), expected.as_str());
}

#[tokio::test]
async fn concurrent_misses_make_one_sts_call_and_later_calls_hit_the_cache() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let channel = service.channel().await;
    let calls = (0..64).map(|_| {
        let mut client =
            storage_grants::proto::grant_service_client::GrantServiceClient::new(channel.clone());
        tokio::spawn(async move {
            client
                .assume_scoped(authed(
                    request("tenants/a/", ProtoAccess::Read, false),
                    &TOKEN,
                ))
                .await
                .map(|r| r.into_inner())
        })
    });
    let mut key_ids = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let response = call.await.unwrap().expect("every waiter gets the result");
        key_ids.push(response.credentials.unwrap().access_key_id);
    }
    key_ids.dedup();
    assert_eq!(key_ids.len(), 1, "all 64 callers share one credential set");
    assert_eq!(
        moto.assumed_roles().await.len(),
        1,
        "exactly one AssumeRole for 64 callers"
    );

    // Later: served from the cache.
    let again = service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::Read, false),
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.credentials.unwrap().access_key_id, key_ids[0]);
    assert_eq!(moto.assumed_roles().await.len(), 1);

    // Another scope (access, prefix or caller) is another session.
    service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::Write, false),
            &TOKEN,
        ))
        .await
        .unwrap();
    service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/b/", ProtoAccess::Read, false),
            &OTHER_TOKEN,
        ))
        .await
        .unwrap();
    assert_eq!(moto.assumed_roles().await.len(), 3);
}

#[tokio::test]
async fn sts_down_is_unavailable_with_a_retry_hint_and_recovers() {
    let (mut moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    moto.stop();
    let started = std::time::Instant::now();
    let status = client
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::Read, false),
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by sts.call_timeout"
    );
    assert!(
        status.get_error_details().retry_info().is_some(),
        "retry hint"
    );
    assert!(
        !status.message().contains("ASIA"),
        "no credential material in errors"
    );

    // The failure was not cached: once STS is back, the same scope works.
    let _moto = Moto::start_on(moto.port);
    let response = client
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::Read, false),
            &TOKEN,
        ))
        .await
        .expect("recovers when STS is back")
        .into_inner();
    assert!(response.credentials.is_some());
}

/// Asks for a 2-hour session of tenant a's read access and asserts the credentials
/// expire `want_secs` from now (within the time the call took).
async fn assert_two_hours_become(service: &Service, want_secs: i64) {
    let before = now_secs();
    let response = service
        .client()
        .await
        .assume_scoped(authed(
            AssumeScopedRequest {
                duration: Some(prost_types::Duration {
                    seconds: 7200,
                    nanos: 0,
                }),
                ..request("tenants/a/", ProtoAccess::Read, false)
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let expires = response.credentials.unwrap().expires_at.unwrap().seconds;
    // moto honours DurationSeconds.
    assert!(
        (before + want_secs - 2..=now_secs() + want_secs + 2).contains(&expires),
        "expires {}s from now, want {want_secs}s",
        expires - before
    );
}

/// A caller that asks for a short session gets one, though a longer one for the same
/// scope is cached, and the longer one stays cached for those who ask for it: a
/// session's length is part of what is cached.
#[tokio::test]
async fn a_cached_session_is_reused_only_for_the_length_it_was_made_for() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let ask = |seconds: i64| {
        let service = &service;
        async move {
            let before = now_secs();
            let credentials = service
                .client()
                .await
                .assume_scoped(authed(
                    AssumeScopedRequest {
                        duration: Some(prost_types::Duration { seconds, nanos: 0 }),
                        ..request("tenants/b/", ProtoAccess::Read, false)
                    },
                    &OTHER_TOKEN,
                ))
                .await
                .unwrap()
                .into_inner()
                .credentials
                .unwrap();
            let left = credentials.expires_at.unwrap().seconds - before;
            assert!(left <= seconds + 2, "asked for {seconds}s, got {left}s");
            (credentials.access_key_id, left)
        }
    };
    let (hour, left) = ask(3600).await;
    assert!(left >= 3590, "{left}");
    let (quarter, left) = ask(900).await;
    assert_ne!(
        quarter, hour,
        "the hour's session was handed out for 15 minutes"
    );
    assert!(left >= 890, "{left}");
    assert_eq!(ask(900).await.0, quarter);
    assert_eq!(ask(3600).await.0, hour);
    assert_eq!(moto.assumed_roles().await.len(), 2);
}

#[tokio::test]
async fn expiration_is_the_real_one_and_bounded_by_the_rule() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    // The rule allows 30 minutes.
    assert_two_hours_become(&service, 1800).await;
    let roles = moto.assumed_roles().await;
    assert_eq!(roles.len(), 1);
}

#[tokio::test]
async fn session_length_is_bounded_by_the_grants_ceiling() {
    // grants.max_ttl is 1h in the test config; the rule and the role allow 2h.
    let (moto, mut setup) = moto(&tenant_a_policy()).await;
    setup.rules = setup
        .rules
        .replacen("max_ttl = \"30m\"", "max_ttl = \"2h\"", 1);
    setup.extra_config.push_str("role_max_duration = \"12h\"\n");
    let service = Service::start_at(&moto.endpoint, setup).await;
    assert_two_hours_become(&service, 3600).await;
}

/// `status` is FAILED_PRECONDITION (its message shown otherwise).
fn assert_failed_precondition(status: &tonic::Status) {
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
}

fn with_min_remaining(prefix: &str, seconds: i64) -> AssumeScopedRequest {
    AssumeScopedRequest {
        min_remaining: Some(prost_types::Duration { seconds, nanos: 0 }),
        ..request(prefix, ProtoAccess::Read, false)
    }
}

#[tokio::test]
async fn min_remaining_is_kept_or_refused_when_no_session_can_have_it() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    // The rule allows 30 minutes: 31 cannot be had, by a new session or a cached one.
    let status = client
        .assume_scoped(authed(with_min_remaining("tenants/a/", 31 * 60), &TOKEN))
        .await
        .unwrap_err();
    assert_failed_precondition(&status);
    for part in ["31m", "at most 30m", "max_ttl of the rule at line 2"] {
        assert!(
            status.message().contains(part),
            "{part}: {}",
            status.message()
        );
    }
    assert!(moto.assumed_roles().await.is_empty(), "refused before STS");
    // Nor can exactly 30: a new session has less left by the time it is handed out,
    // and none could ever be reused (one STS session per call).
    let status = client
        .assume_scoped(authed(with_min_remaining("tenants/a/", 30 * 60), &TOKEN))
        .await
        .unwrap_err();
    assert_failed_precondition(&status);
    assert!(
        status.message().contains("less than that"),
        "{}",
        status.message()
    );
    assert!(moto.assumed_roles().await.is_empty(), "refused before STS");

    // 25 minutes can: handed out with at least that, then again from the cache.
    let before = now_secs();
    let first = client
        .assume_scoped(authed(with_min_remaining("tenants/a/", 25 * 60), &TOKEN))
        .await
        .expect("a new session has 30 minutes")
        .into_inner()
        .credentials
        .unwrap();
    assert!(first.expires_at.unwrap().seconds >= before + 25 * 60);
    let again = client
        .assume_scoped(authed(with_min_remaining("tenants/a/", 25 * 60), &TOKEN))
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    assert_eq!(again.access_key_id, first.access_key_id);
    assert_eq!(moto.assumed_roles().await.len(), 1);

    // A session asked for no longer than the life to be left could never be reused:
    // refused, naming the duration.
    let status = client
        .assume_scoped(authed(
            AssumeScopedRequest {
                duration: Some(prost_types::Duration {
                    seconds: 15 * 60,
                    nanos: 0,
                }),
                ..with_min_remaining("tenants/a/", 20 * 60)
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_failed_precondition(&status);
    assert!(
        status.message().contains("longer duration"),
        "{}",
        status.message()
    );
    assert_eq!(moto.assumed_roles().await.len(), 1);
}

/// With a default session shorter than the life an SDK endpoint asks to be left, the
/// session asked for is the longest the rule allows, reused as long as it can be.
#[tokio::test]
async fn a_short_default_session_does_not_starve_the_sdk_endpoints() {
    let (moto, mut setup) = moto(&tenant_a_policy()).await;
    setup.extra_config.push_str("default_duration = \"15m\"\n");
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    let ask = || with_min_remaining("tenants/a/", 20 * 60);
    let before = now_secs();
    let first = client
        .assume_scoped(authed(ask(), &TOKEN))
        .await
        .expect("the rule's 30 minutes keep 20")
        .into_inner()
        .credentials
        .unwrap();
    assert!(first.expires_at.unwrap().seconds >= before + 20 * 60);
    let again = client
        .assume_scoped(authed(ask(), &TOKEN))
        .await
        .unwrap()
        .into_inner()
        .credentials
        .unwrap();
    assert_eq!(again.access_key_id, first.access_key_id);
    assert_eq!(moto.assumed_roles().await.len(), 1);
}

#[tokio::test]
async fn requests_outside_the_rules_or_malformed_are_refused() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    let denied = [
        (request("tenants/b/", ProtoAccess::Read, false), &TOKEN),
        (request("tenants/", ProtoAccess::Read, false), &TOKEN),
        (request("tenants/a2/", ProtoAccess::Read, false), &TOKEN),
        // dev:other may read its prefix but not write or list it.
        (
            request("tenants/b/", ProtoAccess::Write, false),
            &OTHER_TOKEN,
        ),
        (request("tenants/b/", ProtoAccess::Read, true), &OTHER_TOKEN),
    ];
    for (req, token) in denied {
        let prefix = req.prefix.clone();
        let status = client.assume_scoped(authed(req, token)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{prefix}: {}",
            status.message()
        );
    }
    let invalid = [
        (request("tenants/a", ProtoAccess::Read, false), "prefix"),
        (request("tenants/a/*/", ProtoAccess::Read, false), "prefix"),
        (
            request("tenants/a/../b/", ProtoAccess::Read, false),
            "prefix",
        ),
        (
            request("tenants/a/", ProtoAccess::Unspecified, false),
            "access",
        ),
        (
            AssumeScopedRequest {
                access: 42,
                ..request("tenants/a/", ProtoAccess::Read, false)
            },
            "access",
        ),
        (
            AssumeScopedRequest {
                duration: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..request("tenants/a/", ProtoAccess::Read, false)
            },
            "duration",
        ),
        (
            request(
                &format!("tenants/a/{}/", "x".repeat(1500)),
                ProtoAccess::Read,
                false,
            ),
            "prefix",
        ),
    ];
    for (req, field) in invalid {
        let status = client.assume_scoped(authed(req, &TOKEN)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field
        );
    }
    assert!(
        moto.assumed_roles().await.is_empty(),
        "nothing refused reached STS"
    );
}

#[tokio::test]
async fn without_a_role_assume_scoped_is_failed_precondition() {
    let moto = Moto::start();
    let mut setup = Setup::new();
    setup.rules = rules();
    let service = Service::start_at(&moto.endpoint, setup).await;
    let status = service
        .client()
        .await
        .assume_scoped(authed(
            request("tenants/a/", ProtoAccess::Read, false),
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("sts.role_arn"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_cancelled_caller_does_not_leave_the_others_hanging() {
    let (moto, setup) = moto(&tenant_a_policy()).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let channel = service.channel().await;
    let client =
        || storage_grants::proto::grant_service_client::GrantServiceClient::new(channel.clone());
    // The first caller starts the AssumeRole, then gives up (its deadline, a
    // disconnect) long before STS answers.
    let mut leader = client();
    let cut_off = tokio::time::timeout(
        Duration::from_millis(1),
        leader.assume_scoped(authed(
            request("tenants/a/", ProtoAccess::Read, false),
            &TOKEN,
        )),
    )
    .await;
    assert!(cut_off.is_err(), "the first call finished within 1 ms");
    // Callers of the same scope still get credentials, from that same call.
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let mut c = client();
            tokio::spawn(async move {
                c.assume_scoped(authed(
                    request("tenants/a/", ProtoAccess::Read, false),
                    &TOKEN,
                ))
                .await
                .map(|r| r.into_inner().credentials.unwrap().access_key_id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for waiter in waiters {
        let id = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("no waiter hangs")
            .unwrap()
            .expect("credentials");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(moto.assumed_roles().await.len(), 1);
}

/// One caller asking for ever new sub-prefixes spends its own budget of new STS
/// sessions and then gets RESOURCE_EXHAUSTED with a retry delay; STS sees no more
/// AssumeRole calls than the budget, and another caller's cached credentials are still
/// served from the cache.
#[tokio::test]
async fn a_caller_cannot_use_up_sts_for_the_others() {
    let (moto, mut setup) = moto(&tenant_a_policy()).await;
    setup.extra_config.push_str(
        "\n[limits]\nsts_misses_per_minute = 1\nsts_misses_burst = 5\n\
         grants_per_second = 100000\ngrants_burst = 100000\n",
    );
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    let other = client
        .assume_scoped(authed(
            request("tenants/b/", ProtoAccess::Read, false),
            &OTHER_TOKEN,
        ))
        .await
        .expect("the other caller's first credentials")
        .into_inner()
        .credentials
        .unwrap()
        .access_key_id;
    let sessions_before = moto.assumed_roles().await.len();

    let (mut issued, mut refused) = (0, 0);
    for n in 0..10_000 {
        let answer = client
            .assume_scoped(authed(
                request(&format!("tenants/a/{n}/"), ProtoAccess::Read, false),
                &TOKEN,
            ))
            .await;
        match answer {
            Ok(_) => issued += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let retry = status
                    .get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("a retry delay");
                assert!(retry > Duration::ZERO, "{retry:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(issued, 5, "the burst of new sessions");
    assert_eq!(refused, 9_995);
    assert_eq!(
        moto.assumed_roles().await.len() - sessions_before,
        5,
        "STS saw no more calls than the budget"
    );
    // The other caller is untouched: its credentials come from the cache.
    let again = client
        .assume_scoped(authed(
            request("tenants/b/", ProtoAccess::Read, false),
            &OTHER_TOKEN,
        ))
        .await
        .expect("the other caller is not over any budget")
        .into_inner()
        .credentials
        .unwrap()
        .access_key_id;
    assert_eq!(again, other);
    assert_eq!(moto.assumed_roles().await.len() - sessions_before, 5);
}
