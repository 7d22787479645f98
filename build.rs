//! Compiles the API contract with a pure-Rust protobuf compiler (protox), so that no
//! `protoc` has to be installed, and keeps the encoded descriptors for server reflection.

use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/storagegrants/v1/grants.proto";

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
        // Undecodable requests are the caller's fault: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::GrantCodec")
        // Ordered maps: a few entries each, built and read once per call, where
        // `HashMap` pays a random seed and SipHash per entry.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
