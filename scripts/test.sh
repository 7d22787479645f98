#!/usr/bin/env bash
# Runs every test: the API contract lint, formatting and lints, the Rust unit and
# integration tests against a real local S3 store, and the Python client calling the
# running service through stubs generated from the proto. This is what CI runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/tools.sh

step() { printf '\n==> %s\n' "$*" >&2; }

# Where cargo puts what it builds: CARGO_TARGET_DIR, build.target-dir or ./target.
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

step "tools (installed on first run: s3s-fs ~3 min, buf, Python venv)"
SG_S3S_FS=$(ensure_s3s_fs)
export SG_S3S_FS
ensure_node_tools >/dev/null
ensure_python_venv >/dev/null

step "proto: buf lint (STANDARD) and buf format"
node_modules/.bin/buf lint
node_modules/.bin/buf format --diff --exit-code

step "layers: no import cycle, dependencies point down"
python3 scripts/check-layers.py src

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "cargo nextest (unit, property and integration tests), with this run's secret canary"
# Every secret the integration tests hand the service carries this run's canary; the
# tests leave what the service wrote (logs, audit, exported spans, metrics scrapes) in
# SG_TEST_ARTIFACTS, scanned for it below. promtool checks a real scrape.
SG_CANARY="canary$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
SG_TEST_ARTIFACTS="$(cargo_target_dir)/test-artifacts"
SG_PROMTOOL=$(ensure_promtool)
export SG_CANARY SG_TEST_ARTIFACTS SG_PROMTOOL
rm -rf "$SG_TEST_ARTIFACTS"
mkdir -p "$SG_TEST_ARTIFACTS"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi

step "secret canary: no secret of this run in any log, span, audit event or scrape"
scripts/canary-check.sh "$SG_TEST_ARTIFACTS" "$SG_CANARY"

# The integration tests above built the binary with the test build's feature set (a
# separate `cargo build` would rebuild half the dependencies). Cargo says where its
# target directory is, so CARGO_TARGET_DIR and build.target-dir are honoured.
bin="$(cargo_target_dir)/debug/storage-grants"

step "contract (buf breaking) and the Node and Python client packages, against the running service"
scripts/clients-test.sh "$bin"

step "AWS SDKs (boto3, JavaScript v3, AWS CLI) fetch and refresh scoped credentials by themselves"
scripts/sdk-credentials-test.sh "$bin"

step "the HTTP gateway in headless Chromium (Uppy uploads, click-time links), against the running service"
scripts/browser-test.sh "$bin"

step "load bench, every row briefly (each run must answer only successes; no figure is asserted)"
scripts/bench.sh --binary "$bin" --duration 1 --warmup 1 --rounds 1 --soak 2 --scopes 20 \
  --out "$(cargo_target_dir)/bench-smoke"

step "Helm chart and container image recipe"
scripts/helm-test.sh "$bin"

step "all tests passed"
