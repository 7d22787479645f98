//! Compiles the API contract with a pure-Rust protobuf compiler (protox), so that no
//! `protoc` has to be installed, and keeps the encoded descriptors for server reflection.
//! Generates the servers of the standard health and reflection services over the
//! messages tonic-health and tonic-reflection define, with the grant service's codec.

use std::{env, fs, path::PathBuf};

use tonic_build::manual::{Builder, Method, Service};

const PROTO: &str = "proto/storagegrants/v1/grants.proto";

/// Undecodable requests are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
const CODEC: &str = "crate::codec::GrantCodec";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("storagegrants_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path(CODEC)
        // Ordered maps: a few entries each, built and read once per call, where
        // `HashMap` pays a random seed and SipHash per entry.
        .btree_map(".")
        .compile_fds(descriptors)?;
    standard_services();
    Ok(())
}

/// `grpc.health.v1.Health` and both versions of `grpc.reflection.*.ServerReflection`,
/// as tonic-health and tonic-reflection generate them, but with [`CODEC`]: theirs is
/// tonic-prost's, which answers a request that does not decode INTERNAL.
fn standard_services() {
    let health = "tonic_health::pb";
    let check = |name: &str, route: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("{health}::HealthCheckRequest"))
            .output_type(format!("{health}::HealthCheckResponse"))
            .codec_path(CODEC)
    };
    let reflection = |version: &str| {
        let pb = format!("tonic_reflection::pb::{version}");
        Service::builder()
            .name("ServerReflection")
            .package(format!("grpc.reflection.{version}"))
            .method(
                Method::builder()
                    .name("server_reflection_info")
                    .route_name("ServerReflectionInfo")
                    .input_type(format!("{pb}::ServerReflectionRequest"))
                    .output_type(format!("{pb}::ServerReflectionResponse"))
                    .codec_path(CODEC)
                    .client_streaming()
                    .server_streaming()
                    .build(),
            )
            .build()
    };
    let services = [
        Service::builder()
            .name("Health")
            .package("grpc.health.v1")
            .method(check("check", "Check").build())
            .method(check("watch", "Watch").server_streaming().build())
            .build(),
        reflection("v1"),
        reflection("v1alpha"),
    ];
    Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&services);
}
