//! Scoped credentials that AWS SDKs fetch and refresh by themselves: the Rust SDK's
//! default chain configured by environment only (the container provider), against the
//! gateway's endpoint and against the loopback proxy; `credential-process` from the
//! binary; and every refusal at the endpoint. STS and S3 are moto's.
//!
//! The SDK runs in a child process (this test binary, re-run for one test with
//! `SG_SDK_CHILD` set), because the container provider reads only the process
//! environment.

use crate::support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use reqwest::StatusCode;
use serde_json::Value;
use support::{Moto, OTHER_TOKEN, Service, Setup, TOKEN};

const RULES: &str = r#"
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
max_ttl = "30m"

[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "tenants/short/"
actions = ["assume-read"]
max_ttl = "15m"
"#;

struct World {
    moto: Moto,
    service: Service,
    gateway: String,
    metrics: String,
    dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
}

async fn world() -> World {
    let moto = Moto::start();
    let (key, secret) = moto.service_identity().await;
    let role_arn = moto
        .create_role(
            "sdk-test",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
        )
        .await;
    let credentials = Credentials::new(key, secret, None, None, "moto");
    admin(&moto.endpoint, credentials.clone())
        .create_bucket()
        .bucket("demo")
        .send()
        .await
        .expect("create bucket");
    let mut setup = Setup::new();
    setup.rules = RULES.into();
    setup.credentials = credentials;
    setup.extra_config = format!(
        r#"
[sts]
role_arn = "{role_arn}"
endpoint = "{endpoint}"
call_timeout = "2s"
max_attempts = 1
role_chaining = false

[http]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"
"#,
        endpoint = moto.endpoint
    );
    let service = Service::start_at(&moto.endpoint, setup).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN.as_str()).unwrap();
    let world = World {
        gateway: format!("http://127.0.0.1:{}", service.http_port()),
        metrics: format!("http://127.0.0.1:{}/metrics", service.metrics_port()),
        moto,
        service,
        dir,
        token_file,
    };
    wait_for(&format!("{}/healthz", world.gateway)).await;
    world
}

/// Polls `url` for about 5 s until it answers. Each try gives up after 1 s, so that a
/// listener that accepts and never answers cannot hold it.
async fn wait_for(url: &str) {
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..100 {
        if probe.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

fn admin(endpoint: &str, credentials: Credentials) -> aws_sdk_s3::Client {
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

/// Scoped credentials granted so far, as the service counts them.
async fn granted(world: &World) -> u64 {
    let text = reqwest::get(&world.metrics)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with("storage_grants_grants_total{")
                && l.contains("action=\"assume-read\"")
                && l.contains("outcome=\"granted\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map(|n| n as u64)
        .unwrap_or(0)
}

/// Runs `test` again in a child process with the SDK's environment: the container
/// provider's URI and token file, and nothing else that could give credentials.
/// `token_file` is what the SDK sends as `Authorization`.
async fn run_sdk_child(test: &str, world: &World, uri: &str, token_file: &std::path::Path) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SG_SDK_CHILD", "1")
        .env("SG_MOTO_ENDPOINT", &world.moto.endpoint)
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/nonexistent/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let output = run(command).await;
    assert!(
        output.status.success(),
        "the SDK child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `command` off the runtime, which keeps serving the in-process service.
async fn run(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("the command runs"))
        .await
        .unwrap()
}

/// A clock the test moves forward; the SDK signs and caches by it.
#[derive(Debug, Clone, Default)]
struct Clock(Arc<AtomicU64>);

impl aws_smithy_async::time::TimeSource for Clock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::Relaxed))
    }
}

/// In the child: the default chain finds the container provider from the environment;
/// put, get and list inside the prefix; then, 29 min 55 s later by the SDK's clock
/// (inside the identity cache's 10 s refresh buffer of 30-minute credentials), the
/// SDK fetches new credentials by itself and the next calls still work.
async fn sdk_child() {
    let clock = Clock::default();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(storage_grants::aws::http_client())
        .time_source(clock.clone())
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .endpoint_url(std::env::var("SG_MOTO_ENDPOINT").unwrap())
            .force_path_style(true)
            .build(),
    );
    let put = |key: &'static str| {
        s3.put_object()
            .bucket("demo")
            .key(key)
            .body(b"from the Rust SDK".to_vec().into())
            .send()
    };
    put("tenants/a/rust.txt")
        .await
        .expect("put with fetched credentials");
    let body = s3
        .get_object()
        .bucket("demo")
        .key("tenants/a/rust.txt")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(body.as_ref(), b"from the Rust SDK");
    let listed = s3
        .list_objects_v2()
        .bucket("demo")
        .prefix("tenants/a/")
        .send()
        .await
        .expect("list");
    assert!(
        listed
            .contents()
            .iter()
            .any(|o| o.key() == Some("tenants/a/rust.txt"))
    );
    clock.0.store(29 * 60 + 55, Ordering::Relaxed);
    put("tenants/a/rust-after-refresh.txt")
        .await
        .expect("put after the SDK refreshed its credentials");
}

#[tokio::test]
async fn the_rust_sdk_fetches_and_refreshes_from_the_container_endpoint() {
    if std::env::var_os("SG_SDK_CHILD").is_some() {
        return sdk_child().await;
    }
    let world = world().await;
    let before = granted(&world).await;
    run_sdk_child(
        "credentials::the_rust_sdk_fetches_and_refreshes_from_the_container_endpoint",
        &world,
        &format!(
            "{}/v1/credentials/demo/tenants/a/?access=read-write&list=true",
            world.gateway
        ),
        &world.token_file,
    )
    .await;
    let fetches = granted(&world).await - before;
    assert!(
        fetches >= 2,
        "the SDK fetched {fetches} time(s); a refresh needs 2"
    );
}

/// `credentials-proxy` in front of the service at `endpoint`, presenting the caller's
/// `token_file`, serving until `stop` signals.
struct LoopbackProxy {
    port: u16,
    /// The app's token: written by the proxy (in `dir`), sent by the SDK; not the
    /// caller's.
    app_token_file: std::path::PathBuf,
    /// Its value, as written.
    app_token: String,
    stop: storage_grants::server::StopSender,
    task: tokio::task::JoinHandle<Result<(), storage_grants::cli::Error>>,
}

impl LoopbackProxy {
    async fn start(
        dir: &std::path::Path,
        endpoint: String,
        token_file: std::path::PathBuf,
    ) -> Self {
        let upstream = storage_grants::cli::Upstream::new(storage_grants::cli::UpstreamOptions {
            endpoint,
            token_file: Some(token_file),
            ..Default::default()
        })
        .unwrap();
        let app_token_file = dir.join("app-token");
        let app_token =
            storage_grants::cli::proxy::AppToken::load_or_create(&app_token_file).unwrap();
        let listening = storage_grants::cli::proxy::bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind the proxy");
        let port = listening.addr().port();
        let (stop, signals) = storage_grants::server::StopSignals::manual();
        let task = tokio::spawn(storage_grants::cli::proxy::serve(
            listening, upstream, app_token, signals,
        ));
        LoopbackProxy {
            port,
            app_token: std::fs::read_to_string(&app_token_file).unwrap(),
            app_token_file,
            stop,
            task,
        }
    }
}

#[tokio::test]
async fn the_rust_sdk_fetches_and_refreshes_through_the_loopback_proxy() {
    if std::env::var_os("SG_SDK_CHILD").is_some() {
        return sdk_child().await;
    }
    let world = world().await;
    let LoopbackProxy {
        port,
        app_token_file,
        app_token: app_token_value,
        stop,
        task: proxy,
    } = LoopbackProxy::start(
        world.dir.path(),
        format!("http://{}", world.service.addr),
        world.token_file.clone(),
    )
    .await;
    let before = granted(&world).await;
    run_sdk_child(
        "credentials::the_rust_sdk_fetches_and_refreshes_through_the_loopback_proxy",
        &world,
        &format!(
            "http://127.0.0.1:{port}/v1/credentials/demo/tenants/a/?access=read-write&list=true"
        ),
        &app_token_file,
    )
    .await;
    let fetches = granted(&world).await - before;
    assert!(
        fetches >= 2,
        "the SDK fetched {fetches} time(s) through the proxy"
    );
    let scope = format!("http://127.0.0.1:{port}/v1/credentials/demo/tenants/a/?access=read");
    // Only the app gets credentials: a request without the app's token (a forgery in
    // the app, a page in a browser), with the caller's token instead, or addressed by a
    // name that rebinds to loopback is refused, with what to send.
    let before = granted(&world).await;
    for (authorization, host, status, says) in [
        (None, None, 401, "was not sent as Authorization"),
        (Some(TOKEN.as_str()), None, 401, "is not Authorization"),
        (
            Some(&app_token_value[1..]),
            None,
            401,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ),
        (
            Some(app_token_value.as_str()),
            Some("evil.example"),
            403,
            "loopback address (127.0.0.1, [::1]) or localhost",
        ),
        (
            Some(app_token_value.as_str()),
            Some("localhost.evil.example:80"),
            403,
            "another name",
        ),
    ] {
        let mut request = reqwest::Client::new().get(&scope);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{host:?}");
        let problem = response.text().await.unwrap();
        assert!(problem.contains(says), "{problem}");
        assert!(!problem.contains(&app_token_value) && !problem.contains(TOKEN.as_str()));
    }
    // Every name a request gives itself is checked: none (HTTP/1.0 without Host), an
    // absolute-form target, a second Host.
    for request in [
        "GET /v1/credentials/demo/tenants/a/?access=read HTTP/1.0\r\n",
        "GET http://evil.example/v1/credentials/demo/tenants/a/?access=read HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "GET /v1/credentials/demo/tenants/a/?access=read HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n",
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let whole =
            format!("{request}Authorization: {app_token_value}\r\nConnection: close\r\n\r\n");
        stream.write_all(whole.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.split(' ').nth(1) == Some("403"),
            "{request}: {answer}"
        );
        assert!(!answer.contains("SecretAccessKey"), "{answer}");
    }
    assert_eq!(
        granted(&world).await,
        before,
        "no refused request reached the service"
    );
    // The proxy answers what the gateway's endpoint answers, the account included.
    let body: Value = reqwest::Client::new()
        .get(&scope)
        .header("authorization", &app_token_value)
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap()
        .json_value()
        .await;
    assert_eq!(body["AccountId"], "123456789012", "{}", body["AccountId"]);
    assert!(body["Token"].as_str().is_some_and(|t| !t.is_empty()));
    // A HEAD would make credentials only to throw them away: refused, as the gateway does.
    let head = reqwest::Client::new()
        .head(format!(
            "http://127.0.0.1:{port}/v1/credentials/demo/tenants/a/?access=read"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 405);
    assert_eq!(head.headers()["allow"], "GET");
    // A wrong path or a missing access is a problem body saying what to send.
    for (path, status, says) in [
        ("/v1/credential/demo/tenants/a/", 404, "no such route"),
        ("/v1/credentials/demo/tenants/a/", 400, "access is required"),
    ] {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("authorization", &app_token_value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let problem = response.json_value().await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{path}: {problem}"
        );
    }
    stop.signal();
    proxy.await.unwrap().unwrap();
}

/// The proxy finishes its requests in flight at the first stop signal, and closes
/// them at the second: an upstream that never answers does not hold it.
#[tokio::test]
async fn a_second_stop_signal_closes_the_proxys_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "caller-token").unwrap();
    let LoopbackProxy {
        port,
        app_token: app_token_value,
        stop,
        task: proxy,
        ..
    } = LoopbackProxy::start(
        dir.path(),
        format!("http://{}", black_hole.local_addr().unwrap()),
        token_file,
    )
    .await;
    let request = tokio::spawn(
        reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{port}/v1/credentials/demo/tenants/a/?access=read"
            ))
            .header("authorization", app_token_value.trim())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "the upstream answered");
    stop.signal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !proxy.is_finished(),
        "the first signal did not wait for the request"
    );
    stop.signal();
    tokio::time::timeout(Duration::from_secs(2), proxy)
        .await
        .expect("the second signal ends the proxy")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_proxy_listens_on_loopback_only() {
    let err = storage_grants::cli::proxy::bind(([0, 0, 0, 0], 0).into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}

/// `storage-grants credential-process` for `prefix` of bucket demo.
fn credential_process(world: &World, prefix: &str, access: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storage-grants"));
    command.args([
        "credential-process",
        "--endpoint",
        &format!("http://{}", world.service.addr),
        "--bucket",
        "demo",
        "--prefix",
        prefix,
        "--access",
        access,
    ]);
    command
}

#[tokio::test]
async fn credential_process_prints_json_whose_credentials_work() {
    let world = world().await;
    let mut command = credential_process(&world, "tenants/a/", "read-write");
    command
        .arg("--list")
        .arg("--token-file")
        .arg(&world.token_file);
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["Version"], 1);
    assert_eq!(json["AccountId"], "123456789012");
    let expiration = json["Expiration"].as_str().unwrap();
    assert!(
        expiration.ends_with('Z') && expiration.len() == 24,
        "{expiration}"
    );
    let s3 = admin(
        &world.moto.endpoint,
        Credentials::new(
            json["AccessKeyId"].as_str().unwrap(),
            json["SecretAccessKey"].as_str().unwrap(),
            Some(json["SessionToken"].as_str().unwrap().to_owned()),
            None,
            "credential-process",
        ),
    );
    s3.put_object()
        .bucket("demo")
        .key("tenants/a/cp.txt")
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect("put with credential_process credentials");
    // A refusal is a message on stderr and a failing exit, never a token.
    let mut command = credential_process(&world, "tenants/b/", "read");
    command.env("STORAGE_GRANTS_TOKEN", TOKEN.as_str());
    let output = run(command).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the service refused (PERMISSION_DENIED): caller 'dev:demo' may"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN.as_str()), "{stderr}");
}

#[tokio::test]
async fn the_endpoint_refuses_with_the_status_an_sdk_understands() {
    let mut world = world().await;
    let get = |path: &str, token: Option<&str>| {
        let mut request = reqwest::Client::new().get(format!("{}{path}", world.gateway));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        request.send()
    };
    let ok = get("/v1/credentials/demo/tenants/a/?access=read", Some(&TOKEN))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let body: Value = ok.json_value().await;
    for field in [
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
        "AccountId",
    ] {
        assert!(
            body[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {body}"
        );
    }
    assert_eq!(body["AccountId"], "123456789012");
    for (path, token, status, code) in [
        (
            "/v1/credentials/demo/tenants/a/?access=read",
            None,
            401,
            "UNAUTHENTICATED",
        ),
        (
            "/v1/credentials/demo/tenants/a/?access=read",
            Some(OTHER_TOKEN.as_str()),
            403,
            "PERMISSION_DENIED",
        ),
        (
            "/v1/credentials/demo/other/?access=read",
            Some(TOKEN.as_str()),
            403,
            "PERMISSION_DENIED",
        ),
        (
            "/v1/credentials/demo/tenants/a?access=read",
            Some(TOKEN.as_str()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "/v1/credentials/demo/tenants/a/?access=all",
            Some(TOKEN.as_str()),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "/v1/credentials/demo/tenants/a/",
            Some(TOKEN.as_str()),
            400,
            "INVALID_ARGUMENT",
        ),
        // Sessions shorter than the SDKs' refresh windows would be fetched again on
        // every call: the rule that makes them so is named.
        (
            "/v1/credentials/demo/tenants/short/?access=read",
            Some(TOKEN.as_str()),
            409,
            "FAILED_PRECONDITION",
        ),
    ] {
        let response = get(path, token).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {token:?}");
        let body: Value = response.json_value().await;
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // What to change is named: the parameter at fault, the missing prefix.
    for (path, says) in [
        (
            "/v1/credentials/demo/tenants/a/?access=read&lst=true",
            "lst",
        ),
        (
            "/v1/credentials/demo/tenants/a/?access=read&list=yes",
            "list=true|false",
        ),
        ("/v1/credentials/demo/?access=read", "name a prefix"),
        ("/v1/credentials/demo?access=read", "name a prefix"),
    ] {
        let response = get(path, Some(&TOKEN)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = response.json_value().await;
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{path}: {body}"
        );
    }
    // STS unreachable (a scope not cached yet): 503 with Retry-After.
    world.moto.stop();
    let down = get("/v1/credentials/demo/tenants/a/?access=write", Some(&TOKEN))
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.headers().contains_key("retry-after"));
    assert_eq!(down.json_value().await["code"], "UNAVAILABLE");
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}
