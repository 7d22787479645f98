#!/usr/bin/env bash
# Runs the Python client test (clients/python/grants_client_test.py) against a real
# storage-grants server, backed by a real S3-compatible store (s3s-fs) for presigned
# URLs and by moto as the STS for AssumeScoped (moto's credentials work against moto's
# own S3, so the service hands out moto's endpoint with them), all on 127.0.0.1 only.
# Proves the API works from another language, through stubs generated from the proto,
# that its presigned URLs really download and upload, and that an S3 SDK configured
# from an AssumeScoped response alone works.
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

work="" s3_pid="" moto_pid="" server_pid=""
cleanup() {
  local rc=$?
  stop_process "$server_pid"
  stop_process "$moto_pid"
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

# Empty AWS config and credentials files of our own, and instance metadata off, so a
# developer's own AWS setup can neither leak in nor slow start-up down.
: >"$work/aws-config"
: >"$work/aws-credentials"
# Every AWS_* variable of the caller's environment is dropped for the Python steps: the
# test configures its S3 client from the AssumeScoped response alone.
aws_isolated=(env)
while IFS= read -r name; do aws_isolated+=(-u "$name"); done < <(compgen -e | grep '^AWS_' || true)
aws_isolated+=(
  AWS_CONFIG_FILE="$work/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
  AWS_EC2_METADATA_DISABLED=true
)

# moto: the STS AssumeScoped calls, and the S3 its temporary credentials work against.
# Its auth checks are off, so any key pair creates the bucket.
moto_port=$(free_port)
moto_pid=$(start_moto "$moto_port" "$work/moto.log")
log "moto on 127.0.0.1:$moto_port (pid $moto_pid)"
if ! "${aws_isolated[@]}" AWS_ACCESS_KEY_ID=moto-setup AWS_SECRET_ACCESS_KEY=moto-setup \
  "$python" - "http://127.0.0.1:$moto_port" "$bucket" >"$work/moto-setup.log" 2>&1 <<'PY'; then
import sys

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
PY
  log "could not create bucket $bucket in moto"
  log_tail "$work/moto-setup.log"
  log_tail "$work/moto.log"
  exit 2
fi

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

[sts]
role_arn = "arn:aws:iam::123456789012:role/storage-grants-pytest"
endpoint = "http://127.0.0.1:$moto_port"
# Scoped credentials from moto work against moto's S3, so clients are sent there.
storage_endpoint = "http://127.0.0.1:$moto_port"
role_chaining = false
EOF
# Rules with assume-* actions need max_ttl >= 15m (STS's shortest session).
cat >"$work/server/rules.toml" <<EOF
[[rules]]
callers = ["dev:demo"]
bucket = "$bucket"
prefix = "public/"
actions = ["read", "write", "assume-read", "assume-write", "list"]
max_ttl = "15m"
EOF

# The service signs with the same key pair s3s-fs checks, from the standard AWS env
# variables; moto's STS accepts it too. Profiles and shared files are the empty ones.
# The server also reads STORAGE_GRANTS_* variables as configuration: the caller's are
# dropped, so the config file above is the whole configuration (SG_TEST_PROTO_DIR
# still reaches the Python test).
server_env=(env)
while IFS= read -r name; do server_env+=(-u "$name"); done < <(compgen -e | grep '^STORAGE_GRANTS_' || true)
server_env+=(
  -u AWS_SESSION_TOKEN -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_ENDPOINT_URL
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
"${aws_isolated[@]}" \
  SG_TEST_ADDR="127.0.0.1:$grpc_port" \
  SG_TEST_TOKEN="$dev_token" \
  DEMO_BUCKET="$bucket" \
  DEMO_KEY="$demo_key" \
  DEMO_CONTENT="$demo_content" \
  DENIED_KEY="$denied_key" \
  "$python" "$root/clients/python/grants_client_test.py" || rc=$?

# The same service as a shell user without the .proto sees it: buf curl, through
# server reflection only.
if ((rc == 0)); then
  buf=$(ensure_node_tools)
  methods=$("$buf" curl --protocol grpc --http2-prior-knowledge --list-methods "http://127.0.0.1:$grpc_port" 2>&1) || rc=$?
  if ! grep -qx 'storagegrants.v1.GrantService/GrantRead' <<<"$methods"; then
    log "buf curl --list-methods through reflection did not list GrantRead: $methods"
    rc=1
  fi
  answer=$("$buf" curl --protocol grpc --http2-prior-knowledge \
    -H "authorization: Bearer $dev_token" \
    -d "{\"bucket\": \"$bucket\", \"key\": \"$demo_key\", \"ttl\": \"60s\"}" \
    "http://127.0.0.1:$grpc_port/storagegrants.v1.GrantService/GrantRead" 2>&1) || rc=$?
  # Only the field names are shown: the URL is a bearer credential.
  if ! "$python" -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["url"].startswith("http") and d["method"] == "GET"' "$answer" 2>/dev/null; then
    log "buf curl GrantRead through reflection did not return a GET URL (exit $rc)"
    rc=1
  else
    log "buf curl: reflection lists the services and GrantRead answers without the .proto"
  fi
fi

if ((rc != 0)); then
  log "the Python client test failed (exit $rc); server, store and STS logs, secrets masked:"
  log_tail "$work/server.log" 60
  log_tail "$work/s3s-fs.log" 20
  log_tail "$work/moto.log" 20
fi
exit "$rc"
