//! The integration tests, one binary with a module per area: the service runs
//! in-process or as its binary, against real servers on loopback (s3s-fs for
//! presigned URLs, moto for STS), and every grant is proven by using it.

mod iam_eval;
mod support;

mod assume_scoped;
mod authorization_matrix;
mod cli;
mod credentials;
mod faults;
mod gateway;
mod grant_read;
mod grant_write;
mod grpc_web;
mod identity_mtls;
mod identity_server;
mod metrics;
mod multipart;
mod policy_meaning;
mod presign_oracle;
mod reflection;
mod rules_reload;
mod server;
mod server_tls;
mod telemetry;
