//! Test harness: a real S3-compatible store (s3s-fs) on loopback, and the service
//! running in-process against it. Nothing here mocks S3.
#![allow(dead_code)]

pub mod certs;
pub mod faults;
pub mod jwt;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use storage_grants::config::Settings;
use storage_grants::proto::grant_service_client::GrantServiceClient;
use tonic::transport::Channel;

pub const ACCESS_KEY: &str = "sgtestaccesskey";
pub const REGION: &str = "us-east-1";

/// This run's canary: `SG_CANARY` (scripts/test.sh sets one per run, and scans
/// everything the run wrote for it at the end), else random per test process. Every
/// secret the tests hand the service contains it, so a leak anywhere is found by one
/// search.
pub static CANARY: LazyLock<String> = LazyLock::new(|| {
    std::env::var("SG_CANARY")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .expect("the system random generator is available");
            format!("canary{}", hex::encode(bytes))
        })
});
/// The store's secret key (s3s-fs's, and the service's signing key).
pub static SECRET_KEY: LazyLock<String> = LazyLock::new(|| format!("sgsecret-{}", *CANARY));
/// The dev token of caller `dev:demo`.
pub static TOKEN: LazyLock<String> = LazyLock::new(|| format!("dev-token-{}", *CANARY));
/// The dev token of caller `dev:other`.
pub static OTHER_TOKEN: LazyLock<String> = LazyLock::new(|| format!("dev-token-other-{}", *CANARY));

/// Where the tests leave what the service wrote (logs, exported spans, metrics
/// scrapes) for the run's final canary scan: `SG_TEST_ARTIFACTS`, else nowhere.
pub fn artifacts_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("SG_TEST_ARTIFACTS")?);
    std::fs::create_dir_all(&dir).expect("create SG_TEST_ARTIFACTS");
    Some(dir)
}

/// Keeps `text` (a metrics scrape, a log) as `NAME-PID` in [`artifacts_dir`].
pub fn keep_artifact(name: &str, text: &str) {
    if let Some(dir) = artifacts_dir() {
        let path = dir.join(format!("{name}-{}", std::process::id()));
        std::fs::write(path, text).expect("write test artifact");
    }
}

/// The s3s-fs binary installed by `scripts/tools.sh`.
fn s3s_fs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SG_S3S_FS") {
        return p.into();
    }
    let tools = std::env::var_os("SG_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("storage-grants"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/storage-grants")
        });
    let bin = tools.join("s3s-fs-0.14.1/bin/s3s-fs");
    assert!(
        bin.exists(),
        "s3s-fs is not installed at {}; run ./scripts/test.sh, which installs it",
        bin.display()
    );
    bin
}

/// A loopback port that refuses every connection while this lives: bound, so no other
/// process (a server of a test running alongside) can take it, and never listening,
/// so the kernel answers each connection with a reset. A port merely found free and
/// released can be taken by another server before the test connects to it.
pub struct RefusingPort {
    _bound: tokio::net::TcpSocket,
    pub port: u16,
}

pub fn refusing_port() -> RefusingPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("a free loopback port");
    let port = socket.local_addr().expect("its address").port();
    RefusingPort {
        _bound: socket,
        port,
    }
}

/// The port of the first `127.0.0.1:PORT` in `line`.
pub fn loopback_port(line: &str) -> Option<u16> {
    let rest = line.split("127.0.0.1:").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Which output of a child names its port.
#[derive(Clone, Copy)]
pub enum Output {
    Stdout,
    Stderr,
}

/// Starts `command` (asked to listen on port 0, with `output` piped) and returns the
/// child with the loopback port named on its first line containing `marker`. The rest
/// of that output is drained, so the child never blocks on a full pipe.
pub fn spawn_on_reported_port(mut command: Command, output: Output, marker: &str) -> (Child, u16) {
    use std::io::BufRead;
    let program = format!("{:?}", command.get_program());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let stream: Box<dyn std::io::Read + Send> = match output {
        Output::Stdout => Box::new(child.stdout.take().expect("stdout is piped")),
        Output::Stderr => Box::new(child.stderr.take().expect("stderr is piped")),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut lines = std::io::BufReader::new(stream).lines();
        let found = lines.by_ref().map_while(Result::ok).find_map(|line| {
            let port = line
                .contains(&marker)
                .then(|| loopback_port(&line))
                .flatten();
            if port.is_none() {
                seen.push(line);
            }
            port
        });
        let _ = tx.send(found.ok_or_else(|| seen.join("\n")));
        // Drained until the child exits.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(port)) => (child, port),
        Ok(Err(said)) => {
            let _ = child.kill();
            panic!("{program} exited without naming its port; it said:\n{said}")
        }
        Err(_) => {
            let _ = child.kill();
            panic!("{program} did not name its port within 20 s")
        }
    }
}

fn wait_for_port(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running s3s-fs with its own data directory, stopped on drop.
pub struct Store {
    child: Child,
    pub endpoint: String,
    pub root: tempfile::TempDir,
}

impl Store {
    pub fn start() -> Store {
        let root = tempfile::tempdir().expect("temp dir");
        // Port 0 and the port read back from s3s-fs's start-up line: a port picked here
        // could be taken by a parallel test before s3s-fs bound it.
        let mut command = Command::new(s3s_fs_binary());
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", &SECRET_KEY])
            .arg(root.path())
            .env("RUST_LOG", "s3s_fs=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let (child, port) = spawn_on_reported_port(command, Output::Stdout, "server is running at");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_port(addr, "s3s-fs");
        Store {
            child,
            endpoint: format!("http://{addr}"),
            root,
        }
    }

    /// An SDK client with the store's own key, for setting up fixtures over HTTP.
    pub fn admin(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY.as_str(),
                None,
                None,
                "test",
            ))
            .http_client(storage_grants::aws::http_client())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        self.admin()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("create bucket");
    }

    pub async fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.admin()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .expect("put object");
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the service under test is set up.
pub struct Setup {
    /// The rules file's content.
    pub rules: String,
    /// Extra TOML appended to the config.
    pub extra_config: String,
    /// Extra keys of the config's `[storage]` section.
    pub storage_config: String,
    /// Credentials the service signs with.
    pub credentials: Credentials,
    /// Where the service gets its credentials instead, when set (a chain that fails).
    pub credentials_provider: Option<SharedCredentialsProvider>,
    /// How often the service checks its rules file for changes.
    pub rules_reload_interval: &'static str,
}

impl Setup {
    /// The usual set-up: caller `dev:demo` may read and write under `public/` of
    /// bucket `demo` for at most 15 minutes; `dev:other` only under `other/`.
    pub fn new() -> Setup {
        Setup {
            rules: r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read", "write"]
max_ttl = "15m"

[[rules]]
callers = ["dev:other"]
bucket = "demo"
prefix = "other/"
actions = ["read"]
max_ttl = "15m"
"#
            .into(),
            extra_config: String::new(),
            storage_config: String::new(),
            credentials: Credentials::new(ACCESS_KEY, SECRET_KEY.as_str(), None, None, "test"),
            credentials_provider: None,
            rules_reload_interval: "200ms",
        }
    }

    /// The usual set-up with the rules of `extra` after the usual ones.
    pub fn with_more_rules(extra: &str) -> Setup {
        let mut setup = Setup::new();
        setup.rules.push_str(extra);
        setup
    }

    /// The usual set-up with `extra` added to the service's configuration.
    pub fn with_config(extra: impl Into<String>) -> Setup {
        Setup {
            extra_config: extra.into(),
            ..Setup::new()
        }
    }
}

/// The service running in-process on a loopback port.
pub struct Service {
    pub addr: SocketAddr,
    /// The HTTP gateway's address, when `[http]` is configured (give it port 0).
    pub http: Option<SocketAddr>,
    /// The metrics address, when `[metrics]` is configured (give it port 0).
    pub metrics: Option<SocketAddr>,
    shutdown: Option<storage_grants::server::StopSender>,
    task: Option<tokio::task::JoinHandle<Result<(), storage_grants::server::Error>>>,
    _dir: tempfile::TempDir,
}

impl Service {
    pub async fn start(store: &Store, setup: Setup) -> Service {
        Service::start_at(&store.endpoint, setup).await
    }

    /// The service against the S3 endpoint `endpoint`.
    pub async fn start_at(endpoint: &str, setup: Setup) -> Service {
        // The service's log, shown for failing tests, and kept for the canary scan.
        init_log();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("rules.toml"), &setup.rules).expect("write rules");
        let text = format!(
            r#"
listen = "127.0.0.1:0"
[storage]
region = "{REGION}"
endpoint = "{endpoint}"
force_path_style = true
check_interval = "1s"
{storage}
[grants]
default_ttl = "5m"
max_ttl = "1h"
rules_file = "rules.toml"
rules_reload_interval = "{reload}"
[identity]
dev_mode = true
[[identity.dev_tokens]]
token = "{TOKEN}"
caller = "dev:demo"
[[identity.dev_tokens]]
token = "{OTHER_TOKEN}"
caller = "dev:other"
{extra}
"#,
            extra = setup.extra_config,
            storage = setup.storage_config,
            reload = setup.rules_reload_interval,
            TOKEN = *TOKEN,
            OTHER_TOKEN = *OTHER_TOKEN,
        );
        let config = Settings::from_toml(&text, &dir.path().join("config.toml"), dir.path(), [])
            .expect("valid test config");
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(
                setup
                    .credentials_provider
                    .unwrap_or_else(|| SharedCredentialsProvider::new(setup.credentials)),
            )
            .http_client(storage_grants::aws::http_client())
            .build();
        // Bound here, so that the ports the system picked are known before serving.
        let listeners = storage_grants::server::Listeners::bind(&config)
            .await
            .expect("bind the configured addresses");
        let addr = listeners.grpc_addr();
        let (http, metrics) = (listeners.http_addr(), listeners.metrics_addr());
        let (tx, signals) = storage_grants::server::StopSignals::manual();
        let task = tokio::spawn(storage_grants::server::run(config, aws, listeners, signals));
        Service {
            addr,
            http,
            metrics,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// The rules file the service reads, to change it while the service runs.
    pub fn rules_path(&self) -> PathBuf {
        self._dir.path().join("rules.toml")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the service")
    }

    /// The HTTP gateway's port; the test configured `[http]`.
    pub fn http_port(&self) -> u16 {
        self.http.expect("[http] is configured").port()
    }

    /// The metrics port; the test configured `[metrics]`.
    pub fn metrics_port(&self) -> u16 {
        self.metrics.expect("[metrics] is configured").port()
    }

    pub async fn client(&self) -> GrantServiceClient<Channel> {
        GrantServiceClient::new(self.channel().await)
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(self) -> Result<(), storage_grants::server::Error> {
        self.stop_signalled(None).await
    }

    /// Signals shutdown, and again `after` that (cutting the drain short), and waits for
    /// `run` to return.
    pub async fn stop_twice(self, after: Duration) -> Result<(), storage_grants::server::Error> {
        self.stop_signalled(Some(after)).await
    }

    async fn stop_signalled(
        mut self,
        again: Option<Duration>,
    ) -> Result<(), storage_grants::server::Error> {
        let task = self.task.take().expect("task present until stop");
        if let Some(tx) = self.shutdown.take() {
            tx.signal();
            if let Some(after) = again {
                tokio::time::sleep(after).await;
                tx.signal();
            }
        }
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.signal();
        }
    }
}

/// The in-process service's log: the test's output (shown when it fails), and a file
/// in [`artifacts_dir`] for the canary scan.
fn init_log() {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let builder = tracing_subscriber::fmt().with_env_filter("info");
    let _ = match artifacts_dir() {
        Some(dir) => {
            let file = std::fs::File::create(dir.join(format!("log-{}", std::process::id())))
                .expect("create the test log file");
            builder
                .with_writer(
                    tracing_subscriber::fmt::TestWriter::new().and(std::sync::Mutex::new(file)),
                )
                .try_init()
        }
        None => builder.with_test_writer().try_init(),
    };
}

/// The claims of an upload token, `v1.<base64url JSON>.<tag>`, read without its key
/// (the tag is the service's to check): `u` the upload id, `e` the expiry.
pub fn upload_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let claims = token.split('.').nth(1).expect("a v1 upload token");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64url claims");
    serde_json::from_slice(&json).expect("JSON claims")
}

/// The audit events this test process writes from now on (nextest runs each test in a
/// process of its own): a function answering the lines written so far.
pub fn capture_audit() -> impl Fn() -> Vec<String> {
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl storage_grants::telemetry::AuditDestination for Captured {
        fn append(&self, line: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(line);
        }
    }
    let audit = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    assert!(
        storage_grants::telemetry::install_audit(vec![Box::new(Captured(audit.clone()))]),
        "the audit destinations were installed already in this process"
    );
    move || {
        String::from_utf8(audit.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A request with the caller's bearer token.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// The demo store: bucket `demo` with `public/hello.txt`, `public/other.txt` and
/// `private/secret.txt`.
pub async fn demo_store() -> Store {
    let store = Store::start();
    store.create_bucket("demo").await;
    store
        .put("demo", "public/hello.txt", b"hello, storage-grants\n")
        .await;
    store
        .put("demo", "public/other.txt", b"another object\n")
        .await;
    store
        .put("demo", "private/secret.txt", b"not for you\n")
        .await;
    store
}

/// Plain HTTP GET, no AWS SDK: what any client of a presigned URL does.
pub async fn http_get(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("HTTP request")
}

/// A multipart/form-data POST of `fields`, then `body` as the file part
/// `file_field`, as a browser sends a POST policy form; answers the status.
pub async fn post_form<'a>(
    url: &str,
    fields: impl IntoIterator<Item = (&'a String, &'a String)>,
    file_field: &str,
    body: &[u8],
) -> u16 {
    let boundary = "----storage-grants-test-boundary";
    let mut form = Vec::new();
    for (name, value) in fields {
        form.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    form.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"upload.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n"
        )
        .as_bytes(),
    );
    form.extend_from_slice(body);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    reqwest::Client::new()
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .expect("POST")
        .status()
        .as_u16()
}

/// A running moto server (local STS, IAM and S3) on loopback, stopped on drop.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
}

fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SG_MOTO") {
        return p.into();
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        bin.exists(),
        "moto_server is not installed at {}; run ./scripts/test.sh, which installs it",
        bin.display()
    );
    bin
}

/// The header that routes an unsigned request to one of moto's services. moto picks
/// the service from the credential scope; with its auth checks off it does not verify
/// the signature, which is what the set-up phase relies on.
fn moto_route(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

impl Moto {
    /// Moto on a port of the system's choosing.
    pub fn start() -> Moto {
        Moto::start_on(0)
    }

    /// Moto on `port` (0: the system picks, and moto names it), e.g. again on the
    /// port of one that was stopped.
    pub fn start_on(port: u16) -> Moto {
        let mut command = Command::new(moto_binary());
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (child, port) = spawn_on_reported_port(command, Output::Stderr, "Running on");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_for_port(addr, "moto_server");
        Moto {
            child: Some(child),
            port,
            endpoint: format!("http://{addr}"),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Calls a query-protocol action (IAM, STS) during set-up, before auth is on.
    pub async fn call(&self, service: &str, params: &[(&str, &str)]) -> String {
        let version = if service == "iam" {
            "2010-05-08"
        } else {
            "2011-06-15"
        };
        let mut form: Vec<(&str, &str)> = params.to_vec();
        form.push(("Version", version));
        let response = reqwest::Client::new()
            .post(format!("{}/", self.endpoint))
            .header("authorization", moto_route(service))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{k}={}", urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&"),
            )
            .send()
            .await
            .expect("moto call");
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            status.is_success(),
            "moto {service} {params:?}: {status}: {body}"
        );
        body
    }

    /// Creates the service's own IAM user with an access key, allowed to assume
    /// roles and to use S3 (for its readiness check); returns (key id, secret).
    pub async fn service_identity(&self) -> (String, String) {
        self.call(
            "iam",
            &[("Action", "CreateUser"), ("UserName", "storage-grants")],
        )
        .await;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole","s3:*"],"Resource":"*"}]}"#;
        self.call(
            "iam",
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", "storage-grants"),
                ("PolicyName", "service"),
                ("PolicyDocument", policy),
            ],
        )
        .await;
        let body = self
            .call(
                "iam",
                &[
                    ("Action", "CreateAccessKey"),
                    ("UserName", "storage-grants"),
                ],
            )
            .await;
        (
            xml_value(&body, "AccessKeyId"),
            xml_value(&body, "SecretAccessKey"),
        )
    }

    /// The service's IAM user and role `name` allowed all of S3 (the session policy
    /// narrows it); returns (key id, secret, role ARN).
    pub async fn service_with_s3_role(&self, name: &str) -> (String, String, String) {
        let (key, secret) = self.service_identity().await;
        let role_arn = self
            .create_role(
                name,
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
            )
            .await;
        (key, secret, role_arn)
    }

    /// Creates role `name` with `policy` as its inline permissions; returns its ARN.
    pub async fn create_role(&self, name: &str, policy: &str) -> String {
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/storage-grants"},"Action":["sts:AssumeRole","sts:SetSourceIdentity"]}]}"#;
        let body = self
            .call(
                "iam",
                &[
                    ("Action", "CreateRole"),
                    ("RoleName", name),
                    ("AssumeRolePolicyDocument", trust),
                ],
            )
            .await;
        self.call(
            "iam",
            &[
                ("Action", "PutRolePolicy"),
                ("RoleName", name),
                ("PolicyName", "scope"),
                ("PolicyDocument", policy),
            ],
        )
        .await;
        xml_value(&body, "Arn")
    }

    /// Turns moto's authentication and IAM checks on from now on.
    pub async fn enable_auth(&self) {
        let response = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .body("0")
            .send()
            .await
            .expect("reset-auth");
        assert!(response.status().is_success());
    }

    /// The sessions moto's STS has issued, as moto records them.
    pub async fn assumed_roles(&self) -> Vec<serde_json::Value> {
        let text = reqwest::Client::new()
            .get(format!("{}/moto-api/data.json", self.endpoint))
            .send()
            .await
            .expect("moto data")
            .text()
            .await
            .expect("moto data");
        let data: serde_json::Value = serde_json::from_str(&text).expect("moto data is JSON");
        data["sts"]["AssumedRole"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_value(body: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = body
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {body}"))
        + open.len();
    let end = body[start..].find('<').expect("closing tag") + start;
    body[start..end].to_owned()
}

/// The value of `series` (name and labels, exactly as rendered) in a metrics page.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// The metrics page on `port`.
pub async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the metrics endpoint answers");
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Polls the metrics page on `port` until `series` satisfies `want`, for at most 10
/// seconds, and returns that page.
pub async fn metrics_when(port: u16, series: &str, want: impl Fn(u64) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = scrape(port).await;
        if want(metric(&text, series)) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached the wanted value:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// When the keepalive timer of the server's socket from `local` to the client's
/// `peer` port (IPv4 loopback) fires, if that timer is the one pending
/// (`/proc/net/tcp`'s `tr` 2).
pub fn keepalive_timer(local: u16, peer: u16) -> Option<Duration> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if port(fields[1])? != local || port(fields[2])? != peer {
            return None;
        }
        let (kind, when) = fields[5].split_once(':')?;
        (kind == "02")
            .then(|| Duration::from_millis(u64::from_str_radix(when, 16).unwrap_or(0) * 10))
    })
}

/// `GET /healthz` over TLS to `port` (trusting `ca`), offering only `http/1.1` in
/// ALPN: the protocol the handshake agreed, and the head of the answer; or why the
/// handshake failed.
pub async fn http1_only_get(
    port: u16,
    ca: &certs::Ca,
) -> Result<(Option<Vec<u8>>, String), String> {
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = ca.client_config();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let protocol = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    Ok((protocol, text.lines().next().unwrap_or_default().to_owned()))
}

/// Reads an HTTP/2 connection's frames until the server closes it, acknowledging its
/// SETTINGS, and its PINGs when `answer_pings`; returns the error code of the last
/// GOAWAY, if one came, and when the connection closed (since `opened`).
pub async fn frames_until_closed(
    raw: &mut tokio::net::TcpStream,
    answer_pings: bool,
    opened: Instant,
) -> (Option<u32>, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut goaway = None;
    loop {
        let mut head = [0u8; 9];
        if raw.read_exact(&mut head).await.is_err() {
            return (goaway, opened.elapsed());
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if raw.read_exact(&mut payload).await.is_err() {
            return (goaway, opened.elapsed());
        }
        match (head[3], head[4]) {
            // GOAWAY: its error code is the last four bytes.
            (7, _) => goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
            // PING without ACK.
            (6, 0) if answer_pings => {
                let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                let _ = raw.write_all(&ack).await;
            }
            // SETTINGS without ACK.
            (4, 0) => {
                let _ = raw.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
            }
            _ => {}
        }
    }
}
