//! A fault proxy for tests: an HTTP/1.1 server on loopback in front of a real
//! upstream (moto's STS) or serving a fixed document (a JWKS), that can be told to
//! answer late, to fail with a status, to answer as a throttled STS or with a body of
//! the test's, or to refuse connections, and to heal again. It counts the requests it
//! receives.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes requests through.
    None,
    /// Waits this long, then passes the request through.
    Delay(Duration),
    /// Waits this long before passing a POST through (S3's CompleteMultipartUpload),
    /// passes other requests at once.
    DelayPosts(Duration),
    /// Answers this status with a short body, without asking upstream.
    Status(u16),
    /// Answers as STS does when it throttles (400, `Throttling`).
    Throttle,
    /// Answers this status with this XML body, without asking upstream.
    Answer(u16, &'static str),
    /// Answers requests of this method (a POST: S3's CompleteMultipartUpload; a
    /// DELETE: its AbortMultipartUpload) with this status and body, passes other
    /// requests through.
    AnswerTo(&'static str, u16, &'static str),
    /// Passes requests of this method on (upstream acts on them), then answers this
    /// status and body instead of upstream's answer (an answer lost on the way back).
    ForwardThenAnswer(&'static str, u16, &'static str),
    /// As `ForwardThenAnswer`, and HEAD requests (S3's HeadObject) answered with the
    /// last status without asking upstream: 403 for a role that may not read objects,
    /// 503 for a store failing.
    ForwardThenAnswerHeadWith(&'static str, u16, &'static str, u16),
    /// Closes every new connection at once (the endpoint is down).
    Down,
}

/// Where answers come from when there is no fault.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// Forwarded to this base URL.
    Url(String),
    /// This JSON document, for any path.
    Json(String),
}

#[derive(Clone)]
struct Shared {
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicUsize>,
    upstream: Upstream,
    client: reqwest::Client,
}

/// The running proxy; stopped on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy in front of `upstream`, passing everything through until told
    /// otherwise.
    pub async fn start(upstream: Upstream) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shared = Shared {
            fault: Arc::new(Mutex::new(Fault::None)),
            requests: Arc::new(AtomicUsize::new(0)),
            upstream,
            client: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let fault = shared.fault.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if *fault.lock().unwrap() == Fault::Down {
                    drop(stream);
                    continue;
                }
                let (app, fault) = (app.clone(), fault.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (app, fault) = (app.clone(), fault.clone());
                        async move {
                            // Down: kept-alive connections break too, without an answer.
                            if *fault.lock().unwrap() == Fault::Down {
                                return Err(std::io::Error::other("endpoint down"));
                            }
                            tower::ServiceExt::oneshot(app, request)
                                .await
                                .map_err(|never| match never {})
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Makes the next requests meet `fault` (`Fault::None` heals).
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// Requests received so far (refused connections are not requests).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let fault = *shared.fault.lock().unwrap();
    match fault {
        Fault::None | Fault::Down => {}
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::DelayPosts(d) if request.method() == axum::http::Method::POST => {
            tokio::time::sleep(d).await;
        }
        Fault::DelayPosts(_) => {}
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).expect("a valid status");
            return (status, "injected fault").into_response();
        }
        Fault::ForwardThenAnswerHeadWith(_, _, _, head)
            if request.method() == axum::http::Method::HEAD =>
        {
            return StatusCode::from_u16(head)
                .expect("a valid status")
                .into_response();
        }
        Fault::AnswerTo(method, _, _)
        | Fault::ForwardThenAnswer(method, _, _)
        | Fault::ForwardThenAnswerHeadWith(method, _, _, _)
            if request.method().as_str() != method => {}
        Fault::ForwardThenAnswer(_, code, body)
        | Fault::ForwardThenAnswerHeadWith(_, code, body, _) => {
            if let Upstream::Url(base) = &shared.upstream {
                let _ = forward(&shared.client, base, request).await;
            }
            let status = StatusCode::from_u16(code).expect("a valid status");
            return (status, [("content-type", "text/xml")], body).into_response();
        }
        Fault::Answer(code, body) | Fault::AnswerTo(_, code, body) => {
            let status = StatusCode::from_u16(code).expect("a valid status");
            return (status, [("content-type", "text/xml")], body).into_response();
        }
        Fault::Throttle => {
            // STS's own answer when an account's AssumeRole rate is exceeded.
            let body = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                <Error><Type>Sender</Type><Code>Throttling</Code>\
                <Message>Rate exceeded</Message></Error>\
                <RequestId>00000000-0000-4000-8000-000000000000</RequestId></ErrorResponse>";
            return (
                StatusCode::BAD_REQUEST,
                [("content-type", "text/xml")],
                body,
            )
                .into_response();
        }
    }
    match &shared.upstream {
        Upstream::Json(document) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            document.clone(),
        )
            .into_response(),
        Upstream::Url(base) => forward(&shared.client, base, request).await,
    }
}

/// `request` sent on to `base`, and its answer brought back.
async fn forward(client: &reqwest::Client, base: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .expect("read the request body");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // The client's `Host` goes on as it was signed: a SigV4 signature covers it, and
    // the store checks it.
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if name != "content-length" {
            headers.append(name.clone(), value.clone());
        }
    }
    let head = parts.method == http::Method::HEAD;
    let answer = client
        .request(parts.method, format!("{base}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("the upstream answers");
    // A HEAD's answer has no body and the object's length: that header goes on as
    // sent; any other length is the body's own.
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if (head || name != "content-length") && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.expect("the upstream's body");
    response.body(Body::from(bytes)).unwrap()
}
