#!/usr/bin/env bash
# Tests the API contract and the client packages for other languages, against a real
# storage-grants server backed by a real S3-compatible store (s3s-fs) for presigned URLs
# and by moto as the STS for AssumeScoped (moto's credentials work against moto's own
# S3, so the service hands out moto's endpoint with them), all on 127.0.0.1 only:
#
# 1. contract: `buf breaking` against the released contract
#    (proto/released/storagegrants-v1.binpb), and a check that the gate does fail on a
#    breaking change;
# 2. clients/python: the package is built (stubs generated from proto/) and installed
#    into the repo's .venv, then its tests call the server: downloads, uploads, boto3
#    with AssumeScoped credentials, error codes with their details, health, reflection;
# 3. clients/node: the package is built (buf generate, tsc), then its tests run with
#    Node's own test runner: downloads and uploads with fetch, @aws-sdk/client-s3 with
#    AssumeScoped credentials, error codes with their details;
#    then each package's README examples run against the same server;
# 4. the same server as a shell user without the .proto sees it: buf curl, through
#    server reflection only.
#
# Usage: scripts/clients-test.sh [SERVER_BINARY]
#   SERVER_BINARY  an already-built server (default: target/debug/storage-grants);
#                  this script does not build it: run `cargo build` first.
# Exit code: 0 when every step passed, 1 when a test failed, 2 when it could not be set up.
set -euo pipefail

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

log() { echo "clients-test: $*" >&2; }


root=$(repo_root)
server_bin=$(server_binary "${1:-}") || exit 2

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

# Tools and packages first: the only slow steps, and only on a fresh machine.
ensure_s3s_fs >/dev/null
buf=$(ensure_node_tools)
python=$(ensure_python_client)
node_client=$(ensure_node_client)

work=$(mktemp -d "${TMPDIR:-/tmp}/storage-grants-clients.XXXXXX")

# Each step's verdict, for the summary at the end.
declare -a passed=() failed=()
verdict() { # NAME RC
  if (($2 == 0)); then passed+=("$1"); else failed+=("$1"); fi
}

# --- 1. the contract ----------------------------------------------------------------

released="$root/proto/released/storagegrants-v1.binpb"
contract_rc=0
if [[ ! -f $released ]]; then
  log "no released contract at $released; record one with scripts/release-contract.sh"
  contract_rc=1
elif ! (cd "$root" && "$buf" breaking --against "$released"); then
  log "proto/ breaks the released contract (above); a breaking change needs storagegrants.v2"
  contract_rc=1
else
  # The gate must bite: the same check on a copy of proto/ with one field renumbered
  # fails, naming the field.
  mkdir -p "$work/broken"
  cp "$root/buf.yaml" "$work/broken/"
  cp -r "$root/proto" "$work/broken/"
  sed -i 's/^\(  string grant_id = \)5;/\115;/' "$work/broken/proto/storagegrants/v1/grants.proto"
  if cmp -s "$root/proto/storagegrants/v1/grants.proto" "$work/broken/proto/storagegrants/v1/grants.proto"; then
    log "could not make the breaking change the gate is checked with (GrantReadResponse.grant_id = 5)"
    contract_rc=1
  elif (cd "$work/broken" && "$buf" breaking --against "$released") >"$work/broken.log" 2>&1; then
    log "buf breaking accepted a renumbered field: the contract gate does not work"
    contract_rc=1
  elif ! grep -q 'grant_id' "$work/broken.log"; then
    log "buf breaking failed on a renumbered field without naming it:"
    log_tail "$work/broken.log"
    contract_rc=1
  else
    log "contract: compatible with the released storagegrants.v1, and the gate refuses a renumbered field"
  fi
fi
verdict "contract (buf breaking)" "$contract_rc"

# --- 2. the local store, STS and server -----------------------------------------------

access_key="SGTEST$(random_hex 6)"
secret_key=$(random_hex 20)
dev_token="dev-$(random_hex 12)"
bucket=demo
demo_key=public/hello.txt
demo_content="hello from storage-grants, client package tests"
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
# Every AWS_* variable of the caller's environment is dropped for the client tests:
# they configure their S3 clients from the AssumeScoped response alone.
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
role_arn = "arn:aws:iam::123456789012:role/storage-grants-clients-test"
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
# The clients' tests check that the store applies a content-type override.
allow_response_overrides = true
EOF

# The service signs with the same key pair s3s-fs checks, from the standard AWS env
# variables; moto's STS accepts it too. Profiles and shared files are the empty ones.
# The server also reads STORAGE_GRANTS_* variables as configuration: the caller's are
# dropped, so the config file above is the whole configuration.
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
log "storage-grants on 127.0.0.1:$grpc_port (pid $server_pid)"

# What both packages' tests are told about the setup (see their test files).
test_env=(
  "${aws_isolated[@]}"
  SG_TEST_ADDR="127.0.0.1:$grpc_port"
  SG_TEST_TOKEN="$dev_token"
  DEMO_BUCKET="$bucket"
  DEMO_KEY="$demo_key"
  DEMO_CONTENT="$demo_content"
  DENIED_KEY="$denied_key"
)

# --- 3. the Python package ------------------------------------------------------------

log "clients/python: running its tests against the server"
rc=0
# From the package's tests directory, so `storagegrants` is the installed package.
(cd "$root/clients/python/tests" && "${test_env[@]}" "$python" test_grants.py) || rc=$?
verdict "clients/python" "$rc"

# run_examples NAME COMMAND...: runs one README example against the server (the
# examples default to bucket demo, prefix public/, as this setup has); the download
# example must print the demo object.
run_examples() {
  local name=$1 rc=0 out
  shift
  for example in download upload assume-scoped; do
    out=$("$@" "$example" 2>&1) || {
      log "$name example $example failed:"
      printf '%s\n' "$out" | redact_secrets >&2
      rc=1
      continue
    }
    if [[ $example == download ]] && ! grep -qF "$demo_content" <<<"$out"; then
      log "$name example download did not print the demo object"
      rc=1
    fi
  done
  verdict "$name examples" "$rc"
}
python_example() {
  "${test_env[@]}" SG_TARGET="127.0.0.1:$grpc_port" SG_TOKEN="$dev_token" \
    "$python" "$root/clients/python/examples/${1//-/_}.py"
}
run_examples clients/python python_example

# --- 4. the Node package ---------------------------------------------------------------

log "clients/node: running its tests (node --test) against the server"
rc=0
(cd "$node_client" && "${test_env[@]}" npm test --silent) || rc=$?
verdict "clients/node" "$rc"
node_example() {
  "${test_env[@]}" SG_URL="http://127.0.0.1:$grpc_port" SG_TOKEN="$dev_token" \
    node "$node_client/dist/examples/$1.js"
}
run_examples clients/node node_example

# --- 5. reflection only ----------------------------------------------------------------

rc=0
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
verdict "buf curl through reflection" "$rc"

# --- summary ---------------------------------------------------------------------------

if ((${#failed[@]} > 0)); then
  log "failed: ${failed[*]}; server, store and STS logs, secrets masked:"
  log_tail "$work/server.log" 60
  log_tail "$work/s3s-fs.log" 20
  log_tail "$work/moto.log" 20
fi
for step in "${passed[@]}"; do log "passed: $step"; done
for step in "${failed[@]+"${failed[@]}"}"; do log "FAILED: $step"; done
echo "clients-test: ${#passed[@]} passed, ${#failed[@]} failed"
((${#failed[@]} == 0)) || exit 1
