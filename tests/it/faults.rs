//! Faults in what the service depends on, injected by a proxy on loopback
//! (`support::faults`): STS (moto behind the proxy) answering late, failing, throttling
//! or down; the JWKS endpoint down; the service's own credential chain failing. Each
//! test checks what a caller sees during the fault and after it heals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};
use storage_grants::proto::{Access, AssumeScopedRequest, GrantReadRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::support::faults::{Fault, FaultProxy, Upstream};
use crate::support::jwt::Issuer;
use crate::support::{self, Moto, Service, Setup, TOKEN, authed, demo_store, http_get};

const ROLE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
"Action":"s3:*","Resource":["arn:aws:s3:::demo","arn:aws:s3:::demo/*"]}]}"#;

fn assume() -> AssumeScopedRequest {
    AssumeScopedRequest {
        bucket: "demo".into(),
        prefix: "tenants/a/".into(),
        access: Access::Read as i32,
        ..Default::default()
    }
}

/// An AssumeScoped call of `dev:demo` that gives up after `deadline`.
fn assume_within(deadline: Duration) -> tonic::Request<AssumeScopedRequest> {
    let mut request = authed(assume(), &TOKEN);
    request.set_timeout(deadline);
    request
}

/// An AssumeRole answer with this secret key, expiring this many seconds from now.
fn sts_answer(secret: &str, expires_in: u64) -> &'static str {
    let expires = aws_smithy_types::DateTime::from_secs(
        i64::try_from(
            (std::time::SystemTime::now() + Duration::from_secs(expires_in))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap(),
    )
    .fmt(aws_smithy_types::date_time::Format::DateTime)
    .unwrap();
    Box::leak(
        format!(
            "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
             <AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
             <SessionToken>FwoGZXIvYXdzEXAMPLE</SessionToken><Expiration>{expires}</Expiration>\
             </Credentials></AssumeRoleResult></AssumeRoleResponse>"
        )
        .into_boxed_str(),
    )
}

/// What a proxy or login page in front of an AWS endpoint answers with a 200.
const NOT_AN_ANSWER: &str = "<html><body>Sign in to continue</body></html>";

/// Moto with a role `role`, a fault proxy in front of it for STS, and a set-up with
/// the service's identity in moto, `dev:demo` allowed to assume read access to
/// `tenants/a/` of `demo`, and `[sts]` through the proxy with `call_timeout` and
/// `max_attempts`.
async fn sts_behind_a_proxy(
    role: &str,
    call_timeout: &str,
    max_attempts: u32,
) -> (Moto, FaultProxy, Setup) {
    let moto = Moto::start();
    let (key, secret) = moto.service_identity().await;
    let role_arn = moto.create_role(role, ROLE_POLICY).await;
    let proxy = FaultProxy::start(Upstream::Url(moto.endpoint.clone())).await;
    let mut setup = Setup::new();
    setup.rules = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "tenants/a/"
actions = ["assume-read"]
max_ttl = "1h"
"#
    .into();
    setup.credentials = Credentials::new(key, secret, None, None, "moto");
    setup.extra_config = format!(
        r#"
[sts]
role_arn = "{role_arn}"
endpoint = "{proxy}"
call_timeout = "{call_timeout}"
max_attempts = {max_attempts}
role_chaining = false
"#,
        proxy = proxy.endpoint
    );
    (moto, proxy, setup)
}

#[tokio::test]
async fn sts_faults_answer_unavailable_with_a_retry_hint_and_heal_within_a_second() {
    let (moto, proxy, setup) = sts_behind_a_proxy("faults", "1s", 2).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;

    // A caller whose deadline comes before the STS call's own bound: answered before
    // its deadline, UNAVAILABLE with a retry hint, not a bare DEADLINE_EXCEEDED. The
    // service answers a fifth of the deadline early (180 ms), which a busy test host
    // needs: at a tenth (70 ms) the caller's clock ran out first under CI load.
    proxy.set(Fault::Delay(Duration::from_secs(3)));
    let started = Instant::now();
    let status = client
        .assume_scoped(assume_within(Duration::from_millis(900)))
        .await
        .expect_err("STS answers too late");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    assert!(status.message().contains("still being made"), "{status:?}");
    // The abandoned STS call ends by its own bound (1 s) before the next fault.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let deadline = Duration::from_secs(3);
    for fault in [
        Fault::Delay(Duration::from_secs(3)),
        Fault::Status(503),
        Fault::Status(500),
        Fault::Throttle,
        Fault::Down,
        // A 200 that is not STS's answer (a proxy's page): no credentials to act on.
        Fault::Answer(200, NOT_AN_ANSWER),
        // STS's answer cut short: an access key without its secret, token or expiry.
        Fault::Answer(
            200,
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE\
             </AccessKeyId><Secr",
        ),
        // Whole answers no SDK could use: a blank secret; an expiry two seconds away;
        // one two minutes away, short of the hour asked for (and of any life a caller
        // may ask to have left); one a day past it.
        Fault::Answer(200, sts_answer("   ", 3600)),
        Fault::Answer(200, sts_answer("wJalrXUtnFEMIEXAMPLEKEY", 2)),
        Fault::Answer(200, sts_answer("wJalrXUtnFEMIEXAMPLEKEY", 120)),
        Fault::Answer(200, sts_answer("wJalrXUtnFEMIEXAMPLEKEY", 90_000)),
    ] {
        proxy.set(fault);
        let before = proxy.requests();
        let started = Instant::now();
        let status = client
            .assume_scoped(assume_within(deadline))
            .await
            .expect_err(&format!("{fault:?}: STS fails"));
        let took = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "{fault:?}: {status:?}");
        let retry = status
            .get_details_retry_info()
            .unwrap_or_else(|| panic!("{fault:?}: no RetryInfo in {status:?}"));
        assert!(retry.retry_delay.is_some(), "{fault:?}");
        assert!(took < deadline, "{fault:?}: answered after {took:?}");
        assert!(
            !status.message().contains("InvalidClientTokenId")
                && !status.message().contains(TOKEN.as_str()),
            "{status:?}"
        );
        if fault != Fault::Down {
            // Never an error from the cache: every failed call asked STS again.
            assert!(proxy.requests() > before, "{fault:?}: STS was not asked");
        }
    }

    // Healed: the very next call gets credentials (no error was cached, no breaker
    // holds calls back), well within a second.
    proxy.set(Fault::None);
    let healed = Instant::now();
    let first = loop {
        match client.assume_scoped(assume_within(deadline)).await {
            Ok(response) => break response.into_inner(),
            Err(status) => {
                assert!(
                    healed.elapsed() < Duration::from_secs(1),
                    "still failing {:?} after the heal: {status:?}",
                    healed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(healed.elapsed() < Duration::from_secs(1));
    let credentials = first.credentials.expect("credentials");
    assert!(!credentials.session_token.is_empty());
    // And then they are cached: STS is not asked again.
    let asked = proxy.requests();
    let again = client
        .assume_scoped(assume_within(deadline))
        .await
        .expect("from the cache")
        .into_inner();
    assert_eq!(
        again.credentials.expect("credentials").access_key_id,
        credentials.access_key_id
    );
    assert_eq!(proxy.requests(), asked);
}

/// The gateway's answer to `request`: `status` within `within`, with `Retry-After: 2`
/// and an UNAVAILABLE problem body, whose detail it returns.
async fn retry_within(
    request: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    status: u16,
    within: Duration,
) -> String {
    let started = Instant::now();
    let answer = request.await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(answer.status(), status, "after {took:?}");
    assert!(took < within, "answered after {took:?}");
    assert_eq!(answer.headers()["retry-after"], "2");
    let body: serde_json::Value =
        serde_json::from_str(&answer.text().await.expect("a body")).expect("a problem body");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    body["detail"].as_str().unwrap_or_default().to_owned()
}

/// The gateway's SDK credentials endpoint, with a `request_timeout` shorter than the
/// STS call's own bound: a slow STS is answered 503 with `Retry-After` and the words
/// the gRPC door uses, before the request's deadline (not a 408 that blames the
/// client's body), and the retry is served from the one STS call.
#[tokio::test]
async fn the_gateway_answers_a_slow_sts_503_before_its_request_timeout() {
    let (moto, proxy, mut setup) = sts_behind_a_proxy("gateway-slow", "5s", 1).await;
    setup
        .extra_config
        .push_str("\n[server]\nrequest_timeout = \"1s\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n");
    let service = Service::start_at(&moto.endpoint, setup).await;
    let url = format!(
        "http://127.0.0.1:{}/v1/credentials/demo/tenants/a/?access=read",
        service.http_port()
    );
    let get = || {
        reqwest::Client::new()
            .get(&url)
            .header("authorization", format!("Bearer {}", *TOKEN))
            .send()
    };
    proxy.set(Fault::Delay(Duration::from_secs(2)));
    let detail = retry_within(get(), 503, Duration::from_secs(1)).await;
    assert!(
        detail.contains("still being made") && !detail.contains("no usable answer"),
        "{detail}"
    );
    // The STS call went on without its caller; the retry finds its result.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = get().await.expect("an answer");
    assert_eq!(answer.status(), 200);
    let credentials: serde_json::Value =
        serde_json::from_str(&answer.text().await.expect("a body")).expect("credentials");
    assert!(credentials["Token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(proxy.requests(), 1, "one STS call for both");
}

/// `credential-process` against a service whose STS is slower than its deadline:
/// it follows the retry hint, and prints the credentials the STS call went on to make
/// (the AWS CLI would fail the command on the first answer).
#[tokio::test]
async fn credential_process_follows_the_retry_hint_of_a_slow_sts() {
    let (moto, proxy, mut setup) = sts_behind_a_proxy("cp-slow", "5s", 1).await;
    setup
        .extra_config
        .push_str("\n[server]\nrequest_timeout = \"1s\"\n");
    let service = Service::start_at(&moto.endpoint, setup).await;
    proxy.set(Fault::Delay(Duration::from_millis(1500)));
    let started = Instant::now();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_storage-grants"));
    command
        .args([
            "credential-process",
            "--endpoint",
            &format!("http://{}", service.addr),
            "--bucket",
            "demo",
            "--prefix",
            "tenants/a/",
            "--access",
            "read",
        ])
        .env("STORAGE_GRANTS_TOKEN", TOKEN.as_str());
    // Off this runtime, which goes on serving the service the process calls.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run credential-process");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "exit {:?} after {took:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(took >= Duration::from_millis(1500), "no retry: {took:?}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(printed["Version"], 1);
    assert!(
        printed["SessionToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(
        proxy.requests(),
        1,
        "one STS call, its credentials from the cache"
    );
}

/// A healthy STS slower than a caller's deadline: the caller is told to retry and
/// that the credentials are still being made (not that STS is unreachable), and the
/// retry gets them from the cache, from the one STS call.
#[tokio::test]
async fn a_deadline_shorter_than_sts_is_answered_retry_and_the_retry_is_served() {
    let (moto, proxy, setup) = sts_behind_a_proxy("short-deadline", "5s", 1).await;
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    // A deadline of a second: the service answers a fifth of it early (200 ms), what a
    // busy test host needs; at 200 ms (answered 40 ms early) the caller's clock ran out
    // first under CI load.
    let deadline = Duration::from_secs(1);
    proxy.set(Fault::Delay(Duration::from_millis(2000)));
    let started = Instant::now();
    let status = client
        .assume_scoped(assume_within(deadline))
        .await
        .expect_err("STS answers after the deadline");
    assert!(started.elapsed() < deadline, "{:?}", started.elapsed());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    let message = status.message();
    assert!(
        message.contains("still being made") && !message.contains("no usable answer"),
        "{message}"
    );
    // The STS call went on without its caller; the retry finds its result.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let response = client
        .assume_scoped(assume_within(deadline))
        .await
        .expect("the session the first call started")
        .into_inner();
    assert!(response.credentials.is_some());
    assert_eq!(proxy.requests(), 1, "one STS call for both");
}

/// A call still running when its connection reaches `server.max_connection_age` (STS
/// answering slowly) finishes and is answered: the connection is sent away, not cut.
#[tokio::test]
async fn a_call_in_flight_when_its_connection_ages_out_is_answered() {
    let (moto, proxy, mut setup) = sts_behind_a_proxy("aging", "5s", 1).await;
    setup
        .extra_config
        .push_str("[server]\nmax_connection_age = \"1s\"\n");
    let service = Service::start_at(&moto.endpoint, setup).await;
    let mut client = service.client().await;
    let connected = Instant::now();
    // STS answers after 2 s: the call spans the connection's age (1 s).
    proxy.set(Fault::Delay(Duration::from_secs(2)));
    let answer = client
        .assume_scoped(assume_within(Duration::from_secs(8)))
        .await
        .expect("the call in flight finishes on its aged connection");
    assert!(
        connected.elapsed() > Duration::from_secs(2),
        "answered after {:?}, before STS did",
        connected.elapsed()
    );
    assert!(answer.into_inner().credentials.is_some());
}

#[tokio::test]
async fn fetched_jwks_keys_keep_working_while_the_jwks_endpoint_is_down() {
    let store = demo_store().await;
    let issuer = Issuer::new();
    let proxy = FaultProxy::start(Upstream::Json(issuer.jwks())).await;
    let mut setup = Setup::new();
    setup.extra_config = format!(
        "[identity.jwt]\nissuer = \"{}\"\naudiences = [\"{}\"]\njwks_url = \"{}/jwks.json\"\n\
         refresh_interval = \"1s\"\nmin_refresh_interval = \"1s\"\n",
        support::jwt::ISSUER,
        support::jwt::AUDIENCE,
        proxy.endpoint,
    );
    setup.rules.push_str(
        "\n[[rules]]\ncallers = [\"system:serviceaccount:team-a:web\"]\nbucket = \"demo\"\n\
         prefix = \"public/\"\nactions = [\"read\"]\n",
    );
    let service = Service::start(&store, setup).await;
    let mut client = service.client().await;
    let read = |token: &str| {
        authed(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "public/hello.txt".into(),
                ..Default::default()
            },
            token,
        )
    };
    let token = issuer.token("team-a", "web");
    client.grant_read(read(&token)).await.expect("keys fetched");

    // The endpoint fails every refresh from now on.
    proxy.set(Fault::Status(503));
    let failing_since = proxy.requests();
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.requests() < failing_since + 2 {
        assert!(Instant::now() < deadline, "the service stopped refreshing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Tokens signed by the fetched keys, old and new, still verify, and the grant works.
    for token in [token, issuer.token("team-a", "web")] {
        let grant = client
            .grant_read(read(&token))
            .await
            .expect("the fetched keys still verify")
            .into_inner();
        let object = http_get(&grant.url).await;
        assert_eq!(object.status(), 200);
    }
    // A key the service never fetched is still refused.
    let stranger = Issuer::new().token("team-a", "web");
    let refused = client.grant_read(read(&stranger)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Down altogether (connections refused): the same.
    proxy.set(Fault::Down);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client
        .grant_read(read(&issuer.token("team-a", "web")))
        .await
        .expect("the fetched keys still verify");
}

/// The service's credential chain: good credentials ending at `expires_at` until
/// `fail` is set, then only errors.
#[derive(Debug)]
struct FailingChain {
    expires_at: SystemTime,
    fail: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
}

impl ProvideCredentials for FailingChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        if self.fail.load(Ordering::SeqCst) {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
                "injected: the credential endpoint is down",
            )));
        }
        future::ProvideCredentials::ready(Ok(Credentials::new(
            support::ACCESS_KEY,
            support::SECRET_KEY.as_str(),
            None,
            Some(self.expires_at),
            "failing-chain",
        )))
    }
}

#[tokio::test]
async fn failing_credential_refresh_serves_until_expiry_then_unavailable_and_not_ready() {
    let store = demo_store().await;
    // Refreshed halfway through their life, at the earliest after 10 s: the refresh
    // at 10 s fails, and they expire at 14 s.
    let life = Duration::from_secs(14);
    let expires_at = SystemTime::now() + life;
    let started = Instant::now();
    let fail = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut setup = Setup::new();
    setup.credentials_provider = Some(SharedCredentialsProvider::new(FailingChain {
        expires_at,
        fail: fail.clone(),
        failures: failures.clone(),
    }));
    let service = Service::start(&store, setup).await;
    let mut client = service.client().await;
    let read = || {
        authed(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "public/hello.txt".into(),
                ..Default::default()
            },
            &TOKEN,
        )
    };
    client.grant_read(read()).await.expect("credentials loaded");
    fail.store(true, Ordering::SeqCst);

    // After the failed refresh, while the credentials have life left: grants work,
    // and claim no more than that life.
    tokio::time::sleep(
        (started + Duration::from_secs(11)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert!(
        failures.load(Ordering::SeqCst) > 0,
        "the chain was asked again"
    );
    let grant = client
        .grant_read(read())
        .await
        .expect("the current credentials still have life")
        .into_inner();
    let until = expires_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(grant.expires_at.unwrap().seconds <= until);
    assert_eq!(http_get(&grant.url).await.status(), 200);

    // Expired: UNAVAILABLE, saying why, and the grant service turns not ready.
    tokio::time::sleep(
        (started + life + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let status = client.grant_read(read()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("credentials"), "{status:?}");
    // A multipart call is not sent to the store with them either.
    let status = client
        .start_multipart_upload(authed(
            storage_grants::proto::StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: "public/after-expiry.bin".into(),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("credentials"), "{status:?}");
    let mut health = HealthClient::new(service.channel().await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: "storagegrants.v1.GrantService".into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        if status == ServingStatus::NotServing as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with expired credentials"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gateway request received whole whose answer waits on a store slower than
/// `server.request_timeout` is answered 503 with `Retry-After` before the deadline, as
/// the gRPC door answers it: the client sent everything, so not a 408 that blames its
/// pace; once the store is quick again the same request is served, by the real store
/// behind the proxy.
#[tokio::test]
async fn a_gateway_answer_that_waits_on_a_slow_store_is_503_in_time_not_408() {
    let store = demo_store().await;
    let proxy = FaultProxy::start(Upstream::Url(store.endpoint.clone())).await;
    let service = Service::start_at(
        &proxy.endpoint,
        Setup::with_config(
            "[server]\nrequest_timeout = \"1s\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\
             allowed_origins = [\"http://app.example\"]\nupload_bucket = \"demo\"\n",
        ),
    )
    .await;
    let create = || {
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/s3/multipart",
                service.http_port()
            ))
            .bearer_auth(TOKEN.as_str())
            .header("content-type", "application/json")
            .body(r#"{"filename": "slow.bin", "type": "application/octet-stream"}"#)
            .send()
    };
    proxy.set(Fault::Delay(Duration::from_secs(3)));
    let detail = retry_within(create(), 503, Duration::from_secs(1)).await;
    assert!(
        detail.contains("the store had not answered") && !detail.contains("body"),
        "{detail}"
    );
    // A body that took part of the deadline to arrive leaves the store the rest: the
    // answer is still the store's 503, before the deadline, not the net's 504.
    let body = r#"{"filename": "slow.bin", "type": "application/octet-stream"}"#;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", service.http_port()))
        .await
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(
            format!(
                "POST /s3/multipart HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                *TOKEN,
                body.len(),
                &body[..5]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "after {took:?}: {answer}"
    );
    assert!(took < Duration::from_secs(1), "answered after {took:?}");

    proxy.set(Fault::None);
    let answer = create().await.expect("an answer");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&answer.text().await.expect("a body")).expect("JSON");
    assert!(
        body["uploadId"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
}

/// The store behind the proxy for multipart calls: a failure on its side (HTTP 5xx,
/// S3's `SlowDown`) is UNAVAILABLE with a retry hint on both doors, as STS's is; a
/// refusal of the service's own request (403) is INTERNAL, the log saying why.
#[tokio::test]
async fn a_store_failing_on_its_side_is_unavailable_with_a_retry_hint_a_refusal_internal() {
    let proxy = FaultProxy::start(Upstream::Json("{}".into())).await;
    let service = Service::start_at(
        &proxy.endpoint,
        Setup::with_config(
            "[http]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"http://app.example\"]\n\
             upload_bucket = \"demo\"\n",
        ),
    )
    .await;
    let mut client = service.client().await;
    let start = || {
        authed(
            storage_grants::proto::StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: "public/faults/big.bin".into(),
                ..Default::default()
            },
            &TOKEN,
        )
    };
    for (fault, says) in [
        (Fault::Status(503), "the store failed (HTTP 503"),
        (Fault::Status(500), "the store failed (HTTP 500"),
        // A 200 that is not the store's answer (a proxy's page): not a refusal; nor a
        // 404 page without S3's error code.
        (
            Fault::Answer(200, NOT_AN_ANSWER),
            "no usable answer from the store: HTTP 200: malformed response",
        ),
        (
            Fault::Status(404),
            "no usable answer from the store: HTTP 404: malformed response",
        ),
        (
            Fault::Answer(404, ""),
            "no usable answer from the store: HTTP 404: malformed response",
        ),
        (
            Fault::Answer(404, "<Error><Code></Code><Message>gone</Message></Error>"),
            "no usable answer from the store: HTTP 404: malformed response",
        ),
    ] {
        proxy.set(fault);
        let status = client
            .start_multipart_upload(start())
            .await
            .expect_err("the store fails");
        assert_eq!(status.code(), Code::Unavailable, "{fault:?}: {status:?}");
        assert!(
            status.get_details_retry_info().is_some(),
            "{fault:?}: no RetryInfo in {status:?}"
        );
        assert!(status.message().contains(says), "{fault:?}: {status:?}");
    }
    proxy.set(Fault::Status(403));
    let status = client
        .start_multipart_upload(start())
        .await
        .expect_err("the store refuses");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("operator's logs"), "{status:?}");

    // The gateway's Uppy route: 503 with Retry-After.
    proxy.set(Fault::Status(503));
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/s3/multipart",
            service.http_port()
        ))
        .bearer_auth(TOKEN.as_str())
        .header("content-type", "application/json")
        .body(r#"{"filename": "big.bin", "type": "application/octet-stream"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"), "{answer:?}");
}
