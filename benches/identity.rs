//! What identifying a caller costs per call, by what the caller presents:
//!
//! - `dev_token`: `authorization: Bearer <development token>`, the load bench's caller;
//! - `xfcc_istio`: an `x-forwarded-client-cert` header as Istio's sidecar writes it
//!   (`By`, `Hash`, an empty `Subject`, `URI`), from a trusted peer;
//! - `xfcc_envoy_cert`: the same with the client certificate itself forwarded
//!   (`Cert`, URL-encoded PEM, as Envoy writes with `set_current_client_cert_details.cert`),
//!   after an element the client wrote itself.
//!
//! Each goes through `Authenticator::authenticate` on a whole `tonic::Request`, as a
//! call does. Allocations per call are printed after criterion's figures.

use std::hint::black_box;

use storage_grants::identity::{Authenticator, IdentityConfig, xfcc};
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpConnectInfo;

#[path = "common/mod.rs"]
mod common;
use common::allocations_per_op;

const DEV_TOKEN: &str = "dev-0123456789abcdef01234567";

/// Development tokens (with [`DEV_TOKEN`]) and XFCC from 127.0.0.1.
fn config() -> IdentityConfig {
    let text = format!(
        r#"
dev_mode = true
[[dev_tokens]]
token = "{DEV_TOKEN}"
caller = "dev:bench"
[xfcc]
enabled = true
trusted_peers = ["127.0.0.1/32"]
trust_domains = ["cluster.local"]
"#
    );
    toml::from_str(&text).expect("the bench's config")
}

const ISTIO: &str = "By=spiffe://cluster.local/ns/storage/sa/storage-grants;\
Hash=2d6d8a1e4f8b7c1f0e0b6d1e9a3f0c2b7d5e4a9c8b7a6f5e4d3c2b1a0f9e8d7c;\
Subject=\"\";URI=spiffe://cluster.local/ns/billing/sa/reporter";

/// A certificate-sized PEM body (about 1.1 KB of base64 in 64-character lines),
/// URL-encoded as Envoy forwards it.
fn envoy_with_cert() -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut cert = String::from("-----BEGIN%20CERTIFICATE-----%0A");
    for line in 0..18u32 {
        for i in 0..64u32 {
            let c = alphabet[((line * 64 + i) * 7919 % 64) as usize];
            match c {
                b'+' => cert.push_str("%2B"),
                b'/' => cert.push_str("%2F"),
                c => cert.push(char::from(c)),
            }
        }
        cert.push_str("%0A");
    }
    cert.push_str("-----END%20CERTIFICATE-----%0A");
    format!(
        "URI=spiffe://cluster.local/ns/admin/sa/root,\
         By=spiffe://cluster.local/ns/storage/sa/storage-grants;\
         Hash=2d6d8a1e4f8b7c1f0e0b6d1e9a3f0c2b7d5e4a9c8b7a6f5e4d3c2b1a0f9e8d7c;\
         Cert=\"{cert}\";Subject=\"\";URI=spiffe://cluster.local/ns/billing/sa/reporter"
    )
}

fn request(header: &'static str, value: &str) -> tonic::Request<()> {
    let mut request = tonic::Request::new(());
    request.metadata_mut().insert(
        header,
        MetadataValue::try_from(value).expect("a visible ASCII value"),
    );
    request.extensions_mut().insert(TcpConnectInfo {
        local_addr: None,
        remote_addr: Some("127.0.0.1:40000".parse().expect("an address")),
    });
    request
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let config = config();
    config.validate().expect("a valid config");
    let authenticator = rt
        .block_on(Authenticator::start(&config))
        .expect("the authenticator");

    let rows = [
        (
            "dev_token",
            request("authorization", &format!("Bearer {DEV_TOKEN}")),
            "dev:bench",
        ),
        (
            "xfcc_istio",
            request(xfcc::HEADER, ISTIO),
            "spiffe://cluster.local/ns/billing/sa/reporter",
        ),
        (
            "xfcc_envoy_cert",
            request(xfcc::HEADER, &envoy_with_cert()),
            "spiffe://cluster.local/ns/billing/sa/reporter",
        ),
    ];
    for (name, request, caller) in &rows {
        let who = authenticator
            .authenticate(request)
            .expect("an identified caller");
        assert_eq!(who.id(), *caller, "{name} identifies its caller");
    }

    let mut criterion = common::criterion();
    let mut group = criterion.benchmark_group("identify");
    for (name, request, _) in &rows {
        group.bench_function(*name, |b| {
            b.iter(|| authenticator.authenticate(black_box(request)))
        });
    }
    group.finish();
    criterion.final_summary();

    println!("\nallocations per call:");
    for (name, request, _) in &rows {
        let n = allocations_per_op(10_000, || {
            black_box(authenticator.authenticate(black_box(request)).ok());
        });
        println!("  {name:<16} {n:.1}");
    }
}
