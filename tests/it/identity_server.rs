//! Identity sources through the real server (`server::run`), as an operator configures
//! them: mTLS terminated by the service, whose SPIFFE ID feeds a templated rule, and a
//! mesh-forwarded client certificate trusted only from configured peers.

use crate::support;

use crate::support::certs;

use std::time::Duration;

use certs::{Ca, Validity, client_cert, server_cert};
use storage_grants::proto::GrantReadRequest;
use storage_grants::proto::grant_service_client::GrantServiceClient;
use support::{Service, Setup, Store, demo_store, http_get};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Every reporter workload reads its own namespace's folder.
const RULES: &str = r#"
[[rules]]
callers = ["spiffe://prod.example/ns/*/sa/reporter"]
bucket = "demo"
prefix = "tenants/{namespace}/"
actions = ["read"]
"#;

fn read(key: &str) -> GrantReadRequest {
    GrantReadRequest {
        bucket: "demo".into(),
        key: key.into(),
        ..Default::default()
    }
}

async fn tls_channel(
    service: &Service,
    ca: &Ca,
    client: Option<&certs::Leaf>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://{}", service.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())
}

/// A renewed server certificate written over `[identity.mtls]`'s files (as
/// cert-manager renews a Secret) is presented to new connections without a restart;
/// the gRPC port and the gateway present it alike.
#[tokio::test]
async fn a_renewed_mtls_server_certificate_is_served_without_a_restart() {
    let store = demo_store().await;
    store
        .put("demo", "tenants/billing/q3.csv", b"billing data")
        .await;
    let ca = Ca::new("test mesh CA");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let (cert_file, key_file) = server_cert(&ca).write_to(dir.path());
    let mut setup = Setup::new();
    setup.rules = RULES.into();
    setup.extra_config = format!(
        "[identity.mtls]\nca_file = {:?}\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\n\
         trust_domains = [\"prod.example\"]\nreload_interval = \"100ms\"\n",
        dir.path().join("ca.pem")
    );
    let service = Service::start(&store, setup).await;
    let reporter = client_cert(
        &ca,
        &["spiffe://prod.example/ns/billing/sa/reporter"],
        Validity::Now,
    );
    tls_channel(&service, &ca, Some(&reporter))
        .await
        .expect("mTLS connection with the first certificate");

    // The renewal: another server certificate (here from another CA, so that a client
    // can tell which one it got); client certificates are still checked against ca.pem.
    let renewed_ca = Ca::new("renewed server CA");
    server_cert(&renewed_ca).write_to(dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match tls_channel(&service, &renewed_ca, Some(&reporter)).await {
            Ok(channel) => break channel,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the renewed certificate was never served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let grant = GrantServiceClient::new(channel)
        .grant_read(read("tenants/billing/q3.csv"))
        .await
        .expect("a grant over the renewed certificate")
        .into_inner();
    assert_eq!(http_get(&grant.url).await.status(), 200);
    assert!(
        tls_channel(&service, &ca, Some(&reporter)).await.is_err(),
        "new connections still get the old certificate"
    );
}

/// Whether a client with `client`'s certificate gets a grant over a new connection.
async fn served(service: &Service, server_ca: &Ca, client: &certs::Leaf) -> bool {
    match tls_channel(service, server_ca, Some(client)).await {
        Err(_) => false,
        Ok(channel) => GrantServiceClient::new(channel)
            .grant_read(read("tenants/billing/q3.csv"))
            .await
            .is_ok(),
    }
}

/// Waits until `client` is served (`want`) or refused (`!want`) on new connections.
async fn until_served(service: &Service, server_ca: &Ca, client: &certs::Leaf, want: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while served(service, server_ca, client).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the client CA file's change was never applied (want served = {want})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client CA rotated in `[identity.mtls] ca_file` (as trust-manager publishes a
/// bundle) applies to new connections without a restart: the new CA's clients are
/// served once the bundle holds it, the old CA's refused once it is dropped, and a
/// file that holds no CA keeps the previous CAs in force.
#[tokio::test]
async fn a_rotated_client_ca_is_trusted_without_a_restart() {
    let store = demo_store().await;
    store
        .put("demo", "tenants/billing/q3.csv", b"billing data")
        .await;
    let server_ca = Ca::new("server CA");
    let old_ca = Ca::new("old client CA");
    let new_ca = Ca::new("new client CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &old_ca.pem).unwrap();
    let (cert_file, key_file) = server_cert(&server_ca).write_to(dir.path());
    let mut setup = Setup::new();
    setup.rules = RULES.into();
    setup.extra_config = format!(
        "[identity.mtls]\nca_file = {ca_file:?}\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\n\
         trust_domains = [\"prod.example\"]\nrequired = true\nreload_interval = \"100ms\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    );
    let service = Service::start(&store, setup).await;
    let workload = ["spiffe://prod.example/ns/billing/sa/reporter"];
    let old_client = client_cert(&old_ca, &workload, Validity::Now);
    let new_client = client_cert(&new_ca, &workload, Validity::Now);
    assert!(served(&service, &server_ca, &old_client).await);
    assert!(
        !served(&service, &server_ca, &new_client).await,
        "a client of a CA not in ca_file was served"
    );

    // The overlap: both CAs in the bundle.
    std::fs::write(&ca_file, format!("{}{}", old_ca.pem, new_ca.pem)).unwrap();
    until_served(&service, &server_ca, &new_client, true).await;
    assert!(served(&service, &server_ca, &old_client).await);

    // The old CA dropped.
    std::fs::write(&ca_file, &new_ca.pem).unwrap();
    until_served(&service, &server_ca, &old_client, false).await;
    assert!(served(&service, &server_ca, &new_client).await);

    // A broken bundle is refused, and so is one holding a leaf instead of its CA
    // (tls.crt mounted for ca.crt): the CAs in force stay.
    for broken in ["not a certificate\n", new_client.cert.as_str()] {
        std::fs::write(&ca_file, broken).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            served(&service, &server_ca, &new_client).await,
            "a broken ca_file replaced the CAs in force"
        );
    }
    assert!(!served(&service, &server_ca, &old_client).await);

    // The refusals are counted, the CAs on disk reported stale, for an alert to see.
    let scrape = support::scrape(service.metrics_port()).await;
    let series = |s: &str| support::metric(&scrape, s);
    assert!(series("storage_grants_tls_reloads_total{file=\"client_ca\",result=\"applied\"}") >= 2);
    assert!(series("storage_grants_tls_reloads_total{file=\"client_ca\",result=\"refused\"}") >= 2);
    assert_eq!(series("storage_grants_tls_stale{file=\"client_ca\"}"), 1);
    let left = series("storage_grants_tls_certificate_remaining_seconds");
    // rcgen's certificates are valid until 4096.
    assert!(left > 1_000 * 366 * 86_400, "{left}");
}

/// The service with mTLS required and its CA, over a store holding a file in the
/// `billing` and `payroll` folders; the key files go when the directory is dropped.
async fn mtls_service() -> (Store, Service, Ca, tempfile::TempDir) {
    let store = demo_store().await;
    store
        .put("demo", "tenants/billing/q3.csv", b"billing data")
        .await;
    store
        .put("demo", "tenants/payroll/q3.csv", b"payroll data")
        .await;
    let ca = Ca::new("test mesh CA");
    let server = server_cert(&ca);
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [
        ("ca.pem", &ca.pem),
        ("tls.crt", &server.cert),
        ("tls.key", &server.key),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let mut setup = Setup::new();
    setup.rules = RULES.into();
    setup.extra_config = format!(
        r#"
[identity.mtls]
ca_file = "{dir}/ca.pem"
cert_file = "{dir}/tls.crt"
key_file = "{dir}/tls.key"
trust_domains = ["prod.example"]
required = true
"#,
        dir = dir.path().display()
    );
    let service = Service::start(&store, setup).await;
    (store, service, ca, dir)
}

#[tokio::test]
async fn mtls_spiffe_id_selects_the_callers_own_prefix() {
    let (_store, service, ca, _dir) = mtls_service().await;

    let reporter = client_cert(
        &ca,
        &["spiffe://prod.example/ns/billing/sa/reporter"],
        Validity::Now,
    );
    let channel = tls_channel(&service, &ca, Some(&reporter))
        .await
        .expect("mTLS connection");
    let mut client = GrantServiceClient::new(channel);
    // No bearer token: the certificate is the identity.
    let grant = client
        .grant_read(read("tenants/billing/q3.csv"))
        .await
        .expect("own namespace")
        .into_inner();
    let response = http_get(&grant.url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "billing data");
    let status = client
        .grant_read(read("tenants/payroll/q3.csv"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        !status.message().contains("payroll/"),
        "{}",
        status.message()
    );

    // Another trust domain's workload of the same name gets nothing.
    let foreign = client_cert(
        &ca,
        &["spiffe://staging.example/ns/billing/sa/reporter"],
        Validity::Now,
    );
    let channel = tls_channel(&service, &ca, Some(&foreign))
        .await
        .expect("handshake");
    let status = GrantServiceClient::new(channel)
        .grant_read(read("tenants/billing/q3.csv"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // No client certificate: refused at the handshake (or on the first call).
    let refused = match tls_channel(&service, &ca, None).await {
        Err(_) => true,
        Ok(channel) => GrantServiceClient::new(channel)
            .grant_read(read("tenants/billing/q3.csv"))
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

/// A connection's caller is read from its certificate once and kept for its calls:
/// two connections with different certificates, their calls interleaved, are each
/// answered as their own certificate's caller every time.
#[tokio::test]
async fn each_mtls_connection_is_its_own_certificates_caller() {
    let (_store, service, ca, _dir) = mtls_service().await;
    let mut clients = Vec::new();
    for namespace in ["billing", "payroll"] {
        let id = format!("spiffe://prod.example/ns/{namespace}/sa/reporter");
        let leaf = client_cert(&ca, &[&id], Validity::Now);
        let channel = tls_channel(&service, &ca, Some(&leaf))
            .await
            .expect("mTLS connection");
        clients.push((namespace, GrantServiceClient::new(channel)));
    }
    for _ in 0..3 {
        for (namespace, client) in &mut clients {
            let own = client
                .grant_read(read(&format!("tenants/{namespace}/q3.csv")))
                .await
                .expect("own namespace")
                .into_inner();
            let body = http_get(&own.url).await.text().await.unwrap();
            assert_eq!(body, format!("{namespace} data"));
            let other = if *namespace == "billing" {
                "payroll"
            } else {
                "billing"
            };
            let status = client
                .grant_read(read(&format!("tenants/{other}/q3.csv")))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::PermissionDenied, "{namespace}");
        }
    }
}

fn xfcc(uri: &str) -> String {
    format!("By=spiffe://prod.example/ns/mesh/sa/storage-grants;Hash=0123abcd;URI={uri}")
}

async fn xfcc_call(service: &Service, header: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(read("tenants/billing/q3.csv"));
    request
        .metadata_mut()
        .insert("x-forwarded-client-cert", header.parse().unwrap());
    GrantServiceClient::new(service.channel().await)
        .grant_read(request)
        .await
        .map(drop)
}

#[tokio::test]
async fn mesh_header_is_an_identity_only_from_a_trusted_peer() {
    let store = demo_store().await;
    for (trusted_peers, trusted) in [
        ("[\"127.0.0.1/32\", \"::1/128\"]", true),
        ("[\"10.0.0.0/8\"]", false),
    ] {
        let mut setup = Setup::new();
        setup.rules = RULES.into();
        setup.extra_config = format!(
            "[identity.xfcc]\nenabled = true\ntrusted_peers = {trusted_peers}\ntrust_domains = [\"prod.example\"]\n"
        );
        let service = Service::start(&store, setup).await;
        let own = xfcc_call(
            &service,
            &xfcc("spiffe://prod.example/ns/billing/sa/reporter"),
        )
        .await;
        if trusted {
            own.expect("a trusted proxy's header identifies the caller");
            // The caller is the last element, which the adjacent proxy appended; an
            // earlier one (which a client could forge) does not count.
            let forged = format!(
                "{},{}",
                xfcc("spiffe://prod.example/ns/billing/sa/reporter"),
                xfcc("spiffe://prod.example/ns/payroll/sa/reporter")
            );
            let status = xfcc_call(&service, &forged).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{}",
                status.message()
            );
        } else {
            // From an untrusted peer the header is ignored: no identity at all.
            assert_eq!(own.unwrap_err().code(), Code::Unauthenticated);
        }
    }
}
