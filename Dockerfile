# syntax=docker/dockerfile:1
# The storage-grants container image.
#
#   docker build -t storage-grants .
#
# Two stages: the release build on the Rust image, then only the binary on a distroless
# base that carries glibc, libgcc and the CA certificates (the AWS SDK's HTTPS client
# reads the system roots) and nothing else: no shell, no package manager. The image runs
# as the distroless `nonroot` user (65532), which is also the Helm chart's runAsUser.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# build.rs compiles the proto in pure Rust (protox): no protoc needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin storage-grants \
    && cp target/release/storage-grants /storage-grants

# Debian 12, the same glibc the build stage linked against.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /storage-grants /usr/local/bin/storage-grants
USER 65532:65532
# gRPC, and Prometheus metrics when [metrics] listen is set.
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/storage-grants"]
CMD ["serve", "--config", "/etc/storage-grants/config/config.toml"]
