//! Server reflection as real clients use it: `buf curl` lists the methods and calls
//! GrantRead from descriptors it got only through reflection, and a strict client
//! (grpcio's reflection messages, one request, no follow-up) builds
//! `storagegrants.v1` from a single answer, imports included.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{Service, Setup, TOKEN, demo_store};

fn repo_file(path: &str) -> PathBuf {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    assert!(
        file.exists(),
        "no {}; run ./scripts/test.sh, which installs it",
        file.display()
    );
    file
}

/// Runs `program` with `args` off the test's runtime, which serves the service.
async fn output(program: &PathBuf, args: &[&str]) -> String {
    let mut command = Command::new(program);
    command.args(args);
    let what = format!("{} {}", program.display(), args.first().unwrap_or(&""));
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the client's thread")
        .expect("run the client");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// One `file_containing_symbol` request; a descriptor pool built from that answer
/// alone; the type of `GrantReadResponse.expires_at` as it resolves there.
const STRICT_CLIENT: &str = r#"
import sys, grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

channel = grpc.insecure_channel(sys.argv[1])
stub = reflection_pb2_grpc.ServerReflectionStub(channel)
request = reflection_pb2.ServerReflectionRequest(
    file_containing_symbol="storagegrants.v1.GrantService")
answer = next(stub.ServerReflectionInfo(iter([request])))
files = {}
for raw in answer.file_descriptor_response.file_descriptor_proto:
    fd = descriptor_pb2.FileDescriptorProto()
    fd.ParseFromString(raw)
    files[fd.name] = fd
pool = descriptor_pool.DescriptorPool()
added = set()
def add(name):
    if name in added:
        return
    for dep in files[name].dependency:
        add(dep)
    pool.Add(files[name])
    added.add(name)
for name in files:
    add(name)
response = pool.FindMessageTypeByName("storagegrants.v1.GrantReadResponse")
print(response.fields_by_name["expires_at"].message_type.full_name)
request = pool.FindMessageTypeByName("storagegrants.v1.GrantReadRequest")
print(request.fields_by_name["ttl"].message_type.full_name)
"#;

/// `buf curl` over plaintext HTTP/2, descriptors from reflection only.
const BUF_CURL: [&str; 5] = [
    "curl",
    "--protocol",
    "grpc",
    "--http2-prior-knowledge",
    "--reflect",
];

#[tokio::test]
async fn strict_and_buf_curl_clients_build_the_api_from_reflection_alone() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let addr = service.addr.to_string();
    let url = format!("http://{addr}");
    let buf = repo_file("node_modules/.bin/buf");

    let python = repo_file(".venv/bin/python");
    let types = output(&python, &["-c", STRICT_CLIENT, &addr]).await;
    assert_eq!(
        types.lines().collect::<Vec<_>>(),
        ["google.protobuf.Timestamp", "google.protobuf.Duration"]
    );

    let methods = output(&buf, &[&BUF_CURL[..], &["--list-methods", &url]].concat()).await;
    for method in [
        "storagegrants.v1.GrantService/GrantRead",
        "storagegrants.v1.GrantService/AssumeScoped",
        "grpc.health.v1.Health/Check",
    ] {
        assert!(methods.lines().any(|l| l == method), "{method} not listed");
    }

    let token = format!("authorization: Bearer {}", *TOKEN);
    let call = format!("{url}/storagegrants.v1.GrantService/GrantRead");
    let answer = output(
        &buf,
        &[
            &BUF_CURL[..],
            &[
                "-H",
                &token,
                "-d",
                r#"{"bucket": "demo", "key": "public/hello.txt", "ttl": "90s"}"#,
                &call,
            ],
        ]
        .concat(),
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON answer");
    // Timestamp rendered as RFC 3339 proves buf resolved the imported type.
    let expires = answer["expiresAt"].as_str().expect("expiresAt");
    assert!(expires.ends_with('Z') && expires.contains('T'), "{expires}");
    assert_eq!(answer["grantId"].as_str().map(str::len), Some(32));
}
