//! End-to-end load: GrantRead and AssumeScoped (cache hit) over real gRPC on
//! loopback, against a baseline RPC measured in the same run on the same server:
//! `grpc.health.v1.Health/Check`, which crosses the same transport, tower stack and
//! HTTP/2 connections but does no work. The ratios say what a grant costs beyond the
//! transport.
//!
//! The store is a real s3s-fs and STS a real moto when their binaries are installed
//! (`./scripts/test.sh` installs both); without moto, the AssumeScoped row is skipped.
//! Every phase runs for a fixed time and stops by itself; everything binds to
//! 127.0.0.1.
//!
//! Run: `cargo bench --bench rpc_load` (optional env: LOAD_SECONDS, LOAD_CONCURRENCY).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use storage_grants::proto::grant_service_client::GrantServiceClient;
use storage_grants::proto::{Access, AssumeScopedRequest, GrantReadRequest};
use support::{Moto, Service, Setup, TOKEN, authed, demo_store};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Latencies of one phase.
struct Phase {
    name: &'static str,
    calls: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

#[derive(Clone, Copy)]
enum Call {
    Health,
    GrantRead,
    AssumeScoped,
}

async fn one(channel: &Channel, call: Call) -> bool {
    match call {
        Call::Health => HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok(),
        Call::GrantRead => GrantServiceClient::new(channel.clone())
            .grant_read(authed(
                GrantReadRequest {
                    bucket: "demo".into(),
                    key: "public/hello.txt".into(),
                    ..Default::default()
                },
                &TOKEN,
            ))
            .await
            .is_ok(),
        Call::AssumeScoped => GrantServiceClient::new(channel.clone())
            .assume_scoped(authed(
                AssumeScopedRequest {
                    bucket: "demo".into(),
                    prefix: "public/".into(),
                    access: Access::Read as i32,
                    ..Default::default()
                },
                &TOKEN,
            ))
            .await
            .is_ok(),
    }
}

/// Runs `concurrency` callers over `channels` for `duration`, then stops.
async fn phase(
    name: &'static str,
    call: Call,
    channels: &[Channel],
    concurrency: usize,
    duration: Duration,
) -> Phase {
    // Warm-up: connections, caches, the signing key.
    for channel in channels {
        one(channel, call).await;
    }
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if !one(&channel, call).await {
                        errors += 1;
                    }
                    latencies.push(t.elapsed());
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Phase {
        name,
        calls: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs a short smoke pass.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let seconds = if smoke { 1 } else { env("LOAD_SECONDS", 5) };
    let concurrency = env("LOAD_CONCURRENCY", 32) as usize;
    // The service logs (audit events included) as it would in production, as JSON,
    // to a sink: their formatting is part of a grant's cost, the terminal is not.
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_env_filter("info")
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = demo_store().await;
        let moto = moto_available().then(Moto::start);
        let mut setup = Setup::new();
        setup.rules = r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/"
actions = ["read", "assume-read"]
max_ttl = "1h"
"#
        .into();
        if let Some(moto) = &moto {
            setup.extra_config = format!(
                "[sts]\nrole_arn = \"arn:aws:iam::123456789012:role/load\"\nendpoint = \"{}\"\nrole_chaining = false\n",
                moto.endpoint
            );
        }
        let service = Service::start(&store, setup).await;
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(service.channel().await);
        }
        let duration = Duration::from_secs(seconds);
        let mut phases = vec![
            phase("health check (baseline)", Call::Health, &channels, concurrency, duration).await,
            phase("GrantRead", Call::GrantRead, &channels, concurrency, duration).await,
        ];
        if moto.is_some() {
            phases.push(
                phase("AssumeScoped (cache hit)", Call::AssumeScoped, &channels, concurrency, duration)
                    .await,
            );
        }
        let base = phases[0].rate();
        println!(
            "\n## end-to-end RPCs over loopback gRPC: {concurrency} callers on 4 HTTP/2 connections, {seconds} s each\n"
        );
        println!("| RPC | calls/s | p50 | p99 | errors | throughput vs baseline |");
        println!("|---|---:|---:|---:|---:|---:|");
        for p in &phases {
            println!(
                "| {} | {:.0} | {:.0} µs | {:.0} µs | {} | {:.2}x |",
                p.name,
                p.rate(),
                p.percentile(0.5).as_secs_f64() * 1e6,
                p.percentile(0.99).as_secs_f64() * 1e6,
                p.errors,
                p.rate() / base,
            );
        }
        for p in &phases {
            assert_eq!(p.errors, 0, "{}: {} calls failed", p.name, p.errors);
        }
    });
}

fn moto_available() -> bool {
    std::env::var_os("SG_MOTO").is_some()
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".venv/bin/moto_server")
            .exists()
}
