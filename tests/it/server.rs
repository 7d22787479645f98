//! The server around the grants: health, readiness against the real store,
//! reflection, and graceful shutdown.

use crate::support;

use prost::Message as _;
use std::time::{Duration, Instant};

use support::{Service, Setup, Store, demo_store};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(service: &Service, name: &str) -> ServingStatus {
    let mut client = HealthClient::new(service.channel().await);
    let response = client
        .check(HealthCheckRequest {
            service: name.into(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(response.status).expect("known status")
}

/// Polls until `name` reports `want` (readiness runs in the background).
async fn wait_for_health(service: &Service, name: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = health(service, name).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_is_serving_once_the_store_is_reachable() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    assert_eq!(health(&service, "").await, ServingStatus::Serving);
    wait_for_health(
        &service,
        "storagegrants.v1.GrantService",
        ServingStatus::Serving,
    )
    .await;
}

#[tokio::test]
async fn missing_bucket_keeps_the_grant_service_not_ready() {
    let store = Store::start();
    // The bucket the rules name does not exist.
    let service = Service::start(
        &store,
        Setup::with_config("[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        health(&service, "storagegrants.v1.GrantService").await,
        ServingStatus::NotServing
    );
    // The metrics say so too, for alerts per pod.
    let port = service.metrics_port();
    assert_eq!(
        support::metric(&support::scrape(port).await, "storage_grants_ready"),
        0
    );
    // Once it exists, the next check turns ready without a restart.
    store.create_bucket("demo").await;
    wait_for_health(
        &service,
        "storagegrants.v1.GrantService",
        ServingStatus::Serving,
    )
    .await;
    assert_eq!(
        support::metric(&support::scrape(port).await, "storage_grants_ready"),
        1
    );
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = ServerReflectionClient::new(service.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"storagegrants.v1.GrantService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test]
async fn shutdown_turns_health_off_and_returns() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut health_client = HealthClient::new(service.channel().await);
    let mut watch = health_client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let started = Instant::now();
    let stopping = tokio::spawn(service.stop());
    // The watcher sees NOT_SERVING before the server goes away.
    let update = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("health update before the server exits")
        .expect("watch stream intact")
        .expect("an update");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    // Then the server ends the watch (the client keeps it open and would otherwise
    // hold the drain for all of shutdown_grace, 20 s here): UNAVAILABLE, to watch
    // another replica.
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the watch ends soon after NOT_SERVING")
        .expect_err("ended by the server with a status");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    stopping.await.unwrap().expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with a watcher connected",
        started.elapsed()
    );
    drop(watch);
    drop(health_client);
}

/// A setup whose AssumeScoped calls wait `call_timeout` for an STS (`black_hole`) that
/// accepts connections and never answers: a call in flight that holds the drain.
fn held_by_sts(black_hole: &std::net::TcpListener, call_timeout: &str, extra: &str) -> Setup {
    let mut setup = Setup::new();
    setup.rules = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["assume-read"]
"#
    .into();
    setup.extra_config = format!(
        "[sts]\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\nendpoint = \"http://{}\"\ncall_timeout = \"{call_timeout}\"\nmax_attempts = 1\n{extra}",
        black_hole.local_addr().unwrap()
    );
    setup
}

/// An AssumeScoped call on its way through `client` (see [`held_by_sts`]).
async fn assume_in_flight(
    mut client: storage_grants::proto::grant_service_client::GrantServiceClient<
        tonic::transport::Channel,
    >,
) -> tokio::task::JoinHandle<
    Result<tonic::Response<storage_grants::proto::AssumeScopedResponse>, tonic::Status>,
> {
    use storage_grants::proto::{Access, AssumeScopedRequest};
    let call = tokio::spawn(async move {
        client
            .assume_scoped(support::authed(
                AssumeScopedRequest {
                    bucket: "demo".into(),
                    prefix: "public/".into(),
                    access: Access::Read as i32,
                    ..Default::default()
                },
                &support::TOKEN,
            ))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let store = demo_store().await;
    let service = Service::start(&store, held_by_sts(&black_hole, "1s", "")).await;
    let in_flight = assume_in_flight(service.client().await).await;
    let started = Instant::now();
    service.stop().await.expect("clean shutdown");
    // The call got the service's own answer (STS did not answer in time), not a
    // connection torn down by the shutdown.
    let status = in_flight.await.unwrap().unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "{}",
        status.message()
    );
    assert!(status.message().contains("STS"), "{}", status.message());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain was not bounded"
    );
}

#[tokio::test]
async fn the_drain_can_be_scraped_and_reports_the_pod_not_ready() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // The rules' bucket does not exist yet: the pod starts not ready.
    let store = Store::start();
    let setup = held_by_sts(&black_hole, "4s", "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let service = Service::start(&store, setup).await;
    let port = service.metrics_port();
    let in_flight = assume_in_flight(service.client().await).await;
    let stopping = tokio::spawn(service.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The drain is scraped like the rest of the pod's life, as not ready.
    assert_eq!(
        support::metric(&support::scrape(port).await, "storage_grants_ready"),
        0
    );
    assert_eq!(probe(port, "/readyz").await, 503);
    assert_eq!(probe(port, "/livez").await, 200);
    // A readiness check that passes during the drain (every 1 s here) does not report
    // the pod ready again.
    store.create_bucket("demo").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!stopping.is_finished(), "the call still holds the drain");
    assert_eq!(
        support::metric(&support::scrape(port).await, "storage_grants_ready"),
        0
    );
    stopping.await.unwrap().expect("clean shutdown");
    assert_eq!(
        in_flight.await.unwrap().unwrap_err().code(),
        tonic::Code::Unavailable
    );
    // Once the drain is over, the endpoint is gone with the rest.
    let after = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(after.is_err(), "{after:?}");
}

/// The status of `GET path` on the metrics port.
async fn probe(port: u16, path: &str) -> u16 {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("the metrics port answers")
        .status()
        .as_u16()
}

/// The metrics port answers HTTP probes in plaintext, whatever the gRPC port speaks:
/// `/readyz` follows the grant service's readiness (the rules' buckets reachable),
/// `/livez` the process.
#[tokio::test]
async fn the_metrics_port_answers_readiness_and_liveness_probes() {
    let store = Store::start();
    let mut setup = Setup::new();
    // The test config checks the store every second.
    setup.extra_config = "[metrics]\nlisten = \"127.0.0.1:0\"\n".into();
    let service = Service::start(&store, setup).await;
    let port = service.metrics_port();
    // The rules' bucket does not exist yet: not ready, alive.
    assert_eq!(probe(port, "/readyz").await, 503);
    assert_eq!(probe(port, "/livez").await, 200);
    store.create_bucket("demo").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while probe(port, "/readyz").await != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posted = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
    assert_eq!(posted.headers()["allow"], "GET, HEAD");
    let other = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert!(other.text().await.unwrap().contains("GET /readyz"));
}

#[tokio::test]
async fn oversized_request_is_resource_exhausted() {
    // gRPC's status codes document: a message larger than the receiver accepts is
    // RESOURCE_EXHAUSTED (tonic answers OUT_OF_RANGE by itself).
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let request = storage_grants::proto::GrantReadRequest {
        bucket: "demo".into(),
        key: "k".repeat(5 << 20),
        ..Default::default()
    };
    let status = service
        .client()
        .await
        .grant_read(support::authed(request, &support::TOKEN))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented_and_names_what_is_served() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut grpc = tonic::client::Grpc::new(service.channel().await);
    for path in [
        "/storagegrants.v1.GrantService/GrantDelete",
        "/storagegrants.v2.GrantService/GrantRead",
        "/grpc.health.v1.Health/Nope",
        "/nothing",
    ] {
        grpc.ready().await.unwrap();
        let status = grpc
            .unary::<(), (), _>(
                support::authed((), &support::TOKEN),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{path}: {status:?}"
        );
        let message = status.message();
        assert!(message.contains(path), "{message}");
        assert!(
            message.contains(
                "storagegrants.v1.GrantService/{GrantRead, GrantWrite, AssumeScoped, \
                 StartMultipartUpload"
            ) && message.contains("grpc.health.v1.Health/{Check, Watch}"),
            "{message}"
        );
    }
    // A served method still answers (`health` fails the test on any error).
    health(&service, "").await;
}

/// A connection that does not start HTTP/2 within `server.connection_timeout` (here,
/// half a client preface and then nothing) is closed; one that starts it but begins no
/// call by then is sent away (GOAWAY), and closed when its client neither leaves nor
/// answers; one that calls is served, and stays served past the timeout.
#[tokio::test]
async fn a_connection_that_does_not_start_http2_in_time_is_closed() {
    use tokio::io::AsyncWriteExt;
    let store = demo_store().await;
    let service = Service::start(
        &store,
        Setup::with_config("[server]\nconnection_timeout = \"1s\"\nrequest_timeout = \"1s\"\n"),
    )
    .await;

    let mut stalled = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (took, _) = closed_within(stalled, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // HTTP/2 started, then nothing: not a PING answered, not a call. Sent away at the
    // timeout, closed at the drain's end (request_timeout and a second).
    let mut idle = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    idle.write_all(PREFACE).await.unwrap();
    let (goaway, closed_after) = tokio::time::timeout(
        Duration::from_secs(6),
        support::frames_until_closed(&mut idle, false, Instant::now()),
    )
    .await
    .expect("the unused connection was closed within 6 s");
    assert_eq!(goaway, Some(0), "sent away with GOAWAY NO_ERROR first");
    assert!(
        closed_after >= Duration::from_millis(2900),
        "closed after {closed_after:?}"
    );

    let mut client = service.client().await;
    let read = || {
        support::authed(
            storage_grants::proto::GrantReadRequest {
                bucket: "demo".into(),
                key: "public/hello.txt".into(),
                ..Default::default()
            },
            &support::TOKEN,
        )
    };
    client.grant_read(read()).await.expect("served");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .grant_read(read())
        .await
        .expect("still served on the same connection after the timeout");
}

/// Clients whose channel compresses (grpc-java, grpc-go and C-core offer it) are
/// served: gzip and deflate requests decode to the same grant, which works against the
/// store; health answers compressed checks too. What cannot be decoded is refused by
/// status, never served as something else.
#[tokio::test]
async fn compressed_requests_are_served_and_bad_ones_refused() {
    use storage_grants::proto::GrantReadRequest;
    use tonic::codec::CompressionEncoding;
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Deflate] {
        let mut client = service.client().await.send_compressed(encoding);
        let grant = client
            .grant_read(support::authed(
                GrantReadRequest {
                    bucket: "demo".into(),
                    key: "public/hello.txt".into(),
                    ..Default::default()
                },
                &support::TOKEN,
            ))
            .await
            .unwrap_or_else(|status| panic!("{encoding:?}: {status:?}"))
            .into_inner();
        let body = support::http_get(&grant.url).await;
        assert_eq!(body.status(), 200, "{encoding:?}");
        assert_eq!(body.text().await.unwrap(), "hello, storage-grants\n");

        let mut health = HealthClient::new(service.channel().await).send_compressed(encoding);
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("health, {encoding:?}: {status:?}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32);
    }

    // A message flagged compressed that is not gzip: INTERNAL, as grpc-go answers it.
    let garbage = raw_grpc(&service, GRANT_READ, "gzip", 1, b"not gzip at all".to_vec()).await;
    assert_eq!(garbage.0, tonic::Code::Internal as i32, "{garbage:?}");
    assert!(garbage.1.contains("decompress"), "{garbage:?}");
    // 8 MiB of zeros gzip to 8 KiB: decoding stops at the 4 MiB message limit.
    let bomb = {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&vec![0u8; 8 << 20]).unwrap();
        encoder.finish().unwrap()
    };
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let refused = raw_grpc(&service, GRANT_READ, "gzip", 1, bomb).await;
    assert_eq!(
        refused.0,
        tonic::Code::ResourceExhausted as i32,
        "{refused:?}"
    );
    // Health answers anyone: what it decodes stops at 64 KiB, so a few KiB of gzip
    // cannot make it decode megabytes.
    for (encoding, flag, message) in [
        ("gzip", 1, gzip(&vec![0u8; 1 << 20])),
        ("identity", 0, vec![0u8; 100 << 10]),
    ] {
        let refused = raw_grpc(&service, HEALTH_CHECK, encoding, flag, message).await;
        assert_eq!(
            refused.0,
            tonic::Code::ResourceExhausted as i32,
            "{encoding}: {refused:?}"
        );
    }
    // An encoding no one decodes here: UNIMPLEMENTED, naming what is accepted.
    let unknown = raw_grpc(&service, GRANT_READ, "br", 1, b"whatever".to_vec()).await;
    assert_eq!(unknown.0, tonic::Code::Unimplemented as i32, "{unknown:?}");
    assert!(unknown.2.contains("gzip"), "{unknown:?}");
}

/// A message that does not decode is the caller's mistake on every method of the port,
/// the standard ones included: INVALID_ARGUMENT saying what is wrong, never INTERNAL
/// (which the service's alerts count as its own failure).
#[tokio::test]
async fn a_message_that_does_not_decode_is_invalid_argument_on_every_method() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    // A field's tag and a length running past the end; field 1 (a string on every
    // method here) holding bytes that are not UTF-8.
    let truncated = vec![0x0a, 0x20, b'x'];
    let not_utf8 = vec![0x0a, 0x02, 0xc3, 0x28];
    for path in [
        GRANT_READ,
        HEALTH_CHECK,
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        for message in [&truncated, &not_utf8] {
            let (code, text, _) = raw_grpc(&service, path, "identity", 0, message.clone()).await;
            // grpc-message is percent-encoded.
            let text = text.replace("%20", " ");
            assert_eq!(
                code,
                tonic::Code::InvalidArgument as i32,
                "{path} {message:?}: {text}"
            );
            assert!(
                text.contains("not a valid protobuf message"),
                "{path}: {text}"
            );
            // The UTF-8 hint only where it is the cause.
            assert_eq!(
                text.contains("must be UTF-8"),
                message == &not_utf8,
                "{path}: {text}"
            );
        }
    }
    // A refusal is trailers-only: its status in headers that end the stream, which
    // gRPC's C core (Python, C++, Ruby) needs on a streaming method too.
    for path in [HEALTH_CHECK, "/grpc.health.v1.Health/Watch"] {
        let refused = raw_response(
            &service,
            http::Method::POST,
            path,
            &[("content-type", "application/grpc")],
            grpc_frame(0, &truncated),
        )
        .await;
        assert!(
            http_body::Body::is_end_stream(refused.body()),
            "{path}: {:?}",
            refused.headers()
        );
        assert_eq!(header_text(refused.headers(), "grpc-status"), "3");
    }
    // The same services still answer what decodes.
    let mut health = HealthClient::new(service.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
}

const GRANT_READ: &str = "/storagegrants.v1.GrantService/GrantRead";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `data`, gzipped.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// `message` in a gRPC frame whose compressed flag is `flag`.
fn grpc_frame(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

/// One POST of `body` to `path` as raw HTTP/2 with `headers` and the caller's token:
/// the HTTP status, and the headers and trailers together.
async fn raw_post(
    service: &Service,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (http::StatusCode, http::HeaderMap) {
    raw_request(service, http::Method::POST, path, headers, body).await
}

/// [`raw_post`] with another method.
async fn raw_request(
    service: &Service,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (http::StatusCode, http::HeaderMap) {
    use http_body_util::BodyExt;
    let response = raw_response(service, method, path, headers, body).await;
    let status = response.status();
    let mut headers = response.headers().clone();
    let collected = response.into_body().collect().await.expect("a body");
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    (status, headers)
}

fn header_text(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// One call of `path` as raw HTTP/2 with `grpc-encoding: encoding` and a message with the
/// compressed `flag`: (grpc-status, grpc-message, grpc-accept-encoding).
async fn raw_grpc(
    service: &Service,
    path: &str,
    encoding: &str,
    flag: u8,
    message: Vec<u8>,
) -> (i32, String, String) {
    let (_, headers) = raw_post(
        service,
        path,
        &[
            ("content-type", "application/grpc"),
            ("grpc-encoding", encoding),
        ],
        grpc_frame(flag, &message),
    )
    .await;
    (
        header_text(&headers, "grpc-status")
            .parse()
            .expect("a grpc-status"),
        header_text(&headers, "grpc-message"),
        header_text(&headers, "grpc-accept-encoding"),
    )
}

/// The answer to one raw HTTP/2 request, its body not yet read.
async fn raw_response(
    service: &Service,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> http::Response<hyper::body::Incoming> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", service.addr))
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", *support::TOKEN));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(bytes::Bytes::from(body))).unwrap();
    client.request(request).await.expect("an HTTP/2 answer")
}

/// A GrantRead of the demo store's `public/hello.txt`, encoded.
fn hello_read() -> Vec<u8> {
    storage_grants::proto::GrantReadRequest {
        bucket: "demo".into(),
        key: "public/hello.txt".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A call whose deadline had passed when it arrived is refused before it runs (tonic
/// would run it, and a grant would be issued to a caller that gave up); a deadline
/// that is not gRPC's form is refused rather than ignored.
#[tokio::test]
async fn a_deadline_already_past_or_unreadable_is_refused_before_the_call_runs() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let message = hello_read();
    for (timeout, code) in [
        ("0n", tonic::Code::DeadlineExceeded),
        ("soon", tonic::Code::InvalidArgument),
        ("10S", tonic::Code::Ok),
    ] {
        let (_, headers) = raw_post(
            &service,
            GRANT_READ,
            &[
                ("content-type", "application/grpc"),
                ("grpc-timeout", timeout),
            ],
            grpc_frame(0, &message),
        )
        .await;
        let status: i32 = header_text(&headers, "grpc-status").parse().unwrap();
        assert_eq!(status, code as i32, "{timeout}: {headers:?}");
    }
}

/// gRPC's HTTP/2 protocol: a request that is not gRPC gets HTTP 415, so that no HTTP
/// client takes the answer for a success; gRPC with another codec than protobuf gets
/// UNIMPLEMENTED, not its JSON decoded as protobuf; protobuf, spelled any way the
/// protocol allows, is served.
#[tokio::test]
async fn requests_that_are_not_grpc_with_protobuf_are_refused_as_the_protocol_says() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let message = hello_read();
    let call = |content_type: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| vec![("content-type", ct)])
            .unwrap_or_default();
        let body = grpc_frame(0, &message);
        let service = &service;
        async move { raw_post(service, GRANT_READ, &headers, body).await }
    };
    for served in [
        "application/grpc",
        "application/grpc+proto",
        "Application/gRPC; x=1",
    ] {
        let (status, headers) = call(Some(served)).await;
        assert_eq!(status, 200, "{served}");
        assert_eq!(
            header_text(&headers, "grpc-status"),
            "0",
            "{served}: {headers:?}"
        );
    }
    for not_grpc in [Some("application/json"), Some("text/plain"), None] {
        let (status, headers) = call(not_grpc).await;
        assert_eq!(status, 415, "{not_grpc:?}");
        assert_eq!(header_text(&headers, "grpc-status"), "3", "{not_grpc:?}");
        assert!(
            header_text(&headers, "grpc-message")
                .contains("send%20content-type%20application/grpc"),
            "{headers:?}"
        );
    }
    let (status, headers) = call(Some("application/grpc+json")).await;
    assert_eq!(status, 200);
    assert_eq!(header_text(&headers, "grpc-status"), "12", "{headers:?}");
    // gRPC calls are POSTs: another method is not served as one.
    for method in [http::Method::GET, http::Method::PUT, http::Method::OPTIONS] {
        let (status, headers) = raw_request(
            &service,
            method.clone(),
            GRANT_READ,
            &[("content-type", "application/grpc")],
            grpc_frame(0, &message),
        )
        .await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(header_text(&headers, "allow"), "POST");
        assert_eq!(header_text(&headers, "grpc-status"), "12", "{method}");
    }
    // The probes of Kubernetes and load balancers send gRPC: still served.
    let (status, headers) = raw_post(
        &service,
        HEALTH_CHECK,
        &[("content-type", "application/grpc")],
        grpc_frame(0, &[]),
    )
    .await;
    assert_eq!(
        (status.as_u16(), header_text(&headers, "grpc-status")),
        (200, "0".into())
    );
}

/// Every accepted connection has TCP keepalive armed with `server.keepalive_interval`
/// (the kernel then probes a silent client and resets the connection when its host is
/// gone, which loopback cannot show): the server side of the socket carries the
/// keepalive timer, set to the configured idle time. A live client that sends nothing
/// keeps its connection through the probes.
#[tokio::test]
async fn idle_connections_carry_tcp_keepalive_at_the_configured_interval() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = demo_store().await;
    for (config, idle) in [
        (
            "[server]\nkeepalive_interval = \"1s\"\nkeepalive_timeout = \"1s\"\n",
            Duration::from_secs(1),
        ),
        ("", Duration::from_secs(60)),
    ] {
        let mut setup = Setup::new();
        setup.extra_config = config.into();
        let service = Service::start(&store, setup).await;
        let mut client = tokio::net::TcpStream::connect(service.addr).await.unwrap();
        client.write_all(PREFACE).await.unwrap();
        let peer = client.local_addr().unwrap().port();
        // The timer shows once nothing is in flight; /proc counts it in 1/100 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        let when = loop {
            if let Some(when) = support::keepalive_timer(service.addr.port(), peer) {
                break when;
            }
            assert!(
                Instant::now() < deadline,
                "no keepalive timer on the server's socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            when <= idle && when > idle / 2,
            "{config:?}: keepalive due in {when:?}, configured {idle:?}"
        );
        if idle == Duration::from_secs(1) {
            // Three probe rounds later the live client is still served: a PING of its
            // own is answered.
            tokio::time::sleep(Duration::from_secs(3)).await;
            client
                .write_all(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
                .await
                .unwrap();
            let mut head = [0u8; 9];
            loop {
                tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut head))
                    .await
                    .expect("an answer within 2 s")
                    .expect("still connected");
                let mut payload = vec![0u8; frame_len(&head)];
                client.read_exact(&mut payload).await.unwrap();
                if head[3] == 6 && head[4] & 1 == 1 && payload == [1, 2, 3, 4, 5, 6, 7, 8] {
                    break;
                }
            }
        }
    }
}

/// The payload length an HTTP/2 frame header starts with (24 bits).
fn frame_len(head: &[u8]) -> usize {
    usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2])
}

/// Reads `stream` until the server closes it, which must happen within `limit`: how
/// long that took, and what the server sent.
async fn closed_within(mut stream: tokio::net::TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut sent = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sent))
        .await
        .unwrap_or_else(|_| panic!("closed within {limit:?}"))
        .ok();
    (started.elapsed(), sent)
}

/// Metadata over 16 KiB (a bloated token, say) answers RESOURCE_EXHAUSTED with the
/// size and the limit, not the transport's bare HTTP 431 (UNKNOWN to clients); under
/// it, the call is served.
#[tokio::test]
async fn oversized_metadata_is_resource_exhausted_and_says_so() {
    use storage_grants::proto::GrantReadRequest;
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    let call = |extra: usize| {
        let mut request = support::authed(
            GrantReadRequest {
                bucket: "demo".into(),
                key: "public/hello.txt".into(),
                ..Default::default()
            },
            &support::TOKEN,
        );
        request
            .metadata_mut()
            .insert("x-extra", "a".repeat(extra).parse().unwrap());
        request
    };
    client
        .grant_read(call(15_000))
        .await
        .expect("15 kB of metadata is served");
    for extra in [17_000, 40_000] {
        let status = client.grant_read(call(extra)).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "{extra}: {status:?}"
        );
        assert!(
            status.message().contains("16384") && status.message().contains(" bytes"),
            "{}",
            status.message()
        );
    }
    // Health too: the check is the transport's, before any service.
    let mut health = HealthClient::new(service.channel().await);
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request
        .metadata_mut()
        .insert("x-extra", "a".repeat(20_000).parse().unwrap());
    let status = health.check(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}

/// CPU time the process `pid` has used, from `/proc` (in 1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process runs");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// HTTP/2's client preface and an empty SETTINGS frame: how a client opens.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Polls `done` every 50 ms until it holds; fails with `what()` after `within`.
async fn eventually<F: Future<Output = bool>>(
    within: Duration,
    mut done: impl FnMut() -> F,
    what: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new HTTP/2 connection to `addr`, once the server's SETTINGS came (within 2 s);
/// `None` when the server closed it or said nothing.
async fn http2_connection(addr: std::net::SocketAddr) -> Option<tokio::net::TcpStream> {
    http2_connection_from([127, 0, 0, 1], addr).await
}

/// [`http2_connection`], from the loopback address `from` (all of 127/8 is loopback).
async fn http2_connection_from(
    from: [u8; 4],
    addr: std::net::SocketAddr,
) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind((from, 0).into()).ok()?;
        let mut client = socket.connect(addr).await.ok()?;
        client.write_all(PREFACE).await.ok()?;
        let mut head = [0u8; 9];
        client.read_exact(&mut head).await.ok()?;
        (head[3] == 4).then_some(client)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// Whether a new connection to `addr` gets the server's HTTP/2 SETTINGS within 2 s.
async fn answers_a_new_connection(addr: std::net::SocketAddr) -> bool {
    http2_connection(addr).await.is_some()
}

/// Once `service` answers a new connection, and the probes that found it so are
/// closed (they hold no slot once the server has seen them close).
async fn serving_with_no_connection_open(service: &Service, metrics_port: u16) {
    eventually(
        Duration::from_secs(10),
        || answers_a_new_connection(service.addr),
        || "the service did not start".into(),
    )
    .await;
    support::metrics_when(metrics_port, "storage_grants_connections_open", |n| n == 0).await;
}

/// `server.max_connections` caps the connections open on the gRPC port and the
/// gateway together: one more is closed at once (its client sees the close at once,
/// not a silence), counted, and the operator warned; a slot freed by a closing
/// connection takes the next. The metrics port is outside the cap, so the flood can
/// be seen.
#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.extra_config = "[server]\nmax_connections = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n"
        .into();
    let service = Service::start(&store, setup).await;
    let (metrics_port, http_port) = (service.metrics_port(), service.http_port());
    serving_with_no_connection_open(&service, metrics_port).await;
    let first = http2_connection(service.addr)
        .await
        .expect("a first connection");
    let second = http2_connection(service.addr)
        .await
        .expect("a second connection, within the cap");
    support::metrics_when(metrics_port, "storage_grants_connections_open", |n| n == 2).await;

    // A third is closed before it gets anything: EOF, not a wait.
    let mut third = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    let _ = third.write_all(PREFACE).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte))
        .await
        .expect("closed at once, not left waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The gateway shares the cap.
    let refused = reqwest::get(format!("http://127.0.0.1:{http_port}/healthz")).await;
    assert!(refused.is_err(), "{refused:?}");
    let text = support::metrics_when(
        metrics_port,
        "storage_grants_connections_refused_total",
        |n| n == 2,
    )
    .await;
    assert_eq!(support::metric(&text, "storage_grants_connections_open"), 2);

    // A closed connection frees its slot for the next client, on either listener.
    drop(first);
    support::metrics_when(metrics_port, "storage_grants_connections_open", |n| n == 1).await;
    let healthz = reqwest::get(format!("http://127.0.0.1:{http_port}/healthz"))
        .await
        .expect("a freed slot");
    assert_eq!(healthz.status(), 200);
    drop(second);
    // The slot is free once the server has seen the close (the open gauge says so; the
    // gateway client's connection may have closed too); a client that connects before
    // that is one past the cap.
    support::metrics_when(metrics_port, "storage_grants_connections_open", |n| n <= 1).await;
    assert!(answers_a_new_connection(service.addr).await);
}

/// One address gets `server.max_connections_per_peer` of the cap, no more: a client
/// holding that many open has its next refused at once, and clients from elsewhere
/// are still served.
#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let store = demo_store().await;
    let setup = Setup::with_config(
        "[server]\nmax_connections = 8\nmax_connections_per_peer = 2\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let service = Service::start(&store, setup).await;
    let metrics_port = service.metrics_port();
    serving_with_no_connection_open(&service, metrics_port).await;
    let mut held = vec![
        http2_connection(service.addr).await.expect("a first"),
        http2_connection(service.addr)
            .await
            .expect("a second, its share"),
    ];
    support::metrics_when(metrics_port, "storage_grants_connections_open", |n| n == 2).await;
    assert!(
        http2_connection(service.addr).await.is_none(),
        "a third from 127.0.0.1 is closed"
    );
    support::metrics_when(
        metrics_port,
        "storage_grants_connections_refused_total",
        |n| n == 1,
    )
    .await;
    // Another address is served meanwhile, up to its own share.
    let other = http2_connection_from([127, 0, 0, 2], service.addr)
        .await
        .expect("served from 127.0.0.2");
    // A connection closed gives its address's share back.
    held.pop();
    support::metrics_when(metrics_port, "storage_grants_connections_open", |n| n == 2).await;
    assert!(answers_a_new_connection(service.addr).await);
    drop((held, other));
}

/// With more connections than its file descriptors allow, the service refuses the
/// excess at its connection cap, which start-up held within the open-file limit: it
/// never runs out of descriptors (where no listener can accept, not even to close a
/// connection, and the accept loop once spun a worker at full CPU), it says so, and
/// once connections close it accepts again.
#[tokio::test]
async fn a_connection_flood_past_the_descriptor_limit_is_refused_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    // The held connections stay open for the whole test.
    crate::telemetry::write_config(
        dir.path(),
        "text",
        "http://127.0.0.1:9",
        "[server]\nconnection_timeout = \"5m\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let log = dir.path().join("service.log");
    // 64 descriptors: the service starts with about 20 and takes the rest as
    // connections.
    let child = std::process::Command::new("bash")
        .args(["-c", r#"ulimit -n 64 && exec "$0" --config "$1""#])
        .arg(env!("CARGO_BIN_EXE_storage-grants"))
        .arg(dir.path().join("config.toml"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start storage-grants");
    // Killed on drop, a failed assertion included.
    let service = crate::telemetry::Process(child);
    let port = crate::telemetry::logged_port(&log, "storage-grants listening").await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(
        Duration::from_secs(30),
        || answers_a_new_connection(addr),
        || format!("the service did not start:\n{}", log_text()),
    )
    .await;

    assert!(
        log_text().contains("more than the open-file limit leaves room for"),
        "{}",
        log_text()
    );
    // The probes that found it serving hold no slot any more: the cap is the flood's.
    let metrics = crate::telemetry::logged_port(&log, "metrics at GET /metrics").await;
    support::metrics_when(metrics, "storage_grants_connections_open", |n| n == 0).await;
    // More connections than descriptors: those past the cap are closed at once.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    eventually(
        Duration::from_secs(10),
        || std::future::ready(log_text().contains("connection limit reached")),
        || format!("no warning about the cap:\n{}", log_text()),
    )
    .await;
    let before = cpu_ticks(service.0.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(service.0.id()) - before;
    assert!(
        spent < 40,
        "the service used {spent}/100 s of CPU in 2 s at its cap"
    );
    assert!(
        !answers_a_new_connection(addr).await,
        "a connection past the cap was served"
    );

    drop(held);
    eventually(
        Duration::from_secs(10),
        || answers_a_new_connection(addr),
        || format!("the service did not accept again:\n{}", log_text()),
    )
    .await;
    drop(service);
    let text = log_text();
    assert!(
        !text.contains("cannot accept connections"),
        "the service ran out of descriptors:\n{text}"
    );
    assert_eq!(
        text.matches("connection limit reached").count(),
        1,
        "warned more than once within a minute:\n{text}"
    );
}

/// With `server.max_connection_age`, a connection that old is asked to go (GOAWAY,
/// then closed once it is idle), and a client's channel carries on over a new one
/// without a failed call: that is how clients spread onto pods added since. A client
/// that ignores the request (never acknowledges the GOAWAY's PING) is cut off once the
/// calls have had `request_timeout` to finish, and a second more.
#[tokio::test]
async fn aged_connections_are_sent_away_and_clients_carry_on() {
    use tokio::io::AsyncWriteExt;
    let store = demo_store().await;
    let service = Service::start(
        &store,
        Setup::with_config("[server]\nmax_connection_age = \"1s\"\nrequest_timeout = \"1s\"\n"),
    )
    .await;
    let mut client = service.client().await;

    let mut polite = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    let mut deaf = tokio::net::TcpStream::connect(service.addr).await.unwrap();
    polite.write_all(PREFACE).await.unwrap();
    deaf.write_all(PREFACE).await.unwrap();
    let opened = Instant::now();
    // Meanwhile, a client calls every 100 ms across the age of its connection. A call
    // sent in the instant the old connection closes never reaches the service: clients
    // with transparent retry (grpc-go, grpc-java, C-core) send it again by themselves;
    // tonic reports it with the transport's error, and it is sent again here. Every
    // call the service took is answered.
    let calls = async {
        let mut served = 0;
        let mut raced = 0;
        while opened.elapsed() < Duration::from_millis(2500) {
            let request = || {
                support::authed(
                    storage_grants::proto::GrantReadRequest {
                        bucket: "demo".into(),
                        key: "public/hello.txt".into(),
                        ..Default::default()
                    },
                    &support::TOKEN,
                )
            };
            match client.grant_read(request()).await {
                Ok(_) => {}
                Err(status) if std::error::Error::source(&status).is_some() => {
                    raced += 1;
                    client
                        .grant_read(request())
                        .await
                        .expect("a call sent again on a new connection");
                }
                Err(status) => panic!("the service failed a call as a connection aged: {status:?}"),
            }
            served += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // At most one call can meet each of the two closes in the window.
        assert!(raced <= 2, "{raced} calls met a closing connection");
        served
    };
    let within = Duration::from_secs(10);
    let (polite, deaf, served) = tokio::join!(
        tokio::time::timeout(
            within,
            support::frames_until_closed(&mut polite, true, opened)
        ),
        tokio::time::timeout(
            within,
            support::frames_until_closed(&mut deaf, false, opened)
        ),
        calls
    );
    let (goaway, closed_after) = polite.expect("the aged connection was closed within 10 s");
    assert_eq!(goaway, Some(0), "closed with GOAWAY NO_ERROR");
    // Each connection's age is within 10 % of the setting: 0.9 to 1.1 s.
    assert!(
        closed_after >= Duration::from_millis(850) && closed_after < Duration::from_millis(2500),
        "closed after {closed_after:?}"
    );
    let (goaway, closed_after) = deaf.expect("the deaf connection was closed within 10 s");
    assert!(goaway.is_some(), "asked to go first");
    // Its age (0.9 to 1.1 s) + request_timeout 1 s + 1 s.
    assert!(
        closed_after >= Duration::from_millis(2850) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    assert!(served >= 10, "{served} calls");
}

/// Connections opened together are not sent away together: each draws its own age
/// within 10 % of `server.max_connection_age`, so the clients of a fleet that started
/// at once (or moved at once, in a rollout) do not all reconnect at once, at every age.
#[tokio::test]
async fn connections_opened_together_are_sent_away_at_ages_of_their_own() {
    use tokio::io::AsyncWriteExt;
    let store = demo_store().await;
    let service = Service::start(
        &store,
        Setup::with_config("[server]\nmax_connection_age = \"2s\"\nrequest_timeout = \"1s\"\n"),
    )
    .await;

    let mut connections = Vec::new();
    for _ in 0..12 {
        let mut raw = tokio::net::TcpStream::connect(service.addr).await.unwrap();
        raw.write_all(PREFACE).await.unwrap();
        connections.push(raw);
    }
    let opened = Instant::now();
    let mut closes = tokio::task::JoinSet::new();
    for mut raw in connections {
        closes.spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                support::frames_until_closed(&mut raw, true, opened),
            )
            .await
        });
    }
    let mut ages = Vec::new();
    while let Some(close) = closes.join_next().await {
        let (goaway, closed_after) = close
            .unwrap()
            .expect("every aged connection is closed within 10 s");
        assert_eq!(goaway, Some(0), "closed with GOAWAY NO_ERROR");
        // 1.8 to 2.2 s, give or take the time to open twelve connections (and, on a
        // loaded machine, to be scheduled).
        assert!(
            closed_after >= Duration::from_millis(1700) && closed_after < Duration::from_secs(4),
            "closed after {closed_after:?}"
        );
        ages.push(closed_after);
    }
    let spread = ages
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*ages.iter().min().unwrap());
    // Twelve ages drawn evenly over 400 ms fall within 100 ms of each other about
    // three times in a million; one age for all would close them within a few ms.
    assert!(
        spread >= Duration::from_millis(100),
        "all closed within {spread:?}: {ages:?}"
    );
}

/// The binary's stop signals: SIGTERM begins the drain, and a second SIGTERM ends it at
/// once, with a call still in flight (see [`held_by_sts`]) and most of
/// `server.shutdown_grace` left.
#[tokio::test]
async fn a_second_sigterm_cuts_the_drain_short() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::telemetry::write_config(
        dir.path(),
        "text",
        "http://127.0.0.1:9",
        &format!(
            "[server]\nrequest_timeout = \"60s\"\nshutdown_grace = \"60s\"\n\
             [sts]\nrole_arn = \"arn:aws:iam::123456789012:role/scoped\"\n\
             endpoint = \"http://{}\"\ncall_timeout = \"60s\"\nmax_attempts = 1\n",
            black_hole.local_addr().unwrap()
        ),
    );
    let (mut service, log) = crate::telemetry::spawn_service(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    let port = crate::telemetry::logged_port(&log, "storage-grants listening").await;
    let client = storage_grants::proto::grant_service_client::GrantServiceClient::connect(format!(
        "http://127.0.0.1:{port}"
    ))
    .await
    .expect("connect");
    let call = assume_in_flight(client).await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!call.is_finished(), "{}", log_text());
    // The first begins a drain that waits for the call.
    service.sigterm();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        service.0.try_wait().unwrap().is_none(),
        "exited at the first SIGTERM with a call in flight:\n{}",
        log_text()
    );
    let second = Instant::now();
    service.sigterm();
    let exited =
        tokio::task::spawn_blocking(move || service.exit_within(Duration::from_secs(10)).is_some())
            .await
            .unwrap();
    let took = second.elapsed();
    let log = log_text();
    assert!(
        exited && took < Duration::from_secs(5),
        "still running {took:?} after the second SIGTERM:\n{log}"
    );
    assert!(log.contains("a second stop signal"), "{log}");
    let answer = call.await.unwrap();
    assert!(answer.is_err(), "the cut call got an answer: {answer:?}");
}

/// The CPUs a thread may run on, from its `status` file's list (`0-3,6`).
fn cpus_allowed(status: &std::path::Path) -> Vec<usize> {
    let status = std::fs::read_to_string(status).expect("status");
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    list.trim()
        .split(',')
        .flat_map(|range| {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            first.parse::<usize>().expect("a CPU")..=last.parse::<usize>().expect("a CPU")
        })
        .collect()
}

/// The CPUs each serving thread of this process may run on. Thread names are cut to 15
/// bytes: `storage-grants-core-N` reads `storage-grants-`.
async fn serving_threads_cpus(service: &Service) -> Vec<Vec<usize>> {
    // A call answered: the serving threads have started and placed themselves.
    assert_eq!(health(service, "").await, ServingStatus::Serving);
    let mut threads = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task").path();
        let Ok(name) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if name.starts_with("storage-grants-") {
            threads.push(cpus_allowed(&task.join("status")));
        }
    }
    assert!(!threads.is_empty(), "no serving thread found");
    threads
}

/// `server.pin_cores = true`: each serving thread runs on one CPU, its own while there
/// are as many CPUs as threads; the process's other threads keep every CPU.
#[tokio::test]
async fn pin_cores_holds_each_serving_thread_to_a_cpu_of_its_own() {
    let allowed = cpus_allowed("/proc/thread-self/status".as_ref());
    let store = demo_store().await;
    let service = Service::start(&store, Setup::with_config("[server]\npin_cores = true\n")).await;
    let threads = serving_threads_cpus(&service).await;
    for cpus in &threads {
        assert_eq!(cpus.len(), 1, "{threads:?}");
        assert!(allowed.contains(&cpus[0]), "{cpus:?} not in {allowed:?}");
    }
    if threads.len() <= allowed.len() {
        let mut held: Vec<_> = threads.iter().map(|cpus| cpus[0]).collect();
        held.sort_unstable();
        held.dedup();
        assert_eq!(
            held.len(),
            threads.len(),
            "two threads on one CPU: {threads:?}"
        );
    }
    assert_eq!(cpus_allowed("/proc/thread-self/status".as_ref()), allowed);
}

/// `server.pin_cores = false`: the kernel places the serving threads, on every CPU the
/// process may use.
#[tokio::test]
async fn pin_cores_false_leaves_the_serving_threads_to_the_kernel() {
    let allowed = cpus_allowed("/proc/thread-self/status".as_ref());
    let store = demo_store().await;
    let service = Service::start(&store, Setup::with_config("[server]\npin_cores = false\n")).await;
    for cpus in serving_threads_cpus(&service).await {
        assert_eq!(cpus, allowed);
    }
}
