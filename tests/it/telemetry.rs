//! The binary as an operator runs it with an OpenTelemetry collector and Prometheus:
//! spans exported over OTLP/gRPC to a real receiver on loopback (built on the
//! protocol's official Python bindings, `scripts/otlp-receiver.py`) continue the
//! caller's W3C trace and carry the RPC's attributes; one grant id joins the
//! response, the audit file, the span and the STS session name; the metrics scrape
//! passes `promtool check metrics`; and no secret of the run reaches the log, the
//! audit file, a span or the scrape.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use storage_grants::proto::grant_service_client::GrantServiceClient;
use storage_grants::proto::{Access, AssumeScopedRequest, GrantReadRequest};
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::support::{self, Moto, TOKEN, refusing_port};

const BIN: &str = env!("CARGO_BIN_EXE_storage-grants");

const RULES: &str = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read", "assume-read"]
max_ttl = "30m"
"#;

/// AssumeScoped for reading `demo/public/`, which [`RULES`] allow `dev:demo`.
fn read_public() -> AssumeScopedRequest {
    AssumeScopedRequest {
        bucket: "demo".into(),
        prefix: "public/".into(),
        access: Access::Read as i32,
        ..Default::default()
    }
}

/// GrantRead of `key` in `demo` as the dev caller.
fn read_demo(key: impl Into<String>) -> tonic::Request<GrantReadRequest> {
    support::authed(
        GrantReadRequest {
            bucket: "demo".into(),
            key: key.into(),
            ..Default::default()
        },
        &TOKEN,
    )
}

/// A child process stopped (SIGTERM, then kill) on drop.
pub(crate) struct Process(pub(crate) Child);

impl Process {
    /// Sends it SIGTERM.
    pub(crate) fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
    }

    /// Its exit status, if it exits within `limit` (blocks the thread meanwhile).
    pub(crate) fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for the child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.exit_within(Duration::from_secs(30))
            .expect("the child did not stop on SIGTERM")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The OTLP receiver, once it accepts calls, and its port (the system's pick).
fn start_receiver(out: &Path) -> (Process, u16) {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "no {}; run ./scripts/test.sh, which installs scripts/requirements.txt",
        python.display()
    );
    let mut command = Command::new(python);
    command
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/otlp-receiver.py"))
        .arg("0")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (child, port) =
        support::spawn_on_reported_port(command, support::Output::Stdout, "listening on");
    (Process(child), port)
}

/// promtool, from `SG_PROMTOOL` (scripts/test.sh), the tools directory or the PATH.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("SG_PROMTOOL") {
        return p.into();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let tools = std::env::var_os("SG_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache/storage-grants"));
    let unpacked = tools.join("prometheus-deb/usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    PathBuf::from("promtool")
}

/// The port the service logged with `message` once it bound it (the config asks for
/// port 0, so that no other test can take the port first).
pub(crate) async fn logged_port(log_file: &Path, message: &str) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(log_file).unwrap_or_default();
        let port = log
            .lines()
            .find(|l| l.contains(message))
            .and_then(support::loopback_port);
        if let Some(port) = port {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not log {message:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of the service that logs to `log_file`, once it listens.
async fn connect(log_file: &Path) -> GrantServiceClient<Channel> {
    GrantServiceClient::new(channel(log_file).await)
}

/// A channel to the service that logs to `log_file`, once it listens.
async fn channel(log_file: &Path) -> Channel {
    let port = logged_port(log_file, "storage-grants listening").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("valid uri")
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(e) => {
                assert!(Instant::now() < deadline, "the service did not start: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A request with the dev token and a W3C `traceparent` naming the caller's span.
fn traced<T>(message: T, trace_id: &str, span_id: &str) -> tonic::Request<T> {
    let mut request = support::authed(message, &TOKEN);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{span_id}-01").parse().unwrap(),
    );
    request
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf).unwrap();
    hex::encode(buf)
}

fn spans(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON span"))
        .collect()
}

fn find<'a>(spans: &'a [Value], trace_id: &str, name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["trace_id"] == trace_id && s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in trace {trace_id}: {spans:#?}"))
}

/// The config both tests share (the service on a port of the system's choosing, which
/// it logs; logging in `log_format`; the store or STS at `endpoint`; caller `dev:demo`
/// with the run's token), then `extra`.
pub(crate) fn write_config(dir: &Path, log_format: &str, endpoint: &str, extra: &str) {
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
log_format = "{log_format}"
[storage]
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
check_buckets = []
[grants]
rules_file = "rules.toml"
[identity]
dev_mode = true
[[identity.dev_tokens]]
token = "{token}"
caller = "dev:demo"
{extra}
"#,
        token = *TOKEN,
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

/// A directory with the config of [`write_config`] in text format, its store
/// unreachable, and `extra`.
fn text_config(extra: &str) -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    write_config(work.path(), "text", "http://127.0.0.1:9", extra);
    work
}

/// The binary with `dir`'s config, `env` and nothing else of this environment; its
/// stderr goes to `dir/service.log`, returned.
pub(crate) fn spawn_service(dir: &Path, env: &[(&str, &str)]) -> (Process, PathBuf) {
    spawn_service_in(Command::new(BIN), dir, env)
}

/// As [`spawn_service`], run by `command` (the binary, or a wrapper given it).
fn spawn_service_in(mut command: Command, dir: &Path, env: &[(&str, &str)]) -> (Process, PathBuf) {
    let log_file = dir.join("service.log");
    let child = command
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .expect("start storage-grants");
    (Process(child), log_file)
}

#[tokio::test]
async fn spans_audit_and_metrics_join_on_the_grant_id_and_hold_no_secret() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let moto = Moto::start();
    let (key_id, secret, role_arn) = moto.service_with_s3_role("telemetry").await;

    let spans_file = dir.join("spans.jsonl");
    let (_receiver, receiver_port) = start_receiver(&spans_file);

    write_config(
        dir,
        "json",
        &moto.endpoint,
        &format!(
            r#"
[sts]
role_arn = "{role_arn}"
endpoint = "{endpoint}"
role_chaining = false
[metrics]
listen = "127.0.0.1:0"
[audit]
file = "audit.jsonl"
[http]
listen = "127.0.0.1:0"
allowed_origins = ["https://app.example"]
[server]
grpc_web = true
"#,
            endpoint = moto.endpoint,
        ),
    );
    let otlp = format!("http://127.0.0.1:{receiver_port}");
    let (service, log_file) = spawn_service(
        dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_SERVICE_NAME", "storage-grants-test"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
            ("AWS_ACCESS_KEY_ID", key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    );
    let mut client = connect(&log_file).await;

    // A presigned GET, an AssumeScoped and a refusal, each in a caller's trace.
    let (read_trace, read_parent) = (random_hex(16), random_hex(8));
    let read = client
        .grant_read(traced(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "public/report.csv".into(),
                ..Default::default()
            },
            &read_trace,
            &read_parent,
        ))
        .await
        .expect("GrantRead")
        .into_inner();
    let (assume_trace, assume_parent) = (random_hex(16), random_hex(8));
    let assumed = client
        .assume_scoped(traced(read_public(), &assume_trace, &assume_parent))
        .await
        .expect("AssumeScoped")
        .into_inner();
    let (deny_trace, deny_parent) = (random_hex(16), random_hex(8));
    let denied = client
        .grant_read(traced(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "private/payroll.csv".into(),
                ..Default::default()
            },
            &deny_trace,
            &deny_parent,
        ))
        .await
        .expect_err("outside the rules");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // A request to change: no audit event, but its span says so and names the caller.
    let (invalid_trace, invalid_parent) = (random_hex(16), random_hex(8));
    let invalid = client
        .grant_read(traced(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "public//double-slash".into(),
                ..Default::default()
            },
            &invalid_trace,
            &invalid_parent,
        ))
        .await
        .expect_err("an empty path segment");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    // A probe's health check, in a trace of its own.
    let (health_trace, health_parent) = (random_hex(16), random_hex(8));
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&log_file).await);
    let check = traced(
        tonic_health::pb::HealthCheckRequest::default(),
        &health_trace,
        &health_parent,
    );
    health.check(check).await.expect("the health check");
    // A click-time link through the HTTP gateway, in a caller's trace too.
    let (link_trace, link_parent) = (random_hex(16), random_hex(8));
    let gateway_port = logged_port(&log_file, "HTTP gateway listening").await;
    let link = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "http://127.0.0.1:{gateway_port}/v1/objects/demo/public/report.csv"
        ))
        .header("authorization", format!("Bearer {}", *TOKEN))
        .header("traceparent", format!("00-{link_trace}-{link_parent}-01"))
        .send()
        .await
        .expect("the click-time link");
    assert_eq!(link.status(), 302);
    // A gRPC-Web CORS preflight, in a trace of its own: no call, so no span.
    let (preflight_trace, preflight_parent) = (random_hex(16), random_hex(8));
    let grpc_port = logged_port(&log_file, "storage-grants listening").await;
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://127.0.0.1:{grpc_port}/storagegrants.v1.GrantService/GrantRead"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "traceparent",
            format!("00-{preflight_trace}-{preflight_parent}-01"),
        )
        .send()
        .await
        .expect("the preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());

    let metrics_port = logged_port(&log_file, "metrics at GET /metrics").await;
    let scrape = support::scrape(metrics_port).await;
    let scrape_file = dir.join("scrape.txt");
    std::fs::write(&scrape_file, &scrape).unwrap();
    let promtool = promtool();
    let checked = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape_file).unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e}; ./scripts/test.sh installs promtool",
                promtool.display()
            )
        });
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}\n{scrape}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for series in [
        "storage_grants_rpc_duration_seconds_count{method=\"GrantRead\",code=\"OK\"} 1",
        "storage_grants_rpc_duration_seconds_count{method=\"GrantRead\",code=\"PERMISSION_DENIED\"} 1",
        "storage_grants_rpc_duration_seconds_count{method=\"AssumeScoped\",code=\"OK\"} 1",
        "storage_grants_sts_assume_role_total{result=\"issued\"} 1",
        "storage_grants_sts_cache_total{outcome=\"miss\"} 1",
        "storage_grants_rpc_in_flight 0",
        "storage_grants_http_request_duration_seconds_count{route=\"/v1/objects/{bucket}/{*key}\",status=\"3xx\"} 1",
    ] {
        assert!(scrape.contains(series), "no {series} in:\n{scrape}");
    }
    // Each log destination's failure counters exist from the start, at 0: a series
    // that first appears at 1 is no `increase` to an alert.
    for destination in ["stderr", "audit_file"] {
        for counter in [
            "log_write_failures_total",
            "log_lines_dropped_total",
            "log_bytes_lost_total",
        ] {
            let series = format!("storage_grants_{counter}{{destination=\"{destination}\"}} 0");
            assert!(
                scrape.lines().any(|l| l == series),
                "no {series} in:\n{scrape}"
            );
        }
    }

    // SIGTERM: the service drains, flushes its last spans and exits 0. The wait runs
    // off this runtime, which must go on to close the dropped client's connection.
    drop(client);
    let status = tokio::task::spawn_blocking(move || service.terminate())
        .await
        .expect("the waiting thread");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(status.success(), "exit {status}:\n{log}");
    let spans = spans(&spans_file);
    assert!(
        !spans
            .iter()
            .any(|s| s["trace_id"] == preflight_trace.as_str()),
        "the preflight was traced"
    );

    // GrantRead: the caller's trace continues, with the RPC's attributes.
    let span = find(
        &spans,
        &read_trace,
        "storagegrants.v1.GrantService/GrantRead",
    );
    eprintln!(
        "GrantRead span as the receiver saw it:\n{}",
        serde_json::to_string_pretty(span).unwrap()
    );
    assert_eq!(span["parent_span_id"], read_parent.as_str());
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    let attrs = &span["attributes"];
    for (key, want) in [
        ("rpc.system", Value::from("grpc")),
        ("rpc.service", Value::from("storagegrants.v1.GrantService")),
        ("rpc.method", Value::from("GrantRead")),
        // Numbers, as the semantic conventions have them (the receiver keeps types).
        ("rpc.grpc.status_code", Value::from(0)),
        ("caller", Value::from("dev:demo")),
        ("bucket", Value::from("demo")),
        ("decision", Value::from("granted")),
        ("grant_id", Value::from(read.grant_id.as_str())),
    ] {
        assert_eq!(attrs[key], want, "{key} in {span:#}");
    }
    // Its audit event is a span event, with the audit line's fields.
    let events = span["events"].as_array().expect("span events");
    let issued = events
        .iter()
        .find(|e| e["name"] == "grant issued")
        .unwrap_or_else(|| panic!("no audit event on the span: {span:#}"));
    assert_eq!(issued["attributes"]["grant_id"], read.grant_id.as_str());
    assert_eq!(issued["attributes"]["outcome"], "granted");
    assert_eq!(issued["attributes"]["action"], "read");
    assert!(issued["attributes"]["ttl_secs"].is_i64(), "{issued:#}");
    assert!(issued["attributes"]["rule_line"].is_i64(), "{issued:#}");
    assert_eq!(span["resource"]["service.name"], "storage-grants-test");
    assert_eq!(span["resource"]["deployment.environment"], "test");

    // The refusal: its code and decision, no grant id.
    let span = find(
        &spans,
        &deny_trace,
        "storagegrants.v1.GrantService/GrantRead",
    );
    assert_eq!(span["attributes"]["rpc.grpc.status_code"], 7);
    assert_eq!(span["attributes"]["decision"], "denied");
    assert!(span["attributes"].get("grant_id").is_none(), "{span:#}");
    assert!(
        span["events"].as_array().is_some_and(|events| events
            .iter()
            .any(|e| e["name"] == "grant denied" && e["attributes"]["outcome"] == "denied")),
        "no denial event on the span: {span:#}"
    );

    let span = find(
        &spans,
        &invalid_trace,
        "storagegrants.v1.GrantService/GrantRead",
    );
    assert_eq!(span["attributes"]["decision"], "invalid", "{span:#}");
    assert_eq!(span["attributes"]["caller"], "dev:demo", "{span:#}");
    assert_eq!(span["attributes"]["rpc.grpc.status_code"], 3);
    // The health check: traced under its own name (what a collector filters probes
    // by), and counted.
    let span = find(&spans, &health_trace, "grpc.health.v1.Health/Check");
    assert_eq!(span["parent_span_id"], health_parent.as_str());
    assert!(
        scrape
            .contains("storage_grants_rpc_duration_seconds_count{method=\"Check\",code=\"OK\"} 1"),
        "{scrape}"
    );

    // The gateway's request: a server span in the caller's trace, named by its route
    // (never by the key asked for), with the same decision attributes as a call.
    let span = find(&spans, &link_trace, "GET /v1/objects/{bucket}/{*key}");
    assert_eq!(span["parent_span_id"], link_parent.as_str());
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    for (key, want) in [
        ("http.request.method", Value::from("GET")),
        ("http.route", Value::from("/v1/objects/{bucket}/{*key}")),
        ("http.response.status_code", Value::from(302)),
        ("caller", Value::from("dev:demo")),
        ("bucket", Value::from("demo")),
        ("decision", Value::from("granted")),
    ] {
        assert_eq!(span["attributes"][key], want, "{key} in {span:#}");
    }
    assert!(span["attributes"]["grant_id"].is_string(), "{span:#}");

    // AssumeScoped: one grant id in the response, the span, its STS child span, the
    // audit file and the STS session name.
    let grant_id = assumed.grant_id.as_str();
    let rpc = find(
        &spans,
        &assume_trace,
        "storagegrants.v1.GrantService/AssumeScoped",
    );
    assert_eq!(rpc["parent_span_id"], assume_parent.as_str());
    assert_eq!(rpc["attributes"]["grant_id"], grant_id);
    let sts = find(&spans, &assume_trace, "sts.AssumeRole");
    assert_eq!(sts["parent_span_id"], rpc["span_id"]);
    assert_eq!(sts["attributes"]["grant_id"], grant_id);
    assert_eq!(sts["attributes"]["result"], "issued");
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.len(), 4, "one event per decision:\n{audit}");
    let event = events
        .iter()
        .find(|e| e["grant_id"] == grant_id)
        .unwrap_or_else(|| panic!("no audit event for {grant_id}:\n{audit}"));
    assert_eq!(event["outcome"], "granted");
    assert_eq!(event["caller"], "dev:demo");
    assert_eq!(event["action"], "assume-read");
    assert_eq!(event["scope"], "public/");
    assert!(
        events
            .iter()
            .any(|e| e["grant_id"] == read.grant_id.as_str())
    );
    assert!(events.iter().any(|e| e["outcome"] == "denied"));
    let sessions = moto.assumed_roles().await;
    assert!(
        sessions
            .iter()
            .any(|s| s["session_name"].as_str().unwrap_or("").contains(grant_id)),
        "no STS session named after {grant_id}: {sessions:?}"
    );

    // No secret of this run anywhere the service wrote.
    let credentials = assumed.credentials.expect("credentials");
    let signature = read
        .url
        .split("X-Amz-Signature=")
        .nth(1)
        .expect("a signed URL")
        .to_owned();
    let exported = std::fs::read_to_string(&spans_file).unwrap();
    let secrets = [
        ("the dev token", TOKEN.as_str()),
        ("the service's secret key", secret.as_str()),
        (
            "the scoped secret key",
            credentials.secret_access_key.as_str(),
        ),
        (
            "the scoped session token",
            credentials.session_token.as_str(),
        ),
        ("the URL's signature", signature.as_str()),
        ("the presigned URL", read.url.as_str()),
    ];
    for (what, text) in [
        ("the log", &log),
        ("the audit file", &audit),
        ("the exported spans", &exported),
        ("the metrics scrape", &scrape),
    ] {
        for (secret_name, secret) in secrets {
            assert!(!text.contains(secret), "{secret_name} is in {what}");
        }
    }
    for (name, text) in [
        ("otlp-spans", &exported),
        ("binary-log", &log),
        ("audit", &audit),
        ("scrape", &scrape),
    ] {
        support::keep_artifact(name, text);
    }
}

/// Audit events are written by a thread of their own, off the call's path: under a
/// burst of grants none is lost, each appears once in the audit file and once in the
/// log, and those still queued when SIGTERM arrives are written before the exit. The
/// audit "file" is a FIFO nobody reads until SIGTERM, so that the events are still
/// queued in the service when it is told to stop.
#[tokio::test]
async fn every_audit_event_of_a_burst_is_written_before_exit() {
    const CALLS: usize = 4_000;
    const IN_FLIGHT: usize = 64;
    let work = tempfile::tempdir().unwrap();
    // The FIFO is read only after SIGTERM.
    let AuditFifo {
        service,
        log_file,
        client,
        read: go,
        reader,
        ..
    } = with_audit_fifo(work.path()).await;

    let mut ids = std::collections::HashSet::new();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        if calls.len() == IN_FLIGHT {
            ids.insert(calls.join_next().await.unwrap().unwrap());
        }
        let mut client = client.clone();
        calls.spawn(async move {
            client
                .grant_read(read_demo(format!("public/burst/{i}.csv")))
                .await
                .expect("GrantRead")
                .into_inner()
                .grant_id
        });
    }
    while let Some(id) = calls.join_next().await {
        ids.insert(id.unwrap());
    }
    assert_eq!(ids.len(), CALLS, "one distinct grant id per call");

    // Whatever is still queued must reach the FIFO before the exit.
    drop(client);
    go.send(()).unwrap();
    let status = tokio::task::spawn_blocking(move || service.terminate())
        .await
        .expect("the waiting thread");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(status.success(), "exit {status}");

    let audit = reader.join().expect("the FIFO reader");
    let mut written = std::collections::HashSet::new();
    for line in audit.lines() {
        let event: Value = serde_json::from_str(line).expect("one whole JSON object per line");
        assert_eq!(event["outcome"], "granted", "{line}");
        let id = event["grant_id"].as_str().expect("a grant id").to_owned();
        assert!(written.insert(id), "an event written twice: {line}");
    }
    let missing = ids.difference(&written).count();
    let unknown = written.difference(&ids).count();
    assert_eq!(
        (missing, unknown),
        (0, 0),
        "audit events missing for {missing} of {CALLS} grants; {unknown} events for no grant"
    );
    let logged = log.lines().filter(|l| l.contains("grant issued")).count();
    assert_eq!(logged, CALLS, "one log line per grant");
}

/// A dependency that cannot be reached: the caller hears which one and that it may
/// retry, in the service's own words; the operator's log says why, down to the
/// operating system's error, in either log format.
#[tokio::test]
async fn an_unreachable_sts_is_unavailable_to_the_caller_and_explained_in_the_log() {
    for format in ["text", "json"] {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        // Nothing listens there, and nothing can while the test runs: every connection
        // is refused.
        let closed = refusing_port();
        write_config(
            dir,
            format,
            "http://127.0.0.1:9",
            &format!(
                r#"
[sts]
role_arn = "arn:aws:iam::123456789012:role/unreachable"
endpoint = "http://127.0.0.1:{}"
role_chaining = false
call_timeout = "3s"
max_attempts = 1
"#,
                closed.port
            ),
        );
        let (service, log_file) = spawn_service(
            dir,
            &[
                ("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE"),
                ("AWS_SECRET_ACCESS_KEY", "unreachable-secret"),
            ],
        );
        let mut client = connect(&log_file).await;
        let status = client
            .assume_scoped(support::authed(read_public(), &TOKEN))
            .await
            .expect_err("STS is down");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("no usable answer from STS: connection failed"),
            "{status:?}"
        );
        // The cause is the operator's, not the caller's.
        assert!(!status.message().contains("os error"), "{status:?}");

        drop(client);
        let exit = tokio::task::spawn_blocking(move || service.terminate())
            .await
            .expect("the waiting thread");
        assert!(exit.success(), "{format}: exit {exit}");
        let log = std::fs::read_to_string(&log_file).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains("STS unavailable"))
            .unwrap_or_else(|| panic!("{format}: no warning in the log:\n{log}"));
        assert!(
            line.contains("no usable answer from STS: connection failed: ")
                && line.contains("Connection refused"),
            "{format}: {line}"
        );
        assert!(!log.contains("unreachable-secret"), "{format}: {log}");
        if format == "json" {
            let event: Value = serde_json::from_str(line).expect("a JSON log line");
            assert!(
                event["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Connection refused")),
                "{event}"
            );
        }
    }
}

/// A collector that cannot be reached: the dropped spans are counted and the log says
/// why, once, instead of the SDK dropping them without a word.
#[tokio::test]
async fn spans_a_collector_cannot_take_are_counted_and_logged() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let moto = Moto::start();
    write_config(
        dir,
        "json",
        &moto.endpoint,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    // A port nothing listens on, or can while the test runs.
    let closed = refusing_port();
    let otlp = format!("http://127.0.0.1:{}", closed.port);
    let (service, log_file) = spawn_service(
        dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&log_file).await);
    for _ in 0..3 {
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("the health check");
    }
    let metrics_port = logged_port(&log_file, "metrics at GET /metrics").await;
    support::metrics_when(
        metrics_port,
        "storage_grants_trace_export_failures_total",
        |n| n >= 3,
    )
    .await;
    drop(health);
    let status = tokio::task::spawn_blocking(move || service.terminate())
        .await
        .expect("the waiting thread");
    assert!(status.success(), "exit {status}");
    let log = std::fs::read_to_string(&log_file).unwrap();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("traces could not be exported"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("Connection refused"), "{}", warned[0]);
}

/// The service with its audit file a FIFO that a thread of the test opens (the service's
/// open waits for it) and reads only once told to (then to the end), the gRPC client,
/// the metrics port and the log.
struct AuditFifo {
    service: Process,
    log_file: PathBuf,
    client: GrantServiceClient<Channel>,
    channel: Channel,
    metrics_port: u16,
    read: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<String>,
}

async fn with_audit_fifo(dir: &Path) -> AuditFifo {
    write_config(
        dir,
        "text",
        "http://127.0.0.1:9",
        r#"
[limits]
grants_per_second = 1000000
grants_burst = 1000000
[metrics]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
[audit]
file = "audit.jsonl"
"#,
    );
    let fifo = dir.join("audit.jsonl");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let (read, wait_to_read) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&fifo).expect("open the FIFO");
        let mut text = String::new();
        if wait_to_read.recv().is_ok() {
            std::io::Read::read_to_string(&mut file, &mut text).expect("read the FIFO");
        }
        text
    });
    let (service, log_file) = spawn_service(
        dir,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAAUDITSTALL"),
            ("AWS_SECRET_ACCESS_KEY", "audit-stall-secret"),
            ("STORAGE_GRANTS_STORAGE__CHECK_INTERVAL", "\"1s\""),
            ("STORAGE_GRANTS_SERVER__REQUEST_TIMEOUT", "\"4s\""),
        ],
    );
    let channel = channel(&log_file).await;
    let metrics_port = logged_port(&log_file, "metrics at GET /metrics").await;
    AuditFifo {
        service,
        log_file,
        client: GrantServiceClient::new(channel.clone()),
        channel,
        metrics_port,
        read,
        reader,
    }
}

/// Grants with long keys (about 1.1 KB audit lines), 64 in flight, until one is held
/// back for 2 seconds; answers the grant ids of those that were answered.
async fn grant_until_held_back(client: &GrantServiceClient<Channel>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut calls = tokio::task::JoinSet::new();
    let padding = "x".repeat(900);
    for i in 0..40_000 {
        if calls.len() == 64 {
            match calls.join_next().await.unwrap().unwrap() {
                Some(id) => ids.push(id),
                None => return ids,
            }
        }
        let mut client = client.clone();
        let key = format!("public/stall/{padding}/{i}.csv");
        calls.spawn(async move {
            let call = client.grant_read(read_demo(key));
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(answer) => Some(answer.expect("GrantRead").into_inner().grant_id),
                Err(_) => None,
            }
        });
    }
    panic!("40,000 grants (about 44 MB of audit lines) were never held back");
}

#[tokio::test]
async fn a_stalled_audit_destination_holds_grants_back_but_not_health_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let stalled = with_audit_fifo(work.path()).await;
    let issued = grant_until_held_back(&stalled.client).await;

    // Held back at the door, not by a blocked thread: health answers, and the
    // metrics say why and turn the service not ready.
    let mut health = tonic_health::pb::health_client::HealthClient::new(stalled.channel.clone());
    let check = tokio::time::timeout(
        Duration::from_secs(1),
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .expect("the health check answers while grants are held back")
    .expect("health Check");
    assert_eq!(check.into_inner().status, 1, "the process is SERVING");
    let scrape =
        support::metrics_when(stalled.metrics_port, "storage_grants_ready", |v| v == 0).await;
    let backlog = scrape
        .lines()
        .find(|l| l.starts_with("storage_grants_log_backlog_bytes{destination=\"audit_file\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("the audit file's backlog is a series");
    assert!(backlog >= 8 << 20, "backlog {backlog} bytes:\n{scrape}");

    // A call that would wait past most of `request_timeout` (4 s) is told why, and to
    // retry elsewhere, rather than cut off: gRPC UNAVAILABLE with a retry hint, the
    // gateway 503 with Retry-After.
    let started = Instant::now();
    let status = stalled
        .client
        .clone()
        .grant_read(read_demo("public/held.csv"))
        .await
        .expect_err("held back");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("audit log is not taking events"),
        "{status:?}"
    );
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Within the caller's own deadline too, when that is the shorter.
    let started = Instant::now();
    let mut held = read_demo("public/held-with-a-deadline.csv");
    held.set_timeout(Duration::from_secs(2));
    let status = stalled
        .client
        .clone()
        .grant_read(held)
        .await
        .expect_err("held back");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let gateway = logged_port(&stalled.log_file, "HTTP gateway listening").await;
    let answer = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{gateway}/v1/objects/demo/public/hello.txt"
        ))
        .bearer_auth(TOKEN.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "2");

    // Once the destination reads again, the held grant goes through, and every
    // grant's event is in the file, whole.
    stalled.read.send(()).unwrap();
    let mut client = stalled.client.clone();
    let late = tokio::time::timeout(
        Duration::from_secs(20),
        client.grant_read(read_demo("public/after-the-stall.csv")),
    )
    .await
    .expect("a grant goes through once the audit file reads again")
    .expect("GrantRead")
    .into_inner()
    .grant_id;
    support::metrics_when(stalled.metrics_port, "storage_grants_ready", |v| v == 1).await;
    drop((client, health, stalled.client, stalled.channel));
    let status = tokio::task::spawn_blocking(move || stalled.service.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit {status}");
    let audit = stalled.reader.join().expect("the FIFO reader");
    let mut written = std::collections::HashSet::new();
    for line in audit.lines() {
        let event: Value = serde_json::from_str(line).expect("one whole JSON object per line");
        written.insert(event["grant_id"].as_str().expect("a grant id").to_owned());
    }
    let missing: Vec<_> = issued
        .iter()
        .chain([&late])
        .filter(|id| !written.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered grants have no audit event",
        missing.len(),
        issued.len() + 1
    );
    let log = std::fs::read_to_string(&stalled.log_file).unwrap();
    assert!(
        log.contains("not ready") && log.contains("not taking events"),
        "{log}"
    );
}

#[tokio::test]
async fn a_service_whose_audit_destination_takes_nothing_still_exits_and_says_so() {
    let work = tempfile::tempdir().unwrap();
    let stalled = with_audit_fifo(work.path()).await;
    grant_until_held_back(&stalled.client).await;
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || stalled.service.terminate())
        .await
        .unwrap();
    // The drain (`shutdown_grace`, 20 s by default, ends early once no call is in
    // flight) and the writers' 2 seconds.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the exit took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "lines were lost: exit 1, {status}");
    let log = std::fs::read_to_string(&stalled.log_file).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("took nothing in the last seconds")
                && l.contains("destination=\"audit_file\"")
                && l.contains("audit.jsonl")
                && l.contains("bytes_lost=")),
        "the log does not say what was lost:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    drop(stalled.read);
    stalled.reader.join().expect("the FIFO reader");
}

#[tokio::test]
async fn out_of_file_descriptors_the_probes_are_still_answered() {
    let work = text_config("[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let dir = work.path();
    // 64 descriptors, as `ulimit -n 64` gives.
    let mut limited = Command::new("prlimit");
    limited.args(["--nofile=64:64", BIN]);
    let (_service, log_file) = spawn_service_in(
        limited,
        dir,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAFDLIMIT"),
            ("AWS_SECRET_ACCESS_KEY", "fd-limit-secret"),
        ],
    );
    let grpc = logged_port(&log_file, "storage-grants listening").await;
    let metrics = logged_port(&log_file, "metrics at GET /metrics").await;
    // Connections that hold a descriptor each and say nothing: more than the limit.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", grpc))
                .await
                .expect("the kernel queues the connection"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for probe in ["/livez", "/readyz", "/metrics"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(3),
            reqwest::get(format!("http://127.0.0.1:{metrics}{probe}")),
        )
        .await
        .unwrap_or_else(|_| panic!("{probe} not answered out of descriptors"))
        .unwrap_or_else(|e| panic!("{probe}: {e}"));
        assert!(
            answer.status() == 200 || (probe == "/readyz" && answer.status() == 503),
            "{probe}: {}",
            answer.status()
        );
    }
    drop(held);
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("server.max_connections is more than the open-file limit leaves room for"),
        "{log}"
    );
    assert!(
        !log.contains("cannot accept connections"),
        "a listener ran out of descriptors:\n{log}"
    );
}

#[tokio::test]
async fn sighup_reopens_the_audit_file_for_log_rotation() {
    let work = text_config("[audit]\nfile = \"audit.jsonl\"\n");
    let dir = work.path();
    let (service, log_file) = spawn_service(
        dir,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAROTATE"),
            ("AWS_SECRET_ACCESS_KEY", "rotate-secret"),
        ],
    );
    let mut client = connect(&log_file).await;
    let grant = |client: &mut GrantServiceClient<Channel>, key: &'static str| {
        let mut client = client.clone();
        async move {
            client
                .grant_read(read_demo(key))
                .await
                .expect("GrantRead")
                .into_inner()
                .grant_id
        }
    };
    let events = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["grant_id"].clone())
            .collect::<Vec<_>>()
    };
    let wait_for = |file: &'static str, id: String| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !events(file).contains(&Value::String(id.clone())) {
            assert!(Instant::now() < deadline, "{id} never reached {file}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let before = grant(&mut client, "public/before.csv").await;
    wait_for("audit.jsonl", before.clone()).await;

    // logrotate's `create`: rename, then signal.
    std::fs::rename(dir.join("audit.jsonl"), dir.join("audit.jsonl.1")).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &service.0.id().to_string()])
        .status();
    let log = || std::fs::read_to_string(&log_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("the audit file is opened again") {
        assert!(Instant::now() < deadline, "SIGHUP not taken:\n{}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = grant(&mut client, "public/after.csv").await;
    wait_for("audit.jsonl", after.clone()).await;
    let rotated = events("audit.jsonl.1");
    assert!(rotated.contains(&Value::String(before)), "{rotated:?}");
    assert!(!rotated.contains(&Value::String(after)), "{rotated:?}");
}
