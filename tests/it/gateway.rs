//! The HTTP gateway at the HTTP level, without a browser: click-time links, upload
//! signing, identity by bearer token and by session cookie, the cross-site check,
//! CORS and problem details, against the running service and a real s3s-fs. Every
//! grant is proven by using it over plain HTTP.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::jwt::Issuer;
use support::{OTHER_TOKEN, Service, Setup, Store, TOKEN, demo_store, http_get};

const PAGE: &str = "http://127.0.0.1:9999";
const LOGIN: &str = "http://127.0.0.1:9999/login";

struct Gateway {
    base: String,
    http: reqwest::Client,
    _service: Service,
    store: Store,
}

impl Gateway {
    async fn start() -> Gateway {
        Self::start_with(Setup::new()).await
    }

    async fn start_with(setup: Setup) -> Gateway {
        Self::start_http(setup, "").await
    }

    /// With `http` added to the `[http]` section.
    async fn start_http(mut setup: Setup, http: &str) -> Gateway {
        let store = demo_store().await;
        setup.extra_config.push_str(&format!(
            "\n[http]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"{PAGE}\"]\n\
             login_url = \"{LOGIN}\"\nupload_bucket = \"demo\"\n{http}\n"
        ));
        let service = Service::start(&store, setup).await;
        let base = format!("http://127.0.0.1:{}", service.http_port());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        // The listener is bound before `run` serves; wait for it to answer.
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Gateway {
            base,
            http,
            _service: service,
            store,
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `POST /v1/uploads` with the test caller's bearer token and the JSON `body`.
    async fn sign_upload(&self, body: &str) -> reqwest::Response {
        self.request(Method::POST, "/v1/uploads")
            .header(header::AUTHORIZATION, bearer(&TOKEN))
            .json_body(body)
            .send()
            .await
            .expect("gateway answers")
    }

    async fn link(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.request(Method::GET, path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.expect("gateway answers")
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn problem(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let status = response.status().as_u16();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test]
async fn link_redirects_to_a_fresh_presigned_get_that_downloads() {
    let gw = Gateway::start().await;
    let response = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[("authorization", &bearer(&TOKEN))],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    let target = location(&response);
    assert!(target.contains("X-Amz-Expires=60&"), "{target}");
    let object = http_get(&target).await;
    assert_eq!(object.status(), StatusCode::OK);
    assert_eq!(object.text().await.unwrap(), "hello, storage-grants\n");
}

#[tokio::test]
async fn the_session_cookie_identifies_a_browser_and_head_answers_the_same() {
    let gw = Gateway::start().await;
    for method in [Method::GET, Method::HEAD] {
        let response = gw
            .request(method.clone(), "/v1/objects/demo/public/hello.txt")
            .header(header::COOKIE, format!("theme=dark; sg_session={}", *TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FOUND, "{method}");
        // The target is signed for the same method: a HEAD gets the object's headers.
        let object = reqwest::Client::new()
            .request(method.clone(), location(&response))
            .send()
            .await
            .unwrap();
        assert_eq!(object.status(), StatusCode::OK, "{method}");
        assert_eq!(object.headers()[header::CONTENT_LENGTH], "22", "{method}");
        if method == Method::GET {
            assert_eq!(object.text().await.unwrap(), "hello, storage-grants\n");
        }
    }
}

#[tokio::test]
async fn a_jwt_in_the_cookie_is_verified_like_a_bearer_jwt() {
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::new();
    setup.extra_config = issuer.config(&dir.path().join("jwks.json"));
    setup.rules.push_str(
        "\n[[rules]]\ncallers = [\"system:serviceaccount:team-a:web\"]\nbucket = \"demo\"\n\
         prefix = \"public/\"\nactions = [\"read\"]\n",
    );
    let gw = Gateway::start_with(setup).await;
    let token = issuer.token("team-a", "web");
    let ok = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[("cookie", &format!("sg_session={token}"))],
        )
        .await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    // One byte of the signature changed: refused, and the browser goes to the login.
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refused = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[
                ("cookie", &format!("sg_session={forged}")),
                ("accept", "text/html"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FOUND);
    assert!(
        location(&refused).starts_with(LOGIN),
        "{}",
        location(&refused)
    );
}

#[tokio::test]
async fn without_identity_a_browser_goes_to_the_login_and_a_client_gets_401() {
    let gw = Gateway::start().await;
    let browser = gw
        .link(
            "/v1/objects/demo/public/hello.txt?download=a.txt",
            &[("accept", "text/html,application/xhtml+xml")],
        )
        .await;
    assert_eq!(browser.status(), StatusCode::FOUND);
    assert_eq!(
        location(&browser),
        format!("{LOGIN}?return_to=%2Fv1%2Fobjects%2Fdemo%2Fpublic%2Fhello.txt%3Fdownload%3Da.txt")
    );
    let client = gw.link("/v1/objects/demo/public/hello.txt", &[]).await;
    assert_eq!(client.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(client.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let body = problem(client).await;
    assert_eq!(body["code"], "UNAUTHENTICATED");
    let unknown = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[("authorization", "Bearer not-a-known-token-0123")],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(
        problem(unknown).await["detail"]
            .as_str()
            .is_some_and(|d| d.contains("bearer token is not recognised")),
    );
    // A session cookie that holds no known token: the message names the cookie (the
    // browser sent no bearer token), and a navigating browser signs in again.
    let stale = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[("cookie", "sg_session=not-a-known-token-0123")],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    let detail = problem(stale).await["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("session cookie 'sg_session' holds no token")
            && detail.contains("sign in again")
            && !detail.contains("not-a-known-token"),
        "{detail}"
    );
    let stale_browser = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[
                ("cookie", "sg_session=not-a-known-token-0123"),
                ("accept", "text/html"),
            ],
        )
        .await;
    assert_eq!(stale_browser.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn outside_the_rules_is_403_and_a_bad_key_is_400() {
    let gw = Gateway::start().await;
    let auth = [("authorization", bearer(&OTHER_TOKEN))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let denied = gw.link("/v1/objects/demo/public/hello.txt", &auth).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(denied).await["code"], "PERMISSION_DENIED");
    for path in [
        "/v1/objects/demo/public/..%2F..%2Fprivate/secret.txt",
        "/v1/objects/demo/public/x%2F%2E%2E%2Fy",
        "/v1/objects/demo/public/%E2%80%AEgnp.exe",
        "/v1/objects/demo/public/a%00b",
        "/v1/objects/demo/",
        "/v1/objects/Not_A_Bucket/public/hello.txt",
    ] {
        let bad = gw.link(path, &[("authorization", &bearer(&TOKEN))]).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(problem(bad).await["code"], "INVALID_ARGUMENT", "{path}");
    }
    // A key that is no text once decoded is refused before any grant, on the link and
    // on the credentials route, which read their path the same way.
    for path in [
        "/v1/objects/demo/public/%FF.txt",
        "/v1/credentials/demo/public/%C3%28/?access=read",
    ] {
        let bad = gw.link(path, &[("authorization", &bearer(&TOKEN))]).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = problem(bad).await;
        assert_eq!(body["code"], "INVALID_ARGUMENT", "{path}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("not valid UTF-8"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn the_key_is_percent_decoded_exactly_once() {
    let gw = Gateway::start().await;
    gw.store
        .put("demo", "public/a b é.txt", b"spaces and unicode\n")
        .await;
    gw.store
        .put("demo", "public/%2e%2e", b"a literal percent\n")
        .await;
    for (path, body) in [
        (
            "/v1/objects/demo/public%2Fhello.txt",
            "hello, storage-grants\n",
        ),
        (
            "/v1/objects/demo/public/a%20b%20%C3%A9.txt",
            "spaces and unicode\n",
        ),
        // %252e is a literal "%2e" after one decoding, never "."
        ("/v1/objects/demo/public/%252e%252e", "a literal percent\n"),
    ] {
        let response = gw.link(path, &[("authorization", &bearer(&TOKEN))]).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{path}");
        let object = http_get(&location(&response)).await;
        assert_eq!(object.status(), StatusCode::OK, "{path}");
        assert_eq!(object.text().await.unwrap(), body, "{path}");
    }
}

#[tokio::test]
async fn download_asks_the_store_for_an_attachment() {
    let gw = Gateway::start().await;
    let response = gw
        .link(
            "/v1/objects/demo/public/hello.txt?download=r%C3%A9sum%C3%A9%20%22v2%22.txt",
            &[("authorization", &bearer(&TOKEN))],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let target = location(&response);
    assert!(
        target.contains(
            "response-content-disposition=attachment%3B%20filename%3D%22r_sum_%20_v2_.txt%22"
        ),
        "{target}"
    );
    let object = http_get(&target).await;
    assert_eq!(object.status(), StatusCode::OK);
    let bad = gw
        .link(
            "/v1/objects/demo/public/hello.txt?download=..%2Fx",
            &[("authorization", &bearer(&TOKEN))],
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body = problem(bad).await;
    assert_eq!(body["violations"][0]["field"], "download", "{body}");
}

/// A link keeps working with the parameters mail and analytics tools add; a bare
/// `?download` saves under the key's own name; `?versionId=` names a version.
#[tokio::test]
async fn a_link_ignores_added_parameters_and_takes_a_bare_download_and_a_version() {
    let gw = Gateway::start().await;
    let auth = [("authorization", bearer(&TOKEN))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let tagged = gw
        .link(
            "/v1/objects/demo/public/hello.txt?utm_source=mail&v=2",
            &auth,
        )
        .await;
    assert_eq!(tagged.status(), StatusCode::FOUND);
    let target = location(&tagged);
    assert!(!target.contains("utm_source"), "{target}");
    assert_eq!(http_get(&target).await.status(), StatusCode::OK);

    let bare = gw
        .link("/v1/objects/demo/public/hello.txt?download", &auth)
        .await;
    assert_eq!(bare.status(), StatusCode::FOUND);
    let target = location(&bare);
    assert!(
        target.contains("response-content-disposition=attachment%3B%20filename%3D%22hello.txt%22"),
        "{target}"
    );
    assert_eq!(http_get(&target).await.status(), StatusCode::OK);

    // A key whose name holds a backslash: saved under that name, made a file name.
    gw.store.put("demo", "public/sp/a\\b.txt", b"slashed").await;
    let slashed = gw
        .link("/v1/objects/demo/public/sp/a%5Cb.txt?download", &auth)
        .await;
    assert_eq!(slashed.status(), StatusCode::FOUND);
    let target = location(&slashed);
    assert!(target.contains("filename%3D%22a_b.txt%22"), "{target}");
    assert_eq!(http_get(&target).await.status(), StatusCode::OK);

    let versioned = gw
        .link("/v1/objects/demo/public/hello.txt?versionId=v-1", &auth)
        .await;
    assert_eq!(versioned.status(), StatusCode::FOUND);
    assert!(location(&versioned).contains("versionId=v-1"));

    let twice = gw
        .link(
            "/v1/objects/demo/public/hello.txt?download=a&download=b",
            &auth,
        )
        .await;
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upload_signing_answers_a_put_the_store_accepts() {
    let gw = Gateway::start().await;
    let response = gw
        .request(Method::POST, "/v1/uploads")
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .header(header::CONTENT_TYPE, "application/json")
        .body(
            r#"{"bucket": "demo", "key": "public/up.txt", "content_type": "text/plain",
                "content_length": 6, "ttl": "120s"}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let grant: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(grant["method"], "PUT");
    let mut headers = HeaderMap::new();
    for (k, v) in grant["headers"].as_object().unwrap() {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.as_str().unwrap().parse().unwrap(),
        );
    }
    let put = reqwest::Client::new()
        .put(grant["url"].as_str().unwrap())
        .headers(headers)
        .body("abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        StatusCode::OK,
        "{}",
        put.text().await.unwrap()
    );
    let link = gw
        .link(
            "/v1/objects/demo/public/up.txt",
            &[("authorization", &bearer(&TOKEN))],
        )
        .await;
    assert_eq!(
        http_get(&location(&link)).await.text().await.unwrap(),
        "abcdef"
    );
}

#[tokio::test]
async fn upload_signing_answers_a_post_form_for_a_size_range() {
    let gw = Gateway::start().await;
    let response = gw
        .request(Method::POST, "/v1/uploads")
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        // Protobuf JSON's lowerCamelCase names are accepted as well.
        .json_body(r#"{"bucket": "demo", "key": "public/form.bin", "contentLengthRange": {"minBytes": 1, "maxBytes": 10}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let grant: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(grant["method"], "POST");
    assert_eq!(grant["file_field"], "file");
    let fields = grant["fields"].as_object().unwrap();
    assert!(fields.contains_key("policy") && fields.contains_key("x-amz-signature"));
    assert!(grant.get("headers").is_none(), "{grant}");

    // A PUT that pins nothing still has its (empty) headers: clients iterate over them.
    let unpinned: Value = serde_json::from_str(
        &gw.sign_upload(r#"{"bucket": "demo", "key": "public/any.bin"}"#)
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(unpinned["method"], "PUT");
    assert_eq!(unpinned["headers"], serde_json::json!({}), "{unpinned}");
}

/// A body written for GrantWrite's protobuf JSON (64-bit integers as strings) works
/// here as it is.
#[tokio::test]
async fn upload_signing_takes_sizes_as_protobuf_json_writes_them() {
    let gw = Gateway::start().await;
    for (body, pinned) in [
        (
            r#"{"bucket": "demo", "key": "public/s.bin", "contentLength": "5"}"#,
            Some("5"),
        ),
        (
            r#"{"bucket": "demo", "key": "public/s.bin", "contentLengthRange": {"minBytes": "1", "maxBytes": "10"}}"#,
            None,
        ),
        // Protobuf's JSON writers leave out a 0: the range from 0.
        (
            r#"{"bucket": "demo", "key": "public/s.bin", "contentLengthRange": {"maxBytes": "1000"}}"#,
            None,
        ),
    ] {
        let response = gw.sign_upload(body).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        let grant: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        match pinned {
            Some(length) => assert_eq!(grant["headers"]["content-length"], length, "{grant}"),
            None => assert!(grant["fields"]["policy"].is_string(), "{grant}"),
        }
    }
    let response = gw
        .sign_upload(r#"{"bucket": "demo", "key": "public/s.bin", "contentLength": "five"}"#)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem = problem(response).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not a whole number of bytes"),
        "{problem}"
    );
}

#[tokio::test]
async fn bad_upload_requests_are_400_with_every_field_named() {
    let gw = Gateway::start().await;
    for (body, expect) in [
        ("not json", None),
        (
            r#"{"bucket": "demo", "key": "public/x", "colour": "red"}"#,
            None,
        ),
        (
            r#"{"bucket": "", "key": "a/../b", "ttl": "0s", "content_length": 1,
                "content_length_range": {"min_bytes": 1, "max_bytes": 2}}"#,
            Some(vec!["content_length_range", "bucket", "key", "ttl"]),
        ),
    ] {
        let response = gw.sign_upload(body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let problem = problem(response).await;
        assert_eq!(problem["code"], "INVALID_ARGUMENT");
        if let Some(fields) = expect {
            let named: Vec<&str> = problem["violations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["field"].as_str().unwrap())
                .collect();
            assert_eq!(named, fields, "{problem}");
        }
    }
}

/// A body the gateway cannot read gets the status that says why, on every JSON route.
#[tokio::test]
async fn unreadable_bodies_are_415_413_or_400_problems() {
    let gw = Gateway::start().await;
    let oversized = format!(
        r#"{{"bucket": "demo", "key": "public/x", "pad": "{}"}}"#,
        "a".repeat(3 << 20)
    );
    for path in ["/v1/uploads", "/s3/multipart"] {
        let send = |content_type: &'static str, body: String| {
            gw.request(Method::POST, path)
                .header(header::AUTHORIZATION, bearer(&TOKEN))
                .header(header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
        };
        for (content_type, body, status, code) in [
            (
                "text/plain",
                "{}".to_owned(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_ARGUMENT",
            ),
            (
                "application/json",
                oversized.clone(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "RESOURCE_EXHAUSTED",
            ),
            (
                "application/json",
                "{not json".to_owned(),
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
            ),
        ] {
            let response = send(content_type, body).await.unwrap();
            assert_eq!(response.status(), status, "{path} {content_type}");
            let problem = problem(response).await;
            assert_eq!(problem["code"], code, "{path}: {problem}");
            // Never the service's own type names.
            assert!(
                !problem["detail"].as_str().unwrap().contains("struct"),
                "{problem}"
            );
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                assert!(
                    problem["detail"]
                        .as_str()
                        .unwrap()
                        .contains("at most 2 MiB"),
                    "{problem}"
                );
            }
        }
    }
    // The detail of a 400 for `body` posted as JSON to `path`.
    let refused = |path: &'static str, body: &'static str| {
        let request = gw
            .request(Method::POST, path)
            .header(header::AUTHORIZATION, bearer(&TOKEN))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
            problem(response).await["detail"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // A body that is not an object is refused and told so, on both routes (Uppy's
    // takes every field as optional, so an array was read as a request of defaults),
    // without echoing it or naming a Rust type.
    for path in ["/v1/uploads", "/s3/multipart"] {
        for body in [
            "[]",
            r#"["photo.png", "image/png"]"#,
            r#""eyJhbGciOi.secret""#,
            "42",
        ] {
            let detail = refused(path, body).await;
            assert!(
                detail.contains("must be a JSON object"),
                "{path} {body}: {detail}"
            );
            assert!(!detail.contains("secret"), "{detail}");
        }
    }
    // The extractors' refusals speak as the gateway does, not of "the target type".
    for (body, says) in [
        (
            r#"{"bucket":"demo","bogus":1}"#,
            "the JSON body: bogus: unknown field `bogus`",
        ),
        (r#"{"bucket":"demo""#, "the body is not valid JSON: "),
        // A metadata name twice would be signed as the last while another reader of
        // the body takes the first.
        (
            r#"{"bucket":"demo","key":"public/m.txt","metadata":{"owner":"a","owner":"b"}}"#,
            "the JSON body: metadata: 'owner' is named twice",
        ),
        // A field name is quoted escaped, not as the line breaks it holds.
        (
            "{\"a\\r\\nforged\u{202e}\":1}",
            "the JSON body: a\\r\\nforged\\u{202e}: unknown field",
        ),
    ] {
        let detail = refused("/v1/uploads", body).await;
        assert!(detail.starts_with(says), "{body}: {detail}");
    }
}

/// A body sent in chunks, without a `Content-Length`, is held to the same limit: past
/// it the client reads the 413 problem (its bytes are read, not left to reset the
/// connection); within it the route gets the whole body.
#[tokio::test]
async fn chunked_bodies_are_held_to_the_body_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start().await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let post_chunked = |chunks: Vec<Vec<u8>>| {
        let addr = addr.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n",
                *TOKEN
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            for chunk in chunks {
                stream
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .expect("the server reads every chunk");
                stream.write_all(&chunk).await.unwrap();
                stream.write_all(b"\r\n").await.unwrap();
            }
            stream.write_all(b"0\r\n\r\n").await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                .await
                .expect("answered within 10 s")
                .expect("answered, not reset");
            String::from_utf8_lossy(&answer).into_owned()
        }
    };

    // 3 MiB in 48 chunks of 64 KiB: past the 2 MiB limit.
    let mut big = vec![br#"{"bucket": "demo", "key": "public/x", "pad": ""#.to_vec()];
    big.extend((0..48).map(|_| vec![b'a'; 64 * 1024]));
    big.push(br#""}"#.to_vec());
    let answer = post_chunked(big).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:.300}");
    assert!(answer.contains("application/problem+json"), "{answer:.600}");
    assert!(
        answer.contains(r#""code":"RESOURCE_EXHAUSTED""#),
        "{answer:.600}"
    );
    assert!(answer.contains("without a Content-Length"), "{answer:.600}");

    // A small JSON body in three chunks reaches the route whole: the write grant.
    let small = br#"{"bucket": "demo", "key": "public/chunked.txt"}"#;
    let chunks = small.chunks(20).map(<[u8]>::to_vec).collect();
    let answer = post_chunked(chunks).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:.600}");
    assert!(answer.contains(r#""method":"PUT""#), "{answer:.600}");
}

#[tokio::test]
async fn a_cookie_authenticated_change_needs_an_allowed_origin() {
    let gw = Gateway::start().await;
    let body = r#"{"bucket": "demo", "key": "public/csrf.txt"}"#;
    let send = |origin: Option<&'static str>| {
        let mut request = gw
            .request(Method::POST, "/v1/uploads")
            .header(header::COOKIE, format!("sg_session={}", *TOKEN))
            .json_body(body);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.send()
    };
    for origin in [
        None,
        Some("https://evil.example"),
        Some("http://127.0.0.1:9998"),
    ] {
        let refused = send(origin).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(problem(refused).await["code"], "PERMISSION_DENIED");
    }
    let allowed = send(Some(PAGE)).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers()["access-control-allow-origin"], PAGE);
}

/// A GET that issues a signature (an upload form) with the session cookie comes from the
/// page's own origin or an allowed one: a cross-site page cannot have the user's browser
/// fetch one (spending the user's budget); the SDK credentials endpoint takes no cookie.
#[tokio::test]
async fn a_cookie_authenticated_signature_is_not_issued_to_another_site() {
    let gw = Gateway::start().await;
    let cookie = format!("sg_session={}", *TOKEN);
    let params = |headers: &[(&'static str, &'static str)]| {
        let mut request = gw
            .request(Method::GET, "/s3/params?filename=a.txt&type=text%2Fplain")
            .header(header::COOKIE, &cookie);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    for refused in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")],
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let response = params(refused).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{refused:?}");
        assert_eq!(problem(response).await["code"], "PERMISSION_DENIED");
    }
    for served in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("origin", PAGE), ("sec-fetch-site", "cross-site")],
        // Not a browser: no page to act for.
        &[],
    ] {
        let response = params(served).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{served:?}");
    }
    // A bearer token is code's own choice, from anywhere.
    let bearer_token = gw
        .request(Method::GET, "/s3/params?filename=a.txt&type=text%2Fplain")
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer_token.status(), StatusCode::OK);
    // The SDKs' endpoint reads the Authorization value only.
    let credentials = gw
        .request(Method::GET, "/v1/credentials/demo/public/?access=read")
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(credentials.status(), StatusCode::UNAUTHORIZED);
    // Told what this endpoint reads, not sent to sign in for a cookie it ignores.
    let detail = problem(credentials).await["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("Authorization header only") && !detail.contains("sign in"),
        "{detail}"
    );
}

#[tokio::test]
async fn cors_admits_exactly_the_configured_origins() {
    let gw = Gateway::start().await;
    let preflight = |origin: &'static str| {
        gw.request(Method::OPTIONS, "/v1/uploads")
            .header(header::ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight(PAGE).await.unwrap();
    assert!(allowed.status().is_success());
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], PAGE);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && !methods.contains("PUT"),
        "{methods}"
    );
    assert!(
        h.get_all(header::VARY).iter().any(|v| v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin"))
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

/// A client that trickles its headers, or leaves a kept-alive connection idle, is
/// cut off after `http.header_read_timeout`; one that sends in time is served.
#[tokio::test]
async fn slow_or_idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start_http(Setup::new(), "header_read_timeout = \"1s\"").await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let closed_within = |mut stream: tokio::net::TcpStream| async move {
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed within 5 s")
            .ok();
        (
            started.elapsed(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    };

    // Half a request, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (took, answer) = closed_within(slow).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(!answer.contains("200 OK"), "{answer}");

    // A whole request is answered; then the idle connection is closed in its turn.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (took, answer) = closed_within(kept).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // Nothing at all, or half of HTTP/2's preface: hyper has not yet told HTTP/1.1
    // from HTTP/2, and would wait for ever.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (took, _) = closed_within(silent).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12])
        .await
        .unwrap();
    closed_within(half).await;

    // HTTP/2 by prior knowledge, then silence: idle, and closed.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut mute = tokio::net::TcpStream::connect(&addr).await.unwrap();
    mute.write_all(preface).await.unwrap();
    let (took, _) = closed_within(mute).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // HTTP/2 answering every PING, and nothing else: idle all the same, and closed.
    let mut polite = tokio::net::TcpStream::connect(&addr).await.unwrap();
    polite.write_all(preface).await.unwrap();
    let opened = std::time::Instant::now();
    let (_, closed_after) = tokio::time::timeout(
        Duration::from_secs(5),
        support::frames_until_closed(&mut polite, true, opened),
    )
    .await
    .expect("an idle HTTP/2 connection closed within 5 s");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}"
    );
}

/// Headers are held to the gRPC port's 64 KiB over HTTP/1.1 too (hyper's default
/// buffer let them grow to about 400 KiB).
#[tokio::test]
async fn a_header_section_over_64_kib_is_431() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start().await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    for (size, status) in [(60 * 1024, "200"), (70 * 1024, "431")] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        );
        // The server may answer and close before the whole header is written.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{size} bytes: {answer}"
        );
    }
}

/// A body trickled past `server.request_timeout` gets a 408 problem, instead of holding
/// its stream (and its share of the connection) for as long as the client likes.
#[tokio::test]
async fn a_body_slower_than_the_request_timeout_is_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start_http(
        Setup::with_config("[server]\nrequest_timeout = \"1s\"\n"),
        "header_read_timeout = \"5s\"",
    )
    .await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"bucket\"",
            *TOKEN
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(4), slow.read(&mut answer))
        .await
        .expect("answered within 4 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(started.elapsed() >= Duration::from_millis(900), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("DEADLINE_EXCEEDED"), "{answer}");
    assert!(answer.contains("server.request_timeout"), "{answer}");
}

/// HTTP/2 is served beside HTTP/1.1: by prior knowledge here, by ALPN over TLS (which
/// browsers choose when the certificate's listener offers `h2`).
#[tokio::test]
async fn the_gateway_speaks_http2_too() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let gw = Gateway::start().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let request = http::Request::get(format!("{}/v1/objects/demo/public/hello.txt", gw.base))
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("an HTTP/2 answer");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::FOUND);
    let target = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = response.into_body().collect().await;
    assert!(target.contains("X-Amz-Signature="), "{target}");
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let gw = Gateway::start().await;
    let response = gw.link("/v2/nothing", &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["code"], "NOT_FOUND");
}

#[tokio::test]
async fn a_method_a_route_does_not_answer_is_a_405_problem_with_allow() {
    let gw = Gateway::start().await;
    for (method, path, allow) in [
        (
            Method::POST,
            "/v1/objects/demo/public/hello.txt",
            "GET,HEAD",
        ),
        (
            Method::DELETE,
            "/v1/objects/demo/public/hello.txt",
            "GET,HEAD",
        ),
        (Method::PUT, "/healthz", "GET,HEAD"),
        (Method::GET, "/v1/uploads", "POST"),
        (
            Method::PATCH,
            "/s3/multipart/some-upload",
            "GET,HEAD,DELETE",
        ),
    ] {
        let body = refused_method(&gw, &method, path, allow).await;
        assert!(
            body["detail"].as_str().unwrap().contains(method.as_str()),
            "{body}"
        );
    }
}

/// `method` on `path` with the caller's token: a 405 problem (UNIMPLEMENTED) whose
/// `Allow` is `allow`; its body.
async fn refused_method(gw: &Gateway, method: &Method, path: &str, allow: &str) -> Value {
    let response = gw
        .request(method.clone(), path)
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "{method} {path}"
    );
    assert_eq!(response.headers()[header::ALLOW], allow, "{method} {path}");
    let body = problem(response).await;
    assert_eq!(body["code"], "UNIMPLEMENTED", "{method} {path}: {body}");
    body
}

async fn json(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn uppy_single_upload_gets_a_post_form_under_the_callers_prefix() {
    let gw = Gateway::start().await;
    let params = json(
        gw.request(
            Method::GET,
            "/s3/params?filename=..%2F..%2Fevil+%E2%80%AEgnp.csv&type=text%2Fcsv&metadata%5Bname%5D=x",
        )
        .header(header::COOKIE, format!("sg_session={}", *TOKEN))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(params["method"], "POST");
    let fields: HashMap<String, String> = serde_json::from_value(params["fields"].clone()).unwrap();
    let key = &fields["key"];
    // The rule's prefix, a random segment, the sanitised last segment of the name.
    let (prefix, rest) = key.split_at("public/".len());
    assert_eq!(prefix, "public/");
    let (id, name) = rest.split_once('/').unwrap();
    assert_eq!(id.len(), 32, "{key}");
    assert_eq!(name, "evil _gnp.csv");
    assert_eq!(fields["Content-Type"], "text/csv");
    assert!(
        !fields.keys().any(|k| k.starts_with("x-amz-meta-")),
        "{fields:?}"
    );
    let status = support::post_form(
        params["url"].as_str().unwrap(),
        &fields,
        "file",
        b"a,b\n1,2\n",
    )
    .await;
    assert_eq!(status, 204);
    let link = gw
        .link(
            &format!("/v1/objects/demo/{}", key.replace(' ', "%20")),
            &[("authorization", &bearer(&TOKEN))],
        )
        .await;
    assert_eq!(
        http_get(&location(&link)).await.text().await.unwrap(),
        "a,b\n1,2\n"
    );
    // A parameter sent twice is refused, not taken last.
    let twice = gw
        .request(
            Method::GET,
            "/s3/params?filename=a.txt&filename=b.html&type=text%2Fplain",
        )
        .header(header::COOKIE, format!("sg_session={}", *TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    let detail = problem(twice).await["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("'filename' was sent more than once"),
        "{detail}"
    );
    // A caller without a write rule in the upload bucket gets no form.
    let denied = gw
        .request(Method::GET, "/s3/params?filename=a.txt&type=text%2Fplain")
        .header(header::AUTHORIZATION, bearer(&OTHER_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    // A type no browser reports is refused, saying so; none is S3's default.
    let crafted = gw
        .request(
            Method::GET,
            "/s3/params?filename=a.txt&type=text%2Fhtml%0d%0ax:%20y",
        )
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(crafted.status(), StatusCode::BAD_REQUEST);
    let detail = problem(crafted).await["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("type must be the file's MIME type"),
        "{detail}"
    );
    let untyped = json(
        gw.request(Method::GET, "/s3/params?filename=a.bin&type=")
            .header(header::AUTHORIZATION, bearer(&TOKEN))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        untyped["fields"]["Content-Type"],
        "application/octet-stream"
    );
}

#[tokio::test]
async fn uppy_multipart_routes_upload_two_parts_and_bind_the_upload_to_its_caller() {
    let gw = Gateway::start().await;
    let cookie = format!("sg_session={}", *TOKEN);
    let created = json(
        gw.request(Method::POST, "/s3/multipart")
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, PAGE)
            .json_body(r#"{"filename": "big.bin", "type": "application/octet-stream", "metadata": {"name": "big.bin"}}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let upload = created["uploadId"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("public/") && key.ends_with("/big.bin"),
        "{key}"
    );
    let base = format!("/s3/multipart/{}", enc(&upload));
    let q = format!("key={}", enc(&key));
    let sizes = [5 * 1024 * 1024, 1024 * 1024];
    let mut whole = Vec::new();
    let mut parts = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let signed = json(
            gw.request(Method::GET, &format!("{base}/{}?{q}", i + 1))
                .header(header::COOKIE, &cookie)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let data: Vec<u8> = (0..*size).map(|n| (n % 251) as u8 + i as u8).collect();
        whole.extend_from_slice(&data);
        let put = reqwest::Client::new()
            .put(signed["url"].as_str().unwrap())
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::OK);
        let etag = put.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .to_owned();
        parts.push(serde_json::json!({"PartNumber": i + 1, "ETag": etag}));
    }
    let listed = json(
        gw.request(Method::GET, &format!("{base}?{q}"))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed[1]["PartNumber"], 2);
    assert_eq!(listed[1]["Size"], 1024 * 1024);
    // Another caller, or the right caller with another key, gets nowhere.
    let other = gw
        .request(Method::POST, &format!("{base}/complete?{q}"))
        .header(header::AUTHORIZATION, bearer(&OTHER_TOKEN))
        .json_body(&serde_json::json!({"parts": parts}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let wrong_key = gw
        .request(Method::GET, &format!("{base}/1?key=public%2Fother.bin"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::BAD_REQUEST);
    // A key sent twice is told as such, not as missing.
    let twice = gw
        .request(Method::GET, &format!("{base}/1?{q}&key=public%2Fother.bin"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);
    let detail = problem(twice).await["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("?key= was sent more than once"), "{detail}");
    // A part number that is not one says which are.
    for bad in ["-1", "99999999999999999999", "x"] {
        let refused = gw
            .request(Method::GET, &format!("{base}/{bad}?{q}"))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
        let detail = problem(refused).await["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(detail.contains("from 1 to 10000"), "{bad}: {detail}");
    }
    // So does one in the completion's list, quoted as sent (not as part 0).
    for (bad, quoted) in [
        (serde_json::json!(-1), "parts[0].PartNumber: -1 is not"),
        (
            serde_json::json!("2x"),
            "parts[0].PartNumber: \"2x\" is not",
        ),
        (serde_json::json!(1.5), "parts[0].PartNumber: 1.5 is not"),
    ] {
        let refused = gw
            .request(Method::POST, &format!("{base}/complete?{q}"))
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, PAGE)
            .json_body(
                &serde_json::json!({"parts": [{"PartNumber": bad, "ETag": "\"e\""}]}).to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
        let detail = problem(refused).await["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            detail.contains(quoted) && detail.contains("from 1 to 10000"),
            "{detail}"
        );
    }
    let done = json(
        gw.request(Method::POST, &format!("{base}/complete?{q}"))
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, PAGE)
            .json_body(&serde_json::json!({"parts": parts}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(done["key"], key.as_str());
    let target = done["location"].as_str().unwrap();
    assert!(target.starts_with("/v1/objects/demo/public/"), "{target}");
    let link = gw.link(target, &[("authorization", &bearer(&TOKEN))]).await;
    let got = http_get(&location(&link)).await.bytes().await.unwrap();
    assert!(
        got.as_ref() == whole.as_slice(),
        "the object is the two parts"
    );
}

#[tokio::test]
async fn uppy_abort_discards_the_upload() {
    let gw = Gateway::start().await;
    let created = uppy_start(&gw, "x.bin").await;
    let base = format!(
        "/s3/multipart/{}",
        enc(created["uploadId"].as_str().unwrap())
    );
    let q = format!("key={}", enc(created["key"].as_str().unwrap()));
    let signed = json(
        gw.request(Method::GET, &format!("{base}/1?{q}"))
            .header(header::AUTHORIZATION, bearer(&TOKEN))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let aborted = gw
        .request(Method::DELETE, &format!("{base}?{q}"))
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(aborted.status(), StatusCode::NO_CONTENT);
    let put = reqwest::Client::new()
        .put(signed["url"].as_str().unwrap())
        .body(vec![0u8; 16])
        .send()
        .await
        .unwrap();
    assert!(put.status().is_client_error(), "{}", put.status());
}

/// Percent-encodes a path segment or query value as `encodeURIComponent` does.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// JSON bodies as text, so malformed ones can be sent too.
trait JsonBody {
    fn json_body(self, body: &str) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &str) -> Self {
        self.header(header::CONTENT_TYPE, "application/json")
            .body(body.to_owned())
    }
}

/// A GET over TLS trusting only `ca`, with `token`; answers the status and Location.
async fn tls_get(url: &str, ca: &support::certs::Ca, token: &str) -> (u16, Option<String>) {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config())
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let request = http::Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(request).await.expect("a TLS answer");
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (response.status().as_u16(), location)
}

#[tokio::test]
async fn with_server_tls_the_gateway_presents_the_certificate() {
    gateway_presents(|cert, key, _| {
        format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n")
    })
    .await;
}

/// With mTLS on the gRPC port, the gateway presents the same server certificate and
/// asks for no client certificate (browsers and SDKs have none; they send tokens).
#[tokio::test]
async fn with_mtls_the_gateway_presents_the_server_certificate_without_asking_for_one() {
    gateway_presents(|cert, key, ca| {
        format!(
            "[identity.mtls]\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n\
             trust_domains = [\"example.org\"]\nrequired = true\n"
        )
    })
    .await;
}

/// Starts the service with the TLS section `tls(cert_file, key_file, ca_file)` and the
/// gateway on loopback; a click over TLS, trusting only the CA, gets a link that
/// works, and plain HTTP gets nothing there.
async fn gateway_presents(
    tls: impl Fn(&std::path::Path, &std::path::Path, &std::path::Path) -> String,
) {
    let ca = support::certs::Ca::new("gateway CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = support::certs::server_cert(&ca).write_to(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let store = demo_store().await;
    let service = Service::start(
        &store,
        Setup::with_config(format!(
            "{}[http]\nlisten = \"127.0.0.1:0\"\n",
            tls(&cert_file, &key_file, &ca_file)
        )),
    )
    .await;
    let port = service.http_port();
    let url = format!("https://localhost:{port}/v1/objects/demo/public/hello.txt");
    let mut answer = None;
    for _ in 0..100 {
        if port_open(port) {
            answer = Some(tls_get(&url, &ca, &TOKEN).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, location) = answer.expect("the gateway listens");
    assert_eq!(status, 302);
    let object = http_get(&location.unwrap()).await;
    assert_eq!(object.text().await.unwrap(), "hello, storage-grants\n");
    // A client that offers only HTTP/1.1 in the handshake (Python's urllib3, so boto3
    // and the AWS CLI; load balancers' HTTP/1.1 target groups) is served HTTP/1.1.
    let (protocol, head) = support::http1_only_get(port, &ca)
        .await
        .expect("a handshake offering only http/1.1");
    assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]), "{head}");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Plain HTTP is not spoken there.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    // Its connections carry TCP keepalive from the moment they are accepted.
    assert_keepalive(port, Duration::from_secs(60)).await;
}

/// A new connection to `port` gets TCP keepalive after `idle` of silence: the server's
/// side of the socket carries the kernel's keepalive timer.
async fn assert_keepalive(port: u16, idle: Duration) {
    let client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let peer = client.local_addr().unwrap().port();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let when = loop {
        if let Some(when) = support::keepalive_timer(port, peer) {
            break when;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no keepalive timer on the gateway's socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        when <= idle && when > idle / 2,
        "keepalive due in {when:?}, configured {idle:?}"
    );
}

/// The gateway's plain connections get the gRPC port's TCP keepalive
/// (`server.keepalive_interval`): a client gone without closing is found, an idle one
/// kept through load balancers.
#[tokio::test]
async fn gateway_connections_carry_tcp_keepalive() {
    let mut setup = Setup::new();
    setup.extra_config = "[server]\nkeepalive_interval = \"3s\"\n".into();
    let gw = Gateway::start_with(setup).await;
    let port: u16 = gw.base.rsplit(':').next().unwrap().parse().unwrap();
    assert_keepalive(port, Duration::from_secs(3)).await;
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A HEAD of the link (a link checker, `curl -IL`, a download manager sizing the file)
/// leads to a URL signed for HEAD: the store answers the object's headers. S3 signs
/// the method, so the GET URL would answer 403, and this one downloads nothing.
#[tokio::test]
async fn a_head_of_the_link_leads_to_the_objects_headers() {
    let gw = Gateway::start().await;
    let response = gw
        .request(Method::HEAD, "/v1/objects/demo/public/hello.txt")
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let target = location(&response);
    let store = reqwest::Client::new();
    let head = store.head(&target).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK, "{:?}", head.headers());
    assert_eq!(head.headers()[header::CONTENT_LENGTH], "22");
    let get = store.get(&target).send().await.unwrap();
    assert_eq!(
        get.status(),
        StatusCode::FORBIDDEN,
        "a HEAD URL must not download"
    );
    // GET still leads to the body.
    let clicked = gw
        .link(
            "/v1/objects/demo/public/hello.txt",
            &[("authorization", &bearer(&TOKEN))],
        )
        .await;
    let body = http_get(&location(&clicked)).await;
    assert_eq!(body.text().await.unwrap(), "hello, storage-grants\n");
}

/// On routes whose GET issues something (credentials, an upload signature), HEAD is
/// refused before any handler runs (405, `Allow: GET`, even without identity): it
/// would issue the thing and throw it away.
#[tokio::test]
async fn head_is_refused_where_a_get_issues_credentials_or_signatures() {
    let gw = Gateway::start().await;
    for path in [
        "/v1/credentials/demo/public/?access=read",
        "/s3/params?filename=a.txt&type=text%2Fplain",
        "/s3/multipart/some-upload/1",
    ] {
        for auth in [Some(bearer(&TOKEN)), None] {
            let mut request = gw.request(Method::HEAD, path);
            if let Some(auth) = &auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{path} {auth:?}"
            );
            assert_eq!(response.headers()[header::ALLOW], "GET", "{path}");
        }
        // Any other method is told the same: GET alone, not a HEAD that is refused.
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            refused_method(&gw, &method, path, "GET").await;
        }
    }
    // GET still signs.
    let params = gw
        .request(Method::GET, "/s3/params?filename=a.txt&type=text%2Fplain")
        .header(header::AUTHORIZATION, bearer(&TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(params.status(), StatusCode::OK);
}

/// An upload started through Uppy's multipart route lives `http.multipart_ttl` (cut by
/// the rule), not the grants' default (5 minutes here): a large file over a slow link
/// takes longer.
#[tokio::test]
async fn an_uppy_multipart_upload_lives_the_configured_multipart_ttl() {
    // The rule allows 15 minutes; the default (1 hour) is cut to it.
    for (http, want) in [("multipart_ttl = \"10m\"", 600), ("", 900)] {
        let gw = Gateway::start_http(Setup::new(), http).await;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let created = uppy_start(&gw, "big.bin").await;
        // The upload id Uppy holds is the upload token.
        let claims = support::upload_claims(created["uploadId"].as_str().unwrap());
        let life = claims["e"].as_u64().unwrap() - before;
        assert!(
            (want - 5..=want + 2).contains(&life),
            "{http:?}: the upload lives {life}s, want {want}s"
        );
    }
}

/// An upload started through Uppy's route may be aborted (`DELETE`) by its caller
/// after its token expired, as over gRPC; continuing it may not.
#[tokio::test]
async fn an_expired_uppy_upload_can_still_be_aborted_by_its_caller() {
    let gw = Gateway::start_http(Setup::new(), "multipart_ttl = \"1s\"").await;
    let created = uppy_start(&gw, "late.bin").await;
    let (upload, key) = (
        created["uploadId"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let path = format!("/s3/multipart/{}?key={}", enc(&upload), enc(&key));
    let send = |method: Method, token: &str| {
        gw.request(method, &path)
            .header(header::AUTHORIZATION, bearer(token))
            .send()
    };
    let listed = send(Method::GET, &TOKEN).await.unwrap();
    assert_eq!(
        listed.status(),
        StatusCode::BAD_REQUEST,
        "an expired upload listed"
    );
    let other = send(Method::DELETE, &OTHER_TOKEN).await.unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let aborted = send(Method::DELETE, &TOKEN).await.unwrap();
    assert_eq!(aborted.status(), StatusCode::NO_CONTENT);
}

/// A caller over its budget gets 429 with a `Retry-After` in whole seconds rounded up,
/// the number its message says: waiting exactly that long is enough.
#[tokio::test]
async fn retry_after_is_long_enough_for_the_budget_to_refill() {
    let mut setup = Setup::new();
    setup
        .extra_config
        .push_str("[limits]\ngrants_per_second = 0.4\ngrants_burst = 1\n");
    let gw = Gateway::start_with(setup).await;
    let auth = [("authorization", bearer(&TOKEN))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let link = "/v1/objects/demo/public/hello.txt";
    assert_eq!(gw.link(link, &auth).await.status(), StatusCode::FOUND);
    let over = gw.link(link, &auth).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let after: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // 2.5 s at 0.4 a second, a little less by now: 3 whole seconds.
    assert_eq!(after, 3);
    let detail = problem(over).await["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains(&format!("retry in {after}s")), "{detail}");
    tokio::time::sleep(Duration::from_secs(after)).await;
    assert_eq!(gw.link(link, &auth).await.status(), StatusCode::FOUND);
}

/// Every multipart step reaches the store (which bills it and shares its request rate
/// among all callers), so each spends a grant of the caller's budget, as every refusal
/// does, the Uppy start routes' included; past the budget: 429, and nothing audited.
#[tokio::test]
async fn multipart_steps_and_uppy_refusals_spend_the_callers_budget() {
    let audit = support::capture_audit();
    let mut setup = Setup::new();
    setup
        .extra_config
        .push_str("[limits]\ngrants_per_second = 0.01\ngrants_burst = 3\n");
    let gw = Gateway::start_with(setup).await;

    // dev:other may not write: three refusals, then 429 on every start route.
    let other = bearer(&OTHER_TOKEN);
    let start = |token: String| {
        gw.request(Method::POST, "/s3/multipart")
            .header(header::AUTHORIZATION, token)
            .json_body(r#"{"filename": "a.bin", "type": "application/octet-stream"}"#)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            start(other.clone()).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        start(other.clone()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let params = gw
        .request(Method::GET, "/s3/params?filename=a.txt&type=text%2Fplain")
        .header(header::AUTHORIZATION, other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(params.status(), StatusCode::TOO_MANY_REQUESTS);
    let denials = audit()
        .iter()
        .filter(|l| l.contains("grant denied") && l.contains("\"caller\":\"dev:other\""))
        .count();
    assert_eq!(denials, 3, "refusals past the budget are not audited");

    // dev:demo: the start, then two listings of its parts, then none.
    let created = uppy_start(&gw, "big.bin").await;
    let path = format!(
        "/s3/multipart/{}?key={}",
        enc(created["uploadId"].as_str().unwrap()),
        enc(created["key"].as_str().unwrap())
    );
    let step = |method: Method| {
        gw.request(method, &path)
            .header(header::AUTHORIZATION, bearer(&TOKEN))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(step(Method::GET).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        step(Method::GET).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        step(Method::DELETE).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Starts an Uppy multipart upload of `filename` as the test caller (bearer token):
/// the route's JSON answer (`uploadId`, `key`).
async fn uppy_start(gw: &Gateway, filename: &str) -> serde_json::Value {
    json(
        gw.request(Method::POST, "/s3/multipart")
            .header(header::AUTHORIZATION, bearer(&TOKEN))
            .json_body(
                &serde_json::json!({"filename": filename, "type": "application/octet-stream"})
                    .to_string(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await
}
