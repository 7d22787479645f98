#!/usr/bin/env bash
# Runs the Python client test (clients/python/grants_client_test.py) against a real
# storage-grants server, backed by a real S3-compatible store (s3s-fs), both on
# 127.0.0.1 only. Proves the API works from another language, through stubs
# generated from the proto, and that its presigned URLs really download.
#
# Usage: scripts/python-client-test.sh [SERVER_BINARY]
#   SERVER_BINARY  an already-built server (default: target/debug/storage-grants);
#                  this script does not build it: run `cargo build` first.
# Exit code: the Python test's (0 = all passed); 2 when it could not be set up.
set -euo pipefail

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { echo "python-client-test: $*" >&2; }

# Random per-run secrets: nothing real, and nothing another run could reuse.
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

root=$(repo_root)
server_bin=${1:-$root/target/debug/storage-grants}
[[ $server_bin == /* ]] || server_bin="$PWD/$server_bin"
if [[ ! -x $server_bin ]]; then
  log "server binary $server_bin not found or not executable; build it first: cargo build"
  exit 2
fi

work="" s3_pid="" server_pid=""
cleanup() {
  local rc=$?
  stop_process "$server_pid"
  stop_process "$s3_pid"
  [[ -z $work ]] || rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
# Turn signals into an exit so the EXIT trap cleans up and the code says why.
trap 'exit 130' INT
trap 'exit 143' TERM

# Tools first: the only slow steps, and only on a fresh machine.
ensure_s3s_fs >/dev/null
python=$(ensure_python_venv)

work=$(mktemp -d "${TMPDIR:-/tmp}/storage-grants-pytest.XXXXXX")
access_key="SGTEST$(random_hex 6)"
secret_key=$(random_hex 20)
dev_token="dev-$(random_hex 12)"
bucket=demo
demo_key=public/hello.txt
demo_content="hello from storage-grants, python client test"
denied_key=private/secret.txt

# s3s-fs serves ROOT/BUCKET/KEY files as objects: the fixture is plain files.
mkdir -p "$work/s3/$bucket/public" "$work/s3/$bucket/private"
printf '%s' "$demo_content" >"$work/s3/$bucket/$demo_key"
printf '%s' "not for dev:demo" >"$work/s3/$bucket/$denied_key"

s3_port=$(free_port)
s3_pid=$(start_s3s_fs "$work/s3" "$s3_port" "$access_key" "$secret_key" "$work/s3s-fs.log")
log "s3s-fs on 127.0.0.1:$s3_port (pid $s3_pid)"

grpc_port=$(free_port)
mkdir -p "$work/server"
cat >"$work/server/config.toml" <<EOF
listen = "127.0.0.1:$grpc_port"

[storage]
region = "us-east-1"
endpoint = "http://127.0.0.1:$s3_port"
force_path_style = true

[grants]
default_ttl = "5m"
max_ttl = "1h"
rules_file = "rules.toml"

[identity]
dev_mode = true

[[identity.dev_tokens]]
token = "$dev_token"
caller = "dev:demo"
EOF
cat >"$work/server/rules.toml" <<EOF
[[rules]]
callers = ["dev:demo"]
bucket = "$bucket"
prefix = "public/"
actions = ["read", "write"]
max_ttl = "15m"
EOF

# The service signs with the same key pair s3s-fs checks, from the standard AWS env
# variables. Profiles and shared files are empty ones of our own, and instance metadata
# is off, so a developer's own AWS setup can neither leak in nor slow start-up down.
: >"$work/aws-config"
: >"$work/aws-credentials"
server_env=(
  env -u AWS_SESSION_TOKEN -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_ENDPOINT_URL
  AWS_ACCESS_KEY_ID="$access_key"
  AWS_SECRET_ACCESS_KEY="$secret_key"
  AWS_REGION=us-east-1
  AWS_CONFIG_FILE="$work/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
  AWS_EC2_METADATA_DISABLED=true
)
config="$work/server/config.toml"

# A config the server rejects is reported as such, not as a server that never came up.
if ! "${server_env[@]}" "$server_bin" --config "$config" --check-config >"$work/check-config.log" 2>&1; then
  log "the server rejected the test config (--check-config):"
  log_tail "$work/check-config.log"
  exit 2
fi

# `env` execs the server, so $! is the server's own PID.
"${server_env[@]}" "$server_bin" --config "$config" serve </dev/null >"$work/server.log" 2>&1 &
server_pid=$!
if ! wait_for_port 127.0.0.1 "$grpc_port" 20 "$server_pid"; then
  log "storage-grants did not come up on 127.0.0.1:$grpc_port"
  log_tail "$work/server.log"
  exit 2
fi
log "storage-grants on 127.0.0.1:$grpc_port (pid $server_pid); running the Python client test"

rc=0
STORAGE_GRANTS_ADDR="127.0.0.1:$grpc_port" \
  STORAGE_GRANTS_TOKEN="$dev_token" \
  DEMO_BUCKET="$bucket" \
  DEMO_KEY="$demo_key" \
  DEMO_CONTENT="$demo_content" \
  DENIED_KEY="$denied_key" \
  "$python" "$root/clients/python/grants_client_test.py" || rc=$?

if ((rc != 0)); then
  log "the Python client test failed (exit $rc); server and store logs, secrets masked:"
  log_tail "$work/server.log" 60
  log_tail "$work/s3s-fs.log" 20
fi
exit "$rc"
