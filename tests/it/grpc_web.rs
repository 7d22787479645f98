//! gRPC-Web on the gRPC port (`server.grpc_web`): a browser's fetch over HTTP/1.1
//! reaches the same services, with CORS for exactly the configured origins; off, the
//! port speaks only gRPC.

use crate::support;

use prost::Message;
use reqwest::StatusCode;
use storage_grants::proto::{GrantReadRequest, GrantReadResponse};
use support::{Service, Setup, TOKEN, demo_store, http_get};

const PAGE: &str = "http://127.0.0.1:9999";

/// One gRPC-Web data frame holding `message`.
fn frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The data frames' payloads and the trailers of a gRPC-Web answer.
fn unframe(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = body[5..5 + len].to_vec();
        if body[0] & 0x80 == 0 {
            messages.push(payload);
        } else {
            trailers = String::from_utf8(payload).unwrap();
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

async fn call(service: &Service, token: &str, request: &GrantReadRequest) -> reqwest::Response {
    reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/storagegrants.v1.GrantService/GrantRead",
            service.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", PAGE)
        .header("authorization", format!("Bearer {token}"))
        .body(frame(request))
        .send()
        .await
        .expect("the port answers HTTP/1.1")
}

fn read() -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: "public/hello.txt".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_browser_fetch_over_http1_gets_a_grant_that_downloads() {
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.extra_config =
        format!("[server]\ngrpc_web = true\n[http]\nallowed_origins = [\"{PAGE}\"]\n");
    let service = Service::start(&store, setup).await;
    let response = call(&service, &TOKEN, &read()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], PAGE);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let (messages, trailers) = unframe(&response.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let grant = GrantReadResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(
        http_get(&grant.url).await.text().await.unwrap(),
        "hello, storage-grants\n"
    );
    // A refusal is a gRPC status, "trailers-only": in the HTTP headers.
    let denied = call(&service, "not-a-token-0123456789", &read()).await;
    assert_eq!(denied.headers()["grpc-status"], "16");
    assert!(unframe(&denied.bytes().await.unwrap()).0.is_empty());
}

#[tokio::test]
async fn cors_preflight_admits_exactly_the_configured_origins() {
    let store = demo_store().await;
    let mut setup = Setup::new();
    setup.extra_config =
        format!("[server]\ngrpc_web = true\n[http]\nallowed_origins = [\"{PAGE}\"]\n");
    let service = Service::start(&store, setup).await;
    let preflight = |origin: &'static str| {
        reqwest::Client::builder()
            .http1_only()
            .build()
            .unwrap()
            .request(
                reqwest::Method::OPTIONS,
                format!(
                    "http://{}/storagegrants.v1.GrantService/GrantRead",
                    service.addr
                ),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .send()
    };
    let allowed = preflight(PAGE).await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], PAGE);
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn without_grpc_web_the_port_speaks_only_grpc() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let answer = reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/storagegrants.v1.GrantService/GrantRead",
            service.addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .body(frame(&read()))
        .send()
        .await;
    // An HTTP/1.1 request is not served: the connection is refused at the protocol
    // level, or answered with an error status; never a grant.
    if let Ok(response) = answer {
        assert!(!response.status().is_success(), "{}", response.status());
    }
}
