//! `[server.tls]`: the service terminates TLS without client certificates, callers
//! identify with a bearer token over it, plaintext is not spoken on that port, and a
//! renewed certificate written over the files is served to new connections without a
//! restart. Every certificate is generated here.

use std::time::{Duration, Instant};

use storage_grants::proto::GrantReadRequest;
use storage_grants::proto::grant_service_client::GrantServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::support::certs::{self, Ca, server_cert};
use crate::support::{Service, Setup, TOKEN, authed, demo_store};

/// A client trusting only `ca`.
async fn connect(service: &Service, ca: &Ca) -> Result<GrantServiceClient<Channel>, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", service.addr))
        .expect("valid uri")
        .tls_config(tls)
        .expect("valid TLS config")
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(GrantServiceClient::new(channel))
}

fn read() -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: "public/hello.txt".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn grants_are_served_over_tls_and_a_renewed_certificate_is_picked_up() {
    let store = demo_store().await;
    let dir = tempfile::tempdir().unwrap();
    let first_ca = Ca::new("CA one");
    let first = server_cert(&first_ca);
    let (cert_file, key_file) = first.write_to(dir.path());
    let service = Service::start(
        &store,
        Setup::with_config(format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nreload_interval = \"100ms\"\n",
            cert_file, key_file
        )),
    )
    .await;

    let mut client = connect(&service, &first_ca).await.expect("TLS connection");
    let grant = client
        .grant_read(authed(read(), &TOKEN))
        .await
        .expect("a grant over TLS")
        .into_inner();
    assert!(grant.url.contains("public/hello.txt"));
    // The port speaks only TLS: a plaintext call fails.
    let plaintext = service
        .client()
        .await
        .grant_read(authed(read(), &TOKEN))
        .await;
    assert!(plaintext.is_err(), "plaintext gRPC was answered");

    // A renewal writes both files; new connections get the new certificate. This one
    // keeps the files' lengths and modification times (as `cp -p` would): only their
    // content tells it from the old pair.
    let second_ca = Ca::new("CA two");
    let times: Vec<_> = [&cert_file, &key_file]
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .into();
    let renewal = (0..200)
        .map(|_| server_cert(&second_ca))
        .find(|l| l.cert.len() == first.cert.len() && l.key.len() == first.key.len())
        .expect("a renewal of the same lengths");
    renewal.write_to(dir.path());
    for (file, time) in [&cert_file, &key_file].into_iter().zip(times) {
        std::fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut renewed = loop {
        match connect(&service, &second_ca).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "renewed certificate never served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    renewed
        .grant_read(authed(read(), &TOKEN))
        .await
        .expect("a grant over the renewed certificate");
    assert!(
        connect(&service, &first_ca).await.is_err(),
        "new connections still get the old certificate"
    );
    // Connections made before the renewal keep working.
    client
        .grant_read(authed(read(), &TOKEN))
        .await
        .expect("the first connection still serves");

    // A renewal with an expired certificate is refused: the valid one stays served.
    let third_ca = Ca::new("third CA");
    certs::server_cert_valid(&third_ca, certs::Validity::Expired).write_to(dir.path());
    tokio::time::sleep(Duration::from_millis(600)).await;
    connect(&service, &second_ca)
        .await
        .expect("an expired renewal replaced the valid certificate")
        .grant_read(authed(read(), &TOKEN))
        .await
        .expect("a grant over the certificate kept in force");
}

/// `--check-config` and start-up refuse an expired server certificate, saying when it
/// expired: every client would refuse it at the handshake.
#[tokio::test]
async fn an_expired_server_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("expired CA");
    let (cert_file, key_file) =
        certs::server_cert_valid(&ca, certs::Validity::Expired).write_to(dir.path());
    std::fs::write(dir.path().join("rules.toml"), "").unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\n[server.tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storage-grants"))
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--check-config")
        .env_remove("STORAGE_GRANTS_CONFIG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tls.cert_file") && err.contains("expired at 2021-01-01"),
        "{err}"
    );
}

/// The gRPC port offers HTTP/1.1 in the TLS handshake only when it serves gRPC-Web over
/// it: a client offering only `http/1.1` is then served; otherwise the handshake
/// refuses it (gRPC itself is HTTP/2 only).
#[tokio::test]
async fn http1_is_offered_on_the_grpc_port_exactly_when_grpc_web_is_on() {
    let store = demo_store().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("grpc-web CA");
    let (cert_file, key_file) = server_cert(&ca).write_to(dir.path());
    for grpc_web in [true, false] {
        let service = Service::start(
            &store,
            Setup::with_config(format!(
                "[server]\ngrpc_web = {grpc_web}\n[server.tls]\ncert_file = {cert_file:?}\n\
             key_file = {key_file:?}\n"
            )),
        )
        .await;
        let answer = crate::support::http1_only_get(service.addr.port(), &ca).await;
        if grpc_web {
            let (protocol, head) = answer.expect("HTTP/1.1 is offered with gRPC-Web");
            assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]), "{head}");
            assert!(head.starts_with("HTTP/1.1 "), "{head}");
        } else {
            let refused = answer.expect_err("HTTP/2 only without gRPC-Web");
            assert!(refused.contains("NoApplicationProtocol"), "{refused}");
        }
        // gRPC clients are served either way.
        let mut client = connect(&service, &ca).await.expect("TLS connection");
        client
            .grant_read(authed(read(), &TOKEN))
            .await
            .expect("a grant over TLS");
    }
}
